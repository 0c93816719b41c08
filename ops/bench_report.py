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
if any(r["bench"] == "decode" for r in rows):
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
# `make bench-policy` (tests/bench_policy.c): decode time per policy and context, then the targets
pol = [r for r in rows if r["bench"] == "policy_decode"]
if pol:
    print(f"\n{'policy':10s} {'context':>7s} {'cached':>6s} {'tpot ms (median)':>16s} {'min':>8s} {'evict/step':>10s}")
    for r in pol:
        print(f"{r['policy']:10s} {r['context']:7d} {r['cached']:6d} {r['tpot_ms']:16.3f} {r['tpot_ms_min']:8.3f} "
              f"{r['evictions_per_step']:10.1f}")
for r in rows:
    if r["bench"] != "policy_summary":
        continue
    lo, hi = r["context_lo"], r["context_hi"]
    def verdict(v, t):
        return "met" if v <= t else "NOT met"
    print(f"from the {r['from']}s: full {hi}/{lo} {r['full_growth']:.2f}x; "
          f"streaming {hi}/{lo} {r['streaming_flat']:.2f}x (<= 1.10: {verdict(r['streaming_flat'], 1.10)}); "
          f"overhead streaming {r['streaming_overhead']:+.1%} (<= 5%: {verdict(r['streaming_overhead'], 0.05)}), "
          f"h2o {r['h2o_overhead']:+.1%} (<= 15%: {verdict(r['h2o_overhead'], 0.15)})")
