/* SPDX-License-Identifier: MIT */
/*
 * copy — copy a file on two threads, with a progress line.
 *
 *     copy [-f] SRC DST
 *
 * Node's
 *
 *     pipeline(fs.createReadStream(src), fs.createWriteStream(dst), cb)
 *
 * with sluice's file stages (sluice/fd.h): a source that reads SRC in
 * pooled buffers and a sink that writes DST atomically. The sink writes a
 * temporary beside DST and renames it over DST only once every byte is
 * written and synced, so DST is never seen half-written: after a failure,
 * a full disk or Ctrl-C there is no DST (or the old one, with -f) and no
 * temporary.
 *
 * The source's progress callback runs on its thread after every chunk;
 * it prints "copy: 42% 812.3 MB/s" to stderr a few times a second.
 *
 * Ctrl-C. The library installs no signal handler, so the program decides:
 * it blocks SIGINT and SIGTERM (the stage threads block every signal
 * anyway) and waits for them with sigwait(), cancelling the pipeline when
 * one comes. The pipeline's finished callback ends that wait with a
 * SIGUSR1 sent to the main thread.
 *
 *   -f   replace DST if it exists (without it, an existing DST is an error)
 *
 * Exit status: 0 copied, 1 the copy failed (the reason on stderr), 2 usage.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getopt, sigwait, clock_gettime */
#endif

#include <sluice.h>
#include <sluice/fd.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- progress: called on the source's thread after every chunk --------- */

struct progress {
  double start;      /* seconds, monotonic */
  double last_print; /* when the line was last printed */
  int printed;       /* a line is on stderr, to end with a newline */
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_line(struct progress *pr, uint64_t bytes, uint64_t total) {
  double secs = now() - pr->start;
  double mbps = secs > 0 ? (double)bytes / 1e6 / secs : 0;

  if (total != SL_FD_SIZE_UNKNOWN && total > 0)
    fprintf(stderr, "\rcopy: %3.0f%% %8.1f MB/s",
            100.0 * (double)bytes / (double)total, mbps);
  else
    fprintf(stderr, "\rcopy: %.1f MB %8.1f MB/s", (double)bytes / 1e6, mbps);
  pr->printed = 1;
}

/* Quick, as it runs in the stage's time: at most one line per 250 ms,
 * and the last one. */
static void on_progress(sl_stage *stage, uint64_t bytes, uint64_t total,
                        void *arg) {
  struct progress *pr = arg;
  double t = now();
  (void)stage;
  if (t - pr->last_print < 0.25 && bytes != total)
    return;
  pr->last_print = t;
  print_line(pr, bytes, total);
}

/* ---- finished: wake the main thread out of sigwait ---------------------- */

static void on_finished(sl_pipeline *p, int status, void *arg) {
  (void)p;
  (void)status;
  pthread_kill(*(pthread_t *)arg, SIGUSR1);
}

int main(int argc, char **argv) {
  struct progress pr = {0};
  sl_fd_opts src_opts = {.progress = on_progress, .progress_arg = &pr};
  sl_fd_opts dst_opts = {0};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *dst = NULL;
  pthread_t main_thread = pthread_self();
  sigset_t set;
  int opt, rc, sig;

  while ((opt = getopt(argc, argv, "f")) != -1) {
    if (opt != 'f') {
      fprintf(stderr, "usage: copy [-f] SRC DST\n");
      return 2;
    }
    dst_opts.flags |= SL_FILE_OVERWRITE;
  }
  if (argc - optind != 2) {
    fprintf(stderr, "usage: copy [-f] SRC DST\n");
    return 2;
  }
  const char *src_path = argv[optind], *dst_path = argv[optind + 1];

  /* The constructors open at once: a missing SRC or an existing DST is
   * reported here, before any thread starts. There is no stage to hold a
   * message yet; errno has the precise reason. */
  if ((rc = sl_file_source_new(&src, src_path, &src_opts)) != 0) {
    fprintf(stderr, "copy: %s: %s\n", src_path,
            rc == SL_ENOMEM ? sl_strerror(rc) : strerror(errno));
    return 1;
  }
  if ((rc = sl_file_sink_new(&dst, dst_path, &dst_opts)) != 0) {
    fprintf(stderr, "copy: %s: %s%s\n", dst_path,
            rc == SL_ENOMEM ? sl_strerror(rc) : strerror(errno),
            rc == SL_EEXIST ? " (use -f to replace it)" : "");
    sl_stage_free(src);
    return 1;
  }

  /* Signals first: threads started from here on inherit the mask. */
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  if ((rc = sl_pipeline_new(&p, NULL)) != 0 ||
      (rc = sl_pipeline_chain(p, src, dst, NULL)) != 0 ||
      (rc = sl_pipeline_on_finished(p, on_finished, &main_thread)) != 0) {
    if (!p || sl_pipeline_stage_count(p) == 0) { /* not chained: ours */
      sl_stage_free(src);
      sl_stage_free(dst);
    }
    sl_pipeline_free(p);
    fprintf(stderr, "copy: %s\n", sl_strerror(rc));
    return 1;
  }

  pr.start = pr.last_print = now();
  rc = sl_pipeline_start(p);
  if (rc == 0) {
    /* Until the finished callback's SIGUSR1: a SIGINT or SIGTERM cancels,
     * and the pipeline then winds down and finishes. */
    while (sigwait(&set, &sig) == 0 && sig != SIGUSR1)
      sl_pipeline_cancel(p);
    rc = sl_pipeline_wait(p);
  }

  if (pr.printed || rc == 0) /* the last line: what reached DST */
    print_line(&pr, sl_fd_bytes(dst), sl_fd_bytes(src));
  if (pr.printed)
    fputc('\n', stderr);
  if (rc != 0) {
    const char *msg = sl_pipeline_error(p);
    fprintf(stderr, "copy: %s\n", msg ? msg : sl_strerror(rc));
  }
  sl_pipeline_free(p); /* removes the temporary if the copy failed */
  return rc == 0 ? 0 : 1;
}
