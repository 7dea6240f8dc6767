/* SPDX-License-Identifier: MIT */
/*
 * The NATS JetStream stages against a real nats-server (tests/natsutil.h
 * starts one per test case, in an unchecked fixture, and kills it on every
 * path). Skips, exit 77, when nats-server is not installed.
 *
 *   round trip     stream -> source -> sink -> stream, every message once,
 *                  in order, all acknowledged
 *   slow sink      the source stops pulling: the consumer's NumPending on
 *                  the server stays near the total, and the pool's bytes
 *                  near the ring's mark
 *   refused        a publish over the stream's limit fails the pipeline
 *                  with the server's message, the stream and the subject
 *   cancel         a cancel while a fetch waits on the server returns
 *   redelivery     a cancelled pipeline's unacknowledged messages go to
 *                  the next consumer of the durable, the acknowledged not
 *   restart        the server killed (SIGKILL) and restarted on its port
 *                  and storage while the pipeline runs: every message
 *                  still arrives, none lost (a redelivered one may come
 *                  twice: at least once)
 *   tls            a round trip with a server that speaks TLS only,
 *                  trusting its CA; refused without the CA; a
 *                  credentials file that is not there is refused naming
 *                  the URL
 *   restart while  the same with publishes on the wire (the server
 *   publishing     stopped first, so they are never read): the sink
 *                  sends them again after the reconnect, and the stream
 *                  stores each message once
 */
#include "natsutil.h"
#include "pipeutil.h"
#include "sluice-int.h"
#include "sluice.h"
#include "sluice/nats.h"
#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <stdatomic.h>
#include <time.h>

static nu_server server;
static int server_ok;

static void server_setup(void) {
  server_ok = nu_server_start(&server) == 0;
}

static void server_setup_tls(void) {
  server_ok = nu_server_start_as(&server, 1) == 0;
}

static void server_teardown(void) {
  nu_server_stop(&server);
}

typedef struct {
  natsConnection *nc;
  jsCtx *js;
} client;

static void client_open(client *c) {
  ck_assert_msg(server_ok, "nats-server did not start");
  ck_assert_int_eq(nu_server_connect(&server, &c->nc), NATS_OK);
  ck_assert_int_eq(natsConnection_JetStream(&c->js, c->nc, NULL), NATS_OK);
}

static void client_close(client *c) {
  jsCtx_Destroy(c->js);
  natsConnection_Destroy(c->nc);
}

static void add_stream(client *c, const char *name, const char *subject,
                       int64_t max_msgs) {
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = name;
  const char *subjects[] = {subject};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  if (max_msgs > 0) {
    cfg.MaxMsgs = max_msgs;
    cfg.Discard = js_DiscardNew;
  }
  jsErrCode jerr = 0;
  ck_assert_int_eq(js_AddStream(NULL, c->js, &cfg, NULL, &jerr), NATS_OK);
}

static size_t msg_text(char *buf, size_t size, int i) {
  /* Varying sizes, each naming its index. */
  int n = snprintf(buf, size, "message %06d ", i);
  size_t len = (size_t)n + (size_t)(i * 37 % 200);
  for (size_t k = (size_t)n; k < len && k < size; k++)
    buf[k] = (char)('a' + (k + (size_t)i) % 26);
  return len < size ? len : size;
}

static void publish_n(client *c, const char *subject, int n, size_t pad) {
  char buf[4096];
  for (int i = 0; i < n; i++) {
    size_t len = msg_text(buf, sizeof buf, i);
    if (pad > len) {
      memset(buf + len, '.', pad - len);
      len = pad;
    }
    ck_assert_int_eq(js_PublishAsync(c->js, subject, buf, (int)len, NULL),
                     NATS_OK);
  }
  ck_assert_int_eq(js_PublishAsyncComplete(c->js, NULL), NATS_OK);
}

static jsConsumerInfo *consumer_info(client *c, const char *stream,
                                     const char *name) {
  jsConsumerInfo *ci = NULL;
  ck_assert_int_eq(js_GetConsumerInfo(&ci, c->js, stream, name, NULL, NULL),
                   NATS_OK);
  return ci;
}

static uint64_t stream_msgs(client *c, const char *stream) {
  jsStreamInfo *si = NULL;
  ck_assert_int_eq(js_GetStreamInfo(&si, c->js, stream, NULL, NULL), NATS_OK);
  uint64_t n = si->State.Msgs;
  jsStreamInfo_Destroy(si);
  return n;
}

