/* SPDX-License-Identifier: MIT */
/*
 * A nats-server for a test: nu_server_start runs `nats-server -js` on
 * 127.0.0.1 at a free port with its own storage directory under a fresh
 * temporary directory, in a process group of its own, set to die with the
 * test process (PR_SET_PDEATHSIG); nu_server_connect connects to it,
 * the client retrying a bounded number of times while it starts.
 * nu_server_stop kills the group and removes the directory. Meant for an
 * unchecked Check fixture, which runs in the parent process, so that the
 * server is stopped also when a test fails in its forked child.
 *
 * nu_server_bin finds the server: $NATS_SERVER (configure's), else
 * nats-server on PATH; NULL when there is none (the suite then skips).
 */
#ifndef SLUICE_NATSUTIL_H
#define SLUICE_NATSUTIL_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct nu_server {
  pid_t pid;
  int port;
  char dir[256];
  char url[64];
  int tls; /* serve TLS only, with dir/server.pem and dir/server.key */
} nu_server;

static inline const char *nu_server_bin(void) {
  static char found[512];
  const char *env = getenv("NATS_SERVER");
  if (env && *env && access(env, X_OK) == 0)
    return env;
  const char *path = getenv("PATH");
  if (!path)
    path = "/usr/bin:/bin";
  if (access("/usr/sbin/nats-server", X_OK) == 0) /* Debian's, off PATH */
    return "/usr/sbin/nats-server";
  while (*path) {
    size_t n = strcspn(path, ":");
    snprintf(found, sizeof found, "%.*s/nats-server", (int)n, path);
    if (n && access(found, X_OK) == 0)
      return found;
    path += n + (path[n] == ':');
  }
  return NULL;
}

static inline int nu_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

/* Connect to url, retrying for about tries * 50 ms in the client; with
 * ca_file, over TLS trusting it. */
static inline natsStatus nu_connect_ca(const char *url, const char *ca_file,
                                       int tries, natsConnection **nc) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK)
    s = natsOptions_SetURL(o, url);
  if (s == NATS_OK && ca_file)
    s = natsOptions_SetSecure(o, true);
  if (s == NATS_OK && ca_file)
    s = natsOptions_LoadCATrustedCertificates(o, ca_file);
  if (s == NATS_OK)
    s = natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
  if (s == NATS_OK)
    s = natsOptions_SetMaxReconnect(o, tries);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectWait(o, 50);
  if (s == NATS_OK)
    s = natsConnection_Connect(nc, o);
  natsOptions_Destroy(o);
  return s;
}

static inline natsStatus nu_connect(const char *url, int tries,
                                    natsConnection **nc) {
  return nu_connect_ca(url, NULL, tries, nc);
}

/* Start the server on a fresh port and directory (the port of a killed
 * one when port > 0 and dir set: a restart). Returns 0 or -1. */
static inline int nu_server_run(nu_server *sv) {
  const char *bin = nu_server_bin();
  if (!bin)
    return -1;
  if (sv->port <= 0)
    sv->port = nu_free_port();
  snprintf(sv->url, sizeof sv->url, "nats://127.0.0.1:%d", sv->port);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    char port[16], sd[300];
    snprintf(port, sizeof port, "%d", sv->port);
    snprintf(sd, sizeof sd, "%s/js", sv->dir);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0 && !getenv("NU_SERVER_LOG")) {
      dup2(null, 1);
      dup2(null, 2);
    }
    if (sv->tls) {
      char cert[300], key[300];
      snprintf(cert, sizeof cert, "%s/server.pem", sv->dir);
      snprintf(key, sizeof key, "%s/server.key", sv->dir);
      execl(bin, bin, "-js", "-a", "127.0.0.1", "-p", port, "-sd", sd, "--tls",
            "--tlscert", cert, "--tlskey", key, (char *)NULL);
    } else {
      execl(bin, bin, "-js", "-a", "127.0.0.1", "-p", port, "-sd", sd,
            (char *)NULL);
    }
    _exit(127);
  }
  setpgid(pid, pid);
  sv->pid = pid;
  return 0;
}

/* Connect to the server, the client retrying (every 50 ms, at most 200
 * times) while it starts. No client thread runs in the fixture's process
 * before Check forks a test: ThreadSanitizer forbids threads after a
 * fork of a multithreaded process, so each test connects this way. */
static inline natsStatus nu_server_connect(const nu_server *sv,
                                           natsConnection **nc) {
  char ca[300];
  snprintf(ca, sizeof ca, "%s/ca.pem", sv->dir);
  natsStatus s = nu_connect_ca(sv->url, sv->tls ? ca : NULL, 200, nc);
  if (s == NATS_NOT_YET_CONNECTED || s == NATS_OK)
    s = natsConnection_FlushTimeout(*nc, 10000);
  return s;
}

/* A fresh server: its directory, then the process (with tls, serving
 * TLS only: nu_server_make_tls). Returns 0 or -1. */
static inline int nu_server_make_tls(nu_server *sv);

static inline int nu_server_start_as(nu_server *sv, int tls) {
  memset(sv, 0, sizeof *sv);
  const char *tmp = getenv("TMPDIR");
  snprintf(sv->dir, sizeof sv->dir, "%s/sluice-nats-XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(sv->dir) || (tls && nu_server_make_tls(sv) != 0))
    return -1;
  return nu_server_run(sv);
}

static inline int nu_server_start(nu_server *sv) {
  return nu_server_start_as(sv, 0);
}

/* Make, in sv->dir, a certificate authority (ca.pem) and a server
 * certificate for 127.0.0.1 signed by it (server.pem, server.key), with
 * the openssl tool; then serve TLS only. Returns 0, or -1 when openssl
 * failed (its messages on stderr). */
static inline int nu_server_make_tls(nu_server *sv) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
           "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=sluice-test-ca "
           ">/dev/null 2>&1 && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           "-keyout server.key -out server.csr -subj /CN=127.0.0.1 "
           ">/dev/null 2>&1 && "
           "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
           "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
           "-CAcreateserial -out server.pem -days 2 -extfile san.ext "
           ">/dev/null 2>&1",
           sv->dir);
  if (system(cmd) != 0)
    return -1;
  sv->tls = 1;
  return 0;
}

/* Kill the server (its whole group) and reap it; the storage stays. */
static inline void nu_server_kill(nu_server *sv) {
  if (sv->pid > 0) {
    kill(-sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
    sv->pid = 0;
  }
}

/* Kill the server from a process that is not its parent (a test, which
 * Check runs in a child of the process that started it): the group is
 * killed, then the call waits until the server has exited (its sockets
 * closed, its port free) through a pidfd, since only the parent can reap
 * it. sv->pid is kept for the parent to reap. Returns 0 or -1. */
static inline int nu_server_kill_foreign(nu_server *sv) {
  int fd = (int)syscall(SYS_pidfd_open, sv->pid, 0);
  if (fd < 0)
    return -1;
  kill(-sv->pid, SIGKILL);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int rc;
  while ((rc = poll(&p, 1, -1)) < 0)
    ;
  close(fd);
  return rc == 1 ? 0 : -1;
}

static inline void nu_server_stop(nu_server *sv) {
  nu_server_kill(sv);
  if (sv->dir[0]) {
    pid_t pid = fork();
    if (pid == 0) {
      execlp("rm", "rm", "-rf", sv->dir, (char *)NULL);
      _exit(127);
    }
    if (pid > 0)
      waitpid(pid, NULL, 0);
    sv->dir[0] = '\0';
  }
}

#endif /* SLUICE_NATSUTIL_H */
