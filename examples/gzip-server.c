/* SPDX-License-Identifier: MIT */
/*
 * gzip-server — an epoll server that streams each request body back to its
 * client gzipped, one pipeline per connection:
 *
 *   client socket --recv--> sl_writer -> gzip -> sl_reader --send--> client
 *
 * The event loop never blocks and never compresses: the gzip stage runs on
 * a thread of its own, so with many clients the compression spreads over
 * every core while one thread does all the socket work. The bridges are
 * the loop's side of the pipeline: sl_writer takes what recv brought in, a
 * pooled buffer filled in place (no copy), and sl_reader hands out the
 * compressed chunks to send.
 *
 * Backpressure, both ways, as a Node server would do it with pause(),
 * resume() and 'drain':
 *
 *   request   sl_writer_write_buf returns 0 at the high mark: stop reading
 *             the client (EPOLLIN off), so the kernel's window closes and
 *             the client's sends block; when the writer's descriptor turns
 *             readable (the drain), read again.
 *   response  send would block: keep the chunk, stop reading the reader
 *             (its descriptor off) and wait for EPOLLOUT; gzip then fills
 *             its output ring and pauses, which pauses the request side.
 *
 * Memory per connection is bounded by the marks, whatever the body's size
 * and however slowly the client reads. Exactly: every buffer of a
 * connection's pipeline comes from the pool that all connections share
 * (whose peak --stats reports: with one client, that client's).
 * Write H for the high mark (--hwm, 256 KiB by default) and C for the
 * buffer size (--buf, 64 KiB by default). Here every chunk weighs C
 * against the marks: a ring counts a buffer's capacity, and the buffers
 * are the pool's full-size ones (gzip's last, smaller one comes when the
 * rest is empty). A ring admits a chunk while its level is below H, so it
 * holds at most R, H rounded up to a multiple of C (H itself when C
 * divides it, and always less than H + C). The pool holds at most
 *
 *   R   the request ring, together with the buffer the loop receives into:
 *       the loop receives only after the writer said "keep writing", with
 *       the level at most R - C, and each write is one such buffer, which
 *       the ring then admits, so the writer never keeps any of it pending
 *   R   the chunks gzip took from the request ring: the framework takes
 *       what waits there (up to 16 chunks) at once, gzip releases each as
 *       it is compressed, and meanwhile the ring fills up again behind it
 *   C   gzip's output buffer being filled (held while its push waits)
 *   R   the response ring
 *   C   the chunk being sent
 *
 *   3R + 2C in all: 896 KiB with the defaults, 224 KiB with --hwm 65536
 *   --buf 16384, which tests/server.sh's slow reader reaches exactly.
 *
 * "The sum of the marks" covers the two rings, 2R: what waits between the
 * threads. The other R + 2C is held by the threads at work, gzip's batch
 * being most of it; a connection held to a budget of M bytes needs H and
 * C with 3R + 2C <= M. Not counted: zlib's own state (about 256 KiB for a
 * compressor at the default memory level), which it allocates through the
 * library's allocator but not from the pool, and the kernel's socket
 * buffers. --stats prints this bound as conn_bound_bytes, computed from
 * the rings' real marks and the pool's buffer size.
 *
 * Ends: the client's shutdown(SHUT_WR) reads as end of file here, which
 * becomes sl_writer_end; the reader's SL_EOF, once the last chunk is sent,
 * becomes shutdown(SHUT_WR) and close. A client that resets or goes away
 * mid-stream fails its send or recv: its pipeline alone is cancelled. Each
 * pipeline's finished callback (on a stage thread) queues the connection
 * and pokes an eventfd, and the loop frees it there, so the loop never
 * waits for a thread. SIGINT or SIGTERM (read through a signalfd) stops
 * accepting, cancels every pipeline still serving its client (one whose
 * response has all been sent is left to finish), frees everything and
 * exits 0.
 *
 * Limits, for clients that stay or come in crowds:
 *
 *   slots     a connection holds its socket, and once its client sends its
 *             first byte (or its end) a pipeline, whose bridges hold two
 *             descriptors more, and a gzip thread; before that, the socket
 *             alone. --max-connections (by default what the descriptor
 *             limit holds at three each, less a reserve of 32) bounds the
 *             connections at once: beyond it the listener is not polled
 *             and new connections wait in the kernel's backlog, unless
 *             the oldest connection that has sent nothing yet can be
 *             closed to make room (a client that connects and stays
 *             silent must not keep out those that talk). An accept that
 *             finds no descriptor (EMFILE, ENFILE) does the same, or stops
 *             accepting until a connection closes: a live client never
 *             loses a descriptor to a new one.
 *   idle      --idle-timeout SECONDS (60; 0: none): a connection that has
 *             moved no byte either way for that long is closed, its
 *             pipeline cancelled: a client that neither sends nor reads.
 *   memory    --trim-after SECONDS (5; 0: never): once the loop has had no
 *             event for that long it trims the shared pool down to one
 *             connection's worth (3R + 2C, below; --stats prints it as
 *             pool_floor_bytes), ends the gzip threads waiting in the set
 *             and has malloc give back what it holds free; the first
 *             connections after pay to fault memory in and start threads
 *             again. With --stats each trim that freed something prints a
 *             "trimmed:" line with the resident size then and at start.
 *
 * --inline runs the same server without sluice: zlib's deflate on the
 * event loop's thread, one connection at a time (the usual single-threaded
 * event-loop server; the benchmark's peer). --stats prints, on exit, the
 * shared pool's peak (the most bytes all connections held at once), the peak
 * RSS, the most connections at once and the threads the process had then,
 * how many gzip threads were started and how many connections took one that
 * was waiting (threads_created, threads_reused), and
 * the library's allocations still live (0: nothing leaked); and, over every
 * connection, the backpressure seen: the highest level each ring reached,
 * how often each ring paused its producer (request_pauses: the writer said
 * stop; response_pauses: gzip found the ring to the reader full), how
 * often the loop stopped reading a client for a writer that said stop
 * (recv_paused) and how often a send would block, so that the loop stopped
 * reading the reader until EPOLLOUT (send_blocked); and the limits at work:
 * max_connections, the silent connections closed to make room (evicted)
 * or for idling (idle_closed), how often accepting stopped (accept_stops)
 * and met EMFILE (emfile), and the trims.
 *
 * Usage: gzip-server [--inline] [--stats] [--level N] [--hwm BYTES]
 *                    [--buf BYTES] [--idle-threads N] [--max-connections N]
 *                    [--idle-timeout SECONDS] [--trim-after SECONDS] PORT
 * --idle-threads: how many finished gzip threads wait for the next
 * connection (256 by default; 0: each connection's thread ends with it).
 * Listens on 127.0.0.1:PORT (0 picks a free port) and prints the port on
 * the first line of standard output.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, MSG_NOSIGNAL */
