#!/usr/bin/env bash
# The training-step benchmarks of BENCHMARKS.md ("Training steps against the machine's limit"), on a
# quiet machine: the matmul peak, every cpu preset's step in float32 and bf16 with its profile, the
# attention's share (the same model with attention "none"), the layer parts' cost, torch.compile.
# Usage: bash scripts/bench_steps.sh [peak|steps|share|parts|compile]...   (default: all, in order)
#        THREADS=1 bash scripts/bench_steps.sh parts   (threads per step; default 2)
set -u
cd "$(dirname "$0")/.."
bench() { .venv/bin/hrrformer bench --threads "${THREADS:-2}" --peak-file runs/peak/peak.json "$@"; }
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(peak steps share parts compile)
for part in "${parts[@]}"; do
  case "$part" in
    peak) .venv/bin/hrrformer bench --peak --dtype float32,bfloat16 --out runs/peak ;;
    steps) bench --model listops,text,imdb-pairs,image,pathfinder,binaries --attention hrr \
             --dtype float32,bfloat16 --profile --timeout 240 --out runs/bench-amp ;;
    share) bench --model listops,text,image,binaries --attention hrr,none --dtype float32,bfloat16 \
             --timeout 240 --out runs/bench-share ;;
    parts)  # each preset without the parts (Text's has both), then with each, then with both
      for opts in "short_conv=null output_gate=false" "short_conv=4 output_gate=false" \
                  "short_conv=null output_gate=true" "short_conv=4 output_gate=true"; do
        name=$(echo "$opts" | tr -c 'a-z0-9\n' '_')
        # shellcheck disable=SC2046  # the options are words
        bench --model listops,text,image --attention hrr --dtype bfloat16,float32 $(printf -- '--set %s ' $opts) \
          --out "runs/bench-parts/$name"
      done ;;
    compile) bench --model listops,text,image --attention hrr --dtype float32,bfloat16 --compile --timeout 400 \
               --out runs/bench-compile ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
