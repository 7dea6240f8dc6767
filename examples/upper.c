/* SPDX-License-Identifier: MIT */
/*
 * upper — stdin -> upper-case -> stdout, on three threads.
 *
 * The Node.js classic
 *
 *     process.stdin.pipe(upper).pipe(process.stdout);
 *
 * as a sluice pipeline. Each stage runs on its own thread and the stages
 * are joined by bounded rings, so a slow stdout pauses the upper-case
 * stage, which in turn pauses the reader: memory stays bounded by the high
 * mark whatever the size of the input.
 *
 *   stdin   a source (Node's Readable): read(2) into a pooled buffer, push
 *   upper   a transform: upper-case the chunk in place and push it on
 *   stdout  a sink (Node's Writable): write(2) every byte of every chunk
 *
 * Usage: upper [-s] [-H BYTES] [-b BYTES] < in > out
 *   -s        print the stage and ring counters to stderr at the end
 *   -H BYTES  high mark of each ring (default 256 KiB)
 *   -b BYTES  size of a buffer (default 64 KiB)
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getopt, read, write */
#endif

#include <sluice.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- source: Node's _read + push ------------------------------------- */

struct fd_ctx {
  int fd;
};

/* Called again and again until it returns SL_EOF or an error. One read(2),
 * one push: sl_stage_push waits while the output ring is full, and that
 * wait is the backpressure. */
static int source_read(sl_stage *stage, void *ctx) {
  struct fd_ctx *c = ctx;
  sl_buf *b;
  ssize_t n;
  int rc = sl_stage_buf(stage, 0, &b); /* 0: one full pooled buffer */
  if (rc != 0)
    return rc;
  do
    n = read(c->fd, sl_buf_data(b), sl_buf_cap(b));
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    int e = errno;
    sl_buf_unref(b); /* still ours: nothing was pushed */
    if (n == 0)
      return SL_EOF; /* end(): the framework closes the output ring */
    /* The message keeps the precise reason; the code is SL_E* (SL_EIO for
     * an errno sluice has no name for). */
    sl_stage_set_error(stage, "read: %s", strerror(e));
    return sl_err_from_errno(e);
  }
  if ((rc = sl_buf_set_len(b, (size_t)n)) != 0) {
    sl_buf_unref(b);
    return rc;
  }
  return sl_stage_push(stage, b); /* the ring owns b now, whatever rc */
}

/* ---- transform: Node's Transform._transform --------------------------- */

/* ASCII, as `LC_ALL=C tr a-z A-Z`: without a branch, c - 'a' wraps below
 * 'a', so one unsigned compare tells a lower-case letter, and clearing
 * bit 5 (0x20) upper-cases it. */
static unsigned char upcase1(unsigned char c) {
  return (unsigned char)(c - (((unsigned char)(c - 'a') < 26) << 5));
}

/* Blocks of 64 bytes: a loop whose count the compiler knows, which it
 * turns into vector instructions at -O2 (16 or 32 bytes at a time); a
 * branch per byte would cost several times tr's CPU and make this
 * stage, not the I/O, the pipeline's bottleneck. */
static void upcase(unsigned char *p, size_t n) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (size_t j = 0; j < 64; j++)
      p[i + j] = upcase1(p[i + j]);
  for (; i < n; i++)
    p[i] = upcase1(p[i]);
}

/* We own in. When ours is its only reference nobody else can see it, so we
 * change it in place and pass the very same buffer on: no byte is copied.
 * A shared buffer (a tee upstream) is read-only: copy, then change. */
