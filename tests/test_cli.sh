#!/bin/sh
# test_cli.sh BUILD — kvrun end to end as a user runs it: every subcommand on
# the golden fixtures, exit codes, and error messages that name the file or
# flag. Prints "cli: N passed, N failed"; exits non-zero on any failure.
build=${1:-build}
kv=$build/kvrun
data=${KV_TESTDATA:-tests/data}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok()  { pass=$((pass + 1)); echo "  ok   $1"; }
bad() { fail=$((fail + 1)); echo "  FAIL $1"; }
# expect NAME RC NEEDLE -- CMD...: exit code RC and NEEDLE in stderr+stdout
expect() {
    name=$1; rc=$2; needle=$3; shift 4
    "$@" > "$tmp/out" 2>&1; got=$?
    if [ "$got" -eq "$rc" ] && grep -q -- "$needle" "$tmp/out"; then ok "$name"
    else bad "$name (rc $got, want $rc; output: $(head -c 300 "$tmp/out"))"; fi
}

m=$data/models/m32-f32-sharded
g=$data/golden/m32-f32-sharded

# generate: greedy continuation equals HF's
"$kv" generate --model "$m" --prompt-ids "$(cat "$g/prompt_ids.txt")" --max-new 64 --ignore-eos --print-ids \
    > "$tmp/gen" 2> "$tmp/gen.err"
if [ "$(tail -n 1 "$tmp/gen")" = "$(cat "$g/greedy_ids.txt")" ]; then ok "generate greedy == HF"; else bad "generate greedy == HF"; fi
grep -q "TTFT" "$tmp/gen.err" && grep -q "TPOT" "$tmp/gen.err" && ok "generate reports TTFT/TPOT" || bad "generate reports TTFT/TPOT"
"$kv" generate --model "$m" --prompt-ids "1 2 3" --max-new 5 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 7 --ignore-eos --json > "$tmp/a"
"$kv" generate --model "$m" --prompt-ids "1 2 3" --max-new 5 --temperature 0.8 --top-k 20 --top-p 0.9 --seed 7 --ignore-eos --json > "$tmp/b"
if grep -q '"n_new":5' "$tmp/a" && [ "$(sed 's/"t[a-z_]*_s":[0-9.e+-]*//g' "$tmp/a")" = "$(sed 's/"t[a-z_]*_s":[0-9.e+-]*//g' "$tmp/b")" ]; then
    ok "sampling is reproducible with --seed"; else bad "sampling is reproducible with --seed"; fi

# logits: raw float32 [n x V]
cp "$g/all_ids.txt" "$tmp/ids.txt"
if "$kv" logits --model "$m" --ids-file "$tmp/ids.txt" --out "$tmp/l.f32" 2>/dev/null &&
   [ "$(wc -c < "$tmp/l.f32")" -eq $((88 * 512 * 4)) ]; then ok "logits size"; else bad "logits size"; fi
# the last row must be the one `generate` continues from: its argmax is the first greedy token
first=$(cut -d' ' -f1 "$g/greedy_ids.txt")
n24=$(cut -d' ' -f1-24 "$g/all_ids.txt")
echo "$n24" > "$tmp/p.txt"
"$kv" logits --model "$m" --ids-file "$tmp/p.txt" --out "$tmp/p.f32" 2>/dev/null
am=$(od -An -v -f -w2048 -j $((23 * 2048)) "$tmp/p.f32" | awk '{m=1; for(i=2;i<=NF;i++) if ($i>$m) m=i; print m-1}')
[ "$am" = "$first" ] && ok "logits last row argmax == first greedy token" || bad "logits last row argmax ($am vs $first)"

# the trained tiny model (ops/train-tiny/kvtiny, its own tokenizer): PPL over
# 1024 held-out tokens and a 48-token greedy continuation equal HF's
# (tests/data/trained/kvtiny from ops/golden/make_tiny_golden.py)
tm=ops/train-tiny/kvtiny
tg=$data/trained/kvtiny
if "$kv" ppl --model "$tm" --data "$data/datasets/kjv-nt-head.txt" --tokens 1024 --json > "$tmp/tppl" 2>&1 &&
   awk -v want="$(cat "$tg/ppl.txt")" '{ match($0, /"ppl":[0-9.e+-]+/); got = substr($0, RSTART + 6, RLENGTH - 6) + 0;
        d = got - want; if (d < 0) d = -d; exit !(d <= 1e-5 * want) }' "$tmp/tppl"; then
    ok "kvtiny ppl == HF ($(cat "$tg/ppl.txt"))"
else bad "kvtiny ppl == HF (got $(head -c 200 "$tmp/tppl"), want $(cat "$tg/ppl.txt"))"; fi
"$kv" generate --model "$tm" --prompt-ids "$(cat "$tg/prompt_ids.txt")" --max-new 48 --ignore-eos --print-ids \
    > "$tmp/tgen" 2> /dev/null
