#!/bin/sh
# run_all.sh BUILD BIN... — runs every CUnit binary, keeps going after a
# failure, and prints one closing line: "N passed, N failed" (binaries).
# Exits non-zero when any binary failed.
build=$1; shift
pass=0; fail=0; failed=""
for b in "$@"; do
    echo "=== $b"
    if "$b"; then pass=$((pass + 1)); else fail=$((fail + 1)); failed="$failed $b"; fi
done
echo
[ -n "$failed" ] && echo "FAILED:$failed"
echo "binaries: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
