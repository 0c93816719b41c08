#!/usr/bin/env python3
"""make_tiny_golden.py — fidelity fixture for the trained kvtiny model.

The random-init goldens (make_goldens.py) prove the forward pass on every
shape; this one proves it on a trained model, where attention is sharp and
small numeric errors would flip argmaxes. HF transformers computes, in fp32
from exactly the stored fp16 parameters (a fresh model + load_state_dict, as
in make_goldens.py), on the first tokens of tests/data/datasets/kjv-nt-head.txt
(the start of the held-out New Testament, committed):

  - teacher-forced PPL and next-token accuracy over N_PPL tokens (past the
    512-token training context, within max_position_embeddings);
  - the greedy continuation of N_NEW tokens after N_PROMPT tokens of the
    text (the first start, in steps of 40 tokens, whose greedy path has a
    top-1/top-2 margin of at least 1e-2 everywhere).

Writes tests/data/trained/kvtiny/{golden.json,prompt_ids.txt,greedy_ids.txt,ppl.txt}.
Developers run it after training; CI only reads the fixture.

  python3 ops/golden/make_tiny_golden.py [--model ops/train-tiny/kvtiny] [--out tests/data]
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

N_PPL = 1024
N_PROMPT = 32
N_NEW = 48


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ops/train-tiny/kvtiny")
    ap.add_argument("--text", default="tests/data/datasets/kjv-nt-head.txt")
    ap.add_argument("--out", default="tests/data")
    a = ap.parse_args()
    cfg_json = json.load(open(os.path.join(a.model, "config.json")))
    cfg = GPTNeoXConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "dtype",
                                                                       "transformers_version")})
    cfg._attn_implementation = "eager"
    model = GPTNeoXForCausalLM(cfg).eval()
    saved = load_file(os.path.join(a.model, "model.safetensors"))
    sd = {("lm_head.weight" if k == "embed_out.weight" else k): v.float() for k, v in saved.items()}
    model.load_state_dict(sd, strict=True)
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    text = open(a.text, encoding="utf-8").read()
    ids = tok.encode(text).ids
    assert len(ids) > N_PPL, f"{a.text}: only {len(ids)} tokens"
    with torch.no_grad():
        x = torch.tensor([ids[:N_PPL]])
        logits = model(x).logits[0].double()
        lp = torch.log_softmax(logits[:-1], -1)
        tgt = x[0, 1:]
        nll = -lp[torch.arange(N_PPL - 1), tgt]
        acc = float((logits[:-1].argmax(-1) == tgt).double().mean())
        ppl = float(torch.exp(nll.mean()))
        # the first prompt (every 40 tokens into the text) whose greedy path
        # has no near-tie: a 1e-5 logit difference must not flip the test
        for start in range(0, len(ids) - N_PROMPT, 40):
            prompt = ids[start:start + N_PROMPT]
            out = model.generate(torch.tensor([prompt]), max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)[0].tolist()
            full = model(torch.tensor([out])).logits[0]
            greedy = out[N_PROMPT:]
            top2 = torch.topk(full[N_PROMPT - 1:-1], 2, -1)
            assert top2.indices[:, 0].tolist() == greedy
            margin = float((top2.values[:, 0] - top2.values[:, 1]).min())
            if margin >= 1e-2:
                break
    gdir = os.path.join(a.out, "trained", "kvtiny")  # not golden/: test_forward reads every fixture there
    os.makedirs(gdir, exist_ok=True)
    meta = {"model": a.model, "text": a.text, "n_ppl": N_PPL, "ppl": ppl, "nll_sum": float(nll.sum()),
            "accuracy": acc, "n_prompt": N_PROMPT, "prompt_start": start, "greedy": greedy, "min_greedy_margin": margin,
            "generator": "ops/golden/make_tiny_golden.py", "transformers": __import__("transformers").__version__,
            "torch": torch.__version__}
    json.dump(meta, open(os.path.join(gdir, "golden.json"), "w"), indent=1)
    open(os.path.join(gdir, "prompt_ids.txt"), "w").write(" ".join(map(str, prompt)) + "\n")
    open(os.path.join(gdir, "greedy_ids.txt"), "w").write(" ".join(map(str, greedy)) + "\n")
    open(os.path.join(gdir, "ppl.txt"), "w").write(f"{ppl:.9g}\n")
    print(f"kvtiny: ppl {ppl:.6f} over {N_PPL} tokens, accuracy {acc:.4f}, greedy margin {margin:.4f}")
    if margin < 1e-2:
        print("warning: near-tie on the greedy path; pick another prompt")


if __name__ == "__main__":
    main()