if [ "$(tail -n 1 "$tmp/tgen")" = "$(cat "$tg/greedy_ids.txt")" ]; then ok "kvtiny greedy 48 == HF"
else bad "kvtiny greedy 48 == HF"; fi

# random-model: loads back and runs
"$kv" random-model --shape 14m --dtype bf16 --seed 3 --out "$tmp/r14" 2>/dev/null && [ -f "$tmp/r14/model.safetensors" ] &&
    grep -q kvsweep_random_init "$tmp/r14/config.json" && ok "random-model writes a marked checkpoint" || bad "random-model writes a marked checkpoint"
expect "random-model output runs" 0 "TPOT" -- "$kv" generate --model "$tmp/r14" --prompt-ids "5 6 7" --max-new 4 --ignore-eos
"$kv" random-model --shape 14m --dtype bf16 --seed 3 --out "$tmp/r14b" 2>/dev/null
cmp -s "$tmp/r14/model.safetensors" "$tmp/r14b/model.safetensors" && ok "random-model is deterministic" || bad "random-model is deterministic"

# errors: non-zero exit, message names the thing
expect "no command" 2 "usage" -- "$kv"
expect "unknown command" 2 "unknown command" -- "$kv" frobnicate
expect "unknown flag" 2 "unknown" -- "$kv" generate --model "$m" --bogus
expect "bad number" 2 "max-new" -- "$kv" generate --model "$m" --prompt-ids 1 --max-new lots
expect "missing model dir" 1 "config.json" -- "$kv" generate --model "$tmp/nope" --prompt-ids 1
expect "unknown shape" 2 "pythia-160m" -- "$kv" random-model --shape 7b --out "$tmp/x"
expect "bad dtype" 1 "dtype" -- "$kv" random-model --shape 14m --dtype f8 --out "$tmp/x8"
echo "3 99999" > "$tmp/badids.txt"
expect "token outside vocab" 1 "outside vocab" -- "$kv" logits --model "$m" --ids-file "$tmp/badids.txt" --out "$tmp/o.f32"
echo "3 x 4" > "$tmp/badids2.txt"
expect "ids file not ids" 1 "badids2.txt" -- "$kv" logits --model "$m" --ids-file "$tmp/badids2.txt" --out "$tmp/o.f32"
expect "ppl missing data" 1 "no such file" -- "$kv" ppl --model "$m" --data "$tmp/none.txt" --tokenizer /dev/null
expect "ppl binary data" 1 "NUL" -- "$kv" ppl --model "$m" --data "$data/datasets/binary.txt"

# with the real tokenizer: tokenize/detokenize round trip, ppl on text
tok=${KV_TOKENIZER:-../shared/data/pythia-tokenizer.json}
if [ -f "$tok" ]; then
    printf 'Hello world!\n    indented <|endoftext|> caf\xc3\xa9' > "$tmp/t.txt"
    "$kv" tokenize --tokenizer "$tok" < "$tmp/t.txt" > "$tmp/ids" &&
        "$kv" detokenize --tokenizer "$tok" < "$tmp/ids" > "$tmp/back" && cmp -s "$tmp/t.txt" "$tmp/back" &&
        ok "tokenize | detokenize round trip" || bad "tokenize | detokenize round trip"
    echo "Hello world" | "$kv" tokenize --tokenizer "$tok" > "$tmp/hw"
    [ "$(cat "$tmp/hw")" = "12092 1533 187" ] && ok "tokenize known ids" || bad "tokenize known ids ($(cat "$tmp/hw"))"
    printf '{"text": "Hello world"}\n{"text": "a    b"}\n' | "$kv" tokenize --tokenizer "$tok" --jsonl > "$tmp/j"
    [ "$(cat "$tmp/j")" = "$(printf '[12092,1533]\n[66,50274,67]')" ] && ok "tokenize --jsonl" || bad "tokenize --jsonl ($(cat "$tmp/j"))"
    "$kv" detokenize --tokenizer "$tok" --jsonl < "$tmp/j" > "$tmp/jd"
    grep -q '"a    b"' "$tmp/jd" && ok "detokenize --jsonl" || bad "detokenize --jsonl"
    vf=$data/models/vocab-full-f16
    expect "ppl streaming" 0 "ppl" -- "$kv" ppl --model "$vf" --tokenizer "$tok" --data "$data/datasets/pg" --doc 1
    expect "ppl chunked json" 0 '"mode":"chunked"' -- "$kv" ppl --model "$vf" --tokenizer "$tok" --data "$data/datasets/good.jsonl" --chunk 2 --json
    expect "ppl offset too far" 1 "offset-tokens" -- "$kv" ppl --model "$vf" --tokenizer "$tok" --data "$data/datasets/plain.txt" --offset-tokens 1000
    expect "generate with text prompt" 0 "TPOT" -- "$kv" generate --model "$vf" --tokenizer "$tok" --prompt "Once upon a time" --max-new 8
