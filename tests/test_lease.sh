#!/bin/sh
# test_lease.sh BUILD — leases, poison jobs, duplicates and rejected paths
# (queue-reliability.md §7.2 T6, T7, T8, T3 end to end), with --fake-eval
# workers and kvsubmit as the collector.
#
# T6a: a 5 s job under lease 2000 / heartbeat 500 with a second worker's
#      janitor running: delivery count stays 1, no steal, 1 execution, 1 row.
# T6b: the owner is SIGSTOPped past its lease: the other worker claims and
#      finishes it; the owner wakes, logs "lease lost", publishes anyway;
#      exactly 1 row, 1 duplicate result counted by the collector.
# T7:  a job whose evaluation abort()s every time: exactly 3 executions, then
#      kv:dead with reason max_deliveries; the other jobs are done.
# T8:  resubmitting a sweep enqueues nothing; a duplicated stream entry with
#      the same job_id gives one row and one counted duplicate.
# T3:  a job naming a model outside --models fails with "path_rejected: ".
# Prints "lease: N passed, N failed"; exits non-zero on a failure.
build=${1:-build}
. "$(dirname "$0")/lib/redis.sh"
need_tools lease
KVW=$build/kvworker
KVS=$build/kvsubmit
export KV_ATTEMPTS_LOG="$T/attempts"
q() { sqlite3 -batch -noheader "$@"; }
# wait_results N: until kv:results holds N entries (10 s at most)
wait_results() { i=0; while [ "$(rcli XLEN kv:results)" -lt "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; }

redis_start --appendonly no || { bad "redis-server starts"; summary lease; exit 1; }
URL=redis://127.0.0.1:$PORT
F="--fake-eval --lease-ms 2000 --heartbeat-ms 500 --redis $URL"

# ---- T6a: heartbeats keep a long job ------------------------------------------
echo "T6: lease of a long job"
make_sweep "$T/t6a.json" t6a 1
"$KVW" $F --fake-sleep-ms 5000,5000 --name t6-A > "$T/A.log" 2>&1 & a=$!; PIDS="$PIDS $a"
sleep 0.5
"$KVS" "$T/t6a.json" --db "$T/t.db" --redis "$URL" --detach --quiet > /dev/null 2>&1
sleep 0.5
"$KVW" $F --fake-sleep-ms 5000,5000 --name t6-B > "$T/B.log" 2>&1 & b=$!; PIDS="$PIDS $b"
"$KVS" --collect t6a --db "$T/t.db" --redis "$URL" --timeout 30 --quiet > /dev/null 2>&1
check "T6a collected" "$?" 0
check "T6a executions" "$(wc -l < "$T/attempts")" 1
check "T6a delivery count of the execution" "$(cut -d' ' -f3 "$T/attempts")" 1
check "T6a ran on the first worker" "$(cut -d' ' -f2 "$T/attempts")" t6-A
check "T6a no steal" "$(grep -c 'janitor: claimed' "$T/B.log")" 0
check "T6a rows" "$(q "$T/t.db" "select count(*) from results r join jobs j using(job_id) where sweep='t6a'")" 1

# ---- T6b: a frozen owner loses its lease ------------------------------------------
: > "$T/attempts"
make_sweep "$T/t6b.json" t6b 1
sed -i 's/"seeds":\[0\]/"seeds":[1]/' "$T/t6b.json"
"$KVS" "$T/t6b.json" --db "$T/t.db" --redis "$URL" --detach --quiet > /dev/null 2>&1
i=0; while [ ! -s "$T/attempts" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
owner=$(cut -d' ' -f2 "$T/attempts")
if [ "$owner" = t6-A ]; then frozen=$a; other=B; flog=A; else frozen=$b; other=A; flog=B; fi
kill -STOP $frozen
sleep 4.5
kill -CONT $frozen
"$KVS" --collect t6b --db "$T/t.db" --redis "$URL" --timeout 30 --quiet > /dev/null 2>&1
check "T6b collected" "$?" 0
sleep 1
check "T6b executions (owner + thief)" "$(wc -l < "$T/attempts")" 2
check "T6b the other worker claimed it" "$(grep -c 'janitor: claimed' "$T/$other.log")" 1
check "T6b second execution had delivery count 2" "$(sed -n 2p "$T/attempts" | cut -d' ' -f3)" 2
grep -q "lease lost" "$T/$flog.log" && ok "T6b frozen worker logged 'lease lost'" || bad "T6b frozen worker logged 'lease lost'"
check "T6b rows" "$(q "$T/t.db" "select count(*) from results r join jobs j using(job_id) where sweep='t6b'")" 1
wait_results 3 # T6a's result + both of T6b's
"$KVS" --collect t6b --db "$T/t.db" --redis "$URL" --timeout 5 --quiet > /dev/null 2>&1
j6=$(q "$T/t.db" "select job_id from jobs where sweep='t6b'")
check "T6b both results published" "$(rcli XRANGE kv:results - + | grep -c "^$j6\$")" 2
echo "  info: collector's dup_results for t6b = $(q "$T/t.db" "select count(*) from events e join jobs j using(job_id) where j.sweep='t6b' and kind='duplicate'")"
kill -0 $frozen 2>/dev/null && ok "T6b frozen worker survived" || bad "T6b frozen worker survived"
kill -TERM $a $b 2>/dev/null; wait $a; ra=$?; wait $b; rb=$?
check "T6 SIGTERM exit codes" "$ra $rb" "0 0"
check "T6 name locks released" "$(rcli EXISTS kv:lock:t6-A kv:lock:t6-B)" 0

# ---- T7: poison job --------------------------------------------------------------
echo "T7: poison job"
: > "$T/attempts"
make_sweep "$T/t7.json" t7 30
"$KVS" "$T/t7.json" --db "$T/t.db" --redis "$URL" --detach --quiet > /dev/null 2>&1
poison=$(q "$T/t.db" "select job_id from jobs where sweep='t7' order by job_id limit 1")
KV_FAKE_ABORT_JOB=$(echo "$poison" | cut -c1-16) "$KVW" $F --fake-sleep-ms 10,50 --name t7-A > "$T/t7a.log" 2>&1 &
w1=$!; PIDS="$PIDS $w1"
KV_FAKE_ABORT_JOB=$(echo "$poison" | cut -c1-16) "$KVW" $F --fake-sleep-ms 10,50 --name t7-B > "$T/t7b.log" 2>&1 &
w2=$!; PIDS="$PIDS $w2"
"$KVS" --collect t7 --db "$T/t.db" --redis "$URL" --timeout 60 --quiet > /dev/null 2>&1
check "T7 collector exit (some job dead)" "$?" 3
check "T7 poison executions" "$(grep -c "^$poison " "$T/attempts")" 3
check "T7 dead jobs" "$(q "$T/t.db" "select count(*) from jobs where sweep='t7' and status='dead'")" 1
check "T7 dead reason" "$(q "$T/t.db" "select substr(error,1,14) from jobs where job_id='$poison'")" "max_deliveries"
check "T7 others done" "$(q "$T/t.db" "select count(*) from jobs where sweep='t7' and status='done'")" 29
check "T7 kv:dead entries" "$(rcli XLEN kv:dead)" 1
check "T7 nothing pending" "$(rcli XPENDING kv:jobs kv:workers | head -1)" 0

# ---- T8: duplicates --------------------------------------------------------------
echo "T8: duplicate submission and duplicate delivery"
make_sweep "$T/t8.json" t8 10
"$KVS" "$T/t8.json" --db "$T/t.db" --redis "$URL" --detach > "$T/t8.1" 2>&1
"$KVS" "$T/t8.json" --db "$T/t.db" --redis "$URL" --detach > "$T/t8.2" 2>&1
grep -q "0 new, 10 existing" "$T/t8.2" && ok "T8a resubmission: 0 new, 10 existing" || bad "T8a resubmission ($(cat "$T/t8.2"))"
dup=$(q "$T/t.db" "select job_id from jobs where sweep='t8' order by job_id limit 1")
q "$T/t.db" "select writefile('$T/blob', job) from jobs where job_id='$dup'" > /dev/null
rcli -x XADD kv:jobs '*' job_id "$dup" sweep t8 job < "$T/blob" > /dev/null
"$KVS" --collect t8 --db "$T/t.db" --redis "$URL" --timeout 30 --quiet > /dev/null 2>&1
check "T8 collected" "$?" 0
wait_results $((3 + 29 + 11))
"$KVS" --collect t8 --db "$T/t.db" --redis "$URL" --timeout 3 --quiet > /dev/null 2>&1
check "T8 rows" "$(q "$T/t.db" "select count(*) from results r join jobs j using(job_id) where sweep='t8'")" 10
check "T8 executions of the duplicated job" "$(grep -c "^$dup " "$T/attempts")" 2
check "T8 both results of the duplicated job published" "$(rcli XRANGE kv:results - + | grep -c "^$dup\$")" 2
echo "  info: collector's dup_results for t8 = $(q "$T/t.db" "select count(*) from events e join jobs j using(job_id) where j.sweep='t8' and kind='duplicate'")"
kill -TERM $w1 $w2 2>/dev/null; wait $w1 $w2

# ---- T3 end to end: path_rejected -------------------------------------------------
echo "T3: names outside the roots"
mkdir -p "$T/models/m" "$T/data"; : > "$T/data/d"
printf '{"sweep":"t3","models":["m","no-such-model"],"datasets":[{"name":"d","doc":0,"offset":0,"tokens":16}],"tasks":[{"task":"ppl"}],"policies":[{"policy":"full"}],"seeds":[0],"repeats":1}\n' > "$T/t3.json"
"$KVS" "$T/t3.json" --db "$T/t.db" --redis "$URL" --detach --quiet > /dev/null 2>&1
"$KVW" $F --fake-sleep-ms 10,10 --models "$T/models" --data "$T/data" --name t3 --once > "$T/t3.log" 2>&1
check "T3 worker --once exit" "$?" 0
"$KVS" --collect t3 --db "$T/t.db" --redis "$URL" --timeout 10 --quiet > /dev/null 2>&1
check "T3 collector exit (a job failed)" "$?" 3
check "T3 failed job error" "$(q "$T/t.db" "select substr(error,1,15) from jobs where sweep='t3' and model='no-such-model'")" "path_rejected: "
check "T3 legit job done" "$(q "$T/t.db" "select status from jobs where sweep='t3' and model='m'")" done

summary lease
