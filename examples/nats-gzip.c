/* SPDX-License-Identifier: MIT */
/*
 * nats-gzip — a distributed parallel gzip over NATS JetStream.
 *
 *   nats-gzip setup   URL                  the streams and the workers'
 *                                          consumer (idempotent)
 *   nats-gzip produce URL FILE [BLOCK]     cut FILE into blocks (default
 *                                          128 KiB), publish each to the
 *                                          work queue; prints the count
 *   nats-gzip work    URL [--idle-exit] [--hold-after K]
 *                                          pull blocks, compress each into
 *                                          an independent gzip member,
 *                                          publish it with its index
 *   nats-gzip collect URL COUNT OUT        write COUNT members in order to
 *                                          OUT (atomically); prints how
 *                                          many results the stream holds
 *   nats-gzip local   FILE [BLOCK]         the same members made here, to
 *                                          stdout: the reference output
 *
 * Streams: WORK (subject gz.work, work-queue retention: a block is gone
 * once a worker acknowledged it) and DONE (gz.done). A block or result is
 * one message: an 8-byte big-endian block index, then the bytes. Each
 * worker is a pipeline
 *
 *   nats source (WORK, consumer "workers") -> compress -> nats sink (DONE)
 *
 * and acknowledges a batch of blocks only once their results are stored
 * (the batch's checkpoint passed the sink, whose sync waits for the
 * publishes' acks). A worker killed at any moment leaves its
 * unacknowledged blocks to be redelivered to another worker after the ack
 * wait (2 s here); the results it had already published carry the
 * message id "r<index>", so the server drops the second copy. The
 * collector reads DONE through a consumer of its own, holds members that
 * arrive early, drops a second copy of an index should one pass the
 * server's duplicate window, and writes through an atomic file sink: a
 * collector that dies leaves no output, and a new one reads DONE again.
 * gzip and sgzip -d read the result (concatenated gzip members).
 *
 * --hold-after K makes a worker stop, holding its block, after K blocks
 * and say "holding" on stdout: a stand-in for a worker that hangs or is
 * killed mid-batch (the tests kill it there with SIGKILL).
 */
#include <sluice.h>
#include <sluice/nats.h>

#include <nats/nats.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define WORK "WORK"
#define DONE "DONE"
#define WORK_SUBJECT "gz.work"
#define DONE_SUBJECT "gz.done"
#define HDR 8

static void put_index(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
}

static uint64_t get_index(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

/* One independent gzip member of in[0..len) into out (room: cap), level
 * 6, no name or time in the header, so the same block gives the same
 * bytes anywhere. The member is one of sluice's block format (see
 * <sluice/pgzip.h>): its header's extra field holds the subfield 'S','L'
 * with the member's whole length, so that sgzip -d inflates the members
 * of the result on all its threads. Returns its length, 0 on failure. */
static size_t member(const unsigned char *in, size_t len, unsigned char *out,
                     size_t cap) {
  unsigned char extra[8] = {'S', 'L', 4, 0, 0, 0, 0, 0};
  gz_header h = {.extra = extra, .extra_len = sizeof extra, .os = 3};
  z_stream z = {0};
  if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return 0;
  if (deflateSetHeader(&z, &h) != Z_OK) {
    deflateEnd(&z);
    return 0;
  }
  z.next_in = (unsigned char *)in;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  int rc = deflate(&z, Z_FINISH);
  size_t n = cap - z.avail_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END || n < 20 || n > UINT32_MAX)
    return 0;
  for (int i = 0; i < 4; i++) /* the length, at byte 16 */
    out[16 + i] = (unsigned char)(n >> (8 * i));
  return n;
}

static size_t member_bound(size_t len) {
  return len + len / 1000 + 64 + 18 + 10;
}

static int fail(const char *what, natsStatus s) {
  const char *t = nats_GetLastError(NULL);
  fprintf(stderr, "nats-gzip: %s: %s\n", what,
          t && *t ? t : natsStatus_GetText(s));
  return 1;
}

