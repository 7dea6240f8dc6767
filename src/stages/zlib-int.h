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

/* The block format's member header (sl_pgzip_opts.format BLOCKS): what
 * sl__gzip_header_make writes for h at level, FEXTRA set and the extra
 * field starting with the subfield 'S' 'L', LEN 4, room for the member's
 * length (zero until sl__gzip_block_header_set), then h's own extra
 * subfields. Levels above 9 (libdeflate's) write the XFL of level 9. h
 * NULL: the bare header of every member after the first (20 bytes).
 * Returns as sl__gzip_header_make; SL_EINVAL also when h's extra field
 * leaves no room for the subfield (over 65527 bytes). */
#define SL__GZIP_BLOCK_LEN_AT 16 /* the subfield's data, from byte 0 */
int sl__gzip_block_header_make(const sl_gzip_header *h, int level,
                               unsigned char **out, size_t *len);

/* Write the member's total length into a header hdr[0..hlen) made by
 * sl__gzip_block_header_make, and its header CRC16 again when it has one
 * (FHCRC). Any thread, on its own copy. */
void sl__gzip_block_header_set(unsigned char *hdr, size_t hlen,
                               uint32_t member_len);

/* A member's end, for a gunzip that leaves the CRC-32 to another stage:
 * the CRC-32 stored in its trailer, the member's length in bytes and the
 * trailer's input offset. Returns 0 or SL_ENOMEM. */
typedef int (*sl__member_end_fn)(void *arg, uint32_t crc, uint64_t len,
                                 uint64_t off);

/* For sl_pgunzip_chain: a gunzip stage as sl_gunzip_new makes it with
 * opts (the same checks, the same errors at the same offsets, on the
 * engine opts choose), except that it computes no CRC-32. At the end of
 * each member it checks ISIZE, calls end(arg, ...) and then pushes the
 * member's last output, so that a member's output ends a chunk and the
 * call comes before any byte of the next member leaves. A member with no
 * output is checked here (its CRC-32 must be 0) and not reported. The
 * stage owns arg from the call on, success or not, and releases it with
 * arg_free. Returns as sl_gunzip_new. Any thread. */
int sl__gunzip_split_new(sl_stage **out, const sl_zlib_opts *opts,
                         sl__member_end_fn end, void *arg,
                         void (*arg_free)(void *));

/* Make a gunzip from sl__gunzip_split_new read on from the member at
 * input offset in_off, the member's index nmember (> 0): as if it had
 * read every byte before (sl__bgunzip_new hands it the rest of a stream
 * whose first members it read itself). Before the stage is fed. */
void sl__gunzip_resume(sl_stage *stage, uint64_t in_off, uint64_t nmember);

/* For sl_pgunzip_chain: len bytes of output follow whose CRC-32 was
 * checked already (the next stage counts them, checks nothing). Called
 * before they are pushed. Returns 0 or SL_ENOMEM. */
typedef int (*sl__member_pass_fn)(void *arg, uint64_t len);

/* A gunzip that inflates members whose length is known (the block
 * format's 'S','L' subfield, BGZF's 'B','C') on workers threads (0: every
 * processor) and hands everything else to a gunzip made by
 * sl__gunzip_split_new with opts, end, arg and arg_free (bgunzip.c tells
 * how); pass announces the block members' output. The stage owns arg
 * from the call on, success or not. Returns as sl__gunzip_split_new;
 * SL_EINVAL for workers over SL_MAP_MAX_WORKERS. */
int sl__bgunzip_new(sl_stage **out, const sl_zlib_opts *opts, unsigned workers,
                    sl__member_end_fn end, sl__member_pass_fn pass, void *arg,
                    void (*arg_free)(void *));

/* sl__gunzip_trailing for a stage of sl__bgunzip_new (and, for any other
 * stage, sl__gunzip_trailing itself). */
int sl__bgunzip_trailing(const sl_stage *stage, uint64_t *offset, int *garbage);

/* Tests: how many members a stage of sl__bgunzip_new had inflated on its
 * workers and pushed (0 for any other stage). After the pipeline ends. */
uint64_t sl__bgunzip_blocks(const sl_stage *stage);

/* What followed the stream, for a gunzip (or unzip) stage made with
 * ignore_trailing: sl_pgunzip_trailing, for the stages of zlib.c. Returns
 * as sl_pgunzip_trailing; SL_EINVAL for any other stage. */
int sl__gunzip_trailing(const sl_stage *stage, uint64_t *offset, int *garbage);

#endif
