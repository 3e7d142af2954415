"""The associative-recall figure (EXPERIMENTS.md, "Associative recall"): test query accuracy against
model width, one panel per (T, pairs), one line per model, beside the ideal memory's capacity.

Each model is a label and a run-name pattern with ``{T}``, ``{P}`` and ``{D}`` for the sequence
length, the pairs and the width (the names of ``scripts/mqar_study.sh``), or several patterns
joined by ``|``, of which the first finished run is taken; a point is drawn where that run's
``summary.json`` exists. The dashed lines are :func:`research.hrr_capacity.recall_accuracy` for
a memory of d = width (one head) holding T/2 pairs among V/2 = 4,096 values: one β, and the same
routed into ``--memories`` memories by the keys.

    .venv/bin/python -m research.mqar_figure --out docs/figures/mqar.png \\
        "softmax=runs/mqar/T{T}-P{P}-d{D}-lr3e-3-s0-softmax" \\
        "HRR, 32 memories routed by the keys=runs/mqar/T{T}-P{P}-d{D}-lr3e-3-s0-key-preset"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hrrformer.data.optional import pyplot
from research.hrr_capacity import recall_accuracy


def parse_model(text: str) -> tuple[str, str]:
    """ "LABEL=PATTERN" → (label, pattern)."""
    label, sep, pattern = text.partition("=")
    if not sep or not label or not pattern:
        raise argparse.ArgumentTypeError(f"a model is LABEL=PATTERN (with {{T}}, {{P}}, {{D}}), got {text!r}")
    return label, pattern


def collect(
    models: list[tuple[str, str]], shapes: list[tuple[int, int]], widths: list[int]
) -> dict[str, dict[str, dict[int, float]]]:
    """{"T-P": {label: {width: test accuracy}}} of the runs that finished."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    for t, p in shapes:
        panel = table.setdefault(f"{t}-{p}", {})
        for label, pattern in models:
            for width in widths:
                runs = [Path(one.format(T=t, P=p, D=width)) for one in pattern.split("|")]
                summary = next((run / "summary.json" for run in runs if (run / "summary.json").is_file()), None)
                if summary is not None:
                    panel.setdefault(label, {})[width] = json.loads(summary.read_text())["test_accuracy"]
    return table


def capacity(shapes: list[tuple[int, int]], widths: list[int], memories: int, trials: int) -> dict[str, dict]:
    """The ideal memory's recall at each (T, P) and width d: T/2 pairs, one β and ``memories`` routed."""
    out: dict[str, dict] = {}
    for t, p in shapes:
        out[f"{t}-{p}"] = {
            "one memory": {d: recall_accuracy(d, t // 2, 4096, trials) for d in widths},
            f"{memories} routed memories": {
                d: recall_accuracy(d, t // 2, 4096, trials, memories=memories) for d in widths
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models", nargs="+", type=parse_model, help="LABEL=PATTERN, PATTERN with {T}, {P}, {D} (A|B: the first found)"
    )
    parser.add_argument("--shapes", default="64:4,128:8,256:16", help="T:pairs, comma-separated")
    parser.add_argument("--widths", default="64,128,256", help="model widths, comma-separated")
    parser.add_argument("--memories", type=int, default=32, help="routed memories of the capacity line")
    parser.add_argument("--trials", type=int, default=128, help="trials per capacity point")
    parser.add_argument("--out", type=Path, required=True, help="the PNG; its numbers go beside it as .json")
    args = parser.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    table = collect(args.models, shapes, widths)
    ideal = capacity(shapes, widths, args.memories, args.trials)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.6), sharey=True, squeeze=False)
    for ax, (t, p) in zip(axes[0], shapes, strict=True):
        key = f"{t}-{p}"
        for label, points in table[key].items():
            xs = sorted(points)
            ax.plot(xs, [100 * points[x] for x in xs], marker="o", label=label)
        for label, points in ideal[key].items():
            ax.plot(widths, [100 * points[w] for w in widths], linestyle="--", color="grey", alpha=0.6)
            ax.annotate(f"ideal, {label}", (widths[-1], 100 * points[widths[-1]]), fontsize=7, ha="right")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_title(f"T = {t}, {p} pairs")
        ax.set_xlabel("model width (one head: memory d)")
    axes[0][0].set_ylabel("test query accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    args.out.with_suffix(".json").write_text(json.dumps({"runs": table, "ideal_memory": ideal}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
