"""scripts/summarize_runs.py --leave: the step at which a run leaves a loss plateau."""

from __future__ import annotations

import json
from pathlib import Path


def write_run(run: Path, losses: list[float], every: int = 10) -> None:
    run.mkdir()
    lines = [{"type": "train", "step": every * (i + 1), "loss": x} for i, x in enumerate(losses)]
    lines.append({"type": "epoch", "step": every * len(losses), "epoch": 1, "val_accuracy": 0.25, "train_loss": 2.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_leave_is_the_first_step_whose_trailing_mean_is_below_the_threshold(tmp_path, load_script):
    summarize = load_script("summarize_runs")
    # 40 logged steps on a 2.25 plateau, then 2.0: the 200-step window (20 lines) first averages
    # < 2.1 once more than 60 % of it is past the drop, i.e. 13 lines after it (step 400 + 130)
    write_run(tmp_path / "leaves", [2.25] * 40 + [2.0] * 40)
    row = summarize.leave_row(tmp_path / "leaves", 2.1)
    assert row.split("|")[3].strip() == "530"
    assert "25.0" in row.split("|")[4]
    # a single low line inside a plateau does not count as leaving it
    write_run(tmp_path / "stays", [2.25] * 30 + [1.5] + [2.25] * 30)
    assert summarize.leave_row(tmp_path / "stays", 2.1).split("|")[3].strip() == "not by 610"
