/* SPDX-License-Identifier: MIT */
/*
 * http-server — the seeds' three HTTP examples on libmicrohttpd, each
 * response body a sluice pipeline:
 *
 *   GET /files/NAME   fs.createReadStream(NAME).pipe(res): the file ->
 *                     (gzip, when Accept-Encoding allows it) -> response
 *   POST /echo        req.pipe(res): the body -> response
 *   POST /gzip        req.pipe(zlib.createGzip()).pipe(res)
 *   GET /stats        the server's counters, one "key=value" a line
 *
 * libmicrohttpd (MHD) runs one polling thread (or --threads of them) that
 * does all the socket work; it never compresses and never reads a file.
 * The pipelines' stages do, each on a thread of its own, and a large file
 * is compressed by pgzip on every core, so one big response is not held
 * to one core as an event-loop server's gzip is. The bridges are the
 * polling thread's side of each pipeline: sl_writer takes the request
 * body, sl_reader hands out the response.
 *
 *   file:  file source -> [gzip | pgzip] -> sl_reader -> MHD's callback
 *   body:  MHD's upload -> sl_writer -> [gzip] -> sl_reader -> callback
 *
 * Backpressure, both ways. The response is produced by a content-reader
 * callback that MHD calls when the socket can take more: it copies what
 * the reader has. A client that reads slowly is not called back, the
 * reader's ring fills to its high mark, and every stage before it stops
 * at its own: the file is read no faster than the client takes it. When
 * the reader has nothing yet (SL_AGAIN) the callback suspends the
 * connection (MHD_suspend_connection) and returns 0; the reader's ready
 * callback, on the stage thread that pushed, resumes it. A request body
 * goes into sl_writer_write; when that says stop (0, the high mark) the
 * next piece of the body waits, the connection suspended, until the
 * writer's drain callback resumes it, so the client's sends block in
 * TCP. MHD allows resuming from any thread with MHD_USE_ITC (implied by
 * MHD_ALLOW_SUSPEND_RESUME): the resume only flags the connection and
 * wakes the polling thread, which resumes it.
 *
 * Suspending and resuming race: the ready or drain callback may fire
 * between the SL_AGAIN and the suspend. So each request has a mutex, a
 * "suspended" flag and a "wake" flag: a callback resumes the connection
 * if it is suspended, else leaves a wake; the polling thread suspends
 * only when no wake is waiting, else consumes it and looks again. The
 * resume is called under the request's mutex, and only for a connection
 * that is suspended, which MHD never closes, so it never names a
 * connection MHD has freed. Lock order: the server's mutex, then a
 * request's, then MHD's own.
 *
 * What MHD cannot do. MHD answers a request once its body has been read
 * (a response queued before the body makes it refuse the body), so
 * POST /echo is half duplex here: the body streams through the pipeline
 * as it arrives, but the response starts after its end, where Node's
 * req.pipe(res) sends while it receives. Holding the output meanwhile
 * would make memory grow with the body; instead, while the writer says
 * stop, the polling thread moves what the reader has into a temporary
 * file (unlinked at once), so that the pipeline keeps flowing and memory
 * stays within the marks; the response then sends that file, then what
 * the reader gives. A body that fits in the rings never touches it.
 * Request bodies are bounded by --max-body (413 when Content-Length says
 * more; a chunked body that grows past it has its connection closed).
 *
 * The end of a request. MHD's completion callback (MHD_OPTION_NOTIFY_
 * COMPLETED) comes for every request, sent in full or not: the client
 * went away, timed out (--timeout) or the server stops. It detaches the
 * request from its connection, cancels the pipeline unless the reader
 * gave its end of stream, and drops the request's reference; the response
 * holds another, dropped when MHD frees it. The last reference queues
 * the request for a reaper thread, which frees the pipeline (joining its
 * threads, which the polling thread never waits for) and the request.
 * live_pipelines counts pipelines started and not yet freed: back to 0,
 * nothing is left.
 *
 * Paths. NAME is resolved below the root with openat2(RESOLVE_BENEATH):
 * "..", an absolute path or a symbolic link that leads out of the root
 * is refused (403), as the kernel checks each step; a name that is not
 * there, or not a regular file, is 404. Where openat2 does not exist the
 * name is checked with realpath against the root's real path instead.
 *
 * Memory per response is bounded by the marks, as in gzip-server.c: with
 * R the high mark rounded up to the buffer size C, a file sent plain
 * holds at most R + 2C of the shared pool (the ring, the chunk the
 * source fills, the chunk the callback copies from), one gzipped by the
 * gzip stage 3R + 3C (two rings, gzip's batch from its input ring, its
 * output buffer). --stats and /stats report the pool's bytes now and at
 * their peak.
 *
 * Usage: http-server [--stats] [--port N] [--level N] [--hwm BYTES]
 *                    [--buf BYTES] [--pgzip-min BYTES] [--workers N]
 *                    [--max-connections N] [--max-body BYTES]
 *                    [--timeout SECONDS] [--threads N] [--spool DIR] ROOT
 * Listens on 127.0.0.1 (--port 0, the default, picks a free port), prints
 * the port on the first line of standard output, serves until SIGINT or
 * SIGTERM, and with --stats prints its counters on exit.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_TMPFILE, syscall */
