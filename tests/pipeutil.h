/* SPDX-License-Identifier: MIT */
/*
 * Stages shared by the pipeline suites (check_pipeline, check_backpressure,
 * check_errors): a memory source, transforms, a memory sink and an object
 * source and sink, with the counters the tests assert on, faults they can
 * inject at a chosen chunk, and a gate that holds the sink back.
 *
 * Every context belongs to the test (usually on its stack): destroy only
 * counts, so a test can assert that destroy ran exactly once, and only
 * after sl_pipeline_free or sl_stage_free. Ops run on stage threads and
 * never call ck_assert: they record what they saw, and the test's own
 * thread asserts after sl_pipeline_wait (which joins the stage threads, so
 * plain fields written by one op thread are safe to read then).
 *
 *   pu_common           destroy count, thread name, signal mask and
 *                       kernel thread id seen by the first op call
 *   pu_fault            fail an op at chunk k (PU_AT_END: read's end,
 *                       flush or final) with a code and "boom at k",
 *                       optionally after the stages upstream have finished
 *   pu_src              bytes from memory in a cycled schedule of chunk
 *                       sizes, each chunk from the pool (sl_stage_buf)
 *   pu_xf               identity, upper-case, copy or split transform,
 *                       optional flush pushing a trailer
 *   pu_sink             collects bytes; gate, progress waits, throttle
 *   pu_objsrc/objsink   object mode: objects whose destructor counts
 *   pu_finished         a finished callback that records its calls
 *   pu_thread_count     entries of /proc/self/task
 *   pu_mixed_data       reproducible bytes: random, text, zeros, pattern
 */
#ifndef SLUICE_PIPEUTIL_H
#define SLUICE_PIPEUTIL_H

#include "sluice-int.h" /* sl__ring_wait_blocked */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PU_AT_END (-2L) /* pu_fault.at: at the end of the stream */
#define PU_NEVER (-1L)
#define PU_MAX_UPSTREAM 4

/* ------------------------------------------------------------------------
 * Small things
 * ---------------------------------------------------------------------- */

/* len bytes of seed's pattern, malloc'd (not through the library). */
static inline unsigned char *pu_pattern(size_t len, uint32_t seed) {
  unsigned char *p = malloc(len ? len : 1);

  if (p != NULL)
    for (size_t i = 0; i < len; i++)
      p[i] = test_pattern_byte(seed, i);
  return p;
}

/* len bytes of mixed content, malloc'd: runs of random bytes, text, zeros
 * and the test pattern, each up to 64 KiB long. Reproducible from seed. */
static inline unsigned char *pu_mixed_data(size_t len, uint64_t seed) {
  static const char *const words[] = {"sluice ", "stream ", "backpressure ",
                                      "gzip ",   "ring ",   "the ",
                                      "of ",     "member\n"};
  unsigned char *d = malloc(len ? len : 1);
  uint64_t r = seed * 2 + 1;
  size_t i = 0;

  if (d == NULL)
    return NULL;
  while (i < len) {
    uint64_t x = test_rand(&r);
    size_t run = 1 + (size_t)(x % 65536), k = 0;
    if (run > len - i)
      run = len - i;
    switch ((x >> 32) % 4) {
    case 0:
      while (k < run) {
        uint64_t v = test_rand(&r);
        for (int b = 0; b < 8 && k < run; b++, v >>= 8)
          d[i + k++] = (unsigned char)v;
      }
      break;
    case 1:
      while (k < run) {
        const char *w = words[test_rand(&r) % (sizeof words / sizeof words[0])];
        for (; *w && k < run; w++)
          d[i + k++] = (unsigned char)*w;
      }
      break;
    case 2:
      memset(d + i, 0, run);
      break;
    default:
      for (; k < run; k++)
        d[i + k] = test_pattern_byte((uint32_t)seed, i + k);
      break;
    }
    i += run;
  }
  return d;
}

static inline unsigned char pu_upper(unsigned char c) {
  return c >= 'a' && c <= 'z' ? (unsigned char)(c - 'a' + 'A') : c;
}

/* A growable byte string owned by the test. */
typedef struct pu_bytes {
  unsigned char *p;
  size_t len, cap;
} pu_bytes;

