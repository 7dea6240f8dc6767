#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora of the fuzz targets (no binary file is kept in
the source tree: `make fuzz` runs this).

    gen-corpus.py OUTDIR

makes OUTDIR/gunzip, OUTDIR/pgunzip (the same gzip seeds) and OUTDIR/unzip
(those plus zlib and raw deflate streams). The seeds are small (at most
4 KiB, so libFuzzer's default input length stays small) and cover:

  - valid gzip members from python's gzip and zlib modules (levels 0, 1, 6,
    9, the filtered, Huffman-only, RLE and fixed strategies), from gzip(1)
    and pigz(1) when installed (pigz also with independent blocks, and its
    zlib format), and hand-made headers with FEXTRA, FNAME, FCOMMENT, FHCRC
    and FTEXT set;
  - empty members, multi-member files (one of them empty), members with
    sync-flushed blocks;
  - block-format and BGZF files (members that carry their length, read
    in parallel by the pgunzip target): many members, empty ones, a plain
    member after or before them, padding and garbage after them, wrong
    lengths, a flipped bit in a member's data or trailer, truncation;
  - damaged members: truncated at every part (header, deflate data,
    trailer), a flipped bit in the magic, method, flags, header CRC,
    deflate data, CRC-32 and ISIZE, reserved flag bits, trailing garbage
    (a lone 0x1f, the magic alone, zeros, text).

