#!/usr/bin/env python3
"""train_tokenizer.py — the byte-level BPE tokenizer of the tiny kvsweep model.

Why our own tokenizer and not Pythia's: the real GPT-NeoX-20B tokenizer is
50,277 tokens; with it, a model small enough to commit (< 16 MB fp16) would
spend most of its parameters on the two 50k-row embedding matrices. A 4,096
token byte-level BPE trained on the same English keeps the model's weights
in its layers, and it is the same algorithm and file format every Pythia
ships (NFC normalizer, GPT-2 byte-level pre-tokenizer, BPE merges,
<|endoftext|> = 0 and <|padding|> = 1), so kvsweep's tokenizer reads it
through the same code path and HF `tokenizers` is the reference.

Usage: python3 ops/train-tiny/train_tokenizer.py DATA_DIR OUT/tokenizer.json
(DATA_DIR from ops/texts.sh; trains on kjv-ot.txt, devil.txt and the first
4 MB of gcide.txt — never on the held-out kjv-nt.txt).
Needs PyPI tokenizers (tested with 0.23.3). Deterministic for a given input.
"""
import os
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

VOCAB = 4096


def lines(data_dir):
    for name, limit in (("kjv-ot.txt", None), ("devil.txt", None), ("gcide.txt", 4 << 20)):
        n = 0
        with open(os.path.join(data_dir, name), encoding="utf-8") as f:
            for line in f:
                yield line
                n += len(line)
                if limit and n >= limit:
                    break


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: train_tokenizer.py DATA_DIR OUT/tokenizer.json")
    data_dir, out = sys.argv[1], sys.argv[2]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines(data_dir), trainer=trainer)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tok.save(out)
    print(f"train_tokenizer: {tok.get_vocab_size()} tokens -> {out}")


if __name__ == "__main__":
    main()
