/* SPDX-License-Identifier: MIT */
/*
 * sluice/bridge.h — feeding a pipeline from an event loop, and reading its
 * output there, without ever blocking.
 *
 * A server's event loop (epoll, poll, libuv) must never sleep on a
 * condition variable, yet it is where request bodies arrive and where
 * response bodies leave. The two bridges are stages with no thread of
 * their own: the caller's thread is their producer or consumer, and reads
 * or writes the ring next to the bridge directly, so no bytes are copied
 * between stages and no extra thread runs.
 *
 *   sl_writer  a source: the loop writes into the stage's output ring.
 *              sl_writer_write returns 1 (keep writing) or 0 (the level is
 *              at the high mark: stop), Node's write() returning false;
 *              the drain arrives as a readable descriptor
 *              (sl_writer_fd) and, if set, as a callback. A write before
 *              the drain is refused with SL_EBUSY (SL_AGAIN is 1, which
 *              here means "taken").
 *   sl_reader  a sink: the loop reads the stage's input ring. Its
 *              descriptor (sl_reader_fd) is readable while a chunk, the
 *              end of the stream or a failure is ready.
 *
 *   sl_stage *ws, *rs, *gz;
 *   sl_writer *w;
 *   sl_reader *r;
 *   sl_writer_new(&ws, &w, "request");
 *   sl_gzip_new(&gz, NULL);
 *   sl_reader_new(&rs, &r, "response");
 *   sl_pipeline_chain(p, ws, gz, rs, NULL);
 *   sl_pipeline_start(p);
 *   ... in the loop: sl_writer_write(w, data, n) until it returns 0, then
 *   poll sl_writer_fd(w); sl_reader_read(r, &buf) until SL_AGAIN, then
 *   poll sl_reader_fd(r) ...
 *   sl_writer_end(w);  ... read until SL_EOF ...
 *   sl_pipeline_wait(p); sl_pipeline_free(p);
 *
 * Ownership. sl_writer_new and sl_reader_new make a stage and its bridge
 * handle; the handle belongs to the stage and is freed with it (by
 * sl_stage_free before the stage joins a pipeline, by sl_pipeline_free
 * after). A writer stage takes exactly one consumer and a reader stage
 * exactly one producer: linked to more, sl_pipeline_start fails with
 * SL_EINVAL.
 *
 * Threads. Each bridge end is used by one thread at a time, the event
 * loop's: the sl_writer_* calls on a writer from one thread, the
 * sl_reader_* calls on a reader from one thread (the two may differ).
 * sl_writer_fd and sl_reader_fd may be called from any thread. The
 * callbacks run on the pipeline's threads (or the thread that fails or
 * cancels it) with no lock held: they may call sl_pipeline_cancel or
 * wake the loop, but must not call the bridge's own functions.
 *
 * The pipeline's outcome. The writer is a participant of the pipeline,
 * like a stage thread: it ends at sl_writer_end (or sl_writer_abort, or
 * when the pipeline fails or is cancelled, sl_pipeline_free included).
 * sl_pipeline_wait returns, and the finished callback fires, once every
 * stage thread and the writer have ended, so "finished with 0" means every
 * byte given to the writer was processed. Never call sl_pipeline_wait on
 * the loop's thread before ending the writer: it would wait for itself.
 * The finished callback may then run on the thread that ends the writer,
 * cancels the pipeline or calls sl_reader_done.
 * The reader is not a participant: the pipeline may finish while chunks
 * wait in the reader's ring; they stay readable, then sl_reader_read
 * returns SL_EOF. What is never read is released by sl_pipeline_free.
 *
 * Finishing early. A consumer that has had enough calls sl_reader_done:
 * as a stage whose op returned SL_DONE (see sl_stage_ops), the stages
 * feeding it are stopped and the pipeline ends with 0 unless something
 * else failed; sl_reader_close is the consumer going away, a failure.
 * When every stage after a writer finished early, the writer is stopped:
 * its part ends by itself, its descriptor turns readable for good, and
 * its calls return SL_DONE.
 *
 * Flush markers (sl_writer_flush, sl_stage_push_flush) travel with the
 * data and make every stage they pass push out what it holds; a reader
 * drops them: its caller never sees one.
 *
 * Descriptors. Both are eventfds (non-blocking pipes where eventfd does
 * not exist), owned by the bridge: poll them for readability, never read,
 * write or close them. They are made by sl_writer_new / sl_reader_new and
 * closed by the stage's destruction.
 */
