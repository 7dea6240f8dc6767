/* SPDX-License-Identifier: MIT */
/*
 * server-client — load for examples/gzip-server: N concurrent clients on
 * loopback, each sending a body and reading the gzip back, checked to
 * inflate to the body byte for byte.
 *
 * One thread drives every connection through epoll, so the load costs
 * little next to the server it measures. Each client connects, sends its
 * body (deterministic data, at an offset of its own into a shared pattern),
 * shuts down its write side, and reads the response until end of file,
 * inflating it as it comes and comparing it with the body; it sends and
 * reads at once, as a real client must against a server with bounded
 * buffers.
 *
 * Modes:
 *   --slow             a slow reader: every --slow-pause-us (1000)
 *                      microseconds each client makes --slow-reads (1)
 *                      reads of at most --slow-bytes (1024) each
 *   --disconnect K     the first K clients reset the connection (SO_LINGER
 *                      0, close) once they have sent half their body; they
 *                      count as dropped, the others must still succeed
 *   --together         no client ends its body (shutdown) before every
 *                      client has received part of its response: all of
 *                      them are then in the server's hands at once, since
 *                      a connection that answered was accepted and one
 *                      whose body has not ended cannot have finished. The
 *                      server must answer before a body's end: give it
 *                      bodies of several of its buffers that it cannot
 *                      hold back (--data random)
 *   --no-verify        count the response bytes without inflating them
 *   --data mixed       runs of random bytes, text, zeros and patterns,
 *                      an 8 MiB pattern (the default)
 *   --data repeat      a 4 KiB random block repeated: compresses about
 *                      a hundredfold, so a huge body makes a small response
 *   --data random      8 MiB of random bytes: gzip cannot shrink it, so the
 *                      response is as large as the body (a little larger)
 *
 * Usage: server-client [options] -c CLIENTS -n BYTES PORT
 * Prints one line, "clients=.. ok=.. dropped=.. failed=.. sent=.. recv=..
 * seconds=.. mbps=.. peak_answered=..", mbps being request bytes per
 * second (1e6) over all clients, peak_answered the most connections at
 * once that had received response bytes and not yet their end. Exit status 0
 * when every client that was not told to drop received a response that inflates
 * to its body, 1 otherwise, 2 on bad usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define IO_CHUNK (64 << 10)

struct client {
  int id, fd;
  uint64_t off;      /* where the body starts in the pattern */
  uint64_t sent;     /* body bytes sent */
  uint64_t checked;  /* response bytes inflated and compared */
  uint64_t received; /* compressed bytes received */
  bool connected, send_done, done, ok, drop;
  bool held; /* --together: the whole body sent, its end held back */
  z_stream z;
  bool z_ready;
};

static unsigned char *pattern;
static size_t plen;
static uint64_t body_len;
static bool verify = true;
static bool together, released; /* --together, and its moment came */

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x * 0x2545f4914f6cdd1dull;
}

/* The shared pattern the bodies are cut from: kind "mixed", "repeat" or
 * "random". */
static int make_pattern(const char *kind) {
  static const char *const words[] = {"sluice ", "stream ", "backpressure ",
                                      "gzip ",   "ring ",   "the ",
                                      "of ",     "server\n"};
  uint64_t r = 0x9e3779b97f4a7c15ull;
  bool repeat = strcmp(kind, "repeat") == 0;
  bool noise = strcmp(kind, "random") == 0;
  if (!repeat && !noise && strcmp(kind, "mixed") != 0)
    return -1;
  plen = repeat ? 4096 : (size_t)8 << 20;
  pattern = malloc(plen);
  if (!pattern)
    return -1;
  for (size_t i = 0; i < plen;) {
    uint64_t x = rnd(&r);
    size_t run = repeat || noise ? plen : 1 + (size_t)(x % 65536), k = 0;
    if (run > plen - i)
      run = plen - i;
    switch (repeat || noise ? 0 : (x >> 32) % 4) {
    case 0:
      for (; k < run; k++)
        pattern[i + k] = (unsigned char)rnd(&r);
      break;
    case 1:
      while (k < run) {
        const char *w = words[rnd(&r) % 8];
        for (; *w && k < run; w++)
          pattern[i + k++] = (unsigned char)*w;
      }
      break;
    case 2:
      memset(pattern + i, 0, run);
      break;
    default:
      for (; k < run; k++)
        pattern[i + k] = (unsigned char)((i + k) * 31 / 7);
      break;
    }
    i += run;
  }
  return 0;
}

