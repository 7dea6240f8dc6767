/* SPDX-License-Identifier: MIT */
/*
 * bench/map — the ordered parallel map against oneTBB's parallel_pipeline,
 * measured in the same run.
 *
 * The pipeline under test, the same in each implementation:
 *
 *   input   serial, in order: the next piece of a buffer in memory (a
 *           pointer and a length, no copy)
 *   map     parallel: a new chunk of the piece's size, each 64-bit word
 *           of the piece put through k rounds of a 64-bit mix (k = 0: a
 *           copy; the cost of the framework alone)
 *   sink    serial, in order: fold the chunk into a checksum, free it
 *
 * sluice: a source stage (object chunks), sl_map_new with T workers, a
 * sink stage; the map's defaults (its window) as a user gets them, rings
 * with a high mark of at least four chunks. oneTBB: parallel_pipeline
 * with serial_in_order, parallel, serial_in_order filters, at most T
 * threads, and as many tokens as the map's window holds chunks. serial:
 * one loop doing the same work. Every implementation must print the same
 * checksum, or the run fails.
 *
 * Shared machines are noisy: every cell runs R rounds, the order of the
 * three implementations rotating from round to round, and the medians are
 * compared. Reported per cell: wall time (median), the sluice/TBB wall
 * ratio, CPU time (user + system, all threads) and context switches
 * (voluntary + involuntary, getrusage) per chunk for each.
 *
 * Environment:
 *   BENCH_MAP_MIB      input size in MiB (default 256)
 *   BENCH_MAP_ROUNDS   rounds per cell (default 5)
 *   BENCH_MAP_THREADS  workers / TBB threads (default 2)
 *   BENCH_MAP_CHUNKS   chunk sizes, e.g. "4k 64k 1m" (the default)
 *   BENCH_MAP_KS       rounds of the mix, e.g. "0 1 8" (the default)
 *   BENCH_MAP_TOKENS   TBB's tokens (default: as many chunks as the
 *                      map's default window holds: 2T + 2, or as many
 *                      as fit in 1 MiB, at most 256)
 *
 * Targets (issue: the map without a sleep per chunk): sluice/TBB wall
 * <= 1.1 at 64 KiB and 1 MiB for every k, <= 1.3 at 4 KiB for k >= 1;
 * context switches per chunk <= 0.05 at 64 KiB.
 */
#define TBB_PREVIEW_WAITING_FOR_WORKERS 1
#include <sluice.h>
#include <tbb/global_control.h>
#include <tbb/parallel_pipeline.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <sys/resource.h>
#include <time.h>
#include <vector>

namespace {

struct piece {
  const unsigned char *p;
  size_t n;
};

/* The map's work: each word through k rounds of a mix. */
void work(const unsigned char *in, unsigned char *out, size_t n, unsigned k) {
  size_t nw = n / 8;
  for (size_t i = 0; i < nw; i++) {
    uint64_t x;
    std::memcpy(&x, in + 8 * i, 8);
    for (unsigned r = 0; r < k; r++)
      x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ULL;
    std::memcpy(out + 8 * i, &x, 8);
  }
  std::memcpy(out + 8 * nw, in + 8 * nw, n - 8 * nw);
}

/* The sink's fold: order-dependent across chunks. */
uint64_t fold(uint64_t acc, const unsigned char *p, size_t n) {
  uint64_t s = n;
  size_t nw = n / 8;
  for (size_t i = 0; i < nw; i++) {
    uint64_t x;
    std::memcpy(&x, p + 8 * i, 8);
    s += x;
  }
  for (size_t i = 8 * nw; i < n; i++)
    s += p[i];
  return (acc ^ s) * 0x9e3779b97f4a7c15ULL;
}

double now_s() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct usage {
  double wall, cpu;
  long csw;
};

struct meter {
  double t0, c0;
  long s0;
  static void read(double *cpu, long *csw) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    *csw = ru.ru_nvcsw + ru.ru_nivcsw;
  }
  void start() {
    read(&c0, &s0);
    t0 = now_s();
  }
  usage stop() const {
    double t1 = now_s(), c1;
    long s1;
    read(&c1, &s1);
    return usage{t1 - t0, c1 - c0, s1 - s0};
  }
};

struct job {
  std::vector<piece> pieces;
  unsigned k, threads, tokens;
  size_t chunk;
};

/* ---- serial ---- */

uint64_t run_serial(const job &j) {
  uint64_t acc = 0;
  unsigned char *out = (unsigned char *)std::malloc(j.chunk ? j.chunk : 1);
  if (!out)
    throw std::bad_alloc();
  for (const piece &pc : j.pieces) {
    work(pc.p, out, pc.n, j.k);
    acc = fold(acc, out, pc.n);
  }
  std::free(out);
  return acc;
}

/* ---- oneTBB ---- */

struct tbb_chunk {
  size_t n;
  tbb_chunk *next;
  unsigned char data[1];
};

/* Chunks are reused, as sluice's pool reuses its buffers: malloc and free
 * of a large block on different threads would cost TBB page faults that
 * have nothing to do with the pipeline. */
