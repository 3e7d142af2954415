"""The capacity of one HRR memory: how often an ideal key recalls its value among N candidates.

n pairs (k_i, v_i) of random vectors in d dimensions are superposed, β = Σ_i k_i ⊛ v_i, and the
first key unbinds v̂ = k_1† ⊛ β = v_1 + Σ_{i>1} k_1† ⊛ k_i ⊛ v_i. The read-out is right when v̂'s
dot product with v_1 beats its dot product with each of N − 1 other random values (a clean-up
memory over the vocabulary, as the output head of a recall model is). Each crosstalk term has
the norm of a value, so v̂'s noise grows as √(n − 1) while its projection on a d-dimensional
candidate shrinks as 1/√d: the margin is ~√(d/n), and the accuracy falls once n approaches d / (2 ln N).

This is the ceiling of a perfectly trained memory (keys that unbind exactly, ``projection``: π,
unit-magnitude spectra), to set beside what models learn (EXPERIMENTS.md, "Associative recall").

``--memories M`` routes the pairs into M memories by the keys themselves, as the layer's
``memory_routing="key"`` does: r(k) = softmax(k̂ R), R (d × M) with N(0, σ²) entries
(``--route-scale σ``, the layer's initial 8), and the first key reads Σ_j r_1(j) β_j, so each
pair enters its read with weight r(k_1)·r(k_i): ~1 for its own key, ~1/M for another.

    .venv/bin/python -m research.hrr_capacity --dims 64,128,256,512,1024,2048 --pairs 4,8,16,32,64 \
        --candidates 4096 --out runs/capacity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hrrformer import hrr


def recall_accuracy(
    dim: int,
    pairs: int,
    candidates: int,
    trials: int = 256,
    projection: bool = True,
    seed: int = 0,
    block: int = 64,
    memories: int = 1,
    route_scale: float = 8.0,
) -> float:
    """The fraction of ``trials`` memories of ``pairs`` random pairs in ``dim`` dimensions whose first
    key's read-out scores its own value above ``candidates`` − 1 random others (ties count as wrong);
    ``memories`` > 1: routed by the keys (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    right = 0
    for start in range(0, trials, block):
        n = min(block, trials - start)
        keys = torch.randn(n, pairs, dim, generator=g, dtype=torch.float64) / dim**0.5  # (n, P, d)
        values = torch.randn(n, pairs, dim, generator=g, dtype=torch.float64) / dim**0.5
        if projection:
            keys = hrr.projection(keys)
        weights = torch.ones(n, pairs, dtype=torch.float64)  # (n, P): how much each pair enters the read
        if memories > 1:
            router = torch.randn(dim, memories, generator=g, dtype=torch.float64) * route_scale
            routes = (keys / keys.norm(dim=-1, keepdim=True) @ router).softmax(-1)  # (n, P, M)
            weights = (routes * routes[:, :1]).sum(-1)  # r(k_1) · r(k_i)
        memory = (weights[..., None] * hrr.bind(keys, values)).sum(1)  # (n, d): Σ_j r_1(j) β_j
        read = hrr.unbind(memory, keys[:, 0])  # (n, d): k_1† ⊛ β
        own = (read * values[:, 0]).sum(-1)  # (n,)
        best_other = torch.full_like(own, -torch.inf)
        for _ in range(0, candidates - 1, 1024):  # others in pieces of ≤ 1,024: memory stays O(n·1024·d)
            others = torch.randn(n, min(1024, candidates - 1), dim, generator=g, dtype=torch.float64) / dim**0.5
            best_other = torch.maximum(best_other, torch.einsum("nd,nmd->nm", read, others).amax(-1))
        right += int((own > best_other).sum())
    return right / trials


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="64,128,256,512,1024", help="memory widths d, comma-separated")
    parser.add_argument("--pairs", default="4,8,16,32,64", help="pairs superposed n, comma-separated")
    parser.add_argument("--candidates", type=int, default=4096, help="values to tell apart (MQAR: V / 2)")
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--no-projection", action="store_true", help="keys as drawn, without π")
    parser.add_argument("--memories", type=int, default=1, help="memories routed by the keys (1: one β)")
    parser.add_argument("--route-scale", type=float, default=8.0, help="σ of the key router's entries")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",")]
    pairs = [int(n) for n in args.pairs.split(",")]
    table = {
        d: {
            n: recall_accuracy(
                d, n, args.candidates, args.trials, not args.no_projection,
                memories=args.memories, route_scale=args.route_scale,
            )
            for n in pairs
        }
        for d in dims
    }  # fmt: skip
    routed = f", {args.memories} memories routed by the keys" if args.memories > 1 else ""
    print(f"recall of an ideal HRR memory among {args.candidates} values ({args.trials} trials{routed})")
    print("d \\ n " + "".join(f"{n:>8d}" for n in pairs))
    for d, row in table.items():
        print(f"{d:<6d}" + "".join(f"{acc:8.3f}" for acc in row.values()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"candidates": args.candidates, "trials": args.trials, "memories": args.memories, "accuracy": table}
        args.out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
