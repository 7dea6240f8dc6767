/* SPDX-License-Identifier: MIT */
/*
 * The writer and reader bridges (include/sluice/bridge.h) and the ring
 * notes under them.
 *
 * The consumer of a writer is held with a gate: a transform that waits in
 * its op until the test lets a number of chunks through. With the gate
 * shut and the transform waiting in it, the ring between the writer and
 * the transform changes only when the test writes, so levels, return
 * values and descriptors can be asserted exactly. Descriptors are looked
 * at with poll(2) and a zero timeout once the state is known, or waited
 * on with an infinite one; nothing sleeps.
 */
#include "pipeutil.h"
#include "stage-int.h"
#include "testutil.h"

#include <poll.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <zlib.h>

/* ------------------------------------------------------------------------
 * Fixtures and small things
 * ---------------------------------------------------------------------- */

static int base_threads;

static void setup(void) {
  ck_assert_int_eq(test_alloc_install(), 0);
  base_threads = pu_thread_count();
  ck_assert_int_gt(base_threads, 0);
}

static void teardown(void) {
  fail_alloc_disarm();
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
  ck_assert_int_eq(pu_threads_left(base_threads), 0);
}

/* 1 when fd is readable now, 0 when not. */
static int readable_now(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  int n = poll(&pfd, 1, 0);
  return n == 1 && (pfd.revents & POLLIN) ? 1 : 0;
}

/* How many pokes descriptor fd holds, counted without taking any: an
 * eventfd's counter from /proc/self/fdinfo (reading the eventfd would
 * reset it, so a second poke could hide behind the first), a pipe's bytes
 * with FIONREAD (one per poke); -1 when neither tells. */
static long pokes_held(int fd) {
  char path[64], line[128];
  long n = -1;
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE *f = fopen(path, "r");
  if (f) {
    unsigned long long v;
    while (n < 0 && fgets(line, sizeof line, f))
      if (sscanf(line, "eventfd-count: %llx", &v) == 1)
        n = (long)v;
    fclose(f);
  }
  int k;
  if (n < 0 && ioctl(fd, FIONREAD, &k) == 0)
    n = k;
  return n;
}

/* Wait until fd is readable; 1, or 0 when poll fails. */
static int wait_readable(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  int n;
  while ((n = poll(&pfd, 1, -1)) < 0 && errno == EINTR)
    ;
  return n == 1 && (pfd.revents & POLLIN) ? 1 : 0;
}

/* A pipeline with buffers of 1 KiB and rings of 4 KiB, low mark 2 KiB. */
static sl_pipeline *small_pipeline(void) {
  sl_pipeline_opts o = {.buf_size = 1024, .hwm = 4096, .lwm = 2048};
  sl_pipeline *p = NULL;
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  return p;
}

/* A callback counter others can wait on. */
typedef struct counter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int n;
} counter;

static void counter_init(counter *c) {
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->n = 0;
}

static void counter_fini(counter *c) {
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
}

static void counter_bump(counter *c) {
  pthread_mutex_lock(&c->mu);
  c->n++;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static int counter_get(counter *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->n;
  pthread_mutex_unlock(&c->mu);
  return n;
}

static void counter_wait(counter *c, int n) {
  pthread_mutex_lock(&c->mu);
  while (c->n < n)
    pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

static void on_drain(sl_writer *w, void *arg) {
  (void)w;
  counter_bump(arg);
}

static void on_ready(sl_reader *r, void *arg) {
  (void)r;
  counter_bump(arg);
}

/* ------------------------------------------------------------------------
 * The gate: a transform that passes chunks only as the test allows
 * ---------------------------------------------------------------------- */

typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long allowed, passed;
  bool waiting; /* the op waits for permission */
} gate;

static int gate_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  gate *g = ctx;
  pthread_mutex_lock(&g->mu);
  while (g->passed >= g->allowed && !sl_stage_cancelled(stage)) {
    g->waiting = true;
    pthread_cond_broadcast(&g->cv);
    pthread_cond_wait(&g->cv, &g->mu);
  }
  g->waiting = false;
  g->passed++;
  pthread_mutex_unlock(&g->mu);
  return sl_stage_push(stage, in);
}

static void gate_init(gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->allowed = g->passed = 0;
  g->waiting = false;
}

