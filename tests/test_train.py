"""End-to-end training, evaluation, prediction, plotting, resume and DDP on tiny generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hrrformer.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from hrrformer.cli import main

TINY = ["--dim", "16", "--heads", "2", "--layers", "1", "--mlp-dim", "16", "--no-progress", "--log-every", "1"]


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory) -> Path:
    from hrrformer.data.listops_gen import generate_listops

    out = tmp_path_factory.mktemp("listops")
    generate_listops(out, train=64, val=16, test=16, seed=0, min_len=10, max_len=120, progress=False)
    return out


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "listops", "--data", str(data), "--out", str(out), "--batch-size", "8", *TINY, *extra]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_eval_plot_end_to_end(listops_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "2")) == 0
    summary = json.loads((run / "summary.json").read_text())
    for key in (
        "task",
        "attention",
        "params",
        "epochs",
        "train_seconds",
        "examples_per_second",
        "val_accuracy",
        "test_accuracy",
    ):
        assert key in summary
    assert summary["epochs"] == 2 and summary["test_examples"] == 16
    lines = metric_lines(run)
    assert sum(r["type"] == "epoch" for r in lines) == 2 and sum(r["type"] == "train" for r in lines) == 16
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["dim"] == 16 and config["task"] == "listops"
    capsys.readouterr()

    assert main(["eval", str(run), "--data", str(listops_dir), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 16 and 0 <= result["accuracy"] <= 1
    assert len(result["confusion_matrix"]) == 10 and sum(map(sum, result["confusion_matrix"])) == 16
    assert abs(result["accuracy"] - summary["test_accuracy"]) < 1e-9

    png = tmp_path / "curves.png"
    assert main(["plot", str(run), str(run), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(listops_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(train_args(listops_dir, straight, "--epochs", "3")) == 0
    # Stop after one epoch and a half (mid-epoch checkpoint every 3 steps), then resume.
    assert main(train_args(listops_dir, resumed, "--epochs", "1", "--save-every", "3")) == 0
    assert main(train_args(listops_dir, resumed, "--epochs", "3", "--save-every", "3", "--resume")) == 0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metric_lines(straight) == [
        {**r, "examples_per_second": s["examples_per_second"], **({"seconds": s["seconds"]} if "seconds" in r else {})}
        for r, s in zip(metric_lines(resumed), metric_lines(straight))
    ]


def test_resume_from_a_mid_epoch_checkpoint(listops_dir, tmp_path):
    run = tmp_path / "run"
    args = train_args(listops_dir, run, "--epochs", "2", "--save-every", "3")
    assert main(args) == 0
    final = weights(run)
    # Checkpoints kept: steps 15 (mid-epoch 2, 7 of 8 batches done) and 16. Roll back to 15.
    (run / "checkpoints" / "LATEST").write_text("step-000000015\n")
    _, state = load_checkpoint(latest_checkpoint(run))
    assert (state["step"], state["epoch"], state["batches_done"]) == (15, 1, 7)
    (run / "model.safetensors").unlink()
    assert main([*args, "--resume"]) == 0
    again = weights(run)
    for k in final:
        assert torch.equal(final[k], again[k]), k


def test_existing_run_is_refused_unless_resume_or_overwrite(listops_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1")) == 0
    assert main(train_args(listops_dir, run, "--epochs", "1")) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(train_args(listops_dir, run, "--epochs", "1", "--lr", "0.01", "--resume")) == 1
    err = capsys.readouterr().err
    assert "another config" in err and "lr" in err
    assert main(train_args(listops_dir, run, "--epochs", "1", "--overwrite")) == 0


def test_resume_refuses_another_config_before_reading_the_data(listops_dir, tmp_path, capsys):
    """--resume with other flags (here --lr) is refused for the config before any data is read or
    generated: the data path given (which may move between attempts) does not exist."""
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1")) == 0
    missing = tmp_path / "no-such-data"
    assert main(train_args(missing, run, "--epochs", "1", "--lr", "0.01", "--resume")) == 1
    err = capsys.readouterr().err
    assert "another config" in err and "lr:" in err and "not found" not in err


def test_resume_accepts_a_run_saved_before_later_options_existed(listops_dir, tmp_path, capsys):
    """A config.json without options added since (here sequence_parallel and model.length_scale)
    ran with their defaults: --resume continues it; a non-default value is still refused."""
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1")) == 0
    config = json.loads((run / "config.json").read_text())
    del config["sequence_parallel"], config["model"]["length_scale"]
    (run / "config.json").write_text(json.dumps(config))
    assert main(train_args(listops_dir, run, "--epochs", "2", "--resume")) == 0
    (run / "config.json").write_text(json.dumps(config))
    assert main(train_args(listops_dir, run, "--epochs", "3", "--resume", "--length-scale")) == 1
    assert "'length_scale': False" in capsys.readouterr().err  # named among the differing keys


def test_the_main_job_is_the_mqar_demo(tmp_path, monkeypatch):
    """`hrrformer train` with no task or preset (the README's main job) generates the MQAR demo's
    data into the cache and trains its preset: 2 layers of HRR memory routed by the keys."""
    monkeypatch.setattr("hrrformer.data.load.default_cache_dir", lambda: tmp_path / "cache")  # the data's cache only
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--limit", "64", "--epochs", "1", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["task"], config["preset"]) == ("mqar", "demo")
    assert (config["model"]["memories"], config["model"]["memory_routing"], config["model"]["layers"]) == (32, "key", 2)
    assert sorted(p.name for p in (tmp_path / "cache").glob("mqar-*/*.npz")) == ["test.npz", "train.npz", "val.npz"]
    assert json.loads((run / "summary.json").read_text())["test_positions"] > 0


def test_unknown_task_and_preset_list_valid_ones(capsys):
    assert main(["train", "--task", "nope"]) == 2
    assert "valid tasks: listops" in capsys.readouterr().err
    assert main(["train", "--task", "listops", "--preset", "huge"]) == 2
    assert "valid presets: paper, cpu, demo" in capsys.readouterr().err
    assert main(["train", "--preset", "huge"]) == 2  # the main job's task, mqar, has no paper preset
    assert "unknown preset 'huge' for task 'mqar'; valid presets: cpu, demo" in capsys.readouterr().err


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(listops_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1")) == 0
    good = latest_checkpoint(run)
    # Poison a checkpoint's weights so that the next step's loss is NaN.
    run2 = tmp_path / "run2"
    assert main(train_args(listops_dir, run2, "--epochs", "1")) == 0
    ckpt = latest_checkpoint(run2)
    state = load_file(str(ckpt / "model.safetensors"))
    state["head.2.bias"] = torch.full_like(state["head.2.bias"], float("nan"))
    from hrrformer.checkpoint import save_checkpoint

    _, trainer_state = load_checkpoint(ckpt)
    save_checkpoint(run2, state, trainer_state, step=trainer_state["step"])
    capsys.readouterr()
    assert main(train_args(listops_dir, run2, "--epochs", "2", "--resume")) == 1
    err = capsys.readouterr().err
    assert "loss became nan at step 9" in err and "last good checkpoint" in err
    assert good.exists()


def test_corrupt_checkpoint_is_named(listops_dir, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1")) == 0
    ckpt = latest_checkpoint(run)
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(ckpt)


def _torchrun(args: list[str], nproc: int, env: dict) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "hrrformer",
    ]
    return subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(listops_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    # Random batches: length bucketing sorts each rank's own indices, so only unbucketed global
    # batches are the same examples in one process and in two.
    common = ["--epochs", "1", "--dropout", "0", "--limit", "32", "--bucket", "0"]
    one = subprocess.run(
        [sys.executable, "-m", "hrrformer", *train_args(listops_dir, single, "--batch-size", "8", *common)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = _torchrun(train_args(listops_dir, ddp, "--batch-size", "4", *common), 2, env)
    assert two.returncode == 0, two.stderr
    losses_one = [r["loss"] for r in metric_lines(single) if r["type"] == "train"]
    losses_two = [r["loss"] for r in metric_lines(ddp) if r["type"] == "train"]
    assert len(losses_one) == len(losses_two) == 4
    assert losses_two == pytest.approx(losses_one, rel=1e-4, abs=1e-5)
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2


def test_time_budget_stops_inside_an_epoch_and_records_the_fraction(listops_dir, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "3", "--max-minutes", "1e-9")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by_time_budget"] is True
    assert summary["epochs"] == pytest.approx(1 / 8)  # one step of 64 / 8 = 8 batches
    epochs = [r for r in metric_lines(run) if r["type"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["epoch"] == pytest.approx(1 / 8) and epochs[0]["examples"] == 8
    assert summary["val_accuracy"] is not None  # evaluated after the budget ran out


def test_a_budget_stopped_run_resumed_trains_the_rest_of_its_epoch(listops_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(train_args(listops_dir, straight, "--epochs", "2")) == 0
    assert main(train_args(listops_dir, resumed, "--epochs", "2", "--max-minutes", "1e-9")) == 0  # one step
    assert main(train_args(listops_dir, resumed, "--epochs", "2", "--max-minutes", "none", "--resume")) == 0
    a, b = weights(straight), weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    epochs = [r for r in metric_lines(resumed) if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [pytest.approx(1 / 8), 1, 2]
    assert [r["examples"] for r in epochs] == [8, 56, 64]  # the rest of epoch 1, not a fresh one
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["stopped_by_time_budget"] is False


def test_length_scale_flag_reaches_the_run_config_and_the_model():
    import argparse

    from hrrformer.train import add_arguments, build_model, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    scaled = config_from_args(parser.parse_args(["--task", "listops", "--preset", "demo", "--length-scale"]))
    plain = config_from_args(parser.parse_args(["--task", "listops", "--preset", "demo"]))
    assert scaled.model["length_scale"] is True and plain.model["length_scale"] is False
    assert build_model(scaled).encoder.blocks[0].attn.length_scale
    assert not build_model(plain).encoder.blocks[0].attn.length_scale


def test_a_generated_flag_round_trips_through_config_json_and_resume(listops_dir, tmp_path, capsys):
    """Flags generated from the config fields (here a model and a training option that had no
    hand-written flag) reach config.json; --resume accepts the same values and refuses others."""
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1", "--projection", "--lr-decay", "0.5")) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["projection"] is True and config["lr_decay"] == 0.5
    assert main(train_args(listops_dir, run, "--epochs", "2", "--projection", "--lr-decay", "0.5", "--resume")) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    capsys.readouterr()
    assert main(train_args(listops_dir, run, "--epochs", "3", "--lr-decay", "0.5", "--resume")) == 1
    assert "'projection': True" in capsys.readouterr().err
