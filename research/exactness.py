"""How far chunked and sequence-parallel runs are from one whole pass, per model configuration.

    python -m research.exactness                    # float64 and float32, chunks of 1-5, 2 and 4 ranks
    python -m research.exactness --json runs/exactness.json

For each configuration (the layer parts, the HRR forms; causal and not), a small Hrrformer
(2 layers, dim 16, 2 heads, padded batch of 2 × 11 tokens) runs once whole; then with sequence
chunking (each chunk size) and split over 2 and 4 processes (gloo, :func:`research.launch.launch_local`,
the parameter gradients all-reduced as in training). Printed: the largest |Δ| of the logits and of
every parameter gradient against the whole pass, relative to the largest |value|. The tests
(tests/test_chunked.py, tests/test_parallel.py) assert these within tolerances; this reports the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hrrformer import Hrrformer, HrrformerConfig
from hrrformer.parallel import enable_sequence_parallel, reduce_sequence_parallel_gradients, shard_sequence
from research.launch import launch_local

CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {},
    "short_conv 4": dict(short_conv=4),
    "output_gate": dict(output_gate=True),
    "both parts, bias": dict(short_conv=4, output_gate=True, attention_bias=True),
    "causal, both parts": dict(causal=True, short_conv=4, output_gate=True),
    "causal recall + write gate + short_conv 4": dict(causal=True, hrr_output="recall", write_gate=True, short_conv=4),
    "retrieved, memories 2, both parts": dict(hrr_output="retrieved", memories=2, short_conv=3, output_gate=True),
    "causal recall, shared q/k projection, π, write gate, short_conv 4": dict(
        causal=True, hrr_output="recall", shared_qk=True, projection=True, write_gate=True, short_conv=4
    ),
    "causal recall, wide heads (d 24 ≠ E/h 8), both parts": dict(
        causal=True, hrr_output="recall", write_gate=True, head_dim=24, short_conv=4, output_gate=True
    ),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def model_of(options: dict[str, Any], dtype: torch.dtype) -> Hrrformer:
    torch.manual_seed(0)
    config = HrrformerConfig(vocab_size=20, max_len=40, dim=16, heads=2, layers=2, dropout=0.0, pooling="mean")
    for name, value in options.items():
        setattr(config, name, value)
    config.__post_init__()
    return Hrrformer(config).to(dtype)


def sample_tokens() -> torch.Tensor:
    """(2, 11): row 0 real for 5 tokens then padding, row 1 real throughout."""
    tokens = torch.randint(1, 20, (2, 11), generator=torch.Generator().manual_seed(1))
    tokens[0, 5:] = 0
    return tokens


def step(model: Hrrformer, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the parameter gradients of a fixed linear loss of them."""
    logits = model(tokens)  # (B, C)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2), dtype=logits.dtype)
    (logits * weights).sum().backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def difference(run: tuple[torch.Tensor, dict], whole: tuple[torch.Tensor, dict]) -> dict[str, float]:
    grads = [_relative(run[1][name], g) for name, g in whole[1].items()]
    return {"logits": _relative(run[0], whole[0]), "gradients": max(grads)}


def chunked(options: dict[str, Any], dtype: torch.dtype, sizes: range) -> dict[str, dict[str, float]]:
    """{chunk size: the largest relative |Δ| of logits and gradients against the whole pass}."""
    whole = step(model_of(options, dtype), sample_tokens())
    out = {}
    for size in sizes:
        model = model_of(options, dtype)
        for block in model.encoder.blocks:
            block.chunk_size = size
        out[str(size)] = difference(step(model, sample_tokens()), whole)
    return out


def _parallel_worker(rank: int, world_size: int, out_dir: str) -> None:
    group = dist.group.WORLD
    results = {}
    for dtype_name, dtype in DTYPES.items():
        for name, options in CONFIGS.items():
            reference = model_of(options, dtype)
            split = enable_sequence_parallel(copy.deepcopy(reference), group)
            whole = step(reference, sample_tokens())
            local, _, _ = shard_sequence(sample_tokens(), group)
            logits = split(local)
            weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2), dtype=logits.dtype)
            (logits * weights).sum().backward()
            reduce_sequence_parallel_gradients(split, group)
            grads = {n: p.grad.detach().clone() for n, p in split.named_parameters() if p.grad is not None}
            results[f"{dtype_name}|{name}"] = difference((logits.detach(), grads), whole)
    if rank == 0:
        Path(out_dir, "parallel.json").write_text(json.dumps(results))


def parallel(world_size: int) -> dict[str, dict[str, float]]:
    """{"dtype|config": the largest relative |Δ| over ``world_size`` processes}."""
    with tempfile.TemporaryDirectory() as out_dir:
        launch_local(_parallel_worker, world_size, (out_dir,), timeout_s=600, collective_timeout_s=60, threads=1)
        return json.loads(Path(out_dir, "parallel.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ranks = {w: parallel(w) for w in (2, 4)}
    table = []
    for dtype_name, dtype in DTYPES.items():
        for name, options in CONFIGS.items():
            chunks = chunked(options, dtype, range(1, 6))
            row = {
                "dtype": dtype_name,
                "config": name,
                "chunked": max(max(d.values()) for d in chunks.values()),
                **{f"{w} ranks": max(ranks[w][f"{dtype_name}|{name}"].values()) for w in ranks},
            }
            table.append(row)
            print(f"{dtype_name:8s} {name:45s} chunked {row['chunked']:.1e}  2 ranks {row['2 ranks']:.1e}  "
                  f"4 ranks {row['4 ranks']:.1e}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
