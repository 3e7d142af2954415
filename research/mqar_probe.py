"""Inside a trained MQAR recall model: what each HRR memory holds and how well a query reads it.

For a run of ``--task mqar`` with ``--hrr-output recall`` (causal), on fresh sequences from the
run's own setting, and for each layer's first head, at each query position t whose key was
given at position 2i (its value at 2i + 1, where the short convolution lets k carry the key and
v the value):

- **write gates** g_s (``--write-gate``): their mean at the value positions 2i + 1 of the pairs,
  and at every other position; the memory's effective number of writes at t,
  Σ_{s≤t} g_s / max_{s≤t} g_s (how many full writes; t + 1 without a gate);
- **the key match**: q_t† ⊛ k_s for s = 2i + 1 should be the identity δ; its δ-fraction
  (q_t† ⊛ k_s)[0] / ‖q_t† ⊛ k_s‖ (1: an exact unbinding);
- **signal and crosstalk**: v̂_t = q_t† ⊛ β_t split into the term of the pair,
  g_s q_t† ⊛ k_s ⊛ v_s, and the rest; the rest's norm over the term's (the crosstalk ratio, < 1 to
  recall), set beside √(n/d) of an ideal memory (research/hrr_capacity.py);

- **routes** (``--memories M`` routed, e.g. ``--memory-routing key``): query t reads the pair
  written at s with weight r^q_t · r^k_s; the crosstalk and the writes above count each pair at
  that weight, and the weight of the query's own pair is set beside the mean of the others';

and for the whole model, **how it answers**: its accuracy at the queries, and how often its answer
is one of the sequence's values at all. A model that knows which values the sequence holds but
not which key each belongs to answers one of them (~1/pairs right); one that recalls, the right one.

    .venv/bin/python -m research.mqar_probe runs/mqar/demo-recall-wg-d256-h1 --sequences 256
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from hrrformer import hrr
from hrrformer.attention import HrrAttention
from hrrformer.data.mqar import multiquery_ar
from hrrformer.ops.hrr_attention import Routed
from hrrformer.rundir import TrainConfig, load_run


def mqar_setting(config: TrainConfig, kv_pairs: int | None = None) -> dict[str, int]:
    """vocab_size, seq_len and kv_pairs of a run's data: from its config, and the pairs from its
    test labels (each key is asked once) unless given."""
    if kv_pairs is None:
        labels = np.load(Path(config.data) / "test.npz")["labels"]  # (N, T)
        kv_pairs = int((labels[0] != -100).sum())
    return {"vocab_size": config.model["vocab_size"], "seq_len": config.model["max_len"], "kv_pairs": kv_pairs}


def attention_inputs(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The input x (B, T, E) of each HRR attention layer, in order, for ``tokens`` (B, T)."""
    seen: list[torch.Tensor] = []
    layers = [m for m in model.modules() if isinstance(m, HrrAttention)]
    hooks = [layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach())) for layer in layers]
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def probe_layer(layer: HrrAttention, x: torch.Tensor, inputs: np.ndarray, labels: np.ndarray, pairs: int) -> dict:
    """The statistics of the module docstring for the first head of ``layer`` on x (B, T, E)."""
    with torch.no_grad():
        heads = layer.heads(x)
        q, k = (h.y if isinstance(h, Routed) else h for h in heads[:2])  # k already times g
        q, k, v = (h[:, 0].double() for h in (q, k, heads[2]))  # (B, T, d) each
        gates = (
            layer.write_gates(x)[:, 0, :, 0].double() if layer.write_gate is not None else torch.ones_like(q[..., 0])
        )
        routed = isinstance(heads[0], Routed)
        b, t, d = q.shape
        # (B, T, T): the weight r^q_t · r^k_s with which query t reads the pair written at s (1: one memory)
        reads = (
            heads[0].r[:, 0].double() @ heads[1].r[:, 0].double().transpose(1, 2)
            if routed
            else torch.ones(b, t, t, dtype=torch.float64)
        )
    bound = hrr.bind(k, v)  # (B, T, d): k_s ⊛ v_s (g_s included)
    value_positions = torch.zeros(b, t, dtype=torch.bool)
    value_positions[:, 1 : 2 * pairs : 2] = True
    names = ["delta_fraction", "crosstalk_ratio", "writes", "sqrt_n_over_d", "route_own", "route_others"]
    rows: dict[str, list[float]] = {name: [] for name in names}
    for row in range(b):
        for position in np.flatnonzero(labels[row] != -100):
            key = inputs[row, position]
            pair = int(np.flatnonzero(inputs[row, : 2 * pairs : 2] == key)[0])
            source = 2 * pair + 1  # where k carries the key and v the value
            weights = reads[row, position, : position + 1]  # (t + 1,): how much each earlier pair is read
            match = hrr.unbind(k[row, source], q[row, position])  # q_t† ⊛ k_s (d,)
            term = weights[source] * hrr.unbind(bound[row, source], q[row, position])  # the pair's share of v̂_t
            read = hrr.unbind(weights @ bound[row, : position + 1], q[row, position])  # v̂_t
            written = gates[row, : position + 1] * weights  # (t + 1,): each pair's weight in the read
            others = torch.cat([weights[:source], weights[source + 1 :]])
            rows["delta_fraction"].append(float(match[0] / match.norm().clamp_min(1e-30)))
            rows["crosstalk_ratio"].append(float((read - term).norm() / term.norm().clamp_min(1e-30)))
            rows["writes"].append(float(written.sum() / written.max()))
            rows["sqrt_n_over_d"].append(math.sqrt(rows["writes"][-1] / d))
            rows["route_own"].append(float(weights[source]))
            rows["route_others"].append(float(others.mean()) if len(others) else float("nan"))
    summary = {name: float(np.median(values)) for name, values in rows.items()}
    summary["gate_at_values"] = float(gates[value_positions].mean())
    summary["gate_elsewhere"] = float(gates[~value_positions].mean())
    summary["head_dim"] = d
    return summary


