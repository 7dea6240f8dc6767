/* SPDX-License-Identifier: MIT */
/*
 * passthrough — bytes from a file through N threads and out, untouched.
 *
 * The pipeline under test, one thread per stage:
 *
 *   source     read(2) into pooled buffers of the pipeline's buffer size,
 *              each filled before it is pushed
 *   identityN  N transforms (default 3), each pushing the chunk it got on:
 *              zero copy, only pointers move from ring to ring
 *   sink       write(2) every byte of every chunk to OUTPUT
 *
 * Its peer in bench/run.sh is `cat INPUT | cat | cat | cat > OUTPUT`: the
 * same number of hops, done with processes and pipes, where every hop
 * copies every byte twice. Memory is bounded by the marks, not the input,
 * so the peak resident size must not grow with the input's size.
 *
 * Usage: passthrough [-s] [-t N] [-b BYTES] [-H BYTES] INPUT OUTPUT
 *   -t N      identity transforms between source and sink (default 3)
 *   -b BYTES  size of a pooled buffer (default: the pipeline's, 64 KiB)
 *   -H BYTES  high mark of every ring (default: the pipeline's, 256 KiB)
 *   -s        print the stage and ring counters and the pool's peak to
 *             stderr at the end
 * INPUT and OUTPUT may be "-" for stdin and stdout; OUTPUT is created or
 * truncated. BYTES may end in k, m or g (KiB, MiB, GiB).
 *
 * At exit it prints to stderr one line:
 *   bytes=<written> wall_s=<seconds from start to end> peak_rss_kib=<KiB>
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getopt, clock_gettime */
#endif

#include <sluice.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BUF_SIZE ((size_t)64 << 10) /* the pipeline's default */
#define MAX_TRANSFORMS 64

static const char *prog = "passthrough";

/* Stages return SL_E* codes; those with an errno twin are -errno. */
static int code_from_errno(int e) {
  switch (e) {
  case EPIPE:
    return SL_EPIPE;
  case ENOSPC:
    return SL_ENOSPC;
  case EBADF:
    return SL_EBADF;
  case EACCES:
    return SL_EACCES;
  case ENOMEM:
    return SL_ENOMEM;
  default:
    return SL_EIO;
  }
}

/* ---- source -------------------------------------------------------------- */

struct src_ctx {
  int fd;
  size_t buf_size;
};

/* Fill one pooled buffer (a pipe gives at most its capacity per read, so
 * keep reading until the buffer is full or the input ends) and push it. */
static int src_read(sl_stage *stage, void *ctx) {
  struct src_ctx *c = ctx;
  sl_buf *b;
  int rc = sl_stage_buf(stage, c->buf_size, &b);
  if (rc != 0)
    return rc;
  unsigned char *data = sl_buf_data(b);
  size_t cap = sl_buf_cap(b), got = 0;
  int eof = 0;
  while (got < cap) {
    ssize_t n = read(c->fd, data + got, cap - got);
    if (n > 0) {
      got += (size_t)n;
    } else if (n == 0) {
      eof = 1;
      break;
    } else if (errno != EINTR) {
      int e = errno;
      sl_buf_unref(b);
      sl_stage_set_error(stage, "read: %s", strerror(e));
      return code_from_errno(e);
    }
  }
  if (got == 0) {
    sl_buf_unref(b);
    return SL_EOF;
  }
  if ((rc = sl_buf_set_len(b, got)) != 0) {
    sl_buf_unref(b);
    return rc;
  }
  rc = sl_stage_push(stage, b); /* takes b whatever it returns */
  if (rc != 0)
    return rc;
  return eof ? SL_EOF : 0;
}

static void src_destroy(void *ctx) {
  struct src_ctx *c = ctx;
  if (c->fd > STDERR_FILENO)
    close(c->fd);
  free(c);
}

/* ---- identity transform ---------------------------------------------- */

static int identity(sl_stage *stage, void *ctx, sl_buf *in) {
  (void)ctx;
  return sl_stage_push(stage, in); /* the same buffer, on */
}

/* ---- sink ---------------------------------------------------------------- */

struct sink_ctx {
  int fd;
  uint64_t bytes;
};

static int sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  struct sink_ctx *c = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t left = sl_buf_len(in);
  while (left) {
    ssize_t n = write(c->fd, p, left);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      sl_buf_unref(in);
      sl_stage_set_error(stage, "write: %s", strerror(e));
      return code_from_errno(e);
    }
    p += n;
    left -= (size_t)n;
    c->bytes += (uint64_t)n;
  }
  sl_buf_unref(in);
  return 0;
}

static void sink_destroy(void *ctx) {
  struct sink_ctx *c = ctx;
  if (c->fd > STDERR_FILENO)
    close(c->fd);
  free(c);
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr,
          "usage: %s [-s] [-t N] [-b BYTES] [-H BYTES] INPUT OUTPUT\n"
          "  -t N      identity transforms (default 3)\n"
          "  -b BYTES  buffer size (default 64k)\n"
          "  -H BYTES  high mark of each ring (default 256k)\n"
          "  -s        print stage and ring counters to stderr\n",
          prog);
  exit(2);
}

static size_t parse_size(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  unsigned shift = 0;
  if (*end == 'k' || *end == 'K')
    shift = 10;
  else if (*end == 'm' || *end == 'M')
    shift = 20;
  else if (*end == 'g' || *end == 'G')
    shift = 30;
  if (shift)
    end++;
  if (errno || end == s || *end || s[0] == '-' || v == 0 ||
      v > (SIZE_MAX >> shift)) {
    fprintf(stderr, "%s: bad %s: %s\n", prog, what, s);
    exit(2);
  }
  return (size_t)(v << shift);
}

