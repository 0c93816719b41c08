#!/usr/bin/env python3
"""bench_tokenizer.py — HF `tokenizers` encode speed, single-threaded, on the
same English prose as tests/bench_tokenizer.c (the C side of the comparison).

    python3 ops/bench_tokenizer.py TOKENIZER_JSON [TEXT] [--reps N]
    python3 ops/bench_tokenizer.py --write-prose tests/data/tokenizer/bench_prose.txt

Prints one JSON object per line ("bench": "tokenizer_hf" for Tokenizer.encode
on the whole text as one string — what the C bench does — and
"tokenizer_hf_batch" for encode_batch over its lines, newlines kept), with MB/s, tokens/s and
the FNV-1a 64 of the ids (int32 LE) so the two can be checked for equal output.
Threads: TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1 are set before
the import, so encode_batch runs on one thread too. "cold" is the first encode
by a freshly loaded tokenizer (empty word cache); "MBps" is the median of the
following reps (warm cache), as in the C bench.

--write-prose rebuilds the committed bench text: the prose paragraphs (no
indented code) of Python's pydoc_data.topics, in key order, up to 256 KiB.
"""
import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

DEFAULT_TEXT = "tests/data/tokenizer/bench_prose.txt"


def write_prose(path, limit=256 * 1024):
    import pydoc_data.topics as topics
    out, size = [], 0
    for key in sorted(topics.topics):
        for p in topics.topics[key].split("\n\n"):
            p = p.strip("\n")
            if len(p) < 80 or any(l.startswith("   ") or l.startswith(">>>") for l in p.split("\n")):
                continue
            if size + len(p.encode()) + 2 > limit:
                break
            out.append(p)
            size += len(p.encode()) + 2
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(out) + "\n")
    print("%s: %d paragraphs, %d bytes" % (path, len(out), os.path.getsize(path)))


def fnv_ids(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer", nargs="?")
    ap.add_argument("text", nargs="?", default=DEFAULT_TEXT)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--write-prose")
    a = ap.parse_args()
    if a.write_prose:
        write_prose(a.write_prose)
        return 0
    if not a.tokenizer:
        ap.error("TOKENIZER_JSON is required")
    from tokenizers import Tokenizer
    text = open(a.text, encoding="utf-8").read()
    nbytes = len(text.encode())
    lines = text.splitlines(keepends=True)

    def run(kind, fn):
        tok = Tokenizer.from_file(a.tokenizer)
        t0 = time.perf_counter()
        ids = fn(tok)
        cold = time.perf_counter() - t0
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fn(tok)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(json.dumps({"bench": kind, "text": a.text, "bytes": nbytes, "tokens": len(ids), "reps": a.reps,
                          "threads": 1, "cold_MBps": round(nbytes / cold / 1e6, 2),
                          "MBps": round(nbytes / med / 1e6, 2), "tokens_per_s": round(len(ids) / med),
                          "ids_fnv": fnv_ids(ids)}))
        sys.stdout.flush()

    def whole(tok):
        return tok.encode(text).ids

    def batch(tok):
        return [i for e in tok.encode_batch(lines) for i in e.ids]

    run("tokenizer_hf", whole)
    run("tokenizer_hf_batch", batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
