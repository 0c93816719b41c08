#!/usr/bin/env python3
"""train.py — trains kvtiny, the small Pythia-architecture model kvsweep's
demo and policy results run on (developers run this; CI never does).

Random weights make every KV policy look the same (PPL ~ vocab size), so
the project needs a real trained model that any Debian box can rebuild. This
script trains a GPTNeoXForCausalLM with Pythia's conventions — parallel
residual, rotary on 25% of each head, untied input/output embeddings, erf
GELU, LayerNorm eps 1e-5 — on the pre-1919 English of ops/texts.sh (Old
Testament, Devil's Dictionary, 1 MB of Webster 1913), with the 4,096-token
byte-level BPE of train_tokenizer.py, on the CPU in about an hour.

Training context is 512 tokens; max_position_embeddings is 2048, so a
2048-token evaluation is past the training context — where StreamingLLM's
sinks matter and a plain window or the full cache degrade.

Usage:
  sh ops/texts.sh data
  python3 ops/train-tiny/train.py --data data --out ops/train-tiny/kvtiny
Writes OUT/config.json, OUT/model.safetensors (fp16), OUT/tokenizer.json,
OUT/train.log, OUT/loss.tsv. Deterministic for a given torch build and
thread count (seed 0, fixed steps).
Needs PyPI torch, transformers, tokenizers, safetensors.
"""
import argparse
import math
import os
import shutil
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))


def encode_file(tok, path, limit=None):
    with open(path, encoding="utf-8") as f:
        text = f.read(limit) if limit else f.read()
    ids = []
    # paragraph by paragraph keeps memory low and matches how kvrun reads a document
    for para in text.split("\n\n"):
        if para.strip():
            ids.extend(tok.encode(para + "\n\n").ids)
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="directory written by ops/texts.sh")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "train.log"), "w")

    def say(msg):
        print(msg)
        log.write(msg + "\n")
        log.flush()

    tok_path = os.path.join(HERE, "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    train = []
    for name, limit in (("kjv-ot.txt", None), ("devil.txt", None), ("gcide.txt", 1 << 20)):
        ids = encode_file(tok, os.path.join(a.data, name), limit)
        say(f"data {name}: {len(ids)} tokens")
        train.extend(ids)
        train.append(0)  # <|endoftext|> between documents
    held = encode_file(tok, os.path.join(a.data, "kjv-nt.txt"))
    say(f"held-out kjv-nt.txt: {len(held)} tokens (never trained on)")
    train = torch.tensor(train, dtype=torch.long)
    held = torch.tensor(held, dtype=torch.long)

    cfg = GPTNeoXConfig(
        vocab_size=4096, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False, hidden_act="gelu",
        layer_norm_eps=1e-5, initializer_range=0.02, bos_token_id=0, eos_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )
    model = GPTNeoXForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params} parameters, d=256, 6 layers, 4 heads (head_dim 64, rotary 16), ctx {a.ctx}, "
        f"steps {a.steps} x batch {a.batch}, lr {a.lr}, seed {a.seed}, threads {a.threads}, torch {torch.__version__}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    warm = 100

    def lr_at(s):
        if s < warm:
            return a.lr * (s + 1) / warm
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm))))

    gen = torch.Generator().manual_seed(a.seed)

    @torch.no_grad()
    def held_ppl(n_tokens):
        model.eval()
        nll, n = 0.0, 0
        for s0 in range(0, min(n_tokens, len(held) - a.ctx - 1), a.ctx):
            x = held[s0:s0 + a.ctx + 1].unsqueeze(0)
            out = model(input_ids=x[:, :-1], labels=x[:, :-1])
            # HF shifts labels inside: loss over ctx-1 predictions
            nll += out.loss.item() * (a.ctx - 1)
            n += a.ctx - 1
        model.train()
        return math.exp(nll / n)

    lossf = open(os.path.join(a.out, "loss.tsv"), "w")
    lossf.write("step\ttrain_loss\tlr\n")
    t0 = time.time()
    model.train()
    for step in range(a.steps):
        starts = torch.randint(0, len(train) - a.ctx - 1, (a.batch,), generator=gen)
        x = torch.stack([train[s:s + a.ctx] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lossf.write(f"{step}\t{loss.item():.5f}\t{lr_at(step):.6g}\n")
        if step % 50 == 0 or step == a.steps - 1:
            lossf.flush()
            say(f"step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {time.time() - t0:7.0f} s")
        if step and step % 500 == 0:
            say(f"step {step:5d}  held-out PPL (16k tokens, ctx {a.ctx}) {held_ppl(16384):.3f}")
    final = held_ppl(65536)
    say(f"final held-out PPL (first 64k tokens of kjv-nt, windows of {a.ctx}): {final:.3f}")
    say(f"training time {time.time() - t0:.0f} s")

    model = model.half()
    model.save_pretrained(a.out, safe_serialization=True)
    shutil.copy(tok_path, os.path.join(a.out, "tokenizer.json"))
    for f in ("generation_config.json",):
        p = os.path.join(a.out, f)
        if os.path.exists(p):
            os.remove(p)
    size = os.path.getsize(os.path.join(a.out, "model.safetensors"))
    say(f"wrote {a.out}: model.safetensors {size} bytes (fp16)")
    if size >= 16 << 20:
        sys.exit("model.safetensors is over 16 MB")


if __name__ == "__main__":
    main()