static void fail(sl_pipeline *p, const char *what, int rc) {
  const char *msg = p ? sl_pipeline_error(p) : NULL;
  if (msg)
    fprintf(stderr, "%s: %s\n", prog, msg);
  else
    fprintf(stderr, "%s: %s: %s\n", prog, what, sl_strerror(rc));
  sl_pipeline_free(p);
  exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  size_t ntrans = 3, buf_size = 0, hwm = 0;
  int stats = 0, opt;
  while ((opt = getopt(argc, argv, "st:b:H:h")) != -1) {
    switch (opt) {
    case 's':
      stats = 1;
      break;
    case 't': {
      char *end;
      errno = 0;
      unsigned long v = strtoul(optarg, &end, 10);
      if (errno || end == optarg || *end || optarg[0] == '-' ||
          v > MAX_TRANSFORMS) {
        fprintf(stderr, "%s: -t takes 0 to %d\n", prog, MAX_TRANSFORMS);
        return 2;
      }
      ntrans = (size_t)v;
      break;
    }
    case 'b':
      buf_size = parse_size(optarg, "-b");
      break;
    case 'H':
      hwm = parse_size(optarg, "-H");
      break;
    default:
      usage();
    }
  }
  if (argc - optind != 2)
    usage();
  const char *in_path = argv[optind], *out_path = argv[optind + 1];

  /* A closed reader downstream must be an error (EPIPE), not a signal. */
  signal(SIGPIPE, SIG_IGN);

  int in_fd = strcmp(in_path, "-") ? open(in_path, O_RDONLY) : STDIN_FILENO;
  if (in_fd < 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, in_path, strerror(errno));
    return 1;
  }
  int out_fd = strcmp(out_path, "-")
                   ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0666)
                   : STDOUT_FILENO;
  if (out_fd < 0) {
    fprintf(stderr, "%s: %s: %s\n", prog, out_path, strerror(errno));
    return 1;
  }

  struct src_ctx *sc = calloc(1, sizeof *sc);
  struct sink_ctx *kc = calloc(1, sizeof *kc);
  if (!sc || !kc) {
    fprintf(stderr, "%s: out of memory\n", prog);
    return 1;
  }
  sc->fd = in_fd;
  sc->buf_size = buf_size ? buf_size : DEFAULT_BUF_SIZE;
  kc->fd = out_fd;

  sl_pipeline_opts po = {.buf_size = buf_size, .hwm = hwm};
  sl_pipeline *p = NULL;
  int rc = sl_pipeline_new(&p, &po);
  if (rc != 0)
    fail(NULL, "sl_pipeline_new", rc);

  /* stages[0] is the source, then the transforms, then the sink. */
  sl_stage *stages[MAX_TRANSFORMS + 2] = {NULL};
  size_t n = ntrans + 2;
  const sl_stage_ops src_ops = {.read = src_read, .destroy = src_destroy};
  const sl_stage_ops id_ops = {.transform = identity};
  const sl_stage_ops sink_ops = {.write = sink_write, .destroy = sink_destroy};

  if ((rc = sl_stage_new(&stages[0], "source", &src_ops, sc)) != 0) {
    src_destroy(sc);
    sink_destroy(kc);
    fail(p, "sl_stage_new", rc);
  }
  if ((rc = sl_stage_new(&stages[n - 1], "sink", &sink_ops, kc)) != 0) {
    sink_destroy(kc);
    sl_stage_free(stages[0]);
    fail(p, "sl_stage_new", rc);
  }
  for (size_t i = 1; i <= ntrans; i++) {
    char name[32];
    snprintf(name, sizeof name, "identity%zu", i);
    if ((rc = sl_stage_new(&stages[i], name, &id_ops, NULL)) != 0) {
      for (size_t j = 0; j < n; j++)
        sl_stage_free(stages[j]);
      fail(p, "sl_stage_new", rc);
    }
  }
  if ((rc = sl_pipeline_chainv(p, stages, n)) != 0) {
    for (size_t j = 0; j < n; j++)
      sl_stage_free(stages[j]);
    fail(p, "sl_pipeline_chainv", rc);
  }

  double t0 = now_s();
  if ((rc = sl_pipeline_start(p)) != 0) {
    sl_pipeline_wait(p);
    fail(p, "sl_pipeline_start", rc);
  }
  rc = sl_pipeline_wait(p);
  double wall = now_s() - t0;
  if (rc != 0)
    fail(p, "sl_pipeline_wait", rc);

  if (stats) {
    sl_pool_stats ps;
    if ((rc = sl_pipeline_stats_print(p, stderr)) != 0)
      fail(p, "sl_pipeline_stats_print", rc);
    if ((rc = sl_pool_stats_get(sl_pipeline_pool(p), &ps)) != 0)
      fail(p, "sl_pool_stats_get", rc);
    fprintf(stderr,
            "\npool: %zu-byte buffers, peak %zu outstanding (%zu KiB), "
            "%llu allocated, %llu reused\n",
            ps.buf_size, ps.peak_outstanding, ps.peak_bytes >> 10,
            (unsigned long long)ps.allocations, (unsigned long long)ps.reuses);
  }
  uint64_t bytes = kc->bytes; /* kc lives until sl_pipeline_free */
  sl_pipeline_free(p);

  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) {
    fprintf(stderr, "%s: getrusage: %s\n", prog, strerror(errno));
    return 1;
  }
  fprintf(stderr, "bytes=%llu wall_s=%.3f peak_rss_kib=%ld\n",
          (unsigned long long)bytes, wall, ru.ru_maxrss);
  return 0;
}
