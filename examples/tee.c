/* SPDX-License-Identifier: MIT */
/*
 * tee — one read of a file, two consumers at once: gzip it into a file and
 * compute its CRC-32, each branch on its own thread.
 *
 *                      +-> gzip -> file-sink (OUT.gz)
 *   file-source -> tee |
 *                      +-> crc32 -> discard
 *
 * A tee hands both branches the same buffers, by reference, and the slower
 * branch (gzip, here) sets the pace: the file is read once, at the speed
 * the slowest consumer can take it, and memory stays bounded by the marks.
 *
 * Usage: tee [-s] [-f] IN OUT.gz
 *   -s  print the stage and ring counters to stderr at the end
 *   -f  overwrite OUT.gz if it exists
 */
#include <sluice.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The crc32 branch ends in a sink that drops what it gets. */
static int discard(const void *data, size_t len, void *arg) {
  (void)data, (void)len, (void)arg;
  return 0;
}

int main(int argc, char **argv) {
  int stats = 0, opt, rc;
  unsigned flags = 0;
  while ((opt = getopt(argc, argv, "sf")) != -1) {
    if (opt == 's')
      stats = 1;
    else if (opt == 'f')
      flags |= SL_FILE_OVERWRITE;
    else
      goto usage;
  }
  if (argc - optind != 2)
    goto usage;
  const char *in = argv[optind], *out = argv[optind + 1];

  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *tee = NULL, *gz = NULL, *file = NULL, *crc = NULL,
           *drop = NULL;
  sl_fd_opts sink_opts = {.flags = flags};
  if ((rc = sl_pipeline_new(&p, NULL)) != 0 ||
      (rc = sl_file_source_new(&src, in, NULL)) != 0 ||
      (rc = sl_tee_new(&tee, NULL)) != 0 ||
      (rc = sl_gzip_new(&gz, NULL)) != 0 ||
      (rc = sl_file_sink_new(&file, out, &sink_opts)) != 0 ||
      (rc = sl_crc32_new(&crc, NULL)) != 0 ||
      (rc = sl_callback_sink_new(&drop, discard, NULL, NULL, NULL)) != 0 ||
      (rc = sl_pipeline_chain(p, src, tee, gz, file, NULL)) != 0) {
    fprintf(stderr, "tee: %s\n", sl_strerror(rc));
    /* Until a chain takes them, the stages are ours to free. */
    sl_stage_free(src), sl_stage_free(tee), sl_stage_free(gz);
    sl_stage_free(file), sl_stage_free(crc), sl_stage_free(drop);
    sl_pipeline_free(p);
    return 1;
  }
  /* The second branch: tee -> crc32 -> discard. */
  if ((rc = sl_pipeline_chain(p, tee, crc, drop, NULL)) != 0) {
    fprintf(stderr, "tee: %s\n", sl_strerror(rc));
    sl_stage_free(crc), sl_stage_free(drop);
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
    fprintf(stderr, "tee: %s\n", msg ? msg : sl_strerror(rc));
  } else {
    uint32_t value;
    uint64_t bytes;
    sl_crc32_value(crc, &value, &bytes);
    printf("%s: %llu bytes, crc32 %08x, gzip'd into %s\n", in,
           (unsigned long long)bytes, (unsigned)value, out);
  }
  sl_pipeline_free(p);
  return rc != 0;

usage:
  fprintf(stderr, "usage: tee [-s] [-f] IN OUT.gz\n");
  return 2;
}