#endif

#include <sluice.h>
#include <sluice/bridge.h>

#include <microhttpd.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/openat2.h>
#endif

enum req_kind { R_FILE, R_ECHO, R_GZIP };

struct server {
  struct MHD_Daemon *d;
  int root_fd;
  char root_real[PATH_MAX];
  const char *spool_dir;
  int level;
  unsigned workers;
  uint64_t pgzip_min, max_body;
  sl_pipeline_opts popts;
  sl_pool *pool;
  sl_threads *threads;
  atomic_bool stopping;

  pthread_mutex_t mu; /* the live list, the reap list */
  pthread_cond_t reap_cv;
  struct req *live, *reap;
  bool reaper_exit;
  pthread_t reaper;

  /* Counters. */
  atomic_ullong requests, served, failed, refused;
  atomic_ullong req_suspends, resp_suspends, spooled;
  atomic_ullong gzip_files, pgzip_files; /* files sent gzipped, by which */
  size_t live_pipelines, peak_pipelines; /* under mu */
  atomic_long conns, peak_conns;         /* connections open */
};

struct req {
  struct server *srv;
  enum req_kind kind;
  atomic_int refs;

  pthread_mutex_t mu;          /* guards conn, suspended, wake */
  struct MHD_Connection *conn; /* NULL once MHD completed the request */
  bool suspended, wake;

  sl_pipeline *p;
  sl_writer *w; /* a body's */
  sl_reader *r;
  sl_stage *src;       /* a file's source */
  atomic_bool started; /* sl_pipeline_start returned: /stats may look */
  bool queued;         /* the response is queued */
  bool in_paused;      /* the writer said stop: wait for the drain */
  bool eof;            /* the reader said SL_EOF */
  bool complete;       /* the whole response was handed to MHD */
  bool ok;             /* completed by MHD, complete: the client has it */
  atomic_ullong body;  /* body bytes taken */
  uint64_t size;       /* the response's length, or MHD_SIZE_UNKNOWN */
  uint64_t sent;       /* response bytes handed to MHD */

  int spool_fd; /* -1 until needed */
  uint64_t spool_len, spool_off;

  struct req *prev, *next; /* live */
  struct req *reap_next;
};

/* An error response already queued: later calls of the request have
 * nothing to do. */
static char refused_tag;

/* ------------------------------------------------------------------------
 * --stats: a counting allocator for the library, the process's threads
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

static long thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  long n = 0;
  if (!d)
    return -1;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static long rss_kib(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = -1;
  fclose(f);
  return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ------------------------------------------------------------------------
 * Suspending and resuming (see the top)
 * ---------------------------------------------------------------------- */

/* A pipeline thread: the reader has something, or the writer drained. */
static void req_wake(struct req *q) {
  pthread_mutex_lock(&q->mu);
  if (q->suspended && q->conn) {
    q->suspended = false;
    MHD_resume_connection(q->conn);
  } else {
    q->wake = true;
  }
  pthread_mutex_unlock(&q->mu);
}

/* The polling thread, in a callback: suspend the connection unless a wake
 * came since the last look. Returns true when suspended (return and wait
 * for the resume), false when the caller should look again now. */
static bool req_sleep(struct req *q) {
  bool slept = false;
  pthread_mutex_lock(&q->mu);
  if (q->wake) {
    q->wake = false;
  } else if (q->conn && !atomic_load(&q->srv->stopping)) {
    q->suspended = true;
    MHD_suspend_connection(q->conn);
    slept = true;
  }
  pthread_mutex_unlock(&q->mu);
  if (!slept && atomic_load(&q->srv->stopping))
    sl_pipeline_cancel(q->p); /* the next look fails: no busy loop */
  return slept;
}

static void on_ready(sl_reader *r, void *arg) {
  (void)r;
  req_wake(arg);
}