static sl_nats_source_opts source_opts(const char *stream,
                                       const char *consumer) {
  sl_nats_source_opts o = {0};
  o.conn.url = server.url;
  o.stream = stream;
  o.consumer = consumer;
  return o;
}

/* A sink that keeps every chunk as one record; with block_after > 0 it
 * waits for the cancel after that many chunks. */
typedef struct {
  pu_bytes all;
  size_t *lens;
  size_t n, cap;
  long block_after;
  atomic_long seen;
  int release_fd; /* >= 0: the first write waits until it is readable */
  int notify_fd;  /* > 0: written to when it blocks after block_after */
  int keep;       /* hold every chunk (kept) until collect_free */
  sl_buf **kept;
} collect;

static int collect_write(sl_stage *s, void *ctx, sl_buf *in) {
  collect *k = ctx;
  if (k->release_fd >= 0) {
    struct pollfd pfd[2] = {{.fd = k->release_fd, .events = POLLIN},
                            {.fd = sl_stage_cancel_fd(s), .events = POLLIN}};
    while (poll(pfd, 2, -1) < 0)
      ;
    k->release_fd = -1;
  }
  if (k->n == k->cap) {
    k->cap = k->cap ? 2 * k->cap : 256;
    k->lens = realloc(k->lens, k->cap * sizeof *k->lens);
    if (k->keep)
      k->kept = realloc(k->kept, k->cap * sizeof *k->kept);
  }
  if (k->keep)
    k->kept[k->n] = in;
  k->lens[k->n++] = sl_buf_len(in);
  pu_bytes_add(&k->all, sl_buf_data(in), sl_buf_len(in));
  if (!k->keep)
    sl_buf_unref(in);
  long seen = atomic_fetch_add(&k->seen, 1) + 1;
  if (k->block_after > 0 && seen >= k->block_after) {
    if (k->notify_fd > 0 && write(k->notify_fd, "b", 1) != 1)
      return SL_EIO;
    struct pollfd pfd = {.fd = sl_stage_cancel_fd(s), .events = POLLIN};
    while (poll(&pfd, 1, -1) < 0)
      ;
    return SL_ECANCELED;
  }
  return 0;
}

static sl_stage *collect_stage(collect *k) {
  sl_stage_ops ops = {.write = collect_write};
  sl_stage *s;
  ck_assert_int_eq(sl_stage_new(&s, "collect", &ops, k), 0);
  return s;
}

static void collect_free(collect *k) {
  for (size_t i = 0; k->keep && i < k->n; i++)
    sl_buf_unref(k->kept[i]);
  free(k->kept);
  pu_bytes_free(&k->all);
  free(k->lens);
}

/* The records of k equal messages first..first+n-1, in order. */
static void collect_check(const collect *k, int first, int n, size_t pad) {
  ck_assert_uint_eq(k->n, (size_t)n);
  size_t off = 0;
  char buf[4096];
  for (int i = 0; i < n; i++) {
    size_t len = msg_text(buf, sizeof buf, first + i);
    if (pad > len) {
      memset(buf + len, '.', pad - len);
      len = pad;
    }
    ck_assert_uint_eq(k->lens[i], len);
    ck_assert_int_eq(memcmp(k->all.p + off, buf, len), 0);
    off += len;
  }
}

/* The records of k are messages first..first+n-1, each once, in any
 * order (redelivered ones come back after newer ones). */
static void collect_check_set(const collect *k, int first, int n) {
  ck_assert_uint_eq(k->n, (size_t)n);
  char *seen = calloc((size_t)n, 1);
  size_t off = 0;
  char buf[4096];
  for (size_t r = 0; r < k->n; r++) {
    int i = -1;
    ck_assert_int_eq(sscanf((const char *)k->all.p + off, "message %d", &i), 1);
    ck_assert_int_ge(i, first);
    ck_assert_int_lt(i, first + n);
    ck_assert_msg(!seen[i - first], "message %d twice", i);
    seen[i - first] = 1;
    size_t len = msg_text(buf, sizeof buf, i);
    ck_assert_uint_eq(k->lens[r], len);
    ck_assert_int_eq(memcmp(k->all.p + off, buf, len), 0);
    off += len;
  }
  free(seen);
}

