/* SPDX-License-Identifier: MIT */
/*
 * sl_writer and sl_reader — the bridges between an event loop and a
 * pipeline.
 *
 * Each bridge is a stage with no thread (stage->threadless): the caller's
 * thread is the writer of the writer stage's output ring, or the reader of
 * the reader stage's input ring, and uses the rings' non-blocking calls.
 * Where a stage thread would sleep, the bridge arms the ring's note
 * instead (sl__ring_arm), and the other side calls the note once, with no
 * ring lock held: the writer's note at the drain, the reader's when a
 * chunk, the end of the stream or an abort arrives. A note makes the
 * bridge's descriptor readable and calls the user's callback.
 *
 * Writer. A write is cut into pooled buffers of at most the pipeline's
 * buffer size, all made before any is queued (so ENOMEM takes nothing),
 * then queued in order. The ring admits a chunk while its level is below
 * the high mark, so the tail of a large write may not fit: it waits in
 * the writer's pending list, the write returns 0 ("taken, stop") and the
 * caller is paused: calls return SL_EBUSY until the drain.
 *
 * The producer role. Exactly one thread writes the ring at a time. The
 * caller's thread has the role until an arm succeeds; from then on the
 * note has it (note_owns), and at each drain, on the consumer's thread,
 * it queues what is pending and re-arms when that does not fit. Only when
 * all is queued and the level is below the mark does it announce the
 * drain (descriptor, callback) and give the role back, or, when the
 * writer has ended meanwhile, close the ring. The hand-over is ordered by
 * the ring's lock (the arm, then the note's call) and mu (note_owns,
 * drained and ended are read and written under it), so an end either
 * closes the ring itself or leaves it to the note, never both or neither.
 *
 * Descriptors. A writer's drain poke and its clearing happen under mu
 * together with `drained`, so a caller that saw the descriptor readable
 * always finds the drain taken by its next call, and that call clears the
 * descriptor exactly. A failure pokes it for good. A reader's descriptor
 * is cleared only by a read that finds nothing, before it arms the note;
 * if the arm finds something ready after all, the descriptor is poked
 * again. So, outside the race documented in the header, it is readable
 * exactly while something is ready.
 *
 * The pipeline's outcome. A writer stage is one participant of the
 * pipeline (started with the threads, see start_participant in
 * pipeline.c) and ends with sl__pipeline_participant_end at end, abort or
 * failure (its on_fail, called after every ring was aborted). A reader
 * counts for nothing; its ring's leftovers stay readable.
 *
 * Finishing early. sl_reader_done is a consumer's SL_DONE: it walks the
 * stop up the graph as a stage's op would (sl__stage_consume_end). A
 * writer stopped by such a walk (every stage after it finished early) is
 * told by its on_stop, after its ring was aborted: its descriptor turns
 * readable for good and its part of the pipeline ends, so the pipeline
 * can finish before sl_writer_end; its calls then return SL_DONE.
 *
 * Lock order: a bridge's mu is never held while calling into a ring, the
 * pipeline or user code.
 */
#include "stage-int.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

/* ---- descriptors: an eventfd, or a non-blocking pipe ---- */

struct notify_fd {
  int rfd, wfd;
};

static int notify_fd_open(struct notify_fd *n) {
  n->rfd = n->wfd = -1;
#ifdef __linux__
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return errno == ENOMEM ? SL_ENOMEM : SL_EIO;
  n->rfd = n->wfd = fd;
#else
  int fds[2];
  if (pipe(fds) != 0)
    return errno == ENOMEM ? SL_ENOMEM : SL_EIO;
  for (int i = 0; i < 2; i++) {
    fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    fcntl(fds[i], F_SETFL, O_NONBLOCK);
  }
  n->rfd = fds[0];
  n->wfd = fds[1];
#endif
  return 0;
}

static void notify_fd_close(struct notify_fd *n) {
  if (n->rfd >= 0)
    close(n->rfd);
  if (n->wfd >= 0 && n->wfd != n->rfd)
    close(n->wfd);
}

