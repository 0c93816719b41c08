#!/bin/sh
# bench_policy.sh BUILD — `make bench-policy`: per-token decode time of the
# bare engine (full cache), streaming (sink 4 + recent 508) and h2o (heavy
# 256 + recent 256) at several contexts on a random pythia-70m-shaped F16
# checkpoint, and the derived flatness / eviction-overhead figures against
# issue 4's targets. Figures, not pass/fail: see README "Measured".
# Env: KV_THREADS (default 2), KV_BENCH_DIR (default BUILD/bench-models),
#      KV_POLICY_STEPS (decode steps per round, default 32),
#      KV_POLICY_CONTEXTS (default 512,2048,4096).
set -eu
build=${1:-build}
export KV_THREADS=${KV_THREADS:-2}
dir=${KV_BENCH_DIR:-$build/bench-models}
m=$dir/pythia-70m-f16
mkdir -p "$dir"
[ -f "$m/model.safetensors" ] || "$build/kvrun" random-model --shape pythia-70m --dtype f16 --seed 1 --out "$m"
out=$build/bench-policy.jsonl
"$build/bench_policy" "$m" "${KV_POLICY_STEPS:-32}" "${KV_POLICY_CONTEXTS:-512,2048,4096}" | tee "$out"
python3 ops/bench_report.py "$out" 2>/dev/null || echo "(install python3 for the summary table; raw figures in $out)"