#endif

#include <sluice.h>
#include <sluice/bridge.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif

#define IO_BUDGET 16          /* recvs or sends per event: fairness */
#define INLINE_BUF (64 << 10) /* --inline: input and output buffers */

struct server;

/* What an epoll event is about: the client socket or one of the bridges'
 * descriptors. */
enum watch_kind { W_SOCKET, W_WRITER, W_READER };
struct watch {
  struct conn *c;
  enum watch_kind kind;
};

/* The server's own descriptors; their watches have no connection. */
static struct watch listen_watch, signal_watch, done_watch;

struct conn {
  struct server *srv;
  int fd; /* -1 once closed */
  struct watch on_sock, on_writer, on_reader;
  uint32_t sock_events; /* as registered */
  bool reader_on;       /* reader descriptor registered for EPOLLIN */
  bool writer_on;       /* writer descriptor registered for EPOLLIN */

  bool active;      /* the client has sent a byte, or its end */
  bool counted;     /* holds one of the --max-connections slots */
  bool listed;      /* on the server's idle list (and maybe its new list) */
  uint64_t last_ms; /* its last recv or send (the loop's clock) */
  bool in_paused;   /* the writer said 0: not reading the client */
  bool in_done;     /* the client's end of file reached the writer */
  bool out_blocked; /* send would block: waiting for EPOLLOUT */

  /* The pipeline. */
  sl_pipeline *p;
  sl_writer *w;
  sl_reader *r;
  sl_ring *req_ring, *resp_ring; /* writer -> gzip, gzip -> reader */
  sl_buf *out;                   /* the chunk being sent, from out_off on */
  size_t out_off;
  bool finished; /* the pipeline's finished callback came */
  bool reaped;   /* queued to be freed after this batch of events */

  /* --inline */
  z_stream z;
  bool z_ready, z_end;
  unsigned char *zin, *zout;
  size_t zout_len, zout_off;

  struct conn *prev, *next;           /* live connections */
  struct conn *idle_prev, *idle_next; /* open sockets, least recent first */
  struct conn *new_prev, *new_next;   /* not active yet, oldest first */
  struct conn *done_next;             /* finished, queued for the loop */
  struct conn *reap_next;             /* to be freed after this batch */
};

struct server {
  int ep, lfd, sigfd, donefd;
  bool inline_mode, stats, stopping, accept_paused;
  int level;
  sl_pipeline_opts popts;
  sl_pool *pool;       /* every connection's buffers */
  sl_threads *threads; /* every connection's gzip thread */
  size_t idle_threads;
  struct conn *conns;

  /* Limits. held: connections holding descriptors (a slot each);
   * accepting stops at max_conns, and an accept that finds no descriptor
   * (EMFILE) makes room by closing the oldest connection that has sent
   * nothing yet, or stops until one closes. */
  size_t held, max_conns;
  uint64_t idle_timeout_ms; /* 0: none */
  uint64_t trim_after_ms;   /* 0: never */
  size_t pool_floor;        /* what a trim leaves cached: one connection */
  uint64_t now_ms, last_event_ms;
  bool trimmed; /* since the last event */
  struct conn *idle_head, *idle_tail, *new_head, *new_tail;

  pthread_mutex_t done_mu; /* guards done, filled by stage threads */
  struct conn *done;
  /* Connections to free once the current batch of events is handled: an
   * event later in the batch may still name one. */
  struct conn *reap;

  /* --stats */
  size_t live, peak_live, peak_pool_bytes, req_peak, resp_peak;
  size_t pipes, peak_pipes; /* connections with a pipeline */
  bool pipes_new_peak;
  long start_rss_kib;
  unsigned long long idle_closed, evicted, accept_stops, emfile, trims;
  size_t conn_bound; /* 3R + 2C (see the top), the largest of any conn */
  long threads_at_peak, stage_threads_at_peak;
  unsigned long long served, failed;
  unsigned long long recv_paused;  /* the writer said stop (EPOLLIN off) */
  unsigned long long send_blocked; /* send said EAGAIN (reader fd off) */
  unsigned long long req_pauses, resp_pauses; /* the rings' pause counts */
};