START_TEST(test_round_trip) {
  client c;
  client_open(&c);
  add_stream(&c, "IN", "in.>", 0);
  add_stream(&c, "OUT", "out.>", 0);
  const int n = 700;
  publish_n(&c, "in.data", n, 0);

  sl_nats_source_opts so = source_opts("IN", "relay");
  so.max_msgs = n;
  so.max_batch = 64;
  sl_nats_sink_opts ko = {.conn.url = server.url,
                          .stream = "OUT",
                          .subject = "out.data",
                          .id_prefix = "rt-",
                          .max_pending = 32};
  sl_stage *src, *sink;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  ck_assert_int_eq(sl_nats_sink_new(&sink, &ko), 0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_msg(sl_pipeline_wait(p) == 0, "%s", sl_pipeline_error(p));
  uint64_t fetched, acked, dropped;
  sl_pipeline_free(p); /* settles the last checkpoint, flushes the acks */
  ck_assert_uint_eq(stream_msgs(&c, "OUT"), (uint64_t)n);
  jsConsumerInfo *ci = consumer_info(&c, "IN", "relay");
  ck_assert_int_eq(ci->NumAckPending, 0);
  ck_assert_uint_eq(ci->NumPending, 0);
  jsConsumerInfo_Destroy(ci);
  (void)fetched, (void)acked, (void)dropped;

  /* Read OUT back through a second source: the same messages, in order. */
  collect k = {.release_fd = -1};
  sl_nats_source_opts so2 = source_opts("OUT", "check");
  so2.max_msgs = n;
  ck_assert_int_eq(sl_nats_source_new(&src, &so2), 0);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_msg(sl_pipeline_wait(p) == 0, "%s", sl_pipeline_error(p));
  ck_assert_int_eq(sl_nats_source_counts(src, &fetched, &acked, &dropped), 0);
  ck_assert_uint_eq(fetched, (uint64_t)n);
  sl_pipeline_free(p);
  collect_check(&k, 0, n, 0);
  collect_free(&k);
  client_close(&c);
}
END_TEST

START_TEST(test_slow_sink_stops_pulling) {
  client c;
  client_open(&c);
  add_stream(&c, "SLOW", "slow.>", 0);
  const int n = 2000;
  const size_t size = 1024, hwm = 16 * 1024;
  publish_n(&c, "slow.data", n, size);

  int release[2];
  ck_assert_int_eq(pipe(release), 0);
  collect k = {.release_fd = release[0]};
  sl_nats_source_opts so = source_opts("SLOW", "slow");
  so.max_msgs = n;
  sl_stage *src;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  ck_assert_int_eq(sl_stage_set_output(src, hwm, SL_LWM_DEFAULT, SL_RING_BYTES),
                   0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);

  /* The sink holds its first chunk; the source fills its ring and then
   * waits for credit instead of pulling. */
  ck_assert_msg(pu_ring_wait_paused(sl_stage_output(src)) == 0, "%s",
                sl_pipeline_error(p));
  uint64_t fetched;
  ck_assert_int_eq(sl_nats_source_counts(src, &fetched, NULL, NULL), 0);
  jsConsumerInfo *ci = consumer_info(&c, "SLOW", "slow");
  /* About a ring's worth was taken (one fetch's MaxBytes is the credit);
   * the rest waits on the server. (The server also counts as delivered
   * what it sent for a pull request that expired on the client's side
   * before it arrived, so its figure is looser than ours.) */
  ck_assert_uint_le(fetched, 2 * hwm / size + 2);
  ck_assert_uint_ge(ci->NumPending, (uint64_t)n / 2);
  jsConsumerInfo_Destroy(ci);
  sl_pool_stats ps;
  ck_assert_int_eq(sl_pool_stats_get(sl_pipeline_pool(p), &ps), 0);
  ck_assert_uint_le(ps.bytes_outstanding, 2 * hwm + 2 * size);

  ck_assert_int_eq(write(release[1], "x", 1), 1);
  ck_assert_msg(sl_pipeline_wait(p) == 0, "%s", sl_pipeline_error(p));
  sl_pipeline_free(p);
  collect_check(&k, 0, n, size);
  ci = consumer_info(&c, "SLOW", "slow");
  ck_assert_int_eq(ci->NumAckPending, 0);
  ck_assert_uint_eq(ci->NumPending, 0);
  jsConsumerInfo_Destroy(ci);
  collect_free(&k);
  close(release[0]);
  close(release[1]);
  client_close(&c);
}
END_TEST

START_TEST(test_publish_refused) {
  client c;
  client_open(&c);
  add_stream(&c, "LIM", "lim.>", 5);
  static const char data[] = "0123456789abcdefghij";
  sl_mem_opts mo = {.chunk_size = 2};
  sl_stage *src, *sink;
  ck_assert_int_eq(sl_mem_source_new(&src, data, sizeof data - 1, &mo), 0);
  sl_nats_sink_opts ko = {
      .conn.url = server.url, .stream = "LIM", .subject = "lim.x"};
  ck_assert_int_eq(sl_nats_sink_new(&sink, &ko), 0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EIO);
  const char *err = sl_pipeline_error(p);
  ck_assert_ptr_nonnull(err);
  ck_assert_msg(strstr(err, "maximum messages exceeded") &&
                    strstr(err, "stream LIM") && strstr(err, "subject lim.x"),
                "%s", err);
  sl_pipeline_free(p);
  ck_assert_uint_eq(stream_msgs(&c, "LIM"), 5);
  client_close(&c);
}
END_TEST

START_TEST(test_cancel_while_fetching) {
  client c;
  client_open(&c);
  add_stream(&c, "IDLE", "idle.>", 0);
  collect k = {.release_fd = -1};
  sl_nats_source_opts so = source_opts("IDLE", "idle");
  sl_stage *src;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  /* Until the server holds the source's pull request (a bounded number of
   * asks; each is a round trip to the server). */
  int waiting = 0;
  for (int i = 0; i < 100000 && !waiting; i++) {
    jsConsumerInfo *ci = NULL;
    if (js_GetConsumerInfo(&ci, c.js, "IDLE", "idle", NULL, NULL) == NATS_OK) {
      waiting = ci->NumWaiting > 0;
      jsConsumerInfo_Destroy(ci);
    }
  }
  ck_assert_msg(waiting, "the source never waited on a fetch");
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  fprintf(stderr, "check_nats: cancel during a fetch returned in %.0f ms\n",
          (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
              (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
  sl_pipeline_free(p);
  ck_assert_uint_eq(k.n, 0);
  collect_free(&k);
  client_close(&c);
}
END_TEST

START_TEST(test_redelivery_after_cancel) {
  client c;
  client_open(&c);
  add_stream(&c, "RED", "red.>", 0);
  const int n = 100;
  publish_n(&c, "red.data", n, 0);

  /* First run: the sink takes 35 chunks, then blocks until cancelled;
   * batches of 10, so some checkpoints pass (their messages are
   * acknowledged) and the rest are dropped. */
  int blocked[2];
  ck_assert_int_eq(pipe(blocked), 0);
  collect k1 = {.release_fd = -1, .block_after = 35, .notify_fd = blocked[1]};
  sl_nats_source_opts so = source_opts("RED", "red");
  so.max_batch = 10;
  so.ack_wait_ms = 500;
  sl_stage *src;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k1), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  char byte;
  ck_assert_int_eq(read(blocked[0], &byte, 1), 1); /* the sink blocks */
  close(blocked[0]);
  close(blocked[1]);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  uint64_t fetched, acked, dropped;
  ck_assert_int_eq(sl_nats_source_counts(src, &fetched, &acked, &dropped), 0);
  sl_pipeline_free(p);
  /* The sink had 35: three batches of 10 passed its sync at most. */
  ck_assert_uint_le(acked, 30);
  ck_assert_uint_ge(dropped, 1);
  ck_assert_uint_gt(fetched, acked);
  collect_check(&k1, 0, 35, 0);

  /* Second run on the same durable consumer: every message not
   * acknowledged, once, in order, and none that was. */
  collect k2 = {.release_fd = -1};
  so.max_msgs = (uint64_t)n - acked;
  so.max_batch = 0;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k2), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_msg(sl_pipeline_wait(p) == 0, "%s", sl_pipeline_error(p));
  sl_pipeline_free(p);
  collect_check_set(&k2, (int)acked, n - (int)acked);
  jsConsumerInfo *ci = consumer_info(&c, "RED", "red");
  ck_assert_int_eq(ci->NumAckPending, 0);
  ck_assert_uint_eq(ci->NumPending, 0);
  jsConsumerInfo_Destroy(ci);
  collect_free(&k1);
  collect_free(&k2);
  client_close(&c);
}
END_TEST

/* A source of the stream TLS over the test server, with conn. Returns the
 * pipeline's outcome; k gets what came. */
static int tls_pull(const sl_nats_conn_opts *conn, collect *k, int n) {
  sl_nats_source_opts so = source_opts("TLS", "tls");
  so.conn = *conn;
  so.max_msgs = (uint64_t)n;
  sl_stage *src;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(k), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  int rc = sl_pipeline_wait(p);
  if (rc)
    printf("check_nats: tls: refused as expected: %s\n", sl_pipeline_error(p));
  ck_assert(rc == 0 || strstr(sl_pipeline_error(p), server.url) != NULL);
  sl_pipeline_free(p);
  return rc;
}

START_TEST(test_tls) {
  client c;
  client_open(&c); /* over TLS, trusting the test CA */
  add_stream(&c, "TLS", "tls.>", 0);
  const int n = 50;
  publish_n(&c, "tls.data", n, 0);
  client_close(&c);

  char ca[300];
  snprintf(ca, sizeof ca, "%s/ca.pem", server.dir);
  sl_nats_conn_opts conn = {.url = server.url, .tls = 1, .ca_file = ca};
  collect k = {.release_fd = -1};
  ck_assert_int_eq(tls_pull(&conn, &k, n), 0);
  collect_check(&k, 0, n, 0);
  collect_free(&k);

  /* The server's certificate is not trusted without its CA. */
  conn.ca_file = NULL;
  collect k2 = {.release_fd = -1};
  ck_assert_int_eq(tls_pull(&conn, &k2, n), SL_EIO);
  ck_assert_uint_eq(k2.n, 0);
  collect_free(&k2);
}
END_TEST

START_TEST(test_creds_missing) {
  sl_nats_source_opts so = source_opts("NONE", "none");
  so.conn.creds_file = "/nonexistent/sluice-test.creds";
  sl_stage *src;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  collect k = {.release_fd = -1};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  int rc = sl_pipeline_wait(p);
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strstr(sl_pipeline_error(p), server.url) != NULL, "%s",
                sl_pipeline_error(p));
  printf("check_nats: creds: %s\n", sl_pipeline_error(p));
  sl_pipeline_free(p);
  collect_free(&k);
}
END_TEST

/* The source's chunks are the messages' payloads, not copies: a sink
 * that keeps every chunk past its batch's acknowledgement (and past the
 * pipeline) still reads each message's bytes, and the messages go when
 * the last chunk does (ASan and valgrind see a use after free or a leak
 * otherwise). */
START_TEST(test_chunks_outlive_ack) {
  client c;
  client_open(&c);
  add_stream(&c, "KEEP", "keep.>", 0);
  const int n = 300;
  publish_n(&c, "keep.data", n, 0);

  sl_nats_source_opts so = source_opts("KEEP", "keep");
  so.max_msgs = n;
  so.max_batch = 32;
  collect k = {.release_fd = -1, .keep = 1};
  sl_stage *src;
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, collect_stage(&k), NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_msg(sl_pipeline_wait(p) == 0, "%s", sl_pipeline_error(p));
  uint64_t acked;
  ck_assert_int_eq(sl_nats_source_counts(src, NULL, &acked, NULL), 0);
  ck_assert_uint_eq(acked, (uint64_t)n); /* every batch settled */
  sl_pipeline_free(p);
  client_close(&c);

  char text[4096];
  for (int i = 0; i < n; i++) {
    size_t len = msg_text(text, sizeof text, i);
    ck_assert_uint_eq(sl_buf_len(k.kept[i]), len);
    ck_assert_int_eq(memcmp(sl_buf_data(k.kept[i]), text, len), 0);
  }
  collect_check(&k, 0, n, 0);
  collect_free(&k);
}
END_TEST

/* A sink that counts distinct messages ("message %d") among the first
 * n, pauses once after `pause_at` distinct ones until release_fd is
 * readable (telling notify_fd first), and ends the stream (SL_DONE) once
 * it has seen all n. */
typedef struct {
  int n, pause_at, distinct, dups;
  char *seen;
  int release_fd, notify_fd;
} distinct;

static int distinct_write(sl_stage *s, void *ctx, sl_buf *in) {
  distinct *d = ctx;
  int i = -1;
  char text[32];
  size_t len =
      sl_buf_len(in) < sizeof text - 1 ? sl_buf_len(in) : sizeof text - 1;
  memcpy(text, sl_buf_data(in), len);
  text[len] = '\0';
  sl_buf_unref(in);
  if (sscanf(text, "message %d", &i) != 1 || i < 0 || i >= d->n)
    return SL_EINVAL;
  if (d->seen[i]) {
    d->dups++;
    return 0;
  }
  d->seen[i] = 1;
  if (++d->distinct == d->pause_at) {
    if (write(d->notify_fd, "p", 1) != 1)
      return SL_EIO;
    struct pollfd pfd[2] = {{.fd = d->release_fd, .events = POLLIN},
                            {.fd = sl_stage_cancel_fd(s), .events = POLLIN}};
    while (poll(pfd, 2, -1) < 0)
      ;
    if (pfd[1].revents)
      return SL_ECANCELED;
  }
  return d->distinct == d->n ? SL_DONE : 0;
}

START_TEST(test_server_restart) {
  client c;
  client_open(&c);
  add_stream(&c, "RST", "rst.>", 0);
  const int n = 2000;
  publish_n(&c, "rst.data", n, 0);
  client_close(&c);

  int notify[2], release[2];
  ck_assert_int_eq(pipe(notify), 0);
  ck_assert_int_eq(pipe(release), 0);
  distinct d = {.n = n,
                .pause_at = n / 4,
                .seen = calloc((size_t)n, 1),
                .release_fd = release[0],
                .notify_fd = notify[1]};
  sl_nats_source_opts so = source_opts("RST", "rst");
  so.max_batch = 50;
  so.ack_wait_ms = 1000; /* what a lost ack costs: one redelivery delay */
  so.conn.reconnect_wait_ms = 50;
  sl_stage *src, *sink;
  sl_stage_ops ops = {.write = distinct_write};
  ck_assert_int_eq(sl_nats_source_new(&src, &so), 0);
  ck_assert_int_eq(sl_stage_new(&sink, "distinct", &ops, &d), 0);
  /* Small rings: the source stops pulling soon after the sink pauses,
   * so most of the stream is still on the server when it dies. */
  sl_pipeline_opts po = {.hwm = 16 << 10};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);

  /* A quarter in, with the sink paused: the server dies with the rest of
   * the stream, some of it fetched and unacknowledged, and comes back on
   * its port and storage. */
  char byte;
  ck_assert_int_eq(read(notify[0], &byte, 1), 1);
  client_open(&c);
  jsConsumerInfo *ci = consumer_info(&c, "RST", "rst");
  ck_assert_uint_gt(ci->NumPending, (uint64_t)n / 2); /* still to come */
  jsConsumerInfo_Destroy(ci);
  client_close(&c);
  ck_assert_int_eq(nu_server_kill_foreign(&server), 0);
  server.pid = 0;
  ck_assert_int_eq(nu_server_run(&server), 0);
  ck_assert_int_eq(write(release[1], "r", 1), 1);

  int rc = sl_pipeline_wait(p);
  ck_assert_msg(rc == 0, "%s", sl_pipeline_error(p));
  sl_pipeline_free(p);
  ck_assert_int_eq(d.distinct, n); /* nothing lost */
  printf("check_nats: server restart: %d messages, %d delivered twice\n", n,
         d.dups);

  /* The stream survived the kill whole. */
  client_open(&c);
  ck_assert_uint_eq(stream_msgs(&c, "RST"), (uint64_t)n);
  client_close(&c);
  nu_server_kill(&server); /* ours now: reap it */
  free(d.seen);
  for (int i = 0; i < 2; i++) {
    close(notify[i]);
    close(release[i]);
  }
}
END_TEST

