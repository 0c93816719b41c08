#!/usr/bin/env python3
"""make_goldens.py — reference fixtures for the engine, from HF transformers.

Builds small random-init GPTNeoXForCausalLM models (fixed seeds) whose shapes
cover every Pythia head_dim (32/64/80/256) and rotary width (8/16/20/64), one
with the full 50304-row vocab, saves them in HF format (fp32, sharded fp32,
fp16 and bf16 files; the three config.json spellings of the rotary fields;
one file carrying the old non-parameter buffers), and dumps what HF computes:

  tests/data/models/<name>/         config.json + model.safetensors (or shards)
  tests/data/golden/<name>/golden.json   ids, greedy continuation, PPL, margins
  tests/data/golden/<name>/logits.f32    teacher-forced logits [rows x V]
  tests/data/golden/<name>/hidden.f32    [(L+2) x N x C]: embeddings, each
                                         layer's output, final LayerNorm output

Developers run it (needs torch, transformers, safetensors from PyPI); CI only
reads the fixtures. Weights are re-initialised with larger variances than HF's
default (LayerNorm gains and all biases random too), so every parameter
matters to the logits and greedy steps have clear margins.

  python3 ops/golden/make_goldens.py [--tokenizer PATH] [--out tests/data]
"""
import argparse
import copy
import json
import math
import os
import shutil
import struct

import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

N_PROMPT = 24
N_NEW = 64
MIN_MARGIN = 1e-2  # smallest top1-top2 logit gap accepted on the greedy path

# name, C, heads, L, F, V, dtype, seed, extra
SPECS = [
    ("m32-f32-sharded", 64, 2, 2, 256, 512, "f32", 11, {"shard": "200KB"}),
    ("m32-f16", 64, 2, 2, 256, 512, "f16", 11, {}),
    ("m64-f32", 128, 2, 2, 256, 512, "f32", 12, {"spelling": "pythia"}),
    ("m80-bf16", 160, 2, 2, 640, 512, "bf16", 13, {"spelling": "top", "base": 5000.0}),
    ("m256-f16", 256, 1, 1, 512, 256, "f16", 14, {}),
    ("vocab-full-f16", 8, 1, 1, 32, 50304, "f16", 15, {"text_prompt": True, "rows": "ends"}),
    ("seqres-f32", 32, 1, 2, 128, 256, "f32", 16, {"parallel": False, "spelling": "pythia",
                                                   "old_buffers": True}),
]

DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

PROMPT_TEXT = ("The quick brown fox jumps over the lazy dog.\n    def f(x):\n        return x  # done"
               " — naïve café 東京 🙂<|endoftext|>")


