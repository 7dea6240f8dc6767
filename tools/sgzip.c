/* SPDX-License-Identifier: MIT */
/*
 * sgzip — a parallel gzip on sluice pipelines.
 *
 * Each file is one pipeline, each stage on its own thread (and the
 * compressor's workers on theirs):
 *
 *   compress     read -> pgzip (N workers) -> write (atomic file sink)
 *   decompress   read -> gunzip -> gunzip-check (CRC-32) -> write
 *                (gunzip inflates members that carry their length, BGZF's
 *                and the block format's, on N workers)
 *   to stdout    read -> gate -> gunzip -> gunzip-check -> write
 *   test (-t)    read -> gunzip -> gunzip-check -> a sink that discards
 *
 * with standard input and output in place of the files where asked (the
 * gate: every decoded byte is out before an error at the end of the input
 * can abort the rings; see "decompressing to standard output"). The
 * output is gzip's: one standard member, the name and modification time
 * of a named input in its header (unless -n), the input's owner, mode and
 * times on the output file, set through its descriptor before it has a
 * name, and the input removed (unless -k) only once the output is
 * complete, synced and in place, and only when every byte of the input
 * is in it: not when the input changed while it was read (its size and
 * time, through the open descriptor after the last read), not when bytes
 * after the gzip data were ignored. The file sink writes an unnamed file
 * beside the target and names it only when the whole stream made it, so a
 * failure, a full disk, a Ctrl-C or a SIGKILL leaves the target as it was
 * and the input untouched. -l needs no pipeline: it reads the first header
 * and the last trailer, as gzip -l does (a stream: all of it).
 *
 * Threads. The main thread parses options, walks the named files and
 * builds, starts and waits for one pipeline at a time. A signal thread
 * waits in sigwait() for SIGINT, SIGTERM and SIGHUP, which every other
 * thread blocks: while a pipeline exists it cancels it (the sink then
 * removes its temporary) and the main thread dies by the same signal once
 * the pipeline is freed; while none exists nothing needs cleaning up and
 * it dies at once. Dying by the signal (default action, raised again) is
 * what lets a shell loop over files stop. SIGPIPE is left to its default:
 * the stage writing standard output blocks it and sees EPIPE, and the
 * main thread raises it once the pipeline is freed, so that a closed pipe
 * ends sgzip quietly, as it ends gzip. The progress bar (-v on a terminal) is
 * drawn by the source's progress callback on the source's thread, with one
 * write(2) per redraw and at most ten a second; the main thread clears it after
 * the pipeline has been waited for, so the two never write at once.
 *
 * Exit status, as gzip's: 0 when all went well, 1 when an error occurred,
 * 2 when there was only a warning (a file skipped or kept).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long, O_NOFOLLOW, futimens */
#endif

#include <sluice.h>
#include <sluice/fd.h>
#include <sluice/map.h>
#include <sluice/pgzip.h>
#include <sluice/stages.h>
#include <sluice/zlib.h>

#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "sgzip"

#if defined(__GNUC__) || defined(__clang__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* The default number of compression threads is the number of online
 * processors, but no more than this: beyond it the writer and the memory
 * of 2N+2 blocks in flight cost more than the workers bring. */
#define THREADS_DEFAULT_MAX 64u

/* The largest -b, in KiB. */
#define BLOCK_KIB_MAX ((unsigned long)(SL_PGZIP_BLOCK_MAX >> 10))

/* The most bytes read to find the end of a gzip header (-l, -N). */
#define HEADER_READ_MAX ((size_t)4 << 20)

/* ---- options and exit status -------------------------------------------- */

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_WARNING = 2 };

static struct {
  int level;          /* 1..9 */
  unsigned workers;   /* -p */
  size_t block;       /* -b, in bytes */
  int to_stdout;      /* -c */
  int decompress;     /* -d */
  int keep;           /* -k */
  int force;          /* -f */
  int test;           /* -t */
  int list;           /* -l */
  int name;           /* -1 default, 0 -n, 1 -N */
  int quiet;          /* -q */
  int verbose;        /* -v, counted */
  int recursive;      /* -r */
  int stats;          /* --stats */
  const char *trace;  /* --trace FILE */
  const char *suffix; /* -S */
  int engine;         /* --engine: an SL_ZLIB_ENGINE_* */
  int format;         /* --format: an SL_PGZIP_FORMAT_* */
} opt = {.level = 6, .name = -1, .suffix = ".gz"};

static int exit_code = EXIT_OK;
static int stderr_tty; /* progress bars only on a terminal */

static void vmsg(const char *fmt, va_list ap) {
  fflush(stdout);
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

/* An error: printed always; the exit status becomes 1. */
static void errorf(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void errorf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmsg(fmt, ap);
  va_end(ap);
  exit_code = EXIT_ERROR;
}

/* A warning: printed unless -q; the exit status becomes 2 unless an error
 * already made it 1. */
static void warnf(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void warnf(const char *fmt, ...) {
  va_list ap;
  if (!opt.quiet) {
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
  }
  if (exit_code == EXIT_OK)
    exit_code = EXIT_WARNING;
}

/* A bad command line: the message, a hint, status 1 (as gzip). */
static void usage_error(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vmsg(fmt, ap);
  va_end(ap);
  fprintf(stderr, "Try '%s --help' for more information.\n", PROG);
  exit(EXIT_ERROR);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fprintf(stderr, "%s: out of memory\n", PROG);
    exit(EXIT_ERROR);
  }
  return p;
}

static char *concat(const char *a, size_t alen, const char *b, const char *c) {
  size_t blen = strlen(b), clen = strlen(c);
  char *s = xmalloc(alen + blen + clen + 1);
  memcpy(s, a, alen);
  memcpy(s + alen, b, blen);
  memcpy(s + alen + blen, c, clen + 1);
  return s;
}

static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/* ---- signals ------------------------------------------------------------ */

/* The pipeline the signal thread cancels, and whether the main thread
 * holds anything that must be cleaned up (a pipeline, whose file sink
 * owns a temporary). Both under sig_lock. */
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_pipeline *sig_pipeline;
static int sig_busy;
static int sig_caught;

/* SIGPIPE was not ignored when we started: a closed standard output then
 * ends sgzip by SIGPIPE, quietly, as it ends gzip and pigz. */
static int sigpipe_kills;

/* Die by sig with its default action, so that whoever waits for us (a
 * shell running a loop) sees the signal and not an exit status. Nothing
 * half-made may exist any more. */
static void die_by(int sig) {
  struct sigaction sa;
  sigset_t set;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, NULL);
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
  _exit(128 + sig); /* not reached */
}

static void *signal_thread(void *arg) {
  const sigset_t *set = arg;
  int sig;
  for (;;) {
    if (sigwait(set, &sig) != 0)
      continue;
    pthread_mutex_lock(&sig_lock);
    sig_caught = sig;
    if (sig_pipeline != NULL)
      sl_pipeline_cancel(sig_pipeline); /* the sink removes its temporary */
    else if (!sig_busy)
      die_by(sig); /* nothing half-made to remove */
    pthread_mutex_unlock(&sig_lock);
  }
  return NULL;
}

/* Block the signals in this thread (and so in every thread started from
 * it, the stage threads included) and wait for them in a thread of their
 * own. */
static void signals_init(void) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  static sigset_t set;
  pthread_t t;
  struct sigaction sa;

  /* A closed standard output: the stage that writes it sees EPIPE (stage
   * threads block every signal) and we die by SIGPIPE once the pipeline
   * is freed; the main thread's own writes (-l) die of it at once. Where
   * SIGPIPE was ignored by whoever started us, it is an error reported
   * instead. */
  memset(&sa, 0, sizeof sa);
  sigpipe_kills =
      sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN;

  /* A signal the process was started with ignored stays ignored, as in
   * gzip: nohup's SIGHUP, a background job's SIGINT. */
  sigemptyset(&set);
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
    struct sigaction old;
    if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
      sigaddset(&set, sigs[i]);
  }
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (pthread_create(&t, NULL, signal_thread, &set) != 0) {
    fprintf(stderr, "%s: cannot create a thread\n", PROG);
    exit(EXIT_ERROR);
  }
  pthread_detach(t);
}