/* A source of n messages ("message %d", msg_text) that, after pause_at
 * of them, pushes a checkpoint, which tells notify_fd when it has passed
 * the sink (every publish before it acknowledged), and pauses until
 * release_fd is readable. */
typedef struct {
  int n, next, pause_at;
  int release_fd, notify_fd;
} gen;

static void gen_passed(void *arg, int passed) {
  gen *g = arg;
  if (write(g->notify_fd, passed ? "p" : "d", 1) != 1)
    abort();
}

static int gen_read(sl_stage *s, void *ctx) {
  gen *g = ctx;
  if (g->next == g->n)
    return SL_EOF;
  if (g->next == g->pause_at) {
    sl_buf *mark;
    int rc = sl_buf_new_checkpoint(sl_stage_pool(s), gen_passed, g, &mark);
    if (rc || (rc = sl_stage_push(s, mark)) != 0)
      return rc;
    struct pollfd pfd[2] = {{.fd = g->release_fd, .events = POLLIN},
                            {.fd = sl_stage_cancel_fd(s), .events = POLLIN}};
    while (poll(pfd, 2, -1) < 0)
      ;
    if (pfd[1].revents)
      return SL_ECANCELED;
  }
  char buf[4096];
  size_t len = msg_text(buf, sizeof buf, g->next++);
  sl_buf *b;
  int rc = sl_buf_new_copy(sl_stage_pool(s), buf, len, &b);
  return rc ? rc : sl_stage_push(s, b);
}

