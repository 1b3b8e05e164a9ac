#!/usr/bin/env python3
# make_seeds.py: writes the checkpoint seeds of fuzz/corpus/checkpoint and the
# hand-made checkpoint regressions from small checkpoints that ./train wrote.
#
# usage (from the repository root, after `make`):
#   printf 'abba\n%.0s' 1 2 3 4 5 6 7 8 > /tmp/tiny.txt
#   ./train --layers 1 --heads 1 --channels 4 --context 2 --batch 1 --steps 1 \
#       --eval-every 1 --eval-batches 1 -i /tmp/tiny.txt -o /tmp/tiny.bin
#   python3 fuzz/make_seeds.py /tmp/tiny.bin [more checkpoints, copied as they are]
#
# Files end in .ckpt, not .bin, which .gitignore leaves out.
#
# It re-encodes the first checkpoint with its own writer of the weights.h format
# and stops if that differs from the file train wrote, so the derived seeds are
# laid out exactly as the loader expects.
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "corpus", "checkpoint")
REGRESS = os.path.join(HERE, "regressions", "checkpoint")


def parse(d):
    cfg = struct.unpack_from("<5I", d, 16)
    n = struct.unpack_from("<I", d, 36)[0]
    secs = []
    for i in range(n):
        e = d[64 + 24 * i: 88 + 24 * i]
        off, size = struct.unpack_from("<QQ", e, 8)
        secs.append((e[:4], d[off: off + size]))
    return cfg, secs


def build(cfg, secs):
    at = 64 + 24 * len(secs)
    table = b""
    body = b""
    for tag, p in secs:
        table += tag + struct.pack("<IQQ", zlib.crc32(p), at, len(p))
        pad = (-len(p)) % 8
        body += p + b"\0" * pad
        at += len(p) + pad
    h = b"GAMECKPT" + struct.pack("<II", 1, 64) + struct.pack("<5I", *cfg)
    h += struct.pack("<IQI", len(secs), at, zlib.crc32(table)) + b"\0" * 8
    return h + struct.pack("<I", zlib.crc32(h)) + table + body


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_seeds.py TINY.bin [MORE.bin ...]")
    tiny = open(sys.argv[1], "rb").read()
    cfg, secs = parse(tiny)
    if build(cfg, secs) != tiny:
        sys.exit("make_seeds.py: the re-encoded checkpoint differs from %s; update "
                 "build() to the current format" % sys.argv[1])
    d = dict(secs)
    vocb, parm = d[b"VOCB"], d[b"PARM"]

    # valid files, then ones each check of the loader or the model builder rejects
    write(SEEDS, "valid_tiny.ckpt", tiny)
    for path in sys.argv[2:]:
        name = os.path.splitext(os.path.basename(path))[0]
        write(SEEDS, "valid_" + name + ".ckpt", open(path, "rb").read())
    write(SEEDS, "minimal_vocb_parm.ckpt", build(cfg, [(b"VOCB", vocb), (b"PARM", parm)]))
    write(SEEDS, "no_sections.ckpt", build(cfg, []))
    write(SEEDS, "empty_section.ckpt",
          build(cfg, [(b"VOCB", vocb), (b"PARM", parm), (b"NOTE", b"")]))
    swapped = vocb[4:8] + vocb[0:4] + vocb[8:]
    write(SEEDS, "vocab_unsorted.ckpt", build(cfg, [(b"VOCB", swapped), (b"PARM", parm)]))
    write(SEEDS, "param_short.ckpt", build(cfg, [(b"VOCB", vocb), (b"PARM", parm[:-4])]))
    cuts = {"trunc_7": 7, "trunc_63": 63, "trunc_64": 64, "trunc_table": 64 + 24 * len(secs),
            "trunc_half": len(tiny) // 2, "trunc_minus8": len(tiny) - 8,
            "trunc_minus1": len(tiny) - 1}
    for name, k in cuts.items():
        write(SEEDS, name + ".ckpt", tiny[:k])

    # a valid config whose parameter count the file does not back: model_init
    # allocates for it before the PARM size is compared (824 GB and 3.2 GB)
    context, vocab = cfg[0], cfg[1]
    write(REGRESS, "param_alloc_824gb.ckpt",
          build((context, vocab, 64, 1, 16384), [(b"VOCB", vocb), (b"PARM", parm)]))
    write(REGRESS, "param_alloc_3gb.ckpt",
          build((context, vocab, 1, 1, 8196), [(b"VOCB", vocb), (b"PARM", parm)]))


if __name__ == "__main__":
    main()
