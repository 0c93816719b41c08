#!/bin/sh
# demo.sh [BUILD] — `make demo`: a real sweep end to end on this machine's
# CPU, with nothing left running afterwards.
#
#   1. starts a private redis-server on a free loopback port, in a temp dir,
#      with AOF on (the production settings of ops/redis.conf);
#   2. writes the evaluation text with ops/texts.sh (King James New
#      Testament, held out from the tiny model's training text);
#   3. copies the trained tiny model ops/train-tiny/kvtiny (Pythia
#      architecture, 6.8 M parameters, trained on the Old Testament and
#      other pre-1919 English with a 512-token context) into the models root;
#   4. submits examples/demo-sweep.json with kvsubmit (2048 tokens of the New
#      Testament under ten KV policies: PPL streaming and with a one-call
#      prompt, and decode speed), runs one CPU kvworker until the sweep
#      drains, and prints the comparison views of results.db with sqlite3;
#   5. stops everything it started, by PID.
# DEMO_DIR=path keeps the work directory (results.db, logs) there;
# DEMO_SWEEP=file submits another sweep of the same model and text (e.g.
# examples/policies-sweep.json: every policy, PPL and passkey).
set -eu
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=${DEMO_DIR:-$(mktemp -d /tmp/kvsweep-demo.XXXXXX)}
mkdir -p "$work/redis" "$work/models" "$work/data"
redis_pid=""; worker_pid=""
cleanup() {
    [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    [ -z "${DEMO_DIR:-}" ] && rm -rf "$work"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. redis on a free loopback port (retry on a lost race) ------------------
tries=0
while :; do
    port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 ))
    if ! redis-cli -p "$port" ping > /dev/null 2>&1; then
        redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis" --appendonly yes \
            --appendfsync always --save "" --maxmemory-policy noeviction --logfile "$work/redis/log" \
            --daemonize no &
        redis_pid=$!
        i=0
        while [ $i -lt 100 ] && ! redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.05; i=$((i + 1))
        done
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
        kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; redis_pid=""
    fi
    tries=$((tries + 1))
    [ $tries -gt 20 ] && { echo "demo: could not start redis-server" >&2; exit 1; }
done
export KV_REDIS_URL="redis://127.0.0.1:$port"
echo "demo: redis-server pid $redis_pid on 127.0.0.1:$port (AOF on, private dir)"

# --- 2. text -------------------------------------------------------------------
sh ops/texts.sh "$work/texts" > /dev/null
cp "$work/texts/kjv-nt.txt" "$work/data/kjv-nt.txt"
echo "demo: dataset kjv-nt.txt ($(wc -c < "$work/data/kjv-nt.txt") bytes, King James New Testament)"

# --- 3. model --------------------------------------------------------------------
# copied, not linked: kvworker refuses symlinks that leave its --models root
cp -r ops/train-tiny/kvtiny "$work/models/kvtiny"
echo "demo: model kvtiny (trained tiny Pythia-architecture model, ops/train-tiny/kvtiny/README.md)"

# --- 4. sweep ----------------------------------------------------------------------
"$build/kvworker" --cpu --models "$work/models" --data "$work/data" --name demo:cpu \
    > "$work/worker.log" 2>&1 &
worker_pid=$!
echo "demo: kvworker pid $worker_pid (log $work/worker.log)"
rc=0
sweep=${DEMO_SWEEP:-examples/demo-sweep.json}
sweep_name=$(sed -n 's/^ *"sweep": *"\([^"]*\)".*/\1/p' "$sweep" | head -n 1)
"$build/kvsubmit" "$sweep" --db "$work/results.db" || rc=$?
kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
worker_pid=""

echo
echo "== PPL over 2048 held-out tokens (4x the training context), relative to the full cache (v_vs_full)"
sqlite3 -header -column "$work/results.db" \
    "SELECT policy, coalesce(params_label, '') AS params,
            CASE WHEN json_extract(task_params_json, '$.prefill') IS NULL THEN 'streamed' ELSE 'prompt 1024' END AS feed,
            printf('%.2f', ppl) AS ppl, printf('%.3f', ppl_ratio) AS vs_full, printf('%.3f', accuracy) AS acc,
            printf('%.0f', cache_tokens_mean) AS cache_mean, printf('%.2f', kv_bytes_ratio) AS kv_bytes_x,
            printf('%.0f', tokens_per_s) AS tok_s
     FROM v_vs_full WHERE task = 'ppl' ORDER BY feed DESC, ppl_ratio;"
echo
echo "== decode speed after a 1024-token prompt (TPOT and tokens/s relative to full)"
sqlite3 -header -column "$work/results.db" \
    "SELECT policy, coalesce(params_label, '') AS params, printf('%.2f', tpot_ms) AS tpot_ms,
            printf('%.2f', speedup) AS speedup, cache_tokens_max AS cache_max
     FROM v_vs_full WHERE task = 'speed' ORDER BY speedup DESC;"
if [ "$(sqlite3 "$work/results.db" "SELECT count(*) FROM v_results WHERE task = 'passkey'")" != 0 ]; then
    echo
    echo "== passkey retrieval (accuracy over the trials, per needle depth)"
    sqlite3 -header -column "$work/results.db" \
        "SELECT policy, coalesce(params_label, '') AS params, json_extract(task_params_json, '$.depth') AS depth,
                printf('%.2f', accuracy) AS accuracy, printf('%.0f', cache_tokens_mean) AS cache_mean
         FROM v_results WHERE task = 'passkey' ORDER BY policy, params, depth;"
fi
if command -v gnuplot > /dev/null 2>&1; then
    sh ops/plot.sh "$work/results.db" "$work/policies.png" "$sweep_name" > /dev/null && echo "demo: plot $work/policies.png"
fi
[ -n "${DEMO_DIR:-}" ] && echo "demo: results kept in $work/results.db"
exit $rc