/* ------------------------------------------------------------------------
 * --stats: a counting allocator for the library, and /proc's thread count
 * ---------------------------------------------------------------------- */

static atomic_long live_blocks;

static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p)
    atomic_fetch_add(&live_blocks, 1);
  return p;
}
static void *count_calloc(size_t k, size_t n) {
  void *p = calloc(k, n);
  if (p)
    atomic_fetch_add(&live_blocks, 1);
  return p;
}
static void *count_realloc(void *old, size_t n) {
  void *p = realloc(old, n);
  if (p && !old)
    atomic_fetch_add(&live_blocks, 1);
  return p;
}
static void count_free(void *p) {
  if (p)
    atomic_fetch_sub(&live_blocks, 1);
  free(p);
}

/* The process's threads, and in *stage those named as stage threads
 * ("sl:..."). -1 when /proc cannot be read. A file read per thread: the
 * loop calls it once per burst of accepts that made a new peak, not once
 * per connection (with 200 clients connecting at once that was 20,000
 * reads on the loop while the clients waited). */
static long thread_count(long *stage) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  long n = 0;

  *stage = 0;
  if (!d)
    return -1;
  while ((e = readdir(d)) != NULL) {
    char path[300], comm[4];
    if (e->d_name[0] == '.')
      continue;
    n++;
    snprintf(path, sizeof path, "%s/comm", e->d_name);
    int fd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      if (read(fd, comm, sizeof comm) >= 3 && memcmp(comm, "sl:", 3) == 0)
        (*stage)++;
      close(fd);
    }
  }
  closedir(d);
  return n;
}

/* ------------------------------------------------------------------------
 * Registering interest
 * ---------------------------------------------------------------------- */

static int watch_add(struct server *s, int fd, struct watch *wt,
                     uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = wt};
  return epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev);
}

