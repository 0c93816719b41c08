#!/bin/sh
# bench.sh BUILD — `make bench`: decode speed of the CPU engine on random
# Pythia-shaped checkpoints (70m, 160m, 410m, 1b), next to the measured memory
# bandwidth and, when torch + transformers are importable, HF transformers on
# the same checkpoint in the same run; then tokenizer speed against HF
# tokenizers. Figures, not pass/fail: see README "Performance".
# Env: KV_THREADS (default 2), KV_BENCH_SHAPES (default "70m 160m 410m 1b"),
#      KV_BENCH_DIR (default BUILD/bench-models), KV_TOKENIZER.
set -eu
build=${1:-build}
threads=${KV_THREADS:-2}
shapes=${KV_BENCH_SHAPES:-"70m 160m 410m 1b"}
dir=${KV_BENCH_DIR:-$build/bench-models}
export KV_THREADS=$threads
mkdir -p "$dir"
have_hf=0
python3 -c "import torch, transformers" 2>/dev/null && have_hf=1
out=$build/bench.jsonl
: > "$out"
"$build/bench_decode" --bandwidth | tee -a "$out"
for s in $shapes; do
    m=$dir/pythia-$s-f16
    [ -f "$m/model.safetensors" ] || "$build/kvrun" random-model --shape "pythia-$s" --dtype f16 --seed 1 --out "$m"
    "$build/bench_decode" "$m" 16 32 | tee -a "$out"
    if [ $have_hf = 1 ]; then
        python3 ops/bench_hf.py "$m" 16 32 2>/dev/null | tee -a "$out"
    fi
done
if [ -x "$build/bench_tokenizer" ] && [ -n "${KV_TOKENIZER:-}" ] && [ -f "${KV_TOKENIZER:-}" ]; then
    "$build/bench_tokenizer" "$KV_TOKENIZER" | tee -a "$out"
    if python3 -c "import tokenizers" 2>/dev/null && [ -f ops/bench_tokenizer.py ]; then
        python3 ops/bench_tokenizer.py "$KV_TOKENIZER" | tee -a "$out"
    fi
fi
python3 ops/bench_report.py "$out" 2>/dev/null || echo "(install python3 for the summary table; raw figures in $out)"