/* The main thread is about to make something that needs cleaning up, or
 * has cleaned it. Returns nonzero when a signal came, so stop. */
static int busy_begin(void) {
  pthread_mutex_lock(&sig_lock);
  sig_busy = 1;
  int caught = sig_caught;
  pthread_mutex_unlock(&sig_lock);
  return caught;
}

static void busy_set_pipeline(sl_pipeline *p) {
  pthread_mutex_lock(&sig_lock);
  sig_pipeline = p;
  if (p != NULL && sig_caught)
    sl_pipeline_cancel(p); /* starts cancelled, or winds down */
  pthread_mutex_unlock(&sig_lock);
}

static int signal_caught(void) {
  pthread_mutex_lock(&sig_lock);
  int caught = sig_caught;
  pthread_mutex_unlock(&sig_lock);
  return caught;
}

/* Done with what needed cleaning up: exit now if a signal came. */
static void busy_end(void) {
  pthread_mutex_lock(&sig_lock);
  sig_busy = 0;
  int caught = sig_caught;
  pthread_mutex_unlock(&sig_lock);
  if (caught) {
    fflush(stdout);
    die_by(caught);
  }
}

/* ---- the progress bar --------------------------------------------------- */

/* The most characters of a file's name on the bar. */
#define BAR_LABEL_MAX 40

struct bar {
  int on;            /* draw at all: -v and stderr is a terminal */
  const char *label; /* the file's name, its end when it is long */
  double start;      /* seconds, monotonic */
  double last;       /* when last drawn; 0: never */
  size_t drawn;      /* characters on the line now */
  int cols;          /* the terminal's width */
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int term_cols(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
    return ws.ws_col;
  return 80;
}

static void write_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    s += w;
    n -= (size_t)w;
  }
}