struct tbb_pool {
  std::mutex mu;
  tbb_chunk *free = nullptr;
  size_t cap;
  tbb_chunk *get() {
    {
      std::lock_guard<std::mutex> g(mu);
      if (tbb_chunk *c = free) {
        free = c->next;
        return c;
      }
    }
    tbb_chunk *c = (tbb_chunk *)std::malloc(sizeof(tbb_chunk) + cap);
    if (!c)
      throw std::bad_alloc();
    return c;
  }
  void put(tbb_chunk *c) {
    std::lock_guard<std::mutex> g(mu);
    c->next = free;
    free = c;
  }
  ~tbb_pool() {
    while (tbb_chunk *c = free) {
      free = c->next;
      std::free(c);
    }
  }
};

uint64_t run_tbb(const job &j) {
  uint64_t acc = 0;
  size_t next = 0;
  tbb_pool pool;
  pool.cap = j.chunk;
  /* Workers start with the run and are waited for at its end, as the
   * pipeline's threads are: neither side spins through the other's run. */
  tbb::task_scheduler_handle handle{tbb::attach{}};
  {
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                           j.threads);
    tbb::parallel_pipeline(
        j.tokens,
        tbb::make_filter<void, piece *>(tbb::filter_mode::serial_in_order,
                                        [&](tbb::flow_control &fc) -> piece * {
                                          if (next == j.pieces.size()) {
                                            fc.stop();
                                            return nullptr;
                                          }
                                          return const_cast<piece *>(
                                              &j.pieces[next++]);
                                        }) &
            tbb::make_filter<piece *, tbb_chunk *>(tbb::filter_mode::parallel,
                                                   [&](piece *pc) {
                                                     tbb_chunk *c = pool.get();
                                                     c->n = pc->n;
                                                     work(pc->p, c->data, pc->n,
                                                          j.k);
                                                     return c;
                                                   }) &
            tbb::make_filter<tbb_chunk *, void>(
                tbb::filter_mode::serial_in_order, [&](tbb_chunk *c) {
                  acc = fold(acc, c->data, c->n);
                  pool.put(c);
                }));
  }
  tbb::finalize(handle, std::nothrow);
  return acc;
}

/* ---- sluice ---- */

struct sl_src {
  const job *j;
  size_t next;
};

int src_read(sl_stage *s, void *ctx) {
  sl_src *c = (sl_src *)ctx;
  if (c->next == c->j->pieces.size())
    return SL_EOF;
  sl_buf *b;
  int rc = sl_buf_new_object(sl_stage_pool(s), (void *)&c->j->pieces[c->next],
                             nullptr, &b);
  if (rc != 0)
    return rc;
  c->next++;
  return sl_stage_push(s, b);
}

int map_fn(sl_stage *s, void *ctx, void *wctx, sl_buf *in, sl_buf **out) {
  (void)wctx;
  const job *j = (const job *)ctx;
  const piece *pc = (const piece *)sl_buf_object(in);
  sl_buf *b;
  int rc = sl_stage_buf(s, pc->n ? pc->n : 1, &b);
  if (rc == 0) {
    work(pc->p, sl_buf_data(b), pc->n, j->k);
    sl_buf_set_len(b, pc->n);
    *out = b;
  }
  sl_buf_unref(in);
  return rc;
}

int sink_write(sl_stage *s, void *ctx, sl_buf *b) {
  (void)s;
  uint64_t *acc = (uint64_t *)ctx;
  *acc = fold(*acc, sl_buf_data(b), sl_buf_len(b));
  sl_buf_unref(b);
  return 0;
}

uint64_t run_sluice(const job &j) {
  uint64_t acc = 0;
  sl_src src = {&j, 0};
  sl_pipeline_opts po = {};
  po.buf_size = j.chunk;
  po.hwm = std::max<size_t>((size_t)256 << 10, 4 * j.chunk);
  sl_pipeline *p;
  sl_stage *a, *m, *z;
  static const sl_stage_ops src_ops = {};
  sl_stage_ops so = src_ops, zo = src_ops;
  so.read = src_read;
  zo.write = sink_write;
  sl_map_ops mo = {};
  mo.map = map_fn;
  sl_map_opts mopts = {};
  mopts.workers = j.threads;
  if (sl_pipeline_new(&p, &po) != 0 || sl_stage_new(&a, "src", &so, &src) ||
      sl_stage_set_output(a, 64, SL_LWM_DEFAULT, SL_RING_OBJECTS) ||
      sl_map_new(&m, "map", &mo, (void *)&j, &mopts) ||
      sl_stage_new(&z, "sum", &zo, &acc) ||
      sl_pipeline_chain(p, a, m, z, (sl_stage *)nullptr)) {
    std::fprintf(stderr, "bench/map: cannot build the pipeline\n");
    std::exit(1);
  }
  int rc = sl_pipeline_start(p);
  if (rc == 0)
    rc = sl_pipeline_wait(p);
  if (rc != 0) {
    std::fprintf(stderr, "bench/map: pipeline: %s\n", sl_strerror(rc));
    std::exit(1);
  }
  sl_pipeline_free(p);
  return acc;
}

/* ---- the grid ---- */

