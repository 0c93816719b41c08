#!/bin/sh
# test_submit.sh BUILD — kvsubmit end to end against a private redis-server
# (started here on a free loopback port with AOF, killed by PID on exit). A
# fake worker (BUILD/tests/test_collect work ...) plays kvworker so no model
# is needed. Covers: invalid sweep (exit 2, nothing in Redis), --emit-msgpack
# round trip (same job_ids), resubmission ("0 new, N existing", XLEN
# unchanged), --rerun, --detach + --collect, --status, failed and dead jobs
# (exit 3) and --retry-failed, duplicate results, a result for an unknown
# job left pending, --timeout (exit 4), SIGINT (exit 130), lost queue state
# (exit 5), and T10: the collector kill -9'd ~50 times while results flow,
# then integrity_check ok, every acked result stored, no duplicate rows.
# Prints "submit: N passed, N failed"; exits non-zero on any failure.
build=${1:-build}
K=$build/kvsubmit
F=$build/tests/test_collect
if ! command -v redis-server > /dev/null 2>&1 || ! command -v redis-cli > /dev/null 2>&1; then
    echo "SKIP submit: redis-server/redis-cli not installed"; exit 0
fi
if ! command -v sqlite3 > /dev/null 2>&1; then echo "SKIP submit: sqlite3 CLI not installed"; exit 0; fi
if [ ! -x "$K" ] || [ ! -x "$F" ]; then echo "submit: $K or $F missing (build first)"; exit 1; fi
tmp=$(mktemp -d)
rpid=""
cleanup() {
    [ -n "$rpid" ] && kill "$rpid" 2> /dev/null && wait "$rpid" 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "  ok   $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
rnd() { od -An -N2 -tu2 /dev/urandom | tr -d ' '; }

# ---- a private redis-server on a free port --------------------------------
start_redis() { # $1 = appendonly yes|no
    redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp/redis" --save "" --appendonly "$1" \
        --appendfsync always --daemonize no > "$tmp/redis.log" 2>&1 &
    rpid=$!
    i=0
    while [ $i -lt 40 ]; do
        redis-cli -p "$port" ping > /dev/null 2>&1 && return 0
        kill -0 "$rpid" 2> /dev/null || break
        sleep 0.05; i=$((i + 1))
    done
    kill "$rpid" 2> /dev/null; wait "$rpid" 2> /dev/null; rpid=""
    return 1
}
mkdir -p "$tmp/redis"
tries=0
while :; do
    port=$((20000 + $(rnd) % 40000))
    start_redis yes && break
    tries=$((tries + 1))
    [ $tries -ge 5 ] && { echo "submit: could not start redis-server ($(tail -n 3 "$tmp/redis.log"))"; exit 1; }
done
export KV_REDIS_URL="redis://127.0.0.1:$port"
R() { redis-cli -p "$port" "$@"; }
q() { sqlite3 "$1" "$2"; }
work() { "$F" work "$KV_REDIS_URL" "$@" > "$tmp/work.out" 2> "$tmp/work.err"; }

# ---- sweeps -----------------------------------------------------------------
cat > "$tmp/s.json" <<'EOF'
{"sweep": "s", "models": ["m"], "datasets": [{"name": "d.txt", "doc": 0, "offset": 0, "tokens": 64}],
 "tasks": [{"task": "ppl"}, {"task": "speed", "prefill": 16, "decode": 4}],
 "policies": [{"policy": "full"}], "seeds": [0, 1, 2], "repeats": 1}
EOF
cat > "$tmp/bad.json" <<'EOF'
{"sweep": "bad", "models": ["m"], "datasets": [{"name": "d.txt", "doc": 0, "offset": 0, "tokens": 64}],
 "tasks": [{"task": "ppl"}], "policies": [{"policy": "full", "bogus": [1]}], "seeds": [0], "repeats": 1}
EOF

# invalid sweep: exit 2, message names the field, nothing in Redis or results.db
"$K" "$tmp/bad.json" --db "$tmp/bad.db" > "$tmp/out" 2>&1; rc=$?
check "invalid sweep exits 2" '[ $rc -eq 2 ]'
check "invalid sweep message names the field" 'grep -q "bogus" "$tmp/out"'
check "invalid sweep enqueues nothing" '[ "$(R XLEN kv:jobs)" = 0 ] && [ ! -e "$tmp/bad.db" ]'
"$K" > /dev/null 2>&1; rc=$?
check "no arguments: usage, exit 1" '[ $rc -eq 1 ]'
"$K" --help | grep -q -- "--retry-failed" && ok "--help lists the flags" || bad "--help lists the flags"
"$K" --status --collect > /dev/null 2>&1; rc=$?
check "conflicting modes: exit 1" '[ $rc -eq 1 ]'

# --emit-msgpack round trip: the msgpack sweep yields the same job_ids
"$K" --emit-msgpack "$tmp/s.json" > "$tmp/s.msgpack"; rc=$?
check "--emit-msgpack writes msgpack" '[ $rc -eq 0 ] && [ -s "$tmp/s.msgpack" ]'
"$K" "$tmp/s.json" --db "$tmp/j.db" --detach > /dev/null 2>&1
"$K" "$tmp/s.msgpack" --db "$tmp/m.db" --detach > /dev/null 2>&1
check "msgpack and JSON give the same 6 job_ids" \
    '[ "$(q "$tmp/j.db" "SELECT group_concat(job_id) FROM (SELECT job_id FROM jobs ORDER BY 1)")" = \
       "$(q "$tmp/m.db" "SELECT group_concat(job_id) FROM (SELECT job_id FROM jobs ORDER BY 1)")" ] &&
     [ "$(q "$tmp/j.db" "SELECT count(*) FROM jobs")" = 6 ]'
R FLUSHALL > /dev/null

# submit, resubmit, --rerun
db=$tmp/r.db
"$K" "$tmp/s.json" --db "$db" --detach > "$tmp/out" 2>&1; rc=$?
check "submit --detach: 6 new" '[ $rc -eq 0 ] && grep -q "s: 6 new, 0 existing" "$tmp/out"'
check "6 jobs on kv:jobs, all queued" '[ "$(R XLEN kv:jobs)" = 6 ] &&
    [ "$(q "$db" "SELECT count(*) FROM jobs WHERE status = '"'queued'"' AND stream_id IS NOT NULL")" = 6 ]'
"$K" "$tmp/s.json" --db "$db" --detach > "$tmp/out" 2>&1
check "resubmission: 0 new, 6 existing, XLEN unchanged" \
    'grep -q "s: 0 new, 6 existing" "$tmp/out" && [ "$(R XLEN kv:jobs)" = 6 ]'
"$K" "$tmp/s.json" --db "$db" --detach --rerun > "$tmp/out" 2>&1
check "--rerun: 6 new jobs with a nonce" 'grep -q "s: 6 new, 0 existing" "$tmp/out" && [ "$(R XLEN kv:jobs)" = 12 ] &&
    [ "$(q "$db" "SELECT count(DISTINCT nonce) FROM jobs")" = 2 ]'

# --status before any result
"$K" --status --db "$db" > "$tmp/out" 2>&1
check "--status shows 12 pending" 'grep -q "^sweep" "$tmp/out" && grep -Eq "^s +12 +0 +12 +0 +0 +0 +0.0%" "$tmp/out"'
"$K" --status nosuch --db "$db" > "$tmp/out" 2>&1; rc=$?
check "--status of an unknown sweep: exit 1" '[ $rc -eq 1 ] && grep -q "no sweep named" "$tmp/out"'

# --timeout with no worker: exit 4
"$K" --collect --db "$db" --timeout 1 > "$tmp/out" 2>&1; rc=$?
check "--timeout: exit 4" '[ $rc -eq 4 ] && grep -q "timeout" "$tmp/out"'

# a fake worker answers; every 4th result also arrives twice; --collect stores each once
work 12 --dup-every 4
"$K" --collect --db "$db" --timeout 30 > "$tmp/out" 2>&1; rc=$?
check "--collect: exit 0 when all done" '[ $rc -eq 0 ] && grep -q "12 done, 0 failed, 0 dead" "$tmp/out"'
check "12 result rows, 3 duplicates counted" '[ "$(q "$db" "SELECT count(*) FROM results")" = 12 ] &&
    [ "$(q "$db" "SELECT dup_results FROM v_sweep_progress")" = 3 ]'
check "nothing left pending" '[ "$(R XPENDING kv:results kv:collect | head -n 1)" = 0 ]'
"$K" --status s --db "$db" > "$tmp/out" 2>&1
check "--status after: 100%" 'grep -Eq "^s +12 +12 +0 +0 +0 +3 +100.0%" "$tmp/out"'
check "v_vs_full: every row has its baseline" \
    '[ "$(q "$db" "SELECT count(*) FROM v_vs_full WHERE ppl_ratio = 1.0 OR speedup = 1.0")" = 12 ]'

# failures and dead letters: exit 3; --retry-failed re-enqueues them
db2=$tmp/f.db
R FLUSHALL > /dev/null
"$K" "$tmp/s.json" --db "$db2" --detach > /dev/null 2>&1
work 6 --fail-every 3 --dead-every 5
"$K" --collect --db "$db2" --timeout 30 > "$tmp/out" 2>&1; rc=$?
check "failed + dead: exit 3" '[ $rc -eq 3 ] && grep -q "3 done, 2 failed, 1 dead" "$tmp/out"'
check "failure reasons stored" '[ "$(q "$db2" "SELECT count(*) FROM v_failures WHERE error LIKE '"'unsupported policy%'"' OR error LIKE '"'crashed%'"'")" = 3 ]'
"$K" --retry-failed s --db "$db2" --detach > "$tmp/out" 2>&1; rc=$?
check "--retry-failed --detach re-enqueues 3" '[ $rc -eq 0 ] && grep -q "3 failed/dead job(s) re-enqueued" "$tmp/out"'
work 3
"$K" --collect s --db "$db2" --timeout 30 > "$tmp/out" 2>&1; rc=$?
check "after retry: exit 0, 6 done" '[ $rc -eq 0 ] && grep -q "6 done, 0 failed, 0 dead" "$tmp/out"'

# a result for a job this database does not know is left pending, not acked
"$F" stray "$KV_REDIS_URL"
"$K" --collect --db "$db2" --timeout 2 > "$tmp/out" 2>&1
n_before=$(q "$db2" "SELECT count(*) FROM results")
"$K" "$tmp/s.json" --db "$db2" --rerun --detach > /dev/null 2>&1
work 6
"$K" --collect --db "$db2" --timeout 30 > "$tmp/out" 2>&1; rc=$?
check "unknown job_id: logged, left pending, others stored" \
    '[ $rc -eq 0 ] && grep -q "unknown job_id" "$tmp/out" && [ "$(R XPENDING kv:results kv:collect | head -n 1)" = 1 ] &&
     [ "$(q "$db2" "SELECT count(*) FROM results")" = $((n_before + 6)) ]'

# SIGINT while collecting: exit 130, resumable
R FLUSHALL > /dev/null
db3=$tmp/i.db
"$K" "$tmp/s.json" --db "$db3" --detach > /dev/null 2>&1
"$K" --collect --db "$db3" > "$tmp/out" 2>&1 &
cpid=$!
sleep 1; kill -INT $cpid; wait $cpid; rc=$?
check "SIGINT: exit 130 with a resume hint" '[ $rc -eq 130 ] && grep -q "resume with kvsubmit --collect" "$tmp/out"'

# Redis lost its state (the group is gone while jobs are queued): exit 5, nothing recreated
R DEL kv:jobs > /dev/null
"$K" --collect --db "$db3" --timeout 5 > "$tmp/out" 2>&1; rc=$?
check "lost queue state: exit 5, group not recreated" \
    '[ $rc -eq 5 ] && grep -q "lost its queue state" "$tmp/out" && [ "$(R EXISTS kv:jobs)" = 0 ]'

# ---- T10: kill -9 the collector at random points while results flow --------
R FLUSHALL > /dev/null
seeds=$(awk 'BEGIN { for (i = 0; i < 100; i++) printf "%s%d", i ? "," : "", i }')
cat > "$tmp/t10.json" <<EOF
{"sweep": "t10", "models": ["m"], "datasets": [{"name": "d.txt", "doc": 0, "offset": 0, "tokens": 64}],
 "tasks": [{"task": "ppl"}, {"task": "speed", "prefill": 16, "decode": 4}],
 "policies": [{"policy": "full"}], "seeds": [$seeds], "repeats": 1}
EOF
db4=$tmp/t10.db
"$K" "$tmp/t10.json" --db "$db4" --detach > /dev/null 2>&1
"$F" work "$KV_REDIS_URL" 200 --sleep-ms 30 --dup-every 9 > "$tmp/t10.work" 2>&1 &
wpid=$!
kills=0; integrity_bad=0; lost=0
# acked = delivered to kv:collect (id <= last-delivered-id) and no longer pending
acked_missing() {
    last=$(R XINFO GROUPS kv:results | awk 'p { print; exit } /^last-delivered-id$/ { p = 1 }')
    R XPENDING kv:results kv:collect - + 100000 | awk 'NR % 4 == 1' | sort > "$tmp/pend"
    R --no-raw XRANGE kv:results - + | awk '
        /^ *[0-9]+\) 1\) "[0-9]+-[0-9]+"$/ { match($0, /"[0-9]+-[0-9]+"/); id = substr($0, RSTART + 1, RLENGTH - 2) }
        want { match($0, /"[0-9a-f]+"/); print id, substr($0, RSTART + 1, RLENGTH - 2); want = 0 }
        /"job_id"$/ { want = 1 }' > "$tmp/entries"
    n=0
    while read -r id jid; do
        # skip entries not yet delivered (after last-delivered-id) and pending ones
        if [ "$(printf '%s\n%s\n' "$id" "$last" | sort -t- -k1,1n -k2,2n | tail -n 1)" != "$last" ]; then continue; fi
        grep -qx "$id" "$tmp/pend" && continue
        [ "$(q "$db4" "SELECT count(*) FROM results WHERE job_id = '$jid'")" = 1 ] || n=$((n + 1))
    done < "$tmp/entries"
    echo $n
}
while [ $kills -lt 50 ]; do
    "$K" --collect --db "$db4" --quiet > /dev/null 2>&1 &
    cpid=$!
    sleep "0.$(( $(rnd) % 25 + 2 ))"
    kill -9 $cpid 2> /dev/null; wait $cpid 2> /dev/null
    kills=$((kills + 1))
    [ "$(q "$db4" "PRAGMA integrity_check")" = ok ] || integrity_bad=$((integrity_bad + 1))
    if [ $((kills % 10)) -eq 0 ]; then m=$(acked_missing); lost=$((lost + m)); fi
done
wait $wpid
"$K" --collect --db "$db4" --timeout 60 --quiet > "$tmp/out" 2>&1; rc=$?
check "T10: 50 kill -9s, integrity_check ok after each" '[ $integrity_bad -eq 0 ] && [ $kills -eq 50 ]'
check "T10: every acked result has a row (sampled during the kills)" '[ $lost -eq 0 ]'
check "T10: final collect completes, 200 rows, no duplicates" '[ $rc -eq 0 ] &&
    [ "$(q "$db4" "SELECT count(*) || '"'/'"' || count(DISTINCT job_id) FROM results")" = 200/200 ] &&
    [ "$(q "$db4" "SELECT count(*) FROM jobs WHERE status = '"'done'"'")" = 200 ]'
check "T10: every result entry acked and stored" '[ "$(R XPENDING kv:results kv:collect | head -n 1)" = 0 ] &&
    [ "$(acked_missing)" = 0 ]'
dups=$(q "$db4" "SELECT dup_results FROM v_sweep_progress")
echo "  info T10: $(grep -c published "$tmp/t10.work") results published, $dups duplicate deliveries absorbed"

echo "submit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
