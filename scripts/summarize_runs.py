"""Print a markdown table of finished runs (their summary.json and config.json), for EXPERIMENTS.md.

Usage: python scripts/summarize_runs.py runs/exp/*
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


def main(paths: list[str]) -> None:
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
