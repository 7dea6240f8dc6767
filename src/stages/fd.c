/* SPDX-License-Identifier: MIT */
/*
 * File-descriptor and file stages: sources and sinks on any descriptor,
 * and on a path, with an atomic file sink.
 *
 * One context serves all four constructors. A source's read op does one
 * read(2) into a pooled buffer and pushes it; a sink's write op loops until
 * every byte of the chunk is out. Both retry EINTR and turn EAGAIN into a
 * poll(2) that also watches the pipeline's cancel descriptor; a source on
 * anything but a regular file or block device polls before every read, so
 * that it never sits in a read(2) that a cancel could not end.
 *
 * SIGPIPE. The library installs no handler and changes no process-wide
 * signal state. Sockets are written with send(MSG_NOSIGNAL). For a pipe,
 * write(2) directs SIGPIPE at the writing thread; stage threads block every
 * asynchronous signal, so it stays pending on that thread, write(2) returns
 * EPIPE, and take_sigpipe() takes it back with a zero-timeout sigtimedwait
 * before it could ever be delivered. Linux dequeues a thread's own pending
 * signals before the process's, so a SIGPIPE sent to the whole process by
 * someone else is left for the application.
 *
 * The atomic file sink. The constructor opens the target's directory and
 * creates the temporary there: an unnamed file (O_TMPFILE) where the file
 * system allows it, so that nothing, not even SIGKILL or a power cut, can
 * leave it behind; else ".<name>.XXXXXX", made with O_EXCL. final calls
 * the application's commit hook on the descriptor, fsyncs it and gives
 * the file its name: an unnamed one is linked at the target through
 * /proc/self/fd (linkat never replaces, so a new target is atomic and
 * refuses a file that appeared meanwhile; to overwrite, it is linked
 * under a temporary name and renamed over the target), a named one is
 * renamed over it (RENAME_NOREPLACE unless told to overwrite). Then the
 * directory is fsynced. tmp_live says a temporary exists under tmpname:
 * destroy removes it then, which covers failure, cancel and a stage freed
 * without running; an unnamed one vanishes with its descriptor. Names are
 * relative to the directory descriptor, so a chdir by the application
 * between construction and the end changes nothing.
 *
 * Threads. The constructors run on the caller's thread and only fill the
 * context; from start on, the ops run on the stage's thread (a sink fed
 * by several inputs may be called from one thread per input, but the
 * framework never runs two of its ops at once), and destroy after every
 * stage thread has ended. The byte count is the one field read by other
 * threads: a relaxed atomic, written by one op at a time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MSG_NOSIGNAL, renameat2, sigtimedwait, O_TMPFILE */
#endif

#include "sluice/fd.h"

#include "fd-int.h"
#include "stage-int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How a descriptor is waited on and synced. */
enum fd_kind {
  KIND_FILE,   /* regular file or block device: always ready, fdatasync */
  KIND_STREAM, /* pipe, FIFO, terminal, other device: poll first */
  KIND_SOCKET  /* as a stream, written with send(MSG_NOSIGNAL) */
};

struct fd_ctx {
  int fd;
  bool own; /* close fd: in destroy, and a sink in final */
  enum fd_kind kind;
  size_t chunk;   /* source: bytes per read, 0: a full pooled buffer */
  uint64_t total; /* source: size to expect, or SL_FD_SIZE_UNKNOWN */
  sl_fd_progress_fn progress;
  void *progress_arg;
  _Atomic uint64_t bytes;
  int cancel_fd; /* the pipeline's, -1 until first needed; never closed */
  char *path;    /* file stages: the path as given, for messages */
  char what[32]; /* fd stages: "fd N", for messages */

  /* Atomic file sink. */
  bool atomic, overwrite;
  int dirfd;     /* the target's directory */
  char *base;    /* the target's name in it */
  char *tmpname; /* the temporary's name in it */
  bool tmp_live; /* the temporary exists under tmpname */
  bool unnamed;  /* the temporary is an O_TMPFILE file, fd its only hold */
  sl_file_commit_fn commit_fn;
  void *commit_arg;
};