static inline bool pu_bytes_add(pu_bytes *b, const void *data, size_t len) {
  if (len == 0)
    return true;
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + len)
      cap *= 2;
    unsigned char *grown = realloc(b->p, cap);
    if (grown == NULL)
      return false;
    b->p = grown;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, len);
  b->len += len;
  return true;
}

static inline void pu_bytes_free(pu_bytes *b) {
  free(b->p);
  *b = (pu_bytes){0};
}

/* True when got (glen bytes) is a prefix of want (wlen bytes). */
static inline bool pu_is_prefix(const void *got, size_t glen, const void *want,
                                size_t wlen) {
  return glen <= wlen && (glen == 0 || memcmp(got, want, glen) == 0);
}

/* Work that takes time without sleeping: n rounds of a generator whose
 * result is kept, so the compiler cannot drop it. */
static inline uint64_t pu_spin(unsigned long n) {
  volatile uint64_t x = 88172645463325252u;

  for (unsigned long i = 0; i < n; i++)
    x = x * 6364136223846793005u + 1442695040888963407u;
  return x;
}

/* How many chunks a finite pu_src pushes for len bytes cut by the cycled
 * schedule sizes[0..n-1]; *max_chunk gets the largest (may be NULL). */
static inline long pu_plan_chunks(size_t len, const size_t *sizes, size_t n,
                                  size_t *max_chunk) {
  size_t pos = 0, largest = 0;
  long chunks = 0;

  while (pos < len) {
    size_t want = sizes[(size_t)chunks % n];
    if (want > len - pos)
      want = len - pos;
    if (want > largest)
      largest = want;
    pos += want;
    chunks++;
  }
  if (max_chunk != NULL)
    *max_chunk = largest;
  return chunks;
}

/* Sanitizer runtimes start threads of their own (ThreadSanitizer's
 * background thread, started again in each forked test), named like the
 * process. Under them the thread checks allow a few such threads and
 * insist only that no stage thread ("sl:...") is left. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define PU_RUNTIME_THREADS 4
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PU_RUNTIME_THREADS 4
#endif
#endif
#ifndef PU_RUNTIME_THREADS
#define PU_RUNTIME_THREADS 0
#endif

/* Threads of this process (entries of /proc/self/task), and in *stage
 * those named like a stage thread ("sl:..."); -1 on error. */
static inline int pu_thread_count_named(int *stage) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;

  if (stage != NULL)
    *stage = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL) {
    char path[300], comm[32] = "";
    FILE *f;
    if (e->d_name[0] == '.')
      continue;
    n++;
    if (stage == NULL)
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    f = fopen(path, "r");
    if (f != NULL) {
      if (fgets(comm, sizeof comm, f) != NULL && strncmp(comm, "sl:", 3) == 0)
        (*stage)++;
      fclose(f);
    }
  }
  closedir(d);
  return n;
}

/* The thread of this process named name (its comm), 0 when there is
 * none, -1 when /proc/self/task cannot be read. */
static inline pid_t pu_tid_named(const char *name) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  pid_t tid = 0;

  if (d == NULL)
    return -1;
  while (tid == 0 && (e = readdir(d)) != NULL) {
    char path[300], comm[32] = "";
    FILE *f;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    if ((f = fopen(path, "r")) == NULL)
      continue;
    if (fgets(comm, sizeof comm, f) != NULL) {
      comm[strcspn(comm, "\n")] = '\0';
      if (strcmp(comm, name) == 0)
        tid = (pid_t)atol(e->d_name);
    }
    fclose(f);
  }
  closedir(d);
  return tid;
}

static inline bool pu_is_poll_syscall(long nr) {
#ifdef SYS_poll
  if (nr == SYS_poll)
    return true;
#endif
#ifdef SYS_ppoll
  if (nr == SYS_ppoll)
    return true;
#endif
#ifdef SYS_ppoll_time64
  if (nr == SYS_ppoll_time64)
    return true;
#endif
  return false;
}

/* Wait until the thread named name sits in poll(2). Returns 1 then; 0 at
 * once when this system does not show a thread's system call (no
 * /proc/self/task, or no syscall file for a thread that is alive), and
 * the caller goes on with what it knows without it; -1 when the thread,
 * once seen, ended without being seen in poll, which fails the caller.
 * The library offers no wait for "a stage thread sits in a system call",
 * so this looks again and again, yielding the core in between; the
 * thread is expected there soon (every caller first waits for what sends
 * it there), and one that never gets there is left to the test case's
 * timeout. */