/* A connection, retried for a few seconds while the server starts. */
static natsStatus connect_js(const char *url, natsConnection **nc, jsCtx **js) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK)
    s = natsOptions_SetURL(o, url);
  if (s == NATS_OK)
    s = natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
  if (s == NATS_OK)
    s = natsOptions_SetMaxReconnect(o, 100);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectWait(o, 50);
  if (s == NATS_OK)
    s = natsConnection_Connect(nc, o);
  if (s == NATS_NOT_YET_CONNECTED)
    s = NATS_OK;
  if (s == NATS_OK)
    s = natsConnection_FlushTimeout(*nc, 10000);
  natsOptions_Destroy(o);
  if (s == NATS_OK)
    s = natsConnection_JetStream(js, *nc, NULL);
  return s;
}

static int cmd_setup(const char *url) {
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsStatus s = connect_js(url, &nc, &js);
  if (s != NATS_OK)
    return fail(url, s);
  jsStreamConfig sc;
  const char *work[] = {WORK_SUBJECT}, *done[] = {DONE_SUBJECT};
  jsStreamConfig_Init(&sc);
  sc.Name = WORK;
  sc.Subjects = work;
  sc.SubjectsLen = 1;
  sc.Retention = js_WorkQueuePolicy;
  sc.Storage = js_FileStorage;
  jsErrCode jerr = 0;
  s = js_AddStream(NULL, js, &sc, NULL, &jerr);
  if (s == NATS_OK) {
    jsStreamConfig_Init(&sc);
    sc.Name = DONE;
    sc.Subjects = done;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Duplicates = (int64_t)600 * 1000000000; /* 10 min dedup window */
    s = js_AddStream(NULL, js, &sc, NULL, &jerr);
  }
  if (s == NATS_OK) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = "workers";
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)2 * 1000000000;
    s = js_AddConsumer(NULL, js, WORK, &cc, NULL, &jerr);
  }
  int rc = s == NATS_OK ? 0 : fail("setup", s);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return rc;
}

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    perror(path);
    if (f)
      fclose(f);
    return NULL;
  }
  unsigned char *d = malloc((size_t)st.st_size + 1);
  *len = d ? fread(d, 1, (size_t)st.st_size, f) : 0;
  fclose(f);
  return d;
}

static int cmd_produce(const char *url, const char *path, size_t block) {
  size_t len;
  unsigned char *d = slurp(path, &len);
  if (!d)
    return 1;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsStatus s = connect_js(url, &nc, &js);
  if (s != NATS_OK)
    return fail(url, s);
  unsigned char *msg = malloc(block + HDR);
  uint64_t n = 0;
  for (size_t off = 0; s == NATS_OK && (off < len || n == 0); off += block) {
    size_t take = len - off < block ? len - off : block;
    put_index(msg, n);
    memcpy(msg + HDR, d + off, take);
    char id[32];
    snprintf(id, sizeof id, "w%llu", (unsigned long long)n);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    s = js_PublishAsync(js, WORK_SUBJECT, msg, (int)(take + HDR), &po);
    n++;
  }
  if (s == NATS_OK)
    s = js_PublishAsyncComplete(js, NULL);
  int rc = s == NATS_OK ? 0 : fail("publish", s);
  if (rc == 0)
    printf("%llu\n", (unsigned long long)n);
  free(msg);
  free(d);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return rc;
}

/* The worker's transform: [index][block] -> [index][gzip member]. */
typedef struct {
  long hold_after, done;
} compressor;

static int compress_block(sl_stage *s, void *ctx, sl_buf *in) {
  compressor *c = ctx;
  size_t len = sl_buf_len(in);
  if (len < HDR) {
    sl_buf_unref(in);
    sl_stage_set_error(s, "a block shorter than its index");
    return SL_EDATA;
  }
  if (c->hold_after >= 0 && c->done >= c->hold_after) {
    printf("holding\n");
    fflush(stdout);
    for (;;)
      pause(); /* until killed */
  }
  sl_buf *out;
  int rc = sl_buf_new(sl_stage_pool(s), HDR + member_bound(len - HDR), &out);
  if (rc) {
    sl_buf_unref(in);
    return rc;
  }
  memcpy(sl_buf_data(out), sl_buf_data(in), HDR);
  size_t n = member(sl_buf_data(in) + HDR, len - HDR, sl_buf_data(out) + HDR,
                    sl_buf_cap(out) - HDR);
  sl_buf_unref(in);
  if (n == 0) {
    sl_buf_unref(out);
    sl_stage_set_error(s, "deflate failed");
    return SL_EIO;
  }
  sl_buf_set_len(out, HDR + n);
  c->done++;
  return sl_stage_push(s, out);
}

