/* SPDX-License-Identifier: MIT */
/*
 * NATS JetStream source and sink stages (include/sluice/nats.h says what
 * they promise).
 *
 * The source. Each read op asks the server for one batch: it waits until
 * its output ring admits a write, takes the ring's credit (high mark less
 * level, in bytes) as the fetch's MaxBytes, copies each payload into a
 * pooled buffer and pushes it, then pushes a checkpoint marker that owns
 * the batch's messages. The marker's callback runs on whichever thread
 * releases it last: passed, it acknowledges every message of the batch;
 * dropped, it only frees them, and the server redelivers them after the
 * consumer's ack wait. Callbacks may outlive the stage (a marker still in
 * a ring when the stage is destroyed is released afterwards by the
 * pipeline), so the connection, context and subscription live in a
 * reference-counted "link" that each pending batch holds; the last
 * reference flushes the acks out and closes the connection.
 *
 * One fetch waits at most fetch_wait_ms on the server, so a cancel is
 * seen between two fetches: the framework checks it before each read op.
 *
 * The sink. Each chunk is one js_PublishAsync with a message id; the
 * client blocks the publish (StallWait) while max_pending publishes await
 * their acks, and the sink retries while the pipeline runs, so the input
 * ring fills behind it. A refused publish reaches the error handler on
 * the client's thread, which records the first message under a mutex; the
 * sink's next op (at the latest its sync or final, which wait for every
 * ack with js_PublishAsyncComplete) fails with it.
 */
#include "sluice/nats.h"
#include "sluice.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "nats://127.0.0.1:4222"

/* ------------------------------------------------------------------------
 * Connection
 * ---------------------------------------------------------------------- */

typedef struct conn_cfg {
  char *url, *creds_file, *ca_file;
  int tls, max_reconnect;
  unsigned reconnect_wait_ms, timeout_ms;
} conn_cfg;

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

static int cfg_copy(conn_cfg *c, const sl_nats_conn_opts *o) {
  memset(c, 0, sizeof *c);
  c->url = strdup(o->url ? o->url : DEFAULT_URL);
  c->creds_file = dup_or_null(o->creds_file);
  c->ca_file = dup_or_null(o->ca_file);
  c->tls = o->tls;
  c->max_reconnect = o->max_reconnect ? o->max_reconnect : 60;
  c->reconnect_wait_ms = o->reconnect_wait_ms ? o->reconnect_wait_ms : 250;
  c->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
  if (!c->url || (o->creds_file && !c->creds_file) ||
      (o->ca_file && !c->ca_file))
    return SL_ENOMEM;
  return 0;
}

static void cfg_free(conn_cfg *c) {
  free(c->url);
  free(c->creds_file);
  free(c->ca_file);
}

/* The client's last error text, else its status text. */
static const char *nats_text(natsStatus s) {
  const char *t = nats_GetLastError(NULL);
  return t && *t ? t : natsStatus_GetText(s);
}

static int map_status(natsStatus s) {
  switch (s) {
  case NATS_OK:
    return 0;
  case NATS_NO_MEMORY:
    return SL_ENOMEM;
  case NATS_INVALID_ARG:
    return SL_EINVAL;
  default:
    return SL_EIO;
  }
}

/* Connect by c; on failure say why on stage and return the code.
 * reconnected, when not NULL, is called (on the client's thread) after
 * every reconnect. */
