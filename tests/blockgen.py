#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write stdin as a block-format gzip file on stdout: one gzip member per
block, each with the 'S','L' FEXTRA subfield holding the member's length
(or BGZF's 'B','C' with --bgzf). A test generator, independent of the
library's compressor.

  blockgen.py [-b BLOCK] [--sizes N,N,...] [--bgzf] [--plain I,I,...]

--sizes cuts the input into blocks of these sizes in turn (0 allowed: an
empty member); --plain writes the members of these indexes without a
length subfield. An empty input gives one empty member.
"""
import argparse
import struct
import sys
import zlib


def member(data, kind, level):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    trailer = struct.pack('<II', zlib.crc32(data), len(data) & 0xffffffff)
    if kind == 'plain':
        return b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03' + body + trailer
    if kind == 'bgzf':
        total = 18 + len(body) + 8
        assert total <= 65536
        extra = b'BC' + struct.pack('<HH', 2, total - 1)
    else:
        total = 20 + len(body) + 8
        extra = b'SL' + struct.pack('<HI', 4, total)
    return (b'\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x03' +
            struct.pack('<H', len(extra)) + extra + body + trailer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('-b', type=int, default=128 << 10)
    ap.add_argument('-l', type=int, default=6)
    ap.add_argument('--sizes', default='')
    ap.add_argument('--bgzf', action='store_true')
    ap.add_argument('--plain', default='')
    a = ap.parse_args()
    if a.bgzf and a.b > 60000:
        a.b = 60000
    sizes = [int(x) for x in a.sizes.split(',') if x != ''] or [a.b]
    if max(sizes) <= 0:
        ap.error('a block size must be positive')
    plain = {int(x) for x in a.plain.split(',') if x != ''}
    data = sys.stdin.buffer.read()
    out = sys.stdout.buffer
    pos = i = 0
    while True:
        n = sizes[i % len(sizes)]
        block = data[pos:pos + n]
        kind = 'plain' if i in plain else 'bgzf' if a.bgzf else 'sl'
        out.write(member(block, kind, a.l))
        pos += len(block)
        i += 1
        if pos >= len(data):
            break


if __name__ == '__main__':
    main()