/* The result's message id: its block index. */
static int result_id(void *arg, const sl_buf *chunk, uint64_t seq, char *id,
                     size_t size) {
  (void)arg, (void)seq;
  if (sl_buf_len(chunk) < HDR)
    return SL_EDATA;
  snprintf(id, size, "r%llu",
           (unsigned long long)get_index(sl_buf_data(chunk)));
  return 0;
}

static int run(sl_pipeline *p) {
  int rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (rc)
    fprintf(stderr, "nats-gzip: %s\n",
            sl_pipeline_error(p) ? sl_pipeline_error(p) : sl_strerror(rc));
  return rc;
}

static int cmd_work(const char *url, int idle_exit, long hold_after) {
  sl_nats_source_opts so = {.conn.url = url,
                            .stream = WORK,
                            .consumer = "workers",
                            .max_batch = 8,
                            .end_when_idle = idle_exit};
  sl_nats_sink_opts ko = {.conn.url = url,
                          .stream = DONE,
                          .subject = DONE_SUBJECT,
                          .msg_id = result_id};
  compressor c = {.hold_after = hold_after};
  sl_stage_ops ops = {.transform = compress_block};
  sl_stage *src = NULL, *xf = NULL, *sink = NULL;
  sl_pipeline *p = NULL;
  int rc = sl_nats_source_new(&src, &so);
  if (rc == 0)
    rc = sl_stage_new(&xf, "compress", &ops, &c);
  if (rc == 0)
    rc = sl_nats_sink_new(&sink, &ko);
  if (rc == 0)
    rc = sl_pipeline_new(&p, NULL);
  if (rc == 0)
    rc = sl_pipeline_chain(p, src, xf, sink, NULL);
  if (rc) {
    fprintf(stderr, "nats-gzip: %s\n", sl_strerror(rc));
    sl_stage_free(src), sl_stage_free(xf), sl_stage_free(sink);
    sl_pipeline_free(p);
    return 1;
  }
  rc = run(p);
  sl_pipeline_free(p);
  return rc ? 1 : 0;
}

/* The collector's transform: members in index order, each once. */
typedef struct {
  uint64_t count, next, dups;
  sl_buf **held;
} reorder;

static int emit(sl_stage *s, sl_buf *in) {
  sl_buf *out;
  size_t len = sl_buf_len(in) - HDR;
  int rc = sl_buf_new_copy(sl_stage_pool(s), sl_buf_data(in) + HDR, len, &out);
  sl_buf_unref(in);
  return rc ? rc : sl_stage_push(s, out);
}

static int reorder_block(sl_stage *s, void *ctx, sl_buf *in) {
  reorder *r = ctx;
  uint64_t i = sl_buf_len(in) >= HDR ? get_index(sl_buf_data(in)) : UINT64_MAX;
  if (i >= r->count) {
    sl_buf_unref(in);
    sl_stage_set_error(s, "a result with no block index of 0..%llu",
                       (unsigned long long)r->count - 1);
    return SL_EDATA;
  }
  if (i < r->next || r->held[i]) {
    r->dups++;
    sl_buf_unref(in);
    return 0;
  }
  r->held[i] = in;
  while (r->next < r->count && r->held[r->next]) {
    sl_buf *b = r->held[r->next];
    r->held[r->next++] = NULL;
    int rc = emit(s, b);
    if (rc)
      return rc;
  }
  return 0;
}

static int reorder_flush(sl_stage *s, void *ctx) {
  reorder *r = ctx;
  if (r->next == r->count)
    return 0;
  sl_stage_set_error(s, "block %llu of %llu never arrived",
                     (unsigned long long)r->next, (unsigned long long)r->count);
  return SL_EDATA;
}