/* Copy body bytes [at, at + n) of client c into dst. */
static void body_bytes(const struct client *c, uint64_t at, unsigned char *dst,
                       size_t n) {
  while (n > 0) {
    size_t p = (size_t)((c->off + at) % plen), k = plen - p;
    if (k > n)
      k = n;
    memcpy(dst, pattern + p, k);
    dst += k;
    at += k;
    n -= k;
  }
}

/* True when [at, at + n) of c's body equals got. */
static bool body_equal(const struct client *c, uint64_t at,
                       const unsigned char *got, size_t n) {
  while (n > 0) {
    size_t p = (size_t)((c->off + at) % plen), k = plen - p;
    if (k > n)
      k = n;
    if (memcmp(got, pattern + p, k) != 0)
      return false;
    got += k;
    at += k;
    n -= k;
  }
  return true;
}

static void client_end(struct client *c, bool ok) {
  if (c->done)
    return;
  c->done = true;
  c->ok = ok;
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  if (c->z_ready)
    inflateEnd(&c->z);
  c->z_ready = false;
}

/* Inflate n response bytes and compare them with the body. */
static bool take_response(struct client *c, unsigned char *in, size_t n) {
  static unsigned char out[IO_CHUNK];
  c->received += n;
  if (!verify)
    return true;
  c->z.next_in = in;
  c->z.avail_in = (uInt)n;
  while (c->z.avail_in > 0) {
    c->z.next_out = out;
    c->z.avail_out = sizeof out;
    int rc = inflate(&c->z, Z_NO_FLUSH);
    size_t got = sizeof out - c->z.avail_out;
    if (c->checked + got > body_len || !body_equal(c, c->checked, out, got))
      return false;
    c->checked += got;
    if (rc == Z_STREAM_END)
      return c->z.avail_in == 0 && c->checked == body_len;
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return false;
    if (rc == Z_BUF_ERROR && c->z.avail_in > 0)
      return false;
  }
  return true;
}

/* End of file from the server: the whole response must be there. */
static bool response_complete(struct client *c) {
  if (!verify)
    return c->received > 0;
  /* inflate saw Z_STREAM_END exactly when checked reached the body and
   * the stream said so; ask zlib once more with nothing in. */
  c->z.next_in = NULL;
  c->z.avail_in = 0;
  unsigned char out[1];
  c->z.next_out = out;
  c->z.avail_out = sizeof out;
  return inflate(&c->z, Z_FINISH) == Z_STREAM_END && c->checked == body_len;
}

static void set_events(int ep, struct client *c, uint32_t ev) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Send what the socket takes. */
static void do_send(int ep, struct client *c, bool slow) {
  static unsigned char buf[IO_CHUNK];
  while (!c->send_done) {
    uint64_t limit = c->drop ? body_len / 2 : body_len;
    if (c->sent >= limit) {
      if (c->drop) { /* reset mid-stream */
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        client_end(c, true);
        return;
      }
      if (together && !released) { /* end it later, with the others */
        c->held = true;
        set_events(ep, c, slow ? 0 : EPOLLIN);
        return;
      }
      shutdown(c->fd, SHUT_WR);
      c->send_done = true;
      c->held = false;
      set_events(ep, c, slow ? 0 : EPOLLIN);
      return;
    }
    size_t n =
        limit - c->sent > sizeof buf ? sizeof buf : (size_t)(limit - c->sent);
    body_bytes(c, c->sent, buf, n);
    ssize_t k = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (k <= 0) {
      client_end(c, false);
      return;
    }
    c->sent += (uint64_t)k;
  }
}

