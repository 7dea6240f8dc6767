/* SPDX-License-Identifier: MIT */
/*
 * The socket stage: one connected stream socket as a duplex stage.
 *
 * The framework runs a duplex on two threads: the read side's loop calls
 * sock_read, which receives one chunk and pushes it; the write side's loop
 * hands each input chunk to sock_write and calls sock_final at the end of
 * the input. The two never wait for each other: the only thing they share
 * is the descriptor (the kernel keeps its two directions apart) and the
 * cancel descriptor, which each side looks up on its own.
 *
 * Nothing here blocks in a call a cancel cannot end. recv and send are
 * made with MSG_DONTWAIT whatever the descriptor's O_NONBLOCK says; when
 * they would block, the side waits in poll(2) on the socket and the
 * pipeline's cancel descriptor together. A busy socket is never polled:
 * the call is tried first, which saves a system call per chunk while data
 * flows, and the framework looks at the cancel flag between chunks.
 *
 * SIGPIPE: send(MSG_NOSIGNAL) reports a peer that has gone as EPIPE and
 * raises no signal, so no signal state is touched.
 *
 * Threads: the constructor runs on the caller's; sock_read and its counter
 * on the read side's thread, sock_write, sock_final and theirs on the
 * write side's; destroy after both have ended. The counters are relaxed
 * atomics with one writer each, read by sl_socket_bytes on any thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MSG_NOSIGNAL, MSG_DONTWAIT */
#endif

#include "sluice/fd.h"

#include "stage-int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* platforms without it use SO_NOSIGPIPE below */
#endif

struct sock_side {
  _Alignas(SL_CACHELINE) _Atomic uint64_t bytes;
  int cancel_fd; /* the pipeline's, looked up on first wait; never closed */
};

struct sock_ctx {
  int fd;
  bool own, shutdown_wr;
  size_t chunk;  /* bytes per recv, 0: a full pooled buffer */
  char what[32]; /* "fd N", for messages */
  struct sock_side rd, wr;
};

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
static int fail(sl_stage *st, const struct sock_ctx *c, const char *call,
                int e) {
  char buf[128];
  sl_stage_set_error(st, "%s %s: %s", call, c->what,
                     errstr(e, buf, sizeof buf));
  return sl_err_from_errno(e);
}

static void bytes_add(struct sock_side *side, uint64_t n) {
  atomic_store_explicit(
      &side->bytes,
      atomic_load_explicit(&side->bytes, memory_order_relaxed) + n,
      memory_order_relaxed);
}

/* Wait until the socket is ready for events (or in error, or hung up: the
 * next call says which), or the pipeline is cancelled or failing
 * (sl__stage_poll). Returns 0, SL_ECANCELED, or an error, with its message
 * set. */
static int wait_ready(sl_stage *st, struct sock_ctx *c, struct sock_side *side,
                      short events, const char *call) {
  int err, rc = sl__stage_poll(st, c->fd, events, &side->cancel_fd, &err);

  if (err != 0)
    return fail(st, c, "poll", err);
  if (rc != 0 && rc != SL_ECANCELED)
    sl_stage_set_error(st, "%s %s: no cancel descriptor: %s", call, c->what,
                       sl_strerror(rc));
  return rc;
}

/* Read side: one recv into a pooled buffer, pushed as one chunk. */
static int sock_read(sl_stage *st, void *ctx) {
  struct sock_ctx *c = ctx;
  sl_buf *b = NULL;
  ssize_t n;
  int rc = sl_stage_buf(st, c->chunk, &b);

  if (rc != 0)
    return rc;
  size_t want = sl_buf_cap(b);
  if (c->chunk && want > c->chunk)
    want = c->chunk;
  for (;;) {
    n = recv(c->fd, sl_buf_data(b), want, MSG_DONTWAIT);
    if (n >= 0)
      break;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if ((rc = wait_ready(st, c, &c->rd, POLLIN, "recv")) != 0)
        goto out;
      continue;
    }
    rc = fail(st, c, "recv", errno);
    goto out;
  }
  if (n == 0) {
    rc = SL_EOF; /* the peer shut down its side */
    goto out;
  }
  sl_buf_set_len(b, (size_t)n);
  bytes_add(&c->rd, (uint64_t)n);
  return sl_stage_push(st, b); /* takes b, whatever it returns */