static inline int pu_wait_in_poll(const char *name) {
  pid_t seen = 0;
  for (;;) {
    pid_t tid = pu_tid_named(name);
    if (tid < 0)
      return 0;
    if (tid == 0 && seen != 0)
      return -1; /* it ended */
    if (tid != 0) {
      char path[64], line[64] = "";
      FILE *f;
      seen = tid;
      snprintf(path, sizeof path, "/proc/self/task/%ld/syscall", (long)tid);
      if ((f = fopen(path, "r")) == NULL)
        return errno == ENOENT && pu_tid_named(name) == tid ? 0 : -1;
      /* "running", or the number of the call it sits in, then its
       * arguments. */
      bool in_poll = fgets(line, sizeof line, f) != NULL && line[0] >= '0' &&
                     line[0] <= '9' && pu_is_poll_syscall(atol(line));
      fclose(f);
      if (in_poll)
        return 1;
    }
    sched_yield();
  }
}

static inline int pu_thread_count(void) {
  return pu_thread_count_named(NULL);
}

/* Whether the process runs exactly `more` threads beyond the `base` it
 * had (a sanitizer's runtime may start up to PU_RUNTIME_THREADS of its
 * own at any moment, which are allowed for), `stage` of them named as
 * stage threads. */
static inline bool pu_threads_are(int base, int more, int stage) {
  int named, n = pu_thread_count_named(&named);
  if (n < 0 || named != stage)
    return false;
  return PU_RUNTIME_THREADS
             ? n >= base + more && n <= base + more + PU_RUNTIME_THREADS
             : n == base + more;
}

/* Threads left over compared with before (a count taken when no stage
 * thread ran): 0 when none. pthread_join returns when the kernel clears the
 * thread's id, a moment before the thread leaves /proc/self/task; nothing
 * can be waited on for that last step, so this looks again, yielding, for
 * five seconds of its own running time (test_hang_clock: a process stopped
 * meanwhile is not failed) before it reports. A thread really left running
 * never leaves. */
static inline int pu_threads_left(int before) {
  test_hang_clock hc;
  int extra;

  test_hang_clock_start(&hc, CLOCK_MONOTONIC);
  for (;;) {
    int stage, n = pu_thread_count_named(&stage);
    if (n < 0)
      return -1;
    extra = PU_RUNTIME_THREADS ? stage + (n > before + PU_RUNTIME_THREADS
                                              ? n - before - PU_RUNTIME_THREADS
                                              : 0)
                               : n - before;
    if (extra == 0)
      return 0;
    if (test_hang_clock_over(&hc, 5))
      return extra;
    sched_yield();
  }
}

/* Block until ring is closed by its writer; 0, or the abort code. Used by
 * a fault that must fire only after the stages upstream have finished:
 * the writer cannot be paused then (everything it pushed was read), so
 * sl__ring_wait_blocked returns only on close or abort. */
static inline int pu_ring_wait_closed(sl_ring *ring) {
  for (;;) {
    int rc = sl__ring_wait_blocked(ring, SL__WRITER);
    if (rc == SL_ECLOSED)
      return 0;
    if (rc != 0)
      return rc;
    sched_yield(); /* paused writer: the reader will drain it */
  }
}

/* Block until ring's writer is paused and stays paused: waiting in the
 * ring, and its pause not drained yet. sl__ring_wait_blocked alone also
 * returns for a writer that the reader has already woken but that has not
 * run yet; such a writer leaves soon and pauses again (or not), so look
 * again once it has moved. Returns 0, or SL_ECLOSED / the abort code. */
static inline int pu_ring_wait_paused(sl_ring *ring) {
  for (;;) {
    sl_ring_stats st;
    int rc = sl__ring_wait_blocked(ring, SL__WRITER);
    if (rc != 0)
      return rc;
    if (sl_ring_stats_get(ring, &st) != 0)
      return SL_EINVAL;
    if (st.writer_waiting && st.drains < st.pauses)
      return 0;
    sched_yield(); /* woken, about to run */
  }
}

/* ------------------------------------------------------------------------
 * What every context records
 * ---------------------------------------------------------------------- */