static int upper_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  sl_buf *out = NULL;
  int rc;
  (void)ctx;
  if (sl_buf_refcount(in) == 1) {
    upcase(sl_buf_data(in), sl_buf_len(in));
    return sl_stage_push(stage, in);
  }
  rc = sl_stage_buf(stage, sl_buf_len(in), &out);
  if (rc == 0) {
    memcpy(sl_buf_data(out), sl_buf_data(in), sl_buf_len(in));
    rc = sl_buf_set_len(out, sl_buf_len(in));
  }
  sl_buf_unref(in);
  if (rc != 0) {
    sl_buf_unref(out);
    return rc;
  }
  upcase(sl_buf_data(out), sl_buf_len(out));
  return sl_stage_push(stage, out);
}

/* ---- sink: Node's Writable._write -------------------------------------- */

/* write(2) may take fewer bytes than asked (a pipe, a signal): loop until
 * the whole chunk is out. With SIGPIPE ignored a closed reader is EPIPE. */
static int sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  struct fd_ctx *c = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t left = sl_buf_len(in);
  int rc = 0;
  while (left > 0) {
    ssize_t n = write(c->fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      sl_stage_set_error(stage, "write: %s", strerror(e));
      rc = sl_err_from_errno(e);
      break;
    }
    p += n;
    left -= (size_t)n;
  }
  sl_buf_unref(in); /* the op owns in on every path */
  return rc;
}

/* ---- main: build, start, wait, report ---------------------------------- */

/* A positive decimal size in bytes; 0 when malformed. */
static size_t parse_size(const char *s) {
  char *end;
  unsigned long long v;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || *s == '-' || v > SIZE_MAX)
    return 0;
  return (size_t)v;
}

int main(int argc, char **argv) {
  sl_pipeline_opts opts = {0}; /* zeros pick the defaults */
  struct fd_ctx in = {STDIN_FILENO}, out = {STDOUT_FILENO};
  static const sl_stage_ops src_ops = {.read = source_read};
  static const sl_stage_ops up_ops = {.transform = upper_transform};
  static const sl_stage_ops sink_ops = {.write = sink_write};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *up = NULL, *sink = NULL;
  int stats = 0, bad = 0, opt, rc;

  while ((opt = getopt(argc, argv, "sH:b:")) != -1) {
    if (opt == 's')
      stats = 1;
    else if (opt == 'H')
      bad |= (opts.hwm = parse_size(optarg)) == 0;
    else if (opt == 'b')
      bad |= (opts.buf_size = parse_size(optarg)) == 0;
    else
      bad = 1;
  }
  if (bad || optind != argc) {
    fprintf(stderr, "usage: upper [-s] [-H BYTES] [-b BYTES] < in > out\n");
    return 2;
  }

  /* The library never touches signals. Ignore SIGPIPE so that a reader
   * going away is an EPIPE error from write(2), not a dead process. */
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    perror("upper: signal");
    return 1;
  }

  if ((rc = sl_pipeline_new(&p, &opts)) != 0 ||
      (rc = sl_stage_new(&src, "stdin", &src_ops, &in)) != 0 ||
      (rc = sl_stage_new(&up, "upper", &up_ops, NULL)) != 0 ||
      (rc = sl_stage_new(&sink, "stdout", &sink_ops, &out)) != 0 ||
      (rc = sl_pipeline_chain(p, src, up, sink, NULL)) != 0) {
    /* Until chain succeeds the stages are ours to free. */
    sl_stage_free(src);
    sl_stage_free(up);
    sl_stage_free(sink);
    sl_pipeline_free(p);
    fprintf(stderr, "upper: %s\n", sl_strerror(rc));
    return 1;
  }

  /* pipe(): start every thread, then wait for the end or the first error.
   * Any stage failing aborts every ring, so all threads wind down. */
  rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (stats && sl_pipeline_stats_print(p, stderr) != 0)
    fprintf(stderr, "upper: cannot print the statistics\n");
  if (rc != 0) {
    const char *msg = sl_pipeline_error(p);
    fprintf(stderr, "upper: %s\n", msg ? msg : sl_strerror(rc));
  }
  sl_pipeline_free(p); /* the pipeline owns and frees the stages */
  return rc == 0 ? 0 : 1;
}