bool sl__fd_no_tmpfile;

static const char *what(const struct fd_ctx *c) {
  return c->path ? c->path : c->what;
}

/* strerror is not thread-safe; the GNU strerror_r returns its message,
 * the XSI one fills buf. */
static const char *errstr(int e, char *buf, size_t n) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
  return strerror_r(e, buf, n);
#else
  if (strerror_r(e, buf, n) != 0)
    snprintf(buf, n, "error %d", e);
  return buf;
#endif
}

/* Explain a failed system call and return its code. */
static int fail(sl_stage *st, const struct fd_ctx *c, const char *call, int e) {
  char buf[128];
  sl_stage_set_error(st, "%s %s: %s", call, what(c),
                     errstr(e, buf, sizeof buf));
  return sl_err_from_errno(e);
}

static void bytes_add(struct fd_ctx *c, uint64_t n) {
  atomic_store_explicit(
      &c->bytes, atomic_load_explicit(&c->bytes, memory_order_relaxed) + n,
      memory_order_relaxed);
}

/* close(2) that reports a real failure. On Linux the descriptor is gone
 * even when close returns EINTR, so EINTR is not one. */
static int close_checked(int fd) {
  if (close(fd) == 0 || errno == EINTR)
    return 0;
  return errno;
}

/* Wait until fd is ready for events, or the pipeline is cancelled or
 * failing (sl__stage_poll). Returns 0, SL_ECANCELED, or an error, with its
 * message set. */
static int wait_ready(sl_stage *st, struct fd_ctx *c, short events,
                      const char *call) {
  int err, rc = sl__stage_poll(st, c->fd, events, &c->cancel_fd, &err);

  if (err != 0)
    return fail(st, c, "poll", err);
  if (rc != 0 && rc != SL_ECANCELED)
    sl_stage_set_error(st, "%s %s: no cancel descriptor: %s", call, what(c),
                       sl_strerror(rc));
  return rc;
}

/* The write that just returned EPIPE left a SIGPIPE pending on this
 * thread, which blocks it: take it back now, so that it is never delivered
 * (to this thread, were it to unblock signals, or anywhere else). Waiting
 * for a signal that is not blocked is undefined, so look first. */
static void take_sigpipe(void) {
  sigset_t set, cur;
  struct timespec zero = {0, 0};

  if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0 ||
      sigismember(&cur, SIGPIPE) != 1)
    return;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
    ;
}

/* ------------------------------------------------------------------------
 * Source
 * ---------------------------------------------------------------------- */

static int source_read(sl_stage *st, void *ctx) {
  struct fd_ctx *c = ctx;
  bool need_poll = c->kind != KIND_FILE;
  sl_buf *b = NULL;
  ssize_t n;
  int rc = sl_stage_buf(st, c->chunk, &b);

  if (rc != 0)
    return rc;
  size_t want = sl_buf_cap(b);
  if (c->chunk && want > c->chunk)
    want = c->chunk;
  for (;;) {
    if (need_poll && (rc = wait_ready(st, c, POLLIN, "read")) != 0)
      goto out;
    n = read(c->fd, sl_buf_data(b), want);
    if (n >= 0)
      break;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      need_poll = true; /* non-blocking, or another reader was first */
      continue;
    }
    rc = fail(st, c, "read", errno);
    goto out;
  }
  if (n == 0) {
    rc = SL_EOF;
    goto out;
  }
  sl_buf_set_len(b, (size_t)n);
  bytes_add(c, (uint64_t)n);
  if (c->progress)
    c->progress(st, atomic_load_explicit(&c->bytes, memory_order_relaxed),
                c->total, c->progress_arg);
  return sl_stage_push(st, b); /* takes b, whatever it returns */