out:
  sl_buf_unref(b);
  return rc;
}

/* Write side: every byte of the chunk, however many sends it takes. */
static int sock_write(sl_stage *st, void *ctx, sl_buf *in) {
  struct sock_ctx *c = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t left = sl_buf_len(in);
  int rc = 0;

  while (left > 0) {
    ssize_t n = send(c->fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      left -= (size_t)n;
      bytes_add(&c->wr, (uint64_t)n);
      continue;
    }
    int e = n == 0 ? EIO : errno; /* no progress and no reason */
    if (e == EINTR)
      continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((rc = wait_ready(st, c, &c->wr, POLLOUT, "send")) != 0)
        break;
      continue;
    }
    rc = fail(st, c, "send", e);
    break;
  }
  sl_buf_unref(in);
  return rc;
}

/* End of the write side's input: half-close, so the peer reads end of
 * file after the last byte; the read side goes on. */
static int sock_final(sl_stage *st, void *ctx) {
  struct sock_ctx *c = ctx;

  if (c->shutdown_wr && shutdown(c->fd, SHUT_WR) != 0)
    return fail(st, c, "shutdown", errno);
  return 0;
}

static void sock_destroy(void *ctx) {
  struct sock_ctx *c = ctx;

  if (c->own)
    close(c->fd);
  sl__aligned_free(c);
}

static const sl_stage_ops sock_ops = {.read = sock_read,
                                      .write = sock_write,
                                      .final = sock_final,
                                      .destroy = sock_destroy};

int sl_socket_new(sl_stage **out, const char *name, int fd,
                  const sl_socket_opts *opts) {
  static const sl_socket_opts none;
  const sl_socket_opts *o = opts ? opts : &none;
  const unsigned known = SL_SOCKET_CLOSE | SL_SOCKET_NO_SHUTDOWN;
  int type = 0;
  socklen_t len = sizeof type;

  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (fd < 0 || (name && !*name) || (o->flags & ~known) != 0)
    return SL_EINVAL;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return errno == EBADF ? SL_EBADF : SL_EINVAL;
  if (type != SOCK_STREAM) {
    errno = EPROTOTYPE;
    return SL_EINVAL;
  }
#if defined(SO_NOSIGPIPE)
  {
    int one = 1; /* where send has no MSG_NOSIGNAL */
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
  }
#endif
  struct sock_ctx *c = sl__aligned_calloc(sizeof *c);
  if (!c)
    return SL_ENOMEM;
  c->fd = fd;
  c->chunk = o->chunk_size;
  c->shutdown_wr = (o->flags & SL_SOCKET_NO_SHUTDOWN) == 0;
  c->rd.cancel_fd = c->wr.cancel_fd = -1;
  atomic_init(&c->rd.bytes, 0);
  atomic_init(&c->wr.bytes, 0);
  snprintf(c->what, sizeof c->what, "fd %d", fd);
  int rc = sl_stage_new(out, name ? name : "socket", &sock_ops, c);
  if (rc != 0) {
    sl__aligned_free(c);
    return rc;
  }
  c->own = (o->flags & SL_SOCKET_CLOSE) != 0; /* owned only now */
  return 0;
}

int sl_socket_bytes(const sl_stage *stage, uint64_t *received, uint64_t *sent) {
  const struct sock_ctx *c =
      stage && stage->ops.read == sock_read ? stage->ctx : NULL;

  if (received)
    *received =
        c ? atomic_load_explicit(&c->rd.bytes, memory_order_relaxed) : 0;
  if (sent)
    *sent = c ? atomic_load_explicit(&c->wr.bytes, memory_order_relaxed) : 0;
  return c ? 0 : SL_EINVAL;
}