static void fmt_eta(char *buf, size_t n, double secs) {
  unsigned long s = secs > 359999.0 ? 359999ul : (unsigned long)(secs + 0.5);
  if (s >= 3600)
    snprintf(buf, n, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf(buf, n, "%lu:%02lu", s / 60, s % 60);
}

/* The part of name the bar shows: all of it, or "..." and its end, which
 * is what tells files apart (dir/a/data.1.gz from dir/a/data.2.gz), cut
 * so that it starts on a whole UTF-8 character. */
static const char *bar_label(const char *name, int *dots) {
  size_t n = strlen(name);
  *dots = 0;
  if (n <= BAR_LABEL_MAX)
    return name;
  const char *p = name + n - (BAR_LABEL_MAX - 3);
  while (((unsigned char)*p & 0xc0) == 0x80)
    p++;
  *dots = 1;
  return p;
}

/* On the source's thread, after every chunk read: redraw at most ten
 * times a second, starting a quarter second in (a small file shows no
 * bar), with one write(2) so that nothing else interleaves. */
static void bar_progress(sl_stage *stage, uint64_t bytes, uint64_t total,
                         void *arg) {
  struct bar *b = arg;
  char line[512], eta[32], meter[24];
  double t = now(), secs = t - b->start;
  int n, dots;
  const char *label = bar_label(b->label, &dots);
  (void)stage;

  if (secs < 0.25 || t - b->last < 0.1)
    return;
  b->last = t;
  double rate = (double)bytes / secs; /* bytes per second */
  if (total != SL_FD_SIZE_UNKNOWN && total > 0 && bytes <= total) {
    double frac = (double)bytes / (double)total;
    size_t fill = (size_t)(frac * 20.0);
    memset(meter, '#', fill);
    memset(meter + fill, '.', 20 - fill);
    meter[20] = '\0';
    if (rate > 0)
      fmt_eta(eta, sizeof eta, (double)(total - bytes) / rate);
    else
      snprintf(eta, sizeof eta, "--:--");
    n = snprintf(line, sizeof line, "\r%s: %s%s %3d%% [%s] %8.1f MB/s ETA %s",
                 PROG, dots ? "..." : "", label, (int)(frac * 100.0), meter,
                 rate / 1e6, eta);
  } else {
    n = snprintf(line, sizeof line, "\r%s: %s%s %10.1f MB %8.1f MB/s", PROG,
                 dots ? "..." : "", label, (double)bytes / 1e6, rate / 1e6);
  }
  if (n < 0)
    return;
  size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
  if (len > (size_t)b->cols) /* the \r is not a column */
    len = (size_t)b->cols;
  size_t shown = len - 1;
  while (len < sizeof line - 1 && len - 1 < b->drawn) /* blank the rest */
    line[len++] = ' ';
  b->drawn = shown;
  write_all(STDERR_FILENO, line, len);
}

/* On the main thread, once the pipeline has ended. */
static void bar_clear(struct bar *b) {
  char line[512];
  if (b->drawn == 0)
    return;
  size_t n = b->drawn < sizeof line - 2 ? b->drawn : sizeof line - 2;
  line[0] = '\r';
  memset(line + 1, ' ', n);
  line[n + 1] = '\r';
  write_all(STDERR_FILENO, line, n + 2);
  b->drawn = 0;
}

/* ---- reading a gzip header ourselves (-l, -N) --------------------------- */

struct gz_info {
  size_t hdr_len; /* bytes of the first member's header */
  uint32_t mtime;
  char *name; /* the stored name (malloc'd), or NULL */
};

/* Parse the header at b[0..n) with the library's gzip header reader
 * (sl_gzip_header_parse, which also checks a header CRC16). Returns 1 when
 * it is complete, 0 when more bytes are needed, -1 when it is not a gzip
 * header. */
static int gz_parse(const unsigned char *b, size_t n, struct gz_info *g) {
  sl_gzip_header h;
  size_t len = 0;
  int rc = sl_gzip_header_parse(b, n, &h, &len);

  if (rc == SL_AGAIN)
    return 0;
  if (rc != 0)
    return -1;
  g->hdr_len = len;
  g->mtime = h.mtime;
  g->name = NULL;
  if (h.name != NULL) {
    g->name = strdup(h.name);
    if (g->name == NULL) {
      fprintf(stderr, "%s: out of memory\n", PROG);
      exit(EXIT_ERROR);
    }
  }
  return 1;
}

/* Read the header of the gzip file open at fd (positioned reads from
 * offset 0: the descriptor's offset does not move). Returns 1, 0 when the
 * file ends inside the header, -1 when it is not gzip, -2 on a read error
 * (errno set). */
static int gz_read_header(int fd, struct gz_info *g) {
  size_t cap = 65536, len = 0;
  unsigned char *buf = xmalloc(cap);
  int r = 0;
  for (;;) {
    ssize_t n = pread(fd, buf + len, cap - len, (off_t)len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      r = -2;
      break;
    }
    len += (size_t)n;
    r = gz_parse(buf, len, g);
    if (r != 0 || n == 0)
      break;
    if (len == cap) {
      if (cap >= HEADER_READ_MAX) {
        r = -1;
        break;
      }
      unsigned char *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        r = -2;
        errno = ENOMEM;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  free(buf);
  return r;
}

/* ---- names -------------------------------------------------------------- */

/* The suffixes gzip knows, after the one -S gives; a compressed name with
 * one of these is decompressed to the name without it (the last two to
 * ".tar"), and is not compressed again. */
static const char *const known_suffixes[] = {".gz", "-gz",  ".z",  "-z",
                                             "_z",  ".tgz", ".taz"};

/* The length of the suffix of name that marks it as compressed (0: none);
 * *repl gets what replaces it when decompressing. */
static size_t compressed_suffix(const char *name, const char **repl) {
  size_t n = strlen(name);
  size_t sl = strlen(opt.suffix);
  const char *base = base_name(name);
  size_t bn = strlen(base);
  *repl = "";
  if (sl < bn && strcmp(name + n - sl, opt.suffix) == 0)
    return sl;
  for (size_t i = 0; i < sizeof known_suffixes / sizeof *known_suffixes; i++) {
    const char *s = known_suffixes[i];
    size_t l = strlen(s);
    if (l < bn && strcmp(name + n - l, s) == 0) {
      if (strcmp(s, ".tgz") == 0 || strcmp(s, ".taz") == 0)
        *repl = ".tar";
      return l;
    }
  }
  return 0;
}

/* The name of the stored name's file in dir(path), or NULL when the
 * stored name is unusable (empty, ".", ".."). */
static char *restored_name(const char *path, const char *stored) {
  const char *b = base_name(stored);
  if (*b == '\0' || strcmp(b, ".") == 0 || strcmp(b, "..") == 0)
    return NULL;
  return concat(path, (size_t)(base_name(path) - path), b, "");
}

/* ---- one pipeline ------------------------------------------------------- */

/* What the output file gets from the input, set through its descriptor
 * by the file sink's commit hook (on the sink's thread, before the file
 * has its name); the errno of each failure, reported afterwards. */
struct meta {
  const struct stat *st;   /* the input's; NULL: nothing to copy */
  uint32_t mtime_override; /* -N: the header's time instead */
  int owner_err, mode_err, times_err;
};

struct job {
  const char *label;            /* the input's name in messages */
  int in_fd;                    /* the input; the caller closes it */
  const char *out;              /* the output file; NULL: standard output */
  unsigned out_flags;           /* SL_FILE_OVERWRITE */
  const sl_gzip_header *header; /* compress: the header to write */
  struct meta meta;             /* the output file's owner, mode, times */
  /* results */
  uint64_t in_bytes, out_bytes;
  size_t hdr_len;     /* decompress: the first header's length, for -v */
  int trailing;       /* decompress: bytes after the last member: 1 zeros, */
  uint64_t trail_off; /* 2 garbage (at trail_off), 0 none */
  char *stats;        /* --stats: the table, to print */
};

/* --stats: the pipeline's table, kept for the caller to print after the
 * file's own line. */
static void stats_keep(struct job *j, sl_pipeline *p) {
  size_t n = 0;
  FILE *f = open_memstream(&j->stats, &n);
  if (f == NULL)
    return;
  fprintf(f, "%s: %s: pipeline statistics\n", PROG, j->label);
  sl_pipeline_stats_print(p, f);
  if (fclose(f) != 0) {
    free(j->stats);
    j->stats = NULL;
  }
}

static void stats_print(struct job *j) {
  if (j->stats != NULL) {
    fflush(stdout);
    fputs(j->stats, stderr);
    free(j->stats);
    j->stats = NULL;
  }
}

static int count_cb(const void *data, size_t len, void *arg) {
  (void)data;
  *(uint64_t *)arg += len;
  return 0;
}

/* The system's message for a code that stands for an errno value (the
 * library's codes for those are the negated errno, all above -4000), as
 * gzip words it; the library's own otherwise. */
static const char *errno_message(int code) {
  return code < 0 && code > -4000 ? strerror(-code) : sl_strerror(code);
}

/* Strip a "<stage>: " prefix when a stage of ours wrote the message: the
 * line then reads "sgzip: FILE: what went wrong". */
static const char *plain_error(sl_pipeline *p, int rc) {
  const char *msg = sl_pipeline_error(p);
  if (msg == NULL)
    return sl_strerror(rc);
  for (size_t i = 0; i < sl_pipeline_stage_count(p); i++) {
    const char *name = sl_stage_name(sl_pipeline_stage(p, i));
    size_t n = strlen(name);
    if (strncmp(msg, name, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
      return msg + n + 2;
  }
  return msg;
}

/* ---- decompressing to standard output: every byte before an error ---- */

/* A stage's failure aborts every ring of the pipeline, and with them the
 * decoded bytes still on their way to the output. On standard output,
 * where gzip writes every byte it could decode before it reports the
 * error, two stages of ours prevent that loss at the end of the input
 * (a truncated stream, a sync flush and no last block: the errors the
 * decoder finds only there):
 *
 *   read -> gate -> gunzip -> gunzip-check -> out (standard output)
 *
 * The gate passes the input on; at its end it pushes a flush marker
 * after it, which the decoder answers by pushing all it decoded, and
 * waits until "out" has written everything before the marker and says
 * so through a pipe. Only then does the gate end, and with it the
 * decoder's input: whatever the decoder then finds wrong, there is
 * nothing left to lose. A wait that the pipeline's cancel ends. */
struct outgate {
  int pipe[2];    /* out writes a byte here when the marker reached it */
  uint64_t bytes; /* written to standard output, by out's thread */
};

static int wait_readable(sl_stage *st, int fd, short events) {
  int cfd = sl_stage_cancel_fd(st);
  if (cfd < 0)
    return cfd;
  for (;;) {
    struct pollfd pfd[2] = {{.fd = fd, .events = events},
                            {.fd = cfd, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return sl_err_from_errno(errno);
    }
    if (pfd[1].revents)
      return SL_ECANCELED;
    if (pfd[0].revents)
      return 0;
  }
}

static int gate_transform(sl_stage *st, void *ctx, sl_buf *in) {
  (void)ctx;
  return sl_stage_push(st, in);
}

static int gate_flush(sl_stage *st, void *ctx) {
  struct outgate *g = ctx;
  char c;
  int rc = sl_stage_push_flush(st);
  if (rc == 0)
    rc = wait_readable(st, g->pipe[0], POLLIN);
  if (rc == 0 && read(g->pipe[0], &c, 1) != 1)
    rc = SL_EIO;
  return rc;
}

static int out_write(sl_stage *st, void *ctx, sl_buf *in) {
  struct outgate *g = ctx;
  const unsigned char *p = sl_buf_data(in);
  size_t left = sl_buf_len(in);
  int rc = 0;

  while (left > 0) {
    ssize_t n = write(STDOUT_FILENO, p, left);
    if (n > 0) {
      p += n;
      left -= (size_t)n;
      g->bytes += (uint64_t)n;
      continue;
    }
    int e = n == 0 ? EIO : errno;
    if (e == EINTR)
      continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      if ((rc = wait_readable(st, STDOUT_FILENO, POLLOUT)) != 0)
        break;
      continue;
    }
    /* EPIPE: the SIGPIPE it raised is pending on this thread, which
     * blocks it, and goes with the thread. */
    sl_stage_set_error(st, "write fd %d: %s", STDOUT_FILENO, strerror(e));
    rc = sl_err_from_errno(e);
    break;
  }
  sl_buf_unref(in);
  return rc;
}

/* The gate's marker: everything before it is written. */
static int out_sync(sl_stage *st, void *ctx) {
  struct outgate *g = ctx;
  char c = 1;
  (void)st;
  return write(g->pipe[1], &c, 1) == 1 ? 0 : sl_err_from_errno(errno);
}

/* The file sink's commit hook: owner, mode and times through the
 * descriptor. The owner first: fchown may clear the set-id bits that
 * fchmod sets. A user who may not give the file away keeps it, as gzip
 * does. Failures are warnings, printed by the main thread. */
static int meta_apply(sl_stage *stage, int fd, void *arg) {
  struct meta *m = arg;
  const struct stat *st = m->st;
  struct timespec ts[2] = {st->st_atim, st->st_mtim};
  (void)stage;

  if (m->mtime_override != 0) {
    ts[1].tv_sec = (time_t)m->mtime_override;
    ts[1].tv_nsec = 0;
  }
  if (fchown(fd, st->st_uid, st->st_gid) != 0 && errno != EPERM)
    m->owner_err = errno;
  if (fchmod(fd, st->st_mode & 07777) != 0)
    m->mode_err = errno;
  if (futimens(fd, ts) != 0)
    m->times_err = errno;
  return 0;
}

static void meta_report(const char *out, const struct meta *m) {
  if (m->owner_err)
    warnf("%s: cannot keep the owner: %s", out, strerror(m->owner_err));
  if (m->mode_err)
    warnf("%s: cannot keep the mode: %s", out, strerror(m->mode_err));
  if (m->times_err)
    warnf("%s: cannot keep the times: %s", out, strerror(m->times_err));
}

/* The first stage of sl_pgunzip_chain's pair, by the name we gave it. */
static sl_stage *find_stage(sl_pipeline *p, const char *name) {
  for (size_t i = 0; i < sl_pipeline_stage_count(p); i++) {
    sl_stage *s = sl_pipeline_stage(p, i);
    if (strcmp(sl_stage_name(s), name) == 0)
      return s;
  }
  return NULL;
}

/* Run one file (or standard input) through its pipeline. Returns 0 when
 * the output is complete (in place, for a file), 1 after an error (the
 * message is printed), 2 when the output exists (message printed). The
 * input descriptor stays open: the caller looks at it and closes it. The
 * caller calls busy_end() once it is done with the output. */
static int run_job(struct job *j) {
  sl_pipeline_opts popts = {0};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *mid = NULL, *sink = NULL, *gate = NULL;
  FILE *trace = NULL;
  struct bar bar = {0};
  struct outgate og = {.pipe = {-1, -1}};
  uint64_t discarded = 0;
  int rc, ret = 1, chained = 0, died = 0;
  int unpack = opt.decompress || opt.test;
  int gated = unpack && !opt.test && j->out == NULL;

  /* Compressing: pooled buffers of a whole block (so that the pool
   * recycles the compressor's blocks rather than allocating each), 128 KiB
   * to 1 MiB (bigger blocks are allocated, which costs little beside
   * compressing them), and rings of two chunks: the compressor's blocks in
   * flight keep the workers busy, the rings need only keep the reader and
   * the writer going (the reader's ring is widened below). Decompressing: 32
   * KiB chunks and rings of four; larger ones bring no speed, only a bigger
   * resident size. */
  if (unpack) {
    popts.buf_size = (size_t)32 << 10;
    popts.hwm = popts.buf_size * 4;
  } else {
    /* The block the compressor will use (-b, or its format's default). */
    sl_pgzip_opts ro;
    sl_pgzip_opts_init(&ro);
    ro.level = opt.level;
    ro.block_size = opt.block;
    ro.engine = opt.engine;
    ro.format = opt.format;
    popts.buf_size = sl_pgzip_opts_resolve(&ro) == 0 ? ro.block_size
                                                     : SL_PGZIP_BLOCK_DEFAULT;
    if (popts.buf_size < ((size_t)128 << 10))
      popts.buf_size = (size_t)128 << 10;
    if (popts.buf_size > ((size_t)1 << 20))
      popts.buf_size = (size_t)1 << 20;
    popts.hwm = popts.buf_size * 2;
  }

  if (busy_begin())
    goto out;
  if ((rc = sl_pipeline_new(&p, &popts)) != 0) {
    errorf("%s: %s", j->label, sl_strerror(rc));
    goto out;
  }
  busy_set_pipeline(p);

  bar.on = opt.verbose > 0 && stderr_tty;
  bar.label = j->label;
  bar.cols = bar.on ? term_cols() - 1 : 0;

  sl_fd_opts so = {.name = "read"};
  if (bar.on) {
    so.progress = bar_progress;
    so.progress_arg = &bar;
  }
  if ((rc = sl_fd_source_new(&src, j->in_fd, &so)) != 0) {
    errorf("%s: %s", j->label, strerror(errno));
    goto out;
  }
  /* The reader runs far ahead of the compressor: with marks a block apart
   * it would be paused and woken once per block. Resuming it only once
   * the compressor has taken all but one block lets it read three at a
   * time between sleeps, for two blocks more of memory. */
  if (!unpack &&
      (rc = sl_stage_set_output(src, popts.buf_size * 4, popts.buf_size,
                                SL_RING_BYTES)) != 0) {
    errorf("%s: %s", j->label, sl_strerror(rc));
    goto out;
  }

  if (!unpack) {
    sl_pgzip_opts po;
    sl_pgzip_opts_init(&po);
    po.name = "pgzip";
    po.level = opt.level;
    po.block_size = opt.block;
    po.workers = opt.workers;
    po.header = j->header;
    po.engine = opt.engine;
    po.format = opt.format;
    if ((rc = sl_pgzip_new(&mid, &po)) != 0) {
      errorf("%s: %s", j->label, sl_strerror(rc));
      goto out;
    }
  }

  if (opt.test) {
    sl_mem_opts mo = {.name = "check"};
    rc = sl_callback_sink_new(&sink, count_cb, NULL, &discarded, &mo);
  } else if (gated) {
    static const sl_stage_ops gate_ops = {.transform = gate_transform,
                                          .flush = gate_flush};
    static const sl_stage_ops out_ops = {.write = out_write, .sync = out_sync};
    if (pipe2(og.pipe, O_CLOEXEC) != 0) {
      errorf("%s: %s", j->label, strerror(errno));
      goto out;
    }
    rc = sl_stage_new(&gate, "gate", &gate_ops, &og);
    if (rc == 0)
      rc = sl_stage_new(&sink, "write", &out_ops, &og);
  } else if (j->out == NULL) {
    sl_fd_opts wo = {.name = "write"};
    rc = sl_fd_sink_new(&sink, STDOUT_FILENO, &wo);
  } else {
    /* Owner-only until the input's mode is copied onto it. */
    sl_fd_opts wo = {.name = "write", .flags = j->out_flags, .mode = 0600};
    if (j->meta.st != NULL) {
      wo.commit = meta_apply;
      wo.commit_arg = &j->meta;
    }
    rc = sl_file_sink_new(&sink, j->out, &wo);
    if (rc == SL_EEXIST) { /* made since we looked */
      fflush(stdout);
      fprintf(stderr, "%s: %s already exists; not overwritten\n", PROG, j->out);
      if (exit_code == EXIT_OK)
        exit_code = EXIT_WARNING;
      ret = 2;
      goto out;
    }
  }
  if (rc != 0) {
    errorf("%s: %s", j->out ? j->out : "stdout",
           rc == SL_ENOMEM || rc == SL_EINVAL ? sl_strerror(rc)
                                              : strerror(errno));
    goto out;
  }

  /* Decompression: read, inflate, check the CRC-32 and write, each on a
   * thread of its own. */
  if (unpack) {
    sl_zlib_opts zo;
    sl_zlib_opts_init(&zo);
    zo.name = "gunzip";
    zo.engine = opt.engine;
    zo.ignore_trailing = 1; /* told apart below: padding, or garbage */
    if (gate != NULL) {
      rc = sl_pipeline_chain(p, src, gate, NULL);
      if (rc == 0) {
        chained = 1; /* src and gate are the pipeline's now */
        rc = sl_pgunzip_chain_workers(p, gate, sink, &zo, opt.workers);
      }
    } else {
      rc = sl_pgunzip_chain_workers(p, src, sink, &zo, opt.workers);
    }
  } else {
    rc = sl_pipeline_chain(p, src, mid, sink, NULL);
  }
  if (rc != 0) {
    errorf("%s: %s", j->label, sl_strerror(rc));
    goto out;
  }
  chained = 2; /* the pipeline owns the stages now */

  /* --trace: the timeline of this file's pipeline (with several files,
   * the last one's). The file is ours, so that a failure to write or close
   * it is reported as gzip reports one of its output's. */
  if (opt.trace != NULL) {
    if ((trace = fopen(opt.trace, "w")) == NULL) {
      errorf("%s: %s", opt.trace, strerror(errno));
      goto out;
    }
    if ((rc = sl_pipeline_trace_file(p, trace)) != 0) {
      errorf("%s: %s", opt.trace, sl_strerror(rc));
      goto out;
    }
  }

  bar.start = now();
  rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  bar_clear(&bar);
  if (rc != 0) {
    const char *msg = plain_error(p, rc);
    char fd1[32];
    snprintf(fd1, sizeof fd1, "write fd %d: ", STDOUT_FILENO);
    int closed = rc == SL_EPIPE && j->out == NULL && !opt.test &&
                 strncmp(msg, fd1, strlen(fd1)) == 0;
    if (rc == SL_ECANCELED && signal_caught())
      ; /* interrupted: the signal says it all */
    else if (closed && sigpipe_kills)
      died = SIGPIPE; /* quietly, once the pipeline is gone */
    else if (j->out == NULL && strncmp(msg, fd1, strlen(fd1)) == 0)
      errorf("stdout: %s", msg + strlen(fd1)); /* as gzip says it */
    else
      errorf("%s: %s", j->label, msg);
  } else {
    j->in_bytes = sl_fd_bytes(src);
    j->out_bytes = opt.test ? discarded : gated ? og.bytes : sl_fd_bytes(sink);
    ret = 0;
    uint64_t off;
    int garbage;
    if (unpack &&
        sl_pgunzip_trailing(find_stage(p, "gunzip"), &off, &garbage) == 1) {
      j->trailing = garbage ? 2 : 1;
      j->trail_off = off;
    }
  }
  if (opt.stats && !opt.quiet)
    stats_keep(j, p);
  if (trace != NULL) {
    /* The pipeline has flushed it; the output itself is complete. */
    int terr = sl_pipeline_trace_error(p);
    if (fclose(trace) != 0 && terr == 0)
      terr = sl_err_from_errno(errno);
    trace = NULL;
    if (terr != 0)
      errorf("%s: %s", opt.trace, errno_message(terr));
  }

out:
  if (chained < 2) {
    if (!chained) {
      sl_stage_free(src);
      sl_stage_free(gate);
    }
    sl_stage_free(mid);
    sl_stage_free(sink);
  }
  if (p != NULL) {
    busy_set_pipeline(NULL);
    sl_pipeline_free(p); /* a failed file sink removes its temporary here */
  }
  if (trace != NULL)
    fclose(trace); /* never started: left empty */
  if (og.pipe[0] >= 0) {
    close(og.pipe[0]);
    close(og.pipe[1]);
  }
  if (died)
    die_by(died);
  return ret;
}

/* gzip's ratio: the share saved, header and trailer counted as saved. */
static double ratio(uint64_t plain, uint64_t packed, uint64_t hdr) {
  if (plain == 0)
    return 0.0;
  return 100.0 * ((double)plain - ((double)packed - (double)hdr)) /
         (double)plain;
}

/* Ask whether to replace an existing output (standard input a terminal). */
static int ask_overwrite(const char *out) {
  char c = 0, first = 0;
  int got = 0;
  fflush(stdout);
  fprintf(stderr, "%s: %s already exists; do you wish to overwrite (y or n)? ",
          PROG, out);
  fflush(stderr);
  for (;;) {
    ssize_t n = read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || c == '\n')
      break;
    if (!got)
      first = c;
    got = 1;
  }
  return first == 'y' || first == 'Y';
}

/* ---- listing (-l) ------------------------------------------------------- */

static uint64_t list_total_in, list_total_out, list_last_hdr;
static unsigned list_count;

static uint32_t le32(const unsigned char *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}

static void list_one(const char *name_out, uint64_t packed,
                     const struct gz_info *g, uint32_t crc, uint64_t isize,
                     time_t fallback_time) {
  if (list_count == 0) {
    if (opt.verbose > 0)
      printf("method  crc     date  time  ");
    if (!opt.quiet)
      printf("%19s %19s  ratio uncompressed_name\n", "compressed",
             "uncompressed");
  }
  list_count++;
  if (opt.verbose > 0) {
    static const char month[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = g->mtime ? (time_t)g->mtime : fallback_time;
    struct tm tm;
    printf("defla %08lx ", (unsigned long)crc);
    if (localtime_r(&t, &tm) != NULL)
      printf("%s%3d %02d:%02d ", month[tm.tm_mon], tm.tm_mday, tm.tm_hour,
             tm.tm_min);
    else
      printf("??? ?? ??:?? ");
  }
  printf("%19llu %19llu %5.1f%% %s\n", (unsigned long long)packed,
         (unsigned long long)isize, ratio(isize, packed, g->hdr_len + 8),
         name_out);
  list_total_in += packed;
  list_total_out += isize;
  list_last_hdr = g->hdr_len + 8;
}

static void list_totals(void) {
  if (list_count < 2)
    return;
  if (opt.verbose > 0)
    printf("                            ");
  /* As gzip: the totals' ratio counts the last file's header as saved. */
  printf("%19llu %19llu %5.1f%% (totals)\n", (unsigned long long)list_total_in,
         (unsigned long long)list_total_out,
         ratio(list_total_out, list_total_in, list_last_hdr));
}

static int pread_all(int fd, unsigned char *b, size_t n, uint64_t at) {
  ssize_t r;
  do
    r = pread(fd, b, n, (off_t)at);
  while (r < 0 && errno == EINTR);
  return r == (ssize_t)n;
}

/* The block format (sgzip --format=blocks): every member gives its own
 * length at byte 16 of its header, so -l can add up every member's ISIZE
 * with two short reads per member, where gzip -l (and -l on a stream)
 * shows the last member's alone. Returns 1 with the sum in *isize when
 * the file is members of that format end to end, else 0. */
static int list_blocks(int fd, uint64_t size, uint64_t *isize) {
  unsigned char h[20];
  uint64_t at = 0, sum = 0;

  while (at < size) {
    if (size - at < 28 || !pread_all(fd, h, sizeof h, at))
      return 0;
    if (h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 || !(h[3] & 4) || h[10] < 8 ||
        memcmp(h + 12, "SL\4\0", 4) != 0)
      return 0;
    uint32_t len = le32(h + 16);
    if (len < 28 || len > size - at || !pread_all(fd, h, 4, at + len - 4))
      return 0;
    sum += le32(h);
    at += len;
  }
  *isize = sum;
  return 1;
}

static void list_file(const char *path, int fd, const struct stat *st,
                      const char *name_out) {
  struct gz_info g = {0};
  unsigned char tail[8];
  int r = gz_read_header(fd, &g);
  if (r == -2) {
    errorf("%s: %s", path, strerror(errno));
    return;
  }
  if (r != 1) {
    errorf("%s: %s", path,
           r < 0 ? "not in gzip format" : "unexpected end of file");
    return;
  }
  if ((uint64_t)st->st_size < g.hdr_len + 8) {
    free(g.name);
    errorf("%s: unexpected end of file", path);
    return;
  }
  ssize_t n;
  do
    n = pread(fd, tail, 8, st->st_size - 8);
  while (n < 0 && errno == EINTR);
  if (n != 8) {
    free(g.name);
    errorf("%s: %s", path, n < 0 ? strerror(errno) : "unexpected end of file");
    return;
  }
  uint64_t isize = le32(tail + 4);
  list_blocks(fd, (uint64_t)st->st_size, &isize);
  list_one(opt.name == 1 && g.name ? g.name : name_out, (uint64_t)st->st_size,
           &g, le32(tail), isize, st->st_mtime);
  free(g.name);
}

/* -l on a stream (standard input, a FIFO, a device): read it through,
 * keeping the header and the last eight bytes. */
static void list_stream(int fd, const char *label, const char *name_out) {
  struct gz_info g = {0};
  size_t cap = 65536, len = 0;
  unsigned char *head = xmalloc(cap), tail[8] = {0}, buf[65536];
  uint64_t total = 0;
  int parsed = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      errorf("%s: %s", label, strerror(errno));
      free(head);
      return;
    }
    if (n == 0)
      break;
    size_t un = (size_t)n;
    if (parsed == 0) {
      size_t take = un < cap - len ? un : cap - len;
      memcpy(head + len, buf, take);
      len += take;
      parsed = gz_parse(head, len, &g);
      if (parsed == 0 && len == cap) {
        if (cap >= HEADER_READ_MAX) {
          parsed = -1;
        } else {
          cap *= 2;
          unsigned char *nh = realloc(head, cap);
          if (nh == NULL) {
            free(head);
            errorf("%s: out of memory", label);
            return;
          }
          head = nh;
        }
      }
    }
    if (un >= 8) {
      memcpy(tail, buf + un - 8, 8);
    } else {
      memmove(tail, tail + un, 8 - un);
      memcpy(tail + 8 - un, buf, un);
    }
    total += un;
  }
  free(head);
  if (parsed != 1) {
    errorf("%s: %s", label,
           parsed < 0 ? "not in gzip format" : "unexpected end of file");
    return;
  }
  if (total < g.hdr_len + 8) {
    free(g.name);
    errorf("%s: unexpected end of file", label);
    return;
  }
  list_one(opt.name == 1 && g.name ? g.name : name_out, total, &g, le32(tail),
           le32(tail + 4), time(NULL));
  free(g.name);
}

/* ---- standard input ----------------------------------------------------- */

static void trailing_report(const char *label, const struct job *j);

static void do_stdin(void) {
  if (opt.decompress && !opt.force && isatty(STDIN_FILENO)) {
    errorf("compressed data not read from a terminal. Use -f to force "
           "decompression.\nFor help, type: %s -h",
           PROG);
    return;
  }
  if (!opt.decompress && !opt.force && isatty(STDOUT_FILENO)) {
    errorf("compressed data not written to a terminal. Use -f to force "
           "compression.\nFor help, type: %s -h",
           PROG);
    return;
  }
  if (opt.list) {
    list_stream(STDIN_FILENO, "stdin", "stdout");
    return;
  }

  sl_gzip_header h;
  memset(&h, 0, sizeof h);
  struct job j = {.label = "stdin", .in_fd = STDIN_FILENO, .hdr_len = 10};
  if (!opt.decompress && !opt.test && opt.name != 0) {
    /* The time of a regular file; a pipe has none, and 0 (no time) keeps
     * the output the same from one run to the next, as gzip's. */
    struct stat st;
    time_t t =
        fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) ? st.st_mtime : 0;
    h.mtime = t > 0 && (uint64_t)t <= UINT32_MAX ? (uint32_t)t : 0;
    j.header = &h;
  }
  int rc = run_job(&j);
  if (rc == 0)
    trailing_report("stdin", &j);
  if (rc == 0 && opt.verbose > 0 && !opt.quiet) {
    if (opt.test)
      fprintf(stderr, "stdin:\t OK\n");
    else if (opt.decompress)
      fprintf(stderr, "stdin:\t%5.1f%%\n",
              ratio(j.out_bytes, j.in_bytes, j.hdr_len + 8));
    else /* a header without a name */
      fprintf(stderr, "stdin:\t%5.1f%%\n",
              ratio(j.in_bytes, j.out_bytes, 10 + 8));
  }
  stats_print(&j);
  busy_end();
}

/* ---- files -------------------------------------------------------------- */

static void do_path(const char *path, int top);

static int cmp_names(const FTSENT **a, const FTSENT **b) {
  return strcmp((*a)->fts_name, (*b)->fts_name);
}

/* -r: every file under the directory path, in name order, with fts(3):
 * symbolic links followed where files' are (-c, -f), each directory
 * visited once, a directory that contains itself through a link
 * reported and skipped rather than walked without end. */
static void walk(const char *path) {
  char *paths[] = {(char *)path, NULL};
  int follow = opt.to_stdout || opt.force;
  FTS *fts = fts_open(paths,
                      (follow ? FTS_LOGICAL : FTS_PHYSICAL | FTS_COMFOLLOW) |
                          FTS_NOCHDIR,
                      cmp_names);
  FTSENT *e;
  if (fts == NULL) {
    errorf("%s: %s", path, strerror(errno));
    return;
  }
  while ((errno = 0, e = fts_read(fts)) != NULL) {
    switch (e->fts_info) {
    case FTS_D:
    case FTS_DP:
    case FTS_DOT:
      break;
    case FTS_DC:
      warnf("%s: directory cycle -- ignored", e->fts_path);
      break;
    case FTS_DNR:
    case FTS_ERR:
    case FTS_NS:
      errorf("%s: %s", e->fts_path, strerror(e->fts_errno));
      break;
    default: /* files, links, anything else: as a name on the command line */
      do_path(e->fts_path, 0);
    }
  }
  if (errno != 0)
    errorf("%s: %s", path, strerror(errno));
  fts_close(fts);
}

/* The input changed while it was read: its size or modification time is
 * not what it was when it was opened, or what was read is not its size.
 * The output then lacks what was written meanwhile (or holds a mix); the
 * input must stay. A regular file, looked at through its descriptor after
 * the last read. */
static int input_changed(int fd, const struct stat *st, uint64_t read_bytes) {
  struct stat now;
  if (fstat(fd, &now) != 0)
    return 1; /* cannot tell: keep it */
  return now.st_size != st->st_size ||
         now.st_mtim.tv_sec != st->st_mtim.tv_sec ||
         now.st_mtim.tv_nsec != st->st_mtim.tv_nsec ||
         read_bytes != (uint64_t)st->st_size;
}

/* After a decompression went through: what followed the last member. Zero
 * bytes are padding (tape and block devices add them) and need no word;
 * anything else was ignored, as gzip ignores it, with a warning. */
static void trailing_report(const char *label, const struct job *j) {
  if (j->trailing == 2)
    warnf("%s: decompression OK, trailing garbage ignored (from byte %llu)",
          label, (unsigned long long)j->trail_off);
  else if (j->trailing == 1 && opt.verbose > 0 && !opt.quiet)
    fprintf(stderr, "%s: decompression OK, trailing zero bytes ignored\n",
            label);
}

static void do_file(const char *path, int fd, const struct stat *st, int top) {
  char *out = NULL;
  const char *repl;
  uint32_t mtime_restore = 0;
  int produce = !opt.to_stdout && !opt.test && !opt.list;

  /* The output's name. */
  if (!opt.decompress) {
    size_t sl = compressed_suffix(path, &repl);
    if (sl != 0) {
      if (top || opt.verbose > 0)
        warnf("%s already has %s suffix -- unchanged", path,
              path + strlen(path) - sl);
      goto out;
    }
    if (produce)
      out = concat(path, strlen(path), opt.suffix, "");
  } else {
    /* A file written to standard output needs no suffix; -t and -l need
     * one only inside a directory (-r), as in gzip. */
    size_t sl = compressed_suffix(path, &repl);
    if (sl == 0 && (produce || (!top && (opt.test || opt.list)))) {
      if (top || opt.verbose > 0)
        warnf("%s: unknown suffix -- ignored", path);
      goto out;
    }
    if (produce || opt.list)
      out = concat(path, strlen(path) - sl, repl, "");
  }

  if (opt.list) {
    if (S_ISREG(st->st_mode))
      list_file(path, fd, st, out);
    else
      list_stream(fd, path, out);
    goto out;
  }

  /* Refuse what would lose data or surprise, as gzip does: a file with
   * other links (-f: compress it anyway), set-user-ID or set-group-ID
   * bits (they would be copied onto the output; never), the sticky bit
   * (-f: anyway). */
  if (produce) {
    if (st->st_nlink > 1 && !opt.force) {
      unsigned long others = (unsigned long)st->st_nlink - 1;
      warnf("%s has %lu other link%s -- file ignored", path, others,
            others > 1 ? "s" : "");
      goto out;
    }
    if (st->st_mode & S_ISUID) {
      warnf("%s is set-user-ID on execution -- file ignored", path);
      goto out;
    }
    if (st->st_mode & S_ISGID) {
      warnf("%s is set-group-ID on execution -- file ignored", path);
      goto out;
    }
    if ((st->st_mode & S_ISVTX) && !opt.force) {
      warnf("%s has the sticky bit set -- file ignored", path);
      goto out;
    }
  }

  /* -d -N: the name (and time) stored in the header; -v: its length.
   * A bad header is left for gunzip to report, with its offset. */
  size_t hdr_len = 10;
  if (opt.decompress && (opt.verbose > 0 || (produce && opt.name == 1))) {
    struct gz_info g = {0};
    if (gz_read_header(fd, &g) == 1) {
      hdr_len = g.hdr_len;
      if (produce && opt.name == 1) {
        mtime_restore = g.mtime;
        char *named = g.name ? restored_name(path, g.name) : NULL;
        if (named != NULL) {
          free(out);
          out = named;
        }
      }
      free(g.name);
    }
  }

  struct job j = {.label = path,
                  .in_fd = fd,
                  .out = out,
                  .hdr_len = hdr_len,
                  .meta = {.st = st, .mtime_override = mtime_restore}};
  sl_gzip_header h;
  memset(&h, 0, sizeof h);
  if (!opt.decompress && !opt.test && opt.name != 0) {
    /* A FIFO's or a device's time says nothing of the data: 0, none. */
    h.name = base_name(path);
    h.mtime = S_ISREG(st->st_mode) && st->st_mtime > 0 &&
                      (uint64_t)st->st_mtime <= UINT32_MAX
                  ? (uint32_t)st->st_mtime
                  : 0;
    j.header = &h;
  }

  if (out != NULL) {
    struct stat ost;
    if (lstat(out, &ost) == 0) {
      if (ost.st_dev == st->st_dev && ost.st_ino == st->st_ino) {
        errorf("%s: the output %s is the input itself -- ignored", path, out);
        goto out;
      }
      if (!opt.force) {
        if (isatty(STDIN_FILENO) && !opt.quiet) {
          if (!ask_overwrite(out)) {
            fprintf(stderr, "\tnot overwritten\n");
            if (exit_code == EXIT_OK)
              exit_code = EXIT_WARNING;
            goto out;
          }
        } else {
          fflush(stdout);
          fprintf(stderr, "%s: %s already exists; not overwritten\n", PROG,
                  out);
          if (exit_code == EXIT_OK)
            exit_code = EXIT_WARNING;
          goto out;
        }
      }
      j.out_flags = SL_FILE_OVERWRITE;
    }
  }

  if (run_job(&j) != 0) {
    stats_print(&j);
    busy_end();
    goto out;
  }

  /* The output is complete, synced, in place and has the input's
   * metadata. The input goes only when every byte of it is in the output:
   * not when it changed while it was read, not when bytes after the gzip
   * data were ignored. */
  int keep = opt.keep || out == NULL;
  if (out != NULL)
    meta_report(out, &j.meta);
  if (!opt.test && S_ISREG(st->st_mode) && input_changed(fd, st, j.in_bytes)) {
    warnf("%s: file changed while it was read; the output holds the %llu "
          "bytes read%s",
          path, (unsigned long long)j.in_bytes, keep ? "" : " -- input kept");
    keep = 1;
  }
  trailing_report(path, &j);
  if (j.trailing == 2 && !keep) {
    warnf("%s: kept: the bytes after its gzip data are not in %s", path, out);
    keep = 1;
  }
  if (!keep && unlink(path) != 0)
    errorf("%s: cannot remove: %s", path, strerror(errno));
  if (opt.verbose > 0 && !opt.quiet) {
    if (opt.test) {
      fprintf(stderr, "%s:\t OK\n", path);
    } else {
      double r100;
      if (opt.decompress)
        r100 = ratio(j.out_bytes, j.in_bytes, j.hdr_len + 8);
      else
        r100 = ratio(j.in_bytes, j.out_bytes,
                     10 + (j.header ? strlen(h.name) + 1 : 0) + 8);
      if (out == NULL)
        fprintf(stderr, "%s:\t%5.1f%%\n", path, r100);
      else
        fprintf(stderr, "%s:\t%5.1f%% -- %s %s\n", path, r100,
                keep ? "created" : "replaced with", out);
    }
  }
  stats_print(&j);
  busy_end();

out:
  if (fd >= 0)
    close(fd);
  free(out);
}

static void do_path(const char *path, int top) {
  struct stat st;
  int flags = O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
  int fd, stream_ok = opt.to_stdout || opt.test || opt.list;

  if (strcmp(path, "-") == 0 && top) {
    do_stdin();
    return;
  }
  /* Symbolic links are followed only with -c or -f, as in gzip. */
  if (!opt.to_stdout && !opt.force)
    flags |= O_NOFOLLOW;
  do
    fd = open(path, flags);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    /* ELOOP: the link O_NOFOLLOW refused, or (followed) a loop of links,
     * which is an error, as in gzip. */
    struct stat lst;
    int e = errno;
    if (e == ELOOP && (flags & O_NOFOLLOW) && lstat(path, &lst) == 0 &&
        S_ISLNK(lst.st_mode))
      warnf("%s is a symbolic link -- ignored (use -f to follow it)", path);
    else
      errorf("%s: %s", path, strerror(e));
    return;
  }
  if (fstat(fd, &st) != 0) {
    errorf("%s: %s", path, strerror(errno));
    close(fd);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    if (!opt.recursive)
      warnf("%s is a directory -- ignored", path);
    else if (top)
      walk(path);
    return;
  }
  /* A FIFO, a device, a process substitution (/dev/fd/N) is read as
   * gzip reads it, where the output is not a file named after it: with
   * -c, -t, -l. */
  if (!S_ISREG(st.st_mode) && !stream_ok) {
    close(fd);
    warnf("%s is not a directory or a regular file -- ignored", path);
    return;
  }
  /* Opened non-blocking so that a FIFO would not hang the open; read
   * blocking (the source polls a FIFO first, so a cancel still ends a wait
   * for its writer). */
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  do_file(path, fd, &st, top);
}

/* ---- the command line --------------------------------------------------- */

/* The engines built in, by name, after a prefix. */
static void print_engines(const char *prefix) {
  unsigned built = sl_zlib_engines();

  fputs(prefix, stdout);
  for (int e = SL_ZLIB_ENGINE_ZLIB; e <= SL_ZLIB_ENGINE_LIBDEFLATE; e++)
    if (built & (1u << e))
      printf(" %s", sl_zlib_engine_name(e));
  putchar('\n');
}

static void help(void) {
  printf("Usage: %s [OPTION]... [FILE]...\n"
         "Compress or decompress FILEs in the gzip format, in parallel\n"
         "(by default, compress FILEs in place, replacing each with FILE.gz).\n"
         "With no FILE, or when FILE is -, read standard input and write\n"
         "standard output.\n"
         "\n"
         "  -1 ... -9, --fast, --best\n"
         "                       compression level: 1 fastest, 9 smallest "
         "(default 6)\n"
         "  -b, --blocksize=KIB  compress in blocks of KIB KiB (at least 32; "
         "default 128\n"
         "                       in the pigz format, 1024 in the block "
         "format)\n"
         "  -c, --stdout         write to standard output, keep the input "
         "files\n"
         "  -d, --decompress     decompress\n"
         "      --engine=NAME    the deflate library: auto (the default), "
         "zlib,\n"
         "                       isal or libdeflate (see below)\n"
         "      --format=FMT     auto (the default: see sgzip(1)), pigz (one "
         "gzip member,\n"
         "                       pigz's chained blocks) or blocks (a member "
         "per block\n"
         "                       that carries its length, for parallel "
         "decompression)\n"
         "  -f, --force          overwrite outputs, write to or read from a "
         "terminal,\n"
         "                       follow symbolic links, compress files with "
         "other links\n"
         "  -h, --help           print this help and exit\n"
         "  -k, --keep           keep (do not delete) the input files\n"
         "  -l, --list           list compressed and uncompressed size, ratio "
         "and name\n"
         "  -n, --no-name        do not store (compress) or restore "
         "(decompress)\n"
         "                       the input's name and time\n"
         "  -N, --name           store (the default) or restore the name and "
         "time\n"
         "  -p, --processes=N    compress, and decompress BGZF and block\n"
         "                       files, with N threads (default: the online\n"
         "                       processors, at most %u, or $SGZIP_THREADS)\n"
         "  -q, --quiet          suppress warnings, the progress bar and "
         "--stats\n"
         "  -r, --recursive      operate on the files in directories, "
         "recursively\n"
         "  -S, --suffix=SUF     use suffix SUF instead of .gz\n"
         "  -t, --test           test the integrity of compressed files\n"
         "  -v, --verbose        print names and ratios; a progress bar on a "
         "terminal\n"
         "  -V, --version        print the version and exit\n"
         "      --stats          print each pipeline's statistics to standard "
         "error\n"
         "      --trace=FILE     write the pipeline's timeline to FILE (Chrome "
         "trace\n"
         "                       JSON, for ui.perfetto.dev or "
         "chrome://tracing)\n"
         "\n"
         "Exit status: 0 success, 1 error, 2 warning (a file skipped).\n",
         PROG, THREADS_DEFAULT_MAX);
  print_engines("Engines built in:");
}

static unsigned long parse_count(const char *what, const char *s,
                                 unsigned long min, unsigned long max) {
  char *end;
  unsigned long v;
  errno = 0;
  if (s == NULL || *s < '0' || *s > '9')
    usage_error("%s: invalid number '%s'", what, s ? s : "");
  v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    usage_error("%s: '%s' is not a number from %lu to %lu", what, s, min, max);
  return v;
}

enum { OPT_FAST = 256, OPT_BEST, OPT_STATS, OPT_TRACE, OPT_ENGINE, OPT_FORMAT };

/* --format NAME. */
static int parse_format(const char *s) {
  if (strcmp(s, "auto") == 0)
    return SL_PGZIP_FORMAT_AUTO;
  if (strcmp(s, "pigz") == 0)
    return SL_PGZIP_FORMAT_PIGZ;
  if (strcmp(s, "blocks") == 0)
    return SL_PGZIP_FORMAT_BLOCKS;
  usage_error("--format: '%s' is not auto, pigz or blocks", s);
  return SL_PGZIP_FORMAT_AUTO;
}

/* --engine NAME: one built in, or auto. */
static int parse_engine(const char *s) {
  for (int e = SL_ZLIB_ENGINE_AUTO; e <= SL_ZLIB_ENGINE_LIBDEFLATE; e++) {
    if (strcmp(s, sl_zlib_engine_name(e)) != 0)
      continue;
    if (e != SL_ZLIB_ENGINE_AUTO && !(sl_zlib_engines() & (1u << e)))
      usage_error("--engine: %s is not built in", s);
    return e;
  }
  usage_error("--engine: '%s' is not auto, zlib, isal or libdeflate", s);
  return SL_ZLIB_ENGINE_AUTO;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"best", no_argument, NULL, OPT_BEST},
      {"blocksize", required_argument, NULL, 'b'},
      {"decompress", no_argument, NULL, 'd'},
      {"engine", required_argument, NULL, OPT_ENGINE},
      {"fast", no_argument, NULL, OPT_FAST},
      {"force", no_argument, NULL, 'f'},
      {"format", required_argument, NULL, OPT_FORMAT},
      {"help", no_argument, NULL, 'h'},
      {"keep", no_argument, NULL, 'k'},
      {"list", no_argument, NULL, 'l'},
      {"name", no_argument, NULL, 'N'},
      {"no-name", no_argument, NULL, 'n'},
      {"processes", required_argument, NULL, 'p'},
      {"quiet", no_argument, NULL, 'q'},
      {"recursive", no_argument, NULL, 'r'},
      {"silent", no_argument, NULL, 'q'},
      {"stats", no_argument, NULL, OPT_STATS},
      {"trace", required_argument, NULL, OPT_TRACE},
      {"stdout", no_argument, NULL, 'c'},
      {"suffix", required_argument, NULL, 'S'},
      {"test", no_argument, NULL, 't'},
      {"to-stdout", no_argument, NULL, 'c'},
      {"uncompress", no_argument, NULL, 'd'},
      {"verbose", no_argument, NULL, 'v'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  unsigned long block_kib = 0; /* the format's default */
  const char *env;
  int c, threads_set = 0;

  opterr = 0;
  while ((c = getopt_long(argc, argv, "123456789b:cdfhklnNp:qrS:tvV", longopts,
                          NULL)) != -1) {
    switch (c) {
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
      opt.level = c - '0';
      break;
    case OPT_FAST:
      opt.level = 1;
      break;
    case OPT_BEST:
      opt.level = 9;
      break;
    case 'b':
      block_kib =
          parse_count("-b", optarg, SL_PGZIP_BLOCK_MIN >> 10, BLOCK_KIB_MAX);
      break;
    case 'c':
      opt.to_stdout = 1;
      break;
    case 'd':
      opt.decompress = 1;
      break;
    case 'f':
      opt.force = 1;
      break;
    case 'h':
      help();
      return EXIT_OK;
    case 'k':
      opt.keep = 1;
      break;
    case 'l':
      opt.list = 1;
      break;
    case 'n':
      opt.name = 0;
      break;
    case 'N':
      opt.name = 1;
      break;
    case 'p':
      opt.workers = (unsigned)parse_count("-p", optarg, 1, SL_MAP_MAX_WORKERS);
      threads_set = 1;
      break;
    case 'q':
      opt.quiet = 1;
      opt.verbose = 0;
      break;
    case 'r':
      opt.recursive = 1;
      break;
    case 'S':
      opt.suffix = optarg;
      break;
    case 't':
      opt.test = 1;
      break;
    case 'v':
      opt.verbose++;
      opt.quiet = 0;
      break;
    case 'V':
      printf("%s (sluice) %s\n"
             "Copyright (c) 2024-2026 The sluice authors.\n"
             "Released under the MIT licence: free to use, copy, modify and\n"
             "distribute, with no warranty.\n",
             PROG, sl_version());
      print_engines("Engines:");
      return EXIT_OK;
    case OPT_STATS:
      opt.stats = 1;
      break;
    case OPT_TRACE:
      opt.trace = optarg;
      break;
    case OPT_ENGINE:
      opt.engine = parse_engine(optarg);
      break;
    case OPT_FORMAT:
      opt.format = parse_format(optarg);
      break;
    default: /* '?' */
      if (optopt == 0)
        usage_error("unrecognized option '%s'", argv[optind - 1]);
      else if (strchr("bpS", optopt) != NULL)
        usage_error("option requires an argument -- '%c'", optopt);
      else
        usage_error("invalid option -- '%c'", optopt);
    }
  }

  if (opt.suffix[0] == '\0' || strchr(opt.suffix, '/') != NULL)
    usage_error("invalid suffix '%s'", opt.suffix);
  if (strlen(opt.suffix) > 30)
    usage_error("suffix too long: '%s'", opt.suffix);
  opt.block = (size_t)block_kib << 10;

  /* Threads: -p, else $SGZIP_THREADS, else the processors (capped). */
  if (!threads_set && (env = getenv("SGZIP_THREADS")) != NULL && *env) {
    char *end;
    unsigned long v;
    errno = 0;
    v = strtoul(env, &end, 10);
    if (errno != 0 || *end != '\0' || *env < '0' || *env > '9' || v < 1 ||
        v > SL_MAP_MAX_WORKERS) {
      fprintf(stderr, "%s: SGZIP_THREADS: '%s' is not a number from 1 to %u\n",
              PROG, env, (unsigned)SL_MAP_MAX_WORKERS);
      return EXIT_ERROR;
    }
    opt.workers = (unsigned)v;
    threads_set = 1;
  }
  if (!threads_set) {
    opt.workers = sl_cpu_count();
    if (opt.workers > THREADS_DEFAULT_MAX)
      opt.workers = THREADS_DEFAULT_MAX;
  }

  if (opt.test || opt.list)
    opt.decompress = 1;
  stderr_tty = isatty(STDERR_FILENO);

  /* Compressed data on a terminal is of no use to anyone. */
  if (!opt.decompress && opt.to_stdout && !opt.force && isatty(STDOUT_FILENO)) {
    fprintf(stderr,
            "%s: compressed data not written to a terminal. Use -f to force "
            "compression.\nFor help, type: %s -h\n",
            PROG, PROG);
    return EXIT_ERROR;
  }

  signals_init();

  if (optind >= argc) {
    do_stdin();
  } else {
    for (int i = optind; i < argc; i++)
      do_path(argv[i], 1);
  }
  if (opt.list)
    list_totals();

  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "%s: stdout: %s\n", PROG, strerror(errno));
    return EXIT_ERROR;
  }
  return exit_code;
}
