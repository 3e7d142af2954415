# Sourced by scripts/experiments.sh and scripts/length_sweep.sh: training runs from a snapshot of
# the committed code (git archive HEAD, so editing the working tree while a queue runs changes
# nothing), one thread each, in the background, each under /usr/bin/time -v (peak RSS).
snapshot="$(mktemp -d)"
git archive HEAD src | tar -x -C "$snapshot"
trap 'rm -rf "$snapshot"' EXIT
mkdir -p logs
hrrformer_snapshot() { PYTHONPATH="$snapshot/src" .venv/bin/python -m hrrformer "$@"; }
train_in_background() {  # group, name, then hrrformer train arguments → runs/GROUP/NAME, logs/GROUP-NAME.log
  local group="$1" name="$2"; shift 2
  if [ -f "runs/$group/$name/summary.json" ]; then echo "skip $name (done)"; return; fi
  echo "$(date -u +%FT%TZ) start $name"
  mkdir -p "runs/$group"
  OMP_NUM_THREADS=1 PYTHONPATH="$snapshot/src" /usr/bin/time -v .venv/bin/python -m hrrformer train \
    --out "runs/$group/$name" --overwrite --no-progress "$@" > "logs/$group-$name.log" 2>&1 &
}
variant_args() {  # variant name → its hrrformer train flags (preset: the preset as it is; NAME-scK, NAME-gate, NAME-skip, NAME-wg: a short convolution of kernel K, the output gate, the value skip, the write gate; NAME-nosc: no short convolution; NAME-bf16, NAME-fp32: --amp bf16 or none; hrr: the paper's formula, as paper; NAME-m4: 4 memories; NAME-post, -nofn, -cls, -mean: post-norm, no final norm, CLS or mean pooling; NAME-pi: π on q and k; NAME-hN: N heads; NAME-lN: N encoder blocks; NAME-dD: heads of width D; NAME-sqk: q and k from one projection; NAME-shift: filters started at a token shift; NAME-key: memories routed by the keys; NAME-one: one memory per head)
  case "$1" in
    paper|hrr) echo --attention hrr --hrr-output value --no-length-scale --score-scale none --no-learn-score-scale ;;
    softmax) echo --attention softmax ;;
    none) echo --attention none ;;  # the ablation: the block without its attention (outputs v_t)
    ls-tau) echo --length-scale --score-scale 16 --learn-score-scale ;;
    retrieved) echo --hrr-output retrieved --length-scale --score-scale 16 --learn-score-scale ;;
    retrieved-only) echo --hrr-output retrieved ;;
    retrieved-tau) echo --hrr-output retrieved --score-scale 16 --learn-score-scale ;;
    retrieved-ls) echo --hrr-output retrieved --length-scale ;;
    retrieved-h1) echo "$(variant_args retrieved)" --heads 1 ;;
    recall) echo --hrr-output recall --no-length-scale --score-scale none --no-learn-score-scale ;;  # no weights to scale (a preset's are reset)
    preset) echo ;;  # the preset as it is
    *-sc[1-9])  # NAME-scK: NAME with a short convolution of kernel K on q, k and v
      local base; base="$(variant_args "${1%-sc*}")" || exit 2
      echo "$base" --short-conv "${1##*-sc}" ;;
    *-nosc)  # NAME-nosc: NAME without the short convolution (its filters' init back to PyTorch's)
      local base; base="$(variant_args "${1%-nosc}")" || exit 2
      echo "$base" --short-conv none --short-conv-init random ;;
    *-gate)  # NAME-gate: NAME with the output gate
      local base; base="$(variant_args "${1%-gate}")" || exit 2
      echo "$base" --output-gate ;;
    *-skip)  # NAME-skip: NAME with the value skip (o + D ⊙ v_t: the attention added to the block without it)
      local base; base="$(variant_args "${1%-skip}")" || exit 2
      echo "$base" --value-skip ;;
    *-wg)  # NAME-wg: NAME with the HRR write gate (k_t scaled by a learned sigmoid per position and head)
      local base; base="$(variant_args "${1%-wg}")" || exit 2
      echo "$base" --write-gate ;;
    *-bf16|*-fp32)  # NAME-bf16, NAME-fp32: NAME with bf16 autocast (--amp bf16) or without (--amp none)
      local base; base="$(variant_args "${1%-*}")" || exit 2
      case "${1##*-}" in bf16) echo "$base" --amp bf16 ;; fp32) echo "$base" --amp none ;; esac ;;
    *-m[1-9]|*-m[1-9][0-9])  # NAME-mM: NAME with M memories (several β per head)
      local base; base="$(variant_args "${1%-m*}")" || exit 2
      echo "$base" --memories "${1##*-m}" ;;
    *-key)  # NAME-key: NAME with its memories routed by the keys themselves (--memory-routing key)
      local base; base="$(variant_args "${1%-key}")" || exit 2
      echo "$base" --memory-routing key ;;
    *-one)  # NAME-one: NAME with one memory per head (--memories 1 --memory-routing input)
      local base; base="$(variant_args "${1%-one}")" || exit 2
      echo "$base" --memories 1 --memory-routing input ;;
    *-shift)  # NAME-shift: NAME with the short convolution's filters started at a token shift (k at lag 1)
      local base; base="$(variant_args "${1%-shift}")" || exit 2
      echo "$base" --short-conv-init shift ;;
    *-sqk)  # NAME-sqk: NAME with q and k from one projection (W_q = W_k)
      local base; base="$(variant_args "${1%-sqk}")" || exit 2
      echo "$base" --shared-qk ;;
    *-pi)  # NAME-pi: NAME with π on q and k (capacity)
      local base; base="$(variant_args "${1%-pi}")" || exit 2
      echo "$base" --projection ;;
    *-post|*-nofn|*-cls|*-mean)  # what surrounds the attention: post-norm blocks, no final LayerNorm, CLS or mean pooling
      local base; base="$(variant_args "${1%-*}")" || exit 2
      case "${1##*-}" in post) echo "$base" --norm post ;; nofn) echo "$base" --no-final-norm ;; cls|mean) echo "$base" --pooling "${1##*-}" ;; esac ;;
    *-d[1-9][0-9]|*-d[1-9][0-9][0-9]|*-d[1-9][0-9][0-9][0-9])  # NAME-dD: NAME with heads D wide (HRR: memories of D)
      local base; base="$(variant_args "${1%-d*}")" || exit 2
      echo "$base" --head-dim "${1##*-d}" ;;
    *-l[1-9])  # NAME-lN: NAME with N encoder blocks (depth)
      local base; base="$(variant_args "${1%-l*}")" || exit 2
      echo "$base" --layers "${1##*-l}" ;;
    *-h[1-9]|*-h[1-9][0-9])  # NAME-hN: NAME with N heads
      local base; base="$(variant_args "${1%-h*}")" || exit 2
      echo "$base" --heads "${1##*-h}" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}