static int conn_open(sl_stage *stage, const conn_cfg *c, natsConnection **nc,
                     natsConnectionHandler reconnected, void *arg) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK)
    s = natsOptions_SetURL(o, c->url);
  if (s == NATS_OK)
    s = natsOptions_SetTimeout(o, c->timeout_ms);
  if (s == NATS_OK)
    s = natsOptions_SetMaxReconnect(o, c->max_reconnect);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectWait(o, c->reconnect_wait_ms);
  if (s == NATS_OK && reconnected)
    s = natsOptions_SetReconnectedCB(o, reconnected, arg);
  if (s == NATS_OK && c->creds_file)
    s = natsOptions_SetUserCredentialsFromFiles(o, c->creds_file, NULL);
  if (s == NATS_OK && c->tls)
    s = natsOptions_SetSecure(o, true);
  if (s == NATS_OK && c->tls && c->ca_file)
    s = natsOptions_LoadCATrustedCertificates(o, c->ca_file);
  if (s != NATS_OK) {
    sl_stage_set_error(stage, "nats options for %s: %s", c->url, nats_text(s));
    natsOptions_Destroy(o);
    return map_status(s) == SL_EIO ? SL_EINVAL : map_status(s);
  }
  s = natsConnection_Connect(nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    sl_stage_set_error(stage, "connect to %s: %s", c->url, nats_text(s));
    return map_status(s);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Source
 * ---------------------------------------------------------------------- */

/* What pending batches share with the stage. */
typedef struct link {
  atomic_uint refs;
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  atomic_uint_least64_t fetched, acked, dropped;
} link;

static void link_unref(link *l) {
  if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (l->nc)
    natsConnection_FlushTimeout(l->nc, 5000); /* the acks, out */
  natsSubscription_Destroy(l->sub);
  jsCtx_Destroy(l->js);
  natsConnection_Destroy(l->nc);
  free(l);
}

/* A fetched batch: its messages, kept (for their acks) until the batch
 * has been settled, acknowledged or left to be redelivered. The
 * references are counted so that chunks could hold the batch too. */
typedef struct batch {
  link *l;
  natsMsgList list;
  atomic_int refs; /* the checkpoint's */
} batch;

static void batch_unref(void *arg) {
  batch *b = arg;
  if (atomic_fetch_sub(&b->refs, 1) != 1)
    return;
  natsMsgList_Destroy(&b->list);
  link_unref(b->l);
  free(b);
}

static void batch_settle(void *arg, int passed) {
  batch *b = arg;
  if (passed) {
    for (int i = 0; i < b->list.Count; i++)
      if (b->list.Msgs[i])
        natsMsg_Ack(b->list.Msgs[i], NULL);
    atomic_fetch_add(&b->l->acked, (uint64_t)b->list.Count);
  } else {
    atomic_fetch_add(&b->l->dropped, 1);
  }
  batch_unref(b);
}

#define SOURCE_MAGIC 0x4e415453u /* "NATS" */

typedef struct source {
  unsigned magic;
  conn_cfg cfg;
  char *stream, *consumer, *subject;
  int max_batch;
  unsigned fetch_wait_ms, ack_wait_ms;
  uint64_t max_msgs, taken;
  int end_when_idle;
  int64_t floor; /* least MaxBytes: the largest message seen, and more */
  link *l;       /* NULL until connected */
} source;

static int source_connect(sl_stage *stage, source *src) {
  link *l = calloc(1, sizeof *l);
  if (!l)
    return SL_ENOMEM;
  atomic_init(&l->refs, 1);
  src->l = l;
  int rc = conn_open(stage, &src->cfg, &l->nc, NULL, NULL);
  if (rc)
    return rc;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = src->cfg.timeout_ms;
  natsStatus s = natsConnection_JetStream(&l->js, l->nc, &jo);
  if (s != NATS_OK) {
    sl_stage_set_error(stage, "jetstream at %s: %s", src->cfg.url,
                       nats_text(s));
    return map_status(s);
  }
  /* Bind to the durable consumer, creating it first when it is not
   * there. */
  jsErrCode jerr = 0;
  jsConsumerInfo *ci = NULL;
  s = js_GetConsumerInfo(&ci, l->js, src->stream, src->consumer, &jo, &jerr);
  jsConsumerInfo_Destroy(ci);
  ci = NULL;
  if (s == NATS_NOT_FOUND) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = src->consumer;
    cc.AckPolicy = js_AckExplicit;
    cc.FilterSubject = src->subject;
    if (src->ack_wait_ms)
      cc.AckWait = (int64_t)src->ack_wait_ms * 1000000;
    s = js_AddConsumer(&ci, l->js, src->stream, &cc, &jo, &jerr);
    jsConsumerInfo_Destroy(ci);
    /* Another process may have created it meanwhile. */
    if (jerr == JSConsumerNameExistErr || jerr == JSConsumerExistingActiveErr)
      s = NATS_OK;
  }
  if (s == NATS_OK) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = src->stream;
    so.Consumer = src->consumer;
    s = js_PullSubscribe(&l->sub, l->js, src->subject ? src->subject : "",
                         src->consumer, &jo, &so, &jerr);
  }
  if (s != NATS_OK) {
    sl_stage_set_error(
        stage, "pull consumer %s of stream %s (subject %s) at %s: %s",
        src->consumer, src->stream, src->subject ? src->subject : "*",
        src->cfg.url, nats_text(s));
    return map_status(s);
  }
  return 0;
}

