#!/usr/bin/env bash
# The associative-recall study of EXPERIMENTS.md ("Associative recall"): Zoology's Figure 2 at CPU
# scale. Query accuracy of the mqar cpu preset (2 layers, causal, a kernel-4 short convolution, no
# position embedding) against width, per (T, pairs), per model, two runs at a time, one thread each.
# Usage: bash scripts/mqar_study.sh [MINUTES_PER_RUN] [MODEL...]   (default 10; models: variant
#        names of variant_args in scripts/side_by_side.sh, default "softmax hrr retrieved")
#        WIDTHS="64 128 256" SHAPES="64:4 128:8 256:16" LRS="3e-3" SEEDS="0" TRAIN=100000 \
#          bash scripts/mqar_study.sh 10 softmax retrieved
#        TAG=h1 EXTRA="--heads 1" bash scripts/mqar_study.sh 10 recall-wg   (more hrrformer train flags
#          for every run, and a tag in the run names: runs/mqar/T64-P4-d128-lr3e-3-s0-h1-recall-wg/)
# Data: data/mqar/T<T>-P<pairs>/{train,val,test}.npz (V = 8,192), made once with `hrrformer data mqar`.
# Runs: runs/mqar/T<T>-P<pairs>-d<width>-lr<lr>-s<seed>-<model>/ ; logs: logs/mqar-<same>.log.
# Finished runs (summary.json present) are skipped, so the study can be restarted.
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
shift || true
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(softmax hrr retrieved)
source scripts/side_by_side.sh
for model in "${models[@]}"; do variant_args "$model" > /dev/null || exit 2; done
read -r -a widths <<< "${WIDTHS:-64 128 256}"
read -r -a shapes <<< "${SHAPES:-64:4 128:8 256:16}"
read -r -a lrs <<< "${LRS:-3e-3}"
read -r -a seeds <<< "${SEEDS:-0}"
tag="${TAG:+$TAG-}"
queue=()  # "name|flags" of every run, in order
for shape in "${shapes[@]}"; do
  t="${shape%%:*}" pairs="${shape##*:}" data="data/mqar/T${shape%%:*}-P${shape##*:}"
  if [ ! -f "$data/test.npz" ]; then
    hrrformer_snapshot data mqar --vocab 8192 --seq-len "$t" --kv-pairs "$pairs" --train "${TRAIN:-100000}" \
      --val 3000 --test 3000 --seed 0 --out "$data" || exit 1
  fi
  for width in "${widths[@]}"; do
    for lr in "${lrs[@]}"; do
      for seed in "${seeds[@]}"; do
        for model in "${models[@]}"; do
          queue+=("T$t-P$pairs-d$width-lr$lr-s$seed-$tag$model|--task mqar --preset cpu --data $data --max-len $t \
--dim $width --lr $lr --seed $seed --max-minutes $minutes --log-every 20 $(variant_args "$model") ${EXTRA:-}")
        done
      done
    done
  done
done
running=0
for item in "${queue[@]}"; do
  # shellcheck disable=SC2086  # the flags are words
  train_in_background mqar "${item%%|*}" ${item#*|}
  running=$((running + 1))
  if [ "$running" -eq 2 ]; then wait; running=0; fi
done
wait
echo "$(date -u +%FT%TZ) end mqar study"