static void gate_fini(gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

static sl_stage *gate_stage(gate *g) {
  sl_stage_ops ops = {.transform = gate_transform};
  sl_stage *s = NULL;
  ck_assert_int_eq(sl_stage_new(&s, "gate", &ops, g), 0);
  return s;
}

/* Let n more chunks through. */
static void gate_allow(gate *g, long n) {
  pthread_mutex_lock(&g->mu);
  g->allowed += n;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Wait until the op holds chunk number `passed` at the gate. */
static void gate_wait_held(gate *g, long passed) {
  pthread_mutex_lock(&g->mu);
  while (!(g->waiting && g->passed == passed))
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

/* Open for good (before a cancel or free), waking the op. */
static void gate_open(gate *g) {
  gate_allow(g, 1L << 40);
}

/* Wake a gate op so it sees a cancel. */
static void gate_poke(gate *g) {
  pthread_mutex_lock(&g->mu);
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

/* Read n chunks from r, waiting on its descriptor; bytes read. */
static size_t read_chunks(sl_reader *r, int n) {
  size_t bytes = 0;
  while (n > 0) {
    sl_buf *b;
    int rc = sl_reader_read(r, &b);
    if (rc == SL_AGAIN) {
      test_check(wait_readable(sl_reader_fd(r)));
      continue;
    }
    test_check_msg(rc == 0, "read: %s", sl_err_name(rc));
    test_check(!sl_buf_is_flush(b) && sl_buf_len(b) > 0);
    bytes += sl_buf_len(b);
    sl_buf_unref(b);
    n--;
  }
  return bytes;
}

/* ------------------------------------------------------------------------
 * Ring notes, on a bare ring
 * ---------------------------------------------------------------------- */

typedef struct note_count {
  atomic_int n;
} note_count;

static void note_fn(void *arg) {
  atomic_fetch_add(&((note_count *)arg)->n, 1);
}

static sl_ring *bare_ring(void) {
  sl_ring_opts o = {.hwm = 1024, .lwm = 512, .mode = SL_RING_BYTES};
  sl_ring *r = NULL;
  ck_assert_int_eq(sl_ring_new(&r, &o), 0);
  return r;
}

static void ring_put(sl_ring *r, size_t cap) {
  sl_buf *b = NULL;
  ck_assert_int_eq(sl_buf_new(NULL, cap, &b), 0);
  ck_assert_int_eq(sl_buf_set_len(b, cap), 0);
  ck_assert_int_eq(sl_ring_try_write(r, b), 0);
}

static void ring_take(sl_ring *r) {
  sl_buf *b = NULL;
  ck_assert_int_eq(sl_ring_try_read(r, &b), 0);
  sl_buf_unref(b);
}

START_TEST(test_ring_drain_note_once) {
  sl_ring *r = bare_ring();
  note_count c = {0};
  sl__ring_set_note(r, SL__WRITER, note_fn, &c);
  /* Room: nothing armed. */
  ck_assert_int_eq(sl__ring_arm(r, SL__WRITER), 0);
  for (int i = 0; i < 4; i++)
    ring_put(r, 256);
  ck_assert_int_eq(sl__ring_arm(r, SL__WRITER), SL_AGAIN);
  ring_take(r); /* 768: above the low mark */
  ck_assert_int_eq(atomic_load(&c.n), 0);
  ring_take(r); /* 512: the drain */
  ck_assert_int_eq(atomic_load(&c.n), 1);
  ring_take(r);
  ring_take(r);
  ck_assert_int_eq(atomic_load(&c.n), 1);
  ck_assert_int_eq(sl__ring_arm(r, SL__WRITER), 0);
  ck_assert_int_eq(atomic_load(&c.n), 1);
  /* A second pause, a second drain. */
  for (int i = 0; i < 4; i++)
    ring_put(r, 256);
  ck_assert_int_eq(sl__ring_arm(r, SL__WRITER), SL_AGAIN);
  for (int i = 0; i < 4; i++)
    ring_take(r);
  ck_assert_int_eq(atomic_load(&c.n), 2);
  /* A stop fires an armed drain note too. */
  for (int i = 0; i < 4; i++)
    ring_put(r, 256);
  ck_assert_int_eq(sl__ring_arm(r, SL__WRITER), SL_AGAIN);
  ck_assert_int_eq(sl_ring_abort(r, SL_EIO), 0);
  ck_assert_int_eq(atomic_load(&c.n), 3);
  ck_assert_int_eq(sl__ring_arm(r, SL__WRITER), SL_EIO);
  sl_ring_free(r);
}
END_TEST

/* loop 0: data; 1: close; 2: abort. */
START_TEST(test_ring_ready_note) {
  sl_ring *r = bare_ring();
  note_count c = {0};
  sl__ring_set_note(r, SL__READER, note_fn, &c);
  ck_assert_int_eq(sl__ring_arm(r, SL__READER), SL_AGAIN);
  ck_assert_int_eq(atomic_load(&c.n), 0);
  switch (_i) {
  case 0:
    ring_put(r, 10);
    ck_assert_int_eq(atomic_load(&c.n), 1);
    ring_put(r, 10); /* not armed: no second note */
    ck_assert_int_eq(atomic_load(&c.n), 1);
    ck_assert_int_eq(sl__ring_arm(r, SL__READER), 0); /* data is there */
    ring_take(r);
    ring_take(r);
    ck_assert_int_eq(sl__ring_arm(r, SL__READER), SL_AGAIN);
    sl_ring_close(r);
    ck_assert_int_eq(atomic_load(&c.n), 2);
    ck_assert_int_eq(sl__ring_arm(r, SL__READER), SL_EOF);
    break;
  case 1:
    sl_ring_close(r);
    ck_assert_int_eq(atomic_load(&c.n), 1);
    ck_assert_int_eq(sl__ring_arm(r, SL__READER), SL_EOF);
    break;
  default:
    ck_assert_int_eq(sl_ring_abort(r, SL_EDATA), 0);
    ck_assert_int_eq(atomic_load(&c.n), 1);
    ck_assert_int_eq(sl__ring_arm(r, SL__READER), SL_EDATA);
    break;
  }
  ck_assert_int_eq(atomic_load(&c.n), _i == 0 ? 2 : 1);
  sl_ring_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Writer
 * ---------------------------------------------------------------------- */

typedef struct wgr {
  sl_pipeline *p;
  sl_stage *ws, *gs, *rs;
  sl_writer *w;
  sl_reader *r;
  gate g;
  counter drains, readies;
} wgr;

/* writer -> gate -> reader, started, with the gate shut. */
static void wgr_start(wgr *t) {
  memset(t, 0, sizeof *t);
  gate_init(&t->g);
  counter_init(&t->drains);
  counter_init(&t->readies);
  t->p = small_pipeline();
  ck_assert_int_eq(sl_writer_new(&t->ws, &t->w, "body"), 0);
  ck_assert_int_eq(sl_reader_new(&t->rs, &t->r, NULL), 0);
  t->gs = gate_stage(&t->g);
  ck_assert_int_eq(sl_writer_on_drain(t->w, on_drain, &t->drains), 0);
  ck_assert_int_eq(sl_reader_on_ready(t->r, on_ready, &t->readies), 0);
  ck_assert_int_eq(sl_pipeline_chain(t->p, t->ws, t->gs, t->rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(t->p), 0);
}

static void wgr_free(wgr *t) {
  gate_open(&t->g);
  sl_pipeline_free(t->p);
  gate_fini(&t->g);
  counter_fini(&t->drains);
  counter_fini(&t->readies);
}

static const unsigned char kib[1024] = {'x'};

/* Fill the writer's ring to the mark with the gate holding chunk `held`:
 * three writes return 1, the fourth (level 4096) returns 0. */
static void fill_to_mark(wgr *t, long held) {
  ck_assert_int_eq(sl_writer_write(t->w, kib, sizeof kib), 1);
  gate_wait_held(&t->g, held); /* it took that chunk: the ring is empty */
  sl_ring *ring = sl_stage_output(t->ws);
  ck_assert_uint_eq(sl_ring_level(ring), 0);
  for (int i = 1; i <= 3; i++) {
    ck_assert_int_eq(sl_writer_write(t->w, kib, sizeof kib), 1);
    ck_assert_uint_eq(sl_ring_level(ring), 1024 * (size_t)i);
  }
  ck_assert_int_eq(sl_writer_write(t->w, kib, sizeof kib), 0);
  ck_assert_uint_eq(sl_ring_level(ring), 4096);
}

START_TEST(test_writer_marks_and_again) {
  wgr t;
  wgr_start(&t);
  ck_assert_int_eq(sl_writer_on_drain(t.w, on_drain, &t.drains), SL_EBUSY);
  fill_to_mark(&t, 0);
  /* Refused until the drain, nothing taken. */
  ck_assert_int_eq(sl_writer_write(t.w, kib, sizeof kib), SL_EBUSY);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), SL_EBUSY);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 0), SL_EBUSY);
  ck_assert_int_eq(sl_writer_flush(t.w), SL_EBUSY);
  ck_assert_int_eq(sl_writer_ack(t.w), SL_AGAIN);
  ck_assert_uint_eq(sl_ring_level(sl_stage_output(t.ws)), 4096);
  ck_assert_int_eq(readable_now(sl_writer_fd(t.w)), 0);
  ck_assert_int_eq(counter_get(&t.drains), 0);
  /* The gate lets everything through: the consumer empties the ring. */
  gate_allow(&t.g, 5);
  ck_assert(wait_readable(sl_writer_fd(t.w)));
  counter_wait(&t.drains, 1);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 0), 1);
  ck_assert_int_eq(read_chunks(t.r, 5), 5 * 1024);
  ck_assert_int_eq(sl_writer_end(t.w), 0);
  ck_assert_int_eq(sl_writer_end(t.w), SL_ECLOSED);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), SL_ECLOSED);
  sl_buf *b;
  int rc;
  while ((rc = sl_reader_read(t.r, &b)) == SL_AGAIN)
    ck_assert(wait_readable(sl_reader_fd(t.r)));
  ck_assert_int_eq(rc, SL_EOF);
  ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  ck_assert_int_eq(counter_get(&t.drains), 1);
  wgr_free(&t);
}
END_TEST