START_TEST(test_server_restart_publishing) {
  client c;
  client_open(&c);
  add_stream(&c, "PUB", "pub.>", 0);
  client_close(&c);
  const int n = 3000;
  int notify[2], release[2];
  ck_assert_int_eq(pipe(notify), 0);
  ck_assert_int_eq(pipe(release), 0);
  gen g = {.n = n,
           .pause_at = n / 3,
           .release_fd = release[0],
           .notify_fd = notify[1]};
  sl_stage_ops ops = {.read = gen_read};
  sl_stage *src, *sink;
  ck_assert_int_eq(sl_stage_new(&src, "gen", &ops, &g), 0);
  sl_nats_sink_opts ko = {.conn.url = server.url,
                          .conn.reconnect_wait_ms = 50,
                          .stream = "PUB",
                          .subject = "pub.data",
                          .id_prefix = "rs-",
                          .max_pending = 64};
  ck_assert_int_eq(sl_nats_sink_new(&sink, &ko), 0);
  sl_pipeline_opts po = {.hwm = 16 << 10};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, &po), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, src, sink, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);

  /* A third published and acknowledged, the source paused. The server
   * is stopped (SIGSTOP) and the source released: the sink publishes
   * into the stopped server's socket until max_pending publishes wait
   * for acks, and then the ring into it fills. Those publishes are on
   * the wire when the server is killed: their acks will never come. The
   * server comes back on its port and storage. */
  char byte;
  ck_assert_int_eq(read(notify[0], &byte, 1), 1);
  ck_assert_int_eq(byte, 'p');
  ck_assert_int_eq(kill(-server.pid, SIGSTOP), 0);
  ck_assert_int_eq(write(release[1], "r", 1), 1);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(src), SL__WRITER), 0);
  ck_assert_int_eq(nu_server_kill_foreign(&server), 0);
  server.pid = 0;
  ck_assert_int_eq(nu_server_run(&server), 0);
  int rc = sl_pipeline_wait(p);
  ck_assert_msg(rc == 0, "%s", sl_pipeline_error(p));
  sl_pipeline_free(p);
  client_open(&c);
  uint64_t got = stream_msgs(&c, "PUB");
  ck_assert_uint_eq(got, (uint64_t)n); /* each once: ids deduplicate */
  client_close(&c);
  nu_server_kill(&server);
  for (int i = 0; i < 2; i++) {
    close(notify[i]);
    close(release[i]);
  }
}
END_TEST

