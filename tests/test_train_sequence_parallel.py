"""``hrrformer train --sequence-parallel N`` under torchrun against one process, on tiny ListOps data.

Sequence parallelism (alone, and composed with data parallelism) must train the same model as
one process with the same global batch: the same per-step losses, validation and test results,
and final weights. Bad grids and unsupported set-ups must fail at once with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hrrformer.cli import main
from hrrformer.train import TrainConfig, check_sequence_parallel

TINY = ["--dim", "16", "--heads", "2", "--layers", "1", "--mlp-dim", "16", "--dropout", "0"]
# --bucket 0: a data-parallel grid is compared with one process at the same global batch, which
# holds the same examples only without length bucketing (each replica sorts its own indices).
COMMON = [*TINY, "--log-every", "1", "--no-progress", "--epochs", "1", "--limit", "32", "--bucket", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory) -> Path:
    from hrrformer.data.listops_gen import generate_listops

    out = tmp_path_factory.mktemp("listops")
    generate_listops(out, train=64, val=16, test=16, min_len=10, max_len=120, progress=False)
    return out


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "listops", "--data", str(data), "--out", str(out), *COMMON, *extra]


def torchrun(args: list[str], nproc: int, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [*command, "-m", "hrrformer", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture(scope="module")
def single_run(listops_dir, tmp_path_factory) -> Path:
    """The reference: one process, batch 8 (4 steps)."""
    run = tmp_path_factory.mktemp("single") / "run"
    assert main(train_args(listops_dir, run, "--batch-size", "8")) == 0
    return run


def assert_same_training(run: Path, reference: Path, world_size: int) -> None:
    losses = [r["loss"] for r in records(run, "train")]
    expected = [r["loss"] for r in records(reference, "train")]
    assert len(losses) == len(expected) == 4
    assert losses == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert [r["accuracy"] for r in records(run, "train")] == [r["accuracy"] for r in records(reference, "train")]
    # Adam and clipping hide a wrong gradient scale from the losses; the norm before clipping does not.
    norms = [r["grad_norm"] for r in records(run, "train")]
    assert norms == pytest.approx([r["grad_norm"] for r in records(reference, "train")], rel=1e-4)
    (epoch,), (expected_epoch,) = records(run, "epoch"), records(reference, "epoch")
    assert epoch["examples"] == expected_epoch["examples"] == 32  # each example counted once, not once per rank
    assert epoch["val_loss"] == pytest.approx(expected_epoch["val_loss"], rel=1e-4)
    summary, expected_summary = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert summary["world_size"] == world_size and summary["sequence_parallel"] == 2
    assert summary["test_examples"] == expected_summary["test_examples"] == 16
    assert summary["test_accuracy"] == expected_summary["test_accuracy"]
    # Rank 0 alone wrote the whole model, and it is the one process's model.
    weights, expected_weights = (load_file(str(r / "model.safetensors")) for r in (run, reference))
    assert weights.keys() == expected_weights.keys()
    for name, tensor in expected_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_two_sequence_parallel_ranks_match_one_process(listops_dir, single_run, tmp_path):
    run = tmp_path / "sp2"
    result = torchrun(train_args(listops_dir, run, "--batch-size", "8", "--sequence-parallel", "2"), 2)
    assert result.returncode == 0, result.stderr
    assert "1 replica(s) × 8 × 2 sequence-parallel ranks" in result.stderr
    assert_same_training(run, single_run, world_size=2)


def test_data_parallel_times_sequence_parallel_matches_one_process(listops_dir, single_run, tmp_path):
    run = tmp_path / "dp2sp2"
    result = torchrun(train_args(listops_dir, run, "--batch-size", "4", "--sequence-parallel", "2"), 4)
    assert result.returncode == 0, result.stderr
    assert "global batch 8 (2 replica(s) × 4 × 2 sequence-parallel ranks)" in result.stderr
    assert_same_training(run, single_run, world_size=4)


def test_a_per_position_task_over_two_sequence_parallel_ranks_matches_one_process(tmp_path):
    """MQAR (labels per position): each rank scores its own positions; the loss terms, counts and
    gradients combine over the group (hrrformer.forward) into the one process's training."""
    from hrrformer.data.mqar import generate_mqar

    data = tmp_path / "mqar"
    generate_mqar(data, train=32, val=8, test=8, vocab_size=64, seq_len=16, kv_pairs=2, seed=0)
    args = ["train", "--task", "mqar", "--data", str(data), *COMMON, "--batch-size", "8", "--short-conv", "3"]
    single, sp = tmp_path / "single", tmp_path / "sp2"
    assert main([*args, "--out", str(single)]) == 0
    result = torchrun([*args, "--out", str(sp), "--sequence-parallel", "2"], 2)
    assert result.returncode == 0, result.stderr
    for key in ("loss", "accuracy", "grad_norm"):
        got, expected = ([r[key] for r in records(run, "train")] for run in (sp, single))
        assert len(got) == 4 and got == pytest.approx(expected, rel=1e-4, abs=1e-6), key
    summary, expected = (json.loads((run / "summary.json").read_text()) for run in (sp, single))
    for key in ("test_accuracy", "test_sequence_accuracy", "test_positions", "test_examples", "val_sequence_accuracy"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-6), key
    assert summary["test_positions"] == 16 and summary["sequence_parallel"] == 2
    ((epoch,), (expected_epoch,)) = (records(run, "epoch") for run in (sp, single))
    assert epoch["examples"] == expected_epoch["examples"] == 32  # sequences, each counted once
    assert epoch["val_loss"] == pytest.approx(expected_epoch["val_loss"], rel=1e-4)


def test_a_grid_that_does_not_divide_the_world_fails_at_once(listops_dir, tmp_path):
    result = torchrun(train_args(listops_dir, tmp_path / "bad", "--sequence-parallel", "3"), 2, timeout=60)
    assert result.returncode != 0
    assert "--sequence-parallel 3 does not divide the world size 2" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_unsupported_set_ups_are_refused(listops_dir, tmp_path, capsys):
    # One process cannot hold two chunks.
    assert main(train_args(listops_dir, tmp_path / "one", "--sequence-parallel", "2")) == 1
    assert "does not divide the world size 1" in capsys.readouterr().err
    assert main(train_args(listops_dir, tmp_path / "zero", "--sequence-parallel", "0")) == 2
    assert "must be ≥ 1" in capsys.readouterr().err
    assert main(train_args(listops_dir, tmp_path / "soft", "--sequence-parallel", "2", "--attention", "softmax")) == 2
    assert "needs --attention hrr" in capsys.readouterr().err
    with pytest.raises(ValueError, match="two-document"):
        check_sequence_parallel(TrainConfig(task="retrieval", pair=True, sequence_parallel=2))
    check_sequence_parallel(TrainConfig(task="retrieval", pair=True, sequence_parallel=1))