/* Once per drain, over many: the callback count goes up by one, and the
 * descriptor holds exactly one poke (counted without reading it, see
 * pokes_held), from the drain until a call takes it. */
#define DRAIN_ROUNDS 24

START_TEST(test_writer_fd_once_per_drain) {
  wgr t;
  wgr_start(&t);
  int fd = sl_writer_fd(t.w);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(readable_now(fd), 0);
  ck_assert_int_eq(pokes_held(fd), 0);
  long held = 0;
  for (int round = 1; round <= DRAIN_ROUNDS; round++) {
    fill_to_mark(&t, held);
    ck_assert_int_eq(readable_now(fd), 0);
    ck_assert_int_eq(pokes_held(fd), 0);
    gate_allow(&t.g, 5);
    held += 5;
    ck_assert(wait_readable(fd));
    counter_wait(&t.drains, round);
    /* The note poked before it called back; nothing pokes again. */
    ck_assert_int_eq(pokes_held(fd), 1);
    ck_assert_int_eq(counter_get(&t.drains), round);
    /* Readable until taken, by a write or an ack. */
    ck_assert_int_eq(readable_now(fd), 1);
    if (round % 2 == 0)
      ck_assert_int_eq(sl_writer_ack(t.w), 0);
    else
      ck_assert_int_eq(sl_writer_write(t.w, kib, 0), 1);
    ck_assert_int_eq(readable_now(fd), 0);
    ck_assert_int_eq(pokes_held(fd), 0);
    ck_assert_int_eq(sl_writer_ack(t.w), 0); /* nothing more to take */
    ck_assert_int_eq(read_chunks(t.r, 5), 5 * 1024);
    ck_assert_int_eq(readable_now(fd), 0);
    ck_assert_int_eq(counter_get(&t.drains), round);
  }
  ck_assert_int_eq(sl_writer_end(t.w), 0);
  ck_assert_int_eq(readable_now(fd), 0);
  ck_assert_int_eq(pokes_held(fd), 0);
  ck_assert_int_eq(counter_get(&t.drains), DRAIN_ROUNDS);
  ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  wgr_free(&t);
}
END_TEST

/* A write larger than the room: the tail waits in the writer, goes first
 * after the drain, and nothing is lost or reordered. */
START_TEST(test_writer_large_write_pending) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  unsigned char *data = pu_pattern(10000, 7);
  sl_ring *ring = sl_stage_output(ws);
  ck_assert_int_eq(sl_writer_write(w, data, 10000), 0);
  ck_assert_uint_eq(sl_ring_level(ring), 4096);
  ck_assert_int_eq(sl_writer_write(w, data, 1), SL_EBUSY);
  unsigned char got[12000];
  size_t n = 0, k;
  int rc;
  if (_i == 1) {
    /* The drain comes only once the whole tail is queued. */
    while (!readable_now(sl_writer_fd(w))) {
      ck_assert_int_eq(sl_reader_read_bytes(r, got + n, 1024, &k), 0);
      n += k;
    }
    ck_assert_uint_eq(pu_ring_stats(ring).bytes_in, 10000);
    ck_assert_uint_lt(sl_ring_level(ring), 4096);
    ck_assert_int_eq(sl_writer_write(w, data, 0), 1);
    ck_assert_int_eq(readable_now(sl_writer_fd(w)), 0);
  }
  /* End with the tail still pending (loop 0): the reads queue it, and
   * the last of them closes the ring. */
  ck_assert_int_eq(sl_writer_end(w), 0);
  while ((rc = sl_reader_read_bytes(r, got + n, sizeof got - n, &k)) == 0)
    n += k;
  ck_assert_int_eq(rc, SL_EOF);
  ck_assert_uint_eq(n, 10000);
  ck_assert(memcmp(got, data, n) == 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  free(data);
  sl_pipeline_free(p);
}
END_TEST

START_TEST(test_writer_enomem_takes_nothing) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  /* Fail each allocation of a two-piece write in turn: each failure
   * takes nothing, until the write goes through. */
  unsigned char *data = pu_pattern(2000, 3);
  int rc, failures = 0;
  for (long k = 1;; k++) {
    fail_alloc_arm(k);
    rc = sl_writer_write(w, data, 2000);
    fail_alloc_disarm();
    if (rc != SL_ENOMEM)
      break;
    failures++;
    ck_assert_uint_eq(sl_ring_level(sl_stage_output(ws)), 0);
  }
  ck_assert_int_eq(rc, 1);
  ck_assert_int_ge(failures, 2);
  ck_assert_int_eq(sl_writer_end(w), 0);
  unsigned char got[2100];
  size_t n = 0, k;
  while ((rc = sl_reader_read_bytes(r, got + n, sizeof got - n, &k)) == 0)
    n += k;
  ck_assert_int_eq(rc, SL_EOF);
  ck_assert_uint_eq(n, 2000);
  ck_assert(memcmp(got, data, n) == 0);
  free(data);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
}
END_TEST

