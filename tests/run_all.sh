#!/bin/sh
# run_all.sh BUILD TEST... — runs every CUnit binary and shell test
# (tests/test_*.sh, given BUILD as argument), keeps going after a failure,
# and ends with one line "tests: N passed, N failed" counting test programs.
# Exits non-zero when any failed.
build=$1; shift
pass=0; fail=0; failed=""
for b in "$@"; do
    echo "=== $b"
    case $b in
        *.sh) sh "$b" "$build"; rc=$? ;;
        *) "$b"; rc=$? ;;
    esac
    if [ $rc -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); failed="$failed $b"; fi
done
echo
[ -n "$failed" ] && echo "FAILED:$failed"
echo "tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
