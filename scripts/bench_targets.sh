#!/usr/bin/env bash
# The whole-model rows of BENCHMARKS.md (issue #5's training-step targets), on a quiet machine.
# Usage: bash scripts/bench_targets.sh [OUT_DIR]   (default runs/bench-targets); ~8 minutes here.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/bench-targets}"
bench=".venv/bin/hrrformer bench --attention hrr"
$bench --model malware --batch 2 --seq-lens 16384 --out "$out/malware-b2-16k"
$bench --model malware --batch 1 --seq-lens 131072 --out "$out/malware-b1-131k"
# 2^20 bytes: sequence chunking, and glibc's default allocator (keeping freed memory fragments the heap at this size)
$bench --model malware --batch 1 --seq-lens 1048576 --chunk-size 65536 --malloc default \
  --warmup 0 --repeats 1 --timeout 900 --out "$out/malware-b1-1m"
$bench --model malware --batch 2 --seq-lens 16384 --compile --timeout 600 --out "$out/malware-b2-16k-compiled"