static int cmd_collect(const char *url, uint64_t count, const char *path) {
  char consumer[64];
  snprintf(consumer, sizeof consumer, "collect-%ld", (long)getpid());
  sl_nats_source_opts so = {
      .conn.url = url, .stream = DONE, .consumer = consumer, .max_msgs = count};
  reorder r = {.count = count,
               .held = calloc(count ? count : 1, sizeof(sl_buf *))};
  sl_stage_ops ops = {.transform = reorder_block, .flush = reorder_flush};
  sl_fd_opts fo = {.flags = SL_FILE_OVERWRITE};
  sl_stage *src = NULL, *xf = NULL, *sink = NULL;
  sl_pipeline *p = NULL;
  int rc = r.held ? sl_nats_source_new(&src, &so) : SL_ENOMEM;
  if (rc == 0)
    rc = sl_stage_new(&xf, "reorder", &ops, &r);
  if (rc == 0)
    rc = sl_file_sink_new(&sink, path, &fo);
  if (rc == 0)
    rc = sl_pipeline_new(&p, NULL);
  if (rc == 0)
    rc = sl_pipeline_chain(p, src, xf, sink, NULL);
  if (rc) {
    fprintf(stderr, "nats-gzip: %s: %s\n", path, sl_strerror(rc));
    sl_stage_free(src), sl_stage_free(xf), sl_stage_free(sink);
    sl_pipeline_free(p);
    free(r.held);
    return 1;
  }
  rc = run(p);
  sl_pipeline_free(p);
  for (uint64_t i = 0; i < count; i++)
    sl_buf_unref(r.held[i]);
  free(r.held);
  if (rc)
    return 1;

  /* How many results the stream holds: one per block when the server
   * deduplicated every second copy. */
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  jsStreamInfo *si = NULL;
  natsStatus s = connect_js(url, &nc, &js);
  if (s == NATS_OK)
    s = js_GetStreamInfo(&si, js, DONE, NULL, NULL);
  if (s == NATS_OK)
    printf("blocks %llu stored %llu dropped %llu\n", (unsigned long long)count,
           (unsigned long long)si->State.Msgs, (unsigned long long)r.dups);
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return s == NATS_OK ? 0 : fail("stream info", s);
}

static int cmd_local(const char *path, size_t block) {
  size_t len;
  unsigned char *d = slurp(path, &len);
  if (!d)
    return 1;
  unsigned char *out = malloc(member_bound(block));
  for (size_t off = 0; off < len || off == 0; off += block) {
    size_t take = len - off < block ? len - off : block;
    size_t n = member(d + off, take, out, member_bound(block));
    if (n == 0 || fwrite(out, 1, n, stdout) != n) {
      fprintf(stderr, "nats-gzip: local: write failed\n");
      return 1;
    }
    if (len == 0)
      break;
  }
  free(out);
  free(d);
  return fflush(stdout) == 0 ? 0 : 1;
}

static int usage(void) {
  fprintf(stderr, "usage: nats-gzip setup URL\n"
                  "       nats-gzip produce URL FILE [BLOCK]\n"
                  "       nats-gzip work URL [--idle-exit] [--hold-after K]\n"
                  "       nats-gzip collect URL COUNT OUT\n"
                  "       nats-gzip local FILE [BLOCK]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 3)
    return usage();
  const char *cmd = argv[1];
  size_t block = 128 * 1024;
  if (!strcmp(cmd, "setup"))
    return cmd_setup(argv[2]);
  if (!strcmp(cmd, "produce") && argc >= 4) {
    if (argc > 4)
      block = strtoul(argv[4], NULL, 0);
    return block ? cmd_produce(argv[2], argv[3], block) : usage();
  }
  if (!strcmp(cmd, "work")) {
    int idle = 0;
    long hold = -1;
    for (int i = 3; i < argc; i++) {
      if (!strcmp(argv[i], "--idle-exit"))
        idle = 1;
      else if (!strcmp(argv[i], "--hold-after") && i + 1 < argc)
        hold = strtol(argv[++i], NULL, 10);
      else
        return usage();
    }
    return cmd_work(argv[2], idle, hold);
  }
  if (!strcmp(cmd, "collect") && argc == 5)
    return cmd_collect(argv[2], strtoull(argv[3], NULL, 10), argv[4]);
  if (!strcmp(cmd, "local")) {
    if (argc > 3)
      block = strtoul(argv[3], NULL, 0);
    return block ? cmd_local(argv[2], block) : usage();
  }
  return usage();
}
