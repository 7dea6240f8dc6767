/* SPDX-License-Identifier: MIT */
/*
 * zlines — count the lines of a gzip'd log, as `zcat FILE | wc -l` does,
 * with reading, inflating, splitting and counting on four threads:
 *
 *   file-source -> gunzip -> lines -> count
 *
 * The lines stage emits one chunk per line, joining lines that straddle
 * chunk boundaries; the counting sink sees only whole lines.
 *
 * Usage: zlines [-s] FILE.gz
 */
#include <sluice.h>

#include <stdio.h>
#include <unistd.h>

struct count {
  unsigned long long lines, longest;
};

static int count_line(const void *data, size_t len, void *arg) {
  struct count *c = arg;
  (void)data;
  c->lines++;
  if (len > c->longest)
    c->longest = len;
  return 0;
}

int main(int argc, char **argv) {
  int stats = 0, opt, rc;
  while ((opt = getopt(argc, argv, "s")) != -1) {
    if (opt != 's')
      goto usage;
    stats = 1;
  }
  if (argc - optind != 1)
    goto usage;

  struct count c = {0};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *gunzip = NULL, *lines = NULL, *sink = NULL;
  if ((rc = sl_pipeline_new(&p, NULL)) != 0 ||
      (rc = sl_file_source_new(&src, argv[optind], NULL)) != 0 ||
      (rc = sl_gunzip_new(&gunzip, NULL)) != 0 ||
      (rc = sl_lines_new(&lines, NULL)) != 0 ||
      (rc = sl_callback_sink_new(&sink, count_line, NULL, &c, NULL)) != 0 ||
      (rc = sl_pipeline_chain(p, src, gunzip, lines, sink, NULL)) != 0) {
    fprintf(stderr, "zlines: %s: %s\n", argv[optind], sl_strerror(rc));
    sl_stage_free(src), sl_stage_free(gunzip);
    sl_stage_free(lines), sl_stage_free(sink);
    sl_pipeline_free(p);
    return 1;
  }
  rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (stats)
    sl_pipeline_stats_print(p, stderr);
  if (rc != 0) {
    const char *msg = sl_pipeline_error(p);
    fprintf(stderr, "zlines: %s\n", msg ? msg : sl_strerror(rc));
  } else {
    printf("%llu\n", c.lines);
  }
  sl_pipeline_free(p);
  return rc != 0;

usage:
  fprintf(stderr, "usage: zlines [-s] FILE.gz\n");
  return 2;
}
