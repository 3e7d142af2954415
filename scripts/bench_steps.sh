#!/usr/bin/env bash
# The training-step benchmarks of BENCHMARKS.md ("Training steps against the machine's limit"), on a
# quiet machine: the matmul peak, every cpu preset's step in float32 and bf16 with its profile, the
# attention's share (the same model with attention "none"), the layer parts' cost, torch.compile.
# Usage: bash scripts/bench_steps.sh [peak|steps|share|parts|compile]...   (default: all, in order)
set -u
cd "$(dirname "$0")/.."
bench() { .venv/bin/hrrformer bench --threads 2 --peak-file runs/peak/peak.json "$@"; }
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(peak steps share parts compile)
for part in "${parts[@]}"; do
  case "$part" in
    peak) .venv/bin/hrrformer bench --peak --dtype float32,bfloat16 --out runs/peak ;;
    steps) bench --model listops,text,imdb-pairs,image,pathfinder,binaries --attention hrr \
             --dtype float32,bfloat16 --profile --timeout 240 --out runs/bench-amp ;;
    share) bench --model listops,text,image,binaries --attention hrr,none --dtype float32,bfloat16 \
             --timeout 240 --out runs/bench-share ;;
    parts)
      for opts in "" "--set short_conv=4" "--set output_gate=true" "--set short_conv=4 --set output_gate=true"; do
        name=$(echo "paper $opts" | tr -c 'a-z0-9\n' '_')
        # shellcheck disable=SC2086  # the options are words
        bench --model listops,text --attention hrr --dtype float32,bfloat16 $opts --out "runs/bench-parts/$name"
      done ;;
    compile) bench --model listops,text,image --attention hrr --dtype float32,bfloat16 --compile --timeout 400 \
               --out runs/bench-compile ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