/* Make it readable. A failed write can only mean it is full of pokes. */
static void notify_fd_poke(struct notify_fd *n) {
#ifdef __linux__
  uint64_t one = 1;
  ssize_t k = write(n->wfd, &one, sizeof one);
#else
  ssize_t k = write(n->wfd, "x", 1);
#endif
  (void)k;
}

/* Make it unreadable: read every poke. */
static void notify_fd_clear(struct notify_fd *n) {
  char sink[64];
  while (read(n->rfd, sink, sizeof sink) > 0)
    ;
}

/* The pipeline's first error; SL_ECANCELED when a ring was aborted
 * without one (cannot happen through the pipeline, kept as a floor). */
static int pipeline_err(sl_pipeline *p) {
  pthread_mutex_lock(&p->mu);
  int err = p->first_err;
  pthread_mutex_unlock(&p->mu);
  return err ? err : SL_ECANCELED;
}

static bool pipeline_failing(sl_pipeline *p) {
  return atomic_load_explicit(&p->failing, memory_order_acquire) != 0;
}

/* Every stage after s finished early (see sl_stage_ops): nothing wants
 * what it would produce. */
static bool stage_stopped(sl_stage *s) {
  return atomic_load_explicit(&s->stopped, memory_order_acquire) != 0;
}

static int never_called(sl_stage *s, void *ctx) {
  (void)s;
  (void)ctx;
  return SL_EINVAL;
}

static int never_called_write(sl_stage *s, void *ctx, sl_buf *in) {
  (void)s;
  (void)ctx;
  sl_buf_unref(in);
  return SL_EINVAL;
}

/* ======================================================================
 * sl_writer
 * ==================================================================== */

struct sl_writer {
  sl_stage *s;
  sl_ring *ring; /* set by writer_start */
  sl_pool *pool;
  size_t buf_size, hwm;
  bool objects;
  struct notify_fd fd;
  void (*cb)(sl_writer *w, void *arg);
  void *cb_arg;

  /* The producer's (see the essay): the caller's thread, or the note's
   * after an end that handed it over. */
  sl_buf *pend_head, *pend_tail; /* linked through sl_buf.next */
  bool paused;                   /* returned 0; waiting for the drain */

  pthread_mutex_t mu;
  bool note_owns;  /* armed: the producer role is the note's */
  bool drained;    /* the note fired as a drain, not yet taken */
  bool ended;      /* sl_writer_end or _abort was called */
  bool fail_poked; /* the descriptor was poked for a failure or a stop */

  int abort_err; /* sl_writer_abort's code, 0 before; the writer's thread */
};

static void writer_destroy(void *ctx) {
  sl_writer *w = ctx;
  while (w->pend_head) {
    sl_buf *b = w->pend_head;
    w->pend_head = b->next;
    b->next = NULL;
    sl_buf_unref(b);
  }
  notify_fd_close(&w->fd);
  pthread_mutex_destroy(&w->mu);
  sl__free(w);
}

static void pending_push(sl_writer *w, sl_buf *b) {
  b->next = NULL;
  if (w->pend_tail)
    w->pend_tail->next = b;
  else
    w->pend_head = b;
  w->pend_tail = b;
}

/* Poke for a failure, once; true if this call did. */
static bool writer_poke_fail(sl_writer *w) {
  pthread_mutex_lock(&w->mu);
  bool first = !w->fail_poked;
  if (first) {
    w->fail_poked = true;
    notify_fd_poke(&w->fd);
  }
  pthread_mutex_unlock(&w->mu);
  return first;
}

/* Queue what is pending, in order. 0 when all went; SL_AGAIN when the
 * ring refused one and the note is now armed: the producer role passes to
 * the note, which goes on from there; else the stop code (an abort). The
 * producer's thread. */