static void watch_mod(struct server *s, int fd, struct watch *wt,
                      uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = wt};
  epoll_ctl(s->ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Make the registrations say what the connection waits for now. */
static void conn_update(struct conn *c) {
  struct server *s = c->srv;
  if (c->fd < 0)
    return;
  uint32_t want = 0;
  if (!c->in_paused && !c->in_done)
    want |= EPOLLIN;
  if (c->out_blocked)
    want |= EPOLLOUT;
  if (want != c->sock_events) {
    watch_mod(s, c->fd, &c->on_sock, want);
    c->sock_events = want;
  }
  if (s->inline_mode || !c->p)
    return; /* no pipeline yet: nothing but the socket */
  bool reader_on = !c->out_blocked;
  if (reader_on != c->reader_on) {
    watch_mod(s, sl_reader_fd(c->r), &c->on_reader, reader_on ? EPOLLIN : 0);
    c->reader_on = reader_on;
  }
  bool writer_on = !c->in_done; /* no drain to wait for after the end */
  if (writer_on != c->writer_on) {
    watch_mod(s, sl_writer_fd(c->w), &c->on_writer, writer_on ? EPOLLIN : 0);
    c->writer_on = writer_on;
  }
}

/* ------------------------------------------------------------------------
 * Limits: slots, the idle list, the loop's clock, memory
 * ---------------------------------------------------------------------- */

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The process's resident memory now, in KiB; -1 when /proc cannot say. */
static long rss_kib(void) {
  long size, resident = -1;
  FILE *f = fopen("/proc/self/statm", "re");
  if (!f)
    return -1;
  if (fscanf(f, "%ld %ld", &size, &resident) != 2)
    resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Two lists thread the open connections: idle_*, every open socket, least
 * recently active first (the next to time out at its head), and new_*,
 * those whose client has sent nothing yet, oldest first (the first to go
 * when room must be made). */
static void idle_unlink(struct server *s, struct conn *c) {
  if (c->idle_prev)
    c->idle_prev->idle_next = c->idle_next;
  else
    s->idle_head = c->idle_next;
  if (c->idle_next)
    c->idle_next->idle_prev = c->idle_prev;
  else
    s->idle_tail = c->idle_prev;
  c->idle_prev = c->idle_next = NULL;
}

static void idle_append(struct server *s, struct conn *c) {
  c->idle_prev = s->idle_tail;
  c->idle_next = NULL;
  if (s->idle_tail)
    s->idle_tail->idle_next = c;
  else
    s->idle_head = c;
  s->idle_tail = c;
}

static void new_unlink(struct server *s, struct conn *c) {
  if (c->new_prev)
    c->new_prev->new_next = c->new_next;
  else
    s->new_head = c->new_next;
  if (c->new_next)
    c->new_next->new_prev = c->new_prev;
  else
    s->new_tail = c->new_prev;
  c->new_prev = c->new_next = NULL;
}

static void conn_list(struct conn *c) {
  struct server *s = c->srv;
  c->listed = true;
  c->last_ms = s->now_ms;
  idle_append(s, c);
  c->new_prev = s->new_tail;
  c->new_next = NULL;
  if (s->new_tail)
    s->new_tail->new_next = c;
  else
    s->new_head = c;
  s->new_tail = c;
}

static void conn_unlist(struct conn *c) {
  if (!c->listed)
    return;
  c->listed = false;
  idle_unlink(c->srv, c);
  if (!c->active)
    new_unlink(c->srv, c);
}

/* A recv or send moved bytes (or the end): c is the most recent now. */
static void conn_touch(struct conn *c) {
  struct server *s = c->srv;
  c->last_ms = s->now_ms;
  if (c->listed && s->idle_tail != c) {
    idle_unlink(s, c);
    idle_append(s, c);
  }
}

/* Stop polling the listener: new connections wait in the backlog. */
static void accept_stop(struct server *s) {
  if (s->accept_paused || s->stopping)
    return;
  s->accept_paused = true;
  s->accept_stops++;
  watch_mod(s, s->lfd, &listen_watch, 0);
}

/* c's descriptors are closed: its slot is free, so accept again. */
static void conn_uncount(struct conn *c) {
  struct server *s = c->srv;
  if (!c->counted)
    return;
  c->counted = false;
  s->held--;
  if (s->accept_paused && !s->stopping && s->held < s->max_conns) {
    s->accept_paused = false;
    watch_mod(s, s->lfd, &listen_watch, EPOLLIN);
  }
}

/* ------------------------------------------------------------------------
 * A connection's life
 * ---------------------------------------------------------------------- */

/* Runs on the pipeline's last thread to end (or on the loop, when the loop
 * ends the writer or cancels): queue the connection for the loop. */
static void on_finished(sl_pipeline *p, int status, void *arg) {
  struct conn *c = arg;
  struct server *s = c->srv;
  uint64_t one = 1;
  (void)p;
  (void)status; /* sl_pipeline_wait says it again */
  pthread_mutex_lock(&s->done_mu);
  c->done_next = s->done;
  s->done = c;
  pthread_mutex_unlock(&s->done_mu);
  if (write(s->donefd, &one, sizeof one) < 0) {
    /* the counter is already full of wake-ups: the loop will look */
  }
}

/* --stats: the rings' pauses and peaks, summed and maxed over conns. */
static void ring_stats_add(sl_ring *ring, unsigned long long *pauses,
                           size_t *peak) {
  sl_ring_stats st;
  if (!ring || sl_ring_stats_get(ring, &st) != 0)
    return;
  *pauses += st.pauses;
  if (st.peak_level > *peak)
    *peak = st.peak_level;
}

/* --stats: what one connection's pool can hold, 3R + 2C (see the top),
 * from its rings' marks and its pool's buffer size. */
static size_t conn_bound(struct conn *c, size_t buf) {
  sl_ring_stats rq, rp;
  if (buf == 0 || sl_ring_stats_get(c->req_ring, &rq) != 0 ||
      sl_ring_stats_get(c->resp_ring, &rp) != 0)
    return 0;
  size_t r_req = (rq.hwm + buf - 1) / buf * buf;
  size_t r_resp = (rp.hwm + buf - 1) / buf * buf;
  return r_req + r_req + r_resp + 2 * buf;
}

static void conn_free(struct conn *c) {
  struct server *s = c->srv;
  if (c->p) {
    sl_pool_stats ps;
    int rc = sl_pipeline_wait(c->p); /* finished: only joins */
    if (sl_pool_stats_get(sl_pipeline_pool(c->p), &ps) == 0) {
      if (ps.peak_bytes > s->peak_pool_bytes)
        s->peak_pool_bytes = ps.peak_bytes;
      size_t bound = c->req_ring ? conn_bound(c, ps.buf_size) : 0;
      if (bound > s->conn_bound)
        s->conn_bound = bound;
    }
    ring_stats_add(c->req_ring, &s->req_pauses, &s->req_peak);
    ring_stats_add(c->resp_ring, &s->resp_pauses, &s->resp_peak);
    if (rc == 0)
      s->served++;
    else
      s->failed++;
    sl_pipeline_free(c->p); /* closes the bridges' descriptors */
    s->pipes--;
  }
  conn_unlist(c);
  conn_uncount(c);
  if (c->z_ready)
    deflateEnd(&c->z);
  free(c->zin);
  free(c->zout);
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->live--;
  free(c);
}

/* Free c after the current batch of events. */
static void conn_release(struct conn *c) {
  if (c->reaped)
    return;
  c->reaped = true;
  c->reap_next = c->srv->reap;
  c->srv->reap = c;
}

/* Done with the client's socket: unregister everything, close. The
 * connection itself goes once its pipeline has finished. */
static void conn_close_socket(struct conn *c) {
  struct server *s = c->srv;
  if (c->fd < 0)
    return;
  epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  conn_unlist(c);
  if (!c->p)
    conn_uncount(c); /* the socket was all it held */
  if (c->p) {
    epoll_ctl(s->ep, EPOLL_CTL_DEL, sl_writer_fd(c->w), NULL);
    epoll_ctl(s->ep, EPOLL_CTL_DEL, sl_reader_fd(c->r), NULL);
  }
  sl_buf_unref(c->out);
  c->out = NULL;
  if (s->inline_mode) {
    bool ok = c->z_end && c->zout_off == c->zout_len;
    s->served += ok;
    s->failed += !ok;
  }
  if (!c->p || c->finished)
    conn_release(c);
}

/* The client went away, or the pipeline failed: cancel this pipeline
 * only, and close. */
static void conn_abort(struct conn *c) {
  if (c->p)
    sl_pipeline_cancel(c->p);
  conn_close_socket(c);
}

/* Make room: close the oldest connection whose client has sent nothing
 * yet (it holds its socket alone, no pipeline). false when there is none:
 * then new connections wait in the backlog. */
static bool evict_one(struct server *s) {
  struct conn *c = s->new_head;
  if (!c)
    return false;
  s->evicted++;
  conn_abort(c);
  return true;
}

/* ------------------------------------------------------------------------
 * The pipeline's two ends
 * ---------------------------------------------------------------------- */

/* Client -> writer: recv into a pooled buffer and hand it over, until the
 * writer says stop (0), the socket is empty, or the budget is spent. */
static void pump_in(struct conn *c) {
  for (int budget = IO_BUDGET; budget > 0; budget--) {
    if (c->in_paused || c->in_done || c->fd < 0)
      break;
    sl_buf *b;
    if (sl_writer_buf(c->w, 0, &b) != 0) {
      conn_abort(c);
      return;
    }
    ssize_t n = recv(c->fd, sl_buf_data(b), sl_buf_cap(b), 0);
    if (n >= 0)
      conn_touch(c);
    if (n > 0) {
      sl_buf_set_len(b, (size_t)n);
      int rc = sl_writer_write_buf(c->w, b);
      if (rc == 0) {
        c->in_paused = true; /* at the mark: wait for the drain */
        c->srv->recv_paused++;
      } else if (rc != 1) {
        sl_buf_unref(b); /* refused: the pipeline failed */
        conn_abort(c);
        return;
      }
      continue;
    }
    sl_buf_unref(b);
    if (n == 0) { /* the client's shutdown(SHUT_WR): end of the body */
      c->in_done = true;
      if (sl_writer_end(c->w) != 0) {
        conn_abort(c);
        return;
      }
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      conn_abort(c); /* reset by the client */
      return;
    }
  }
  conn_update(c);
}

/* The writer's descriptor: a drain (resume reading), or a failure. */
static void on_drain(struct conn *c) {
  int rc = sl_writer_ack(c->w);
  if (rc == 0 || rc == SL_ECLOSED) {
    c->in_paused = false;
    pump_in(c);
  } else if (rc < 0) {
    conn_abort(c);
  }
}

/* Reader -> client: send chunks until the socket is full (wait for
 * EPOLLOUT), nothing is ready, or the budget is spent. */
static void pump_out(struct conn *c) {
  for (int budget = IO_BUDGET; budget > 0 && c->fd >= 0; budget--) {
    if (!c->out) {
      int rc = sl_reader_read(c->r, &c->out);
      if (rc == SL_AGAIN)
        break;
      if (rc == SL_EOF) { /* all sent: half-close, then close */
        shutdown(c->fd, SHUT_WR);
        conn_close_socket(c);
        return;
      }
      if (rc != 0) {
        conn_abort(c);
        return;
      }
      c->out_off = 0;
    }
    size_t len = sl_buf_len(c->out);
    ssize_t n = send(c->fd, sl_buf_data(c->out) + c->out_off, len - c->out_off,
                     MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c->out_blocked = true; /* conn_update turns the reader off */
        c->srv->send_blocked++;
        break;
      }
      conn_abort(c); /* EPIPE, ECONNRESET: the client has gone */
      return;
    }
    conn_touch(c);
    c->out_off += (size_t)n;
    if (c->out_off == len) {
      sl_buf_unref(c->out);
      c->out = NULL;
    }
  }
  conn_update(c);
}

/* ------------------------------------------------------------------------
 * --inline: deflate on the loop's thread
 * ---------------------------------------------------------------------- */

static void inline_work(struct conn *c) {
  int reads = IO_BUDGET;
  for (;;) {
    if (c->zout_off < c->zout_len) { /* send what deflate made */
      ssize_t n = send(c->fd, c->zout + c->zout_off, c->zout_len - c->zout_off,
                       MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c->out_blocked = true; /* and read nothing meanwhile */
        c->in_paused = true;
        break;
      }
      if (n < 0) {
        conn_abort(c);
        return;
      }
      conn_touch(c);
      c->zout_off += (size_t)n;
      continue;
    }
    c->out_blocked = c->in_paused = false;
    if (c->z_end) { /* everything sent */
      shutdown(c->fd, SHUT_WR);
      conn_close_socket(c);
      return;
    }
    if (c->z.avail_in > 0 || c->in_done) { /* compress */
      c->z.next_out = c->zout;
      c->z.avail_out = INLINE_BUF;
      int rc = deflate(&c->z, c->in_done ? Z_FINISH : Z_NO_FLUSH);
      if (rc == Z_STREAM_END)
        c->z_end = true;
      else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        conn_abort(c);
        return;
      }
      c->zout_len = INLINE_BUF - c->z.avail_out;
      c->zout_off = 0;
      continue;
    }
    if (reads-- == 0)
      break; /* fairness: come back on the next event */
    ssize_t n = recv(c->fd, c->zin, INLINE_BUF, 0);
    if (n >= 0)
      conn_touch(c);
    if (n > 0) {
      c->z.next_in = c->zin;
      c->z.avail_in = (uInt)n;
    } else if (n == 0) {
      c->in_done = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      conn_abort(c);
      return;
    }
  }
  conn_update(c);
}