/* The umbrella first, outside the guard (see sluice/zlib.h). */
#include <sluice.h>

#ifndef SLUICE_BRIDGE_H
#define SLUICE_BRIDGE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_writer sl_writer;
typedef struct sl_reader sl_reader;

/* ------------------------------------------------------------------------
 * sl_writer — a source stage whose producer is the caller's thread
 * ---------------------------------------------------------------------- */

/* Make a source stage named name (copied; NULL picks "writer") with no
 * thread: the caller's thread writes into its output ring directly. On
 * success *stage owns the stage (until it joins a pipeline, as any stage)
 * and *w is the stage's bridge, valid as long as the stage. The ring's
 * marks are the stage's output options (sl_stage_set_output) or the
 * pipeline's. Returns 0; SL_EINVAL (stage or w NULL, name empty);
 * SL_ENOMEM; SL_EIO (no descriptor could be made). Any thread. */
SL_EXTERN int sl_writer_new(sl_stage **stage, sl_writer **w, const char *name);

/* Copy len bytes from data into pooled buffers (cut at the pipeline's
 * buffer size) and queue them, never waiting. The whole of data is taken
 * or none of it. Returns
 *   1           taken; the level is below the high mark: keep writing.
 *   0           taken; the level is now at or above the high mark: stop
 *               and wait for the drain (sl_writer_fd readable, or the
 *               drain callback). Node's write() returning false. When the
 *               consumer has already pulled the level back below the mark
 *               by the time the write returns, it returns 1 instead. A
 *               write larger than the room left is taken whole: what does
 *               not fit waits in the writer and is queued by the consumer
 *               as the ring drains, and the drain is announced only once
 *               all of it is queued. So the first call after a drain is
 *               always taken, and memory stays within the high mark plus
 *               one write.
 *   SL_EBUSY    refused, nothing taken: called after a 0 and before the
 *               drain. The pipeline is not affected. (Not SL_AGAIN, which
 *               is 1.)
 *   SL_DONE     nothing taken, nor ever will be: every stage after the
 *               writer finished early (SL_DONE) and the writer is stopped
 *               (what it had queued is released). Its part of the
 *               pipeline has ended; sl_writer_end still may be called
 *               and returns 0. Not an error: the pipeline ends with 0
 *               unless something else failed.
 *   SL_ECLOSED  after sl_writer_end.
 *   < 0         after sl_writer_abort(w, err): the pipeline's error, err
 *               itself when the abort failed the pipeline, or err when
 *               the pipeline had finished before the abort (as a ring
 *               returns its abort code after sl_ring_abort).
 *   < 0         the pipeline's error (sl_pipeline_wait's code: the
 *               failing stage's, SL_ECANCELED after a cancel) once it
 *               failed, also when the failure comes while this call
 *               queues (the chunks of data queued before it are lost
 *               with the rest of the stream); SL_ENOMEM (nothing taken);
 *               SL_EINVAL (w NULL, data NULL with len > 0, an
 *               object-mode output, or the pipeline not started).
 * len 0 queues nothing and reports the state: 1, SL_EBUSY or an error.
 * The first call after the drain takes the drain: it clears
 * sl_writer_fd. The writer's thread. */
SL_EXTERN int sl_writer_write(sl_writer *w, const void *data, size_t len);

/* A byte buffer from the pipeline's pool with room for at least cap bytes
 * (cap 0: the pipeline's buffer size), for a caller that fills it in
 * place and queues it with sl_writer_write_buf. On 0 the caller owns
 * *buf. Returns 0, SL_EINVAL (NULL, or not yet in a pipeline),
 * SL_ENOMEM. The writer's thread. */