static int writer_pump(sl_writer *w) {
  for (;;) {
    while (w->pend_head) {
      /* Once queued, b is the consumer's: it may be released and
       * cached (which reuses next) before try_write returns, so nothing
       * of it is read afterwards. */
      sl_buf *b = w->pend_head, *next = b->next;
      size_t len = b->len;
      int rc = sl_ring_try_write(w->ring, b);
      if (rc == SL_AGAIN)
        break;
      if (rc != 0)
        return rc;
      w->pend_head = next;
      if (!next)
        w->pend_tail = NULL;
      ctr_add(&w->s->out_ctr.chunks, 1);
      ctr_add(&w->s->out_ctr.bytes, len);
    }
    if (!w->pend_head)
      return 0;
    /* What the producer did is published before the arm, which the
     * note's call follows (the ring's lock orders them). */
    int rc = sl__ring_arm(w->ring, SL__WRITER);
    if (rc != 0)
      return rc; /* SL_AGAIN: armed */
    /* Room appeared between the refusal and the arm: go on. */
  }
}

/* Everything is queued: SL_AGAIN with the note armed when the level is at
 * or above the high mark (wait for the drain), else 0. A stop found here
 * also returns 0: the caller of the next call hears of it. */
static int writer_check_level(sl_writer *w) {
  if (sl_ring_level(w->ring) < w->hwm)
    return 0; /* the common case: no lock */
  return sl__ring_arm(w->ring, SL__WRITER) == SL_AGAIN ? SL_AGAIN : 0;
}

/* The end, once nothing is pending: close the ring and count the writer
 * ended. Both the end and a note may get here; each step is idempotent. */
static void writer_close(sl_writer *w) {
  sl_ring_close(w->ring);
  atomic_store(&w->s->end_ns, sl__now_ns());
  sl__pipeline_participant_end(w->s);
}

/* The ring's drain note: the consumer's thread (or the thread that closes
 * or aborts the ring), no ring lock held. Holding the producer role, it
 * queues what the paused write left pending; only once all of it is in
 * the ring with the level below the high mark is the drain announced (or,
 * after an end, the ring closed), so the first call after a drain is
 * always taken. */
static void writer_note(void *arg) {
  sl_writer *w = arg;
  bool stop = stage_stopped(w->s);
  if (!stop && !pipeline_failing(w->s->p)) {
    int rc = writer_pump(w);
    if (rc == 0)
      rc = writer_check_level(w);
    if (rc == SL_AGAIN)
      return; /* armed again: the next drain goes on from here */
  }
  bool call = false, close_now = false;
  pthread_mutex_lock(&w->mu);
  if (stop || pipeline_failing(w->s->p)) {
    if (!w->fail_poked) {
      w->fail_poked = true;
      notify_fd_poke(&w->fd);
      call = !w->ended;
    }
  } else if (w->ended) {
    close_now = true; /* the end left the close to the note */
  } else {
    notify_fd_poke(&w->fd);
    w->drained = true;
    call = true;
  }
  w->note_owns = false;
  pthread_mutex_unlock(&w->mu);
  if (close_now)
    writer_close(w);
  if (call && w->cb)
    w->cb(w, w->cb_arg);
}

static int writer_start(sl_stage *s) {
  sl_writer *w = s->ctx;
  sl_pipeline *p = s->p;
  if (s->ncons != 1)
    return SL_EINVAL;
  w->ring = s->outs[0];
  w->pool = p->pool;
  w->buf_size = p->opts.buf_size;
  w->hwm = s->has_out_opts ? s->out_opts.hwm : p->opts.hwm;
  w->objects = s->has_out_opts && s->out_opts.mode == SL_RING_OBJECTS;
  sl__ring_set_note(w->ring, SL__WRITER, writer_note, w);
  atomic_store(&s->start_ns, sl__now_ns());
  return 0;
}

/* After every ring was aborted (any thread): make the descriptor readable
 * for good and count the writer ended. */
static void writer_fail(sl_stage *s) {
  sl_writer *w = s->ctx;
  writer_poke_fail(w);
  sl__pipeline_participant_end(s);
}

/* Every stage after the writer finished early, after its ring was
 * aborted (whose note, if armed, called the drain callback): the same,
 * without a failure. Idempotent, as on_stop must be. */
static void writer_stop(sl_stage *s) {
  sl_writer *w = s->ctx;
  writer_poke_fail(w);
  sl__pipeline_participant_end(s);
}

