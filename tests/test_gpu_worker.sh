#!/bin/sh
# test_gpu_worker.sh BUILD — `kvworker --gpu 0` end to end through a private
# redis-server, with the CUDA backend played by the mock library
# (build/tests/libkvcuda_mock.so: the CPU ops behind the CUDA table, loaded
# by the real loader through KV_CUDA_LIB). The same grid — ppl, speed and
# spec tasks under the full cache, streaming and h2o (device mode), knorm
# and every spec job (offload mode) — runs once on a `--cpu` worker and once on a `--gpu 0` worker, as
# two sweeps; every metric that does not measure time must be equal
# (ppl, nll, tokens, evictions, cache sizes, spec acceptance), the GPU rows
# name the worker <host>:gpu0 and say which mode ran (extras.backend).
# Then the failure paths: a worker whose evaluation child cannot open the
# device (KV_MOCK_DEVICES=0) exits 6 and hands its job back untouched, so a
# --cpu worker completes the sweep with no failed row; --gpu without any
# backend library exits 2. A CUDA=0 build (nothing can be loaded) prints
# SKIP for the device part. Prints "gpu_worker: N passed, N failed".
build=${1:-build}
. tests/lib/redis.sh
need_tools gpu_worker
KVW=$build/kvworker
KVS=$build/kvsubmit
MOCK=$(cd "$build/tests" 2>/dev/null && pwd)/libkvcuda_mock.so
if [ ! -x "$KVW" ] || [ ! -x "$KVS" ]; then echo "gpu_worker: $KVW or $KVS missing (build first)"; exit 1; fi
if [ ! -f "$MOCK" ]; then echo "gpu_worker: $MOCK missing (build first)"; exit 1; fi

# --gpu without a loadable backend is a configuration error (exit 2)
KV_CUDA_LIB=/nonexistent/libkvcuda.so "$KVW" --gpu 0 --redis redis://127.0.0.1:1 --models . --data . \
    > "$T/nolib.log" 2>&1
check "--gpu 0 without a backend library exits 2" "$?" 2
if grep -q "built without CUDA" "$T/nolib.log"; then
    echo "SKIP gpu_worker (device part): this build has no CUDA backend (CUDA=0)"
    summary gpu_worker; exit $?
fi

redis_start --appendonly no || { bad "redis-server starts"; summary gpu_worker; exit 1; }
URL="redis://127.0.0.1:$PORT"
mkdir -p "$T/models" "$T/data"
cp -r tests/data/models/m64-f32 "$T/models/tgt"
cp -r tests/data/models/m32-f16 "$T/models/drf"
i=0; : > "$T/data/hello.txt"
while [ $i -lt 20 ]; do printf "hello world abc he's 12 hello world\n" >> "$T/data/hello.txt"; i=$((i + 1)); done

sweep() {   # sweep NAME -> $T/NAME.json
    cat > "$T/$1.json" <<JSON
{"sweep": "$1", "models": ["tgt"],
 "datasets": [{"name": "hello.txt", "doc": 0, "offset": 0, "tokens": 60}],
 "tasks": [{"task": "ppl"}, {"task": "ppl", "prefill": 20}, {"task": "speed", "prefill": 24, "decode": 12},
           {"task": "spec", "prefill": 24, "max_new": 24}],
 "policies": [{"policy": "full"}, {"policy": "streaming", "sink": 2, "recent": 12},
              {"policy": "h2o", "sink": 2, "heavy": 6, "recent": 10}, {"policy": "knorm", "keep_ratio": 0.5, "prune_after": 16}],
 "spec": {"draft": ["tgt"], "gamma": [3], "draft_policy": ["window:recent=10"]},
 "seeds": [0], "repeats": 1}
JSON
}
work() {   # work LOG [kvworker flags...]: one worker draining the queue
    log=$1; shift
    "$KVW" --threads 1 --redis "$URL" --models "$T/models" --data "$T/data" \
        --tokenizer tests/data/tokenizer/small.json --once "$@" > "$log" 2>&1
}
q() { sqlite3 "$T/r.db" "$1"; }