/* ------------------------------------------------------------------------
 * Accepting
 * ---------------------------------------------------------------------- */

static int conn_start_pipeline(struct conn *c) {
  struct server *s = c->srv;
  sl_stage *ws = NULL, *gz = NULL, *rs = NULL;
  sl_zlib_opts zo;
  sl_zlib_opts_init(&zo);
  zo.level = s->level;
  if (sl_pipeline_new(&c->p, &s->popts) != 0)
    return -1;
  s->pipes++; /* conn_free counts it out */
  if (sl_writer_new(&ws, &c->w, "request") != 0 || sl_gzip_new(&gz, &zo) != 0 ||
      sl_reader_new(&rs, &c->r, "response") != 0 ||
      sl_pipeline_chain(c->p, ws, gz, rs, NULL) != 0) {
    sl_stage_free(ws); /* no-ops for NULL or chained stages */
    sl_stage_free(gz);
    sl_stage_free(rs);
    sl_pipeline_free(c->p);
    s->pipes--;
    c->p = NULL;
    c->w = NULL;
    c->r = NULL;
    return -1;
  }
  if (s->pipes > s->peak_pipes) {
    s->peak_pipes = s->pipes;
    s->pipes_new_peak = true;
  }
  sl_pipeline_on_finished(c->p, on_finished, c);
  if (sl_pipeline_start(c->p) != 0)
    return -1; /* failed and finished: on_finished queued it */
  c->req_ring = sl_stage_output(ws);
  c->resp_ring = sl_stage_output(gz);
  if (watch_add(s, sl_writer_fd(c->w), &c->on_writer, EPOLLIN) != 0 ||
      watch_add(s, sl_reader_fd(c->r), &c->on_reader, EPOLLIN) != 0)
    return -1;
  c->reader_on = c->writer_on = true;
  return 0;
}