int sl_writer_new(sl_stage **stage, sl_writer **out, const char *name) {
  static const sl_stage_ops ops = {.read = never_called,
                                   .destroy = writer_destroy};
  if (stage)
    *stage = NULL;
  if (out)
    *out = NULL;
  if (!stage || !out || (name && !*name))
    return SL_EINVAL;
  sl_writer *w = sl__calloc(1, sizeof *w);
  if (!w)
    return SL_ENOMEM;
  int rc = notify_fd_open(&w->fd);
  if (rc != 0)
    goto fail_w;
  rc = SL_ENOMEM;
  if (pthread_mutex_init(&w->mu, NULL) != 0)
    goto fail_fd;
  rc = sl_stage_new(stage, name ? name : "writer", &ops, w);
  if (rc != 0)
    goto fail_mu;
  w->s = *stage;
  w->s->threadless = true;
  w->s->on_start = writer_start;
  w->s->on_fail = writer_fail;
  w->s->on_stop = writer_stop;
  *out = w;
  return 0;

fail_mu:
  pthread_mutex_destroy(&w->mu);
fail_fd:
  notify_fd_close(&w->fd);
fail_w:
  sl__free(w);
  return rc;
}

/* After sl_writer_abort(w, err): the pipeline's error when it failed (err
 * itself when the abort failed it), else err (the pipeline had finished):
 * as a ring returns its abort code. */
static int writer_aborted(sl_writer *w) {
  return pipeline_failing(w->s->p) ? pipeline_err(w->s->p) : w->abort_err;
}

/* Where a call stands before it queues anything: 0 to go on; `busy`
 * while paused and the drain has not come; the abort's code; SL_ECLOSED;
 * the pipeline's error; SL_DONE once stopped; SL_EINVAL before start.
 * Takes a drain that came, clearing the descriptor. The writer's
 * thread. */
static int writer_enter(sl_writer *w, int busy) {
  if (!w->ring)
    return SL_EINVAL;
  if (w->abort_err)
    return writer_aborted(w);
  if (w->ended)
    return SL_ECLOSED;
  if (pipeline_failing(w->s->p))
    return pipeline_err(w->s->p);
  if (stage_stopped(w->s))
    return SL_DONE;
  if (w->paused) {
    pthread_mutex_lock(&w->mu);
    bool drained = w->drained;
    if (drained) {
      w->drained = false;
      if (!w->fail_poked)
        notify_fd_clear(&w->fd);
    }
    pthread_mutex_unlock(&w->mu);
    if (!drained)
      return busy;
    w->paused = false;
  }
  return 0;
}

/* Queue the chain at head (already made, owned by the call) and report:
 * 1 below the mark, 0 paused (the note armed, perhaps with a tail
 * pending), or the stop code when the ring refused for good (the
 * pipeline failed, or its ring was aborted): the pipeline's first error,
 * or the ring's code when it has none. What this call left pending then
 * was not taken: released, or with give_back left to the caller, whose
 * buffer it is (sl_writer_write_buf's promise: any return but 1 and 0
 * leaves buf with the caller). Pending is empty on entry: a call is made
 * only while the writer is not paused, and a pause ends only once the
 * note has queued every pending chunk. */
static int writer_queue(sl_writer *w, sl_buf *head, bool give_back) {
  while (head) {
    sl_buf *next = head->next;
    pending_push(w, head);
    head = next;
  }
  /* The role passes to the note if an arm succeeds; set it first, as
   * only this thread's sl_writer_end reads it meanwhile. */
  pthread_mutex_lock(&w->mu);
  w->note_owns = true;
  pthread_mutex_unlock(&w->mu);
  int rc = writer_pump(w);
  if (rc == 0)
    rc = writer_check_level(w);
  if (rc == SL_AGAIN) {
    w->paused = true;
    return 0;
  }
  pthread_mutex_lock(&w->mu);
  w->note_owns = false; /* nothing armed: no note can fire */
  pthread_mutex_unlock(&w->mu);
  if (rc < 0) {
    sl_buf *b = w->pend_head;
    w->pend_head = w->pend_tail = NULL;
    while (b) {
      sl_buf *next = b->next;
      b->next = NULL;
      if (!give_back)
        sl_buf_unref(b);
      b = next;
    }
    pthread_mutex_lock(&w->s->p->mu);
    int err = w->s->p->first_err;
    pthread_mutex_unlock(&w->s->p->mu);
    if (!err && stage_stopped(w->s))
      return SL_DONE; /* its ring was aborted by the stop, not a failure */
    return err ? err : rc;
  }
  /* Below the mark; or all of it was queued and a stop came after, which
   * the next call reports. */
  return 1;
}

