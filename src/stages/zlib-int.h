/* SPDX-License-Identifier: MIT */
/*
 * What the zlib stages share with the other compression stages inside the
 * library: the gzip header writer, so that sl_gzip_new and sl_pgzip_new
 * write byte-identical headers for the same options. Not installed.
 */
#ifndef SLUICE_ZLIB_INT_H
#define SLUICE_ZLIB_INT_H

#include "sluice-int.h"

#include <sluice/zlib.h>

/* The gzip member header sl_gzip_new writes with h (NULL: a bare one) at
 * level (0..9 or SL_ZLIB_LEVEL_DEFAULT) and strategy: the fixed ten bytes
 * (XFL from the level and strategy, OS 3), then the extra field, name,
 * comment and header CRC that h asks for. zlib itself writes it, as it
 * does for sl_gzip_new. On 0, *out holds *len bytes allocated with
 * sl__malloc, the caller's to release with sl__free. Returns 0; SL_EINVAL
 * (level, strategy or h out of range, as sl_zlib_opts); SL_ENOMEM. Any
 * thread. */
int sl__gzip_header_make(const sl_gzip_header *h, int level, int strategy,
                         unsigned char **out, size_t *len);

#endif