/* Nothing pending on the server for our consumer (end_when_idle). */
static bool consumer_idle(source *src) {
  jsConsumerInfo *ci = NULL;
  if (js_GetConsumerInfo(&ci, src->l->js, src->stream, src->consumer, NULL,
                         NULL) != NATS_OK)
    return false;
  /* Nothing undelivered and nothing awaiting an ack (a message another
   * consumer of the durable holds may still come back). */
  bool idle = ci->NumPending == 0 && ci->NumAckPending == 0;
  jsConsumerInfo_Destroy(ci);
  return idle;
}

static int source_read(sl_stage *stage, void *ctx) {
  source *src = ctx;
  if (!src->l) {
    int rc = source_connect(stage, src);
    if (rc)
      return rc;
  }
  if (src->max_msgs && src->taken >= src->max_msgs)
    return SL_EOF;

  /* The ring's credit: wait until it admits a write, then ask for at
   * most what fits below its high mark. */
  sl_ring *out = sl_stage_output(stage);
  int rc = sl_ring_wait_writable(out);
  if (rc)
    return rc == SL_ECLOSED ? SL_ECANCELED : rc;
  sl_ring_stats rs;
  if ((rc = sl_ring_stats_get(out, &rs)) != 0)
    return rc;
  int64_t credit = rs.hwm > rs.level ? (int64_t)(rs.hwm - rs.level) : 1;
  int n = src->max_batch;
  if (src->max_msgs && src->max_msgs - src->taken < (uint64_t)n)
    n = (int)(src->max_msgs - src->taken);

  jsFetchRequest req;
  jsFetchRequest_Init(&req);
  req.Batch = n;
  /* A message larger than the credit would be refused by the server
   * ("Message Size Exceeds MaxBytes"); as a ring admits one chunk over
   * its mark, ask for at least the largest message seen so far. */
  req.MaxBytes = credit > src->floor ? credit : src->floor;
  req.Expires = (int64_t)src->fetch_wait_ms * 1000000;
  batch *b = calloc(1, sizeof *b);
  if (!b)
    return SL_ENOMEM;
  natsStatus s = natsSubscription_FetchRequest(&b->list, src->l->sub, &req);
  if (s == NATS_TIMEOUT || (s == NATS_OK && b->list.Count == 0)) {
    natsMsgList_Destroy(&b->list);
    free(b);
    if (src->end_when_idle && consumer_idle(src))
      return SL_EOF;
    return 0; /* called again, after the framework's cancel check */
  }
  if (s != NATS_OK && strstr(nats_text(s), "Exceeds MaxBytes")) {
    /* One message larger than the credit: take it alone, unbounded,
     * and ask for at least that much from now on. */
    natsMsgList_Destroy(&b->list);
    req.Batch = 1;
    req.MaxBytes = 0;
    s = natsSubscription_FetchRequest(&b->list, src->l->sub, &req);
    if (s == NATS_TIMEOUT) {
      free(b);
      return 0;
    }
  }
  if (s != NATS_OK) {
    natsMsgList_Destroy(&b->list);
    free(b);
    /* While the client reconnects, fetches fail: fetch again. Once the
     * connection is closed for good (reconnects exhausted), fail. */
    if (!natsConnection_IsClosed(src->l->nc) &&
        (s == NATS_CONNECTION_DISCONNECTED || s == NATS_NO_SERVER ||
         s == NATS_STALE_CONNECTION || s == NATS_NO_RESPONDERS))
      return 0;
    sl_stage_set_error(stage, "fetch from stream %s consumer %s: %s",
                       src->stream, src->consumer, nats_text(s));
    return map_status(s);
  }

  atomic_fetch_add(&src->l->fetched, (uint64_t)b->list.Count);
  src->taken += (uint64_t)b->list.Count;
  atomic_fetch_add(&src->l->refs, 1);
  b->l = src->l;
  atomic_init(&b->refs, 1);
  /* The checkpoint first, so that every failure below settles the batch
   * (unacknowledged) through it. */
  sl_buf *mark;
  rc = sl_buf_new_checkpoint(sl_stage_pool(stage), batch_settle, b, &mark);
  if (rc) {
    batch_settle(b, 0);
    return rc;
  }
  for (int i = 0; i < b->list.Count; i++) {
    natsMsg *m = b->list.Msgs[i];
    /* Its size as the server counts it, about: payload, subject, reply
     * subject and headers. */
    int64_t size = 2 * (int64_t)natsMsg_GetDataLength(m) + 1024;
    if (size > src->floor)
      src->floor = size;
    /* A copy of the payload, not a chunk over it (sl_buf_new_wrap): under
     * ThreadSanitizer, a test that kills and restarts the server saw the
     * client free a fetched message's payload while a chunk over it was
     * still being read. Until that is understood, the source copies. */
    sl_buf *chunk;
    rc = sl_buf_new_copy(sl_stage_pool(stage), natsMsg_GetData(m),
                         (size_t)natsMsg_GetDataLength(m), &chunk);
    if (rc == 0)
      rc = sl_stage_push(stage, chunk);
    if (rc) {
      sl_buf_unref(mark); /* dropped: nothing acknowledged */
      return rc;
    }
  }
  return sl_stage_push(stage, mark);
}

