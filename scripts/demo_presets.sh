#!/usr/bin/env bash
# Every task's `demo` preset, one run at a time with the machine's threads, as a user would run
# it: the wall time (data loading and generation included) and accuracies behind README's
# preset table. Runs: runs/demo/<task>/ (skipped when summary.json exists); logs: logs/demo-<task>.log
# (/usr/bin/time -v at the end). Usage: bash scripts/demo_presets.sh [TASK...]
# (retrieval needs LRA's AAN files, which are not on this machine: pass RETRIEVAL_DATA=PATH.)
set -uo pipefail
cd "$(dirname "$0")/.."
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(listops text imdb-pairs image pathfinder pathx binaries retrieval)
shared="${SHARED_DATA:-$(cd .. && pwd)/shared/data}"
declare -A data=(
  [text]="$shared/aclImdb_train.tar.gz"
  [imdb-pairs]="$shared/aclImdb_train.tar.gz"
  [image]="$shared/cifar10_train_images.tar.gz"
  [binaries]="${BINARIES_DATA:-data/binaries/manifest.csv}"
  [retrieval]="${RETRIEVAL_DATA:-}"
)
mkdir -p logs runs/demo
for task in "${tasks[@]}"; do
  out="runs/demo/$task"
  if [ -f "$out/summary.json" ]; then echo "skip $task (done)"; continue; fi
  args=(--task "$task" --preset demo --out "$out" --overwrite --no-progress)
  if [ -n "${data[$task]+x}" ]; then
    if [ -z "${data[$task]}" ]; then echo "skip $task (no data: set RETRIEVAL_DATA)"; continue; fi
    args+=(--data "${data[$task]}")
  fi
  echo "$(date -u +%FT%TZ) start $task"
  /usr/bin/time -v .venv/bin/python -m hrrformer train "${args[@]}" > "logs/demo-$task.log" 2>&1
  echo "$(date -u +%FT%TZ) end $task: $(grep -o 'Elapsed (wall clock) time.*' "logs/demo-$task.log")"
done