sweep gwcpu; sweep gwgpu
"$KVS" "$T/gwcpu.json" --db "$T/r.db" --redis "$URL" --detach --quiet > "$T/submit1.log" 2>&1
check "kvsubmit cpu sweep" "$?" 0
work "$T/cpu.log" --cpu --name gw:cpu
check "kvworker --cpu exit" "$?" 0
"$KVS" "$T/gwgpu.json" --db "$T/r.db" --redis "$URL" --detach --quiet > "$T/submit2.log" 2>&1
check "kvsubmit gpu sweep" "$?" 0
KV_CUDA_LIB=$MOCK work "$T/gpu.log" --gpu 0
check "kvworker --gpu 0 (mock) exit" "$?" 0
for s in gwcpu gwgpu; do
    "$KVS" --collect $s --db "$T/r.db" --redis "$URL" --timeout 30 --quiet > "$T/collect-$s.log" 2>&1
    check "collect $s" "$?" 0
done
n=$(q "SELECT count(*) FROM v_results WHERE sweep='gwcpu'")
check "cpu rows" "$n" 16
check "gpu rows" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwgpu'")" 16
check "no failures" "$(q "SELECT count(*) FROM v_failures")" 0
check "gpu worker named <host>:gpu0" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwgpu' AND worker LIKE '%:gpu0'")" 16
check "device mode for full, streaming, h2o" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwgpu' AND task IN ('ppl','speed')
    AND json_extract(extras,'$.backend')='device'")" 9
check "offload mode for knorm and spec" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwgpu'
    AND (policy='knorm' OR task='spec') AND json_extract(extras,'$.backend')='offload'")" 7
check "cpu rows say cpu" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwcpu' AND json_extract(extras,'$.backend')='cpu'")" 16
# every metric that is not a time: equal between the CPU and the GPU run
same=$(q "SELECT count(*) FROM v_results c JOIN v_results g ON g.sweep='gwgpu' AND c.sweep='gwcpu'
    AND g.task=c.task AND g.policy=c.policy AND g.task_params_json IS c.task_params_json
    WHERE g.ppl IS c.ppl AND g.nll_sum IS c.nll_sum AND g.accuracy IS c.accuracy AND g.tokens IS c.tokens
    AND g.evictions IS c.evictions AND g.cache_tokens_mean IS c.cache_tokens_mean
    AND g.cache_tokens_max IS c.cache_tokens_max AND g.kv_bytes IS c.kv_bytes
    AND g.spec_drafted IS c.spec_drafted AND g.spec_accepted IS c.spec_accepted")
check "cpu == gpu (mock) on every non-time metric" "$same" 16
check "policies evicted" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwgpu' AND policy<>'full' AND evictions > 0")" 12
q "SELECT '    ' || c.task || ' ' || c.policy || ': cpu ppl ' || ifnull(round(c.ppl, 6), '-') || ' gpu ppl '
   || ifnull(round(g.ppl, 6), '-') || ', evictions ' || ifnull(g.evictions, '-') || ', backend '
   || ifnull(json_extract(g.extras,'$.backend'), '-')
   FROM v_results c JOIN v_results g ON g.sweep='gwgpu' AND c.sweep='gwcpu' AND g.task=c.task AND g.policy=c.policy
   AND g.task_params_json IS c.task_params_json ORDER BY 1"

# an evaluation that cannot open the device: exit 6, the job handed back, a CPU worker finishes it
sweep gwnodev
"$KVS" "$T/gwnodev.json" --db "$T/r.db" --redis "$URL" --detach --quiet > "$T/submit3.log" 2>&1
KV_MOCK_DEVICES=0 KV_CUDA_LIB=$MOCK work "$T/nodev.log" --gpu 0 --name gw:gpu0
check "kvworker --gpu 0 with no device exits 6" "$?" 6
grep -q "could not open --gpu 0" "$T/nodev.log" && grep -q "no CUDA device available" "$T/nodev.log" &&
    ok "the log says why" || bad "no-device log: $(tail -n 3 "$T/nodev.log")"
work "$T/cpu2.log" --cpu --name gw:cpu2
check "cpu worker after it exit" "$?" 0
"$KVS" --collect gwnodev --db "$T/r.db" --redis "$URL" --timeout 30 --quiet > "$T/collect3.log" 2>&1
check "collect gwnodev" "$?" 0
check "every job of the sweep done once" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwnodev'")" 16
check "none failed" "$(q "SELECT count(*) FROM v_failures")" 0
check "none ran on the broken worker" "$(q "SELECT count(*) FROM v_results WHERE sweep='gwnodev' AND worker='gw:gpu0'")" 0
[ "$fail" -eq 0 ] || { echo "--- gpu worker log"; tail -n 20 "$T/gpu.log"; echo "--- nodev log"; tail -n 10 "$T/nodev.log"; }
summary gpu_worker