START_TEST(test_writer_bad_args) {
  sl_stage *ws;
  sl_writer *w;
  ck_assert_int_eq(sl_writer_new(NULL, &w, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_writer_new(&ws, NULL, NULL), SL_EINVAL);
  ck_assert_int_eq(sl_writer_new(&ws, &w, ""), SL_EINVAL);
  ck_assert_int_eq(sl_writer_new(&ws, &w, "w"), 0);
  ck_assert_int_eq(sl_writer_write(w, kib, 1), SL_EINVAL); /* not started */
  ck_assert_int_eq(sl_writer_write(w, NULL, 1), SL_EINVAL);
  ck_assert_int_eq(sl_writer_write(NULL, kib, 1), SL_EINVAL);
  ck_assert_int_eq(sl_writer_end(w), SL_EINVAL);
  ck_assert_int_eq(sl_writer_abort(w, SL_EIO), SL_EINVAL);
  ck_assert_int_eq(sl_writer_fd(NULL), SL_EINVAL);
  ck_assert_int_ge(sl_writer_fd(w), 0);
  sl_stage_free(ws); /* frees w */

  sl_stage *rs;
  sl_reader *r;
  sl_buf *b;
  size_t n;
  ck_assert_int_eq(sl_reader_new(&rs, &r, "r"), 0);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_EINVAL);
  ck_assert_int_eq(sl_reader_read(NULL, &b), SL_EINVAL);
  char one[1];
  ck_assert_int_eq(sl_reader_read_bytes(r, one, 0, &n), SL_EINVAL);
  ck_assert_int_eq(sl_reader_close(r), SL_EINVAL);
  sl_stage_free(rs);

  /* A writer feeding two consumers is refused at start. */
  sl_pipeline *p = small_pipeline();
  sl_stage *r1, *r2;
  sl_reader *x1, *x2;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&r1, &x1, "r1"), 0);
  ck_assert_int_eq(sl_reader_new(&r2, &x2, "r2"), 0);
  ck_assert_int_eq(sl_pipeline_link(p, ws, r1), 0);
  ck_assert_int_eq(sl_pipeline_link(p, ws, r2), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EINVAL);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EINVAL);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Reader
 * ---------------------------------------------------------------------- */

START_TEST(test_reader_states_and_fd) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  counter readies;
  counter_init(&readies);
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_reader_on_ready(r, on_ready, &readies), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  int fd = sl_reader_fd(r);
  sl_buf *b;
  ck_assert_int_eq(readable_now(fd), 0);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_AGAIN);
  ck_assert_ptr_null(b);
  ck_assert_int_eq(readable_now(fd), 0);
  /* The writer runs on this thread: its write fires the note here. */
  ck_assert_int_eq(pokes_held(fd), 0);
  ck_assert_int_eq(sl_writer_write(w, "ab", 2), 1);
  ck_assert_int_eq(readable_now(fd), 1);
  ck_assert_int_eq(counter_get(&readies), 1);
  ck_assert_int_eq(sl_writer_write(w, "c", 1), 1);
  ck_assert_int_eq(counter_get(&readies), 1); /* not armed again yet */
  ck_assert_int_eq(pokes_held(fd), 1);
  ck_assert_int_eq(sl_reader_read(r, &b), 0);
  ck_assert_uint_eq(sl_buf_len(b), 2);
  ck_assert(memcmp(sl_buf_data(b), "ab", 2) == 0);
  sl_buf_unref(b);
  ck_assert_int_eq(readable_now(fd), 1); /* "c" is ready */
  ck_assert_int_eq(sl_reader_read(r, &b), 0);
  sl_buf_unref(b);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_AGAIN);
  ck_assert_int_eq(readable_now(fd), 0);
  /* A flush marker never reaches the caller. */
  ck_assert_int_eq(sl_writer_flush(w), 1);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_AGAIN);
  ck_assert_ptr_null(b);
  ck_assert_int_eq(readable_now(fd), 0);
  /* The end: readable, SL_EOF, and it stays so. */
  int before = counter_get(&readies);
  ck_assert_int_eq(sl_writer_end(w), 0);
  ck_assert_int_eq(readable_now(fd), 1);
  ck_assert_int_eq(counter_get(&readies), before + 1);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_EOF);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_EOF);
  ck_assert_int_eq(readable_now(fd), 1);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
  counter_fini(&readies);
}
END_TEST

/* The pipeline finishes with chunks still in the reader's ring; they
 * stay readable, then SL_EOF. The writer is a participant: nothing
 * finishes before its end. */
START_TEST(test_reader_leftovers_after_finish) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs, *xs;
  sl_writer *w;
  sl_reader *r;
  pu_xf x;
  pu_finished f;
  pu_xf_init(&x, PU_UPPER);
  pu_finished_init(&f);
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_ptr_nonnull(xs = pu_xf_stage("upper", &x, false));
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &f), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, xs, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_writer_write(w, "abc", 3), 1);
  ck_assert_int_eq(sl_writer_write(w, "de", 2), 1);
  /* The transform is done with both chunks, waiting for more. */
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(ws), SL__READER), 0);
  ck_assert_int_eq(atomic_load(&f.calls), 0);
  ck_assert_int_eq(sl_writer_end(w), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_int_eq(atomic_load(&f.calls), 1);
  ck_assert_int_eq(atomic_load(&f.status), 0);
  char got[8];
  size_t n = 0, k;
  int rc;
  while ((rc = sl_reader_read_bytes(r, got + n, sizeof got - n, &k)) == 0)
    n += k;
  ck_assert_int_eq(rc, SL_EOF);
  ck_assert_uint_eq(n, 5);
  ck_assert(memcmp(got, "ABCDE", 5) == 0);
  sl_pipeline_free(p);
}
END_TEST

/* Leftovers never read are released by sl_pipeline_free. */
START_TEST(test_reader_unread_released) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_writer_write(w, kib, sizeof kib), 1);
  char c[10];
  size_t n;
  ck_assert_int_eq(sl_reader_read_bytes(r, c, sizeof c, &n), 0); /* keeps */
  ck_assert_uint_eq(n, 10);
  ck_assert_int_eq(sl_writer_end(w), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p); /* teardown checks nothing is left */
}
END_TEST

