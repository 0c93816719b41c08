#!/usr/bin/env python3
"""bench_hf.py MODEL_DIR [n_prompt] [n_decode] — HF transformers decode speed
on the same checkpoint kvsweep's bench reads, for the ratio in `make bench`.

Same protocol as tests/bench_decode.c: fp32 weights (the checkpoint is
upcast, as the C CPU backend does), eager attention, batch 1, a prompt of
n_prompt ids, then n_decode greedy steps through the KV cache, timing each
step's forward call only; median of three repetitions. Threads: KV_THREADS (default 2). Prints one JSON line.
"""
import json
import os
import sys
import time

import torch
from transformers import AutoConfig, GPTNeoXForCausalLM


def main():
    path = sys.argv[1]
    n_prompt = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    n_dec = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    threads = int(os.environ.get("KV_THREADS", "2"))
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cfg = AutoConfig.from_pretrained(path)
    model = GPTNeoXForCausalLM.from_pretrained(path, config=cfg, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    load_s = time.perf_counter() - t0
    ids = torch.tensor([[(i * 7919) % 50000 for i in range(n_prompt)]])
    pre, dec = [], []
    with torch.inference_mode():
        for _ in range(3):   # median of three, fresh cache each (as tests/bench_decode.c)
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            pre.append(time.perf_counter() - t0)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            tdec = 0.0
            for _ in range(n_dec):
                a = time.perf_counter()
                out = model(nxt, past_key_values=past, use_cache=True)
                tdec += time.perf_counter() - a
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
            dec.append(tdec)
    t_pre, tdec = sorted(pre)[1], sorted(dec)[1]
    print(json.dumps({"bench": "hf_decode", "model": path, "threads": threads, "load_s": round(load_s, 2),
                      "reps": 3, "prefill_tok_s": n_prompt / t_pre, "tpot_ms": tdec / n_dec * 1e3,
                      "decode_tok_s": n_dec / tdec, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
