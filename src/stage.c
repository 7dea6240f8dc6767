/* SPDX-License-Identifier: MIT */
/*
 * sl_stage — a node and the loops its thread(s) run.
 *
 * The framework owns the loop, as Node's stream machinery does around
 * _read/_transform/_write: an input loop pops chunks from the input ring
 * (a batch under one lock), hands each to transform or write, and at end of
 * stream calls flush or final exactly once and closes the output; a source
 * loop calls read until it says SL_EOF. Ops push with sl_stage_push, which
 * blocks on a full output ring: that wait is the stage being paused by
 * backpressure.
 *
 * Threads: a source, transform or sink runs on one thread; a duplex stage
 * runs its read side (source loop) and its write side (input loop) on two.
 * Counters of the input side are written only by the input thread, those
 * of the output side only by whichever thread pushes.
 *
 * Failure: an op's negative return goes to sl__pipeline_fail, which keeps
 * the first error and aborts every ring; every other loop then sees
 * SL_ECANCELED from its ring and winds down. Chunks a loop holds are
 * released on every exit path.
 *
 * Finishing early: an op's SL_DONE ends the stage's input there (the
 * chunks not delivered are released, flush or final runs, the output is
 * closed) and hands the stop upstream to sl__stage_consume_end
 * (pipeline.c). A loop that then finds its input aborted, or its own
 * stage stopped, ends as at the end of its stream, failing nothing.
 *
 * Whose thread: a thread-local names the stage the calling thread runs
 * (set by the loops below, so also on a thread reused from a set), which
 * lets sl_stage_push refuse a foreign thread and the pipeline refuse a
 * wait or a free from its own threads.
 */
#include "stage-int.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

/* The stage the calling thread runs, and its side (0: source or read
 * side, 1: an input thread); NULL between stages. Initial-exec: read on
 * every push, so no call to find it. */
#if defined(__GNUC__)
#define SL_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define SL_TLS_FAST
#endif
static _Thread_local sl_stage *cur_stage SL_TLS_FAST;
static _Thread_local int cur_side SL_TLS_FAST;

sl_stage *sl__stage_current(int *side) {
  if (side)
    *side = cur_side;
  return cur_stage;
}

/* Whether the calling thread is the one that may push for s: one of its
 * own, and for a duplex its read side. */
static bool own_pusher(const sl_stage *s) {
  return cur_stage == s && (s->kind != KIND_DUPLEX || cur_side == 0);
}

/* Which cancel descriptor the calling thread of s uses: a duplex's write
 * side its own, everyone else the stage's first. */
static int wake_index(const sl_stage *s) {
  return s->kind == KIND_DUPLEX && cur_stage == s && cur_side == 1;
}

/* Chunks taken from the input ring under one lock. Bounds what a stage
 * holds outside its ring; the ring itself holds at most hwm + one chunk. */
#define STAGE_BATCH 16

static int kind_of(const sl_stage_ops *ops, enum stage_kind *kind) {
  bool rd = ops->read, tr = ops->transform, wr = ops->write;
  if (tr && !rd && !wr && !ops->final)
    *kind = KIND_TRANSFORM;
  else if (rd && !tr && !wr && !ops->flush && !ops->final)
    *kind = KIND_SOURCE;
  else if (wr && !tr && !rd && !ops->flush)
    *kind = KIND_SINK;
  else if (rd && wr && !tr && !ops->flush)
    *kind = KIND_DUPLEX;
  else
    return SL_EINVAL;
  return 0;
}

int sl_stage_new(sl_stage **out, const char *name, const sl_stage_ops *ops,
                 void *ctx) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  enum stage_kind kind;
  if (!name || !*name || !ops || kind_of(ops, &kind) != 0)
    return SL_EINVAL;
  sl_stage *s = sl__aligned_calloc(sizeof *s);
  if (!s)
    return SL_ENOMEM;
  s->name = sl__strdup(name);
  if (!s->name) {
    sl__aligned_free(s);
    return SL_ENOMEM;
  }
  s->ops = *ops;
  s->ctx = ctx;
  s->kind = kind;
  for (int k = 0; k < 2; k++)
    s->wake[k].rfd = s->wake[k].wfd = -1;
  *out = s;
  return 0;
}