def how_it_answers(model: torch.nn.Module, inputs: np.ndarray, labels: np.ndarray, pairs: int) -> dict[str, float]:
    """The accuracy at the queries (labels ≠ −100) of ``model``'s per-position logits on ``inputs``
    (N, T), and the fraction of its answers that are one of each sequence's ``pairs`` values."""
    with torch.no_grad():
        answers = model(torch.as_tensor(inputs)).argmax(-1).numpy()  # (N, T)
    rows, positions = np.nonzero(labels != -100)
    given = [set(inputs[row, 1 : 2 * pairs : 2].tolist()) for row in rows]
    picked = answers[rows, positions]
    return {
        "accuracy": float((picked == labels[rows, positions]).mean()),
        "answer_is_a_value_of_the_sequence": float(np.mean([a in g for a, g in zip(picked, given, strict=True)])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory of --task mqar --hrr-output recall")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--seed", type=int, default=12345, help="of the fresh sequences")
    parser.add_argument("--kv-pairs", type=int, help="pairs per sequence (default: from the run's test labels)")
    parser.add_argument("--out", type=Path, help="write the per-layer medians as JSON here")
    args = parser.parse_args(argv)
    config, model = load_run(args.run)
    setting = mqar_setting(config, args.kv_pairs)
    model.eval()
    data = multiquery_ar(
        args.sequences,
        vocab_size=setting["vocab_size"],
        seq_len=setting["seq_len"],
        num_kv_pairs=setting["kv_pairs"],
        rng=np.random.default_rng(args.seed),
    )
    tokens = torch.as_tensor(data.inputs)
    layers = [m for m in model.modules() if isinstance(m, HrrAttention)]
    results = [
        probe_layer(layer, x, data.inputs, data.labels, setting["kv_pairs"])
        for layer, x in zip(layers, attention_inputs(model, tokens), strict=True)
    ]
    answers = how_it_answers(model, data.inputs, data.labels, setting["kv_pairs"])
    for i, result in enumerate(results):
        print(f"layer {i}: " + ", ".join(f"{name} {value:.3g}" for name, value in result.items()))
    print(", ".join(f"{name} {value:.4f}" for name, value in answers.items()))
    if args.out is not None:
        payload = {"run": str(args.run), **setting, "answers": answers, "layers": results}
        args.out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
