#!/usr/bin/env bash
# The runs behind EXPERIMENTS.md, one after another (2 cores: never two at once).
# Usage: bash scripts/experiments.sh [MINUTES_PER_RUN]   (default 60, the cpu preset's budget)
# Logs: logs/exp-<name>.log; runs: runs/exp/<name>/ (metrics.jsonl, summary.json, curves).
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
shared="${SHARED_DATA:-../shared/data}"
mkdir -p logs runs/exp
run() {  # name, then hrrformer train arguments
  local name="$1"; shift
  if [ -f "runs/exp/$name/summary.json" ]; then echo "skip $name (done)"; return; fi
  echo "$(date -u +%FT%TZ) start $name"
  /usr/bin/time -v .venv/bin/hrrformer train --out "runs/exp/$name" --overwrite --max-minutes "$minutes" \
    --no-progress --log-every 20 "$@" > "logs/exp-$name.log" 2>&1
  echo "$(date -u +%FT%TZ) end $name rc=$?"
}
for attention in hrr softmax; do
  run "listops-$attention" --task listops --preset cpu --attention "$attention"
  run "text-$attention" --task text --preset cpu --attention "$attention" --data "$shared/aclImdb_train.tar.gz"
  run "image-$attention" --task image --preset cpu --attention "$attention" --data "$shared/cifar10_train_images.tar.gz"
  run "pathfinder-$attention" --task pathfinder --preset cpu --attention "$attention"
  run "imdb-pairs-$attention" --task imdb-pairs --preset cpu --attention "$attention" --data "$shared/aclImdb_train.tar.gz"
done
run "listops-hrr-2layer" --task listops --preset cpu --layers 2
run "image-hrr-2layer" --task image --preset cpu --layers 2 --data "$shared/cifar10_train_images.tar.gz"
