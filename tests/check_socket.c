/* SPDX-License-Identifier: MIT */
/*
 * Check suite for the socket stage (sl_socket_new in sluice/fd.h) and the
 * duplex rule of the pipeline's acyclicity check.
 *
 * Most tests build the server's pipeline, sock -> gzip -> sock, on one end
 * of a connected pair (loop index even: socketpair(AF_UNIX); odd: TCP on
 * 127.0.0.1) and play the client on the other end from a thread of their
 * own: it sends a body, shuts down its write side, and the test reads the
 * gzip back and inflates it with zlib. Covered: byte-exact round trips of
 * 0, 1 and a few MiB; the half-close (the server's write side ends, the
 * peer reads end of file, the read side keeps reading); a peer that resets
 * or goes away is an error, never a SIGPIPE (Check would report the
 * signal); cancel while the read side waits in recv and while the write
 * side waits for room; backpressure in each direction, asserted with the
 * rings' counters, never with time.
 *
 * Nothing sleeps to synchronise: the tests wait on rings
 * (sl__ring_wait_blocked, pu_ring_wait_paused), on the stage thread's
 * current system call (/proc/self/task/<tid>/syscall, when the kernel shows
 * it), on joins and on end of file.
 */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* MSG_NOSIGNAL */
#endif

#include "pipeutil.h"

#include <sluice/fd.h>
#include <sluice/zlib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

static int base_threads;

static void setup(void) {
  ck_assert_int_eq(test_alloc_install(), 0);
  base_threads = pu_thread_count();
  ck_assert_int_gt(base_threads, 0);
}

static void teardown(void) {
  ck_assert_int_eq(pu_threads_left(base_threads), 0);
  ck_assert_int_eq(test_alloc_live(), 0);
  ck_assert_int_eq(test_alloc_uninstall(), 0);
}

/* ------------------------------------------------------------------------
 * Connected pairs
 * ---------------------------------------------------------------------- */

enum { PAIR_UNIX = 0, PAIR_TCP = 1 };

/* fds[0] for the server's stage, fds[1] for the client; blocking, both.
 * sndbuf > 0 makes the kernel's buffers small (both ends, both ways), so
 * that backpressure reaches the rings after little data. 0 or -1. */
static int make_pair(int kind, int fds[2], int bufsize) {
  if (kind == PAIR_UNIX) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
      return -1;
    for (int i = 0; bufsize > 0 && i < 2; i++) {
      setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
      setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    }
    return 0;
  }
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0 || cfd < 0)
    goto fail;
  for (int i = 0; bufsize > 0 && i < 2; i++) {
    int fd = i ? cfd : lfd; /* the accepted socket inherits lfd's */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
  }
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) != 0 ||
      connect(cfd, (struct sockaddr *)&a, sizeof a) != 0)
    goto fail;
  fds[0] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fds[0] < 0)
    goto fail;
  fds[1] = cfd;
  close(lfd);
  return 0;
fail:
  if (lfd >= 0)
    close(lfd);
  if (cfd >= 0)
    close(cfd);
  return -1;
}

/* ------------------------------------------------------------------------
 * The client: a thread that sends, the test's thread that receives
 * ---------------------------------------------------------------------- */

typedef struct client {
  int fd;
  const unsigned char *data;
  size_t len;
  size_t sent;
  int err;      /* errno of a failed send or shutdown, else 0 */
  bool no_shut; /* keep the write side open after the body */
  pthread_t thread;
} client;

static void *client_send_main(void *arg) {
  client *c = arg;
  while (c->sent < c->len) {
    size_t n = c->len - c->sent;
    if (n > 100000)
      n = 100000;
    ssize_t k = send(c->fd, c->data + c->sent, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      c->err = k < 0 ? errno : EIO;
      return NULL;
    }
    c->sent += (size_t)k;
  }
  if (!c->no_shut && shutdown(c->fd, SHUT_WR) != 0)
    c->err = errno;
  return NULL;
}

static void client_start(client *c, int fd, const unsigned char *data,
                         size_t len) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->data = data;
  c->len = len;
  ck_assert_int_eq(pthread_create(&c->thread, NULL, client_send_main, c), 0);
}

static void client_join(client *c) {
  ck_assert_int_eq(pthread_join(c->thread, NULL), 0);
}

/* Receive until end of file into got; 0, or the errno of a failed recv. */
static int recv_all(int fd, pu_bytes *got) {
  unsigned char buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0)
      return 0;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    if (!pu_bytes_add(got, buf, (size_t)n))
      return ENOMEM;
  }
}

