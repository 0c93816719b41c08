#!/bin/sh
# gpu-check.sh [OUTDIR] — the first (or any) run of the CUDA backend on a
# machine with a GPU, as one script so a short device session spends its
# time running, not typing. Each step's log goes to OUTDIR (default
# $OUT if set — the device tool's result folder — else build/gpu-check),
# and a summary with every step's exit status ends the output; the script
# goes on after a failed step and exits non-zero if any failed.
#
#   1. build          make -j (CUDA auto-detected; nvcc must be there)
#   2. test-gpu       KV_CUDA_SYNC=1 KV_TEST_VERBOSE=1 make test-gpu: the op
#                     tests against the CPU references, the device forward
#                     pass against the CPU engine (7 golden models), every KV
#                     policy and speculative decoding, device vs CPU
#   3. sanitizer      compute-sanitizer memcheck on test_cuda_ops and
#                     test_forward_gpu, racecheck on test_cuda_ops (skipped
#                     when compute-sanitizer is not installed)
#   4. bench          make bench-gpu with KV_BENCH_SHAPES (default
#                     "410m 2.8b"; set "410m 1b 2.8b" for the full table)
#
# Env: KV_GPU (device, default 0), KV_GPU_CHECK_STEPS (default
# "build test-gpu sanitizer bench"), KV_BENCH_SHAPES, KV_BENCH_CTX,
# KV_BENCH_DECODE.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
out=${1:-${OUT:-build/gpu-check}}
mkdir -p "$out"
steps=${KV_GPU_CHECK_STEPS:-"build test-gpu sanitizer bench"}
jobs=$(nproc 2>/dev/null || echo 4)
summary=""
failed=0

step() {   # step NAME COMMAND...: runs it, log in $out/NAME.log, status in the summary
    name=$1; shift
    t0=$(date +%s)
    echo "== $name: $*"
    "$@" > "$out/$name.log" 2>&1
    rc=$?
    t1=$(date +%s)
    tail -n 25 "$out/$name.log"
    summary="$summary
$name: exit $rc ($((t1 - t0)) s)"
    [ $rc -eq 0 ] || failed=1
}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "(nvidia-smi failed)" >> "$out/nvidia-smi.txt"
head -n 15 "$out/nvidia-smi.txt"
for s in $steps; do
    case $s in
        build) step build make -j"$jobs" all ;;
        test-gpu) step test-gpu env KV_CUDA_SYNC=1 KV_TEST_VERBOSE=1 make test-gpu ;;
        sanitizer)
            cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
            if [ -z "$cs" ]; then
                summary="$summary
sanitizer: SKIP (no compute-sanitizer)"
                continue
            fi
            step memcheck-ops env KV_REQUIRE_GPU=1 "$cs" --tool memcheck --error-exitcode 9 build/tests/test_cuda_ops
            step memcheck-forward env KV_REQUIRE_GPU=1 "$cs" --tool memcheck --error-exitcode 9 build/tests/test_forward_gpu
            step racecheck-ops env KV_REQUIRE_GPU=1 "$cs" --tool racecheck --error-exitcode 9 build/tests/test_cuda_ops
            ;;
        bench) step bench env KV_BENCH_SHAPES="${KV_BENCH_SHAPES:-410m 2.8b}" KV_REQUIRE_GPU=1 make bench-gpu
            [ -f build/bench-gpu.jsonl ] && cp build/bench-gpu.jsonl "$out/" ;;
        *) echo "gpu-check: unknown step '$s'" >&2; failed=1 ;;
    esac
done
echo "== summary (logs in $out)$summary"
exit $failed