/* Destroy a stage: its context, then itself. Threads have ended. */
void sl__stage_destroy(sl_stage *s) {
  if (s->ops.destroy)
    s->ops.destroy(s->ctx);
  if (s->op_mu_ready)
    pthread_mutex_destroy(&s->op_mu);
  for (int k = 0; k < 2; k++) {
    if (s->wake[k].rfd >= 0)
      close(s->wake[k].rfd);
    if (s->wake[k].wfd >= 0 && s->wake[k].wfd != s->wake[k].rfd)
      close(s->wake[k].wfd);
  }
  sl__free(s->out_gone);
  sl__free(s->cons);
  sl__free(s->prods);
  sl__free(s->outs);
  sl__free(s->ins);
  sl__free(s->inputs);
  sl__free(s->threads);
  sl__free(s->jobs);
  sl__free(s->name);
  sl__aligned_free(s);
}

void sl_stage_free(sl_stage *s) {
  if (!s || s->p) /* a chained stage belongs to its pipeline */
    return;
  sl__stage_destroy(s);
}

int sl_stage_set_output(sl_stage *s, size_t hwm, size_t lwm, int mode) {
  if (!s || s->kind == KIND_SINK || hwm == 0)
    return SL_EINVAL;
  if (mode != SL_RING_BYTES && mode != SL_RING_OBJECTS)
    return SL_EINVAL;
  if (lwm != SL_LWM_DEFAULT && lwm >= hwm)
    return SL_EINVAL;
  if (s->p && s->p->started)
    return SL_EBUSY;
  s->has_out_opts = true;
  s->out_opts = (sl_ring_opts){.hwm = hwm, .lwm = lwm, .mode = mode};
  return 0;
}

const char *sl_stage_name(const sl_stage *s) {
  return s ? s->name : NULL;
}

void *sl_stage_ctx(const sl_stage *s) {
  return s ? s->ctx : NULL;
}

sl_pool *sl_stage_pool(const sl_stage *s) {
  return s && s->p ? s->p->pool : NULL;
}

sl_ring *sl_stage_output(const sl_stage *s) {
  return s && s->outs ? s->outs[0] : NULL;
}

int sl_stage_set_merge(sl_stage *s, int mode) {
  if (!s || s->kind == KIND_SOURCE)
    return SL_EINVAL;
  if (mode != SL_MERGE_ARRIVAL && mode != SL_MERGE_ROUND_ROBIN)
    return SL_EINVAL;
  if (s->p && s->p->started)
    return SL_EBUSY;
  s->merge = mode;
  return 0;
}

size_t sl__stage_input_threads(const sl_stage *s) {
  if (s->kind == KIND_SOURCE || s->threadless)
    return 0;
  return s->nprods > 1 && s->merge == SL_MERGE_ARRIVAL ? s->nprods : 1;
}

int sl_stage_buf(sl_stage *s, size_t cap, sl_buf **out) {
  if (!s || !out)
    return out ? (*out = NULL, SL_EINVAL) : SL_EINVAL;
  sl_pool *pool = s->p ? s->p->pool : NULL;
  if (cap == 0)
    cap = s->p ? s->p->opts.buf_size : 0;
  return sl_buf_new(pool, cap, out);
}

/* Write to one output ring. A write that would wait is marked as the
 * thread's wait on a full output first (for the stats, the stall report
 * and the trace); one that finds room costs only the try. */
static int push_ring(sl_stage *s, sl_ring *r, sl_buf *buf) {
  struct sl_tobs *o = s->push_obs;
  if (!o)
    return sl_ring_write(r, buf);
  int rc = sl_ring_try_write(r, buf);
  if (rc != SL_AGAIN)
    return rc;
  sl__tobs_wait_begin(o, TOBS_FULL, r);
  rc = sl_ring_write(r, buf);
  sl__tobs_wait_end(o);
  return rc;
}

/* Whether the consumer of output i finished early; its ring is aborted or
 * about to be. Pairs with the release in pipeline.c's walk. */
static bool out_gone(const sl_stage *s, size_t i) {
  return atomic_load_explicit(&s->out_gone[i], memory_order_acquire) != 0;
}