/* ------------------------------------------------------------------------
 * Round trips through a poll loop
 * ---------------------------------------------------------------------- */

/* Drive data through writer -> stages -> reader from one thread: write in
 * pieces of `piece` bytes while the writer says 1, poll the writer's
 * descriptor after a 0, read whatever is ready. *out gets what came out
 * (malloc'd). Returns the pipeline's status. */
static int poll_loop(sl_pipeline *p, sl_writer *w, sl_reader *r,
                     const unsigned char *data, size_t len, size_t piece,
                     unsigned char **out, size_t *outlen) {
  size_t off = 0, cap = len + 64, n = 0;
  unsigned char *o = malloc(cap);
  bool paused = false, ended = false, eof = false;
  int rc = 0;
  while (!eof) {
    if (!paused && !ended) {
      if (off == len) {
        rc = sl_writer_end(w);
        if (rc != 0)
          break;
        ended = true;
      } else {
        size_t k = len - off < piece ? len - off : piece;
        rc = sl_writer_write(w, data + off, k);
        if (rc < 0)
          break;
        test_check(rc != SL_EBUSY);
        off += k;
        paused = rc == 0;
      }
    }
    for (;;) {
      sl_buf *b;
      rc = sl_reader_read(r, &b);
      if (rc != 0)
        break;
      test_check(!sl_buf_is_flush(b));
      if (n + sl_buf_len(b) > cap) {
        cap = 2 * (n + sl_buf_len(b));
        o = realloc(o, cap);
      }
      memcpy(o + n, sl_buf_data(b), sl_buf_len(b));
      n += sl_buf_len(b);
      sl_buf_unref(b);
    }
    if (rc == SL_EOF) {
      eof = true;
      rc = 0;
      break;
    }
    if (rc != SL_AGAIN)
      break;
    if (paused || ended) {
      struct pollfd pfd[2] = {{.fd = sl_reader_fd(r), .events = POLLIN},
                              {.fd = sl_writer_fd(w), .events = POLLIN}};
      int k = poll(pfd, paused ? 2 : 1, -1);
      test_check(k > 0 || errno == EINTR);
      if (paused && (pfd[1].revents & POLLIN)) {
        int a = sl_writer_ack(w);
        test_check_msg(a == 0, "ack %s", sl_err_name(a));
        paused = false;
      }
    }
  }
  *out = o;
  *outlen = n;
  int st = sl_pipeline_wait(p);
  return rc ? rc : st;
}

static const size_t sizes[] = {0, 1, 2, 3, 4096, 4097, 3u << 20};

/* writer -> upper -> reader, each size. */
START_TEST(test_round_trip_upper) {
  size_t len = sizes[_i];
  sl_pipeline_opts o = {.buf_size = 4096, .hwm = 16384};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  sl_stage *ws, *rs, *xs;
  sl_writer *w;
  sl_reader *r;
  pu_xf x;
  pu_xf_init(&x, PU_UPPER);
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_ptr_nonnull(xs = pu_xf_stage("upper", &x, false));
  ck_assert_int_eq(sl_pipeline_chain(p, ws, xs, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  unsigned char *data = pu_mixed_data(len, len + 1), *out;
  size_t n;
  ck_assert_int_eq(poll_loop(p, w, r, data, len, 3000, &out, &n), 0);
  ck_assert_uint_eq(n, len);
  for (size_t i = 0; i < len; i++)
    test_check_msg(out[i] == pu_upper(data[i]), "byte %zu", i);
  free(data);
  free(out);
  sl_pipeline_free(p);
}
END_TEST

/* writer -> gzip -> gunzip -> reader, each size, byte-exact. */
START_TEST(test_round_trip_gzip) {
  size_t len = sizes[_i];
  sl_pipeline_opts o = {.buf_size = 4096, .hwm = 16384};
  sl_pipeline *p;
  ck_assert_int_eq(sl_pipeline_new(&p, &o), 0);
  sl_stage *ws, *rs, *gz, *gunz;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_gzip_new(&gz, NULL), 0);
  ck_assert_int_eq(sl_gunzip_new(&gunz, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, gz, gunz, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  unsigned char *data = pu_mixed_data(len, len + 3), *out;
  size_t n;
  ck_assert_int_eq(poll_loop(p, w, r, data, len, 5000, &out, &n), 0);
  ck_assert_uint_eq(n, len);
  ck_assert(len == 0 || memcmp(out, data, len) == 0);
  free(data);
  free(out);
  sl_pipeline_free(p);
}
END_TEST

/* A flush through gzip: what was written before it can be inflated from
 * what the reader got, before the end. */
START_TEST(test_flush_through_gzip) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs, *gz;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_gzip_new(&gz, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, gz, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_writer_write(w, "hello, bridge", 13), 1);
  ck_assert_int_eq(sl_writer_flush(w), 1);
  z_stream z;
  memset(&z, 0, sizeof z);
  ck_assert_int_eq(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
  unsigned char got[64];
  z.next_out = got;
  z.avail_out = sizeof got;
  while (z.total_out < 13) {
    unsigned char in[256];
    size_t k;
    int rc = sl_reader_read_bytes(r, in, sizeof in, &k);
    if (rc == SL_AGAIN) {
      ck_assert(wait_readable(sl_reader_fd(r)));
      continue;
    }
    ck_assert_int_eq(rc, 0);
    z.next_in = in;
    z.avail_in = (uInt)k;
    int zr = inflate(&z, Z_SYNC_FLUSH);
    ck_assert(zr == Z_OK || zr == Z_BUF_ERROR);
    ck_assert_uint_eq(z.avail_in, 0);
  }
  ck_assert_uint_eq(z.total_out, 13);
  ck_assert(memcmp(got, "hello, bridge", 13) == 0);
  inflateEnd(&z);
  ck_assert_int_eq(sl_writer_end(w), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Failure, cancel, early close
 * ---------------------------------------------------------------------- */

START_TEST(test_failure_reaches_both_ends) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs, *xs;
  sl_writer *w;
  sl_reader *r;
  pu_xf x;
  pu_xf_init(&x, PU_IDENTITY);
  x.fault.at = 1;
  x.fault.code = SL_EDATA;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_ptr_nonnull(xs = pu_xf_stage("bad", &x, false));
  ck_assert_int_eq(sl_pipeline_chain(p, ws, xs, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_writer_write(w, "one", 3), 1);
  ck_assert_int_eq(sl_writer_write(w, "two", 3), 1);
  /* The failure makes both descriptors readable, for good. */
  ck_assert(wait_readable(sl_writer_fd(w)));
  ck_assert(wait_readable(sl_reader_fd(r)));
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EDATA); /* the writer ended too */
  ck_assert_int_eq(sl_writer_write(w, "x", 1), SL_EDATA);
  ck_assert_int_eq(sl_writer_flush(w), SL_EDATA);
  ck_assert_int_eq(sl_writer_ack(w), SL_EDATA);
  sl_buf *b;
  ck_assert_int_eq(sl_reader_read(r, &b), SL_EDATA);
  ck_assert_int_eq(sl_reader_read(r, &b), SL_EDATA);
  ck_assert_int_eq(readable_now(sl_writer_fd(w)), 1);
  ck_assert_int_eq(readable_now(sl_reader_fd(r)), 1);
  ck_assert_int_eq(sl_writer_end(w), SL_EDATA);
  ck_assert_str_eq(sl_pipeline_error(p), "bad: boom at 1");
  sl_pipeline_free(p);
}
END_TEST

/* Cancel while the writer is paused and the reader starves: the drain
 * callback fires once for the failure, both ends see SL_ECANCELED. */
START_TEST(test_cancel_paused) {
  wgr t;
  wgr_start(&t);
  fill_to_mark(&t, 0);
  ck_assert_int_eq(readable_now(sl_writer_fd(t.w)), 0);
  sl_pipeline_cancel(t.p);
  gate_poke(&t.g);
  ck_assert_int_eq(readable_now(sl_writer_fd(t.w)), 1);
  ck_assert_int_eq(counter_get(&t.drains), 1);
  ck_assert_int_eq(readable_now(sl_reader_fd(t.r)), 1);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), SL_ECANCELED);
  sl_buf *b;
  ck_assert_int_eq(sl_reader_read(t.r, &b), SL_ECANCELED);
  ck_assert_int_eq(sl_pipeline_wait(t.p), SL_ECANCELED);
  ck_assert_int_eq(counter_get(&t.drains), 1);
  ck_assert_int_eq(sl_writer_end(t.w), SL_ECANCELED);
  wgr_free(&t);
}
END_TEST

/* Cancel before start: the writer counts as ended, wait returns. */
START_TEST(test_cancel_before_start) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  sl_pipeline_cancel(p);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_ECANCELED);
  ck_assert_int_eq(readable_now(sl_writer_fd(w)), 1);
  ck_assert_int_eq(readable_now(sl_reader_fd(r)), 1);
  ck_assert_int_eq(sl_writer_write(w, "a", 1), SL_ECANCELED);
  sl_buf *b;
  ck_assert_int_eq(sl_reader_read(r, &b), SL_ECANCELED);
  sl_pipeline_free(p);
}
END_TEST