static void on_drain(sl_writer *w, void *arg) {
  (void)w;
  req_wake(arg);
}

/* ------------------------------------------------------------------------
 * A request's life
 * ---------------------------------------------------------------------- */

static struct req *req_new(struct server *s, struct MHD_Connection *conn,
                           enum req_kind kind) {
  struct req *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->srv = s;
  q->kind = kind;
  q->conn = conn;
  q->spool_fd = -1;
  atomic_init(&q->refs, 1);
  pthread_mutex_init(&q->mu, NULL);
  if (sl_pipeline_new(&q->p, &s->popts) != 0) {
    pthread_mutex_destroy(&q->mu);
    free(q);
    return NULL;
  }
  pthread_mutex_lock(&s->mu);
  q->next = s->live;
  if (s->live)
    s->live->prev = q;
  s->live = q;
  if (++s->live_pipelines > s->peak_pipelines)
    s->peak_pipelines = s->live_pipelines;
  pthread_mutex_unlock(&s->mu);
  return q;
}

/* Drop a reference: the request's (at completion) or the response's
 * (MHD freeing it). The last queues the request for the reaper. */
static void req_unref(void *arg) {
  struct req *q = arg;
  struct server *s = q->srv;
  if (atomic_fetch_sub(&q->refs, 1) != 1)
    return;
  pthread_mutex_lock(&s->mu);
  if (q->prev)
    q->prev->next = q->next;
  else
    s->live = q->next;
  if (q->next)
    q->next->prev = q->prev;
  q->reap_next = s->reap;
  s->reap = q;
  pthread_cond_signal(&s->reap_cv);
  pthread_mutex_unlock(&s->mu);
}

/* The reaper thread: free pipelines (joining their threads) and requests,
 * off the polling thread. */
static void *reaper_main(void *arg) {
  struct server *s = arg;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->reap && !s->reaper_exit)
      pthread_cond_wait(&s->reap_cv, &s->mu);
    struct req *list = s->reap;
    s->reap = NULL;
    if (!list && s->reaper_exit)
      break;
    pthread_mutex_unlock(&s->mu);
    while (list) {
      struct req *q = list;
      list = q->reap_next;
      sl_pipeline_wait(q->p);
      atomic_fetch_add(q->ok ? &s->served : &s->failed, 1);
      sl_pipeline_free(q->p);
      if (q->spool_fd >= 0)
        close(q->spool_fd);
      pthread_mutex_destroy(&q->mu);
      free(q);
      pthread_mutex_lock(&s->mu);
      s->live_pipelines--;
      pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* MHD: the request is over, complete or not. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct req *q = *req_cls;
  (void)cls;
  (void)conn;
  *req_cls = NULL;
  if (!q || q == (void *)&refused_tag)
    return;
  pthread_mutex_lock(&q->mu);
  q->conn = NULL;
  q->suspended = false;
  pthread_mutex_unlock(&q->mu);
  q->ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && q->complete;
  /* Unless the reader had the end of the stream, the stages may still be
   * at work (the client went away, or a response of known length ended
   * before the source saw its end of file): stop them. */
  if (!q->eof)
    sl_pipeline_cancel(q->p);
  req_unref(q);
}

/* MHD: a connection opened or closed (--max-connections bounds them). */
static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  struct server *s = cls;
  (void)conn;
  (void)socket_context;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    long n = atomic_fetch_add(&s->conns, 1) + 1;
    long peak = atomic_load(&s->peak_conns);
    while (n > peak &&
           !atomic_compare_exchange_weak(&s->peak_conns, &peak, n)) {
    }
  } else {
    atomic_fetch_sub(&s->conns, 1);
  }
}

/* ------------------------------------------------------------------------
 * Responses
 * ---------------------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status,
                                 const char *text) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
  if (!resp)
    return MHD_NO;
  MHD_add_response_header(resp, "Content-Type", "text/plain");
  enum MHD_Result rc = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return rc;
}

/* An error answered at once; the request needs nothing more. */
static enum MHD_Result refuse(struct server *s, struct MHD_Connection *conn,
                              void **req_cls, unsigned status,
                              const char *text) {
  atomic_fetch_add(&s->refused, 1);
  *req_cls = &refused_tag;
  return send_text(conn, status, text);
}

/* The response body: first what was spooled while the body came in, then
 * what the reader gives. On the polling thread, the response's mutex
 * held. */
