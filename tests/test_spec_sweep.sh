#!/bin/sh
# test_spec_sweep.sh BUILD — the sweep task `spec` end to end: kvsubmit puts
# a sweep with a spec block into a private redis-server, one real kvworker
# (no --fake-eval) runs the speculative-decoding jobs on the golden fixture
# models (m64-f32 as target "tgt", m32-f16 as draft "drf"; both have a
# 512-token vocabulary, and tests/data/tokenizer/small.json gives ids < 34),
# and the collector writes results.db. Checks: every job has a result row
# with the spec columns filled (spec_drafted, spec_accepted,
# spec_acceptance_rate, spec_mean_accepted_len, spec_target_passes,
# spec_speedup), with a target policy (streaming) and a draft policy
# (draft_policy "window:recent=12") as well as the full cache, acceptance 1
# when the draft is the target, evictions > 0 under streaming, no failed
# jobs. Prints "spec_sweep: N passed, N failed"; exits non-zero on failure,
# SKIP (exit 0) without redis-server/redis-cli/sqlite3.
build=${1:-build}
. tests/lib/redis.sh
need_tools spec_sweep
KVW=$build/kvworker
KVS=$build/kvsubmit
if [ ! -x "$KVW" ] || [ ! -x "$KVS" ]; then echo "spec_sweep: $KVW or $KVS missing (build first)"; exit 1; fi

redis_start --appendonly no || { bad "redis-server starts"; summary spec_sweep; exit 1; }
URL="redis://127.0.0.1:$PORT"

mkdir -p "$T/models" "$T/data"
cp -r tests/data/models/m64-f32 "$T/models/tgt"
cp -r tests/data/models/m32-f16 "$T/models/drf"
i=0; : > "$T/data/hello.txt"
while [ $i -lt 20 ]; do printf "hello world abc he's 12 hello world\n" >> "$T/data/hello.txt"; i=$((i + 1)); done

cat > "$T/sweep.json" <<JSON
{"sweep": "specsys", "models": ["tgt"],
 "datasets": [{"name": "hello.txt", "doc": 0, "offset": 0, "tokens": 24}],
 "tasks": [{"task": "spec", "max_new": 40}],
 "policies": [{"policy": "full"}, {"policy": "streaming", "sink": 2, "recent": 12}],
 "spec": {"draft": ["drf", "tgt"], "gamma": [2, 4], "schedule": "aimd", "draft_policy": ["full", "window:recent=12"]},
 "seeds": [0], "repeats": 1}
JSON
"$KVS" "$T/sweep.json" --db "$T/r.db" --redis "$URL" --detach --quiet > "$T/submit.log" 2>&1
check "kvsubmit --detach exit" "$?" 0
"$KVW" --cpu --threads 1 --redis "$URL" --models "$T/models" --data "$T/data" \
    --tokenizer tests/data/tokenizer/small.json --name spec:cpu --once > "$T/worker.log" 2>&1
check "kvworker --once exit" "$?" 0
"$KVS" --collect specsys --db "$T/r.db" --redis "$URL" --timeout 30 --quiet > "$T/collect.log" 2>&1
check "collector exit" "$?" 0

q() { sqlite3 "$T/r.db" "$1"; }
check "results rows" "$(q "SELECT count(*) FROM v_results WHERE sweep='specsys'")" 16
check "no failures" "$(q "SELECT count(*) FROM v_failures")" 0
check "spec columns filled" "$(q "SELECT count(*) FROM v_results WHERE sweep='specsys' AND task='spec'
    AND spec_drafted > 0 AND spec_accepted >= 0 AND spec_acceptance_rate BETWEEN 0 AND 1
    AND spec_mean_accepted_len >= 1 AND spec_target_passes > 0 AND spec_speedup > 0 AND tokens = 40")" 16
check "draft == target accepts everything" "$(q "SELECT count(*) FROM v_results WHERE sweep='specsys'
    AND json_extract(spec_json, '$.draft') = 'tgt' AND json_extract(spec_json, '$.draft_policy') = 'full'
    AND policy = 'full' AND spec_accepted = spec_drafted AND spec_acceptance_rate = 1.0")" 2
check "streaming target evicts" "$(q "SELECT count(*) FROM v_results WHERE sweep='specsys'
    AND policy = 'streaming' AND evictions > 0 AND cache_tokens_max <= 24")" 8
check "draft policy reported" "$(q "SELECT count(*) FROM v_results WHERE sweep='specsys'
    AND json_extract(extras, '$.draft_policy') LIKE 'window:recent=12%'")" 8
check "streaming target, draft == target, full draft accepts everything" "$(q "SELECT count(*) FROM v_results
    WHERE sweep='specsys' AND json_extract(spec_json, '$.draft') = 'tgt' AND policy = 'streaming'
    AND json_extract(spec_json, '$.draft_policy') = 'full' AND spec_acceptance_rate < 1")" 2
echo "  acceptance by draft, policy, gamma:"
q "SELECT '    ' || json_extract(spec_json,'$.draft') || ' (' || json_extract(spec_json,'$.draft_policy') || ') '
   || policy || ' g=' || json_extract(spec_json,'$.gamma')
   || ': acc ' || printf('%.3f', spec_acceptance_rate) || ', len ' || printf('%.2f', spec_mean_accepted_len)
   || ', passes ' || spec_target_passes || ', speedup ' || printf('%.2f', spec_speedup)
   || ', evictions ' || evictions || ', cache max ' || cache_tokens_max
   FROM v_results WHERE sweep='specsys' ORDER BY 1"
[ "$fail" -eq 0 ] || { echo "--- worker log"; tail -n 20 "$T/worker.log"; }
summary spec_sweep