/* Receive up to max bytes (0: all there is). */
static void do_recv(struct client *c, size_t max) {
  static unsigned char buf[IO_CHUNK];
  size_t budget = max ? max : SIZE_MAX;
  while (budget > 0 && !c->done) {
    size_t want = budget < sizeof buf ? budget : sizeof buf;
    ssize_t n = recv(c->fd, buf, want, MSG_DONTWAIT);
    if (n > 0) {
      budget -= (size_t)n;
      if (!take_response(c, buf, (size_t)n))
        client_end(c, false);
      continue;
    }
    if (n == 0) {
      client_end(c, c->send_done && response_complete(c));
      return;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      client_end(c, false);
    return;
  }
}

static int usage(void) {
  fprintf(stderr,
          "usage: server-client [--slow] [--slow-bytes N] [--slow-reads R]\n"
          "         [--slow-pause-us U] [--disconnect K] [--together]\n"
          "         [--no-verify]\n"
          "         [--data mixed|repeat|random]\n"
          "         -c CLIENTS -n BYTES PORT\n");
  return 2;
}

int main(int argc, char **argv) {
  int nclients = 1, ndrop = 0, port = -1;
  bool slow = false;
  size_t slow_bytes = 1024;
  long slow_reads = 1;
  long pause_us = 1000;
  const char *data = "mixed";
  body_len = 1 << 20;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--slow") == 0)
      slow = true;
    else if (strcmp(a, "--together") == 0)
      together = true;
    else if (strcmp(a, "--no-verify") == 0)
      verify = false;
    else if (strcmp(a, "--slow-bytes") == 0 && v && ++i)
      slow_bytes = strtoul(v, NULL, 10);
    else if (strcmp(a, "--slow-reads") == 0 && v && ++i)
      slow_reads = atol(v);
    else if (strcmp(a, "--slow-pause-us") == 0 && v && ++i)
      pause_us = atol(v);
    else if (strcmp(a, "--disconnect") == 0 && v && ++i)
      ndrop = atoi(v);
    else if (strcmp(a, "--data") == 0 && v && ++i)
      data = v;
    else if (strcmp(a, "-c") == 0 && v && ++i)
      nclients = atoi(v);
    else if (strcmp(a, "-n") == 0 && v && ++i)
      body_len = strtoull(v, NULL, 10);
    else if (a[0] != '-' && port < 0)
      port = atoi(a);
    else
      return usage();
  }
  if (port <= 0 || nclients <= 0 || ndrop < 0 || ndrop > nclients ||
      slow_bytes == 0 || slow_reads <= 0 || pause_us < 0 ||
      make_pattern(data) != 0)
    return usage();

  struct client *cl = calloc((size_t)nclients, sizeof *cl);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!cl || ep < 0) {
    perror("server-client");
    return 1;
  }
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  uint64_t t0 = now_ns();
  for (int i = 0; i < nclients; i++) {
    struct client *c = &cl[i];
    c->id = i;
    c->off = (uint64_t)i * 7919 * 61 % plen;
    c->drop = i < ndrop;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || (verify && inflateInit2(&c->z, 15 + 16) != Z_OK)) {
      perror("server-client: socket");
      return 1;
    }
    c->z_ready = verify;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 &&
        errno != EINPROGRESS) {
      perror("server-client: connect");
      return 1;
    }
    struct epoll_event e = {.events = EPOLLOUT | (slow ? 0 : EPOLLIN),
                            .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
  }

  int left = nclients, peak_answered = 0;
  uint64_t next_tick = now_ns();
  struct epoll_event evs[256];
  while (left > 0) {
    int timeout = -1;
    if (slow) {
      uint64_t t = now_ns();
      timeout = t >= next_tick ? 0 : (int)((next_tick - t + 999999) / 1000000);
    }
    int n = epoll_wait(ep, evs, 256, timeout);
    if (n < 0 && errno != EINTR) {
      perror("server-client: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      struct client *c = evs[i].data.ptr;
      if (c->done)
        continue;
      if (slow && c->send_done) { /* read on the ticks only */
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        continue;
      }
      if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        do_send(ep, c, slow);
      if (!c->done && !slow && (evs[i].events & (EPOLLIN | EPOLLHUP)))
        do_recv(c, 0);
    }
    if (slow && now_ns() >= next_tick) { /* each slow reader takes bites */
      for (int i = 0; i < nclients; i++)
        for (long k = 0; k < slow_reads && !cl[i].done; k++)
          do_recv(&cl[i], slow_bytes);
      next_tick = now_ns() + (uint64_t)pause_us * 1000;
    }
    left = 0;
    int answered = 0, open_answered = 0;
    for (int i = 0; i < nclients; i++) {
      left += !cl[i].done;
      answered += cl[i].done || cl[i].received > 0;
      open_answered += !cl[i].done && cl[i].received > 0;
    }
    if (open_answered > peak_answered)
      peak_answered = open_answered;
    if (together && !released && answered == nclients) {
      released = true; /* every one answered: end the held bodies */
      for (int i = 0; i < nclients; i++)
        if (cl[i].held && !cl[i].done)
          do_send(ep, &cl[i], slow);
    }
  }
  double secs = (double)(now_ns() - t0) / 1e9;

  int ok = 0, dropped = 0, failed = 0;
  unsigned long long sent = 0, recvd = 0;
  for (int i = 0; i < nclients; i++) {
    sent += cl[i].sent;
    recvd += cl[i].received;
    if (cl[i].drop)
      dropped++;
    else if (cl[i].ok)
      ok++;
    else
      failed++;
  }
  printf("clients=%d ok=%d dropped=%d failed=%d sent=%llu recv=%llu "
         "seconds=%.3f mbps=%.1f peak_answered=%d\n",
         nclients, ok, dropped, failed, sent, recvd, secs,
         (double)sent / secs / 1e6, peak_answered);
  free(cl);
  free(pattern);
  close(ep);
  return failed == 0 ? 0 : 1;
}