static ssize_t body_read(void *cls, uint64_t pos, char *buf, size_t max) {
  struct req *q = cls;
  (void)pos;
  if (q->spool_off < q->spool_len) {
    size_t want = q->spool_len - q->spool_off < max
                      ? (size_t)(q->spool_len - q->spool_off)
                      : max;
    ssize_t n = pread(q->spool_fd, buf, want, (off_t)q->spool_off);
    if (n <= 0)
      return MHD_CONTENT_READER_END_WITH_ERROR;
    q->spool_off += (uint64_t)n;
    return n;
  }
  for (;;) {
    size_t n = 0;
    int rc = sl_reader_read_bytes(q->r, buf, max, &n);
    if (rc == 0) {
      /* A response of known length is complete at its last byte: MHD
       * asks no further, so the reader's SL_EOF is never seen. */
      q->sent += n;
      q->complete = q->sent == q->size;
      return (ssize_t)n;
    }
    if (rc == SL_EOF) {
      q->eof = q->complete = true;
      return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (rc != SL_AGAIN)
      return MHD_CONTENT_READER_END_WITH_ERROR;
    if (req_sleep(q)) {
      atomic_fetch_add(&q->srv->resp_suspends, 1);
      return 0; /* MHD calls again once the ready callback resumes */
    }
  }
}

/* Queue the streamed response of q: size bytes, or MHD_SIZE_UNKNOWN
 * (chunked). The response holds a reference to q. */
static enum MHD_Result queue_stream(struct req *q, uint64_t size, bool gz) {
  struct MHD_Response *resp = MHD_create_response_from_callback(
      size, 256 << 10, body_read, q, req_unref);
  if (!resp)
    return MHD_NO;
  q->size = size;
  q->complete = size == 0; /* nothing to send: complete as it is */
  atomic_fetch_add(&q->refs, 1);
  MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
  if (gz)
    MHD_add_response_header(resp, "Content-Encoding", "gzip");
  if (q->kind == R_FILE)
    MHD_add_response_header(resp, "Vary", "Accept-Encoding");
  enum MHD_Result rc = MHD_queue_response(q->conn, MHD_HTTP_OK, resp);
  MHD_destroy_response(resp); /* MHD keeps it while it sends */
  return rc;
}

/* Does Accept-Encoding allow gzip? "gzip" or "x-gzip" with a q above 0,
 * or else "*" with a q above 0. */
static bool accepts_gzip(const char *h) {
  int gzip = -1, star = -1;
  while (h && *h) {
    while (*h == ' ' || *h == '\t' || *h == ',')
      h++;
    const char *name = h;
    while (*h && *h != ',' && *h != ';' && *h != ' ' && *h != '\t')
      h++;
    size_t len = (size_t)(h - name);
    double qv = 1;
    const char *end = strchr(h, ',');
    if (!end)
      end = h + strlen(h);
    for (const char *p = h; p < end; p++) {
      if (*p == ';') {
        const char *v = p + 1;
        while (*v == ' ')
          v++;
        if ((v[0] == 'q' || v[0] == 'Q') && v[1] == '=')
          qv = strtod(v + 2, NULL);
      }
    }
    int ok = qv > 0;
    if ((len == 4 && strncasecmp(name, "gzip", 4) == 0) ||
        (len == 6 && strncasecmp(name, "x-gzip", 6) == 0))
      gzip = ok;
    else if (len == 1 && *name == '*')
      star = ok;
    h = end;
  }
  return gzip >= 0 ? gzip == 1 : star == 1;
}

/* Open NAME below the root, read-only. Returns the descriptor, or -403 or
 * -404. */
static int open_below(struct server *s, const char *name) {
  if (*name == '/')
    return -403;                    /* an absolute path */
  for (const char *p = name; *p;) { /* a ".." component */
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.')
      return -403;
    p += len + (e != NULL);
  }
  if (*name == '\0')
    return -404;
  int fd = -1;
#if defined(__linux__) && defined(SYS_openat2)
  struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                         .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
  fd = (int)syscall(SYS_openat2, s->root_fd, name, &how, sizeof how);
  if (fd < 0 && errno != ENOSYS)
    return errno == EXDEV || errno == EACCES || errno == EPERM ? -403 : -404;
#endif
  if (fd < 0) { /* no openat2: resolve, then compare with the root */
    char path[PATH_MAX], real[PATH_MAX];
    size_t rl = strlen(s->root_real);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", s->root_real, name) >=
        sizeof path)
      return -404;
    if (!realpath(path, real))
      return -404;
    if (strncmp(real, s->root_real, rl) != 0 ||
        (real[rl] != '/' && !(rl == 1 && s->root_real[0] == '/')))
      return -403;
    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
      return errno == EACCES ? -403 : -404;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return -404;
  }
  return fd;
}

