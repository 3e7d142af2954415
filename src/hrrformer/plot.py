"""Training and validation curves of one or more runs, overlaid: ``hrrformer plot``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .data.optional import MissingExtra, pyplot


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN_DIR/metrics.jsonl (ValueError naming the file and line when malformed)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{path}: no metrics (is {run_dir} a run directory?)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e})") from None
    return records


def run_label(run_dir: str | Path) -> str:
    config_path = Path(run_dir) / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        return f"{Path(run_dir).name} ({config.get('attention')}, {config.get('model', {}).get('layers')} layer)"
    return Path(run_dir).name


def plot_runs(run_dirs: list[str], out: str | Path) -> Path:
    """Four panels against epochs: train loss, train accuracy, validation loss, validation accuracy."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [
        (axes[0, 0], "train", "loss", "train loss"),
        (axes[0, 1], "train", "accuracy", "train accuracy"),
        (axes[1, 0], "epoch", "val_loss", "validation loss"),
        (axes[1, 1], "epoch", "val_accuracy", "validation accuracy"),
    ]
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        label = run_label(run_dir)
        for ax, kind, key, _ in panels:
            points = [(r["epoch"], r[key]) for r in records if r.get("type") == kind and r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if kind == "epoch" else None, markersize=3, label=label)
    for ax, _, _, title in panels:
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[1, 1].legend(fontsize=8)  # epoch records exist for every run
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", help="run directories to overlay")
    parser.add_argument("--out", required=True, help="PNG file to write")


def run(args: argparse.Namespace) -> int:
    try:
        print(plot_runs(args.run_dirs, args.out))
    except (ValueError, MissingExtra) as e:
        print(f"hrrformer plot: {e}")
        return 1
    return 0