typedef struct pu_common {
  atomic_int destroyed; /* destroy calls */
  bool seen;            /* an op has run */
  int name_rc;          /* pthread_getname_np's result in the first op */
  char thread_name[16]; /* the thread name it read */
  int signals_blocked;  /* 1: the common async signals were blocked */
  long tid;             /* the kernel's id of that thread (0: unknown) */
} pu_common;

static inline void pu_common_init(pu_common *c) {
  memset(c, 0, sizeof *c);
  atomic_init(&c->destroyed, 0);
  c->name_rc = -1;
}

/* Called at the top of every op: the first call looks at the thread. */
static inline void pu_common_note(pu_common *c) {
  static const int sigs[] = {SIGINT,  SIGTERM, SIGHUP,  SIGUSR1,
                             SIGUSR2, SIGPIPE, SIGALRM, SIGCHLD};
  sigset_t cur;

  if (c->seen)
    return;
  c->seen = true;
  c->name_rc =
      pthread_getname_np(pthread_self(), c->thread_name, sizeof c->thread_name);
#ifdef SYS_gettid
  c->tid = (long)syscall(SYS_gettid);
#endif
  c->signals_blocked = 0;
  if (pthread_sigmask(SIG_BLOCK, NULL, &cur) == 0) {
    c->signals_blocked = 1;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
      if (sigismember(&cur, sigs[i]) != 1)
        c->signals_blocked = 0;
  }
}

/* destroy for every context here: a context starts with its pu_common. */
static inline void pu_destroy(void *ctx) {
  atomic_fetch_add(&((pu_common *)ctx)->destroyed, 1);
}

static inline int pu_destroyed(const void *ctx) {
  return atomic_load(&((pu_common *)ctx)->destroyed);
}

/* ------------------------------------------------------------------------
 * Faults
 * ---------------------------------------------------------------------- */

typedef struct pu_fault {
  long at;  /* chunk index (0 based), PU_AT_END or PU_NEVER */
  int code; /* returned by the op */
  /* Stages upstream of the failing one: their output rings are looked at
   * when the fault fires; with wait_upstream the fault first waits until
   * each has closed its output, i.e. finished. */
  sl_stage *upstream[PU_MAX_UPSTREAM];
  size_t nupstream;
  bool wait_upstream;
  /* results */
  atomic_int fired;
  bool upstream_closed[PU_MAX_UPSTREAM]; /* finished before the fault */
} pu_fault;

static inline void pu_fault_init(pu_fault *f) {
  memset(f, 0, sizeof *f);
  f->at = PU_NEVER;
  atomic_init(&f->fired, 0);
}

/* Fail here: explain with "boom at <index>" and return the fault's code. */
static inline int pu_fault_fire(pu_fault *f, sl_stage *stage, long index) {
  for (size_t i = 0; i < f->nupstream; i++) {
    sl_ring *r = sl_stage_output(f->upstream[i]);
    sl_ring_stats st;
    if (f->wait_upstream && r != NULL)
      pu_ring_wait_closed(r);
    f->upstream_closed[i] =
        r != NULL && sl_ring_stats_get(r, &st) == 0 && st.closed && !st.error;
  }
  sl_stage_set_error(stage, "boom at %ld", index);
  atomic_store(&f->fired, 1);
  return f->code;
}

/* ------------------------------------------------------------------------
 * pu_src: a memory source
 * ---------------------------------------------------------------------- */

typedef struct pu_src {
  pu_common c;
  const unsigned char *data; /* the bytes to emit, in order */
  size_t len;
  const size_t *sizes; /* chunk sizes, cycled */
  size_t nsizes;
  int per_call; /* chunks pushed per read call, >= 1 */
  bool forever; /* cycle through data without end (len > 0) */
  pu_fault fault;
  /* results */
  size_t pos;         /* bytes pushed (mod len when forever) */
  long chunks;        /* chunks pushed */
  long calls;         /* read calls */
  atomic_long pushed; /* chunks pushed, for other threads */
} pu_src;

static inline void pu_src_init(pu_src *s, const unsigned char *data, size_t len,
                               const size_t *sizes, size_t nsizes) {
  memset(s, 0, sizeof *s);
  pu_common_init(&s->c);
  pu_fault_init(&s->fault);
  s->data = data;
  s->len = len;
  s->sizes = sizes;
  s->nsizes = nsizes;
  s->per_call = 1;
  atomic_init(&s->pushed, 0);
}

