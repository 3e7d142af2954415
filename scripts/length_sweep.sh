#!/usr/bin/env bash
# ListOps against tree length (issue 18): where does the paper's HRR stop leaving the plateau, and
# do its variants move that length? The `demo` model (1 layer, dim 64, 4 heads, B = 32), generated
# trees of each length range (30,000 / 1,000 / 2,000, seed 0), two runs side by side, one thread
# each, from a snapshot of the committed code (git archive HEAD), same seed.
# Usage: bash scripts/length_sweep.sh MINUTES RANGE... (RANGE = MIN-MAX tokens, e.g. 100-500)
#        VARIANTS="retrieved-only retrieved-tau" bash scripts/length_sweep.sh ...  (two at a time, in
#        order; default: paper softmax ls-tau retrieved; the names: variant_args in side_by_side.sh)
#        SEED=1 bash scripts/length_sweep.sh ...  (the model's and the batches' seed, default 0; the data's
#        stays 0, so every seed trains on the same trees)
# Runs: runs/sweep/l<MAX>-<variant>/ (seed 0) or l<MAX>-<variant>-s<SEED>/; logs: logs/sweep-*.log.
# Finished runs are skipped.
# Summary: python scripts/summarize_runs.py --leave 2.1 runs/sweep/l<MAX>-*
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="$1"; shift
seed="${SEED:-0}"
suffix=""; [ "$seed" = 0 ] || suffix="-s$seed"
source scripts/side_by_side.sh
run() {  # name, data, max_len, then hrrformer train arguments (in the background)
  local name="$1" data="$2" max_len="$3"; shift 3
  train_in_background sweep "$name" --task listops --preset demo --data "$data" --max-len "$max_len" \
    --epochs 50 --max-minutes "$minutes" --log-every 10 --seed "$seed" "$@"
}
read -r -a variants <<< "${VARIANTS:-paper softmax ls-tau retrieved}"
for name in "${variants[@]}"; do variant_args "$name" > /dev/null || exit 2; done
for range in "$@"; do
  lo="${range%-*}" hi="${range#*-}" data="data/listops-sweep/$range"
  [ -f "$data/basic_test.tsv" ] || hrrformer_snapshot data listops --out "$data" --train 30000 --val 1000 --test 2000 \
    --min-len "$lo" --max-len "$hi" --seed 0 > "logs/sweep-data-$range.log" 2>&1
  for i in "${!variants[@]}"; do
    name="${variants[$i]}"
    # shellcheck disable=SC2046  # the flags are words
    run "l$hi-$name$suffix" "$data" "$hi" $(variant_args "$name")
    if (( i % 2 == 1 )); then wait; fi
  done
  wait
done