int sl_writer_write(sl_writer *w, const void *data, size_t len) {
  if (!w || (!data && len))
    return SL_EINVAL;
  if (w->objects && w->ring)
    return SL_EINVAL;
  int rc = writer_enter(w, SL_EBUSY);
  if (rc != 0)
    return rc;
  if (len == 0)
    return 1;
  sl_buf *head = NULL, *tail = NULL;
  const unsigned char *src = data;
  for (size_t off = 0; off < len;) {
    size_t n = len - off < w->buf_size ? len - off : w->buf_size;
    sl_buf *b;
    if (sl_buf_new(w->pool, n, &b) != 0) {
      while (head) {
        sl_buf *next = head->next;
        head->next = NULL;
        sl_buf_unref(head);
        head = next;
      }
      return SL_ENOMEM;
    }
    memcpy(b->data, src + off, n);
    b->len = n;
    b->next = NULL;
    if (tail)
      tail->next = b;
    else
      head = b;
    tail = b;
    off += n;
  }
  return writer_queue(w, head, false);
}

int sl_writer_buf(sl_writer *w, size_t cap, sl_buf **buf) {
  if (!buf)
    return SL_EINVAL;
  *buf = NULL;
  if (!w || !w->s->p)
    return SL_EINVAL;
  return sl_buf_new(w->s->p->pool, cap ? cap : w->s->p->opts.buf_size, buf);
}

int sl_writer_write_buf(sl_writer *w, sl_buf *buf) {
  if (!w || !buf)
    return SL_EINVAL;
  if (w->ring && w->objects != !!(buf->flags & BUF_OBJECT))
    return SL_EINVAL;
  int rc = writer_enter(w, SL_EBUSY);
  if (rc != 0)
    return rc;
  buf->next = NULL;
  return writer_queue(w, buf, true);
}

int sl_writer_flush(sl_writer *w) {
  if (!w)
    return SL_EINVAL;
  int rc = writer_enter(w, SL_EBUSY);
  if (rc != 0)
    return rc;
  sl_buf *mark;
  if (sl_buf_new_flush(w->pool, &mark) != 0)
    return SL_ENOMEM;
  mark->next = NULL;
  return writer_queue(w, mark, false);
}

int sl_writer_ack(sl_writer *w) {
  if (!w)
    return SL_EINVAL;
  return writer_enter(w, SL_AGAIN);
}

int sl_writer_fd(const sl_writer *w) {
  return w ? w->fd.rfd : SL_EINVAL;
}

int sl_writer_on_drain(sl_writer *w, void (*cb)(sl_writer *w, void *arg),
                       void *arg) {
  if (!w)
    return SL_EINVAL;
  if (w->s->p && w->s->p->started)
    return SL_EBUSY;
  w->cb = cb;
  w->cb_arg = arg;
  return 0;
}

int sl_writer_end(sl_writer *w) {
  if (!w || !w->ring)
    return SL_EINVAL;
  if (w->ended) /* also after an abort, which ended the writer */
    return SL_ECLOSED;
  pthread_mutex_lock(&w->mu);
  w->ended = true;
  /* While the note holds the producer role it closes the ring once it
   * has queued what is pending (at the next drain); otherwise close now. */
  bool handed = w->note_owns;
  if (w->drained && !w->fail_poked)
    notify_fd_clear(&w->fd);
  w->drained = false;
  pthread_mutex_unlock(&w->mu);
  w->paused = false;
  if (pipeline_failing(w->s->p))
    return pipeline_err(w->s->p);
  if (!handed)
    writer_close(w);
  return 0;
}

