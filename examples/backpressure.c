/* SPDX-License-Identifier: MIT */
/*
 * backpressure — the seeds' pipe() story told with threads: a fast writer,
 * a slow reader, and a bounded buffer between them.
 *
 *   mem-source -> throttle (RATE bytes/s) -> mem-sink
 *
 * The source could produce the whole input at once; the throttle takes it
 * at RATE. Node's writable.write() would start returning false once the
 * highWaterMark is reached and 'drain' would fire when the buffer empties;
 * here the source's thread pauses in sl_stage_push when the ring reaches
 * its high mark and is woken, once, when the throttle has drained it to
 * the low mark. The table printed at the end shows the pauses and drains,
 * the peak level (never above the high mark plus one chunk) and the time
 * the source spent blocked on a full output.
 *
 * Usage: backpressure [-r RATE] [-n BYTES] [-H HWM]
 */
#include <sluice.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  unsigned long long rate = 8 << 20, len = 4 << 20, hwm = 64 << 10;
  int opt, rc;
  while ((opt = getopt(argc, argv, "r:n:H:")) != -1) {
    unsigned long long v = strtoull(optarg, NULL, 10);
    if (v == 0)
      goto usage;
    if (opt == 'r')
      rate = v;
    else if (opt == 'n')
      len = v;
    else if (opt == 'H')
      hwm = v;
    else
      goto usage;
  }
  if (optind != argc)
    goto usage;

  unsigned char *data = malloc(len);
  if (!data) {
    perror("backpressure");
    return 1;
  }
  for (unsigned long long i = 0; i < len; i++)
    data[i] = (unsigned char)('a' + i % 26);

  /* Small buffers, so that the high mark holds several chunks. */
  sl_pipeline_opts popts = {.buf_size = 4096, .hwm = hwm};
  sl_mem_opts src_opts = {.chunk_size = 4096};
  sl_pipeline *p = NULL;
  sl_stage *src = NULL, *slow = NULL, *sink = NULL;
  if ((rc = sl_pipeline_new(&p, &popts)) != 0 ||
      (rc = sl_mem_source_new(&src, data, len, &src_opts)) != 0 ||
      (rc = sl_throttle_new(&slow, rate, NULL)) != 0 ||
      (rc = sl_mem_sink_new(&sink, NULL)) != 0 ||
      (rc = sl_pipeline_chain(p, src, slow, sink, NULL)) != 0) {
    fprintf(stderr, "backpressure: %s\n", sl_strerror(rc));
    sl_stage_free(src), sl_stage_free(slow), sl_stage_free(sink);
    sl_pipeline_free(p);
    free(data);
    return 1;
  }
  rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (rc != 0) {
    const char *msg = sl_pipeline_error(p);
    fprintf(stderr, "backpressure: %s\n", msg ? msg : sl_strerror(rc));
  } else {
    const void *got;
    size_t got_len;
    sl_mem_sink_data(sink, &got, &got_len);
    sl_ring_stats rs;
    sl_ring_stats_get(sl_stage_output(src), &rs);
    sl_pipeline_stats_print(p, stdout);
    printf("\n%llu bytes through a %llu byte/s reader: the writer paused %llu "
           "times,\nwas drained %llu times, and the ring peaked at %zu bytes "
           "(high mark %zu).\n%s\n",
           len, rate, (unsigned long long)rs.pauses,
           (unsigned long long)rs.drains, rs.peak_level, rs.hwm,
           got_len == len && memcmp(got, data, len) == 0 ? "output intact"
                                                         : "OUTPUT DIFFERS");
    if (got_len != len || memcmp(got, data, len) != 0)
      rc = SL_EDATA;
  }
  sl_pipeline_free(p);
  free(data);
  return rc != 0;

usage:
  fprintf(stderr, "usage: backpressure [-r RATE] [-n BYTES] [-H HWM]\n");
  return 2;
}