static Suite *nats_suite(void) {
  Suite *s = suite_create("nats");
  TCase *tc = tcase_create("jetstream");
  tcase_add_unchecked_fixture(tc, server_setup, server_teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_slow_sink_stops_pulling);
  tcase_add_test(tc, test_publish_refused);
  tcase_add_test(tc, test_cancel_while_fetching);
  tcase_add_test(tc, test_redelivery_after_cancel);
  tcase_add_test(tc, test_creds_missing);
  tcase_add_test(tc, test_chunks_outlive_ack);
  suite_add_tcase(s, tc);
  if (system("openssl version >/dev/null 2>&1") == 0) {
    tc = tcase_create("tls");
    tcase_add_unchecked_fixture(tc, server_setup_tls, server_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tls);
    suite_add_tcase(s, tc);
  } else {
    printf("check_nats: openssl not found; the TLS case is left out\n");
  }
  /* A server of its own: the test kills it. */
  tc = tcase_create("restart");
  tcase_add_unchecked_fixture(tc, server_setup, server_teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_server_restart);
  suite_add_tcase(s, tc);
  tc = tcase_create("restart-publishing");
  tcase_add_unchecked_fixture(tc, server_setup, server_teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_server_restart_publishing);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  if (!nu_server_bin()) {
    printf("check_nats: nats-server not found; skipping (install the "
           "nats-server package, and libnats-dev for the client)\n");
    return 77;
  }
  return run_suite(nats_suite());
}
