/* SPDX-License-Identifier: MIT */
/*
 * Happens-before annotations for valgrind's race checkers (helgrind, DRD),
 * compiled in only when configured with --enable-valgrind-annotations,
 * which defines SL_VALGRIND and includes this header first in every file
 * the build compiles (the library, its tests and tools). Without
 * SL_VALGRIND it defines nothing.
 *
 * Why. The library synchronises threads with C11 atomics: the ring's fast
 * path publishes a slot with a release store of tail that the reader
 * acquires, gives slots back with a CAS of head, and a buffer's last
 * reference is found with an acq_rel decrement. Helgrind and DRD know
 * pthreads but not atomics: to them an atomic is a plain load or store, so
 * they report every atomic variable as racing, and every byte published
 * through one (a chunk's data written by one stage and read by the next)
 * as racing too. Those reports are false: the C11 memory model orders the
 * accesses.
 *
 * How. This header replaces the <stdatomic.h> operations with versions
 * that tell the checker what the memory model says, so the library's code
 * stays as it is:
 *
 *   - every atomic object an operation touches is excluded from race
 *     checking (an atomic cannot race, by definition of the model);
 *   - an operation with release semantics or stronger (release, acq_rel,
 *     seq_cst stores, exchanges, read-modify-writes and compare-exchanges)
 *     is a happens-before "send" on the object's tag (see sl__vg_tag), made
 *     before the operation;
 *   - one with acquire semantics or stronger (acquire, consume, acq_rel,
 *     seq_cst loads and read-modify-writes) is a "receive" on it, made
 *     after.
 *
 * The checkers then see the edges a release/acquire pair creates, plus
 * some: a receive orders after every earlier send on the same tag, not
 * only the store whose value it read, so an access ordered only by a stale
 * read could go unreported. Plain (non-atomic) data published
 * through an atomic is still checked, and so is everything ordered by
 * mutexes and condition variables. Relaxed operations make no edge.
 *
 * Accesses that are not through these functions (initialisation by
 * calloc before the object is shared, atomic_init) need no edge.
 */
#ifndef SLUICE_ANNOTATE_H
#define SLUICE_ANNOTATE_H

#ifdef SL_VALGRIND

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* helgrind's requests; DRD understands the ones used here as well (its
 * happens-before and suppression requests have the same codes). */
#include <valgrind/helgrind.h>

/* Stop checking [p, p + n): an atomic object. Helgrind forgets the range
 * until it is allocated again; DRD suppresses reports on it. */
static inline void sl__vg_atomic(const volatile void *p, size_t n) {
  VALGRIND_HG_DISABLE_CHECKING(p, n);
}

/* The happens-before tag of the atomic at p: a byte of a static table,
 * picked by the address. Not the address itself: DRD keeps a record for
 * each tag, which on the object's own address would be taken for the next
 * object there (a mutex on a reused stack slot, say), and which, kept for
 * every address ever used, slows it down without bound. Two atomics that
 * share a byte order each other's accesses too, which can only hide a
 * race, never invent one; with 2^16 bytes that is rare. */
#define SL__VG_TAGS 65536u
/* One table for the whole program: a weak definition in every file that
 * includes this header, merged by the linker. */
__attribute__((weak)) char sl__vg_tags[SL__VG_TAGS];
static inline void *sl__vg_tag(const volatile void *p) {
  uintptr_t a = (uintptr_t)p;
  return &sl__vg_tags[(a ^ (a >> 16)) % SL__VG_TAGS];
}

static inline void sl__vg_before(const volatile void *p, int mo) {
  if (mo == memory_order_release || mo == memory_order_acq_rel ||
      mo == memory_order_seq_cst)
    ANNOTATE_HAPPENS_BEFORE(sl__vg_tag(p));
}

static inline void sl__vg_after(const volatile void *p, int mo) {
  if (mo == memory_order_consume || mo == memory_order_acquire ||
      mo == memory_order_acq_rel || mo == memory_order_seq_cst)
    ANNOTATE_HAPPENS_AFTER(sl__vg_tag(p));
}