int sl_writer_abort(sl_writer *w, int err) {
  if (!w || !w->ring || err >= 0)
    return SL_EINVAL;
  pthread_mutex_lock(&w->mu);
  w->ended = true;
  pthread_mutex_unlock(&w->mu);
  if (!w->abort_err)
    w->abort_err = err;
  sl_pipeline *p = w->s->p;
  pthread_mutex_lock(&p->mu);
  bool over = p->ended || p->first_err;
  pthread_mutex_unlock(&p->mu);
  if (!over)
    sl__pipeline_fail(p, w->s, err);
  /* Already failed or finished: nothing to abort, but the writer has
   * ended all the same. */
  sl__pipeline_participant_end(w->s);
  return 0;
}

/* ======================================================================
 * sl_reader
 * ==================================================================== */

struct sl_reader {
  sl_stage *s;
  sl_ring *ring; /* set by reader_start */
  struct notify_fd fd;
  void (*cb)(sl_reader *r, void *arg);
  void *cb_arg;

  /* The reader's thread. */
  sl_buf *cur; /* a chunk read in part by sl_reader_read_bytes */
  size_t cur_off;
  bool closed, eof;
  bool done; /* closed by sl_reader_done: reads then say SL_EOF */

  pthread_mutex_t mu;
  bool poked; /* the descriptor holds a poke */
};

static void reader_destroy(void *ctx) {
  sl_reader *r = ctx;
  sl_buf_unref(r->cur);
  notify_fd_close(&r->fd);
  pthread_mutex_destroy(&r->mu);
  sl__free(r);
}

static void reader_poke(sl_reader *r) {
  pthread_mutex_lock(&r->mu);
  if (!r->poked) {
    r->poked = true;
    notify_fd_poke(&r->fd);
  }
  pthread_mutex_unlock(&r->mu);
}

/* The ring's ready note: the producer's thread (or the one that closes or
 * aborts the ring), no ring lock held. */
static void reader_note(void *arg) {
  sl_reader *r = arg;
  reader_poke(r);
  if (r->cb)
    r->cb(r, r->cb_arg);
}

static int reader_start(sl_stage *s) {
  sl_reader *r = s->ctx;
  if (s->nprods != 1)
    return SL_EINVAL;
  r->ring = s->ins[0];
  sl__ring_set_note(r->ring, SL__READER, reader_note, r);
  atomic_store(&s->start_ns, sl__now_ns());
  /* Nothing can be ready yet, but arm as a read that found nothing
   * would. */
  if (sl__ring_arm(r->ring, SL__READER) != SL_AGAIN)
    reader_poke(r);
  return 0;
}

int sl_reader_new(sl_stage **stage, sl_reader **out, const char *name) {
  static const sl_stage_ops ops = {.write = never_called_write,
                                   .destroy = reader_destroy};
  if (stage)
    *stage = NULL;
  if (out)
    *out = NULL;
  if (!stage || !out || (name && !*name))
    return SL_EINVAL;
  sl_reader *r = sl__calloc(1, sizeof *r);
  if (!r)
    return SL_ENOMEM;
  int rc = notify_fd_open(&r->fd);
  if (rc != 0)
    goto fail_r;
  rc = SL_ENOMEM;
  if (pthread_mutex_init(&r->mu, NULL) != 0)
    goto fail_fd;
  rc = sl_stage_new(stage, name ? name : "reader", &ops, r);
  if (rc != 0)
    goto fail_mu;
  r->s = *stage;
  r->s->threadless = true;
  r->s->on_start = reader_start;
  *out = r;
  return 0;

fail_mu:
  pthread_mutex_destroy(&r->mu);
fail_fd:
  notify_fd_close(&r->fd);
fail_r:
  sl__free(r);
  return rc;
}

/* The next chunk that is not a flush marker, or SL_AGAIN (descriptor
 * cleared, note armed), SL_EOF, the pipeline's error. */