else
    echo "  SKIP tokenizer-dependent CLI checks: no tokenizer at $tok"
fi

# generate --draft: speculative decoding, greedy output == HF's greedy ids of the target
sm=$data/models/m64-f32; sg=$data/golden/m64-f32
"$kv" generate --model "$sm" --draft "$data/models/m32-f16" --gamma 3 --schedule heuristic --prompt-ids "$(cat "$sg/prompt_ids.txt")" \
    --max-new 64 --ignore-eos --print-ids > "$tmp/spec" 2> "$tmp/spec.err"
if [ "$(tail -n 1 "$tmp/spec")" = "$(cat "$sg/greedy_ids.txt")" ]; then ok "generate --draft greedy == HF"; else bad "generate --draft greedy == HF"; fi
grep -q "acceptance rate" "$tmp/spec.err" && ok "generate --draft reports spec stats" || bad "generate --draft reports spec stats"
"$kv" generate --model "$sm" --draft "$data/models/m32-f16" --intermediate "$data/models/m80-bf16" --schedule aimd --gamma 2 \
    --prompt-ids "$(cat "$sg/prompt_ids.txt")" --max-new 64 --ignore-eos --json --compare > "$tmp/specj" 2>&1
grep -q '"speedup"' "$tmp/specj" && grep -q "\"ids\":\[$(tr ' ' ',' < "$sg/greedy_ids.txt")\]" "$tmp/specj" &&
    ok "generate --draft --intermediate --json greedy == HF" || bad "generate --draft --intermediate --json greedy == HF"
# KV policies on each model: greedy spec under policies == target-only greedy under the target's policy
"$kv" generate --model "$sm" --policy streaming:sink=2,recent=12 --prompt-ids "$(cat "$sg/prompt_ids.txt")" \
    --max-new 48 --ignore-eos --print-ids > "$tmp/pol" 2> "$tmp/pol.err"
"$kv" generate --model "$sm" --policy streaming:sink=2,recent=12 --draft "$data/models/m32-f16" --draft-policy h2o:heavy=4,recent=8 \
    --intermediate "$data/models/m80-bf16" --intermediate-policy window:recent=10 --gamma 3 \
    --prompt-ids "$(cat "$sg/prompt_ids.txt")" --max-new 48 --ignore-eos --print-ids > "$tmp/polspec" 2> "$tmp/polspec.err"
if [ -s "$tmp/pol" ] && [ "$(tail -n 1 "$tmp/pol")" = "$(tail -n 1 "$tmp/polspec")" ] &&
   [ "$(tail -n 1 "$tmp/pol")" != "$(cat "$sg/greedy_ids.txt" | cut -d' ' -f1-48)" ] &&
   grep -q "draft policy h2o" "$tmp/polspec.err" && grep -q "target policy streaming" "$tmp/pol.err"; then
    ok "generate --policy/--draft-policy/--intermediate-policy: spec == target-only under the policy"
else bad "generate --policy/--draft-policy/--intermediate-policy: spec == target-only under the policy"; fi
expect "--draft-policy needs --draft" 2 "needs --draft" -- "$kv" generate --model "$sm" --draft-policy full --prompt-ids 1
expect "bad --draft-policy" 1 "draft-policy" -- "$kv" generate --model "$sm" --draft "$data/models/m32-f16" --draft-policy nope --prompt-ids 1
expect "bad --schedule" 2 "schedule" -- "$kv" generate --model "$sm" --draft "$data/models/m32-f16" --schedule fast --prompt-ids 1
expect "draft vocab mismatch" 1 "vocabulary mismatch" -- "$kv" generate --model "$sm" --draft "$data/models/m256-f16" --prompt-ids 1

# --gpu N (full cache on the CUDA backend; policies and --draft in offload
# mode): without a device it exits 1 with the loader's reason; with the mock
# library (CPU ops behind the CUDA table, build/tests/libkvcuda_mock.so) the
# whole --gpu path runs and must equal the CPU output exactly. A CUDA=0
# build never loads any library.
"$kv" logits --model "$sm" --ids-file "$sg/all_ids.txt" --out "$tmp/g.f32" --gpu 0 > "$tmp/gpu0" 2>&1; got=$?
if [ $got -eq 0 ] || { [ $got -eq 1 ] && grep -q -- "--gpu 0: no CUDA device available (" "$tmp/gpu0"; }; then
    ok "--gpu 0 runs or exits 1 with the loader's reason"