/* Accept what waits, within the slots. At max_conns, a connection that
 * waits is taken only if the oldest one whose client has sent nothing
 * can go to make room; else they wait in the backlog until a slot frees.
 * An accept with no descriptor left (EMFILE, ENFILE: the limit is lower
 * than max_conns assumed) makes room the same way, or stops accepting
 * until a connection closes: live clients never lose a descriptor to a
 * new one. */
static void on_accept(struct server *s) {
  for (;;) {
    bool full = s->held >= s->max_conns;
    if (full && !s->new_head) {
      accept_stop(s);
      break;
    }
    int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        s->emfile++;
        if (evict_one(s))
          continue;
        accept_stop(s); /* until a close */
      }
      break; /* EAGAIN, or an error on a connection that went */
    }
    if (full)
      evict_one(s); /* the oldest silent one gives this one its slot */
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->srv = s;
    c->fd = fd;
    c->on_sock = (struct watch){c, W_SOCKET};
    c->on_writer = (struct watch){c, W_WRITER};
    c->on_reader = (struct watch){c, W_READER};
    c->next = s->conns;
    if (s->conns)
      s->conns->prev = c;
    s->conns = c;
    s->live++;
    s->held++;
    c->counted = true;
    conn_list(c);
    c->sock_events = EPOLLIN;
    if (watch_add(s, fd, &c->on_sock, EPOLLIN) != 0) {
      close(fd);
      c->fd = -1;
      conn_free(c);
      continue;
    }
    int rc;
    if (s->inline_mode) {
      c->zin = malloc(INLINE_BUF);
      c->zout = malloc(INLINE_BUF);
      rc = c->zin && c->zout &&
                   deflateInit2(&c->z, s->level, Z_DEFLATED, 15 + 16, 8,
                                Z_DEFAULT_STRATEGY) == Z_OK
               ? 0
               : -1;
      c->z_ready = rc == 0;
    } else {
      rc = 0; /* the pipeline starts with the first bytes (dispatch) */
    }
    if (rc != 0) {
      conn_abort(c);
      continue;
    }
    if (s->held > s->peak_live)
      s->peak_live = s->held;
  }
}

/* ------------------------------------------------------------------------
 * The loop
 * ---------------------------------------------------------------------- */

/* Free the connections whose pipelines finished (queued by on_finished). */
static void on_done(struct server *s) {
  uint64_t n;
  if (read(s->donefd, &n, sizeof n) < 0) {
    /* nothing counted: the list says what there is */
  }
  pthread_mutex_lock(&s->done_mu);
  struct conn *list = s->done;
  s->done = NULL;
  pthread_mutex_unlock(&s->done_mu);
  while (list) {
    struct conn *c = list;
    list = c->done_next;
    c->finished = true;
    if (c->fd < 0)
      conn_release(c);
    /* else the socket still has the last chunks to send: pump_out frees
     * it at the reader's end of stream (or on a failure). */
  }
}

static void stop(struct server *s) {
  s->stopping = true;
  epoll_ctl(s->ep, EPOLL_CTL_DEL, s->lfd, NULL);
  close(s->lfd);
  s->lfd = -1;
  /* A connection whose socket is closed has sent its whole response (or
   * was cancelled already): its pipeline is ending on its own, and a
   * cancel now would only turn its success into SL_ECANCELED. */
  for (struct conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (c->fd >= 0)
      conn_abort(c);
  }
}

static void dispatch(struct server *s, struct watch *wt, uint32_t ev) {
  struct conn *c = wt->c;
  if (c->fd < 0)
    return; /* closed by an earlier event of this batch */
  if (wt->kind == W_WRITER) {
    on_drain(c);
    return;
  }
  if (wt->kind == W_READER) {
    pump_out(c);
    return;
  }
  if (!c->active) {
    /* The client's first bytes, its end or its reset: only now does it
     * get a pipeline, a gzip thread and zlib's state (a reset fails
     * that pipeline, as it would later); until then it held a socket
     * and nothing else, and could be closed to make room. */
    c->active = true;
    new_unlink(s, c);
    if (!s->inline_mode && conn_start_pipeline(c) != 0) {
      conn_abort(c);
      return;
    }
  }
  if ((ev & EPOLLERR) || ((ev & EPOLLHUP) && (c->in_paused || c->in_done))) {
    conn_abort(c); /* reset, or gone both ways: no one to answer */
    return;
  }
  if (s->inline_mode) {
    inline_work(c);
    return;
  }
  if (ev & EPOLLOUT) {
    c->out_blocked = false;
    pump_out(c);
  }
  if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLHUP)))
    pump_in(c);
}