/* Free without end: the writer is ended by the cancel inside free. */
START_TEST(test_free_without_end) {
  wgr t;
  wgr_start(&t);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 10), 1);
  wgr_free(&t);
}
END_TEST

START_TEST(test_writer_abort) {
  wgr t;
  wgr_start(&t);
  gate_open(&t.g);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 10), 1);
  ck_assert_int_eq(sl_writer_abort(t.w, SL_EIO), 0);
  ck_assert_int_eq(sl_pipeline_wait(t.p), SL_EIO);
  ck_assert_str_eq(sl_pipeline_error(t.p), "body: i/o error");
  ck_assert_int_eq(sl_stage_status(t.ws), SL_EIO);
  ck_assert_int_eq(sl_stage_status(t.gs), SL_ECANCELED);
  ck_assert_int_eq(readable_now(sl_reader_fd(t.r)), 1);
  sl_buf *b;
  ck_assert_int_eq(sl_reader_read(t.r, &b), SL_EIO);
  wgr_free(&t);
}
END_TEST

/* Abort after end. Loop 0: the gate still holds the first chunk, so the
 * pipeline has not finished: the abort fails it, as Node's destroy(err)
 * after end() and before 'finish'. Loop 1: the same with the end left to
 * the note (the writer paused at the mark). Loop 2: once the pipeline has
 * finished, an abort changes nothing. */
START_TEST(test_writer_abort_after_end) {
  wgr t;
  sl_buf *b;
  int rc;
  wgr_start(&t);
  if (_i == 0) {
    ck_assert_int_eq(sl_writer_write(t.w, kib, 10), 1);
    gate_wait_held(&t.g, 0);
  } else if (_i == 1) {
    fill_to_mark(&t, 0);
  } else {
    gate_open(&t.g);
    ck_assert_int_eq(sl_writer_write(t.w, kib, 10), 1);
  }
  ck_assert_int_eq(sl_writer_end(t.w), 0);
  if (_i == 2) {
    ck_assert_int_eq(read_chunks(t.r, 1), 10);
    while ((rc = sl_reader_read(t.r, &b)) == SL_AGAIN)
      ck_assert(wait_readable(sl_reader_fd(t.r)));
    ck_assert_int_eq(rc, SL_EOF);
    ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  }
  ck_assert_int_eq(sl_writer_abort(t.w, SL_EIO), 0);
  gate_poke(&t.g); /* a held chunk sees the failure */
  if (_i == 2) {
    ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
    ck_assert_ptr_null(sl_pipeline_error(t.p));
    ck_assert_int_eq(sl_stage_status(t.ws), 0);
    ck_assert_int_eq(sl_reader_read(t.r, &b), SL_EOF);
  } else {
    ck_assert_int_eq(sl_pipeline_wait(t.p), SL_EIO);
    ck_assert_str_eq(sl_pipeline_error(t.p), "body: i/o error");
    ck_assert_int_eq(sl_stage_status(t.ws), SL_EIO);
    ck_assert_int_eq(sl_reader_read(t.r, &b), SL_EIO);
  }
  ck_assert_int_eq(sl_writer_end(t.w), SL_ECLOSED);
  ck_assert_int_eq(counter_get(&t.drains), 0);
  wgr_free(&t);
}
END_TEST

/* The ring refuses for good while a call queues: a failure that lands
 * between a call's first look at the pipeline and its queueing, made
 * deterministic here by aborting the writer's ring directly while the
 * consumer holds a chunk away from it. Each call returns the stop code
 * (the ring's, as the pipeline has no error yet), not 1, and a buffer
 * given to sl_writer_write_buf is still the caller's. */
