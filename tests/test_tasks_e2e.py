"""Every task end to end on tiny fixtures in its official format: train 2 epochs, eval, plot,
predict (byte tasks), and resume to the same weights as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hrrformer.cli import main
from test_data_loaders import write_aan, write_aclimdb, write_binaries, write_cifar, write_pathfinder

TINY = ["--dim", "8", "--heads", "2", "--layers", "1", "--mlp-dim", "8", "--batch-size", "4", "--no-progress"]


def fixture(task: str, root: Path) -> tuple[Path, int]:
    """(data path in the task's official format, max_len)."""
    if task == "text":
        return write_aclimdb(root / "aclImdb", test=True), 64
    if task == "imdb-pairs":
        return write_aclimdb(root / "aclImdb", movies=20), 64
    if task == "retrieval":
        return write_aan(root / "aan", rows_per_split=8), 64
    if task == "image":
        write_cifar(root / "cifar-10-batches-py")
        return root / "cifar-10-batches-py", 1024
    if task == "pathfinder":
        write_pathfinder(root / "pathfinder8" / "curv_contour_length_14", n=20, size=8)
        return root / "pathfinder8" / "curv_contour_length_14", 64
    write_binaries(root / "bins")
    return root / "bins", 512


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("task", ["text", "imdb-pairs", "retrieval", "image", "pathfinder", "binaries"])
def test_task_end_to_end(task, tmp_path, capsys):
    data, max_len = fixture(task, tmp_path)
    common = ["train", "--task", task, "--data", str(data), "--max-len", str(max_len), *TINY]
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    assert main([*common, "--out", str(run), "--epochs", "2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0 <= summary["val_accuracy"] <= 1

    assert main([*common, "--out", str(resumed), "--epochs", "1"]) == 0
    assert main([*common, "--out", str(resumed), "--epochs", "2", "--resume"]) == 0
    a, b = weights(run), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)

    capsys.readouterr()
    split = "test" if summary["test_accuracy"] is not None else "val"
    assert main(["eval", str(run), "--data", str(data), "--split", split]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] > 0 and 0 <= result["accuracy"] <= 1

    assert main(["plot", str(run), str(resumed), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000

    if task in ("text", "binaries"):
        files = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix in (".txt", ".exe"))[:3]
        capsys.readouterr()
        assert main(["predict", str(run), *map(str, files), "--json"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(lines) == 3 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in lines)