size_t parse_size(const std::string &s) {
  char *end;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  switch (*end) {
  case 'k':
  case 'K':
    v <<= 10;
    break;
  case 'm':
  case 'M':
    v <<= 20;
    break;
  default:
    break;
  }
  return (size_t)v;
}

std::vector<std::string> words(const char *env, const char *dflt) {
  const char *s = std::getenv(env);
  std::string str = s && *s ? s : dflt;
  std::vector<std::string> out;
  size_t i = 0;
  while (i < str.size()) {
    size_t j = str.find(' ', i);
    if (j == std::string::npos)
      j = str.size();
    if (j > i)
      out.push_back(str.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

unsigned env_uint(const char *env, unsigned dflt) {
  const char *s = std::getenv(env);
  return s && *s ? (unsigned)std::strtoul(s, nullptr, 10) : dflt;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  if (n == 0)
    return 0;
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

} // namespace

int main() {
  size_t mib = env_uint("BENCH_MAP_MIB", 256);
  unsigned rounds = env_uint("BENCH_MAP_ROUNDS", 5);
  unsigned threads = env_uint("BENCH_MAP_THREADS", 2);
  if (rounds == 0 || threads == 0 || mib == 0) {
    std::fprintf(stderr, "bench/map: BENCH_MAP_* must be above 0\n");
    return 1;
  }
  size_t len = mib << 20;
  unsigned char *data = (unsigned char *)std::malloc(len);
  if (!data)
    return 1;
  uint64_t x = 0x123456789abcdefULL;
  for (size_t i = 0; i < len; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(data + i, &x, 8);
  }
  std::printf("bench/map: %zu MiB in memory, %u threads (sluice: %u map "
              "workers), %u rounds per cell, medians\n",
              mib, threads, threads, rounds);
  std::printf("%-6s %2s %6s | %8s %8s %8s | %6s | %7s %7s %7s | %8s %8s\n",
              "chunk", "k", "tokens", "serial", "sluice", "tbb", "sl/tbb",
              "cpu-ser", "cpu-sl", "cpu-tbb", "csw/c-sl", "csw/c-tbb");
  const char *names[3] = {"serial", "sluice", "tbb"};
  int missed = 0;
  for (const std::string &cs : words("BENCH_MAP_CHUNKS", "4k 64k 1m")) {
    for (const std::string &ks : words("BENCH_MAP_KS", "0 1 8")) {
      job j;
      j.chunk = parse_size(cs);
      j.k = (unsigned)std::strtoul(ks.c_str(), nullptr, 10);
      j.threads = threads;
      /* The map's default window: 2N + 2 chunks, or as many as fit in
       * 1 MiB, at most 256. */
      j.tokens = (unsigned)std::max<size_t>(
          2 * threads + 2, std::min<size_t>(256, ((size_t)1 << 20) / j.chunk));
      if (const char *e = std::getenv("BENCH_MAP_TOKENS"))
        j.tokens = (unsigned)std::strtoul(e, nullptr, 10);
      for (size_t off = 0; off < len; off += j.chunk)
        j.pieces.push_back(piece{data + off, std::min(j.chunk, len - off)});
      std::vector<double> wall[3], cpu[3], csw[3];
      uint64_t want = 0;
      for (unsigned r = 0; r < rounds; r++) {
        for (unsigned t = 0; t < 3; t++) {
          unsigned which = (r + t) % 3;
          meter mt;
          mt.start();
          uint64_t got = which == 0   ? run_serial(j)
                         : which == 1 ? run_sluice(j)
                                      : run_tbb(j);
          usage u = mt.stop();
          if (r == 0 && t == 0)
            want = got;
          else if (got != want) {
            std::fprintf(stderr,
                         "bench/map: %s checksum %016" PRIx64 " != %016" PRIx64
                         " (chunk %s, k %u)\n",
                         names[which], got, want, cs.c_str(), j.k);
            return 1;
          }
          wall[which].push_back(u.wall);
          cpu[which].push_back(u.cpu);
          csw[which].push_back((double)u.csw / (double)j.pieces.size());
        }
      }
      double ratio = median(wall[1]) / median(wall[2]);
      bool goal = j.chunk >= ((size_t)64 << 10) || j.k >= 1;
      double target = j.chunk >= ((size_t)64 << 10) ? 1.1 : 1.3;
      if (goal && ratio > target)
        missed++;
      std::printf("%-6s %2u %6u | %7.3fs %7.3fs %7.3fs | %6.2f%s| %6.3fs "
                  "%6.3fs %6.3fs | %8.4f %8.4f\n",
                  cs.c_str(), j.k, j.tokens, median(wall[0]), median(wall[1]),
                  median(wall[2]), ratio, goal && ratio > target ? "*" : " ",
                  median(cpu[0]), median(cpu[1]), median(cpu[2]),
                  median(csw[1]), median(csw[2]));
      std::fflush(stdout);
    }
  }
  std::printf("targets: sl/tbb <= 1.1 at 64k and 1m, <= 1.3 at 4k for k >= "
              "1; * marks a miss (%d)\n",
              missed);
  std::free(data);
  return 0;
}
