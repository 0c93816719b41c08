#!/bin/sh
# run.sh — build and run every libFuzzer target in tests/fuzz.
#
#   sh tests/fuzz/run.sh [SECONDS]      (default 60 per target)
#
# Each tests/fuzz/fuzz_<name>.c is linked with all engine/*.c except
# engine/*_main.c, kernels/cpu/*.c and kernels/cuda_loader.c (built as CUDA=0),
# plus an archive of worker/*.c (except *_main.c) and submit/sweep*.c (the
# job codec, msgpack guard and sweep parser; as an archive, a target pulls in
# only the members it uses, so the Redis code is not linked into a parser
# target), under clang -fsanitize=fuzzer,address,undefined, into
# build-fuzz/. Each
# target then runs for SECONDS on a copy of tests/fuzz/corpus/<name>/ (new
# inputs stay in build-fuzz/, the seeds in git are not touched), with
# tests/fuzz/corpus/<name>.dict as a dictionary when present. Crash, leak,
# timeout and OOM reproducers land in build-fuzz/artifacts/<name>/.
# FUZZ_ONLY="config safetensors" limits the run to those targets.
# Prints one summary line per target; exits non-zero if any target failed
# to build or found a crash.
set -u
SECONDS_PER=${1:-60}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
OUT=build-fuzz
CC=${FUZZ_CC:-clang}
BLAS_INC=/usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS="-fsanitize=fuzzer,address,undefined -g -O1 -D_GNU_SOURCE -fopenmp -Iengine -Ikernels -Iworker -Isubmit -I$BLAS_INC"
LIBS="-L$BLAS_DIR -Wl,-rpath,$BLAS_DIR -lopenblas -lmsgpackc -lcrypto -lhiredis -ljansson -lpcre2-8 -lutf8proc -lm"
mkdir -p "$OUT/obj" "$OUT/corpus" "$OUT/artifacts" "$OUT/logs"

# Library objects: compiled once per run (instrumented), shared by all targets.
OBJS=""
for src in engine/*.c kernels/cpu/*.c kernels/cuda_loader.c; do
    [ -f "$src" ] || continue
    case "$src" in *_main.c) continue ;; esac
    obj="$OUT/obj/$(echo "$src" | tr '/' '_' | sed 's/\.c$/.o/')"
    if ! $CC $CFLAGS -Wno-pass-failed -c "$src" -o "$obj"; then
        echo "fuzz: cannot compile $src" >&2
        exit 2
    fi
    OBJS="$OBJS $obj"
done

# Job codec and sweep parser: one archive, linked after the engine objects.
KVQ_OBJS=""
for src in worker/*.c submit/sweep*.c; do
    [ -f "$src" ] || continue
    case "$src" in *_main.c) continue ;; esac
    obj="$OUT/obj/$(echo "$src" | tr '/' '_' | sed 's/\.c$/.o/')"
    if ! $CC $CFLAGS -Wno-pass-failed -c "$src" -o "$obj"; then
        echo "fuzz: cannot compile $src" >&2
        exit 2
    fi
    KVQ_OBJS="$KVQ_OBJS $obj"
done
rm -f "$OUT/libkvfuzz.a"
[ -z "$KVQ_OBJS" ] || ar rcs "$OUT/libkvfuzz.a" $KVQ_OBJS || exit 2
[ -f "$OUT/libkvfuzz.a" ] && OBJS="$OBJS $OUT/libkvfuzz.a"

status=0
for src in tests/fuzz/fuzz_*.c; do
    [ -f "$src" ] || continue
    name=$(basename "$src" .c)
    short=${name#fuzz_}
    if [ -n "${FUZZ_ONLY:-}" ]; then
        case " $FUZZ_ONLY " in *" $short "*) ;; *) continue ;; esac
    fi
    bin="$OUT/$name"
    if ! $CC $CFLAGS "$src" $OBJS $LIBS -o "$bin"; then
        echo "$name: BUILD FAILED"
        status=1
        continue
    fi
    corpus="$OUT/corpus/$short"
    mkdir -p "$corpus" "$OUT/artifacts/$short"
    if [ -d "tests/fuzz/corpus/$short" ]; then
        cp -R "tests/fuzz/corpus/$short/." "$corpus/" 2>/dev/null
    fi
    dict=""
    [ -f "tests/fuzz/corpus/$short.dict" ] && dict="-dict=tests/fuzz/corpus/$short.dict"
    before=$(ls "$OUT/artifacts/$short" | wc -l)
    log="$OUT/logs/$name.log"
    # OMP_NUM_THREADS=1: the parsers are single-threaded; avoid idle pools.
    OMP_NUM_THREADS=1 "$bin" -max_total_time="$SECONDS_PER" -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$short/" $dict "$corpus" >"$log" 2>&1
    rc=$?
    after=$(ls "$OUT/artifacts/$short" | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    new=$((after - before))
    echo "$name: ${SECONDS_PER}s, ${execs:-?} execs, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files, $new new crashes (rc $rc)"
    if [ "$rc" -ne 0 ] || [ "$new" -ne 0 ]; then
        status=1
        grep -m 3 -E 'ERROR|SUMMARY|deadly signal' "$log" | sed 's/^/    /'
        echo "    log: $log; reproducers: $OUT/artifacts/$short/"
    fi
done
exit $status