static void source_destroy(void *ctx) {
  source *src = ctx;
  if (src->l)
    link_unref(src->l);
  cfg_free(&src->cfg);
  free(src->stream);
  free(src->consumer);
  free(src->subject);
  free(src);
}

int sl_nats_source_new(sl_stage **out, const sl_nats_source_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!opts || !opts->stream || !*opts->stream || !opts->consumer ||
      !*opts->consumer || opts->max_batch < 0)
    return SL_EINVAL;
  source *src = calloc(1, sizeof *src);
  if (!src)
    return SL_ENOMEM;
  src->magic = SOURCE_MAGIC;
  int rc = cfg_copy(&src->cfg, &opts->conn);
  src->stream = strdup(opts->stream);
  src->consumer = strdup(opts->consumer);
  src->subject = dup_or_null(opts->subject);
  src->max_batch = opts->max_batch ? opts->max_batch : 256;
  src->fetch_wait_ms = opts->fetch_wait_ms ? opts->fetch_wait_ms : 100;
  src->ack_wait_ms = opts->ack_wait_ms;
  src->max_msgs = opts->max_msgs;
  src->end_when_idle = opts->end_when_idle;
  if (rc == 0 &&
      (!src->stream || !src->consumer || (opts->subject && !src->subject)))
    rc = SL_ENOMEM;
  if (rc == 0) {
    sl_stage_ops ops = {.read = source_read, .destroy = source_destroy};
    rc = sl_stage_new(out, opts->consumer, &ops, src);
  }
  if (rc)
    source_destroy(src);
  return rc;
}

int sl_nats_source_counts(const sl_stage *stage, uint64_t *fetched,
                          uint64_t *acked, uint64_t *dropped) {
  source *src = stage ? sl_stage_ctx(stage) : NULL;
  if (!src || src->magic != SOURCE_MAGIC)
    return SL_EINVAL;
  link *l = src->l;
  if (fetched)
    *fetched = l ? atomic_load(&l->fetched) : 0;
  if (acked)
    *acked = l ? atomic_load(&l->acked) : 0;
  if (dropped)
    *dropped = l ? atomic_load(&l->dropped) : 0;
  return 0;
}