out:
  sl_buf_unref(b);
  return rc;
}

/* ------------------------------------------------------------------------
 * Sink
 * ---------------------------------------------------------------------- */

static ssize_t write_some(struct fd_ctx *c, const void *p, size_t len) {
#ifdef MSG_NOSIGNAL
  if (c->kind == KIND_SOCKET)
    return send(c->fd, p, len, MSG_NOSIGNAL);
#endif
  return write(c->fd, p, len);
}

/* True when a write to c raises no SIGPIPE. */
static bool nosignal(const struct fd_ctx *c) {
#ifdef MSG_NOSIGNAL
  return c->kind == KIND_SOCKET;
#else
  (void)c;
  return false;
#endif
}

static int sink_write(sl_stage *st, void *ctx, sl_buf *in) {
  struct fd_ctx *c = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t left = sl_buf_len(in);
  int rc = 0;

  while (left > 0) {
    ssize_t n = write_some(c, p, left);
    if (n > 0) {
      p += n;
      left -= (size_t)n;
      bytes_add(c, (uint64_t)n);
      continue;
    }
    int e = n == 0 ? EIO : errno; /* no progress and no reason */
    if (e == EINTR)
      continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((rc = wait_ready(st, c, POLLOUT, "write")) != 0)
        break;
      continue;
    }
    if (e == EPIPE && !nosignal(c))
      take_sigpipe();
    rc = fail(st, c, "write", e);
    break;
  }
  sl_buf_unref(in);
  if (rc == 0 && c->progress)
    c->progress(st, atomic_load_explicit(&c->bytes, memory_order_relaxed),
                SL_FD_SIZE_UNKNOWN, c->progress_arg);
  return rc;
}

/* A flush marker: nothing is held back, so only a file has something to
 * do: put what came before the marker on stable storage. */
static int sink_sync(sl_stage *st, void *ctx) {
  struct fd_ctx *c = ctx;

  if (c->kind != KIND_FILE)
    return 0;
  while (fdatasync(c->fd) != 0) {
    if (errno == EINTR)
      continue;
    if (errno == EINVAL || errno == ESPIPE || errno == ENOTSUP)
      return 0; /* a descriptor that cannot be synced */
    return fail(st, c, "fdatasync", errno);
  }
  return 0;
}

/* Put the temporary in the target's place without replacing a file
 * unless told to. RENAME_NOREPLACE makes the refusal atomic; where the
 * file system lacks it, a look just before the rename has to do. */
