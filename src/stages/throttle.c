/* SPDX-License-Identifier: MIT */
/*
 * throttle — a pass-through transform that limits throughput to a rate.
 *
 * A token bucket kept in integers: a token is a nanobyte (1e-9 byte, or
 * of an object), so that refilling for dt nanoseconds at rate bytes per
 * second adds exactly dt * rate tokens and no rounding can ever let a
 * chunk through early. The bucket holds burst bytes (more while a chunk
 * longer than burst waits for its whole length) and starts full when the
 * first chunk arrives. A chunk waits until the bucket holds its length,
 * which it then takes out. Since the bucket never goes below zero, the
 * bytes passed by time t since the first chunk are at most burst + rate *
 * t: the throttle is never faster than its rate.
 *
 * Sleeping inside the op is the point of the stage, and the reason it must
 * stay cancellable: it waits in poll() on the pipeline's cancel descriptor
 * with the time left as the timeout, so a cancel or another stage's
 * failure wakes it at once. Should that descriptor be unavailable it
 * sleeps on CLOCK_MONOTONIC in slices of at most 50 ms and checks
 * sl_stage_cancelled between them.
 *
 * Threads: the context is touched only by the stage's thread.
 */
#include "stage-int.h"

#include <sluice/stages.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <time.h>

#define NS_PER_SEC UINT64_C(1000000000)
#define SLICE_NS (UINT64_C(50) * 1000000) /* without a cancel descriptor */
#define FD_UNKNOWN (-1000)                /* not asked for yet */

struct throttle {
  uint64_t rate;   /* bytes (objects) per second, > 0 */
  uint64_t burst;  /* bucket size, in tokens */
  uint64_t tokens; /* in the bucket now */
  uint64_t last;   /* when tokens was last brought up to date */
  bool started;    /* a chunk has arrived: tokens and last are set */
  int cancel_fd;   /* FD_UNKNOWN, the descriptor, or an error (< 0) */
};

static uint64_t mul_sat(uint64_t a, uint64_t b) {
  return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Bring the bucket up to now; it holds at most cap tokens. */
static void refill(struct throttle *t, uint64_t now, uint64_t cap) {
  if (!t->started) {
    t->tokens = t->burst; /* full when the first chunk arrives */
    t->started = true;
  } else if (now > t->last) {
    t->tokens = add_sat(t->tokens, mul_sat(now - t->last, t->rate));
  }
  t->last = now;
  if (t->tokens > cap)
    t->tokens = cap;
}

/* Sleep until the monotonic clock reads deadline (ns), or less: the
 * caller looks at the clock again. SL_ECANCELED when the pipeline is
 * failing or cancelled. */
static int nap(sl_stage *stage, struct throttle *t, uint64_t deadline) {
  if (sl_stage_cancelled(stage))
    return SL_ECANCELED;
  if (t->cancel_fd == FD_UNKNOWN)
    t->cancel_fd = sl_stage_cancel_fd(stage);
  uint64_t now = sl__now_ns();
  if (now >= deadline)
    return 0;
  uint64_t left = deadline - now;

  if (t->cancel_fd >= 0) {
    struct pollfd pfd = {.fd = t->cancel_fd, .events = POLLIN};
    int n;
#if defined(__linux__) && defined(_GNU_SOURCE)
    struct timespec ts = {.tv_sec = (time_t)(left / NS_PER_SEC),
                          .tv_nsec = (long)(left % NS_PER_SEC)};
    n = ppoll(&pfd, 1, &ts, NULL);
#else
    /* Round up: waking early would only cost another round. */
    uint64_t ms = (left + 999999) / 1000000;
    n = poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms);
#endif
    if (n > 0)
      return SL_ECANCELED; /* readable, or in error: stop either way */
    if (n == 0 || errno == EINTR)
      return 0;
    t->cancel_fd = -1; /* poll itself failed: fall back to slices */
  }

  if (left > SLICE_NS)
    left = SLICE_NS;
  uint64_t until = sl__now_ns() + left;
  struct timespec ts = {.tv_sec = (time_t)(until / NS_PER_SEC),
                        .tv_nsec = (long)(until % NS_PER_SEC)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
  return sl_stage_cancelled(stage) ? SL_ECANCELED : 0;
}

/* Wait until the bucket holds cost units, then take them. */
static int take(sl_stage *stage, struct throttle *t, uint64_t cost) {
  uint64_t need = mul_sat(cost, NS_PER_SEC);
  uint64_t cap = need > t->burst ? need : t->burst;
  for (;;) {
    uint64_t now = sl__now_ns();
    refill(t, now, cap);
    if (t->tokens >= need) {
      t->tokens -= need;
      return 0;
    }
    /* Round the wait up so that the bucket is full enough when it ends. */
    uint64_t lack = need - t->tokens;
    uint64_t wait = lack / t->rate + (lack % t->rate != 0);
    int rc = nap(stage, t, add_sat(now, wait));
    if (rc != 0)
      return rc;
  }
}

static int throttle_transform(sl_stage *stage, void *ctx, sl_buf *in) {
  struct throttle *t = ctx;
  uint64_t cost = sl_buf_is_object(in) ? 1 : sl_buf_len(in);
  if (cost > 0) {
    int rc = take(stage, t, cost);
    if (rc != 0) {
      sl_buf_unref(in);
      return rc;
    }
  }
  return sl_stage_push(stage, in);
}

static void throttle_destroy(void *ctx) {
  sl__free(ctx);
}

int sl_throttle_new(sl_stage **out, uint64_t rate,
                    const sl_throttle_opts *opts) {
  if (!out)
    return SL_EINVAL;
  *out = NULL;
  if (rate == 0 || (opts && opts->burst > SL_THROTTLE_MAX_BURST))
    return SL_EINVAL;
  struct throttle *t = sl__calloc(1, sizeof *t);
  if (!t)
    return SL_ENOMEM;
  uint64_t burst = opts && opts->burst ? opts->burst : rate / 10;
  if (burst > SL_THROTTLE_MAX_BURST)
    burst = SL_THROTTLE_MAX_BURST;
  t->rate = rate;
  t->burst = burst * NS_PER_SEC; /* below 2^64: burst <= 2^34 */
  t->cancel_fd = FD_UNKNOWN;
  sl_stage_ops ops = {.transform = throttle_transform,
                      .destroy = throttle_destroy};
  int rc =
      sl_stage_new(out, opts && opts->name ? opts->name : "throttle", &ops, t);
  if (rc != 0)
    sl__free(t);
  return rc;
}