/* ------------------------------------------------------------------------
 * Sink
 * ---------------------------------------------------------------------- */

typedef struct sink {
  conn_cfg cfg;
  char *stream, *subject, *id_prefix;
  int max_pending;
  sl_nats_msg_id_fn msg_id;
  void *msg_id_arg;
  uint64_t seq;
  natsConnection *nc;
  jsCtx *js;
  pthread_mutex_t mu; /* guards err, errtext: the client's thread sets them */
  int err;
  char errtext[200];
  atomic_uint reconnects; /* counted by the client's thread */
  unsigned resent;        /* reconnects whose lost publishes were resent */
} sink;

static void sink_reconnected(natsConnection *nc, void *closure) {
  (void)nc;
  sink *k = closure;
  atomic_fetch_add(&k->reconnects, 1);
}

/* After a reconnect, send again every publish still waiting for its ack:
 * those that were on the wire when the connection was lost will never be
 * acknowledged, and a wait for them would last for ever. Those whose ack
 * is merely late are sent twice; with a message id (id_prefix, msg_id)
 * the stream stores them once (within its duplicate window), without
 * one a message may be stored twice. Called where a publish or the wait
 * for acks timed out, on the stage's thread. */
static void sink_resend(sink *k) {
  unsigned now = atomic_load(&k->reconnects);
  if (now == k->resent)
    return;
  k->resent = now;
  natsMsgList lost;
  if (js_PublishAsyncGetPendingList(&lost, k->js) != NATS_OK)
    return; /* none pending */
  for (int i = 0; i < lost.Count; i++)
    js_PublishMsgAsync(k->js, &lost.Msgs[i], NULL); /* takes it on success */
  natsMsgList_Destroy(&lost);                       /* those not taken */
}

static void sink_on_error(jsCtx *js, jsPubAckErr *pae, void *closure) {
  (void)js;
  sink *k = closure;
  pthread_mutex_lock(&k->mu);
  if (!k->err) {
    k->err = SL_EIO;
    snprintf(k->errtext, sizeof k->errtext, "%s (%s, error %d)",
             pae->ErrText && *pae->ErrText ? pae->ErrText
                                           : natsStatus_GetText(pae->Err),
             natsStatus_GetText(pae->Err), (int)pae->ErrCode);
  }
  pthread_mutex_unlock(&k->mu);
}

static int sink_failed(sink *k) {
  pthread_mutex_lock(&k->mu);
  int err = k->err;
  pthread_mutex_unlock(&k->mu);
  return err;
}

/* The first refused publish, reported on stage. */
static int sink_check(sl_stage *stage, sink *k) {
  pthread_mutex_lock(&k->mu);
  int err = k->err;
  if (err)
    sl_stage_set_error(stage, "publish to stream %s subject %s: %s", k->stream,
                       k->subject, k->errtext);
  pthread_mutex_unlock(&k->mu);
  return err;
}

static int sink_connect(sl_stage *stage, sink *k) {
  int rc = conn_open(stage, &k->cfg, &k->nc, sink_reconnected, k);
  if (rc)
    return rc;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = k->cfg.timeout_ms;
  jo.PublishAsync.MaxPending = k->max_pending;
  jo.PublishAsync.ErrHandler = sink_on_error;
  jo.PublishAsync.ErrHandlerClosure = k;
  jo.PublishAsync.StallWait = 100;
  natsStatus s = natsConnection_JetStream(&k->js, k->nc, &jo);
  if (s != NATS_OK) {
    sl_stage_set_error(stage, "jetstream at %s (stream %s): %s", k->cfg.url,
                       k->stream, nats_text(s));
    return map_status(s);
  }
  return 0;
}

