# tests/lib/redis.sh — shared plumbing for the queue system tests (sourced by
# tests/test_*.sh, POSIX sh). Each script gets a private temp dir ($T), a
# private redis-server on a free loopback port with its own --dir, workers
# started under a restart loop, and a trap that kills everything it started
# by PID (never by name) and removes $T. Counters: ok/bad, and `summary`
# prints "<name>: N passed, N failed" and returns non-zero on a failure.
#
# Needs: redis-server and redis-cli (absent: the script prints SKIP and
# passes), sqlite3 for the checker.

T=$(mktemp -d /tmp/kvsys.XXXXXX)
PIDS=""
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "  ok   $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL $1"; }
check() { if [ "$2" = "$3" ]; then ok "$1 ($2)"; else bad "$1 (got '$2', want '$3')"; fi; }
summary() { echo "$1: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; }
now_ms() { date +%s%3N; }

kv_cleanup() {
    touch "$T/stop" 2>/dev/null
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    for f in "$T"/w*.pid "$T"/redis.pid; do
        [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$T"
}
trap kv_cleanup EXIT
trap 'exit 1' INT TERM

REDIS_SERVER=${KV_REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${KV_REDIS_CLI:-redis-cli}
need_tools() {
    if [ ! -x "$REDIS_SERVER" ] || ! command -v "$REDIS_CLI" >/dev/null 2>&1; then
        echo "SKIP $1: no redis-server/redis-cli"; echo "$1: 0 passed, 0 failed"; exit 0
    fi
    if ! command -v sqlite3 >/dev/null 2>&1; then
        echo "SKIP $1: no sqlite3 CLI"; echo "$1: 0 passed, 0 failed"; exit 0
    fi
}

rcli() { "$REDIS_CLI" -h 127.0.0.1 -p "$PORT" "$@"; }
acli() { "$REDIS_CLI" -h 127.0.0.1 -p "$PORT" --user admin --pass "$ADMIN_PASS" --no-auth-warning "$@"; }

# redis_start [extra redis-server args...]: on $PORT (picked once), dir $T/redis.
# Waits until it answers PING (5 s). Sets REDIS_PID.
redis_start() {
    mkdir -p "$T/redis"
    if [ -z "$PORT" ]; then
        tries=0
        while :; do
            PORT=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 ))
            "$REDIS_CLI" -p "$PORT" ping >/dev/null 2>&1 || break
            tries=$((tries + 1)); [ $tries -gt 20 ] && return 1
        done
    fi
    "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 --dir "$T/redis" --save "" --logfile "$T/redis/log" \
        --daemonize no "$@" &
    REDIS_PID=$!
    echo "$REDIS_PID" > "$T/redis.pid"
    i=0
    while [ $i -lt 100 ]; do
        if "$REDIS_CLI" -p "$PORT" ping 2>&1 | grep -q -e PONG -e NOAUTH; then return 0; fi
        kill -0 "$REDIS_PID" 2>/dev/null || return 1
        sleep 0.05; i=$((i + 1))
    done
    return 1
}
redis_kill9() { kill -9 "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }

# start_slot I ARGS...: runs `kvworker ARGS` in a restart loop (until $T/stop);
# the live worker's PID is in $T/wI.pid, exit codes appended to $T/wI.rc.
start_slot() {
    i=$1; shift
    (
        while [ ! -f "$T/stop" ]; do
            "$KVW" "$@" >> "$T/w$i.log" 2>&1 &
            echo $! > "$T/w$i.pid"
            wait $!
            echo $? >> "$T/w$i.rc"
            [ -f "$T/once$i" ] && break
            sleep 0.3
        done
    ) &
    PIDS="$PIDS $!"
}
stop_slots() {
    touch "$T/stop"
    for f in "$T"/w*.pid; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
    sleep 1
    for f in "$T"/w*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    PIDS=""
}

# make_sweep FILE NAME N: N ppl jobs (seeds 0..N-1) on model "m", dataset "d".
make_sweep() {
    seeds=$(seq -s, 0 $(($3 - 1)))
    printf '{"sweep":"%s","models":["m"],"datasets":[{"name":"d","doc":0,"offset":0,"tokens":16}],' "$2" > "$1"
    printf '"tasks":[{"task":"ppl"}],"policies":[{"policy":"full"}],"seeds":[%s],"repeats":1}\n' "$seeds" >> "$1"
}

# checker DB SWEEP: Jepsen-style totals; sets LOST ROWS DUPROWS DEAD PENDING DUPEXEC UNEXPECTED.
checker() {
    q() { sqlite3 -batch -noheader "$1" "$2"; }
    ENQ=$(q "$1" "select count(*) from jobs where sweep='$2'")
    ROWS=$(q "$1" "select count(*) from results r join jobs j using(job_id) where j.sweep='$2'")
    DISTINCT=$(q "$1" "select count(distinct r.job_id) from results r join jobs j using(job_id) where j.sweep='$2'")
    DUPROWS=$((ROWS - DISTINCT))
    LOST=$(q "$1" "select count(*) from jobs j where j.sweep='$2' and j.status not in ('dead','failed') and not exists (select 1 from results r where r.job_id=j.job_id)")
    DEADROWS=$(q "$1" "select count(*) from jobs where sweep='$2' and status='dead'")
    DUPRES=$(q "$1" "select count(*) from events e join jobs j using(job_id) where j.sweep='$2' and e.kind='duplicate'")
    PENDING=$(rcli XPENDING kv:jobs kv:workers | head -1)
    DEAD=$(rcli XLEN kv:dead)
    DUPEXEC=0
    if [ -f "$T/attempts" ]; then
        DUPEXEC=$(( $(wc -l < "$T/attempts") - $(cut -d' ' -f1 "$T/attempts" | sort -u | wc -l) ))
    fi
    echo "  checker: enqueued=$ENQ results=$ROWS lost=$LOST dup_rows=$DUPROWS dup_results=$DUPRES dup_executions=$DUPEXEC dead=$DEAD pending=$PENDING"
}
