/* SPDX-License-Identifier: MIT */
/*
 * ring_bench — the cost of handing a chunk from one thread to another.
 *
 * One producer thread, one consumer thread, a bounded queue between them.
 * Two queues are measured in the same run, with the same capacity in
 * chunks, for small (8 B) and big (64 KiB) chunks:
 *
 *   sl_ring   byte mode; the producer calls sl_ring_write, the consumer
 *             sl_ring_read_batch (many chunks under one lock). A side is
 *             woken only when it waits and a mark is crossed.
 *   naive     the textbook queue: one mutex, two condition variables, and
 *             a signal on every item (not_empty after each push, not_full
 *             after each pop), one item per lock.
 *
 * Only the handoff is measured: a fixed set of buffers is created up front
 * and their pointers are moved; the consumer reads each chunk's length and
 * keeps nothing. The producer reuses buffer i % NBUFS, which is safe
 * because neither queue ever holds NBUFS chunks.
 *
 * Machines are shared and noisy, so the headline is a ratio against the
 * peer measured in the same run: the candidate and the peer alternate,
 * run after run, and the medians are compared. CPU time is the process's
 * user + system time (getrusage), both threads together; so are context
 * switches, which count how often a side went to sleep (on a full or
 * empty queue, or on a contended lock).
 *
 * Last, "a blocked side burns no CPU": one side of a ring waits (the
 * reader on an empty ring, then the writer on a full one) while the other
 * side sleeps for half a second; the process must use almost no CPU in
 * that window.
 *
 * Usage: ring_bench [-n SMALL] [-N BIG] [-r REPS] [-c CAPACITY] [-o FILE]
 *   -n SMALL     8-byte chunks per run (default 4194304; env BENCH_RING_SMALL)
 *   -N BIG       64 KiB chunks per run (default 200000; env BENCH_RING_BIG)
 *   -r REPS      runs of each queue, interleaved (default 5; env BENCH_REPS)
 *   -c CAPACITY  queue capacity in chunks (default 1024, at most 2048)
 *   -o FILE      also write the results as key=value lines to FILE
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* getopt, clock_gettime, nanosleep */
#endif

#include <sluice.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NBUFS 4096 /* buffers per chunk size; the queues hold far fewer */
#define BATCH 1024 /* most chunks the sl_ring consumer takes at once */
#define MAX_REPS 99
#define IDLE_WINDOW_NS 500000000ull /* the "blocked side" window: 0.5 s */
#define IDLE_LIMIT_MS 5.0           /* 1% of the window */

static const char *prog = "ring_bench";