SL_EXTERN int sl_writer_buf(sl_writer *w, size_t cap, sl_buf **buf);

/* Queue buf without copying. Returns as sl_writer_write; on 1 and 0 the
 * pipeline owns buf, on every other return the caller still does.
 * SL_EINVAL for an object buffer in a byte ring, and the reverse (an
 * object-mode output, set with sl_stage_set_output, takes object buffers
 * only through this call; its marks then count chunks). The writer's
 * thread. */
SL_EXTERN int sl_writer_write_buf(sl_writer *w, sl_buf *buf);

/* The drain descriptor: it becomes readable once per drain (after a
 * write returned 0, when the consumer has pulled the level down to the
 * low mark), and when the pipeline fails or is cancelled, after which it
 * stays readable. The library clears it: the first sl_writer_write,
 * _write_buf, _flush, _ack or _end after the drain takes the drain and
 * makes it unreadable, before it returns. So it is readable exactly from
 * each drain to the next call, once per drain, and a level-triggered loop
 * may keep it registered. Returns the descriptor, or SL_EINVAL. Any
 * thread. */
SL_EXTERN int sl_writer_fd(const sl_writer *w);

/* Take a drain without writing (a loop that saw the descriptor readable
 * but has nothing to write yet): clears the descriptor. Returns 0 when
 * writes are taken again (or never stopped), SL_AGAIN while the drain has
 * not come, SL_DONE once stopped, SL_ECLOSED after end, or the error as
 * sl_writer_write returns it (after an abort, or a failure). The writer's
 * thread. */
SL_EXTERN int sl_writer_ack(sl_writer *w);

/* Call cb(w, arg) once per drain, on the consuming stage's thread with no
 * lock held, and once when the pipeline fails while a write is refused
 * for want of a drain (from the thread that fails it). Before
 * sl_pipeline_start. cb NULL removes it. Returns 0, SL_EINVAL, SL_EBUSY
 * once started. Any thread. */
SL_EXTERN int sl_writer_on_drain(sl_writer *w,
                                 void (*cb)(sl_writer *w, void *arg),
                                 void *arg);

/* Queue a flush marker after what was written: each stage it reaches
 * pushes out what it holds (a compressor ends its deflate block), so the
 * bytes written so far reach the reader. Returns as sl_writer_write (a
 * marker weighs nothing, so 0 only when the ring's slots are all taken,
 * or the level was at the mark already). The writer's thread. */
SL_EXTERN int sl_writer_flush(sl_writer *w);

/* End of stream: the writer's part of the pipeline ends (see "The
 * pipeline's outcome"), once what a paused write left waiting is queued.
 * Allowed while writes are refused for want of a drain. Returns 0 (also
 * once stopped, see SL_DONE); SL_ECLOSED when already ended (by an end
 * or an abort); the pipeline's error when it failed (the writer has ended
 * too); SL_EINVAL (w NULL, not started). The writer's thread. */
SL_EXTERN int sl_writer_end(sl_writer *w);

/* Fail the pipeline with err (negative), reported as "<writer>: <message
 * of err>", unless it already failed or finished: Node's
 * writable.destroy(err). The writer has ended.
 *
 * After sl_writer_end too: until the pipeline has finished (its last
 * stage thread has ended: the finished callback has run or is running,
 * sl_pipeline_wait no longer waits), the stages are still at work on what
 * was written, and an abort fails the pipeline with err, however far the
 * stream had got; as in Node, where destroy(err) after end() but before
 * 'finish' destroys the stream: 'error' comes, 'finish' never does. Once
 * it has finished, an abort changes nothing: its outcome stays 0.
 *
 * From then on sl_writer_write, _write_buf, _flush and _ack return err
 * (or the pipeline's own error, when it had failed before), and
 * sl_writer_end SL_ECLOSED.
 *
 * Returns 0 (also when the pipeline had already failed or finished),
 * SL_EINVAL (w NULL, err >= 0, not started). The writer's thread. */
SL_EXTERN int sl_writer_abort(sl_writer *w, int err);

