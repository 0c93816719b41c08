#!/bin/sh
# demo.sh [BUILD] — `make demo`: a real sweep end to end on this machine's
# CPU, with nothing left running afterwards.
#
#   1. starts a private redis-server on a free loopback port, in a temp dir,
#      with AOF on (the production settings of ops/redis.conf);
#   2. writes the evaluation text with ops/texts.sh (King James New
#      Testament, held out from the tiny model's training text);
#   3. writes a RANDOM-weight checkpoint of the pythia-70m shape with
#      `kvrun random-model` (named as random; random weights make every
#      policy look alike — the numbers show the machinery, not the methods);
#   4. submits examples/demo-sweep.json with kvsubmit, runs one CPU kvworker
#      until the sweep drains, and prints the comparison views of
#      results.db with the sqlite3 CLI;
#   5. stops everything it started, by PID.
# DEMO_DIR=path keeps the work directory (results.db, logs) there.
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
tok=ops/train-tiny/tokenizer.json
"$build/kvrun" random-model --shape pythia-70m --dtype f16 --seed 1 --tokenizer "$tok" \
    --out "$work/models/pythia-70m-random"

# --- 4. sweep ----------------------------------------------------------------------
"$build/kvworker" --cpu --models "$work/models" --data "$work/data" --name demo:cpu \
    > "$work/worker.log" 2>&1 &
worker_pid=$!
echo "demo: kvworker pid $worker_pid (log $work/worker.log)"
rc=0
"$build/kvsubmit" examples/demo-sweep.json --db "$work/results.db" || rc=$?
kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null
worker_pid=""

echo
echo "== results.db: every result next to its full-cache baseline (v_vs_full)"
sqlite3 -header -column "$work/results.db" \
    "SELECT model, task, policy, params_json AS params, printf('%.2f', ppl) AS ppl,
            printf('%.3f', ppl_ratio) AS ppl_ratio, printf('%.1f', tokens_per_s) AS tok_s,
            printf('%.2f', speedup) AS speedup, cache_tokens_max AS cache_max
     FROM v_vs_full ORDER BY task, policy, params_json;"
echo
echo "== per-policy summary (v_policy_summary)"
sqlite3 -header -column "$work/results.db" "SELECT * FROM v_policy_summary;"
[ -n "${DEMO_DIR:-}" ] && echo "demo: results kept in $work/results.db"
exit $rc