int sl_stage_push(sl_stage *s, sl_buf *buf) {
  if (!buf)
    return SL_EINVAL;
  /* One writer per ring: a push from another thread would race the
   * stage's own on the ring's producer side. */
  if (!s || !s->outs || !own_pusher(s)) {
    sl_buf_unref(buf);
    return SL_EINVAL;
  }
  size_t len = buf->len, n = s->ncons, sent = 0;
  /* Fan-out: every branch gets the same buffer, one reference each, and
   * the writes go in turn, so the slowest branch governs. A branch whose
   * consumer finished early is skipped, also when that happens while the
   * write waits on it (the abort wakes it). */
  for (size_t i = 1; i < n; i++)
    sl_buf_ref(buf);
  for (size_t i = 0; i < n; i++) {
    if (out_gone(s, i)) {
      sl_buf_unref(buf);
      continue;
    }
    int rc = push_ring(s, s->outs[i], buf);
    if (rc != 0 && out_gone(s, i) &&
        !atomic_load_explicit(&s->p->failing, memory_order_acquire)) {
      sl_buf_unref(buf);
      continue;
    }
    if (rc != 0) {
      for (; i < n; i++) /* the references not handed over */
        sl_buf_unref(buf);
      return rc;
    }
    sent++;
  }
  if (sent == 0) /* every consumer is gone: the stage is stopped */
    return SL_ECANCELED;
  ctr_add(&s->out_ctr.chunks, 1);
  ctr_add(&s->out_ctr.bytes, len);
  return 0;
}

void sl_stage_set_error(sl_stage *s, const char *fmt, ...) {
  if (!s || !fmt)
    return;
  /* The first message wins: a later one (say from flush after a failed
   * transform) would describe a consequence, not the cause. */
  int expected = 0;
  if (!atomic_compare_exchange_strong(&s->errmsg_set, &expected, 1))
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
  va_end(ap);
  atomic_store_explicit(&s->errmsg_set, 2, memory_order_release);
}

int sl_stage_cancel_fd(sl_stage *s) {
  if (!s || !s->p)
    return SL_EINVAL;
  return sl__stage_wake_fd(s, wake_index(s));
}

