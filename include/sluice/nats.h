/* SPDX-License-Identifier: MIT */
/*
 * sluice/nats.h — NATS JetStream source and sink stages (libsluice_nats,
 * built when configure finds the NATS C client, libnats; link with
 * -lsluice_nats -lsluice -lnats).
 *
 *   sl_nats_source_new  pulls messages from a durable pull consumer of a
 *                       JetStream stream; each message payload becomes one
 *                       byte chunk
 *   sl_nats_sink_new    publishes each chunk as one message to a subject,
 *                       asynchronously, with a message id for the server's
 *                       deduplication
 *
 * Flow control across machines. The source asks the server for a batch
 * sized by the credit of its output ring: at most (high mark - level)
 * bytes (jsFetchRequest.MaxBytes) and max_batch messages, and waits for
 * the ring to drain to below its high mark before it asks again. A slow
 * pipeline therefore stops pulling, and the backlog stays on the server
 * (the consumer's NumPending grows), not in this process. The sink bounds
 * the publishes awaiting their acks (max_pending); once that many are in
 * flight it stops reading its input ring, which fills, so a slow server
 * backpressures the pipeline.
 *
 * At least once, end to end. After each fetched batch the source pushes a
 * checkpoint marker (sl_buf_new_checkpoint); the batch's messages are
 * acknowledged (each one, AckExplicit) only when that marker has passed the
 * sync of every sink of the pipeline, that is when everything derived
 * from the batch has left every sink (a NATS sink's sync waits for the
 * acks of all its publishes). A marker dropped by a failure or a cancel
 * acknowledges nothing: the server redelivers those messages, after the
 * consumer's ack wait, to whoever pulls next. Output may then be produced
 * twice; a NATS sink given message ids (the same input giving the same id)
 * has the server drop the duplicates within the stream's duplicate window.
 *
 * Copies. The source copies each payload once into a pooled byte buffer
 * and keeps the natsMsg (for its ack) until the batch's checkpoint is
 * settled. (A chunk over the payload itself, sl_buf_new_wrap, was tried:
 * under ThreadSanitizer a server restart showed the client freeing a
 * fetched payload while such a chunk was read, so the copy stays.) The
 * sink's publish is copied by the client into its outgoing buffer.
 *
 * Connections. Each stage opens its own connection on its thread, at its
 * first op, so errors (an unreachable server, a missing stream) are
 * reported by the pipeline as "<stage>: ..." naming the URL, stream and
 * subject. The client reconnects after a lost connection by the policy in
 * sl_nats_conn_opts; publishes and fetches during the outage fail or time
 * out and are retried while the pipeline runs. A server that dies and
 * comes back (its storage kept) loses nothing: the source's
 * unacknowledged messages are delivered again, and the sink sends again,
 * after a reconnect, every publish whose ack has not come (the connection
 * took it); with message ids (id_prefix or msg_id) the stream stores each
 * once, without them one may be stored twice.
 */
#ifndef SLUICE_NATS_H
#define SLUICE_NATS_H

#include <sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_nats_conn_opts {
  const char *url;        /* NULL: "nats://127.0.0.1:4222"; a comma-separated
                           * list names several servers of a cluster */
  const char *creds_file; /* user credentials (JWT and seed) file, or NULL */
  int tls;                /* 1: require TLS (the client must be built with
                           * it, else the stage fails saying so) */
  const char *ca_file;    /* with tls: trusted CA certificates, or NULL */
  int max_reconnect;      /* reconnect attempts after a lost connection:
                           * 0 picks 60, -1 for ever */
  unsigned reconnect_wait_ms; /* between attempts; 0 picks 250 */
  unsigned timeout_ms; /* connect and JetStream API calls; 0 picks 5000 */
} sl_nats_conn_opts;

typedef struct sl_nats_source_opts {
  sl_nats_conn_opts conn;
  const char *stream;     /* the stream; required */
  const char *consumer;   /* durable pull consumer name; required. Bound to
                           * when it exists, else created (AckExplicit) */
  const char *subject;    /* filter subject for a new consumer; NULL: the
                           * whole stream */
  int max_batch;          /* most messages per fetch; 0 picks 256 */
  unsigned fetch_wait_ms; /* how long one fetch waits on the server for
                           * messages; 0 picks 100. It also bounds how
                           * long a cancel waits for the source */
  unsigned ack_wait_ms;   /* a new consumer's ack wait (redelivery delay of
                           * an unacknowledged message); 0: the server's
                           * (30 s) */
  uint64_t max_msgs;      /* end the stream after this many messages; 0:
                           * never */
  int end_when_idle;      /* 1: end the stream when a fetch gets nothing
                           * and the consumer has nothing undelivered and
                           * nothing awaiting an ack */
} sl_nats_source_opts;

/* Make a chunk's message id for the sink: write a NUL-terminated id of at
 * most size - 1 bytes into id (an empty id sends none). chunk is the
 * chunk about to be published, seq its number in this stage's stream
 * from 0. Returns 0, or a negative SL_E* code that fails the pipeline.
 * Runs on the sink's thread. */
typedef int (*sl_nats_msg_id_fn)(void *arg, const sl_buf *chunk, uint64_t seq,
                                 char *id, size_t size);

typedef struct sl_nats_sink_opts {
  sl_nats_conn_opts conn;
  const char *stream;       /* the stream the subject is stored in; required:
                             * every publish expects it (ExpectStream) and
                             * errors name it */
  const char *subject;      /* required */
  int max_pending;          /* publishes awaiting their acks; 0 picks 256 */
  const char *id_prefix;    /* without msg_id: the id is id_prefix followed by
                             * the chunk's sequence number; NULL: no id */
  sl_nats_msg_id_fn msg_id; /* or the id from this function */
  void *msg_id_arg;
} sl_nats_sink_opts;

/* A source stage pulling from opts->stream through the durable pull
 * consumer opts->consumer, as described above. opts is copied (its
 * strings too). On success *out owns the stage until it joins a
 * pipeline. Returns 0; SL_EINVAL (out or opts NULL, stream or consumer
 * missing); SL_ENOMEM. Connection errors come later, from the running
 * stage. Any thread. */
SL_EXTERN int sl_nats_source_new(sl_stage **out,
                                 const sl_nats_source_opts *opts);

/* Counters of a NATS source: messages fetched, messages acknowledged
 * (their checkpoint passed every sink), checkpoints dropped. Any thread;
 * final once the pipeline has been freed or its last checkpoint settled.
 * Returns 0, SL_EINVAL (stage NULL or not a NATS source). */
SL_EXTERN int sl_nats_source_counts(const sl_stage *stage, uint64_t *fetched,
                                    uint64_t *acked, uint64_t *dropped);

/* A sink stage publishing each chunk to opts->subject with asynchronous
 * JetStream publish: at most max_pending unacknowledged, all of them
 * waited for at each flush marker (its sync) and at the end (final). A
 * publish the server refuses fails the pipeline with the server's message,
 * the stream and the subject. Byte chunks only (an object chunk is
 * SL_EINVAL). opts is copied. Returns 0; SL_EINVAL (out or opts NULL,
 * stream or subject missing); SL_ENOMEM. Any thread. */
SL_EXTERN int sl_nats_sink_new(sl_stage **out, const sl_nats_sink_opts *opts);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_NATS_H */