/* GET /files/NAME. */
static enum MHD_Result start_file(struct server *s, struct MHD_Connection *conn,
                                  const char *name, void **req_cls) {
  int fd = open_below(s, name);
  if (fd == -403)
    return refuse(s, conn, req_cls, MHD_HTTP_FORBIDDEN, "forbidden\n");
  if (fd < 0)
    return refuse(s, conn, req_cls, MHD_HTTP_NOT_FOUND, "not found\n");
  struct stat st;
  fstat(fd, &st);
  bool gz = accepts_gzip(
      MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept-Encoding"));

  struct req *q = req_new(s, conn, R_FILE);
  sl_stage *src = NULL, *zip = NULL, *rs = NULL;
  sl_fd_opts fo = {.name = "file", .flags = SL_FD_CLOSE};
  int rc = q ? 0 : SL_ENOMEM;
  if (rc == 0 && (rc = sl_fd_source_new(&src, fd, &fo)) == 0)
    fd = -1; /* the stage's */
  if (rc == 0 && gz && (uint64_t)st.st_size >= s->pgzip_min) {
    sl_pgzip_opts po;
    sl_pgzip_opts_init(&po);
    po.level = s->level;
    po.workers = s->workers;
    /* One gzip member: an HTTP client may read only the first member of
     * a gzip body (curl's decoder does), so not the block format. */
    po.format = SL_PGZIP_FORMAT_PIGZ;
    po.block_size = sl_pool_buf_size(s->pool) < SL_PGZIP_BLOCK_MIN
                        ? SL_PGZIP_BLOCK_MIN
                        : sl_pool_buf_size(s->pool);
    rc = sl_pgzip_new(&zip, &po);
    atomic_fetch_add(&s->pgzip_files, rc == 0);
  } else if (rc == 0 && gz) {
    sl_zlib_opts zo;
    sl_zlib_opts_init(&zo);
    zo.level = s->level;
    rc = sl_gzip_new(&zip, &zo);
    atomic_fetch_add(&s->gzip_files, rc == 0);
  }
  if (rc == 0)
    rc = sl_reader_new(&rs, &q->r, "response");
  if (rc == 0)
    rc = zip ? sl_pipeline_chain(q->p, src, zip, rs, NULL)
             : sl_pipeline_chain(q->p, src, rs, NULL);
  if (rc != 0) {
    if (fd >= 0)
      close(fd);
    sl_stage_free(src); /* no-ops for NULL or chained stages */
    sl_stage_free(zip);
    sl_stage_free(rs);
    if (q)
      req_unref(q);
    return refuse(s, conn, req_cls, MHD_HTTP_INTERNAL_SERVER_ERROR,
                  "out of memory\n");
  }
  q->src = src;
  *req_cls = q;
  sl_reader_on_ready(q->r, on_ready, q);
  if (sl_pipeline_start(q->p) != 0)
    return MHD_NO; /* failed: completion cleans up */
  atomic_store(&q->started, true);
  return queue_stream(q, gz ? MHD_SIZE_UNKNOWN : (uint64_t)st.st_size, gz);
}

/* POST /echo, /gzip: the first call, headers only. */
static enum MHD_Result start_body(struct server *s, struct MHD_Connection *conn,
                                  enum req_kind kind, void **req_cls) {
  const char *cl =
      MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
  if (cl && strtoull(cl, NULL, 10) > s->max_body)
    return refuse(s, conn, req_cls, MHD_HTTP_CONTENT_TOO_LARGE,
                  "request body too large\n");
  struct req *q = req_new(s, conn, kind);
  sl_stage *ws = NULL, *zip = NULL, *rs = NULL;
  int rc = q ? sl_writer_new(&ws, &q->w, "request") : SL_ENOMEM;
  if (rc == 0 && kind == R_GZIP) {
    sl_zlib_opts zo;
    sl_zlib_opts_init(&zo);
    zo.level = s->level;
    rc = sl_gzip_new(&zip, &zo);
  }
  if (rc == 0)
    rc = sl_reader_new(&rs, &q->r, "response");
  if (rc == 0)
    rc = zip ? sl_pipeline_chain(q->p, ws, zip, rs, NULL)
             : sl_pipeline_chain(q->p, ws, rs, NULL);
  if (rc != 0) {
    sl_stage_free(ws);
    sl_stage_free(zip);
    sl_stage_free(rs);
    if (q)
      req_unref(q);
    return refuse(s, conn, req_cls, MHD_HTTP_INTERNAL_SERVER_ERROR,
                  "out of memory\n");
  }
  *req_cls = q;
  sl_reader_on_ready(q->r, on_ready, q);
  sl_writer_on_drain(q->w, on_drain, q);
  if (sl_pipeline_start(q->p) != 0)
    return MHD_NO;
  atomic_store(&q->started, true);
  return MHD_YES;
}

/* While the writer says stop: move what the reader has into the spool
 * file, so that the pipeline keeps flowing (see "What MHD cannot do").
 * Returns 0, or -1 on a failure (the pipeline's, or the file's). */
static int spool_out(struct req *q) {
  for (;;) {
    sl_buf *b;
    int rc = sl_reader_read(q->r, &b);
    if (rc == SL_AGAIN || rc == SL_EOF)
      return 0;
    if (rc != 0)
      return -1;
    if (q->spool_fd < 0) {
      const char *dir = q->srv->spool_dir;
      q->spool_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (q->spool_fd < 0) { /* no O_TMPFILE there: a named one, unlinked */
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/http-spool.XXXXXX", dir);
        q->spool_fd = mkostemp(path, O_CLOEXEC);
        if (q->spool_fd >= 0)
          unlink(path);
      }
    }
    const unsigned char *d = sl_buf_data(b);
    size_t len = sl_buf_len(b), off = 0;
    while (q->spool_fd >= 0 && off < len) {
      ssize_t n =
          pwrite(q->spool_fd, d + off, len - off, (off_t)(q->spool_len + off));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      off += (size_t)n;
    }
    sl_buf_unref(b);
    if (off < len)
      return -1;
    q->spool_len += len;
    atomic_fetch_add(&q->srv->spooled, len);
  }
}

/* A piece of the body. */
static enum MHD_Result take_body(struct req *q, const char *data,
                                 size_t *size) {
  for (;;) {
    if (q->in_paused) {
      if (spool_out(q) != 0)
        return MHD_NO;
      int rc = sl_writer_ack(q->w);
      if (rc == SL_AGAIN) {
        if (req_sleep(q)) {
          atomic_fetch_add(&q->srv->req_suspends, 1);
          return MHD_YES; /* *size untouched: MHD calls again after */
        }
        continue;
      }
      if (rc != 0)
        return MHD_NO;
      q->in_paused = false;
    }
    if (atomic_load(&q->body) + *size > q->srv->max_body) {
      sl_pipeline_cancel(q->p); /* a chunked body past the limit */
      return MHD_NO;
    }
    int rc = sl_writer_write(q->w, data, *size);
    if (rc < 0)
      return MHD_NO;
    atomic_fetch_add(&q->body, *size);
    *size = 0;
    q->in_paused = rc == 0;
    return MHD_YES;
  }
}

static enum MHD_Result send_stats(struct server *s, struct MHD_Connection *conn,
                                  void **req_cls);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
  struct server *s = cls;
  struct req *q = *req_cls;
  (void)version;
  if (q == (void *)&refused_tag) {
    *upload_size = 0; /* the answer is out: drop the rest */
    return MHD_YES;
  }
  if (q) {
    if (*upload_size > 0)
      return take_body(q, upload, upload_size);
    /* The end of the body: end the writer, answer with the output. */
    if (q->queued)
      return MHD_YES;
    q->queued = true;
    if (sl_writer_end(q->w) != 0 || spool_out(q) != 0)
      return MHD_NO;
    return queue_stream(q, MHD_SIZE_UNKNOWN, q->kind == R_GZIP);
  }
  atomic_fetch_add(&s->requests, 1);
  if (atomic_load(&s->stopping))
    return refuse(s, conn, req_cls, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping\n");
  bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
  bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
  if (strncmp(url, "/files/", 7) == 0)
    return get ? start_file(s, conn, url + 7, req_cls)
               : refuse(s, conn, req_cls, MHD_HTTP_METHOD_NOT_ALLOWED,
                        "GET only\n");
  if (strcmp(url, "/stats") == 0)
    return send_stats(s, conn, req_cls);
  if (strcmp(url, "/echo") == 0 || strcmp(url, "/gzip") == 0)
    return post ? start_body(s, conn, url[1] == 'e' ? R_ECHO : R_GZIP, req_cls)
                : refuse(s, conn, req_cls, MHD_HTTP_METHOD_NOT_ALLOWED,
                         "POST only\n");
  return refuse(s, conn, req_cls, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* ------------------------------------------------------------------------
 * Counters: GET /stats while running, --stats at exit
 * ---------------------------------------------------------------------- */

static void stats_write(struct server *s, FILE *f) {
  sl_pool_stats ps = {0};
  sl_threads_stats ts = {0};
  struct rusage ru;
  unsigned long long pauses = 0, resp_pauses = 0, file_bytes = 0, body = 0;
  size_t live, peak, susp = 0;

  sl_pool_stats_get(s->pool, &ps);
  sl_threads_stats_get(s->threads, &ts);
  getrusage(RUSAGE_SELF, &ru);
  pthread_mutex_lock(&s->mu);
  live = s->live_pipelines;
  peak = s->peak_pipelines;
  for (struct req *q = s->live; q; q = q->next) {
    if (!atomic_load(&q->started))
      continue;
    /* Times a stage of a live pipeline found its output ring full; of
     * them, the ring into the reader: the client held the pipeline. */
    size_t n = sl_pipeline_stage_count(q->p);
    for (size_t i = 0; i + 1 < n; i++) {
      sl_ring_stats rs;
      sl_ring *ring = sl_stage_output(sl_pipeline_stage(q->p, i));
      if (ring && sl_ring_stats_get(ring, &rs) == 0) {
        pauses += rs.pauses;
        if (i + 2 == n)
          resp_pauses += rs.pauses;
      }
    }
    file_bytes += sl_fd_bytes(q->src);
    body += atomic_load(&q->body);
    pthread_mutex_lock(&q->mu);
    susp += q->suspended;
    pthread_mutex_unlock(&q->mu);
  }
  pthread_mutex_unlock(&s->mu);
  fprintf(f, "live_pipelines=%zu peak_pipelines=%zu suspended=%zu\n", live,
          peak, susp);
  fprintf(f, "connections=%ld peak_connections=%ld\n", atomic_load(&s->conns),
          atomic_load(&s->peak_conns));
  fprintf(f, "requests=%llu served=%llu failed=%llu refused=%llu\n",
          atomic_load(&s->requests), atomic_load(&s->served),
          atomic_load(&s->failed), atomic_load(&s->refused));
  fprintf(f, "request_suspends=%llu response_suspends=%llu spooled=%llu\n",
          atomic_load(&s->req_suspends), atomic_load(&s->resp_suspends),
          atomic_load(&s->spooled));
  fprintf(f,
          "live_ring_pauses=%llu live_response_pauses=%llu "
          "live_file_bytes=%llu live_body_bytes=%llu\n",
          pauses, resp_pauses, file_bytes, body);
  fprintf(f, "gzip_files=%llu pgzip_files=%llu\n", atomic_load(&s->gzip_files),
          atomic_load(&s->pgzip_files));
  fprintf(f, "pool_bytes=%zu peak_pool_bytes=%zu buf=%zu hwm=%zu\n",
          ps.bytes_outstanding, ps.peak_bytes, ps.buf_size,
          s->popts.hwm ? s->popts.hwm : (size_t)256 << 10);
  fprintf(f, "threads=%ld threads_created=%llu threads_reused=%llu\n",
          thread_count(), (unsigned long long)ts.created,
          (unsigned long long)ts.reused);
  fprintf(f, "rss_kib=%ld peak_rss_kib=%ld\n", rss_kib(), ru.ru_maxrss);
}

static enum MHD_Result send_stats(struct server *s, struct MHD_Connection *conn,
                                  void **req_cls) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f)
    return MHD_NO;
  stats_write(s, f);
  fclose(f);
  *req_cls = &refused_tag; /* nothing more to do for it */
  enum MHD_Result rc = send_text(conn, MHD_HTTP_OK, text);
  free(text);
  return rc;
}

/* ------------------------------------------------------------------------
 * Setup
 * ---------------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr,
          "usage: http-server [--stats] [--port N] [--level N] [--hwm BYTES]\n"
          "         [--buf BYTES] [--pgzip-min BYTES] [--workers N]\n"
          "         [--max-connections N] [--max-body BYTES]\n"
          "         [--timeout SECONDS] [--threads N] [--spool DIR] ROOT\n");
  return 2;
}

int main(int argc, char **argv) {
  struct server s = {.level = 6, .pgzip_min = 4 << 20, .max_body = 1ULL << 30};
  const char *root = NULL;
  unsigned port = 0, max_conns = 1024, timeout = 30, threads = 1;
  bool stats = false;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--stats") == 0) {
      stats = true;
      continue;
    }
    if (a[0] != '-') {
      if (root)
        return usage();
      root = a;
      continue;
    }
    if (!v)
      return usage();
    i++;
    if (strcmp(a, "--port") == 0)
      port = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--level") == 0)
      s.level = atoi(v);
    else if (strcmp(a, "--hwm") == 0)
      s.popts.hwm = strtoul(v, NULL, 10);
    else if (strcmp(a, "--buf") == 0)
      s.popts.buf_size = strtoul(v, NULL, 10);
    else if (strcmp(a, "--pgzip-min") == 0)
      s.pgzip_min = strtoull(v, NULL, 10);
    else if (strcmp(a, "--workers") == 0)
      s.workers = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--max-connections") == 0)
      max_conns = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--max-body") == 0)
      s.max_body = strtoull(v, NULL, 10);
    else if (strcmp(a, "--timeout") == 0)
      timeout = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--threads") == 0)
      threads = (unsigned)strtoul(v, NULL, 10);
    else if (strcmp(a, "--spool") == 0)
      s.spool_dir = v;
    else
      return usage();
  }
  if (!root || s.level < 0 || s.level > 9 || port > 65535 || threads == 0)
    return usage();
  if (!s.spool_dir)
    s.spool_dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  if (stats)
    sl_set_allocator(count_malloc, count_realloc, count_calloc, count_free);

  s.root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s.root_fd < 0 || !realpath(root, s.root_real)) {
    perror(root);
    return 1;
  }
  /* One pool and one set of stage threads for every request, as in
   * gzip-server.c: a new pipeline takes buffers and threads that finished
   * ones left. */
  if (sl_pool_new(&s.pool, s.popts.buf_size ? s.popts.buf_size : 64 << 10, 0) !=
          0 ||
      sl_threads_new(&s.threads, 256, 0) != 0) {
    fprintf(stderr, "http-server: bad --buf or out of memory\n");
    return 1;
  }
  s.popts.pool = s.pool;
  s.popts.threads = s.threads;
  pthread_mutex_init(&s.mu, NULL);
  pthread_cond_init(&s.reap_cv, NULL);

  /* SIGINT and SIGTERM are taken by sigwait below; every thread started
   * from here on (MHD's, the stages') inherits the mask. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (pthread_create(&s.reaper, NULL, reaper_main, &s) != 0) {
    fprintf(stderr, "http-server: cannot start a thread\n");
    return 1;
  }
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME;
#ifdef __linux__
  flags |= MHD_USE_EPOLL;
#endif
  struct MHD_OptionItem pool_opt[] = {
      {MHD_OPTION_THREAD_POOL_SIZE, threads, NULL}, {MHD_OPTION_END, 0, NULL}};
  s.d = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR, &addr,
      MHD_OPTION_CONNECTION_LIMIT, max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
      timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 << 10),
      MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, &s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, &s,
      MHD_OPTION_ARRAY, threads > 1 ? pool_opt : pool_opt + 1, MHD_OPTION_END);
  if (!s.d) {
    fprintf(stderr, "http-server: cannot listen on 127.0.0.1:%u\n", port);
    return 1;
  }
  const union MHD_DaemonInfo *di =
      MHD_get_daemon_info(s.d, MHD_DAEMON_INFO_BIND_PORT);
  printf("%u\n", di ? (unsigned)di->port : port);
  fflush(stdout);

  int sig;
  while (sigwait(&sigs, &sig) != 0) {
  }

  /* Stop: refuse new requests, cancel every pipeline and resume every
   * suspended connection (MHD must not be stopped with one suspended),
   * then stop MHD, which completes every request. */
  atomic_store(&s.stopping, true);
  pthread_mutex_lock(&s.mu);
  for (struct req *q = s.live; q; q = q->next) {
    sl_pipeline_cancel(q->p);
    pthread_mutex_lock(&q->mu);
    if (q->suspended && q->conn) {
      q->suspended = false;
      MHD_resume_connection(q->conn);
    }
    pthread_mutex_unlock(&q->mu);
  }
  pthread_mutex_unlock(&s.mu);
  MHD_stop_daemon(s.d);
  pthread_mutex_lock(&s.mu);
  s.reaper_exit = true;
  pthread_cond_signal(&s.reap_cv);
  pthread_mutex_unlock(&s.mu);
  pthread_join(s.reaper, NULL);

  if (stats) {
    stats_write(&s, stdout);
  }
  sl_threads_free(s.threads);
  sl_pool_free(s.pool);
  close(s.root_fd);
  pthread_cond_destroy(&s.reap_cv);
  pthread_mutex_destroy(&s.mu);
  if (stats)
    printf("live_allocations=%ld\n", atomic_load(&live_blocks));
  return 0;
}