static inline int pu_src_push_one(sl_stage *stage, pu_src *s) {
  size_t want = s->sizes[(size_t)s->chunks % s->nsizes];
  sl_buf *b = NULL;
  int rc;

  if (!s->forever && want > s->len - s->pos)
    want = s->len - s->pos;
  rc = sl_stage_buf(stage, want, &b);
  if (rc != 0)
    return rc;
  unsigned char *d = sl_buf_data(b);
  for (size_t done = 0; done < want;) {
    size_t at = s->forever ? s->pos % s->len : s->pos;
    size_t n = want - done;
    if (n > s->len - at)
      n = s->len - at;
    memcpy(d + done, s->data + at, n);
    done += n;
    s->pos += n;
  }
  sl_buf_set_len(b, want);
  rc = sl_stage_push(stage, b);
  if (rc != 0)
    return rc;
  s->chunks++;
  atomic_store(&s->pushed, s->chunks);
  return 0;
}

static inline int pu_src_read(sl_stage *stage, void *ctx) {
  pu_src *s = ctx;

  pu_common_note(&s->c);
  s->calls++;
  for (int k = 0; k < s->per_call; k++) {
    if (!s->forever && s->pos >= s->len) {
      if (s->fault.at == PU_AT_END)
        return pu_fault_fire(&s->fault, stage, s->chunks);
      return SL_EOF;
    }
    if (s->fault.at == s->chunks)
      return pu_fault_fire(&s->fault, stage, s->chunks);
    int rc = pu_src_push_one(stage, s);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static inline sl_stage *pu_src_stage(const char *name, pu_src *s) {
  sl_stage_ops ops = {.read = pu_src_read, .destroy = pu_destroy};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, s) == 0 ? st : NULL;
}

/* ------------------------------------------------------------------------
 * pu_xf: transforms
 * ---------------------------------------------------------------------- */

enum pu_xf_kind {
  PU_IDENTITY, /* push the input on */
  PU_UPPER,    /* upper-case ASCII letters in place */
  PU_COPY,     /* copy into a fresh pool buffer, release the input */
  PU_SPLIT     /* push pieces of split bytes each (an empty input as is) */
};

typedef struct pu_xf {
  pu_common c;
  int kind;
  size_t split;
  const char *trailer; /* flush pushes it (when the stage has a flush) */
  pu_fault fault;
  /* results */
  long chunks;     /* inputs handled */
  long pushed;     /* chunks pushed */
  int flush_calls; /* flush calls */
  long chunks_at_flush;
} pu_xf;

static inline void pu_xf_init(pu_xf *x, int kind) {
  memset(x, 0, sizeof *x);
  pu_common_init(&x->c);
  pu_fault_init(&x->fault);
  x->kind = kind;
  x->split = 1000;
}

static inline int pu_xf_push_copy(sl_stage *stage, pu_xf *x,
                                  const unsigned char *data, size_t len) {
  sl_buf *b = NULL;
  int rc = sl_stage_buf(stage, len, &b);

  if (rc != 0)
    return rc;
  if (len)
    memcpy(sl_buf_data(b), data, len);
  sl_buf_set_len(b, len);
  rc = sl_stage_push(stage, b);
  if (rc == 0)
    x->pushed++;
  return rc;
}

static inline int pu_xf_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  pu_xf *x = ctx;
  int rc = 0;

  pu_common_note(&x->c);
  if (x->fault.at == x->chunks) {
    sl_buf_unref(in);
    return pu_fault_fire(&x->fault, stage, x->chunks);
  }
  x->chunks++;
  switch (x->kind) {
  case PU_UPPER:
    if (sl_buf_refcount(in) != 1) { /* shared, so read-only: copy */
      sl_buf *b = NULL;
      size_t len = sl_buf_len(in);
      rc = sl_stage_buf(stage, len, &b);
      if (rc == 0) {
        for (size_t i = 0; i < len; i++)
          sl_buf_data(b)[i] = pu_upper(sl_buf_data(in)[i]);
        sl_buf_set_len(b, len);
      }
      sl_buf_unref(in);
      if (rc != 0)
        return rc;
      in = b;
    } else {
      unsigned char *d = sl_buf_data(in);
      for (size_t i = 0; i < sl_buf_len(in); i++)
        d[i] = pu_upper(d[i]);
    }
    rc = sl_stage_push(stage, in);
    if (rc == 0)
      x->pushed++;
    return rc;
  case PU_IDENTITY:
    rc = sl_stage_push(stage, in);
    if (rc == 0)
      x->pushed++;
    return rc;
  case PU_COPY:
    rc = pu_xf_push_copy(stage, x, sl_buf_data(in), sl_buf_len(in));
    sl_buf_unref(in);
    return rc;
  case PU_SPLIT:
    if (sl_buf_len(in) == 0) {
      rc = sl_stage_push(stage, in);
      if (rc == 0)
        x->pushed++;
      return rc;
    }
    for (size_t off = 0; off < sl_buf_len(in) && rc == 0; off += x->split) {
      size_t n = sl_buf_len(in) - off;
      if (n > x->split)
        n = x->split;
      rc = pu_xf_push_copy(stage, x, sl_buf_data(in) + off, n);
    }
    sl_buf_unref(in);
    return rc;
  default:
    sl_buf_unref(in);
    return SL_EINVAL;
  }
}