/* The operations themselves, on the compiler's builtins. */
#if defined(__clang__)
#define SL__VG_LOAD(p, mo) __c11_atomic_load(p, mo)
#define SL__VG_STORE(p, v, mo) __c11_atomic_store(p, v, mo)
#define SL__VG_XCHG(p, v, mo) __c11_atomic_exchange(p, v, mo)
#define SL__VG_CAS(p, e, d, weak, s, f)                       \
  ((weak) ? __c11_atomic_compare_exchange_weak(p, e, d, s, f) \
          : __c11_atomic_compare_exchange_strong(p, e, d, s, f))
#define SL__VG_FETCH(op, p, v, mo) __c11_atomic_fetch_##op(p, v, mo)
#else
#define SL__VG_LOAD(p, mo)               \
  __extension__({                        \
    __typeof__((void)0, *(p)) sl__vg_lt; \
    __atomic_load(p, &sl__vg_lt, mo);    \
    sl__vg_lt;                           \
  })
#define SL__VG_STORE(p, v, mo)                 \
  __extension__({                              \
    __typeof__((void)0, *(p)) sl__vg_st = (v); \
    __atomic_store(p, &sl__vg_st, mo);         \
  })
#define SL__VG_XCHG(p, v, mo)                             \
  __extension__({                                         \
    __typeof__((void)0, *(p)) sl__vg_xv = (v), sl__vg_xt; \
    __atomic_exchange(p, &sl__vg_xv, &sl__vg_xt, mo);     \
    sl__vg_xt;                                            \
  })
#define SL__VG_CAS(p, e, d, weak, s, f)                      \
  __extension__({                                            \
    __typeof__((void)0, *(p)) sl__vg_cd = (d);               \
    __atomic_compare_exchange(p, e, &sl__vg_cd, weak, s, f); \
  })
#define SL__VG_FETCH(op, p, v, mo) __atomic_fetch_##op(p, v, mo)
#endif

#undef atomic_init
#define atomic_init(p, v)                             \
  __extension__({                                     \
    __auto_type sl__vg_ip = (p);                      \
    sl__vg_atomic(sl__vg_ip, sizeof *sl__vg_ip);      \
    SL__VG_STORE(sl__vg_ip, v, memory_order_relaxed); \
  })

#undef atomic_load_explicit
#define atomic_load_explicit(p, mo)                                         \
  __extension__({                                                           \
    __auto_type sl__vg_lp = (p);                                            \
    sl__vg_atomic(sl__vg_lp, sizeof *sl__vg_lp);                            \
    __typeof__((void)0, *sl__vg_lp) sl__vg_lr = SL__VG_LOAD(sl__vg_lp, mo); \
    sl__vg_after(sl__vg_lp, mo);                                            \
    sl__vg_lr;                                                              \
  })
#undef atomic_load
#define atomic_load(p) atomic_load_explicit(p, memory_order_seq_cst)

#undef atomic_store_explicit
#define atomic_store_explicit(p, v, mo)          \
  __extension__({                                \
    __auto_type sl__vg_sp = (p);                 \
    sl__vg_atomic(sl__vg_sp, sizeof *sl__vg_sp); \
    sl__vg_before(sl__vg_sp, mo);                \
    SL__VG_STORE(sl__vg_sp, v, mo);              \
  })
#undef atomic_store
#define atomic_store(p, v) atomic_store_explicit(p, v, memory_order_seq_cst)

#undef atomic_exchange_explicit
#define atomic_exchange_explicit(p, v, mo)                                     \
  __extension__({                                                              \
    __auto_type sl__vg_xp = (p);                                               \
    sl__vg_atomic(sl__vg_xp, sizeof *sl__vg_xp);                               \
    sl__vg_before(sl__vg_xp, mo);                                              \
    __typeof__((void)0, *sl__vg_xp) sl__vg_xr = SL__VG_XCHG(sl__vg_xp, v, mo); \
    sl__vg_after(sl__vg_xp, mo);                                               \
    sl__vg_xr;                                                                 \
  })