/* True when gz (one gzip member, nothing after it) inflates to want. */
static bool gunzips_to(const pu_bytes *gz, const unsigned char *want,
                       size_t wlen) {
  z_stream z = {0};
  unsigned char *out = malloc(wlen + 1);
  bool ok = false;

  if (out == NULL || inflateInit2(&z, 15 + 16) != Z_OK) {
    free(out);
    return false;
  }
  z.next_in = gz->p;
  z.avail_in = (uInt)gz->len;
  z.next_out = out;
  z.avail_out = (uInt)(wlen + 1);
  int rc = inflate(&z, Z_FINISH);
  ok = rc == Z_STREAM_END && z.avail_in == 0 && z.total_out == wlen &&
       (wlen == 0 || memcmp(out, want, wlen) == 0);
  inflateEnd(&z);
  free(out);
  return ok;
}

/* ------------------------------------------------------------------------
 * The server's pipeline: sock -> gzip -> sock
 * ---------------------------------------------------------------------- */

typedef struct server {
  sl_pipeline *p;
  sl_stage *sock, *gz;
} server;

static void server_make(server *s, int fd, const sl_pipeline_opts *po,
                        int level) {
  sl_zlib_opts zo;
  ck_assert_int_eq(sl_pipeline_new(&s->p, po), 0);
  ck_assert_int_eq(sl_socket_new(&s->sock, "sock", fd, NULL), 0);
  ck_assert_int_eq(sl_zlib_opts_init(&zo), 0);
  zo.level = level;
  ck_assert_int_eq(sl_gzip_new(&s->gz, &zo), 0);
  ck_assert_int_eq(sl_pipeline_chain(s->p, s->sock, s->gz, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(s->p, s->gz, s->sock), 0);
  ck_assert_int_eq(sl_pipeline_start(s->p), 0);
}

/* Incompressible bytes: what gzip passes through at about their size. */
static unsigned char *random_bytes(size_t len, uint64_t seed) {
  unsigned char *d = malloc(len ? len : 1);
  for (size_t i = 0; d != NULL && i < len; i += 8) {
    uint64_t x = test_rand(&seed);
    for (size_t k = 0; k < 8 && i + k < len; k++, x >>= 8)
      d[i + k] = (unsigned char)x;
  }
  return d;
}

/* ------------------------------------------------------------------------
 * Is a stage thread blocked in poll(2)? (as in check_fd)
 * ---------------------------------------------------------------------- */

/* ------------------------------------------------------------------------
 * Round trips
 * ---------------------------------------------------------------------- */

static const size_t trip_sizes[] = {0, 1, (size_t)3 << 20};

/* The client sends a body and shuts down its side; it reads the whole gzip
 * and then end of file (the server's half-close), and the gzip inflates to
 * the body, byte for byte. */
START_TEST(test_gzip_round_trip) {
  int kind = _i % 2, fds[2];
  size_t len = trip_sizes[_i / 2];
  unsigned char *data = pu_mixed_data(len, 7 + (uint64_t)_i);
  pu_bytes got = {0};
  server s;
  client c;
  uint64_t rx, tx;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(make_pair(kind, fds, 0), 0);
  server_make(&s, fds[0], NULL, SL_ZLIB_LEVEL_DEFAULT);
  client_start(&c, fds[1], data, len);
  ck_assert_int_eq(recv_all(fds[1], &got), 0); /* ends at the half-close */
  client_join(&c);
  ck_assert_int_eq(c.err, 0);
  ck_assert_int_eq(sl_pipeline_wait(s.p), 0);
  ck_assert(gunzips_to(&got, data, len));
  ck_assert_int_eq(sl_socket_bytes(s.sock, &rx, &tx), 0);
  ck_assert_uint_eq(rx, len);
  ck_assert_uint_eq(tx, got.len);
  sl_pipeline_free(s.p);
  close(fds[0]);
  close(fds[1]);
  pu_bytes_free(&got);
  free(data);
}
END_TEST

/* Half-close: the write side ends first (its input is a short memory
 * source) and shuts the socket down for writing; the client reads the
 * response and end of file, and only then sends its own body, which the
 * read side, still running, receives in full. */
START_TEST(test_half_close_read_side_goes_on) {
  int kind = _i, fds[2];
  const size_t rlen = 300000, qlen = 500000;
  unsigned char *resp = pu_mixed_data(rlen, 11), *req = pu_mixed_data(qlen, 12);
  static const size_t sizes[] = {4096, 65536, 1};
  pu_bytes got = {0};
  pu_src src;
  pu_sink sink;
  sl_pipeline *p;
  sl_stage *sock;
  client c;

  ck_assert_int_eq(make_pair(kind, fds, 0), 0);
  pu_src_init(&src, resp, rlen, sizes, 3);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_socket_new(&sock, NULL, fds[0], NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, pu_src_stage("src", &src), sock,
                                     pu_sink_stage("sink", &sink), NULL),
                   0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(recv_all(fds[1], &got), 0); /* the server's EOF */
  ck_assert(got.len == rlen && memcmp(got.p, resp, rlen) == 0);
  client_start(&c, fds[1], req, qlen); /* after the EOF */
  client_join(&c);
  ck_assert_int_eq(c.err, 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  ck_assert_uint_eq(sink.got.len, qlen);
  ck_assert(memcmp(sink.got.p, req, qlen) == 0);
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  pu_bytes_free(&got);
  close(fds[0]);
  close(fds[1]);
  free(resp);
  free(req);
}
END_TEST

/* The descriptor is the caller's unless SL_SOCKET_CLOSE: with it, the
 * stage closes it when the pipeline is freed (the client then reads end of
 * file on a pair whose write side was kept open). */
START_TEST(test_close_flag) {
  int fds[2];
  sl_socket_opts o = {.flags = SL_SOCKET_CLOSE | SL_SOCKET_NO_SHUTDOWN};
  server s;
  sl_zlib_opts zo;
  char b;

  ck_assert_int_eq(make_pair(PAIR_UNIX, fds, 0), 0);
  ck_assert_int_eq(sl_pipeline_new(&s.p, NULL), 0);
  ck_assert_int_eq(sl_socket_new(&s.sock, "sock", fds[0], &o), 0);
  ck_assert_int_eq(sl_zlib_opts_init(&zo), 0);
  ck_assert_int_eq(sl_gzip_new(&s.gz, &zo), 0);
  ck_assert_int_eq(sl_pipeline_chain(s.p, s.sock, s.gz, s.sock, NULL),
                   SL_EINVAL); /* a stage twice in one chain */
  ck_assert_int_eq(sl_pipeline_chain(s.p, s.sock, s.gz, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(s.p, s.gz, s.sock), 0);
  ck_assert_int_eq(sl_pipeline_start(s.p), 0);
  ck_assert_int_eq(shutdown(fds[1], SHUT_WR), 0);
  ck_assert_int_eq(sl_pipeline_wait(s.p), 0);
  /* No half-close was made: the gzip of nothing is there, then nothing
   * until the stage closes the descriptor. */
  struct pollfd pfd = {.fd = fds[1], .events = POLLIN};
  unsigned char gz[64];
  ck_assert_int_gt(recv(fds[1], gz, sizeof gz, MSG_DONTWAIT), 0);
  ck_assert_int_eq(recv(fds[1], &b, 1, MSG_DONTWAIT), -1);
  ck_assert_int_eq(errno, EAGAIN);
  sl_pipeline_free(s.p);
  ck_assert_int_eq(poll(&pfd, 1, -1), 1);
  ck_assert_int_eq(recv(fds[1], &b, 1, 0), 0); /* closed by the stage */
  ck_assert_int_eq(fcntl(fds[0], F_GETFD), -1);
  close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors: a peer that resets or goes away
 * ---------------------------------------------------------------------- */

/* The client sends part of a body, then resets the connection (TCP:
 * SO_LINGER 0; AF_UNIX: close with the response unread). The pipeline
 * fails with the socket's error, named; no SIGPIPE kills the process. */
START_TEST(test_peer_reset_is_an_error) {
  int kind = _i, fds[2];
  const size_t len = (size_t)256 << 10; /* less than the server buffers */
  unsigned char *data = random_bytes(len, 5);
  server s;
  client c;

  ck_assert_int_eq(make_pair(kind, fds, 0), 0);
  server_make(&s, fds[0], NULL, 1);
  c = (client){0};
  c.fd = fds[1];
  c.data = data;
  c.len = len;
  c.no_shut = true;
  client_send_main(&c); /* on this thread: the server reads as it goes */
  ck_assert_int_eq(c.err, 0);
  /* Wait until the response has started to come back, so the server's
   * write side is in play when the peer goes. */
  struct pollfd pfd = {.fd = fds[1], .events = POLLIN};
  ck_assert_int_eq(poll(&pfd, 1, -1), 1);
  if (kind == PAIR_TCP) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg),
                     0);
  }
  close(fds[1]);
  /* The read side sees a reset (or, AF_UNIX, end of file after which the
   * response cannot be sent); either way the stream cannot complete. */
  int rc = sl_pipeline_wait(s.p);
  ck_assert_int_lt(rc, 0);
  ck_assert_int_ne(rc, SL_ECANCELED);
  ck_assert_int_ne(sl_stage_status(s.sock), 0);
  const char *msg = sl_pipeline_error(s.p);
  ck_assert_ptr_nonnull(msg);
  ck_assert_msg(strncmp(msg, "sock: ", 6) == 0, "error: %s", msg);
  sl_pipeline_free(s.p);
  close(fds[0]);
  free(data);
}
END_TEST

/* Sending to a peer that has gone gives SL_EPIPE and no signal, on a
 * blocking descriptor too: the write side's input is a memory source, the
 * read side sees end of file. */
START_TEST(test_send_to_closed_peer_is_epipe) {
  int fds[2];
  const size_t len = (size_t)4 << 20;
  unsigned char *data = pu_mixed_data(len, 3);
  static const size_t sizes[] = {65536};
  pu_src src;
  pu_sink sink;
  sl_pipeline *p;
  sl_stage *sock;

  ck_assert_int_eq(make_pair(PAIR_UNIX, fds, 0), 0);
  ck_assert_int_eq(shutdown(fds[1], SHUT_RDWR), 0);
  close(fds[1]);
  pu_src_init(&src, data, len, sizes, 1);
  pu_sink_init(&sink);
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_socket_new(&sock, "sock", fds[0], NULL), 0);
  ck_assert_int_eq(sl_pipeline_chain(p, pu_src_stage("src", &src), sock,
                                     pu_sink_stage("sink", &sink), NULL),
                   0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), SL_EPIPE);
  ck_assert_int_eq(sl_stage_status(sock), SL_EPIPE);
  ck_assert_ptr_nonnull(strstr(sl_pipeline_error(p), "send fd"));
  sl_pipeline_free(p);
  pu_sink_fini(&sink);
  close(fds[0]);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancel
 * ---------------------------------------------------------------------- */