/* How long the loop may sleep: until the least recent connection would
 * be idle too long, or the quiet period ends; -1: no limit. */
static int loop_timeout(struct server *s) {
  uint64_t deadline = UINT64_MAX, now;
  if (s->idle_timeout_ms && s->idle_head)
    deadline = s->idle_head->last_ms + s->idle_timeout_ms;
  if (s->trim_after_ms && !s->trimmed &&
      s->last_event_ms + s->trim_after_ms < deadline)
    deadline = s->last_event_ms + s->trim_after_ms;
  if (deadline == UINT64_MAX)
    return -1;
  now = mono_ms();
  return deadline <= now            ? 0
         : deadline - now > 1000000 ? 1000000
                                    : (int)(deadline - now);
}

/* Close every connection that has moved no byte for --idle-timeout. */
static void expire_idle(struct server *s) {
  while (s->idle_timeout_ms && s->idle_head &&
         s->idle_head->last_ms + s->idle_timeout_ms <= s->now_ms) {
    s->idle_closed++;
    conn_abort(s->idle_head); /* unlists it */
  }
}

/* After --trim-after without an event: give back what the shared pool
 * caches beyond one connection's worth, the waiting gzip threads (their
 * stacks), and what malloc holds free. */
static void maybe_trim(struct server *s) {
  size_t freed = 0;
  if (!s->trim_after_ms || s->trimmed ||
      s->now_ms - s->last_event_ms < s->trim_after_ms)
    return;
  s->trimmed = true;
  if (s->pool)
    sl_pool_trim(s->pool, s->pool_floor, &freed);
  if (s->threads)
    sl_threads_trim(s->threads, 0); /* their stacks; a new one is cheap */
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  s->trims++;
  if (s->stats && freed > 0) { /* tests/server.sh waits for this line */
    printf("trimmed: trim_connections=%zu trim_pool_freed_bytes=%zu "
           "pool_floor_bytes=%zu trim_start_rss_kib=%ld trim_rss_kib=%ld\n",
           s->live, freed, s->pool_floor, s->start_rss_kib, rss_kib());
    fflush(stdout);
  }
}

static int run(struct server *s) {
  struct epoll_event evs[64];
  s->now_ms = s->last_event_ms = mono_ms();
  while (!s->stopping || s->live > 0) {
    int n = epoll_wait(s->ep, evs, 64, loop_timeout(s));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      perror("gzip-server: epoll_wait");
      return 1;
    }
    s->now_ms = mono_ms();
    if (n > 0) {
      s->last_event_ms = s->now_ms;
      s->trimmed = false;
    }
    for (int i = 0; i < n; i++) {
      struct watch *wt = evs[i].data.ptr;
      if (wt == &listen_watch) {
        if (!s->stopping)
          on_accept(s);
      } else if (wt == &signal_watch) {
        struct signalfd_siginfo si;
        if (read(s->sigfd, &si, sizeof si) > 0 && !s->stopping)
          stop(s);
      } else if (wt == &done_watch) {
        on_done(s);
      } else {
        dispatch(s, wt, evs[i].events);
      }
    }
    expire_idle(s);
    if (n == 0)
      maybe_trim(s);
    while (s->reap) {
      struct conn *c = s->reap;
      s->reap = c->reap_next;
      conn_free(c);
    }
    /* The batch's new pipelines have started (and their threads carry
     * their names): count the threads once, at a new peak of them. */
    if (s->pipes_new_peak && s->stats) {
      s->pipes_new_peak = false;
      s->threads_at_peak = thread_count(&s->stage_threads_at_peak);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Setup
 * ---------------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr, "usage: gzip-server [--inline] [--stats] [--level N] "
                  "[--hwm BYTES] [--buf BYTES] [--idle-threads N]\n"
                  "                   [--max-connections N] "
                  "[--idle-timeout SECONDS] [--trim-after SECONDS] PORT\n");
  return 2;
}

int main(int argc, char **argv) {
  struct server s = {.level = 6,
                     .lfd = -1,
                     .idle_threads = 256,
                     .idle_timeout_ms = 60000,
                     .trim_after_ms = 5000};
  const char *port_arg = NULL;
  double secs;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--inline") == 0)
      s.inline_mode = true;
    else if (strcmp(argv[i], "--stats") == 0)
      s.stats = true;
    else if (strcmp(argv[i], "--level") == 0 && i + 1 < argc)
      s.level = atoi(argv[++i]);
    else if (strcmp(argv[i], "--hwm") == 0 && i + 1 < argc)
      s.popts.hwm = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--buf") == 0 && i + 1 < argc)
      s.popts.buf_size = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--idle-threads") == 0 && i + 1 < argc)
      s.idle_threads = strtoul(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--max-connections") == 0 && i + 1 < argc) {
      if ((s.max_conns = strtoul(argv[++i], NULL, 10)) == 0)
        return usage();
    } else if ((strcmp(argv[i], "--idle-timeout") == 0 ||
                strcmp(argv[i], "--trim-after") == 0) &&
               i + 1 < argc) {
      if ((secs = strtod(argv[i + 1], NULL)) < 0 || secs > 1e6)
        return usage();
      *(argv[i][2] == 'i' ? &s.idle_timeout_ms : &s.trim_after_ms) =
          (uint64_t)(secs * 1000 + 0.5);
      i++;
    } else if (argv[i][0] != '-' && !port_arg)
      port_arg = argv[i];
    else
      return usage();
  }
  if (!port_arg || s.level < 0 || s.level > 9)
    return usage();

  /* As many connections as the descriptor limit holds, each with its
   * socket and its two bridges' descriptors (one socket --inline), less a
   * reserve for the server's own (the listener, epoll, the signal and done
   * descriptors, /proc, stdio). */
  if (s.max_conns == 0) {
    struct rlimit rl;
    rlim_t per = s.inline_mode ? 1 : 3, fds = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      fds = rl.rlim_cur;
    s.max_conns = fds > 32 + per ? (size_t)((fds - 32) / per) : 1;
  }
  if (s.stats)
    sl_set_allocator(count_malloc, count_realloc, count_calloc, count_free);