else bad "--gpu 0 (rc $got: $(head -c 300 "$tmp/gpu0"))"; fi
mock=$build/tests/libkvcuda_mock.so
if [ -f "$mock" ] && ! grep -q "built without CUDA" "$tmp/gpu0"; then
    mk() { KV_CUDA_LIB=$(cd "$(dirname "$mock")" && pwd)/$(basename "$mock") "$@"; }
    bm=$data/models/m80-bf16; bg=$data/golden/m80-bf16
    "$kv" logits --model "$bm" --ids-file "$bg/all_ids.txt" --out "$tmp/c.f32" --batch 7 2>/dev/null
    mk "$kv" logits --model "$bm" --ids-file "$bg/all_ids.txt" --out "$tmp/g.f32" --batch 7 --gpu 0 2> "$tmp/g.err"
    cmp -s "$tmp/c.f32" "$tmp/g.f32" && grep -q "gpu 0: mock" "$tmp/g.err" && ok "logits --gpu 0 (mock) == CPU, 16-bit weights" ||
        bad "logits --gpu 0 (mock) == CPU"
    mk "$kv" generate --model "$sm" --prompt-ids "$(cat "$sg/prompt_ids.txt")" --max-new 64 --ignore-eos --print-ids --gpu 0 \
        > "$tmp/ggen" 2>/dev/null
    [ "$(tail -n 1 "$tmp/ggen")" = "$(cat "$sg/greedy_ids.txt")" ] && ok "generate --gpu 0 (mock) greedy == HF" ||
        bad "generate --gpu 0 (mock) greedy == HF"
    for mode in "" "--chunk 40" "--prefill 30" "--policy h2o:sink=2,heavy=8,recent=24" "--policy tova:budget=24" "--prefill 40 --policy snapkv:budget=24,window=4"; do
        # shellcheck disable=SC2086
        "$kv" ppl --model "$tm" --data "$data/datasets/kjv-nt-head.txt" --tokens 200 $mode --json 2>/dev/null |
            sed 's/"tokens_per_s":[0-9.e+-]*//' > "$tmp/pc"
        # shellcheck disable=SC2086
        mk "$kv" ppl --model "$tm" --data "$data/datasets/kjv-nt-head.txt" --tokens 200 $mode --json --gpu 0 2>/dev/null |
            sed 's/"tokens_per_s":[0-9.e+-]*//' > "$tmp/pg"
        [ -s "$tmp/pc" ] && cmp -s "$tmp/pc" "$tmp/pg" && ok "ppl ${mode:-streaming} --gpu 0 (mock) == CPU" ||
            bad "ppl ${mode:-streaming} --gpu 0 (mock) == CPU ($(cat "$tmp/pc") vs $(cat "$tmp/pg"))"
    done
    mk "$kv" ppl --model "$tm" --data "$data/datasets/kjv-nt-head.txt" --tokens 60 --policy knorm:keep_ratio=0.5,prune_after=16 --gpu 0 \
        2>&1 >/dev/null | grep -q "offload mode" && ok "ppl --policy knorm --gpu 0 says offload mode" || bad "ppl --policy knorm --gpu 0: no offload mode line"
    mk "$kv" ppl --model "$tm" --data "$data/datasets/kjv-nt-head.txt" --tokens 60 --policy streaming:sink=4,recent=16 --gpu 0 \
        2>&1 >/dev/null | grep -q "(device mode)" && ok "ppl --policy streaming --gpu 0 runs on the device cache" ||
        bad "ppl --policy streaming --gpu 0: no device mode line"
    sp="--max-new 40 --ignore-eos --print-ids --draft $sm --policy h2o:sink=2,heavy=8,recent=12 --draft-policy window:recent=8"
    # shellcheck disable=SC2086
    "$kv" generate --model "$sm" --prompt-ids "$(cat "$sg/prompt_ids.txt")" $sp > "$tmp/sc" 2>/dev/null
    # shellcheck disable=SC2086
    mk "$kv" generate --model "$sm" --prompt-ids "$(cat "$sg/prompt_ids.txt")" $sp --gpu 0 > "$tmp/sg" 2>/dev/null
    [ -s "$tmp/sc" ] && [ "$(tail -n 1 "$tmp/sc")" = "$(tail -n 1 "$tmp/sg")" ] && ok "generate --draft --policy --gpu 0 (mock, offload) == CPU" ||
        bad "generate --draft --policy --gpu 0 (mock) == CPU"
    expect "--gpu 1 with one (mock) device" 1 "no such device" -- mk "$kv" logits --model "$sm" --ids-file "$sg/all_ids.txt" --out "$tmp/g.f32" --gpu 1
fi

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
