#!/usr/bin/env bash
# ListOps against tree length (issue 18): where does the paper's HRR stop leaving the plateau, and
# do its variants move that length? The `demo` model (1 layer, dim 64, 4 heads, B = 32), generated
# trees of each length range (30,000 / 1,000 / 2,000, seed 0), two runs side by side, one thread
# each, from a snapshot of the committed code (git archive HEAD), same seed.
# Usage: bash scripts/length_sweep.sh MINUTES RANGE... (RANGE = MIN-MAX tokens, e.g. 100-500)
# Runs: runs/sweep/l<MAX>-<variant>/; logs: logs/sweep-*.log. Finished runs are skipped.
# Summary: python scripts/summarize_runs.py --leave 2.1 runs/sweep/l<MAX>-*
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="$1"; shift
snapshot="$(mktemp -d)"
git archive HEAD src | tar -x -C "$snapshot"
mkdir -p logs runs/sweep
hrr() { PYTHONPATH="$snapshot/src" .venv/bin/python -m hrrformer "$@"; }
run() {  # name, data, max_len, then hrrformer train arguments (in the background)
  local name="$1" data="$2" max_len="$3"; shift 3
  if [ -f "runs/sweep/$name/summary.json" ]; then echo "skip $name (done)"; return; fi
  echo "$(date -u +%FT%TZ) start $name"
  OMP_NUM_THREADS=1 PYTHONPATH="$snapshot/src" /usr/bin/time -v .venv/bin/python -m hrrformer train \
    --task listops --preset demo --data "$data" --max-len "$max_len" --epochs 50 --max-minutes "$minutes" \
    --no-progress --log-every 10 --overwrite --out "runs/sweep/$name" "$@" > "logs/sweep-$name.log" 2>&1 &
}
variant_ls_tau=(--length-scale --score-scale 16 --learn-score-scale)
variant_retrieved=(--hrr-output retrieved --length-scale --score-scale 16 --learn-score-scale)
for range in "$@"; do
  lo="${range%-*}" hi="${range#*-}" data="data/listops-sweep/$range"
  [ -f "$data/basic_test.tsv" ] || hrr data listops --out "$data" --train 30000 --val 1000 --test 2000 \
    --min-len "$lo" --max-len "$hi" --seed 0 > "logs/sweep-data-$range.log" 2>&1
  run "l$hi-paper" "$data" "$hi"
  run "l$hi-softmax" "$data" "$hi" --attention softmax
  wait
  run "l$hi-ls-tau" "$data" "$hi" "${variant_ls_tau[@]}"
  run "l$hi-retrieved" "$data" "$hi" "${variant_retrieved[@]}"
  wait
done
rm -rf "$snapshot"