static int rename_into_place(struct fd_ctx *c) {
  if (c->overwrite)
    return renameat(c->dirfd, c->tmpname, c->dirfd, c->base);
#ifdef RENAME_NOREPLACE
  if (renameat2(c->dirfd, c->tmpname, c->dirfd, c->base, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    return -1;
#endif
  struct stat sb;
  if (fstatat(c->dirfd, c->base, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    errno = EEXIST;
    return -1;
  }
  return renameat(c->dirfd, c->tmpname, c->dirfd, c->base);
}

/* The temporary's name: ".<base>.XXXXXX", the base cut so that the name
 * stays well within NAME_MAX. */
#define TMP_BASE_MAX 200
#define TMP_TRIES 100

static void tmp_fill(char *name, size_t len, uint64_t *state) {
  static const char set[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  uint64_t x = *state;

  for (size_t i = len - 6; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    name[i] = set[(x >> 33) % (sizeof set - 1)];
  }
  *state = x;
}

static uint64_t tmp_seed(const struct fd_ctx *c) {
  return sl__now_ns() ^ ((uint64_t)(uintptr_t)c << 16) ^
         ((uint64_t)getpid() << 40);
}

/* The unnamed temporary's path in /proc, which linkat follows to it. */
static void proc_path(char *buf, size_t n, int fd) {
  snprintf(buf, n, "/proc/self/fd/%d", fd);
}

/* Give the unnamed temporary a name. A new target is linked at once:
 * linkat never replaces, which is the refusal SL_FILE_OVERWRITE lifts.
 * To replace, it is linked under a fresh temporary name (tmp_live from
 * then on) and renamed over the target. 0 or -1 (errno). */
static int link_into_place(struct fd_ctx *c) {
  char proc[64];
  size_t len = strlen(c->tmpname);
  uint64_t state = tmp_seed(c);

  proc_path(proc, sizeof proc, c->fd);
  if (!c->overwrite)
    return linkat(AT_FDCWD, proc, c->dirfd, c->base, AT_SYMLINK_FOLLOW);
  for (int i = 0; i < TMP_TRIES; i++) {
    state |= 1; /* never the fixed point 0 */
    tmp_fill(c->tmpname, len, &state);
    if (linkat(AT_FDCWD, proc, c->dirfd, c->tmpname, AT_SYMLINK_FOLLOW) == 0) {
      c->tmp_live = true;
      return 0;
    }
    if (errno != EEXIST)
      return -1;
  }
  return -1; /* errno EEXIST: every name tried was taken */
}

/* End of an atomic file sink's stream: the application's hook, make the
 * temporary durable, give it the target's name, make the name durable. */
static int commit(sl_stage *st, struct fd_ctx *c) {
  int e;

  if (c->commit_fn != NULL && (e = c->commit_fn(st, c->fd, c->commit_arg)) < 0)
    return e;
  while (fsync(c->fd) != 0)
    if (errno != EINTR)
      return fail(st, c, "fsync", errno);
  if (c->unnamed && link_into_place(c) != 0)
    return fail(st, c, "link", errno);
  e = close_checked(c->fd);
  c->fd = -1;
  if (e) {
    if (c->unnamed && !c->overwrite)
      unlinkat(c->dirfd, c->base, 0); /* ours: linked just now */
    return fail(st, c, "close", e);
  }
  if ((!c->unnamed || c->overwrite) && rename_into_place(c) != 0)
    return fail(st, c, "rename", errno);
  c->tmp_live = false;
  while (fsync(c->dirfd) != 0) {
    if (errno == EINTR)
      continue;
    if (errno == EINVAL || errno == ENOTSUP)
      break; /* a file system that cannot sync a directory */
    return fail(st, c, "fsync directory of", errno);
  }
  return 0;
}

static int sink_final(sl_stage *st, void *ctx) {
  struct fd_ctx *c = ctx;

  if (c->atomic)
    return commit(st, c);
  if (c->commit_fn != NULL && c->fd >= 0) { /* in place, a regular file */
    int e = c->commit_fn(st, c->fd, c->commit_arg);
    if (e < 0)
      return e;
  }
  if (c->own && c->fd >= 0) {
    int e = close_checked(c->fd);
    c->fd = -1;
    if (e)
      return fail(st, c, "close", e);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Construction and destruction
 * ---------------------------------------------------------------------- */

/* Release everything, errno kept for the caller of a failed constructor:
 * close what the stage owns and remove a temporary that was never put in
 * place. */
static void ctx_free(struct fd_ctx *c) {
  int saved = errno;

  if (c->own && c->fd >= 0)
    close(c->fd);
  if (c->tmp_live)
    unlinkat(c->dirfd, c->tmpname, 0);
  if (c->dirfd >= 0)
    close(c->dirfd);
  sl__free(c->path);
  sl__free(c->base);
  sl__free(c->tmpname);
  sl__free(c);
  errno = saved;
}

static void fd_destroy(void *ctx) {
  ctx_free(ctx);
}

static const sl_stage_ops source_ops = {.read = source_read,
                                        .destroy = fd_destroy};
static const sl_stage_ops sink_ops = {.write = sink_write,
                                      .final = sink_final,
                                      .sync = sink_sync,
                                      .destroy = fd_destroy};

static enum fd_kind kind_of(const struct stat *sb) {
  if (S_ISREG(sb->st_mode) || S_ISBLK(sb->st_mode))
    return KIND_FILE;
  if (S_ISSOCK(sb->st_mode))
    return KIND_SOCKET;
  return KIND_STREAM;
}

/* Check what every constructor checks; 0 or SL_EINVAL. */
static int check_args(sl_stage **out, const sl_fd_opts *o, unsigned accepted) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if ((o->flags & ~accepted) != 0 || (o->name && !*o->name))
    return SL_EINVAL;
  return 0;
}

static struct fd_ctx *ctx_new(const sl_fd_opts *o) {
  struct fd_ctx *c = sl__calloc(1, sizeof *c);

  if (!c)
    return NULL;
  c->fd = c->dirfd = c->cancel_fd = -1;
  c->chunk = o->chunk_size;
  c->total = SL_FD_SIZE_UNKNOWN;
  c->progress = o->progress;
  c->progress_arg = o->progress_arg;
  atomic_init(&c->bytes, 0);
  return c;
}

/* The stage around c; on failure c is freed (errno kept). */
static int stage_for(sl_stage **out, struct fd_ctx *c, const sl_fd_opts *o,
                     const sl_stage_ops *ops, const char *dflt) {
  int rc = sl_stage_new(out, o->name ? o->name : dflt, ops, c);

  if (rc != 0)
    ctx_free(c);
  return rc;
}

static int fd_stage_new(sl_stage **out, int fd, const sl_fd_opts *opts,
                        bool source) {
  static const sl_fd_opts none;
  const sl_fd_opts *o = opts ? opts : &none;
  struct stat sb;
  int rc = check_args(out, o, SL_FD_CLOSE);

  if (rc != 0)
    return rc;
  if (fd < 0)
    return SL_EINVAL;
  if (fstat(fd, &sb) != 0)
    return sl_err_from_errno(errno);
  struct fd_ctx *c = ctx_new(o);
  if (!c)
    return SL_ENOMEM;
  c->fd = fd;
  c->kind = kind_of(&sb);
  snprintf(c->what, sizeof c->what, "fd %d", fd);
  if (source && S_ISREG(sb.st_mode)) {
    off_t at = lseek(fd, 0, SEEK_CUR);
    c->total = (uint64_t)sb.st_size;
    if (at > 0)
      c->total = at < sb.st_size ? (uint64_t)(sb.st_size - at) : 0;
  }
  rc = stage_for(out, c, o, source ? &source_ops : &sink_ops,
                 source ? "fd-source" : "fd-sink");
  if (rc == 0) /* owned only now: a failure leaves fd to the caller */
    c->own = (o->flags & SL_FD_CLOSE) != 0;
  return rc;
}

int sl_fd_source_new(sl_stage **out, int fd, const sl_fd_opts *opts) {
  return fd_stage_new(out, fd, opts, true);
}

int sl_fd_sink_new(sl_stage **out, int fd, const sl_fd_opts *opts) {
  return fd_stage_new(out, fd, opts, false);
}

/* Open path for a stage: never block on a FIFO, then read or write it
 * blocking unless keep_nonblock. Returns the descriptor or -1 (errno). */
static int open_nonblocking(const char *path, int flags, bool keep_nonblock) {
  int fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  int fl;

  if (fd < 0 || keep_nonblock)
    return fd;
  if ((fl = fcntl(fd, F_GETFL)) < 0 ||
      fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int sl_file_source_new(sl_stage **out, const char *path,
                       const sl_fd_opts *opts) {
  static const sl_fd_opts none;
  const sl_fd_opts *o = opts ? opts : &none;
  struct stat sb;
  int rc = check_args(out, o, 0);

  if (rc != 0)
    return rc;
  if (!path || !*path)
    return SL_EINVAL;
  struct fd_ctx *c = ctx_new(o);
  if (!c)
    return SL_ENOMEM;
  c->own = true;
  if (!(c->path = sl__strdup(path))) {
    ctx_free(c);
    return SL_ENOMEM;
  }
  /* A FIFO without a writer yet: the open must not wait for one, and the
   * reads must (poll waits for the writer, read(2) then sees its data). */
  c->fd = open_nonblocking(path, O_RDONLY, false);
  if (c->fd < 0 || fstat(c->fd, &sb) != 0)
    goto fail_errno;
  if (S_ISDIR(sb.st_mode)) {
    errno = EISDIR;
    goto fail_errno;
  }
  c->kind = kind_of(&sb);
  if (S_ISREG(sb.st_mode))
    c->total = (uint64_t)sb.st_size;
  return stage_for(out, c, o, &source_ops, "file-source");

fail_errno:
  rc = sl_err_from_errno(errno);
  ctx_free(c);
  return rc;
}

/* Split path into its directory (a new string, "." when none) and base
 * (a new string). SL_EINVAL for an empty base, SL_ENOMEM. */
static int split_path(const char *path, char **dir, char **base) {
  const char *slash = strrchr(path, '/');
  const char *b = slash ? slash + 1 : path;

  *dir = *base = NULL;
  if (!*b)
    return SL_EINVAL;
  size_t dlen = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
  *dir = sl__malloc(dlen ? dlen + 1 : 2);
  if (!*dir)
    return SL_ENOMEM;
  if (dlen) {
    memcpy(*dir, path, dlen);
    (*dir)[dlen] = '\0';
  } else {
    strcpy(*dir, ".");
  }
  if (!(*base = sl__strdup(b))) {
    sl__free(*dir);
    *dir = NULL;
    return SL_ENOMEM;
  }
  return 0;
}

/* An unnamed temporary in the target's directory, when the file system
 * makes one and /proc/self/fd leads to it (linkat names it through that
 * path). Returns 0 (c->fd and c->unnamed set), 1 when the temporary must
 * be a named one instead, -1 on a real error (errno: the directory is not
 * writable, the disk is full, ...). */
static int tmp_create_unnamed(struct fd_ctx *c, mode_t mode) {
#ifdef O_TMPFILE
  char proc[64];
  struct stat a, b;

  if (sl__fd_no_tmpfile)
    return 1;
  c->fd =
      openat(c->dirfd, ".", O_TMPFILE | O_WRONLY | O_NOCTTY | O_CLOEXEC, mode);
  if (c->fd < 0) /* refused by the kernel or the file system: fall back */
    return errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL ||
                   errno == ENOTSUP
               ? 1
               : -1;
  proc_path(proc, sizeof proc, c->fd);
  if (fstat(c->fd, &a) == 0 && stat(proc, &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino) {
    c->unnamed = true;
    return 0;
  }
  close(c->fd); /* no /proc: it could never get a name */
  c->fd = -1;
#else
  (void)c;
  (void)mode;
#endif
  return 1;
}

/* Create the temporary beside the target: unnamed where possible, else
 * O_EXCL under a fresh random name until one is free (the name's buffer
 * is made either way: an unnamed one that replaces a file is linked
 * under such a name first). With keep_mode (>= 0) it gets exactly those
 * permission bits, else mode through the umask. 0 or -1 (errno). */
static int tmp_create(struct fd_ctx *c, unsigned mode, int keep_mode) {
  size_t blen = strlen(c->base);
  if (blen > TMP_BASE_MAX)
    blen = TMP_BASE_MAX;
  size_t len = 1 + blen + 1 + 6;
  if (!(c->tmpname = sl__malloc(len + 1))) {
    errno = ENOMEM;
    return -1;
  }
  c->tmpname[0] = '.';
  memcpy(c->tmpname + 1, c->base, blen);
  c->tmpname[1 + blen] = '.';
  memset(c->tmpname + 2 + blen, 'X', 6); /* tmp_fill picks them */
  c->tmpname[len] = '\0';
  mode_t first = keep_mode >= 0 ? 0600 : (mode_t)mode;
  int u = tmp_create_unnamed(c, first);
  if (u == 0)
    goto made;
  if (u < 0)
    return -1;
  uint64_t state = tmp_seed(c);
  for (int i = 0; i < TMP_TRIES; i++) {
    state |= 1; /* never the fixed point 0 */
    tmp_fill(c->tmpname, len, &state);
    c->fd = openat(c->dirfd, c->tmpname,
                   O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, first);
    if (c->fd >= 0)
      break;
    if (errno != EEXIST)
      return -1;
  }
  if (c->fd < 0)
    return -1; /* errno EEXIST: every name tried was taken */
  c->tmp_live = true;
made:
  if (keep_mode >= 0 && fchmod(c->fd, (mode_t)keep_mode) != 0)
    return -1;
  return 0;
}

int sl_file_sink_new(sl_stage **out, const char *path, const sl_fd_opts *opts) {
  static const sl_fd_opts none;
  const sl_fd_opts *o = opts ? opts : &none;
  struct stat sb;
  int rc = check_args(out, o, SL_FILE_OVERWRITE | SL_FILE_IN_PLACE);
  bool overwrite = (o->flags & SL_FILE_OVERWRITE) != 0;
  unsigned mode = o->mode ? o->mode : 0666;
  int keep_mode = -1;
  char *dir = NULL;

  if (rc != 0)
    return rc;
  if (!path || !*path || o->mode > 07777)
    return SL_EINVAL;
  struct fd_ctx *c = ctx_new(o);
  if (!c)
    return SL_ENOMEM;
  c->own = true;
  c->kind = KIND_FILE;
  c->overwrite = overwrite;
  c->commit_fn = o->commit;
  c->commit_arg = o->commit_arg;
  if (!(c->path = sl__strdup(path))) {
    ctx_free(c);
    return SL_ENOMEM;
  }
  if ((rc = split_path(path, &dir, &c->base)) != 0) {
    ctx_free(c);
    return rc;
  }

  if (stat(path, &sb) == 0) {
    if (S_ISDIR(sb.st_mode)) {
      errno = EISDIR;
      goto fail_errno;
    }
    if (!S_ISREG(sb.st_mode)) {
      /* A device or FIFO: write into it, non-blocking so that a full
       * FIFO waits in poll, where a cancel reaches it. */
      c->fd = open_nonblocking(path, O_WRONLY, true);
      if (c->fd < 0 || fstat(c->fd, &sb) != 0)
        goto fail_errno;
      c->kind = kind_of(&sb);
      c->commit_fn = NULL; /* not a file of ours to finish */
      goto made;
    }
    if (overwrite && !o->mode)
      keep_mode = (int)(sb.st_mode & 0777);
  }
  if (o->flags & SL_FILE_IN_PLACE) {
    c->fd = open(path,
                 O_WRONLY | O_CREAT | O_NOCTTY | O_CLOEXEC |
                     (overwrite ? O_TRUNC : O_EXCL),
                 mode);
    if (c->fd < 0)
      goto fail_errno;
    goto made;
  }
  if (!overwrite && fstatat(AT_FDCWD, path, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
    errno = EEXIST; /* a dangling symbolic link, say */
    goto fail_errno;
  }
  c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (c->dirfd < 0 || tmp_create(c, mode, keep_mode) != 0)
    goto fail_errno;
  c->atomic = true;

made:
  sl__free(dir);
  return stage_for(out, c, o, &sink_ops, "file-sink");

fail_errno:
  rc = sl_err_from_errno(errno);
  sl__free(dir);
  ctx_free(c);
  return rc;
}

uint64_t sl_fd_bytes(const sl_stage *stage) {
  if (!stage ||
      (stage->ops.read != source_read && stage->ops.write != sink_write))
    return 0;
  const struct fd_ctx *c = stage->ctx;
  return atomic_load_explicit(&c->bytes, memory_order_relaxed);
}
