/* SPDX-License-Identifier: MIT */
/*
 * The allocator hook. Every allocation the library makes goes through
 * sl__malloc and friends, so a test can fail the Nth one. The hook is the
 * one piece of process-wide state; it is set before any object exists and
 * only read afterwards.
 */
#include "sluice-int.h"

#include <stdlib.h>
#include <string.h>

static struct {
  sl_malloc_fn malloc_fn;
  sl_realloc_fn realloc_fn;
  sl_calloc_fn calloc_fn;
  sl_free_fn free_fn;
} hook = {malloc, realloc, calloc, free};

int sl_set_allocator(sl_malloc_fn malloc_fn, sl_realloc_fn realloc_fn,
                     sl_calloc_fn calloc_fn, sl_free_fn free_fn) {
  int given = !!malloc_fn + !!realloc_fn + !!calloc_fn + !!free_fn;
  if (given == 0) {
    hook.malloc_fn = malloc;
    hook.realloc_fn = realloc;
    hook.calloc_fn = calloc;
    hook.free_fn = free;
    return 0;
  }
  if (given != 4)
    return SL_EINVAL;
  hook.malloc_fn = malloc_fn;
  hook.realloc_fn = realloc_fn;
  hook.calloc_fn = calloc_fn;
  hook.free_fn = free_fn;
  return 0;
}

void *sl__malloc(size_t size) {
  return hook.malloc_fn(size ? size : 1);
}

void *sl__calloc(size_t count, size_t size) {
  return hook.calloc_fn(count ? count : 1, size ? size : 1);
}

void *sl__realloc(void *ptr, size_t size) {
  return hook.realloc_fn(ptr, size ? size : 1);
}

void sl__free(void *ptr) {
  if (ptr)
    hook.free_fn(ptr);
}

char *sl__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = sl__malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* Cache-line aligned, zeroed memory through the hook: over-allocate, align
 * up, and keep the hook's pointer just below the aligned block. */
void *sl__aligned_calloc(size_t size) {
  size_t extra = SL_CACHELINE + sizeof(void *);
  if (size > SIZE_MAX - extra)
    return NULL;
  unsigned char *raw = sl__calloc(1, size + extra);
  if (!raw)
    return NULL;
  uintptr_t at = ((uintptr_t)raw + sizeof(void *) + SL_CACHELINE - 1) &
                 ~(uintptr_t)(SL_CACHELINE - 1);
  ((void **)at)[-1] = raw;
  return (void *)at;
}

void sl__aligned_free(void *ptr) {
  if (ptr)
    sl__free(((void **)ptr)[-1]);
}
