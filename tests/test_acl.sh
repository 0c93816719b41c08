#!/bin/sh
# test_acl.sh BUILD — T11 of queue-reliability.md §7.2: Redis started with
# the ACL file of ops/redis-users.acl.example (passwords substituted). The
# kvworker user can run a whole sweep with kvsubmit's user but cannot
# FLUSHALL, CONFIG, KEYS, EVAL or touch keys outside kv:*; the default user
# is off; a wrong password makes kvworker exit 4 at once; a non-loopback URL
# without a password is refused (exit 2).
# Prints "acl: N passed, N failed"; exits non-zero on a failure.
build=${1:-build}
. "$(dirname "$0")/lib/redis.sh"
need_tools acl
KVW=$build/kvworker
KVS=$build/kvsubmit
ADMIN_PASS=adm-$$-pw
sed -e "s/CHANGE-ME-admin/$ADMIN_PASS/" -e "s/CHANGE-ME-worker/wk-pw/" -e "s/CHANGE-ME-submit/sb-pw/" \
    "$(dirname "$0")/../ops/redis-users.acl.example" > "$T/users.acl"
redis_start --appendonly no --aclfile "$T/users.acl" || { bad "redis-server starts with the ACL file"; summary acl; exit 1; }
WURL=redis://kvworker:wk-pw@127.0.0.1:$PORT
SURL=redis://kvsubmit:sb-pw@127.0.0.1:$PORT
wcli() { "$REDIS_CLI" -h 127.0.0.1 -p "$PORT" --user kvworker --pass wk-pw --no-auth-warning "$@" 2>&1; }
denied() { if wcli "$@" | grep -q NOPERM; then ok "kvworker cannot: $*"; else bad "kvworker cannot: $* ($(wcli "$@" | head -1))"; fi; }

rcli PING 2>&1 | grep -q NOAUTH && ok "default user is off" || bad "default user is off"
make_sweep "$T/s.json" acl 10
"$KVS" "$T/s.json" --db "$T/r.db" --redis "$SURL" --detach --quiet > "$T/sub.log" 2>&1
check "kvsubmit enqueues with its own user" "$?" 0
"$KVW" --fake-eval --fake-sleep-ms 5,10 --redis "$WURL" --name acl-w --once --lease-ms 3000 --heartbeat-ms 1000 > "$T/w.log" 2>&1
check "kvworker runs the sweep with its own user" "$?" 0
"$KVS" --collect acl --db "$T/r.db" --redis "$SURL" --timeout 20 --quiet > /dev/null 2>&1
check "kvsubmit collects with its own user" "$?" 0
check "result rows" "$(sqlite3 "$T/r.db" "select count(*) from results")" 10
grep -q NOPERM "$T/w.log" "$T/sub.log" && bad "no NOPERM in the logs" || ok "no NOPERM in the logs"

denied FLUSHALL
denied CONFIG GET '*'
denied KEYS '*'
denied EVAL "return 1" 0
denied XADD other:key '*' a b
denied SET other:key x
denied ACL LIST
check "ACL DRYRUN kvworker XREADGROUP" "$(acli ACL DRYRUN kvworker XREADGROUP GROUP kv:workers w STREAMS kv:jobs '>')" OK
check "ACL DRYRUN kvworker XAUTOCLAIM" "$(acli ACL DRYRUN kvworker XAUTOCLAIM kv:jobs kv:workers w 1000 0-0 COUNT 10 JUSTID)" OK

t0=$(now_ms)
"$KVW" --fake-eval --redis "redis://kvworker:wrong@127.0.0.1:$PORT" --name acl-bad > "$T/bad.log" 2>&1
rc=$?; t1=$(now_ms)
check "wrong password: exit code" "$rc" 4
[ $((t1 - t0)) -lt 5000 ] && ok "wrong password: exits within 5 s ($((t1 - t0)) ms)" || bad "wrong password: exits within 5 s ($((t1 - t0)) ms)"
"$KVW" --fake-eval --redis "redis://10.255.255.1:6379" --name acl-remote > "$T/remote.log" 2>&1
check "non-loopback without password: exit code" "$?" 2
grep -q "without a password" "$T/remote.log" && ok "non-loopback refusal says why" || bad "non-loopback refusal says why"
summary acl
