#!/bin/sh
# plot.sh RESULTS_DB [OUT.png] [SWEEP] — one PNG from any results.db: for the
# `ppl` results of SWEEP (default: every sweep), each policy + params as a
# bar of PPL relative to the full cache of the same model, slice and seed
# (view v_vs_full), labelled with the mean cache tokens it held, next to its
# decode tokens/s relative to full (from the `speed` results, when present).
#
# Uses the sqlite3 CLI and gnuplot (Debian: sqlite3, gnuplot-nox; installed
# on demand when run as root). Example:
#   sh ops/plot.sh results.db policies.png demo
set -eu
db=${1:?usage: plot.sh RESULTS_DB [OUT.png] [SWEEP]}
out=${2:-policies.png}
sweep=${3:-}
[ -f "$db" ] || { echo "plot.sh: $db: no such file" >&2; exit 1; }
for p in sqlite3:sqlite3 gnuplot:gnuplot-nox; do
    cmd=${p%%:*}; pkg=${p#*:}
    if ! command -v "$cmd" > /dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" > /dev/null
        else
            echo "plot.sh: needs $cmd (apt-get install $pkg)" >&2; exit 1
        fi
    fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# one row per (policy, params): label, mean ppl_ratio, mean cache tokens, mean speedup
sqlite3 -separator '	' "$db" "
    WITH p AS (
        SELECT policy || CASE WHEN params_label IS NULL OR params_label = '' THEN ''
                              ELSE ' ' || params_label END AS label,
               model, avg(ppl_ratio) AS r, avg(cache_tokens_mean) AS cache, avg(ppl) AS ppl
        FROM v_vs_full
        WHERE task = 'ppl' AND ppl_ratio IS NOT NULL AND ('$sweep' = '' OR sweep = '$sweep')
        GROUP BY model, label),
    s AS (
        SELECT policy || CASE WHEN params_label IS NULL OR params_label = '' THEN ''
                              ELSE ' ' || params_label END AS label,
               model, avg(speedup) AS sp
        FROM v_vs_full
        WHERE task = 'speed' AND speedup IS NOT NULL AND ('$sweep' = '' OR sweep = '$sweep')
        GROUP BY model, label)
    SELECT replace(p.model || ': ' || p.label, '_', '-'), p.r, round(p.cache), coalesce(s.sp, 0), p.ppl
    FROM p LEFT JOIN s ON s.model = p.model AND s.label = p.label
    ORDER BY p.model, p.r;" > "$tmp/rows.tsv"
n=$(wc -l < "$tmp/rows.tsv")
[ "$n" -gt 0 ] || { echo "plot.sh: no ppl results with a full-cache baseline in $db" >&2; exit 1; }
h=$((220 + 28 * n))
# the speed points (and their x2 axis) only when the sweep has speed results
if awk -F'\t' '$4 > 0 { found = 1 } END { exit !found }' "$tmp/rows.tsv"; then
    x2='set x2label "decode tokens/s relative to full (points)"
set x2tics'
    speed=', "" using ($4 > 0 ? $4 : 1/0):0 axes x2y1 with points pt 7 ps 1.2 lc rgb "black" title "speedup"'
else
    x2=''
    speed=''
fi
cat > "$tmp/p.gp" <<EOF
set terminal pngcairo size 1400,$h font "sans,10"
set output "$out"
set datafile separator "\t"
set title "PPL relative to the full cache (bars; label: mean cache tokens, ppl) and decode speed vs full"
set style fill solid 0.7 border -1
set yrange [-0.7:$n - 0.3]
set ytics nomirror
set xlabel "ppl / ppl(full)   (1.0 = as good as the full cache)"
$x2
set grid xtics
set key bottom right
set offsets 0, 0.35, 0, 0
plot "$tmp/rows.tsv" using (\$2/2):0:(0):(\$2):(\$0-0.35):(\$0+0.35):ytic(1) with boxxyerror title "ppl ratio", \
     "" using 2:0:(sprintf(" %d tok, ppl %.2f", \$3, \$5)) with labels left offset 0.5,0 notitle $speed
EOF
gnuplot "$tmp/p.gp"
echo "plot.sh: wrote $out ($n rows)"