#undef atomic_exchange
#define atomic_exchange(p, v) \
  atomic_exchange_explicit(p, v, memory_order_seq_cst)

#define SL__VG_CAS_OP(p, e, d, weak, s, f)                      \
  __extension__({                                               \
    __auto_type sl__vg_cp = (p);                                \
    sl__vg_atomic(sl__vg_cp, sizeof *sl__vg_cp);                \
    sl__vg_before(sl__vg_cp, s);                                \
    _Bool sl__vg_cok = SL__VG_CAS(sl__vg_cp, e, d, weak, s, f); \
    sl__vg_after(sl__vg_cp, sl__vg_cok ? (s) : (f));            \
    sl__vg_cok;                                                 \
  })
#undef atomic_compare_exchange_strong_explicit
#define atomic_compare_exchange_strong_explicit(p, e, d, s, f) \
  SL__VG_CAS_OP(p, e, d, 0, s, f)
#undef atomic_compare_exchange_weak_explicit
#define atomic_compare_exchange_weak_explicit(p, e, d, s, f) \
  SL__VG_CAS_OP(p, e, d, 1, s, f)
#undef atomic_compare_exchange_strong
#define atomic_compare_exchange_strong(p, e, d) \
  SL__VG_CAS_OP(p, e, d, 0, memory_order_seq_cst, memory_order_seq_cst)
#undef atomic_compare_exchange_weak
#define atomic_compare_exchange_weak(p, e, d) \
  SL__VG_CAS_OP(p, e, d, 1, memory_order_seq_cst, memory_order_seq_cst)

#define SL__VG_FETCH_OP(op, p, v, mo)            \
  __extension__({                                \
    __auto_type sl__vg_fp = (p);                 \
    sl__vg_atomic(sl__vg_fp, sizeof *sl__vg_fp); \
    sl__vg_before(sl__vg_fp, mo);                \
    __typeof__((void)0, *sl__vg_fp) sl__vg_fr =  \
        SL__VG_FETCH(op, sl__vg_fp, v, mo);      \
    sl__vg_after(sl__vg_fp, mo);                 \
    sl__vg_fr;                                   \
  })
#undef atomic_fetch_add_explicit
#define atomic_fetch_add_explicit(p, v, mo) SL__VG_FETCH_OP(add, p, v, mo)
#undef atomic_fetch_sub_explicit
#define atomic_fetch_sub_explicit(p, v, mo) SL__VG_FETCH_OP(sub, p, v, mo)
#undef atomic_fetch_or_explicit
#define atomic_fetch_or_explicit(p, v, mo) SL__VG_FETCH_OP(or, p, v, mo)
#undef atomic_fetch_and_explicit
#define atomic_fetch_and_explicit(p, v, mo) SL__VG_FETCH_OP(and, p, v, mo)
#undef atomic_fetch_xor_explicit
#define atomic_fetch_xor_explicit(p, v, mo) SL__VG_FETCH_OP(xor, p, v, mo)
#undef atomic_fetch_add
#define atomic_fetch_add(p, v) SL__VG_FETCH_OP(add, p, v, memory_order_seq_cst)
#undef atomic_fetch_sub
#define atomic_fetch_sub(p, v) SL__VG_FETCH_OP(sub, p, v, memory_order_seq_cst)
#undef atomic_fetch_or
#define atomic_fetch_or(p, v) SL__VG_FETCH_OP(or, p, v, memory_order_seq_cst)
#undef atomic_fetch_and
#define atomic_fetch_and(p, v) SL__VG_FETCH_OP(and, p, v, memory_order_seq_cst)
#undef atomic_fetch_xor
#define atomic_fetch_xor(p, v) SL__VG_FETCH_OP(xor, p, v, memory_order_seq_cst)

#endif /* SL_VALGRIND */

#endif /* SLUICE_ANNOTATE_H */