static inline int pu_xf_flush(sl_stage *stage, void *ctx) {
  pu_xf *x = ctx;

  pu_common_note(&x->c);
  x->flush_calls++;
  x->chunks_at_flush = x->chunks;
  if (x->fault.at == PU_AT_END)
    return pu_fault_fire(&x->fault, stage, x->chunks);
  if (x->trailer != NULL)
    return pu_xf_push_copy(stage, x, (const unsigned char *)x->trailer,
                           strlen(x->trailer));
  return 0;
}

/* A transform stage; with_flush decides whether the ops have a flush. */
static inline sl_stage *pu_xf_stage(const char *name, pu_xf *x,
                                    bool with_flush) {
  sl_stage_ops ops = {.transform = pu_xf_transform,
                      .flush = with_flush ? pu_xf_flush : NULL,
                      .destroy = pu_destroy};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, x) == 0 ? st : NULL;
}

/* ------------------------------------------------------------------------
 * pu_sink: a memory sink
 * ---------------------------------------------------------------------- */

typedef struct pu_sink {
  pu_common c;
  pu_bytes got; /* every byte written, in order (when collect) */
  bool collect;
  unsigned long spin; /* work per chunk: a throttled sink */
  pu_fault fault;
  /* Checks each chunk instead of (or as well as) collecting: returns
   * false for a bad one, counted in bad. */
  bool (*check)(struct pu_sink *sink, const sl_buf *b);
  void *check_arg;
  long bad;
  uint64_t spun;

  /* Under mu: progress other threads wait on, and the gate. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long chunks;  /* chunks consumed */
  bool done;    /* final ran, or the pipeline finished */
  bool hold;    /* the gate is shut: the next write waits */
  bool at_gate; /* a write is waiting at the gate */
  int waiters;
  int final_calls;
  long chunks_at_final;
  size_t bytes_at_final;
} pu_sink;

static inline void pu_sink_init(pu_sink *k) {
  memset(k, 0, sizeof *k);
  pu_common_init(&k->c);
  pu_fault_init(&k->fault);
  k->collect = true;
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->cv, NULL);
}

static inline void pu_sink_fini(pu_sink *k) {
  pthread_cond_destroy(&k->cv);
  pthread_mutex_destroy(&k->mu);
  pu_bytes_free(&k->got);
}

static inline int pu_sink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  pu_sink *k = ctx;
  long index;

  pu_common_note(&k->c);
  pthread_mutex_lock(&k->mu);
  index = k->chunks;
  if (k->hold) {
    k->at_gate = true;
    pthread_cond_broadcast(&k->cv);
    while (k->hold)
      pthread_cond_wait(&k->cv, &k->mu);
    k->at_gate = false;
  }
  pthread_mutex_unlock(&k->mu);

  if (k->fault.at == index) {
    sl_buf_unref(in);
    return pu_fault_fire(&k->fault, stage, index);
  }
  if (k->spin)
    k->spun += pu_spin(k->spin);
  if (k->collect && !pu_bytes_add(&k->got, sl_buf_data(in), sl_buf_len(in))) {
    sl_buf_unref(in);
    return SL_ENOMEM;
  }
  if (k->check != NULL && !k->check(k, in))
    k->bad++;
  sl_buf_unref(in);

  pthread_mutex_lock(&k->mu);
  k->chunks++;
  if (k->waiters)
    pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
  return 0;
}