static void die(const char *what, int code) {
  fprintf(stderr, "%s: %s: %s\n", prog, what,
          code < 0 ? sl_strerror(code) : strerror(code));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* What the whole process (every thread) has used so far. */
struct usage {
  uint64_t cpu_ns; /* user + system CPU time */
  uint64_t csw;    /* context switches, voluntary and not */
};

static struct usage usage_now(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    die("getrusage", errno);
  uint64_t us =
      (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
      (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
  struct usage u = {us * 1000u, (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw};
  return u;
}

static uint64_t cpu_ns(void) {
  return usage_now().cpu_ns;
}

static void sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg) {
  int rc = pthread_create(t, NULL, fn, arg);
  if (rc != 0)
    die("pthread_create", rc);
}

static void join_thread(pthread_t t) {
  int rc = pthread_join(t, NULL);
  if (rc != 0)
    die("pthread_join", rc);
}

/* ---- the peer: a naive bounded queue ---------------------------------- */

struct naive {
  pthread_mutex_t mu;
  pthread_cond_t not_full, not_empty;
  sl_buf **slots;
  size_t cap, head, count;
  bool closed;
};

static void naive_init(struct naive *q, size_t cap) {
  memset(q, 0, sizeof *q);
  q->slots = calloc(cap, sizeof *q->slots);
  if (!q->slots)
    die("calloc", ENOMEM);
  q->cap = cap;
  if (pthread_mutex_init(&q->mu, NULL) != 0 ||
      pthread_cond_init(&q->not_full, NULL) != 0 ||
      pthread_cond_init(&q->not_empty, NULL) != 0)
    die("pthread init", EAGAIN);
}

static void naive_destroy(struct naive *q) {
  pthread_cond_destroy(&q->not_empty);
  pthread_cond_destroy(&q->not_full);
  pthread_mutex_destroy(&q->mu);
  free(q->slots);
}

static void naive_push(struct naive *q, sl_buf *b) {
  pthread_mutex_lock(&q->mu);
  while (q->count == q->cap)
    pthread_cond_wait(&q->not_full, &q->mu);
  size_t tail = q->head + q->count;
  if (tail >= q->cap)
    tail -= q->cap;
  q->slots[tail] = b;
  q->count++;
  pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

/* The oldest item, or NULL once closed and empty. */
static sl_buf *naive_pop(struct naive *q) {
  sl_buf *b = NULL;
  pthread_mutex_lock(&q->mu);
  while (q->count == 0 && !q->closed)
    pthread_cond_wait(&q->not_empty, &q->mu);
  if (q->count) {
    b = q->slots[q->head];
    if (++q->head == q->cap)
      q->head = 0;
    q->count--;
    pthread_cond_signal(&q->not_full);
  }
  pthread_mutex_unlock(&q->mu);
  return b;
}

static void naive_close(struct naive *q) {
  pthread_mutex_lock(&q->mu);
  q->closed = true;
  pthread_cond_broadcast(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

/* ---- one run ------------------------------------------------------------ */

struct run {
  sl_buf **bufs; /* NBUFS pre-made chunks of one size */
  size_t items;
  size_t capacity;
  sl_ring *ring;      /* candidate, or NULL */
  struct naive naive; /* peer, when ring is NULL */
  uint64_t got_items, got_bytes;
};

struct result {
  double items_per_s;
  double cpu_ns_per_item;
  double csw_per_k; /* context switches per 1000 items */
  sl_ring_stats st; /* sl_ring runs only */
};

static void *ring_producer(void *arg) {
  struct run *r = arg;
  for (size_t i = 0; i < r->items; i++) {
    int rc = sl_ring_write(r->ring, r->bufs[i % NBUFS]);
    if (rc != 0)
      die("sl_ring_write", rc);
  }
  sl_ring_close(r->ring);
  return NULL;
}

static void *ring_consumer(void *arg) {
  struct run *r = arg;
  sl_buf *out[BATCH];
  uint64_t items = 0, bytes = 0;
  for (;;) {
    size_t n;
    int rc = sl_ring_read_batch(r->ring, out, BATCH, &n);
    if (rc == SL_EOF)
      break;
    if (rc != 0)
      die("sl_ring_read_batch", rc);
    for (size_t i = 0; i < n; i++)
      bytes += sl_buf_len(out[i]);
    items += n;
  }
  r->got_items = items;
  r->got_bytes = bytes;
  return NULL;
}

static void *naive_producer(void *arg) {
  struct run *r = arg;
  for (size_t i = 0; i < r->items; i++)
    naive_push(&r->naive, r->bufs[i % NBUFS]);
  naive_close(&r->naive);
  return NULL;
}

static void *naive_consumer(void *arg) {
  struct run *r = arg;
  uint64_t items = 0, bytes = 0;
  sl_buf *b;
  while ((b = naive_pop(&r->naive)) != NULL) {
    bytes += sl_buf_len(b);
    items++;
  }
  r->got_items = items;
  r->got_bytes = bytes;
  return NULL;
}

static struct result run_once(sl_buf **bufs, size_t chunk, size_t items,
                              size_t capacity, bool use_ring) {
  struct run r;
  memset(&r, 0, sizeof r);
  r.bufs = bufs;
  r.items = items;
  r.capacity = capacity;
  if (use_ring) {
    /* The mark and the slot count agree: both stop the writer at
     * `capacity` chunks, as the peer's count does. */
    sl_ring_opts o = {.hwm = capacity * chunk,
                      .lwm = SL_LWM_DEFAULT,
                      .mode = SL_RING_BYTES,
                      .max_chunks = capacity};
    int rc = sl_ring_new(&r.ring, &o);
    if (rc != 0)
      die("sl_ring_new", rc);
  } else {
    naive_init(&r.naive, capacity);
  }

  pthread_t prod, cons;
  struct usage u0 = usage_now();
  uint64_t t0 = now_ns();
  start_thread(&cons, use_ring ? ring_consumer : naive_consumer, &r);
  start_thread(&prod, use_ring ? ring_producer : naive_producer, &r);
  join_thread(prod);
  join_thread(cons);
  uint64_t t1 = now_ns();
  struct usage u1 = usage_now();

  if (r.got_items != items || r.got_bytes != (uint64_t)items * chunk) {
    fprintf(stderr, "%s: %s lost chunks: got %llu of %zu\n", prog,
            use_ring ? "sl_ring" : "naive", (unsigned long long)r.got_items,
            items);
    exit(1);
  }

  struct result res;
  memset(&res, 0, sizeof res);
  double secs = (double)(t1 - t0) / 1e9;
  res.items_per_s = secs > 0 ? (double)items / secs : 0;
  res.cpu_ns_per_item = (double)(u1.cpu_ns - u0.cpu_ns) / (double)items;
  res.csw_per_k = (double)(u1.csw - u0.csw) * 1000.0 / (double)items;
  if (use_ring) {
    int rc = sl_ring_stats_get(r.ring, &res.st);
    if (rc != 0)
      die("sl_ring_stats_get", rc);
    sl_ring_free(r.ring);
  } else {
    naive_destroy(&r.naive);
  }
  return res;
}

/* ---- medians ------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *v, size_t n) {
  double s[MAX_REPS];
  memcpy(s, v, n * sizeof *v);
  qsort(s, n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* The run whose rate is the median (the lower middle for an even count). */
static size_t median_index(const struct result *r, size_t n) {
  double s[MAX_REPS];
  for (size_t i = 0; i < n; i++)
    s[i] = r[i].items_per_s;
  qsort(s, n, sizeof *s, cmp_double);
  for (size_t i = 0; i < n; i++)
    if (r[i].items_per_s == s[(n - 1) / 2])
      return i;
  return 0;
}

/* ---- one chunk size: candidate and peer, interleaved ------------------- */

struct size_case {
  const char *label; /* "8 B" */
  const char *key;   /* "8B" */
  size_t chunk;
  size_t items;
  /* results */
  double ring_rate, naive_rate, ring_cpu, naive_cpu, ratio, cpu_ratio;
  double ring_csw, naive_csw; /* context switches per 1000 items */
  double ratio_lo, ratio_hi;  /* lowest and highest ratio of a pair */
  sl_ring_stats st;           /* of the median sl_ring run */
};

static sl_buf **make_bufs(size_t chunk) {
  sl_buf **bufs = calloc(NBUFS, sizeof *bufs);
  if (!bufs)
    die("calloc", ENOMEM);
  for (size_t i = 0; i < NBUFS; i++) {
    int rc = sl_buf_new(NULL, chunk, &bufs[i]);
    if (rc == 0)
      rc = sl_buf_set_len(bufs[i], chunk);
    if (rc != 0)
      die("sl_buf_new", rc);
  }
  return bufs;
}

static void free_bufs(sl_buf **bufs) {
  for (size_t i = 0; i < NBUFS; i++)
    sl_buf_unref(bufs[i]);
  free(bufs);
}

static void measure(struct size_case *c, size_t reps, size_t capacity) {
  struct result ring[MAX_REPS], naive[MAX_REPS];
  double v[MAX_REPS], pair[MAX_REPS];
  sl_buf **bufs = make_bufs(c->chunk);

  /* Warm up caches, the allocator and the scheduler, untimed. */
  size_t warm = c->items / 10 ? c->items / 10 : 1;
  run_once(bufs, c->chunk, warm, capacity, true);
  run_once(bufs, c->chunk, warm, capacity, false);

  /* Alternate which goes first so that neither always gets the
   * quieter half of a pair. */
  for (size_t i = 0; i < reps; i++) {
    if (i % 2 == 0) {
      ring[i] = run_once(bufs, c->chunk, c->items, capacity, true);
      naive[i] = run_once(bufs, c->chunk, c->items, capacity, false);
    } else {
      naive[i] = run_once(bufs, c->chunk, c->items, capacity, false);
      ring[i] = run_once(bufs, c->chunk, c->items, capacity, true);
    }
    pair[i] = naive[i].items_per_s > 0
                  ? ring[i].items_per_s / naive[i].items_per_s
                  : 0;
  }
  free_bufs(bufs);

  for (size_t i = 0; i < reps; i++)
    v[i] = ring[i].items_per_s;
  c->ring_rate = median(v, reps);
  for (size_t i = 0; i < reps; i++)
    v[i] = naive[i].items_per_s;
  c->naive_rate = median(v, reps);
  for (size_t i = 0; i < reps; i++)
    v[i] = ring[i].cpu_ns_per_item;
  c->ring_cpu = median(v, reps);
  for (size_t i = 0; i < reps; i++)
    v[i] = naive[i].cpu_ns_per_item;
  c->naive_cpu = median(v, reps);
  for (size_t i = 0; i < reps; i++)
    v[i] = ring[i].csw_per_k;
  c->ring_csw = median(v, reps);
  for (size_t i = 0; i < reps; i++)
    v[i] = naive[i].csw_per_k;
  c->naive_csw = median(v, reps);
  c->ratio = c->naive_rate > 0 ? c->ring_rate / c->naive_rate : 0;
  c->cpu_ratio = c->naive_cpu > 0 ? c->ring_cpu / c->naive_cpu : 0;
  /* The spread of the ratio: each pair ran back to back. */
  qsort(pair, reps, sizeof *pair, cmp_double);
  c->ratio_lo = pair[0];
  c->ratio_hi = pair[reps - 1];
  c->st = ring[median_index(ring, reps)].st;
}

/* ---- a blocked side burns no CPU --------------------------------------- */

struct idle {
  sl_ring *ring;
  sl_buf *buf;
  size_t fill; /* writer test: chunks to write before it must block */
};

static void *idle_reader(void *arg) {
  struct idle *t = arg;
  sl_buf *b;
  int rc = sl_ring_read(t->ring, &b); /* blocks: the ring is empty */
  if (rc != 0)
    die("sl_ring_read", rc);
  while ((rc = sl_ring_read(t->ring, &b)) == 0)
    ;
  if (rc != SL_EOF)
    die("sl_ring_read", rc);
  return NULL;
}

static void *idle_writer(void *arg) {
  struct idle *t = arg;
  /* One more than fits: the last write blocks on the full ring. */
  for (size_t i = 0; i <= t->fill; i++) {
    int rc = sl_ring_write(t->ring, sl_buf_ref(t->buf));
    if (rc != 0)
      die("sl_ring_write", rc);
  }
  sl_ring_close(t->ring);
  return NULL;
}

/* Wait (sleeping) until the chosen side of ring is blocked inside it. */
static void wait_blocked(sl_ring *ring, bool writer) {
  uint64_t deadline = now_ns() + 10000000000ull;
  for (;;) {
    sl_ring_stats st;
    int rc = sl_ring_stats_get(ring, &st);
    if (rc != 0)
      die("sl_ring_stats_get", rc);
    if (writer ? st.writer_waiting : st.reader_waiting)
      return;
    if (now_ns() > deadline) {
      fprintf(stderr, "%s: the %s never blocked\n", prog,
              writer ? "writer" : "reader");
      exit(1);
    }
    sleep_ns(1000000);
  }
}

/* CPU milliseconds the process used while one side of a ring was blocked
 * and the other slept for IDLE_WINDOW_NS. */
static double idle_cpu_ms(bool writer_blocks) {
  struct idle t;
  memset(&t, 0, sizeof t);
  t.fill = 8;
  sl_ring_opts o = {.hwm = t.fill * 8,
                    .lwm = SL_LWM_DEFAULT,
                    .mode = SL_RING_BYTES,
                    .max_chunks = 0};
  int rc = sl_ring_new(&t.ring, &o);
  if (rc == 0)
    rc = sl_buf_new(NULL, 8, &t.buf);
  if (rc == 0)
    rc = sl_buf_set_len(t.buf, 8);
  if (rc != 0)
    die("setup", rc);

  pthread_t th;
  start_thread(&th, writer_blocks ? idle_writer : idle_reader, &t);
  wait_blocked(t.ring, writer_blocks);

  uint64_t c0 = cpu_ns();
  sleep_ns(IDLE_WINDOW_NS); /* the other side sleeps */
  uint64_t c1 = cpu_ns();

  if (writer_blocks) {
    /* Drain: the writer resumes, finishes and closes. */
    sl_buf *b;
    while ((rc = sl_ring_read(t.ring, &b)) == 0)
      sl_buf_unref(b);
    if (rc != SL_EOF)
      die("sl_ring_read", rc);
  } else {
    rc = sl_ring_write(t.ring, sl_buf_ref(t.buf));
    if (rc != 0)
      die("sl_ring_write", rc);
    sl_ring_close(t.ring);
  }
  join_thread(th);
  sl_ring_free(t.ring);
  sl_buf_unref(t.buf);
  return (double)(c1 - c0) / 1e6;
}

/* ---- main --------------------------------------------------------------- */

static size_t parse_count(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v == 0 || v > (1ull << 40)) {
    fprintf(stderr, "%s: bad %s: %s\n", prog, what, s);
    exit(2);
  }
  return (size_t)v;
}

static size_t env_count(const char *name, size_t dflt) {
  const char *s = getenv(name);
  return s && *s ? parse_count(s, name) : dflt;
}

static void usage(void) {
  fprintf(stderr,
          "usage: %s [-n SMALL] [-N BIG] [-r REPS] [-c CAPACITY] [-o FILE]\n",
          prog);
  exit(2);
}

static void fmt_rate(char *out, size_t n, double r) {
  if (r >= 1e6)
    snprintf(out, n, "%.2f M/s", r / 1e6);
  else
    snprintf(out, n, "%.1f k/s", r / 1e3);
}

/* ---- the mechanism alone: one thread, nobody waits --------------------- */

/* ns per item to write `capacity` chunks and read them back on one thread,
 * the ring with batch reads, the naive queue one pop per item. With no
 * second thread nothing sleeps, so this is what each handoff costs in
 * instructions and atomic operations, free of the scheduler's noise. */
static void handoff_cost(sl_buf **bufs, size_t capacity, size_t items,
                         double *ring_ns, double *naive_ns) {
  sl_ring_opts o = {.hwm = (size_t)1 << 30,
                    .lwm = SL_LWM_DEFAULT,
                    .mode = SL_RING_BYTES,
                    .max_chunks = capacity};
  sl_ring *ring;
  int rc = sl_ring_new(&ring, &o);
  if (rc != 0)
    die("sl_ring_new", rc);
  struct naive q;
  naive_init(&q, capacity);
  sl_buf *batch[64];
  size_t rounds = items / capacity ? items / capacity : 1;

  uint64_t t0 = now_ns();
  for (size_t r = 0; r < rounds; r++) {
    for (size_t i = 0; i < capacity; i++)
      if ((rc = sl_ring_write(ring, bufs[i])) != 0)
        die("sl_ring_write", rc);
    for (size_t got = 0, n; got < capacity; got += n)
      if ((rc = sl_ring_read_batch(ring, batch, 64, &n)) != 0)
        die("sl_ring_read_batch", rc);
  }
  uint64_t t1 = now_ns();
  for (size_t r = 0; r < rounds; r++) {
    for (size_t i = 0; i < capacity; i++)
      naive_push(&q, bufs[i]);
    for (size_t i = 0; i < capacity; i++)
      naive_pop(&q);
  }
  uint64_t t2 = now_ns();
  *ring_ns = (double)(t1 - t0) / (double)(rounds * capacity);
  *naive_ns = (double)(t2 - t1) / (double)(rounds * capacity);
  naive_destroy(&q);
  sl_ring_free(ring);
}

int main(int argc, char **argv) {
  size_t small = env_count("BENCH_RING_SMALL", 4194304);
  size_t big = env_count("BENCH_RING_BIG", 200000);
  size_t reps = env_count("BENCH_REPS", 5);
  size_t capacity = 1024;
  const char *out_path = NULL;
  int opt;
  while ((opt = getopt(argc, argv, "n:N:r:c:o:h")) != -1) {
    switch (opt) {
    case 'n':
      small = parse_count(optarg, "-n");
      break;
    case 'N':
      big = parse_count(optarg, "-N");
      break;
    case 'r':
      reps = parse_count(optarg, "-r");
      break;
    case 'c':
      capacity = parse_count(optarg, "-c");
      break;
    case 'o':
      out_path = optarg;
      break;
    default:
      usage();
    }
  }
  if (optind != argc)
    usage();
  if (reps > MAX_REPS) {
    fprintf(stderr, "%s: at most %d repetitions\n", prog, MAX_REPS);
    return 2;
  }
  /* Buffer i % NBUFS is reused while the queue may still hold the last
   * `capacity` chunks: keep them well apart. */
  if (capacity > NBUFS / 2) {
    fprintf(stderr, "%s: capacity must be at most %d\n", prog, NBUFS / 2);
    return 2;
  }

  struct size_case cases[2] = {
      {.label = "8 B", .key = "8B", .chunk = 8, .items = small},
      {.label = "64 KiB", .key = "64KiB", .chunk = 65536, .items = big},
  };

  printf("ring handoff: 1 producer thread -> 1 consumer thread, capacity %zu "
         "chunks,\nmedian of %zu interleaved runs per queue\n\n",
         capacity, reps);
  fflush(stdout);
  for (size_t i = 0; i < 2; i++)
    measure(&cases[i], reps, capacity);

  printf("%-7s %-8s %9s %11s %10s %7s %7s %7s %7s %9s\n", "chunk", "queue",
         "items", "items/s", "cpu/item", "csw/1k", "pauses", "drains",
         "starves", "signals");
  for (size_t i = 0; i < 2; i++) {
    struct size_case *c = &cases[i];
    char rate[32];
    fmt_rate(rate, sizeof rate, c->ring_rate);
    printf("%-7s %-8s %9zu %11s %7.1f ns %7.2f %7llu %7llu %7llu %9llu\n",
           c->label, "sl_ring", c->items, rate, c->ring_cpu, c->ring_csw,
           (unsigned long long)c->st.pauses, (unsigned long long)c->st.drains,
           (unsigned long long)c->st.starves,
           (unsigned long long)c->st.signals);
    fmt_rate(rate, sizeof rate, c->naive_rate);
    printf("%-7s %-8s %9zu %11s %7.1f ns %7.2f %7s %7s %7s %9llu\n", c->label,
           "naive", c->items, rate, c->naive_cpu, c->naive_csw, "-", "-", "-",
           2ull * c->items);
  }
  printf("(cpu/item: both threads' CPU time; csw/1k: context switches per "
         "1000 items;\nring counters are those of the median sl_ring run; "
         "the naive queue signals\ntwice per item by construction)\n\n");

  printf("%-7s %14s %15s %18s   %s\n", "chunk", "sl_ring/naive",
         "pairs min-max", "cpu sl_ring/naive", "target");
  for (size_t i = 0; i < 2; i++) {
    struct size_case *c = &cases[i];
    char spread[32];
    snprintf(spread, sizeof spread, "%.2f-%.2f", c->ratio_lo, c->ratio_hi);
    printf("%-7s %13.2fx %15s %17.2fx   ", c->label, c->ratio, spread,
           c->cpu_ratio);
    if (c->chunk == 8)
      printf(">= 3x items/s: %s\n", c->ratio >= 3.0 ? "PASS" : "FAIL");
    else
      printf("(reported)\n");
  }
  printf("(ratios of the medians; \"pairs\": the ratio within each "
         "back-to-back pair)\n\n");
  fflush(stdout);

  double ring_ns[MAX_REPS], naive_ns[MAX_REPS];
  {
    sl_buf **bufs = make_bufs(8);
    for (size_t r = 0; r < reps; r++)
      handoff_cost(bufs, capacity, small, &ring_ns[r], &naive_ns[r]);
    free_bufs(bufs);
  }
  double h_ring = median(ring_ns, reps), h_naive = median(naive_ns, reps);
  printf("handoff cost, one thread, nobody waits (8 B chunks, median of %zu)\n",
         reps);
  printf("  sl_ring %6.1f ns/item   naive %6.1f ns/item   naive/sl_ring "
         "%5.2fx\n\n",
         h_ring, h_naive, h_naive / h_ring);
  fflush(stdout);

  double reader_ms = idle_cpu_ms(false);
  double writer_ms = idle_cpu_ms(true);
  printf("blocked side burns no CPU (%.1f s window, the other side asleep)\n",
         (double)IDLE_WINDOW_NS / 1e9);
  printf("  reader blocked on an empty ring   %7.3f ms CPU   %s (< %.0f ms)\n",
         reader_ms, reader_ms < IDLE_LIMIT_MS ? "PASS" : "FAIL", IDLE_LIMIT_MS);
  printf("  writer blocked on a full ring     %7.3f ms CPU   %s (< %.0f ms)\n",
         writer_ms, writer_ms < IDLE_LIMIT_MS ? "PASS" : "FAIL", IDLE_LIMIT_MS);

  if (out_path) {
    FILE *f = fopen(out_path, "w");
    if (!f)
      die(out_path, errno);
    for (size_t i = 0; i < 2; i++) {
      struct size_case *c = &cases[i];
      fprintf(f, "ring_%s_items=%zu\n", c->key, c->items);
      fprintf(f, "ring_%s_sluice_rate=%.0f\n", c->key, c->ring_rate);
      fprintf(f, "ring_%s_naive_rate=%.0f\n", c->key, c->naive_rate);
      fprintf(f, "ring_%s_ratio=%.4f\n", c->key, c->ratio);
      fprintf(f, "ring_%s_sluice_cpu_ns=%.1f\n", c->key, c->ring_cpu);
      fprintf(f, "ring_%s_naive_cpu_ns=%.1f\n", c->key, c->naive_cpu);
      fprintf(f, "ring_%s_cpu_ratio=%.4f\n", c->key, c->cpu_ratio);
      fprintf(f, "ring_%s_sluice_csw_per_k=%.2f\n", c->key, c->ring_csw);
      fprintf(f, "ring_%s_naive_csw_per_k=%.2f\n", c->key, c->naive_csw);
      fprintf(f, "ring_%s_signals=%llu\n", c->key,
              (unsigned long long)c->st.signals);
    }
    fprintf(f, "handoff_sluice_ns=%.2f\n", h_ring);
    fprintf(f, "handoff_naive_ns=%.2f\n", h_naive);
    fprintf(f, "handoff_ratio=%.4f\n", h_naive / h_ring);
    fprintf(f, "idle_reader_cpu_ms=%.3f\n", reader_ms);
    fprintf(f, "idle_writer_cpu_ms=%.3f\n", writer_ms);
    if (fclose(f) != 0)
      die(out_path, errno);
  }
  return 0;
}
