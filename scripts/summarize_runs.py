"""Print a markdown table of finished runs (their summary.json and config.json), for EXPERIMENTS.md.

Usage: python scripts/summarize_runs.py runs/exp/*            (one row per run)
       python scripts/summarize_runs.py --epochs runs/exp/*   (per epoch: cumulative training
       minutes and validation accuracy, for "time to reach an accuracy" comparisons)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str | None:
    summary_path, config_path = run / "summary.json", run / "config.json"
    if not summary_path.exists():
        return None
    s, c = json.loads(summary_path.read_text()), json.loads(config_path.read_text())
    m = c["model"]
    pct = lambda x: "–" if x is None else f"{100 * x:.2f}"  # noqa: E731
    seen = s["examples_per_second"] * s["train_seconds"]
    return (
        f"| {run.name} | {s['attention']} | {m['layers']}×{m['dim']}, {m['heads']} heads, T≤{m['max_len']} | {s['params']:,} "
        f"| {s['train_examples']:,}/{s['val_examples']:,}/{s['test_examples']:,} | {seen:,.0f} ({seen / s['train_examples']:.2f} ep) "
        f"| {s['train_seconds'] / 60:.1f} | {s['examples_per_second']:.1f} | {pct(s['val_accuracy'])} | {pct(s['test_accuracy'])} "
        f"| {s['peak_rss_mb'] / 1024:.1f} |"
    )


def epoch_rows(run: Path) -> list[str]:
    """One row per validation point: epoch (fractional when a budget stopped it), minutes, val %."""
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return []
    rows, minutes = [], 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") != "epoch":
            continue
        minutes += record["seconds"] / 60
        val = record.get("val_accuracy")
        shown = "–" if val is None else f"{100 * val:.2f}"
        rows.append(f"| {run.name} | {record['epoch']:g} | {minutes:.1f} | {shown} | {record['train_loss']:.4f} |")
    return rows


def main(paths: list[str]) -> None:
    if paths and paths[0] == "--epochs":
        print("| run | epoch | training minutes | val acc % | train loss |")
        print("|---|---|---|---|---|")
        for p in paths[1:]:
            print("\n".join(epoch_rows(Path(p))))
        return
    print(
        "| run | attention | model | params | train/val/test | examples trained (epochs) | train min | ex/s "
        "| val acc % | test acc % | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        line = row(Path(p))
        if line:
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