START_TEST(test_writer_stop_while_queueing) {
  wgr t;
  sl_buf *b;
  wgr_start(&t);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 10), 1);
  gate_wait_held(&t.g, 0);
  ck_assert_int_eq(sl_ring_abort(sl_stage_output(t.ws), SL_EIO), 0);
  ck_assert_int_eq(sl_writer_write(t.w, kib, sizeof kib), SL_EIO);
  static const unsigned char three[3 * 1024];
  ck_assert_int_eq(sl_writer_write(t.w, three, sizeof three), SL_EIO);
  ck_assert_int_eq(sl_writer_buf(t.w, 0, &b), 0);
  ck_assert_int_eq(sl_buf_set_len(b, 5), 0);
  ck_assert_int_eq(sl_writer_write_buf(t.w, b), SL_EIO);
  ck_assert_uint_eq(sl_buf_refcount(b), 1); /* ours, and only ours */
  sl_buf_unref(b);
  ck_assert_int_eq(sl_writer_flush(t.w), SL_EIO);
  ck_assert_int_eq(readable_now(sl_writer_fd(t.w)), 0); /* not paused */
  /* Once the pipeline has failed, its first error is what calls say. */
  sl_pipeline_cancel(t.p);
  gate_poke(&t.g);
  ck_assert_int_eq(sl_pipeline_wait(t.p), SL_ECANCELED);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), SL_ECANCELED);
  wgr_free(&t);
}
END_TEST

/* The consumer goes away: the pipeline fails with SL_EPIPE. */
START_TEST(test_reader_close_early) {
  wgr t;
  wgr_start(&t);
  gate_open(&t.g);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 100), 1);
  ck_assert_int_eq(read_chunks(t.r, 1), 100);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 100), 1);
  ck_assert_int_eq(sl_reader_close(t.r), 0);
  ck_assert_int_eq(sl_reader_close(t.r), 0);
  ck_assert(wait_readable(sl_writer_fd(t.w)));
  ck_assert_int_eq(sl_pipeline_wait(t.p), SL_EPIPE);
  ck_assert_str_eq(sl_pipeline_error(t.p),
                   "reader: consumer closed before the end of the stream");
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), SL_EPIPE);
  sl_buf *b;
  ck_assert_int_eq(sl_reader_read(t.r, &b), SL_EPIPE);
  wgr_free(&t);
}
END_TEST

/* The consumer has had enough (sl_reader_done): the gate feeding it and
 * the writer feeding that are stopped, the writer's part ends by itself
 * (its calls say SL_DONE, its descriptor turns readable), and the
 * pipeline ends with 0, every buffer released. Loop 1: the writer is
 * paused at the mark with the gate holding a chunk: the stop wakes both,
 * and the drain callback hears of it once. */
START_TEST(test_reader_done_early_succeeds) {
  wgr t;
  sl_buf *b;
  wgr_start(&t);
  if (_i == 0) {
    gate_open(&t.g);
    ck_assert_int_eq(sl_writer_write(t.w, kib, 100), 1);
    ck_assert_int_eq(read_chunks(t.r, 1), 100);
    ck_assert_int_eq(sl_writer_write(t.w, kib, 100), 1);
  } else {
    fill_to_mark(&t, 0);
  }
  ck_assert_int_eq(sl_reader_done(t.r), 0);
  ck_assert_int_eq(sl_reader_done(t.r), 0);
  gate_poke(&t.g); /* a held chunk sees the stop */
  ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  ck_assert_ptr_null(sl_pipeline_error(t.p));
  ck_assert(wait_readable(sl_writer_fd(t.w)));
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), SL_DONE);
  ck_assert_int_eq(sl_writer_flush(t.w), SL_DONE);
  ck_assert_int_eq(sl_writer_end(t.w), 0);
  ck_assert_int_eq(sl_reader_read(t.r, &b), SL_EOF);
  ck_assert_int_eq(sl_reader_close(t.r), 0); /* too late to fail it */
  ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  ck_assert_int_eq(sl_stage_status(t.rs), 0);
  ck_assert_int_eq(sl_stage_status(t.gs), SL_DONE);
  ck_assert_int_eq(counter_get(&t.drains), _i);
  ck_assert_uint_eq(pu_pool_stats(t.p).outstanding, 0);
  wgr_free(&t);
}
END_TEST

/* After sl_writer_abort(w, err) the writer's calls return err, as a ring
 * returns its abort code after sl_ring_abort, not SL_ECLOSED. Loop 0: the
 * abort fails the pipeline; 1: the pipeline failed before (its error is
 * the one); 2: it had finished (its outcome stays 0; the writer still
 * says err). */
START_TEST(test_writer_calls_after_abort_return_err) {
  wgr t;
  sl_buf *b;
  int rc;
  wgr_start(&t);
  if (_i == 1)
    sl_pipeline_cancel(t.p);
  if (_i == 2) {
    gate_open(&t.g);
    ck_assert_int_eq(sl_writer_write(t.w, kib, 10), 1);
    ck_assert_int_eq(sl_writer_end(t.w), 0);
    ck_assert_int_eq(read_chunks(t.r, 1), 10);
    while ((rc = sl_reader_read(t.r, &b)) == SL_AGAIN)
      ck_assert(wait_readable(sl_reader_fd(t.r)));
    ck_assert_int_eq(rc, SL_EOF);
    ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  }
  ck_assert_int_eq(sl_writer_abort(t.w, SL_EMSGSIZE), 0);
  gate_poke(&t.g);
  int want = _i == 1 ? SL_ECANCELED : SL_EMSGSIZE;
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), want);
  ck_assert_int_eq(sl_writer_write(t.w, kib, 0), want);
  ck_assert_int_eq(sl_writer_flush(t.w), want);
  ck_assert_int_eq(sl_writer_ack(t.w), want);
  ck_assert_int_eq(sl_writer_buf(t.w, 1, &b), 0);
  ck_assert_int_eq(sl_writer_write_buf(t.w, b), want);
  sl_buf_unref(b); /* still the caller's */
  ck_assert_int_eq(sl_writer_end(t.w), SL_ECLOSED);
  ck_assert_int_eq(sl_pipeline_wait(t.p), _i == 2 ? 0 : want);
  wgr_free(&t);
}
END_TEST