int sl__stage_poll(sl_stage *s, int fd, short events, int *cancel_fd,
                   int *sys_err) {
  *sys_err = 0;
  if (*cancel_fd < 0) {
    int cfd = sl_stage_cancel_fd(s);
    if (cfd < 0)
      return cfd;
    *cancel_fd = cfd;
  }
  for (;;) {
    struct pollfd pfd[2] = {{.fd = fd, .events = events},
                            {.fd = *cancel_fd, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      *sys_err = errno;
      return SL_EIO;
    }
    if (pfd[1].revents)
      return SL_ECANCELED;
    if (pfd[0].revents & POLLNVAL) {
      *sys_err = EBADF;
      return SL_EIO;
    }
    if (pfd[0].revents)
      return 0;
  }
}

int sl_stage_push_flush(sl_stage *s) {
  if (!s || !s->outs)
    return SL_EINVAL;
  sl_buf *mark;
  int rc = sl_buf_new_flush(s->p->pool, &mark);
  return rc ? rc : sl_stage_push(s, mark);
}

int sl_stage_cancelled(const sl_stage *s) {
  if (!s || !s->p)
    return 0;
  if (atomic_load_explicit(&s->p->failing, memory_order_acquire))
    return 1;
  return atomic_load_explicit(&s->stopped, memory_order_acquire) &&
         !wake_index(s);
}

int sl_stage_status(const sl_stage *s) {
  return s ? atomic_load(&s->status) : SL_EINVAL;
}

/* "sl:<stage><suffix>", cut to the kernel's 15 bytes. */
static void name_fmt(char name[SL__THREAD_NAME_MAX], const char *stage,
                     const char *suffix) {
  if (snprintf(name, SL__THREAD_NAME_MAX, "sl:%s%s", stage, suffix) < 0)
    name[0] = '\0';
}

void sl__thread_name(pthread_t t, const char *stage, const char *suffix) {
  char name[SL__THREAD_NAME_MAX];
  name_fmt(name, stage, suffix);
  pthread_setname_np(t, name);
}

void sl__stage_thread_name_fmt(const sl_stage *s, const struct sl_input *in,
                               char name[SL__THREAD_NAME_MAX]) {
  char suffix[24] = "";
  if (in && sl__stage_input_threads(s) > 1)
    snprintf(suffix, sizeof suffix, "/%zu", in->idx);
  else if (s->kind == KIND_DUPLEX)
    snprintf(suffix, sizeof suffix, in ? "/w" : "/r");
  name_fmt(name, s->name, suffix);
}

void sl__stage_thread_name(const sl_stage *s, pthread_t t,
                           const struct sl_input *in) {
  char name[SL__THREAD_NAME_MAX];
  sl__stage_thread_name_fmt(s, in, name);
  pthread_setname_np(t, name);
}

/* A stage thread names itself before it runs an op (its creator names it
 * too, once pthread_create returns: see sl__thread_name), and marks
 * itself as the stage's. */
static void thread_begin(sl_stage *s, const struct sl_input *in) {
  cur_stage = s;
  cur_side = in != NULL;
  sl__stage_thread_name(s, pthread_self(), in);
  uint64_t zero = 0;
  atomic_compare_exchange_strong(&s->start_ns, &zero, sl__now_ns());
}

/* Whether the calling thread's part of s was stopped because nothing
 * downstream wants its output: the whole stage, or a duplex's read side
 * (its write side is not stopped by that). */
static bool side_stopped(const sl_stage *s) {
  return atomic_load_explicit(&s->stopped, memory_order_acquire) &&
         !(s->kind == KIND_DUPLEX && cur_side == 1);
}

/* A loop ended with rc: on success close the outputs if this thread was
 * the stage's last producer of output; a stopped stage ends quietly,
 * whatever its op returned (nobody wants what it would say); fail the
 * pipeline otherwise. The finished callback may run in here, from the
 * last thread to end, which is still marked as the stage's; it is cleared
 * after. */
static void thread_end(sl_stage *s, struct sl_tobs *o, bool close_outputs,
                       int rc) {
  if (rc == 0) {
    if (close_outputs)
      for (size_t i = 0; i < s->ncons; i++)
        sl_ring_close(s->outs[i]);
  } else if (side_stopped(s) &&
             !atomic_load_explicit(&s->p->failing, memory_order_acquire)) {
    int none = 0;
    atomic_compare_exchange_strong(&s->status, &none, SL_DONE);
  } else {
    sl__pipeline_fail(s->p, s, rc);
  }
  atomic_store(&s->end_ns, sl__now_ns());
  sl__tobs_end(o);
  sl__pipeline_thread_done(s->p);
  cur_stage = NULL;
}

/* Source, and the read side of a duplex. */
void *sl__stage_source_main(void *arg) {
  sl_stage *s = arg;
  thread_begin(s, NULL);
  struct sl_tobs *o = sl__tobs_begin(s, 0);
  s->push_obs = o; /* the read side is the one that pushes */
  int rc;
  for (;;) {
    if (sl_stage_cancelled(s)) {
      rc = SL_ECANCELED;
      break;
    }
    rc = s->ops.read(s, s->ctx);
    if (rc == SL_EOF || rc == SL_DONE) {
      rc = 0;
      break;
    }
    if (rc < 0)
      break;
  }
  thread_end(s, o, true, rc);
  return NULL;
}

/* A flush marker: let the stage push out what it holds, then pass the
 * marker on (a sink drops it, and so does a stage whose sync said
 * SL_DONE: its flush or final comes next). Owns mark. */
static int pass_marker(sl_stage *s, sl_buf *mark, bool transform) {
  int rc = s->ops.sync ? s->ops.sync(s, s->ctx) : 0;
  if (rc < 0 || rc == SL_DONE || !transform) {
    /* A sink that synced the marker passed a checkpoint; a failure, or a
     * stage that wants no more input, dropped it (nothing is acknowledged
     * for it, so a source that waits on it delivers again). */
    if (rc < 0 || rc == SL_DONE)
      sl_buf_unref(mark);
    else
      sl__buf_pass(mark);
    return rc < 0 || rc == SL_DONE ? rc : 0;
  }
  return sl_stage_push(s, mark);
}

/* Hand n chunks to the op, which owns each one it is given; on failure,
 * or when the op wants no more (SL_DONE, returned), release the ones it
 * never got. */
static int deliver(sl_stage *s, sl_buf **batch, size_t n) {
  bool transform = s->kind == KIND_TRANSFORM;
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += batch[i]->len;
  ctr_add(&s->in_ctr.chunks, n);
  ctr_add(&s->in_ctr.bytes, bytes);
  for (size_t i = 0; i < n; i++) {
    sl_buf *b = batch[i];
    int rc;
    if (b->flags & BUF_FLUSH)
      rc = pass_marker(s, b, transform);
    else
      rc = transform ? s->ops.transform(s, s->ctx, b)
                     : s->ops.write(s, s->ctx, b);
    if (rc < 0 || rc == SL_DONE) {
      for (i++; i < n; i++)
        sl_buf_unref(batch[i]);
      return rc;
    }
  }
  return 0;
}

static void release_batch(sl_buf **batch, size_t n) {
  for (size_t i = 0; i < n; i++)
    sl_buf_unref(batch[i]);
}

/* Whether a read that failed with rc is the end of this stage's input
 * after all: an op of the stage (on another input thread) said SL_DONE,
 * which aborted this input, and the pipeline is not failing. (A stage
 * stopped from downstream ends by its error instead: see thread_end.) */
static bool input_ended_early(const sl_stage *s, int rc) {
  return rc < 0 && atomic_load_explicit(&s->in_done, memory_order_acquire) &&
         !atomic_load_explicit(&s->p->failing, memory_order_acquire);
}

/* Take a batch; when the ring is empty now, the read will wait: mark it
 * as the thread's wait on an empty input. A stage that finds its input
 * empty has time to spare, so the clock reads cost it nothing. */
static int take(struct sl_tobs *o, sl_ring *in, sl_buf **batch, size_t max,
                size_t *n) {
  if (!o || sl_ring_level(in) != 0)
    return sl_ring_read_batch(in, batch, max, n);
  sl__tobs_wait_begin(o, TOBS_EMPTY, in);
  int rc = sl_ring_read_batch(in, batch, max, n);
  sl__tobs_wait_end(o);
  return rc;
}

/* End of every input: flush or final, exactly once. */
static int end_of_input(sl_stage *s) {
  if (s->kind == KIND_TRANSFORM)
    return s->ops.flush ? s->ops.flush(s, s->ctx) : 0;
  return s->ops.final ? s->ops.final(s, s->ctx) : 0;
}

/* Several inputs, one thread each, chunks in arrival order: the ops run
 * under op_mu, and the input that ends last ends the stage. Returns the
 * loop's code; *last says whether this thread ended the stage. */
static int arrival_loop(sl_stage *s, struct sl_tobs *o, sl_ring *in,
                        bool *last) {
  sl_buf *batch[STAGE_BATCH];
  size_t n;
  int rc;
  bool pushes = s->kind == KIND_TRANSFORM;
  *last = false;
  while ((rc = take(o, in, batch, STAGE_BATCH, &n)) == 0) {
    pthread_mutex_lock(&s->op_mu);
    if (atomic_load_explicit(&s->in_done, memory_order_relaxed)) {
      /* Another input's op said SL_DONE: no op sees more input. */
      pthread_mutex_unlock(&s->op_mu);
      release_batch(batch, n);
      rc = SL_EOF;
      break;
    }
    if (pushes)
      s->push_obs = o;
    rc = deliver(s, batch, n);
    if (rc == SL_DONE)
      atomic_store_explicit(&s->in_done, 1, memory_order_release);
    pthread_mutex_unlock(&s->op_mu);
    if (rc == SL_DONE) {
      sl__stage_consume_end(s);
      rc = SL_EOF;
      break;
    }
    if (rc < 0)
      return rc;
  }
  if (input_ended_early(s, rc))
    rc = SL_EOF;
  if (rc != SL_EOF)
    return rc;
  pthread_mutex_lock(&s->op_mu);
  if (pushes)
    s->push_obs = o;
  *last = --s->open_inputs == 0;
  rc = *last ? end_of_input(s) : 0;
  pthread_mutex_unlock(&s->op_mu);
  return rc;
}

/* One input, or several taken in turn, one chunk from each (skipping those
 * that ended) — round-robin. */
static int turn_loop(sl_stage *s, struct sl_tobs *o) {
  sl_buf *batch[STAGE_BATCH];
  size_t n, open = s->nprods, at = 0;
  bool one = s->nprods == 1;
  bool *ended = NULL;
  int rc = 0;
  if (!one && !(ended = sl__calloc(s->nprods, sizeof *ended)))
    return SL_ENOMEM;
  while (open > 0) {
    while (!one && ended[at])
      at = (at + 1) % s->nprods;
    rc = take(o, s->ins[at], batch, one ? STAGE_BATCH : 1, &n);
    if (rc == SL_EOF) {
      if (!one)
        ended[at] = true;
      open--;
      rc = 0;
    } else if (rc < 0 || (rc = deliver(s, batch, n)) < 0) {
      break;
    } else if (rc == SL_DONE) {
      atomic_store_explicit(&s->in_done, 1, memory_order_release);
      sl__stage_consume_end(s);
      rc = 0;
      break;
    }
    if (!one)
      at = (at + 1) % s->nprods;
  }
  sl__free(ended);
  return rc < 0 ? rc : end_of_input(s);
}

/* Transform, sink, and the write side of a duplex. */
void *sl__stage_input_main(void *arg) {
  struct sl_input *in = arg;
  sl_stage *s = in->s;
  bool arrival = sl__stage_input_threads(s) > 1;
  thread_begin(s, in);
  struct sl_tobs *o = sl__tobs_begin(s, 1 + in->idx);
  if (!arrival && s->kind == KIND_TRANSFORM)
    s->push_obs = o;
  bool last = true;
  int rc =
      arrival ? arrival_loop(s, o, s->ins[in->idx], &last) : turn_loop(s, o);
  if (atomic_fetch_sub(&s->inputs_running, 1) == 1 && s->on_exit)
    s->on_exit(s);
  thread_end(s, o, last && s->kind == KIND_TRANSFORM, rc < 0 ? rc : 0);
  return NULL;
}

/* ---- tee and merge: the identity, on a stage with several edges ---- */

static int pass_on(sl_stage *s, void *ctx, sl_buf *in) {
  (void)ctx;
  return sl_stage_push(s, in);
}

int sl_tee_new(sl_stage **out, const char *name) {
  static const sl_stage_ops ops = {.transform = pass_on};
  return sl_stage_new(out, name ? name : "tee", &ops, NULL);
}

int sl_merge_new(sl_stage **out, const char *name, int mode) {
  static const sl_stage_ops ops = {.transform = pass_on};
  if (out)
    *out = NULL;
  if (mode != SL_MERGE_ARRIVAL && mode != SL_MERGE_ROUND_ROBIN)
    return SL_EINVAL;
  int rc = sl_stage_new(out, name ? name : "merge", &ops, NULL);
  if (rc == 0)
    (*out)->merge = mode;
  return rc;
}

/* Stage threads take no asynchronous signals: those belong to the
 * application. The synchronous ones stay open. The kernel raises SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP or SIGSYS on the very thread whose
 * instruction faulted; were it blocked there, POSIX leaves the outcome
 * undefined, and Linux kills the process on the spot without running the
 * handler the application installed (a crash reporter, a sanitizer's
 * report, a test that prints the seed it was running). Called with the
 * set to restore filled in by the caller. */
int sl__block_signals(sigset_t *old) {
  static const int synchronous[] = {
      SIGSEGV, SIGBUS, SIGFPE, SIGILL,
#ifdef SIGTRAP
      SIGTRAP,
#endif
#ifdef SIGSYS
      SIGSYS,
#endif
  };
  sigset_t all;

  sigfillset(&all);
  for (size_t i = 0; i < sizeof synchronous / sizeof synchronous[0]; i++)
    sigdelset(&all, synchronous[i]);
  return pthread_sigmask(SIG_BLOCK, &all, old);
}