#ifdef __GLIBC__
  /* One malloc arena. The server allocates per connection (zlib's state,
   * a pool buffer the first time), never per chunk, so the gzip threads
   * hardly contend for it; and what finished connections free stays in
   * the one heap that malloc_trim gives back, where an arena per thread
   * would keep a heap of its own each. */
  mallopt(M_ARENA_MAX, 1);
#endif

  /* One pool for every connection's pipeline: a new connection takes the
   * buffers finished ones gave back instead of fresh memory, which the
   * kernel would fault in and zero again (with many short connections a
   * tenth of the server's time went there). It keeps what it is given
   * back, so it settles at the most the connections held at once. */
  if (!s.inline_mode) {
    if (sl_pool_new(&s.pool, s.popts.buf_size ? s.popts.buf_size : 64 << 10,
                    0) != 0) {
      fprintf(stderr, "gzip-server: bad --buf or out of memory\n");
      return 1;
    }
    s.popts.pool = s.pool;
    /* A gzip stage needs little stack (zlib keeps its state on the heap).
     * And a connection's gzip thread, once its response is out, waits
     * for the next connection instead of ending: a thread's start and
     * end (clone, a stack mapped and guarded, its first pages faulted
     * in, the join) were a third of what a short connection cost. */
    s.popts.stack_size = 256 << 10;
    if (sl_threads_new(&s.threads, s.idle_threads, s.popts.stack_size) != 0) {
      fprintf(stderr, "gzip-server: out of memory\n");
      return 1;
    }
    s.popts.threads = s.threads;
    /* A trim keeps one connection's worth, 3R + 2C (see the top). */
    size_t buf = s.popts.buf_size ? s.popts.buf_size : 64 << 10;
    size_t hwm = s.popts.hwm ? s.popts.hwm : 256 << 10;
    size_t r = (hwm + buf - 1) / buf * buf;
    s.pool_floor = 3 * r + 2 * buf;
  }

  /* SIGINT and SIGTERM arrive through a descriptor the loop watches;
   * pipeline threads block every signal, so no thread takes them. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigprocmask(SIG_BLOCK, &sigs, NULL);

  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(port_arg)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof addr;
  int one = 1;
  s.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s.lfd < 0 ||
      setsockopt(s.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(s.lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(s.lfd, 1024) != 0 ||
      getsockname(s.lfd, (struct sockaddr *)&addr, &alen) != 0) {
    perror("gzip-server: listen");
    return 1;
  }
  s.ep = epoll_create1(EPOLL_CLOEXEC);
  s.sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  s.donefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  pthread_mutex_init(&s.done_mu, NULL);
  if (s.ep < 0 || s.sigfd < 0 || s.donefd < 0 ||
      watch_add(&s, s.lfd, &listen_watch, EPOLLIN) != 0 ||
      watch_add(&s, s.sigfd, &signal_watch, EPOLLIN) != 0 ||
      watch_add(&s, s.donefd, &done_watch, EPOLLIN) != 0) {
    perror("gzip-server: setup");
    return 1;
  }
  s.start_rss_kib = rss_kib();
  printf("%u\n", (unsigned)ntohs(addr.sin_port));
  fflush(stdout);

  int rc = run(&s);
  sl_threads_stats ts = {0};
  sl_threads_stats_get(s.threads, &ts);
  sl_threads_free(s.threads); /* every pipeline is freed: the threads end */
  sl_pool_free(s.pool);

  close(s.donefd);
  close(s.sigfd);
  close(s.ep);
  pthread_mutex_destroy(&s.done_mu);
  if (s.stats) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("served=%llu failed=%llu\n", s.served, s.failed);
    printf("peak_connections=%zu threads_at_peak=%ld "
           "stage_threads_at_peak=%ld\n",
           s.peak_live, s.threads_at_peak, s.stage_threads_at_peak);
    printf("peak_pool_bytes=%zu conn_bound_bytes=%zu\n", s.peak_pool_bytes,
           s.conn_bound);
    printf("request_ring_peak=%zu response_ring_peak=%zu\n", s.req_peak,
           s.resp_peak);
    printf("request_pauses=%llu response_pauses=%llu\n", s.req_pauses,
           s.resp_pauses);
    printf("recv_paused=%llu send_blocked=%llu\n", s.recv_paused,
           s.send_blocked);
    printf("threads_created=%llu threads_reused=%llu\n",
           (unsigned long long)ts.created, (unsigned long long)ts.reused);
    printf("peak_rss_kib=%ld start_rss_kib=%ld\n", ru.ru_maxrss,
           s.start_rss_kib);
    printf("max_connections=%zu idle_closed=%llu evicted=%llu "
           "accept_stops=%llu emfile=%llu trims=%llu\n",
           s.max_conns, s.idle_closed, s.evicted, s.accept_stops, s.emfile,
           s.trims);
    printf("live_allocations=%ld\n", atomic_load(&live_blocks));
  }
  return rc;
}