static int reader_next(sl_reader *r, sl_buf **out) {
  for (;;) {
    sl_buf *b;
    int rc = sl_ring_try_read(r->ring, &b);
    if (rc == 0) {
      ctr_add(&r->s->in_ctr.chunks, 1);
      ctr_add(&r->s->in_ctr.bytes, b->len);
      if (b->flags & BUF_FLUSH) {
        sl_buf_unref(b);
        continue;
      }
      *out = b;
      return 0;
    }
    if (rc == SL_EOF) {
      if (!r->eof) {
        r->eof = true;
        atomic_store(&r->s->end_ns, sl__now_ns());
      }
      return SL_EOF;
    }
    if (rc != SL_AGAIN)
      return pipeline_err(r->s->p);
    /* Clear before arming: a poke from this arm must survive. */
    pthread_mutex_lock(&r->mu);
    if (r->poked) {
      r->poked = false;
      notify_fd_clear(&r->fd);
    }
    pthread_mutex_unlock(&r->mu);
    if (sl__ring_arm(r->ring, SL__READER) == SL_AGAIN)
      return SL_AGAIN;
    reader_poke(r); /* ready after all: look again */
  }
}

int sl_reader_read(sl_reader *r, sl_buf **out) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (!r || !r->ring || r->cur)
    return SL_EINVAL;
  if (r->closed)
    return r->done ? SL_EOF : SL_EPIPE;
  return reader_next(r, out);
}

int sl_reader_read_bytes(sl_reader *r, void *dst, size_t cap, size_t *n) {
  if (n)
    *n = 0;
  if (!r || !r->ring || !dst || !n || cap == 0)
    return SL_EINVAL;
  if (r->closed)
    return r->done ? SL_EOF : SL_EPIPE;
  unsigned char *d = dst;
  size_t got = 0;
  int rc = 0;
  while (got < cap) {
    if (!r->cur) {
      if ((rc = reader_next(r, &r->cur)) != 0)
        break;
      if (r->cur->flags & BUF_OBJECT) {
        sl_buf_unref(r->cur);
        r->cur = NULL;
        return SL_EINVAL;
      }
      r->cur_off = 0;
    }
    size_t k = r->cur->len - r->cur_off;
    if (k > cap - got)
      k = cap - got;
    memcpy(d + got, r->cur->data + r->cur_off, k);
    got += k;
    r->cur_off += k;
    if (r->cur_off == r->cur->len) {
      sl_buf_unref(r->cur);
      r->cur = NULL;
    }
  }
  if (rc < 0)
    return rc;
  *n = got;
  return got ? 0 : rc;
}

int sl_reader_fd(const sl_reader *r) {
  return r ? r->fd.rfd : SL_EINVAL;
}

int sl_reader_on_ready(sl_reader *r, void (*cb)(sl_reader *r, void *arg),
                       void *arg) {
  if (!r)
    return SL_EINVAL;
  if (r->s->p && r->s->p->started)
    return SL_EBUSY;
  r->cb = cb;
  r->cb_arg = arg;
  return 0;
}

int sl_reader_close(sl_reader *r) {
  if (!r || !r->ring)
    return SL_EINVAL;
  if (r->closed)
    return 0;
  r->closed = true;
  sl_buf_unref(r->cur);
  r->cur = NULL;
  if (r->eof)
    return 0;
  sl_pipeline *p = r->s->p;
  pthread_mutex_lock(&p->mu);
  bool over = p->ended || p->first_err;
  pthread_mutex_unlock(&p->mu);
  if (!over) {
    sl_stage_set_error(r->s, "consumer closed before the end of the stream");
    sl__pipeline_fail(p, r->s, SL_EPIPE);
  }
  /* Release what waits unread, also after a finished stream. */
  sl_ring_abort(r->ring, SL_EPIPE);
  return 0;
}

int sl_reader_done(sl_reader *r) {
  if (!r || !r->ring)
    return SL_EINVAL;
  if (r->closed)
    return 0;
  r->closed = r->done = true;
  sl_buf_unref(r->cur);
  r->cur = NULL;
  /* A consumer's SL_DONE: stop what feeds it (a no-op once the pipeline
   * failed or finished, or after the end of the stream). */
  if (!r->eof)
    sl__stage_consume_end(r->s);
  /* Release what waits unread, also after a finished stream. */
  sl_ring_abort(r->ring, SL_ECANCELED);
  return 0;
}