static int sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  sink *k = ctx;
  int rc = 0;
  if (sl_buf_is_object(in)) {
    sl_buf_unref(in);
    sl_stage_set_error(stage, "publish to stream %s subject %s: object chunk",
                       k->stream, k->subject);
    return SL_EINVAL;
  }
  if (!k->js && (rc = sink_connect(stage, k)) != 0) {
    sl_buf_unref(in);
    return rc;
  }
  char id[128] = "";
  if (k->msg_id)
    rc = k->msg_id(k->msg_id_arg, in, k->seq, id, sizeof id);
  else if (k->id_prefix)
    snprintf(id, sizeof id, "%s%llu", k->id_prefix, (unsigned long long)k->seq);
  if (rc) {
    sl_buf_unref(in);
    return rc;
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.ExpectStream = k->stream;
  if (id[0])
    po.MsgId = id;
  natsStatus s;
  /* A stall (max_pending in flight) times out after StallWait: retry, so
   * the input ring backs up, until the pipeline is cancelled. */
  while ((s = js_PublishAsync(k->js, k->subject, sl_buf_data(in),
                              (int)sl_buf_len(in), &po)) == NATS_TIMEOUT &&
         !sl_stage_cancelled(stage) && !sink_failed(k))
    sink_resend(k);
  sl_buf_unref(in);
  if ((rc = sink_check(stage, k)) != 0)
    return rc;
  if (s != NATS_OK) {
    if (sl_stage_cancelled(stage))
      return SL_ECANCELED;
    sl_stage_set_error(stage, "publish to stream %s subject %s: %s", k->stream,
                       k->subject, nats_text(s));
    return map_status(s);
  }
  k->seq++;
  return 0;
}

/* Wait for every publish's ack (flush markers and the end). */
static int sink_complete(sl_stage *stage, void *ctx) {
  sink *k = ctx;
  if (!k->js)
    return 0;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 200;
  natsStatus s;
  while ((s = js_PublishAsyncComplete(k->js, &po)) == NATS_TIMEOUT &&
         !sl_stage_cancelled(stage))
    sink_resend(k);
  int rc = sink_check(stage, k);
  if (rc)
    return rc;
  if (s != NATS_OK) {
    if (sl_stage_cancelled(stage))
      return SL_ECANCELED;
    sl_stage_set_error(stage, "publish to stream %s subject %s: %s", k->stream,
                       k->subject, nats_text(s));
    return map_status(s);
  }
  return 0;
}

static void sink_destroy(void *ctx) {
  sink *k = ctx;
  jsCtx_Destroy(k->js);
  natsConnection_Destroy(k->nc);
  pthread_mutex_destroy(&k->mu);
  cfg_free(&k->cfg);
  free(k->stream);
  free(k->subject);
  free(k->id_prefix);
  free(k);
}

int sl_nats_sink_new(sl_stage **out, const sl_nats_sink_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!opts || !opts->stream || !*opts->stream || !opts->subject ||
      !*opts->subject || opts->max_pending < 0)
    return SL_EINVAL;
  sink *k = calloc(1, sizeof *k);
  if (!k)
    return SL_ENOMEM;
  if (pthread_mutex_init(&k->mu, NULL) != 0) {
    free(k);
    return SL_ENOMEM;
  }
  int rc = cfg_copy(&k->cfg, &opts->conn);
  k->stream = strdup(opts->stream);
  k->subject = strdup(opts->subject);
  k->id_prefix = dup_or_null(opts->id_prefix);
  k->max_pending = opts->max_pending ? opts->max_pending : 256;
  k->msg_id = opts->msg_id;
  k->msg_id_arg = opts->msg_id_arg;
  if (rc == 0 &&
      (!k->stream || !k->subject || (opts->id_prefix && !k->id_prefix)))
    rc = SL_ENOMEM;
  if (rc == 0) {
    sl_stage_ops ops = {.write = sink_write,
                        .sync = sink_complete,
                        .final = sink_complete,
                        .destroy = sink_destroy};
    rc = sl_stage_new(out, opts->subject, &ops, k);
  }
  if (rc)
    sink_destroy(k);
  return rc;
}
