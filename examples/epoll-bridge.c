/* SPDX-License-Identifier: MIT */
/*
 * epoll-bridge: gzip standard input to standard output from one event
 * loop, with the compression on a pipeline thread.
 *
 *   stdin -> sl_writer -> gzip -> sl_reader -> stdout
 *
 * The loop watches three descriptors with epoll: standard input (made
 * non-blocking), the writer's drain descriptor and the reader's ready
 * descriptor. It reads standard input and hands each piece to
 * sl_writer_write; when that returns 0 (the pipeline holds as much as its
 * high mark allows) it stops watching standard input and watches the
 * writer's descriptor instead, until the drain. Whatever the reader has
 * ready is written to standard output. Nothing in the loop ever blocks on
 * the pipeline, which is what a server does with request and response
 * bodies.
 *
 *   examples/epoll-bridge < file | gunzip | cmp - file
 *
 * (For brevity, standard output is written with blocking writes.)
 */
#include <sluice.h>

#include <stdio.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Watch fd for input, or stop watching it. */
static int watch(int ep, int fd, int on) {
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  return epoll_ctl(ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev);
}

int main(void) {
  sl_pipeline *p = NULL;
  sl_stage *ws, *gz, *rs;
  sl_writer *w;
  sl_reader *r;
  int rc;

  if ((rc = sl_pipeline_new(&p, NULL)) != 0 ||
      (rc = sl_writer_new(&ws, &w, "stdin")) != 0 ||
      (rc = sl_gzip_new(&gz, NULL)) != 0 ||
      (rc = sl_reader_new(&rs, &r, "stdout")) != 0 ||
      (rc = sl_pipeline_chain(p, ws, gz, rs, NULL)) != 0 ||
      (rc = sl_pipeline_start(p)) != 0) {
    fprintf(stderr, "epoll-bridge: %s\n", sl_strerror(rc));
    return 1;
  }
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  /* A regular file cannot be watched with epoll (EPERM): it is always
   * ready, so such an input is simply read whenever the writer allows. */
  int in_pollable = watch(ep, 0, 1) == 0;
  watch(ep, sl_reader_fd(r), 1);

  unsigned char in[65536];
  int in_open = 1, paused = 0, done = 0;
  while (!done) {
    /* Read input while the writer takes it. */
    while (in_open && !paused) {
      ssize_t n = read(0, in, sizeof in);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        break; /* wait for epoll */
      if (n <= 0) {
        in_open = 0; /* end of input (or an error: end all the same) */
        if (in_pollable)
          watch(ep, 0, 0);
        if ((rc = sl_writer_end(w)) < 0)
          goto out; /* the pipeline failed: wait says why */
        break;
      }
      rc = sl_writer_write(w, in, (size_t)n);
      if (rc < 0)
        goto out;
      if (rc == 0) { /* at the mark: stop reading until the drain */
        paused = 1;
        if (in_pollable)
          watch(ep, 0, 0);
        watch(ep, sl_writer_fd(w), 1);
      }
      if (!in_pollable)
        break; /* let the output flow between two reads of a file */
    }
    /* Write out what is ready. */
    for (;;) {
      sl_buf *b;
      rc = sl_reader_read(r, &b);
      if (rc != 0)
        break;
      int bad = write_all(1, sl_buf_data(b), sl_buf_len(b));
      sl_buf_unref(b);
      if (bad) {
        sl_reader_close(r); /* the consumer went away */
        rc = SL_EPIPE;
        goto out;
      }
    }
    if (rc == SL_EOF)
      break;
    if (rc != SL_AGAIN)
      goto out;
    if (!in_pollable && in_open && !paused)
      continue;
    struct epoll_event ev[3];
    int n = epoll_wait(ep, ev, 3, -1);
    for (int i = 0; i < n; i++) {
      if (paused && ev[i].data.fd == sl_writer_fd(w)) {
        rc = sl_writer_ack(w); /* the drain: resume reading input */
        if (rc == SL_AGAIN)
          continue; /* a large write's tail filled it again */
        if (rc < 0)
          goto out;
        paused = 0;
        watch(ep, sl_writer_fd(w), 0);
        if (in_pollable && in_open)
          watch(ep, 0, 1);
      }
    }
  }
  rc = 0;
out:
  close(ep);
  if (rc < 0)
    sl_writer_abort(w, rc);
  else if (in_open)
    sl_writer_end(w);
  rc = sl_pipeline_wait(p);
  if (rc != 0)
    fprintf(stderr, "epoll-bridge: %s\n", sl_pipeline_error(p));
  sl_pipeline_free(p);
  return rc != 0;
}

#else
int main(void) {
  fputs("epoll-bridge: needs epoll (Linux)\n", stderr);
  return 77;
}
#endif