static inline int pu_sink_final(sl_stage *stage, void *ctx) {
  pu_sink *k = ctx;
  int rc = 0;

  pu_common_note(&k->c);
  pthread_mutex_lock(&k->mu);
  k->final_calls++;
  k->chunks_at_final = k->chunks;
  k->bytes_at_final = k->got.len;
  pthread_mutex_unlock(&k->mu);
  if (k->fault.at == PU_AT_END)
    rc = pu_fault_fire(&k->fault, stage, k->chunks_at_final);
  pthread_mutex_lock(&k->mu);
  k->done = true;
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
  return rc;
}

static inline sl_stage *pu_sink_stage(const char *name, pu_sink *k) {
  sl_stage_ops ops = {
      .write = pu_sink_write, .final = pu_sink_final, .destroy = pu_destroy};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, k) == 0 ? st : NULL;
}

/* Mark the sink done (from a finished callback): progress waits end. */
static inline void pu_sink_mark_done(pu_sink *k) {
  pthread_mutex_lock(&k->mu);
  k->done = true;
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

/* Wait until the sink consumed n chunks or is done; returns chunks. */
static inline long pu_sink_wait_chunks(pu_sink *k, long n) {
  long got;

  pthread_mutex_lock(&k->mu);
  k->waiters++;
  while (k->chunks < n && !k->done)
    pthread_cond_wait(&k->cv, &k->mu);
  k->waiters--;
  got = k->chunks;
  pthread_mutex_unlock(&k->mu);
  return got;
}

/* Shut the gate (before start): the next write waits in it. */
static inline void pu_sink_hold(pu_sink *k) {
  pthread_mutex_lock(&k->mu);
  k->hold = true;
  pthread_mutex_unlock(&k->mu);
}

/* Wait until a write is held at the gate. */
static inline void pu_sink_wait_at_gate(pu_sink *k) {
  pthread_mutex_lock(&k->mu);
  while (!k->at_gate)
    pthread_cond_wait(&k->cv, &k->mu);
  pthread_mutex_unlock(&k->mu);
}

static inline void pu_sink_release(pu_sink *k) {
  pthread_mutex_lock(&k->mu);
  k->hold = false;
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

/* ------------------------------------------------------------------------
 * Objects: pu_obj carries an id; its destructor counts in counts[id]
 * ---------------------------------------------------------------------- */

typedef struct pu_obj {
  long id;
  atomic_int *counts;
} pu_obj;

static inline void pu_obj_dtor(void *o) {
  pu_obj *obj = o;

  atomic_fetch_add(&obj->counts[obj->id], 1);
  free(obj);
}

/* A new object buffer from stage's pool carrying id; 0 or an error. */
static inline int pu_obj_new(sl_stage *stage, long id, atomic_int *counts,
                             atomic_int *created, sl_buf **out) {
  pu_obj *obj = malloc(sizeof *obj);
  int rc;

  *out = NULL;
  if (obj == NULL)
    return SL_ENOMEM;
  obj->id = id;
  obj->counts = counts;
  rc = sl_buf_new_object(sl_stage_pool(stage), obj, pu_obj_dtor, out);
  if (rc != 0) {
    free(obj);
    return rc;
  }
  atomic_fetch_add(&created[id], 1);
  return 0;
}

/* Objects 0..n-1, one per read call. */
typedef struct pu_objsrc {
  pu_common c;
  long n, next;
  atomic_int *counts, *created; /* per id: destructor runs, creations */
  pu_fault fault;
} pu_objsrc;

static inline void pu_objsrc_init(pu_objsrc *s, long n, atomic_int *counts,
                                  atomic_int *created) {
  memset(s, 0, sizeof *s);
  pu_common_init(&s->c);
  pu_fault_init(&s->fault);
  s->n = n;
  s->counts = counts;
  s->created = created;
}

static inline int pu_objsrc_read(sl_stage *stage, void *ctx) {
  pu_objsrc *s = ctx;
  sl_buf *b;
  int rc;

  pu_common_note(&s->c);
  if (s->next == s->n)
    return SL_EOF;
  if (s->fault.at == s->next)
    return pu_fault_fire(&s->fault, stage, s->next);
  rc = pu_obj_new(stage, s->next, s->counts, s->created, &b);
  if (rc != 0)
    return rc;
  rc = sl_stage_push(stage, b);
  if (rc != 0)
    return rc;
  s->next++;
  return 0;
}

static inline sl_stage *pu_objsrc_stage(const char *name, pu_objsrc *s) {
  sl_stage_ops ops = {.read = pu_objsrc_read, .destroy = pu_destroy};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, s) == 0 ? st : NULL;
}

/* Checks that objects arrive in order with ids first, first + 1, ... */
typedef struct pu_objsink {
  pu_common c;
  long first, chunks, bad;
  int final_calls;
  pu_fault fault;
  pu_sink *gate; /* optional: a pu_sink whose gate and progress to use */
} pu_objsink;

static inline void pu_objsink_init(pu_objsink *k, long first) {
  memset(k, 0, sizeof *k);
  pu_common_init(&k->c);
  pu_fault_init(&k->fault);
  k->first = first;
}

static inline int pu_objsink_write(sl_stage *stage, void *ctx, sl_buf *in) {
  pu_objsink *k = ctx;
  pu_obj *obj = sl_buf_object(in);

  pu_common_note(&k->c);
  if (k->gate != NULL) {
    pthread_mutex_lock(&k->gate->mu);
    if (k->gate->hold) {
      k->gate->at_gate = true;
      pthread_cond_broadcast(&k->gate->cv);
      while (k->gate->hold)
        pthread_cond_wait(&k->gate->cv, &k->gate->mu);
    }
    pthread_mutex_unlock(&k->gate->mu);
  }
  if (k->fault.at == k->chunks) {
    sl_buf_unref(in);
    return pu_fault_fire(&k->fault, stage, k->chunks);
  }
  if (!sl_buf_is_object(in) || obj == NULL || obj->id != k->first + k->chunks)
    k->bad++;
  k->chunks++;
  sl_buf_unref(in);
  return 0;
}

static inline int pu_objsink_final(sl_stage *stage, void *ctx) {
  pu_objsink *k = ctx;

  (void)stage;
  pu_common_note(&k->c);
  k->final_calls++;
  return 0;
}

static inline sl_stage *pu_objsink_stage(const char *name, pu_objsink *k) {
  sl_stage_ops ops = {.write = pu_objsink_write,
                      .final = pu_objsink_final,
                      .destroy = pu_destroy};
  sl_stage *st = NULL;

  return sl_stage_new(&st, name, &ops, k) == 0 ? st : NULL;
}

/* ------------------------------------------------------------------------
 * Finished callback
 * ---------------------------------------------------------------------- */

typedef struct pu_finished {
  atomic_int calls;
  atomic_int status;
  pu_sink *sink;           /* marked done when the pipeline finishes */
  bool cancel_in_callback; /* call sl_pipeline_cancel from the callback */
} pu_finished;

static inline void pu_finished_init(pu_finished *f) {
  memset(f, 0, sizeof *f);
  atomic_init(&f->calls, 0);
  atomic_init(&f->status, 1); /* no status is positive */
}

static inline void pu_finished_cb(sl_pipeline *p, int status, void *arg) {
  pu_finished *f = arg;

  atomic_store(&f->status, status);
  atomic_fetch_add(&f->calls, 1);
  if (f->cancel_in_callback)
    sl_pipeline_cancel(p);
  if (f->sink != NULL)
    pu_sink_mark_done(f->sink);
}

/* The pool's counters, or all zero when they cannot be read. */
static inline sl_pool_stats pu_pool_stats(sl_pipeline *p) {
  sl_pool_stats st;

  memset(&st, 0, sizeof st);
  if (sl_pool_stats_get(sl_pipeline_pool(p), &st) != 0)
    memset(&st, 0, sizeof st);
  return st;
}

/* The ring's counters (zero when there is none). */
static inline sl_ring_stats pu_ring_stats(sl_ring *r) {
  sl_ring_stats st;

  memset(&st, 0, sizeof st);
  if (r == NULL || sl_ring_stats_get(r, &st) != 0)
    memset(&st, 0, sizeof st);
  return st;
}

#endif /* SLUICE_PIPEUTIL_H */