def reinit(model, gen):
    for name, p in model.named_parameters():
        with torch.no_grad():
            if "layernorm" in name or "layer_norm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_in" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "lm_head" in name or "embed_out" in name:  # peaked logits: clear greedy margins
                p.copy_(4.0 * torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:  # [out, in] linear weights
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def rewrite_config(path, spelling, base):
    cfg = json.load(open(path))
    rp = cfg.pop("rope_parameters", None) or {}
    pct = rp.get("partial_rotary_factor", 0.25)
    theta = rp.get("rope_theta", base)
    if spelling == "pythia":   # what EleutherAI/pythia-* config.json files say
        cfg["rotary_pct"] = pct
        cfg["rotary_emb_base"] = int(theta) if float(theta).is_integer() else theta
        cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    else:                      # older transformers: top-level names
        cfg["partial_rotary_factor"] = pct
        cfg["rope_theta"] = theta
    json.dump(cfg, open(path, "w"), indent=2, sort_keys=True)


def record_hidden(model):
    """Forward hooks: embeddings, each layer output, final LN output."""
    store = []
    hooks = [model.gpt_neox.embed_in.register_forward_hook(lambda m, i, o: store.append(o[0].clone()))]
    for layer in model.gpt_neox.layers:
        hooks.append(layer.register_forward_hook(
            lambda m, i, o: store.append((o[0] if isinstance(o, tuple) else o)[0].clone())))
    hooks.append(model.gpt_neox.final_layer_norm.register_forward_hook(
        lambda m, i, o: store.append(o[0].clone())))
    return store, hooks


def build(spec, out, tok):
    name, C, nh, L, F, V, dtype, seed, extra = spec
    for attempt in range(20):
        if build_one(spec, seed + 101 * attempt, out, tok):
            return
    raise SystemExit(f"{name}: no seed gave a clear greedy margin")


def build_one(spec, seed, out, tok):
    name, C, nh, L, F, V, dtype, _, extra = spec
    base = extra.get("base", 10000.0)
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=nh,
                        intermediate_size=F, max_position_embeddings=256, layer_norm_eps=1e-5,
                        use_parallel_residual=extra.get("parallel", True), hidden_act="gelu",
                        rope_parameters={"rope_type": "default", "rope_theta": base,
                                         "partial_rotary_factor": 0.25},
                        bos_token_id=0, eos_token_id=0,
                        tie_word_embeddings=False, attn_implementation="eager")
    gen = torch.Generator().manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg).eval()
    reinit(model, gen)
    mdir = os.path.join(out, "models", name)
    shutil.rmtree(mdir, ignore_errors=True)
    # nn.Module.to() is in place and also casts buffers (RoPE inv_freq), so
    # save a 16-bit copy and compute the goldens from the file as a user would:
    # from_pretrained(dtype=float32) upcasts exactly the stored values.

    copy.deepcopy(model).to(DT[dtype]).save_pretrained(mdir, max_shard_size=extra.get("shard", "2GB"))
    for f in ("generation_config.json",):
        if os.path.exists(os.path.join(mdir, f)):
            os.remove(os.path.join(mdir, f))
    if "spelling" in extra:
        rewrite_config(os.path.join(mdir, "config.json"), extra["spelling"], base)
    if extra.get("old_buffers"):
        p = os.path.join(mdir, "model.safetensors")
        sd = load_file(p)
        for i in range(L):
            pre = f"gpt_neox.layers.{i}.attention."
            sd[pre + "bias"] = torch.tril(torch.ones(1, 1, 256, 256, dtype=torch.uint8)).bool()
            sd[pre + "masked_bias"] = torch.tensor(-1e9)
            R = int(C // nh * 0.25)
            sd[pre + "rotary_emb.inv_freq"] = 1.0 / (base ** (torch.arange(0, R, 2).float() / R))
        save_file(sd, p, metadata={"format": "pt"})
    # Compute with a fresh fp32 model (RoPE inv_freq computed in fp32 from the
    # config, as from_pretrained(dtype=float32) does) holding exactly the
    # stored parameters, upcast. Not from_pretrained itself: transformers 5.23
    # ignores top-level partial_rotary_factor/rope_theta in config.json for
    # GPT-NeoX (it honours rotary_pct/rotary_emb_base and rope_parameters).
    saved = {}
    for fn in os.listdir(mdir):
        if fn.endswith(".safetensors"):
            saved.update(load_file(os.path.join(mdir, fn)))
    ref = model
    model = GPTNeoXForCausalLM(cfg).eval()
    sd = {("lm_head.weight" if k == "embed_out.weight" else k): v.float() for k, v in saved.items()
          if not (k.endswith("attention.bias") or k.endswith("masked_bias") or k.endswith("inv_freq"))}
    model.load_state_dict(sd, strict=True)
    assert model.lm_head.weight.data_ptr() != model.gpt_neox.embed_in.weight.data_ptr()
    for k, v in model.state_dict().items():
        assert torch.equal(ref.state_dict()[k].to(DT[dtype]).float(), v), k
    assert len(saved) == len(model.state_dict()) + (3 * L if extra.get("old_buffers") else 0)
    if extra.get("spelling") != "top":   # HF reads the other two spellings back identically
        back = GPTNeoXForCausalLM.from_pretrained(mdir, dtype=torch.float32).config.rope_parameters
        assert back["rope_theta"] == base and back["partial_rotary_factor"] == 0.25, back

    g = torch.Generator().manual_seed(seed + 1000)
    if extra.get("text_prompt") and tok is not None:
        prompt = tok.encode(PROMPT_TEXT).ids[:N_PROMPT]
    else:
        prompt = torch.randint(0, min(V, 50277), (N_PROMPT,), generator=g).tolist()

    with torch.no_grad():
        ids = torch.tensor([prompt])
        gen_ids = model.generate(ids, max_new_tokens=N_NEW, do_sample=False, min_new_tokens=N_NEW,
                                 pad_token_id=0, eos_token_id=None)[0].tolist()
        full = torch.tensor([gen_ids])
        store, hooks = record_hidden(model)
        logits = model(full).logits[0].float()          # [N, V]
        for h in hooks:
            h.remove()
    N = full.shape[1]
    greedy = gen_ids[N_PROMPT:]
    # Teacher-forced argmax must reproduce HF's cached generate, with margin.
    top2 = torch.topk(logits[N_PROMPT - 1:N - 1], 2, dim=-1)
    margin = float((top2.values[:, 0] - top2.values[:, 1]).min())
    if top2.indices[:, 0].tolist() != greedy or margin < MIN_MARGIN:
        print(f"{name}: seed {seed} has a near-tie on the greedy path (margin {margin:.2e}); next seed")
        return False
    lp = torch.log_softmax(logits.double(), dim=-1)
    nll = -lp[torch.arange(N - 1), full[0, 1:]]
    ppl = float(torch.exp(nll.mean()))

    gdir = os.path.join(out, "golden", name)
    os.makedirs(gdir, exist_ok=True)
    rows = list(range(N)) if extra.get("rows") != "ends" else [N_PROMPT - 1, N - 1]
    logits[rows].contiguous().numpy().astype("<f4").tofile(os.path.join(gdir, "logits.f32"))
    hidden = torch.stack(store, 0)                       # [L+2, N, C]
    assert hidden.shape == (L + 2, N, C), hidden.shape
    hidden.numpy().astype("<f4").tofile(os.path.join(gdir, "hidden.f32"))
    meta = {"name": name, "n_layer": L, "n_embd": C, "n_vocab": V, "dtype": dtype,
            "ids": gen_ids, "n_prompt": N_PROMPT, "greedy": greedy, "logit_rows": rows,
            "seed": seed, "ppl": ppl, "nll_mean": float(nll.mean()), "min_greedy_margin": margin,
            "argmax": logits.argmax(-1).tolist(),
            "lse": torch.logsumexp(logits.double(), -1).tolist(),
            "generator": "ops/golden/make_goldens.py", "transformers": __import__("transformers").__version__,
            "torch": torch.__version__}
    json.dump(meta, open(os.path.join(gdir, "golden.json"), "w"))
    # plain-text copies for the shell tests of the CLI (no JSON tool needed)
    open(os.path.join(gdir, "prompt_ids.txt"), "w").write(" ".join(map(str, prompt)) + "\n")
    open(os.path.join(gdir, "greedy_ids.txt"), "w").write(" ".join(map(str, greedy)) + "\n")
    open(os.path.join(gdir, "all_ids.txt"), "w").write(" ".join(map(str, gen_ids)) + "\n")
    print(f"{name:18s} seed={seed} N={N} V={V} ppl={ppl:.4f} min_margin={margin:.4f}")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.environ.get("KV_TOKENIZER", "../shared/data/pythia-tokenizer.json"))
    ap.add_argument("--out", default="tests/data")
    ap.add_argument("--only", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    tok = None
    if os.path.exists(a.tokenizer):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(a.tokenizer)
    for s in SPECS:
        if a.only and s[0] != a.only:
            continue
        build(s, a.out, tok)


if __name__ == "__main__":
    main()
