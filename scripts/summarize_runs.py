"""Print a markdown table of finished runs (their summary.json and config.json), for EXPERIMENTS.md.

Usage: python scripts/summarize_runs.py runs/exp/*            (one row per run)
       python scripts/summarize_runs.py --epochs runs/exp/*   (per epoch: cumulative training
       minutes and validation accuracy, for "time to reach an accuracy" comparisons)
       python scripts/summarize_runs.py --leave 2.1 runs/sweep/*   (the first step at which the
       mean training loss of the last 200 steps falls below 2.1 nats: when a run leaves a plateau)
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


def leave_row(run: Path, loss: float, window: int = 200) -> str | None:
    """Steps trained, the first step whose trailing `window`-step mean training loss is < `loss`,
    the validation accuracy after each epoch, test accuracy and examples/s."""
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in records if r.get("type") == "train"]
    left = None
    for i, (step, _) in enumerate(train):
        recent = [x for s, x in train[: i + 1] if s > step - window]
        if step >= window and sum(recent) / len(recent) < loss:
            left = step
            break
    vals = " ".join(f"{100 * r['val_accuracy']:.1f}" for r in records if r.get("type") == "epoch")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    test = summary.get("test_accuracy")
    last = train[-1][0] if train else 0
    shown = f"{left:,}" if left is not None else f"not by {last:,}"
    rate, rss = summary.get("examples_per_second"), summary.get("peak_rss_mb")
    return (
        f"| {run.name} | {last:,} | {shown} | {vals} | {'–' if test is None else f'{100 * test:.2f}'} "
        f"| {'–' if rate is None else f'{rate:.0f}'} | {'–' if rss is None else f'{rss:.0f} MB'} |"
    )


def main(paths: list[str]) -> None:
    if paths and paths[0] == "--leave":
        loss = float(paths[1])
        print(
            f"| run | steps | first step with 200-step mean loss < {loss:g} | val % after each epoch | test % | ex/s | peak RSS |"
        )
        print("|---|---|---|---|---|---|---|")
        for p in paths[2:]:
            line = leave_row(Path(p), loss)
            if line:
                print(line)
        return
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