Everything is deterministic: the same seeds on every run.
"""

import gzip
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib

MAX_SEED = 4096


def payloads():
    rnd = random.Random(20261123)
    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i
                    for i in range(60))
    return {
        "empty": b"",
        "one": b"x",
        "two": b"ab",
        "hello": b"hello, world\n",
        "text": text[:2800],
        "zeros": bytes(3000),
        "random": bytes(rnd.getrandbits(8) for _ in range(1500)),
        # matches at long distances, a repeated random block
        "far": (lambda b: b + bytes(2000) + b)(bytes(rnd.getrandbits(8) for _ in range(300))),
        "runs": b"".join(bytes([i % 7]) * (i % 53 + 1) for i in range(120)),
    }


def raw_deflate(data, level=6, strategy=zlib.Z_DEFAULT_STRATEGY, sync=False):
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
    if sync and len(data) > 2:
        half = len(data) // 2
        out = c.compress(data[:half]) + c.flush(zlib.Z_SYNC_FLUSH)
        out += c.compress(data[half:]) + c.flush(zlib.Z_FULL_FLUSH)
        return out + c.flush()
    return c.compress(data) + c.flush()


def gzip_member(data, level=6, strategy=zlib.Z_DEFAULT_STRATEGY, flags=0,
                name=None, comment=None, extra=None, sync=False, mtime=0):
    """A gzip member with a hand-made header (RFC 1952)."""
    flg = flags
    if extra is not None:
        flg |= 0x04
    if name is not None:
        flg |= 0x08
    if comment is not None:
        flg |= 0x10
    head = b"\x1f\x8b\x08" + bytes([flg]) + struct.pack("<I", mtime) + b"\x00\x03"
    if extra is not None:
        head += struct.pack("<H", len(extra)) + extra
    if name is not None:
        head += name + b"\x00"
    if comment is not None:
        head += comment + b"\x00"
    if flg & 0x02:
        head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    body = raw_deflate(data, level, strategy, sync)
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF,
                          len(data) & 0xFFFFFFFF)
    return head + body + trailer


def tool(argv, data):
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(argv, input=data, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def gzip_seeds(p):
    s = {}
    for name, data in p.items():
        s["py-" + name] = gzip.compress(data, mtime=0)
        s["py1-" + name] = gzip.compress(data, compresslevel=1, mtime=0)
    for lvl in (0, 1, 9):
        s["lvl%d-text" % lvl] = gzip_member(p["text"], level=lvl)
    for sname, st in (("filtered", zlib.Z_FILTERED),
                      ("huffman", zlib.Z_HUFFMAN_ONLY),
                      ("rle", zlib.Z_RLE), ("fixed", zlib.Z_FIXED)):
        s["strat-%s-runs" % sname] = gzip_member(p["runs"], strategy=st)
    s["hdr-all"] = gzip_member(p["hello"], flags=0x03, name=b"hello.txt",
                               comment=b"a comment", extra=b"AB\x02\x00hi",
                               mtime=1700000000)
    s["hdr-name"] = gzip_member(p["text"], name=b"x" * 300)
    s["hdr-extra-empty"] = gzip_member(p["one"], extra=b"")
    s["hdr-hcrc"] = gzip_member(p["two"], flags=0x02)
    s["sync"] = gzip_member(p["text"], sync=True)
    s["sync-empty"] = gzip_member(b"", sync=True)
    for cli, argv in (("gzip", ["gzip", "-c", "-n"]),
                      ("gzip9", ["gzip", "-c", "-9"]),
                      ("pigz", ["pigz", "-c", "-n", "-b", "32"]),
                      ("pigzi", ["pigz", "-c", "-i", "-b", "32"])):
        for name in ("empty", "text", "random", "far"):
            out = tool(argv, p[name])
            if out is not None:
                s["%s-%s" % (cli, name)] = out
    # several members
    e = gzip.compress(b"", mtime=0)
    a = gzip.compress(b"first member\n", mtime=0)
    b = gzip_member(p["runs"], level=1)
    s["multi-2"] = a + b
    s["multi-empty"] = a + e + b
    s["multi-3-empty"] = e + e + e
    s["multi-many"] = b"".join(gzip.compress(bytes([65 + i]) * i, mtime=0)
                               for i in range(12))
    return s


def block_member(data, kind="sl", level=6, pre=b"", adjust=0, length=None):
    """A member that carries its length: the block format's 'S','L'
    subfield (the whole member's length, LE32) or BGZF's 'B','C' (the
    length - 1, LE16), after the subfields pre; adjust or length makes
    it wrong."""
    body = raw_deflate(data, level)
    sub_len = 8 if kind == "sl" else 6
    total = 12 + len(pre) + sub_len + len(body) + 8
    if length is not None:
        adjust = length - total
    if kind == "sl":
        sub = b"SL" + struct.pack("<HI", 4, total + adjust)
    else:
        sub = b"BC" + struct.pack("<HH", 2, total - 1 + adjust)
    extra = pre + sub
    head = (b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\x03" +
            struct.pack("<H", len(extra)) + extra)
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF,
                          len(data) & 0xFFFFFFFF)
    return head + body + trailer


def block_seeds(p):
    """Block-format and BGZF files, whole and damaged: the parallel path
    of the pgunzip target (sl_pgunzip_chain)."""
    s = {}
    text, runs = p["text"], p["runs"]
    parts = [text[i:i + 400] for i in range(0, len(text), 400)]
    for kind in ("sl", "bc"):
        m = [block_member(x, kind) for x in parts]
        eof = block_member(b"", kind)
        s["blk-%s-one" % kind] = block_member(p["hello"], kind)
        s["blk-%s-empty" % kind] = eof
        s["blk-%s-many" % kind] = b"".join(m) + eof
        s["blk-%s-tiny" % kind] = b"".join(block_member(bytes([65 + i]) * i, kind)
                                          for i in range(8))
        s["blk-%s-plain-after" % kind] = m[0] + m[1] + gzip.compress(runs, mtime=0)
        s["blk-%s-plain-first" % kind] = gzip.compress(runs, mtime=0) + m[0] + m[1]
        s["blk-%s-zeros" % kind] = m[0] + m[1] + bytes(16)
        s["blk-%s-garbage" % kind] = m[0] + m[1] + b"garbage\n"
        s["blk-%s-lone-byte" % kind] = m[0] + b"\x1f"
        s["blk-%s-long" % kind] = m[0] + block_member(parts[1], kind, adjust=1) + m[2]
        s["blk-%s-short" % kind] = m[0] + block_member(parts[1], kind, adjust=-1) + m[2]
        s["blk-%s-tiny-len" % kind] = m[0] + block_member(parts[1], kind, length=12) + m[2]
        s["blk-%s-past-end" % kind] = m[0] + block_member(parts[1], kind, adjust=50)
        s["blk-%s-after-extra" % kind] = block_member(p["hello"], kind,
                                                     pre=b"AB\x02\x00hi")
        many = s["blk-%s-many" % kind]
        k = len(m[0]) + len(m[1])  # member 2
        for off, tag in ((k + 30, "data"), (k + len(m[2]) - 8, "crc"),
                         (k + len(m[2]) - 4, "isize")):
            b = bytearray(many)
            b[off] ^= 0x10
            s["blk-%s-flip-%s" % (kind, tag)] = bytes(b)
        for cut, tag in ((k + 5, "hdr"), (k + 25, "data"),
                         (k + len(m[2]) - 3, "trailer")):
            s["blk-%s-trunc-%s" % (kind, tag)] = many[:cut]
    return s


def damaged(seeds):
    d = {}
    base = {k: seeds[k] for k in ("py-text", "hdr-all", "multi-2", "py-hello")
            if k in seeds}
    for k, v in base.items():
        n = len(v)
        for cut in sorted({1, 2, 3, 9, 10, 12, n // 2, n - 8, n - 5, n - 1}):
            if 0 < cut < n:
                d["trunc%d-%s" % (cut, k)] = v[:cut]
        for off, tag in ((0, "magic"), (1, "magic2"), (2, "method"),
                         (3, "flags"), (n // 2, "data"), (n - 8, "crc"),
                         (n - 5, "crc-hi"), (n - 4, "isize"), (n - 1, "isize-hi")):
            for bit in (0, 5):
                b = bytearray(v)
                b[off] ^= 1 << bit
                d["flip-%s-b%d-%s" % (tag, bit, k)] = bytes(b)
        d["trail-1f-" + k] = v + b"\x1f"
        d["trail-magic-" + k] = v + b"\x1f\x8b"
        d["trail-zeros-" + k] = v + bytes(8)
        d["trail-text-" + k] = v + b"garbage\n"
        d["trail-head-" + k] = v + v[:10]
    hello = seeds["py-hello"]
    d["reserved-flag"] = hello[:3] + b"\x20" + hello[4:]
    m = gzip_member(b"abc", flags=0x02)  # its header CRC at bytes 10, 11
    d["hcrc-bad"] = m[:10] + bytes([m[10] ^ 0xFF, m[11]]) + m[12:]
    d["extra-long"] = b"\x1f\x8b\x08\x04" + bytes(6) + b"\xff\xff" + b"x" * 40
    d["name-unterminated"] = b"\x1f\x8b\x08\x08" + bytes(6) + b"name" * 20
    d["only-magic"] = b"\x1f\x8b"
    d["one-byte"] = b"\x1f"
    d["empty-input"] = b""
    return d


def zlib_seeds(p):
    s = {}
    for name in ("empty", "hello", "text", "random", "far"):
        s["zlib-" + name] = zlib.compress(p[name])
        s["zlib9-" + name] = zlib.compress(p[name], 9)
        s["raw-" + name] = raw_deflate(p[name])
    s["raw-fixed-runs"] = raw_deflate(p["runs"], strategy=zlib.Z_FIXED)
    s["raw-stored"] = raw_deflate(p["text"][:500], level=0)
    s["raw-sync"] = raw_deflate(p["text"], sync=True)
    c = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                         zdict=b"the quick brown fox")
    s["zlib-dict"] = c.compress(p["hello"]) + c.flush()
    c = zlib.compressobj(6, zlib.DEFLATED, 9)
    s["zlib-w9"] = c.compress(p["text"]) + c.flush()
    z = zlib.compress(p["text"])
    s["zlib-bad-adler"] = z[:-1] + bytes([z[-1] ^ 1])
    s["zlib-trunc"] = z[: len(z) // 2]
    s["zlib-trail"] = z + b"x"
    s["raw-trail"] = raw_deflate(p["hello"]) + b"xyz"
    out = tool(["pigz", "-c", "-z", "-b", "32"], p["far"])
    if out is not None:
        s["pigz-zlib-far"] = out
    return s


def write(d, seeds):
    os.makedirs(d, exist_ok=True)
    for name, data in sorted(seeds.items()):
        if len(data) <= MAX_SEED:
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: gen-corpus.py OUTDIR\n")
        return 2
    out = sys.argv[1]
    p = payloads()
    gz = gzip_seeds(p)
    gz.update(damaged(gz))
    gz.update(block_seeds(p))
    write(os.path.join(out, "gunzip"), gz)
    write(os.path.join(out, "pgunzip"), gz)
    allz = dict(gz)
    allz.update(zlib_seeds(p))
    write(os.path.join(out, "unzip"), allz)
    for t in ("gunzip", "pgunzip", "unzip"):
        n = len(os.listdir(os.path.join(out, t)))
        print("gen-corpus: %d seeds in %s" % (n, os.path.join(out, t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