/* A client that sends nothing: once gzip waits on an empty ring and the
 * read side sits in poll, cancel; wait returns SL_ECANCELED (that it
 * returns within the test's timeout is the promptness). */
START_TEST(test_cancel_while_receiving) {
  int kind = _i, fds[2];
  server s;

  ck_assert_int_eq(make_pair(kind, fds, 0), 0);
  server_make(&s, fds[0], NULL, SL_ZLIB_LEVEL_DEFAULT);
  ck_assert_int_eq(sl__ring_wait_blocked(sl_stage_output(s.sock), SL__READER),
                   0);
  ck_assert_int_ge(pu_wait_in_poll("sl:sock/r"), 0);
  sl_pipeline_cancel(s.p);
  ck_assert_int_eq(sl_pipeline_wait(s.p), SL_ECANCELED);
  ck_assert_int_eq(sl_stage_status(s.sock), SL_ECANCELED);
  sl_pipeline_free(s.p);
  close(fds[0]);
  close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------------------
 * Backpressure, each direction
 * ---------------------------------------------------------------------- */

#define BP_HWM ((size_t)256 << 10)
#define BP_BUF ((size_t)64 << 10)

/* A client that sends a large incompressible body but does not read.
 * The response fills the kernel's buffers, the write side waits for room
 * (it takes nothing more from its ring), gzip pauses on its full output
 * ring, and the read side keeps receiving until its own output ring
 * reaches the mark, where it pauses too and stops receiving: the client's
 * sends then block. Every ring stays within hwm + one chunk. Then
 * (loop 0, 1) the client reads: everything arrives, byte-exact; or (loop
 * 2, 3) the test cancels, which wakes the write side in its wait for room.
 */
START_TEST(test_backpressure_both_ways) {
  int kind = _i % 2, fds[2];
  bool cancel = _i >= 2;
  const size_t len = (size_t)test_iterations("SL_TEST_SOCKET_MIB", 16) << 20;
  unsigned char *data = random_bytes(len, 9);
  sl_pipeline_opts po = {.buf_size = BP_BUF, .hwm = BP_HWM};
  pu_bytes got = {0};
  sl_ring_stats in_st, out_st;
  server s;
  client c;
  uint64_t rx, tx;

  ck_assert_ptr_nonnull(data);
  ck_assert_int_eq(make_pair(kind, fds, 32768), 0);
  server_make(&s, fds[0], &po, 1);
  client_start(&c, fds[1], data, len);
  sl_ring *in = sl_stage_output(s.sock), *out = sl_stage_output(s.gz);
  /* Write side stuck on the socket: gzip paused on the ring to it. */
  ck_assert_int_eq(pu_ring_wait_paused(out), 0);
  /* The read side drained the socket up to its own mark, then paused. */
  ck_assert_int_eq(pu_ring_wait_paused(in), 0);
  ck_assert_int_eq(sl_ring_stats_get(in, &in_st), 0);
  ck_assert_int_eq(sl_ring_stats_get(out, &out_st), 0);
  ck_assert_uint_ge(in_st.pauses, 1);
  ck_assert_uint_ge(in_st.peak_level, BP_HWM);
  ck_assert_uint_le(in_st.peak_level, BP_HWM + BP_BUF);
  ck_assert_uint_ge(out_st.pauses, 1);
  ck_assert_uint_ge(out_st.peak_level, BP_HWM);
  ck_assert_uint_le(out_st.peak_level, BP_HWM + BP_BUF);
  /* The client is held back: far from all of the body was taken. */
  ck_assert_int_eq(sl_socket_bytes(s.sock, &rx, &tx), 0);
  ck_assert_uint_lt(rx, len / 2);
  ck_assert_uint_lt(tx, len / 2);
  if (cancel) {
    /* Waiting for room, when the kernel shows it. */
    ck_assert_int_ge(pu_wait_in_poll("sl:sock/w"), 0);
    sl_pipeline_cancel(s.p);
    ck_assert_int_eq(sl_pipeline_wait(s.p), SL_ECANCELED);
    close(fds[0]); /* the client's blocked send fails now */
    client_join(&c);
    ck_assert_int_ne(c.err, 0);
    sl_pipeline_free(s.p);
  } else {
    ck_assert_int_eq(recv_all(fds[1], &got), 0);
    client_join(&c);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(sl_pipeline_wait(s.p), 0);
    ck_assert(gunzips_to(&got, data, len));
    ck_assert_int_eq(sl_ring_stats_get(in, &in_st), 0);
    ck_assert_int_eq(sl_ring_stats_get(out, &out_st), 0);
    ck_assert_uint_le(in_st.peak_level, BP_HWM + BP_BUF);
    ck_assert_uint_le(out_st.peak_level, BP_HWM + BP_BUF);
    sl_pipeline_free(s.p);
    close(fds[0]);
  }
  close(fds[1]);
  pu_bytes_free(&got);
  free(data);
}
END_TEST

/* ------------------------------------------------------------------------
 * The acyclicity check and a duplex
 * ---------------------------------------------------------------------- */

static int dx_read(sl_stage *st, void *ctx) {
  (void)st;
  (void)ctx;
  return SL_EOF;
}

static int dx_write(sl_stage *st, void *ctx, sl_buf *in) {
  (void)st;
  (void)ctx;
  sl_buf_unref(in);
  return 0;
}

/* A duplex counts as a source for its outputs and a sink for its inputs:
 * d -> x -> d starts (and ends: the read side ends at once, so x's input
 * ends, so the write side's); a cycle of transforms is still refused, and
 * so is one that passes a duplex but also closes through transforms. */
START_TEST(test_validate_duplex_is_no_cycle) {
  static const sl_stage_ops dx_ops = {.read = dx_read, .write = dx_write};
  pu_xf x0, x1, x2;
  sl_pipeline *p;
  sl_stage *d;

  pu_xf_init(&x0, PU_IDENTITY);
  pu_xf_init(&x1, PU_IDENTITY);
  pu_xf_init(&x2, PU_IDENTITY);

  /* Accepted: d -> x -> d. */
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&d, "dx", &dx_ops, NULL), 0);
  sl_stage *x = pu_xf_stage("x", &x0, false);
  ck_assert_int_eq(sl_pipeline_chain(p, d, x, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(p, x, d), 0);
  ck_assert_int_eq(sl_pipeline_start(p), 0);
  ck_assert_int_eq(sl_pipeline_wait(p), 0);
  sl_pipeline_free(p);

  /* Refused: d -> a -> b -> a (a cycle of transforms), b -> d. */
  ck_assert_int_eq(sl_pipeline_new(&p, NULL), 0);
  ck_assert_int_eq(sl_stage_new(&d, "dx", &dx_ops, NULL), 0);
  sl_stage *a = pu_xf_stage("a", &x1, false), *b = pu_xf_stage("b", &x2, false);
  ck_assert_int_eq(sl_pipeline_chain(p, d, a, b, NULL), 0);
  ck_assert_int_eq(sl_pipeline_link(p, b, a), 0);
  ck_assert_int_eq(sl_pipeline_link(p, b, d), 0);
  ck_assert_int_eq(sl_pipeline_start(p), SL_EINVAL);
  sl_pipeline_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Arguments
 * ---------------------------------------------------------------------- */

START_TEST(test_bad_args) {
  int fds[2], pfd[2];
  sl_stage *st = (sl_stage *)&fds;
  sl_socket_opts bad = {.flags = 1u << 7};
  uint64_t rx = 1, tx = 1;

  ck_assert_int_eq(make_pair(PAIR_UNIX, fds, 0), 0);
  ck_assert_int_eq(pipe(pfd), 0);
  ck_assert_int_eq(sl_socket_new(NULL, NULL, fds[0], NULL), SL_EINVAL);
  ck_assert_int_eq(sl_socket_new(&st, NULL, -1, NULL), SL_EINVAL);
  ck_assert_ptr_null(st);
  ck_assert_int_eq(sl_socket_new(&st, "", fds[0], NULL), SL_EINVAL);
  ck_assert_int_eq(sl_socket_new(&st, NULL, fds[0], &bad), SL_EINVAL);
  ck_assert_int_eq(sl_socket_new(&st, NULL, pfd[0], NULL), SL_EINVAL);
  ck_assert_int_eq(errno, ENOTSOCK);
  close(pfd[0]);
  close(pfd[1]);
  ck_assert_int_eq(sl_socket_new(&st, NULL, pfd[0], NULL), SL_EBADF);
  ck_assert_int_eq(sl_socket_bytes(NULL, &rx, &tx), SL_EINVAL);
  ck_assert(rx == 0 && tx == 0);

  /* A datagram socket is not a stream. */
  int dg[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg), 0);
  ck_assert_int_eq(sl_socket_new(&st, NULL, dg[0], NULL), SL_EINVAL);
  close(dg[0]);
  close(dg[1]);

  /* Allocation failure: nothing is left, the descriptor stays open. */
  sl_socket_opts own = {.flags = SL_SOCKET_CLOSE};
  for (long n = 1;; n++) {
    fail_alloc_arm(n);
    int rc = sl_socket_new(&st, "s", fds[0], &own);
    fail_alloc_disarm();
    if (rc == 0) {
      ck_assert_uint_eq(sl_socket_bytes(st, &rx, &tx), 0);
      ck_assert(rx == 0 && tx == 0);
      sl_stage_free(st); /* closes fds[0] */
      break;
    }
    ck_assert_int_eq(rc, SL_ENOMEM);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(test_alloc_live(), 0);
    ck_assert_int_ne(fcntl(fds[0], F_GETFD), -1);
  }
  ck_assert_int_eq(fcntl(fds[0], F_GETFD), -1);
  close(fds[1]);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *tcase(const char *name, double timeout) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, timeout);
  return tc;
}

static Suite *socket_suite(void) {
  Suite *s = suite_create("socket");
  TCase *tc;

  tc = tcase("round-trip", 60);
  tcase_add_loop_test(tc, test_gzip_round_trip, 0, 6);
  tcase_add_loop_test(tc, test_half_close_read_side_goes_on, 0, 2);
  tcase_add_test(tc, test_close_flag);
  suite_add_tcase(s, tc);

  tc = tcase("errors", 30);
  tcase_add_loop_test(tc, test_peer_reset_is_an_error, 0, 2);
  tcase_add_test(tc, test_send_to_closed_peer_is_epipe);
  tcase_add_test(tc, test_bad_args);
  suite_add_tcase(s, tc);

  tc = tcase("cancel", 30);
  tcase_add_loop_test(tc, test_cancel_while_receiving, 0, 2);
  suite_add_tcase(s, tc);

  tc = tcase("backpressure", 60);
  tcase_add_loop_test(tc, test_backpressure_both_ways, 0, 4);
  suite_add_tcase(s, tc);

  tc = tcase("graph", 30);
  tcase_add_test(tc, test_validate_duplex_is_no_cycle);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return run_suite(socket_suite());
}
