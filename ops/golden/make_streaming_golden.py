#!/usr/bin/env python3
"""make_streaming_golden.py — the HF transformers golden for StreamingLLM's
position shift (policy `streaming`, pos=shift), issue 4.

StreamingLLM (streaming_llm/pos_shift/modify_gpt_neox.py) keeps keys before
RoPE, keeps [0, sink) and the newest `recent` of them, and at every step
rotates the held keys by their index in the cache and the new query by the
cache length. This script runs HF's own GPTNeoX layers token by token with
exactly that rule: the layer's attention is HF's (GPTNeoXAttention.forward,
eager softmax), the query is rotated by HF's apply_rotary_pos_emb at the
cache index of the new token, and a small cache object stores un-rotated
keys, evicts before each step, and hands the attention the held keys rotated
by cache index with HF's rotary tables. Before writing anything it checks
itself: with a window that never evicts, its per-token logits must equal
HF's ordinary forward (max |Δ| <= 1e-5).

Writes tests/data/streaming/<model>/: ids.txt (the tokens fed), and for each
configuration "s<sink>r<recent>.f32" (n x V float32 logits, row t = after
token t), plus meta.json. Run from the repo root:
    python3 ops/golden/make_streaming_golden.py [--model m64-f32] [--n 64]
Needs torch, transformers, safetensors (pip); CI only reads the fixtures.
"""
import argparse
import json
import os

import numpy as np
import torch
from transformers import GPTNeoXForCausalLM
import transformers.models.gpt_neox.modeling_gpt_neox as neox


class ShiftCache:
    """Per-layer un-rotated keys and values; StartRecentKVCache's eviction."""

    def __init__(self, n_layer, sink, recent, rotary):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.sink, self.recent, self.rotary = sink, recent, rotary

    def held(self):
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def evict(self):
        n = self.held()
        if n <= self.sink + self.recent:
            return
        keep = list(range(self.sink)) + list(range(n - self.recent, n))
        for l in range(len(self.k)):
            self.k[l] = self.k[l][:, :, keep, :]
            self.v[l] = self.v[l][:, :, keep, :]

    def update(self, key, value, layer_idx, *args, **kwargs):
        # key arrives un-rotated (see rotate_query_only); store it, return all held keys rotated by cache index
        k = key if self.k[layer_idx] is None else torch.cat([self.k[layer_idx], key], dim=2)
        v = value if self.v[layer_idx] is None else torch.cat([self.v[layer_idx], value], dim=2)
        self.k[layer_idx], self.v[layer_idx] = k, v
        pos = torch.arange(k.shape[2]).unsqueeze(0)
        cos, sin = self.rotary(v, pos)
        _, k_rot = ORIG_APPLY(k, k, cos, sin)
        return k_rot, v


ORIG_APPLY = neox.apply_rotary_pos_emb


def rotate_query_only(q, k, cos, sin, *args, **kwargs):
    q_rot, _ = ORIG_APPLY(q, q, cos, sin, *args, **kwargs)
    return q_rot, k


def run_shift(model, ids, sink, recent):
    """Logits (n, V) of the StreamingLLM pos-shift rule, one token per step."""
    gx = model.gpt_neox
    cache = ShiftCache(len(gx.layers), sink, recent, gx.rotary_emb)
    rows = []
    neox.apply_rotary_pos_emb = rotate_query_only
    try:
        for tok in ids:
            cache.evict()
            qpos = torch.tensor([[cache.held()]])   # the new token's cache index
            x = gx.embed_in(torch.tensor([[tok]]))
            pe = gx.rotary_emb(x, qpos)
            for layer in gx.layers:
                x = layer(x, attention_mask=None, position_ids=qpos, layer_past=cache, position_embeddings=pe)
                if isinstance(x, tuple):
                    x = x[0]
            rows.append(model.get_output_embeddings()(gx.final_layer_norm(x))[0, -1].detach().numpy().astype(np.float32))
    finally:
        neox.apply_rotary_pos_emb = ORIG_APPLY
    return np.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="m64-f32")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--configs", default="2:12,4:20,0:16", help="sink:recent,...")
    a = ap.parse_args()
    src = os.path.join("tests/data/models", a.model)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM.from_pretrained(src, torch_dtype=torch.float32, attn_implementation="eager").eval()
    V = model.config.vocab_size
    rng = np.random.default_rng(7)
    ids = [int(t) for t in rng.integers(0, V, size=a.n)]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
        self_check = run_shift(model, ids, 0, a.n)   # never evicts: must be HF's ordinary forward
        d = float(np.abs(self_check - ref).max())
        print(f"self-check (no eviction) vs HF forward: max |dlogit| = {d:.3g}")
        assert d <= 1e-5, "the token-by-token loop does not reproduce HF's forward"
        out = os.path.join("tests/data/streaming", a.model)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "ids.txt"), "w") as f:
            f.write(" ".join(map(str, ids)) + "\n")
        meta = {"model": a.model, "n": a.n, "vocab": V, "configs": [],
                "rule": "StreamingLLM pos-shift: evict to [0,sink) + newest recent before each step; "
                        "held keys rotated by cache index, query at the cache length; HF GPTNeoX layers, eager",
                "transformers": __import__("transformers").__version__, "torch": torch.__version__}
        for cfg in a.configs.split(","):
            sink, recent = map(int, cfg.split(":"))
            lg = run_shift(model, ids, sink, recent)
            name = f"s{sink}r{recent}.f32"
            lg.astype("<f4").tofile(os.path.join(out, name))
            diff = float(np.abs(lg - ref).max())
            meta["configs"].append({"sink": sink, "recent": recent, "file": name})
            print(f"sink {sink} recent {recent}: written {name}; differs from the full cache by up to {diff:.3g}")
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
