#!/usr/bin/env python3
"""bench_report.py BENCH.jsonl — the summary table of `make bench`: decode
tokens/s of kvsweep vs HF on the same checkpoint (ratio), and the fraction of
the memory-bandwidth bound (bytes of weights read per token / bandwidth,
taking the higher of the measured read and memcpy bandwidths: the stricter bound)."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
bw = next((r for r in rows if r["bench"] == "bandwidth"), None)
hf = {r["model"]: r for r in rows if r["bench"] == "hf_decode"}
if bw:
    print(f"\nmemory bandwidth ({bw['threads']} threads): copy {bw['copy_GBps']:.1f} GB/s, read {bw['read_GBps']:.1f} GB/s")
print(f"{'model':34s} {'kvsweep tok/s':>13s} {'HF tok/s':>9s} {'ratio':>6s} {'bound tok/s':>11s} {'of bound':>8s} {'prefill tok/s':>13s}")
for r in rows:
    if r["bench"] != "decode":
        continue
    h = hf.get(r["model"])
    # the stricter bound: the higher of the two measured bandwidths
    bound = max(bw["read_GBps"], bw["copy_GBps"]) * 1e9 / r["bytes_per_token"] if bw else float("nan")
    print(f"{(r['model'][-28:] + ' ' + r.get('weights', '')):34s} {r['decode_tok_s']:13.2f} "
          f"{(h['decode_tok_s'] if h else float('nan')):9.2f} "
          f"{(r['decode_tok_s'] / h['decode_tok_s'] if h else float('nan')):6.2f} "
          f"{bound:11.2f} {r['decode_tok_s'] / bound:8.0%} {r['prefill_tok_s']:13.1f}")
for r in rows:
    if r["bench"].startswith("tokenizer"):
        print(f"{r['bench']:20s} {json.dumps({k: v for k, v in r.items() if k != 'bench'})}")
