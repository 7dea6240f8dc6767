/* SPDX-License-Identifier: MIT */
/*
 * head — the first lines of a gzip'd file, as `zcat FILE | head -n N`
 * prints them, but the reading and inflating stop as soon as the lines
 * are out, and the program ends with success:
 *
 *   file-source -> gunzip -> head
 *
 * The head sink writes up to the N-th newline and then returns SL_DONE
 * ("no more input wanted"): its final still runs (it flushes stdout), and
 * the stages before it are stopped as a cancel would stop them, without
 * failing the pipeline, which ends with 0. Reading from a pipe works the
 * same: the source, waiting for more, is woken and stopped.
 *
 * Usage: head [-n LINES] [-v] [FILE.gz]   (no FILE or "-": standard input)
 * -v tells on standard error how much of the compressed input was read.
 */
#include <sluice.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct head {
  unsigned long long left; /* lines still to print */
};

static int head_write(sl_stage *st, void *ctx, sl_buf *in) {
  struct head *h = ctx;
  const unsigned char *p = sl_buf_data(in), *end = p + sl_buf_len(in);
  const unsigned char *at = p;
  while (h->left > 0 && at < end) {
    const unsigned char *nl = memchr(at, '\n', (size_t)(end - at));
    if (!nl) {
      at = end;
      break;
    }
    at = nl + 1;
    h->left--;
  }
  size_t n = (size_t)(at - p);
  int rc = 0;
  if (n > 0 && fwrite(p, 1, n, stdout) != n) {
    sl_stage_set_error(st, "standard output: %s", strerror(errno));
    rc = SL_EIO;
  }
  sl_buf_unref(in);
  if (rc == 0 && h->left == 0)
    rc = SL_DONE; /* enough: stop what feeds this stage, with success */
  return rc;
}

static int head_final(sl_stage *st, void *ctx) {
  (void)ctx;
  if (fflush(stdout) != 0) {
    sl_stage_set_error(st, "standard output: %s", strerror(errno));
    return SL_EIO;
  }
  return 0;
}

int main(int argc, char **argv) {
  unsigned long long lines = 10;
  int verbose = 0, opt, rc;
  while ((opt = getopt(argc, argv, "n:v")) != -1) {
    if (opt == 'n') {
      char *e;
      errno = 0;
      lines = strtoull(optarg, &e, 10);
      if (errno || !*optarg || *e || *optarg == '-')
        goto usage;
    } else if (opt == 'v') {
      verbose = 1;
    } else {
      goto usage;
    }
  }
  if (argc - optind > 1)
    goto usage;
  const char *path = argc > optind ? argv[optind] : "-";
  bool stdin_in = strcmp(path, "-") == 0;

  struct head h = {.left = lines};
  static const sl_stage_ops head_ops = {.write = head_write,
                                        .final = head_final};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *gunzip = NULL, *sink = NULL;
  if ((rc = sl_pipeline_new(&p, NULL)) != 0 ||
      (rc = stdin_in ? sl_fd_source_new(&src, 0, NULL)
                     : sl_file_source_new(&src, path, NULL)) != 0 ||
      (rc = sl_gunzip_new(&gunzip, NULL)) != 0 ||
      (rc = sl_stage_new(&sink, "head", &head_ops, &h)) != 0 ||
      (rc = sl_pipeline_chain(p, src, gunzip, sink, NULL)) != 0) {
    fprintf(stderr, "head: %s: %s\n", path, sl_strerror(rc));
    sl_stage_free(src), sl_stage_free(gunzip), sl_stage_free(sink);
    sl_pipeline_free(p);
    return 1;
  }
  if (lines == 0) { /* nothing wanted: not even a look at the input */
    sl_pipeline_free(p);
    return 0;
  }
  rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (rc != 0) {
    const char *msg = sl_pipeline_error(p);
    fprintf(stderr, "head: %s\n", msg ? msg : sl_strerror(rc));
  } else if (verbose) {
    sl_stage_stats st;
    struct stat sb;
    sl_pipeline_stage_stats(p, 0, &st);
    if (!stdin_in && stat(path, &sb) == 0)
      fprintf(stderr, "head: read %llu of %llu compressed bytes\n",
              (unsigned long long)st.bytes_out, (unsigned long long)sb.st_size);
    else
      fprintf(stderr, "head: read %llu compressed bytes\n",
              (unsigned long long)st.bytes_out);
  }
  sl_pipeline_free(p);
  return rc != 0;

usage:
  fprintf(stderr, "usage: head [-n LINES] [-v] [FILE.gz]\n");
  return 2;
}
