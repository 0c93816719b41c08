#!/bin/sh
# plot_loss.sh MODEL_DIR — loss.png from MODEL_DIR/loss.tsv (written by
# train.py): the per-step training loss and its 50-step moving average.
# Needs gnuplot (Debian gnuplot-nox).
set -eu
d=${1:?usage: plot_loss.sh MODEL_DIR}
gnuplot <<EOF2
set terminal pngcairo size 900,500 font "sans,10"
set output "$d/loss.png"
set datafile separator "\t"
set title "kvtiny training loss (cross-entropy, nats/token)"
set xlabel "step (batch 8 x 512 tokens)"
set ylabel "loss"
set grid
set key top right
n = 50
array buf[n]
do for [i=1:n] { buf[i] = 0 }
s = 0; k = 0
avg(x) = (k = k + 1, j = (k - 1) % n + 1, s = s - buf[j] + x, buf[j] = x, s / (k < n ? k : n))
plot "$d/loss.tsv" every ::1 using 1:2 with lines lc rgb "#b0b0ff" title "loss", \
     "" every ::1 using 1:(avg(\$2)) with lines lw 2 lc rgb "#0000a0" title "50-step mean"
EOF2
echo "plot_loss.sh: wrote $d/loss.png"