/* ------------------------------------------------------------------------
 * sl_reader — a sink stage whose consumer is the caller's thread
 * ---------------------------------------------------------------------- */

/* Make a sink stage named name (copied; NULL picks "reader") with no
 * thread: the caller's thread reads its input ring directly. Ownership as
 * sl_writer_new. Returns 0, SL_EINVAL, SL_ENOMEM, SL_EIO. Any thread. */
SL_EXTERN int sl_reader_new(sl_stage **stage, sl_reader **r, const char *name);

/* Take the next chunk without waiting. Returns
 *   0          *out is a byte chunk (or an object, in an object-mode
 *              ring) the caller now owns: release it with sl_buf_unref.
 *              Never a flush marker.
 *   SL_AGAIN   nothing is ready (*out NULL).
 *   SL_EOF     the stream ended and every chunk was read; again on every
 *              later call.
 *   < 0        the pipeline's error once it failed (chunks not yet read
 *              are dropped); SL_EPIPE after sl_reader_close; SL_EINVAL
 *              (NULL, not started).
 * A call that returns SL_AGAIN clears sl_reader_fd. The reader's thread. */
SL_EXTERN int sl_reader_read(sl_reader *r, sl_buf **out);

/* Copy up to cap bytes into dst, from as many ready chunks as fit; a
 * chunk read in part is kept for the next call. Returns 0 with *n > 0
 * bytes copied, or as sl_reader_read (SL_AGAIN, SL_EOF, errors) with *n
 * 0; SL_EINVAL also for cap 0 or a chunk in object mode. Do not mix it
 * with sl_reader_read while a chunk is kept (SL_EINVAL). The reader's
 * thread. */
SL_EXTERN int sl_reader_read_bytes(sl_reader *r, void *dst, size_t cap,
                                   size_t *n);

/* The ready descriptor: readable while a chunk, the end of the stream or
 * a failure is ready, and from then until a read returns SL_AGAIN, which
 * clears it; once SL_EOF or an error is ready it stays readable. It is
 * readable with nothing ready only in one case: a read that was not
 * prompted by it took a chunk whose arrival it was about to announce;
 * the next read returns SL_AGAIN and clears it. Returns the descriptor,
 * or SL_EINVAL. Any thread. */
SL_EXTERN int sl_reader_fd(const sl_reader *r);

/* Call cb(r, arg) each time something becomes ready after a read returned
 * SL_AGAIN (the moments sl_reader_fd turns readable), on the producing
 * stage's thread (or the one that fails the pipeline) with no lock held.
 * Before sl_pipeline_start. cb NULL removes it. Returns 0, SL_EINVAL,
 * SL_EBUSY once started. Any thread. */
SL_EXTERN int sl_reader_on_ready(sl_reader *r,
                                 void (*cb)(sl_reader *r, void *arg),
                                 void *arg);

/* The consumer goes away early (the client hung up): unless the stream
 * was read to SL_EOF, or the pipeline already failed or finished, the
 * pipeline fails with SL_EPIPE, reported as "<reader>: consumer closed
 * before the end of the stream", as a sink whose pipe closed would.
 * Chunks not read are released. Later reads return SL_EPIPE. Returns 0,
 * or SL_EINVAL (NULL, not started). The reader's thread. */
SL_EXTERN int sl_reader_close(sl_reader *r);

/* The consumer has had enough and stops early with success (Node's
 * `for await ... break`, take(n)): the reader's SL_DONE. The chunks not
 * read are released, and the stages feeding the reader are stopped as
 * sl_stage_ops describes for an op returning SL_DONE; the pipeline ends
 * with 0 unless something else failed (before, or while the stages
 * stop). A no-op on the pipeline when the stream was read to SL_EOF or
 * the pipeline already failed or finished. Later reads return SL_EOF; a
 * later sl_reader_close or sl_reader_done does nothing. Returns 0, or
 * SL_EINVAL (NULL, not started). The reader's thread. */
SL_EXTERN int sl_reader_done(sl_reader *r);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_BRIDGE_H */
