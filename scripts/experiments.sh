#!/usr/bin/env bash
# The runs behind EXPERIMENTS.md. Each task's HRR and softmax runs train side by side, one thread
# each (2 cores: a fair split, and a small model gains little from a second thread), so both
# attentions get the same machine and the same budget.
# Usage: bash scripts/experiments.sh [MINUTES_PER_RUN] [TASK...]   (default 60, every task)
#        ARMS="hrr retrieved" bash scripts/experiments.sh 60 image   (the two arms of each pair:
#        variant names of variant_args in scripts/side_by_side.sh; default "hrr softmax")
#        TAG=e10 EXTRA="--epochs 10" bash scripts/experiments.sh 60 text   (more hrrformer train flags
#        for every run, and a tag in the run names: runs/exp/text-e10-hrr/)
#        BINARIES_LENGTHS="16384" bash scripts/experiments.sh 10 binaries   (the binaries' T values; default all four)
# Logs: logs/exp-<name>.log; runs: runs/exp/<name>/ (metrics.jsonl, summary.json).
# Finished runs (summary.json present) are skipped, so the queue can be restarted.
# The code run is a snapshot of the committed tree (git archive HEAD), so editing the working
# tree while the queue runs changes nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
shift || true
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(text listops imdb-pairs pathfinder image binaries layers)
shared="${SHARED_DATA:-$(cd .. && pwd)/shared/data}"
binaries="${BINARIES_DATA:-data/binaries/manifest.csv}"
source scripts/side_by_side.sh
run() {  # name, then hrrformer train arguments (runs in the background)
  local name="$1"; shift
  train_in_background exp "$name" --max-minutes "$minutes" --log-every 20 "$@"
}
read -r -a arms <<< "${ARMS:-hrr softmax}"
for arm in "${arms[@]}"; do variant_args "$arm" > /dev/null || exit 2; done
read -r -a extra <<< "${EXTRA:-}"
tag="${TAG:+-$TAG}"
pair() {  # name, then arguments: NAME[-TAG]-<arm> for each of the arms, side by side
  local name="$1$tag" arm; shift
  for arm in "${arms[@]}"; do
    # shellcheck disable=SC2046  # the flags are words
    run "$name-$arm" $(variant_args "$arm") "$@" "${extra[@]}"
  done
  wait
  echo "$(date -u +%FT%TZ) end $name"
}
for task in "${tasks[@]}"; do
  case "$task" in
    text) pair text --task text --preset cpu --data "$shared/aclImdb_train.tar.gz" ;;
    listops) pair listops --task listops --preset cpu ;;
    imdb-pairs) pair imdb-pairs --task imdb-pairs --preset cpu --data "$shared/aclImdb_train.tar.gz" ;;
    pathfinder) pair pathfinder --task pathfinder --preset cpu ;;
    pathx)  # Path-X (128×128, T = 16,384): HRR only (softmax attention at T = 16,384 trains ~0.2 ex/s here)
      run pathx-hrr --task pathx --preset cpu --attention hrr
      wait ;;
    image) pair image --task image --preset cpu --data "$shared/cifar10_train_images.tar.gz" ;;
    binaries)  # C vs C++ ELF files (python -m research.build_binaries, docs/BINARIES.md); T from 2^10 to 2^17
      for t in ${BINARIES_LENGTHS:-1024 4096 16384 131072}; do
        pair "binaries-T$t" --task binaries --preset cpu --max-len "$t" --epochs 20 --data "$binaries"
      done ;;
    layers)  # single- against multi-layer (HRR), at the same budget
      run listops-hrr-2layer --task listops --preset cpu --layers 2 --attention hrr
      run image-hrr-2layer --task image --preset cpu --layers 2 --attention hrr \
        --data "$shared/cifar10_train_images.tar.gz"
      wait ;;
    *) echo "unknown task $task" >&2; exit 2 ;;
  esac
done
