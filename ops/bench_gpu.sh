#!/bin/sh
# bench_gpu.sh BUILD — `make bench-gpu`: decode TPOT / tokens/s at batch 1 and
# prefill tokens/s of the CUDA backend on random Pythia-shaped F16 checkpoints
# (410m, 1b, 2.8b), full cache and streaming (sink 4 + recent 508) at 512,
# 2048 and 4096 tokens of context, next to the bound bytes-read-per-token /
# measured device bandwidth (tests/bench_gpu.c). Figures, not pass/fail: see
# README "Measured". Without a usable device: "SKIP bench_gpu: <reason>",
# exit 0, and no checkpoint is written (KV_REQUIRE_GPU=1: exit 1).
# Writes BUILD/bench-gpu.jsonl; the per-point table goes to stderr as it runs,
# a summary follows.
# Env: KV_GPU (device index, default 0), KV_BENCH_SHAPES (default
#      "410m 1b 2.8b"), KV_BENCH_DIR (default BUILD/bench-models, shared with
#      `make bench`), KV_BENCH_CTX (default 512,2048,4096), KV_BENCH_DECODE
#      (timed steps per point, default 64), KV_BENCH_POLICIES (default
#      full,streaming:sink=4,recent=508), KV_THREADS (host threads, default
#      all cores), KV_REQUIRE_GPU.
set -eu
build=${1:-build}
shapes=${KV_BENCH_SHAPES:-"410m 1b 2.8b"}
dir=${KV_BENCH_DIR:-$build/bench-models}
gpu=${KV_GPU:-0}
out=$build/bench-gpu.jsonl
bench="$build/bench_gpu --gpu $gpu --ctx ${KV_BENCH_CTX:-512,2048,4096} --decode ${KV_BENCH_DECODE:-64}"

# Probe first (device + bandwidth only): no device, no checkpoints written.
probe=$("$build/bench_gpu" --gpu "$gpu") || { echo "$probe"; exit 1; }
case $probe in
    SKIP*) echo "$probe"; exit 0 ;;
esac

# Missing checkpoints are written side by side (each kvrun uses every core;
# the 2.8b one is 5.6 GB), into DIR.partial first so an interrupted run
# leaves nothing that looks complete.
mkdir -p "$dir"
pids="" models=""
t0=$(date +%s)
for s in $shapes; do
    m=$dir/pythia-$s-f16
    models="$models $m"
    [ -f "$m/model.safetensors" ] && continue
    rm -rf "$m.partial"
    ( "$build/kvrun" random-model --shape "pythia-$s" --dtype f16 --seed 1 --out "$m.partial" && mv "$m.partial" "$m" ) &
    pids="$pids $!"
done
for p in $pids; do wait "$p" || { echo "bench_gpu.sh: random-model failed" >&2; exit 1; }; done
[ -n "$pids" ] && echo "bench_gpu.sh: checkpoints written in $(( $(date +%s) - t0 )) s" >&2

rc=0
# shellcheck disable=SC2086  # $bench and $models are word lists on purpose
$bench --policies "${KV_BENCH_POLICIES:-full,streaming:sink=4,recent=508}" $models > "$out" || rc=$?
python3 - "$out" <<'EOF' || echo "(install python3 for the summary table; raw figures in $out)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bw = next((r for r in rows if r["bench"] == "gpu_bandwidth"), None)
if bw:
    print(f"\n{bw['device']}: device-to-device copy {bw['GBps']:.1f} GB/s (read + write)")
pts = [r for r in rows if r["bench"] == "gpu_decode"]
print(f"{'shape':12s} {'policy':10s} {'mode':8s} {'ctx':>5s} {'prefill tok/s':>13s} {'TPOT ms':>8s} {'p50':>8s} "
      f"{'tok/s':>8s} {'bound ms':>8s} {'ratio':>6s}  graph")
for r in pts:
    pol = r["policy"].split(":")[0]
    if "error" in r:
        print(f"{r['shape']:12s} {pol:10s} {'':8s} {r['ctx']:5d}  ERROR: {r['error']}")
        continue
    print(f"{r['shape']:12s} {pol:10s} {r['mode']:8s} {r['ctx']:5d} {r['prefill_tok_s']:13.0f} "
          f"{r['tpot_ms_mean']:8.3f} {r['tpot_ms_p50']:8.3f} {r['tok_s']:8.1f} {r['bound_ms']:8.3f} "
          f"{r['ratio']:6.2f}  {r['graph']}")
for r in pts:
    if r["shape"] == "pythia-2.8b" and r["policy"] == "full" and "error" not in r:
        v = "met" if r["ratio"] <= 1.3 else "NOT met"
        print(f"target: 2.8b decode <= 1.3x bound at ctx {r['ctx']}: {r['ratio']:.2f}x ({v})")
print(f"raw figures: {sys.argv[1]}")
EOF
exit $rc