/* Close after the whole stream was read changes nothing. */
START_TEST(test_reader_close_after_eof) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_writer_end(w), 0);
  sl_buf *b;
  ck_assert_int_eq(sl_reader_read(r, &b), SL_EOF);
  ck_assert_int_eq(sl_reader_close(r), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_ptr_null(sl_pipeline_error(p));
  ck_assert_int_eq(sl_stage_status(rs), 0);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------- */

START_TEST(test_one_thread) {
  wgr t;
  wgr_start(&t);
  int threads = 0;
  for (size_t i = 0; i < sl_pipeline_stage_count(t.p); i++)
    threads += sl_pipeline_stage(t.p, i)->nthreads;
  ck_assert_int_eq(threads, 1);
  ck_assert_int_eq(t.ws->nthreads, 0);
  ck_assert_int_eq(t.rs->nthreads, 0);
  /* While it runs, the process has exactly one more thread. */
  ck_assert_int_eq(sl_writer_write(t.w, kib, 1), 1);
  gate_wait_held(&t.g, 0);
  ck_assert(pu_threads_are(base_threads, 1, 1));
  gate_open(&t.g);
  ck_assert_int_eq(sl_writer_end(t.w), 0);
  ck_assert_int_eq(read_chunks(t.r, 1), 1);
  ck_assert_int_eq(sl_pipeline_wait(t.p), 0);
  wgr_free(&t);
}
END_TEST

/* writer -> reader: no thread at all, finished on the writer's end. */
START_TEST(test_no_thread) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  pu_finished f;
  pu_finished_init(&f);
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  ck_assert_int_eq(sl_pipeline_on_finished(p, pu_finished_cb, &f), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert(pu_threads_are(base_threads, 0, 0));
  ck_assert_int_eq(sl_writer_write(w, "z", 1), 1);
  ck_assert_int_eq(atomic_load(&f.calls), 0);
  ck_assert_int_eq(sl_writer_end(w), 0);
  ck_assert_int_eq(atomic_load(&f.calls), 1); /* on this thread */
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  char c;
  size_t n;
  ck_assert_int_eq(sl_reader_read_bytes(r, &c, 1, &n), 0);
  ck_assert_int_eq(c, 'z');
  ck_assert_int_eq(sl_reader_read_bytes(r, &c, 1, &n), SL_EOF);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Zero copy
 * ---------------------------------------------------------------------- */

START_TEST(test_write_buf_zero_copy) {
  sl_pipeline *p = small_pipeline();
  sl_stage *ws, *rs;
  sl_writer *w;
  sl_reader *r;
  ck_assert_int_eq(sl_writer_new(&ws, &w, NULL), 0);
  ck_assert_int_eq(sl_reader_new(&rs, &r, NULL), 0);
  sl_buf *b;
  ck_assert_int_eq(sl_writer_buf(w, 0, &b), SL_EINVAL); /* no pipeline */
  ck_assert_int_eq(sl_pipeline_chain(p, ws, rs, NULL), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_writer_buf(w, 0, &b), 0);
  ck_assert_uint_ge(sl_buf_cap(b), 1024);
  memset(sl_buf_data(b), 'q', 1024);
  ck_assert_int_eq(sl_buf_set_len(b, 1024), 0);
  sl_buf *same = b;
  ck_assert_int_eq(sl_writer_write_buf(w, b), 1);
  sl_buf *obj;
  test_counter dtors;
  test_counter_init(&dtors);
  ck_assert_int_eq(sl_buf_new_object(NULL, &dtors, test_counter_dtor, &obj), 0);
  ck_assert_int_eq(sl_writer_write_buf(w, obj), SL_EINVAL); /* still ours */
  sl_buf_unref(obj);
  ck_assert_int_eq(test_counter_get(&dtors), 1);
  ck_assert_int_eq(sl_reader_read(r, &b), 0);
  ck_assert_ptr_eq(b, same); /* the very buffer: no copy */
  sl_buf_unref(b);
  ck_assert_int_eq(sl_writer_end(w), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *bridge_suite(void) {
  Suite *s = suite_create("bridge");
  TCase *tc;

  tc = tcase("ring notes", 30);
  tcase_add_test(tc, test_ring_drain_note_once);
  tcase_add_loop_test(tc, test_ring_ready_note, 0, 3);
  suite_add_tcase(s, tc);

  tc = tcase("writer", 30);
  tcase_add_test(tc, test_writer_marks_and_again);
  tcase_add_test(tc, test_writer_fd_once_per_drain);
  tcase_add_loop_test(tc, test_writer_large_write_pending, 0, 2);
  tcase_add_test(tc, test_writer_enomem_takes_nothing);
  tcase_add_test(tc, test_writer_bad_args);
  tcase_add_test(tc, test_write_buf_zero_copy);
  suite_add_tcase(s, tc);

  tc = tcase("reader", 30);
  tcase_add_test(tc, test_reader_states_and_fd);
  tcase_add_test(tc, test_reader_leftovers_after_finish);
  tcase_add_test(tc, test_reader_unread_released);
  suite_add_tcase(s, tc);

  tc = tcase("round trip", 120);
  tcase_add_loop_test(tc, test_round_trip_upper, 0,
                      sizeof sizes / sizeof sizes[0]);
  tcase_add_loop_test(tc, test_round_trip_gzip, 0,
                      sizeof sizes / sizeof sizes[0]);
  tcase_add_test(tc, test_flush_through_gzip);
  suite_add_tcase(s, tc);

  tc = tcase("failure", 30);
  tcase_add_test(tc, test_failure_reaches_both_ends);
  tcase_add_test(tc, test_cancel_paused);
  tcase_add_test(tc, test_cancel_before_start);
  tcase_add_test(tc, test_free_without_end);
  tcase_add_test(tc, test_writer_abort);
  tcase_add_loop_test(tc, test_writer_abort_after_end, 0, 3);
  tcase_add_test(tc, test_writer_stop_while_queueing);
  tcase_add_test(tc, test_reader_close_early);
  tcase_add_loop_test(tc, test_reader_done_early_succeeds, 0, 2);
  tcase_add_loop_test(tc, test_writer_calls_after_abort_return_err, 0, 3);
  tcase_add_test(tc, test_reader_close_after_eof);
  suite_add_tcase(s, tc);

  tc = tcase("threads", 30);
  tcase_add_test(tc, test_one_thread);
  tcase_add_test(tc, test_no_thread);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(bridge_suite());
}
