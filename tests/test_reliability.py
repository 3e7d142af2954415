"""Faults, bad input and load: nothing is lost, nothing is run, every failure names its file.

* Kill and resume: training processes are SIGKILLed at random steps, at random times and inside
  checkpoint writes (torn files included); resuming reaches the uninterrupted run's weights and
  metrics bit for bit.
* Corrupt checkpoints: truncated, bit-flipped, another model's, or a malicious pickle give a
  CheckpointError naming the file (exit 1 and one line from the CLI), and never run code.
* Hostile archives and files: escaping tar members, links, FIFOs, vanishing files, gzip bombs,
  NUL bytes, huge lines and wrong encodings have defined, bounded outcomes.
* Predict under load: thousands of files (some empty, missing, corrupt) in bounded memory, one
  result line each.

Long variants run with ``HRRFORMER_SLOW=1``. This file doubles as the process driver of the
kill tests (``python tests/test_reliability.py --kill-driver PLAN``), so that the processes it
kills are forked from one interpreter that has imported torch once.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

import hrrformer.checkpoint as ck
from hrrformer.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from hrrformer.cli import main
from hrrformer.data import DataError, binaries, listops, retrieval, text
from hrrformer.data.common import BadInputs
from hrrformer.data.files import iter_rows, read_prefix

SLOW = os.environ.get("HRRFORMER_SLOW") == "1"
slow = pytest.mark.skipif(not SLOW, reason="long variant: set HRRFORMER_SLOW=1")
TINY = ["--dim", "16", "--heads", "2", "--layers", "1", "--mlp-dim", "16", "--batch-size", "8", "--no-progress"]
TIMING_KEYS = {"seconds", "examples_per_second", "train_seconds", "wall_seconds_this_process", "peak_rss_mb"}
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
#: ``python -c PEAK_RSS_LAUNCHER RSS_FILE ARGV...`` runs ARGV and writes its peak RSS (KiB) to RSS_FILE.
#: Linux copies a process's RSS high-water mark into a child it forks and keeps it across exec, so
#: ``ru_maxrss`` of a child forked straight from this test process is at least this process's own
#: peak (whatever earlier tests allocated); a child of this small launcher starts from the launcher's.
PEAK_RSS_LAUNCHER = """
import os, sys
rss_file, argv = sys.argv[1], sys.argv[2:]
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
with open(rss_file, "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


# ============================================================================ fixtures and helpers
@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory) -> Path:
    from hrrformer.data.listops_gen import generate_listops

    out = tmp_path_factory.mktemp("listops")
    generate_listops(out, train=64, val=16, test=16, min_len=10, max_len=120, progress=False)
    return out


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "listops", "--data", str(data), "--out", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def trained_run(listops_dir, tmp_path_factory) -> Path:
    """A finished 1-epoch run with mid-epoch checkpoints (steps 4, 8 kept)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1", "--save-every", "4")) == 0
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, to damage."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def one_line_error(capsys, prefix: str) -> str:
    """The CLI's error on stderr: one line starting with ``prefix``, the last one, and no traceback
    (progress lines before it, such as training's banner, are allowed)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(prefix) and sum(line.startswith(prefix) for line in lines) == 1, err
    return lines[-1]


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def metric_records(run: Path) -> list[dict]:
    return [without_timing(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def rewrite_manifest(checkpoint: Path) -> None:
    """Make the manifest match the files as they are now (a consistent but damaged checkpoint)."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"] = {name: ck._sha256(checkpoint / name) for name in manifest["files"]}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


# ============================================================================ 1. kill and resume
# The driver (run in a child interpreter): fork one training process per attempt, kill it as the
# plan says, and record what the run directory looks like afterwards.


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill_hook(kill: dict | None) -> None:
    """In the training process: SIGKILL ourselves at the planned point.

    ``step`` n: right after the n-th optimiser step. Inside the n-th checkpoint write:
    ``torn-weights`` / ``torn-state``: after writing half of model.safetensors / trainer_state.pt;
    ``before-fsync``: all files written, none flushed; ``renamed``: folder renamed into place,
    LATEST still naming the previous one; ``latest``: LATEST replaced, old checkpoints not pruned.
    ``time`` kills come from the driver instead.
    """
    if not kill or kill["at"] == "time":
        return
    at, n = kill["at"], kill["n"]
    if at == "step":
        step, count = torch.optim.Adam.step, itertools.count(1)

        def counted_step(self, *args, **kwargs):
            out = step(self, *args, **kwargs)
            if next(count) == n:
                _die()
            return out

        torch.optim.Adam.step = counted_step
        return
    state = {"save": 0, "root_fsyncs": 0}
    write_weights, fsync, torch_save = ck._write_weights, ck._fsync, torch.save

    def tear(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        _die()

    def hooked_write_weights(model_state, file: Path) -> None:
        if Path(file).parent.name.startswith(".tmp-"):  # the first file of a checkpoint write
            state["save"] += 1
            state["root_fsyncs"] = 0
        write_weights(model_state, file)
        if at == "torn-weights" and state["save"] == n:
            tear(Path(file))

    def hooked_torch_save(obj, f, *args, **kwargs):
        torch_save(obj, f, *args, **kwargs)
        if at == "torn-state" and state["save"] == n and str(f).endswith(ck.STATE_FILE):
            tear(Path(f))

    def hooked_fsync(path: Path) -> None:
        path = Path(path)
        if state["save"] == n:
            if at == "before-fsync" and path.parent.name.startswith(".tmp-"):
                _die()
            if path.name == "checkpoints":
                state["root_fsyncs"] += 1
                if (at, state["root_fsyncs"]) in (("renamed", 1), ("latest", 2)):
                    _die()
        fsync(path)

    ck._write_weights, ck._fsync, torch.save = hooked_write_weights, hooked_fsync, hooked_torch_save


def _attempt(args: list[str], kill: dict | None, log: Path) -> dict:
    pid = os.fork()
    if pid == 0:  # the training process
        code = 70
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            torch.set_num_threads(1)
            _install_kill_hook(kill)
            code = main(args)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    if kill and kill["at"] == "time":
        time.sleep(kill["delay"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return {"kill": kill, "killed": killed, "rc": None if killed else os.waitstatus_to_exitcode(status)}


def _inspect_run(run: Path) -> dict:
    """What a resume would find: the checkpoint named in LATEST (and whether it loads), debris."""
    root = run / "checkpoints"
    info = {"latest": None, "step": None, "loads": None, "tmp": sorted(p.name for p in root.glob(".tmp-*"))}
    try:
        latest = latest_checkpoint(run)
        if latest is not None:
            _, state = load_checkpoint(latest)
            info.update(latest=latest.name, step=state["step"], loads=True)
    except CheckpointError as e:
        info["loads"] = str(e)
    info["folders"] = sorted(p.name for p in root.glob("step-*")) if root.exists() else []
    return info


def _drive(plan: dict) -> dict:
    results = {}
    for name, run in plan.items():
        records = []
        for kill in run["attempts"]:
            record = _attempt(run["args"], kill, Path(run["log"]))
            record["after"] = _inspect_run(Path(run["out"]))
            records.append(record)
        results[name] = records
    return results


def kill_chain(seed: int) -> list[dict | None]:
    """One interrupted life of a run: every kind of kill once, at points drawn from ``seed``."""
    rng = random.Random(seed)
    kinds = ["torn-weights", "renamed", "torn-state", "before-fsync", "latest"]
    rng.shuffle(kinds)
    chain: list[dict | None] = [{"at": "step", "n": rng.randint(1, 7)}]
    chain += [{"at": kind, "n": rng.randint(1, 2)} for kind in kinds]
    chain += [{"at": "time", "delay": rng.uniform(0.0, 1.0)}, None]
    return chain


def run_kill_plan(tmp_path: Path, data: Path, runs: dict[str, tuple[list[str], list]]) -> dict:
    plan = {
        name: {
            "args": train_args(data, tmp_path / name, *extra),
            "out": str(tmp_path / name),
            "log": str(tmp_path / f"{name}.log"),
            "attempts": attempts,
        }
        for name, (extra, attempts) in runs.items()
    }
    done = subprocess.run(
        [sys.executable, __file__, "--kill-driver", json.dumps(plan)],
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise equal final weights and final optimiser state; equal metrics and summary but timing."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    _, sa = load_checkpoint(latest_checkpoint(a))
    _, sb = load_checkpoint(latest_checkpoint(b))
    assert sa["step"] == sb["step"]
    for i, state in sa["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, sb["optimizer"]["state"][i][key]), (i, key)
    assert metric_records(a) == metric_records(b)
    summaries = [without_timing(json.loads((run / "summary.json").read_text())) for run in (a, b)]
    assert summaries[0] == summaries[1]


def check_kill_records(records: list[dict]) -> None:
    """Every planned kill hit; after each, LATEST names a checkpoint that loads (or none yet)."""
    for record in records[:-1]:
        kill, after = record["kill"], record["after"]
        if kill["at"] != "time":
            assert record["killed"], record
        assert after["loads"] in (True, None), record  # never a CheckpointError
        if record["killed"] and kill["at"] in ("torn-weights", "torn-state", "before-fsync"):
            assert after["tmp"], record  # the half-written folder is there, and ignored
    assert records[-1]["rc"] == 0 and not records[-1]["after"]["tmp"], records[-1]


KILL_EXTRA = ["--epochs", "3", "--save-every", "2"]
EARLY_EXTRA = ["--epochs", "1", "--log-every", "1"]  # checkpoints only at the end of the epoch


@pytest.fixture(scope="module")
def kill_runs(listops_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One driver, four runs: a 3-epoch run straight and killed at every kind of point (seed 0),
    and a 1-epoch run straight and killed before its first checkpoint."""
    root = tmp_path_factory.mktemp("kill")
    results = run_kill_plan(
        root,
        listops_dir,
        {
            "straight": (KILL_EXTRA, [None]),
            "killed": ([*KILL_EXTRA, "--resume"], kill_chain(seed=0)),
            "early-straight": (EARLY_EXTRA, [None]),
            "early-killed": ([*EARLY_EXTRA, "--resume"], [{"at": "step", "n": 3}, None]),
        },
    )
    return root, results


def test_sigkilled_training_resumes_to_the_same_weights_and_metrics(kill_runs):
    root, results = kill_runs
    assert results["straight"][0]["rc"] == 0
    check_kill_records(results["killed"])
    assert_same_run(root / "straight", root / "killed")


@slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkilled_training_resumes_exactly_more_seeds(listops_dir, tmp_path, seed):
    rng = random.Random(seed)
    timed = [{"at": "time", "delay": rng.uniform(0.0, 1.5)} for _ in range(4)]
    results = run_kill_plan(
        tmp_path,
        listops_dir,
        {
            "straight": (KILL_EXTRA, [None]),
            "killed": ([*KILL_EXTRA, "--resume"], kill_chain(seed)),
            "timed": ([*KILL_EXTRA, "--resume"], [*timed, None]),
        },
    )
    check_kill_records(results["killed"])
    check_kill_records(results["timed"])
    assert_same_run(tmp_path / "straight", tmp_path / "killed")
    assert_same_run(tmp_path / "straight", tmp_path / "timed")


def test_kill_before_the_first_checkpoint_leaves_no_duplicate_metrics(kill_runs):
    root, results = kill_runs
    first = results["early-killed"][0]
    assert first["killed"] and first["after"]["latest"] is None  # no checkpoint yet
    assert results["early-killed"][-1]["rc"] == 0
    assert_same_run(root / "early-straight", root / "early-killed")


def test_torn_write_leaves_the_previous_checkpoint_named_and_loadable(tmp_path):
    weights = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3, dtype=torch.bfloat16)}
    good = save_checkpoint(tmp_path, weights, {"step": 1, "note": "good"}, step=1)
    root = tmp_path / "checkpoints"
    # A later write killed half way: its temporary folder, half a weights file, no manifest.
    stale = root / ".tmp-step-000000002-99999"
    stale.mkdir()
    full = (good / "model.safetensors").read_bytes()
    (stale / "model.safetensors").write_bytes(full[: len(full) // 2])
    # And one renamed into place whose LATEST update never happened, with a torn state file.
    later = root / "step-000000003"
    shutil.copytree(good, later)
    state = (later / "trainer_state.pt").read_bytes()
    (later / "trainer_state.pt").write_bytes(state[: len(state) // 2])

    assert latest_checkpoint(tmp_path) == good
    loaded, trainer_state = load_checkpoint(good)
    assert trainer_state["note"] == "good" and all(torch.equal(loaded[k], weights[k]) for k in weights)
    with pytest.raises(CheckpointError, match=r"step-000000003/trainer_state\.pt: contents do not match"):
        load_checkpoint(later)
    # The next save (as after a resume) cleans the debris up and replaces the unnamed folder.
    save_checkpoint(tmp_path, weights, {"step": 3}, step=3)
    assert not list(root.glob(".tmp-*")) and load_checkpoint(later)[1] == {"step": 3}
    assert (root / "LATEST").read_text().strip() == "step-000000003"


def test_resume_ignores_debris_of_a_killed_write(run_copy, listops_dir, capsys):
    latest = latest_checkpoint(run_copy)
    debris = run_copy / "checkpoints" / ".tmp-step-000000009-424242"
    debris.mkdir()
    (debris / "model.safetensors").write_bytes((latest / "model.safetensors").read_bytes()[:100])
    (run_copy / "model.safetensors").unlink()  # as if killed before the end
    assert main(train_args(listops_dir, run_copy, "--epochs", "2", "--save-every", "4", "--resume")) == 0
    assert f"resumed from {latest}" in capsys.readouterr().err
    assert not debris.exists() and (run_copy / "model.safetensors").exists()


@pytest.mark.parametrize("part", ["weights", "trainer state"])
def test_a_full_disk_during_a_checkpoint_write_fails_cleanly(listops_dir, tmp_path, monkeypatch, capsys, part):
    # What the libraries raise when the disk fills up mid-write (checked against /dev/full).
    errors = {
        "weights": SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
        "trainer state": RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
    }
    writes = itertools.count(1)
    module, name = (ck, "save_file") if part == "weights" else (torch, "save")
    write = getattr(module, name)

    def fails_on_the_second_write(*args, **kwargs):
        if next(writes) == 2:
            raise errors[part]
        return write(*args, **kwargs)

    monkeypatch.setattr(module, name, fails_on_the_second_write)
    run = tmp_path / "run"
    assert main(train_args(listops_dir, run, "--epochs", "1", "--save-every", "2")) == 1
    line = one_line_error(capsys, "hrrformer train: ")
    assert "step-000000004: cannot write checkpoint" in line and str(errors[part]) in line
    assert latest_checkpoint(run).name == "step-000000002" and load_checkpoint(latest_checkpoint(run))
    assert not list((run / "checkpoints").glob(".tmp-*"))


# ============================================================================ 2. corrupt checkpoints
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    # name: (damage(checkpoint folder), message expected in the CheckpointError)
    "truncated weights": (lambda c: _truncate(c / "model.safetensors"), r"model\.safetensors: contents do not match"),
    "truncated weights, manifest updated": (
        lambda c: (_truncate(c / "model.safetensors"), rewrite_manifest(c)),
        r"model\.safetensors: not a readable safetensors",
    ),
    "bit flip in weights, manifest updated": (
        lambda c: (flip_byte(c / "model.safetensors", -3), rewrite_manifest(c)),
        r"model\.safetensors: tensors do not match the sha256",
    ),
    "bit flip in trainer state": (
        lambda c: flip_byte(c / "trainer_state.pt", 200),
        r"trainer_state\.pt: contents do not match",
    ),
    "trainer state missing": (lambda c: (c / "trainer_state.pt").unlink(), r"trainer_state\.pt: missing"),
    "manifest lists nothing": (
        lambda c: (c / "manifest.json").write_text('{"files": {}}'),
        r"manifest\.json: lists no sha256 for model\.safetensors, trainer_state\.pt",
    ),
    "manifest garbage": (lambda c: (c / "manifest.json").write_bytes(b"\x00\xff"), r"manifest\.json: missing or"),
    "state not a dict, manifest updated": (
        lambda c: (torch.save([1, 2], c / "trainer_state.pt"), rewrite_manifest(c)),
        r"trainer_state\.pt: holds a list, not a trainer state",
    ),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_checkpoint_raises_naming_the_file(run_copy, kind):
    damage, message = CORRUPTIONS[kind]
    checkpoint = latest_checkpoint(run_copy)
    damage(checkpoint)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(checkpoint)


@pytest.mark.parametrize("kind", ["truncated weights", "bit flip in trainer state", "manifest lists nothing"])
def test_resume_from_a_corrupt_checkpoint_exits_1_with_one_line(run_copy, listops_dir, capsys, kind):
    damage, message = CORRUPTIONS[kind]
    checkpoint = latest_checkpoint(run_copy)
    damage(checkpoint)
    capsys.readouterr()
    assert main(train_args(listops_dir, run_copy, "--epochs", "2", "--save-every", "4", "--resume")) == 1
    line = one_line_error(capsys, "hrrformer train: ")
    assert str(checkpoint) in line and re.search(message, line)


@pytest.mark.parametrize("latest", ["step-000000099", "../../../etc", "", "\x00garbage"])
def test_latest_naming_no_checkpoint_is_refused(run_copy, listops_dir, capsys, latest):
    (run_copy / "checkpoints" / "LATEST").write_text(latest + "\n")
    with pytest.raises(CheckpointError, match="LATEST"):
        latest_checkpoint(run_copy)
    capsys.readouterr()
    assert main(train_args(listops_dir, run_copy, "--epochs", "2", "--resume")) == 1
    assert "LATEST" in one_line_error(capsys, "hrrformer train: ")


def _other_model_weights() -> dict[str, torch.Tensor]:
    from hrrformer.model import Hrrformer, HrrformerConfig

    config = HrrformerConfig(vocab_size=16, max_len=2000, dim=32, heads=2, layers=1, mlp_dim=16, num_classes=10)
    return Hrrformer(config).state_dict()


def test_weights_of_another_model_are_refused_by_resume_and_eval(run_copy, listops_dir, capsys):
    checkpoint = latest_checkpoint(run_copy)
    _, state = load_checkpoint(checkpoint)
    save_checkpoint(run_copy, _other_model_weights(), state, step=state["step"])
    capsys.readouterr()
    assert main(train_args(listops_dir, run_copy, "--epochs", "2", "--resume")) == 1
    line = one_line_error(capsys, "hrrformer train: ")
    assert str(checkpoint) in line and "weights are from another model" in line and "shape differs" in line

    save_weights(run_copy / "model.safetensors", _other_model_weights())
    assert main(["eval", str(run_copy), "--device", "cpu"]) == 1
    line = one_line_error(capsys, "hrrformer eval: ")
    assert "model.safetensors: weights are from another model" in line


def test_eval_refuses_damaged_final_weights(run_copy, capsys):
    final = run_copy / "model.safetensors"
    _truncate(final)
    assert main(["eval", str(run_copy), "--device", "cpu"]) == 1
    assert f"{final}: not a readable safetensors" in one_line_error(capsys, "hrrformer eval: ")
    # Without final weights, eval falls back to the latest checkpoint, whose manifest is checked.
    final.unlink()
    flip_byte(latest_checkpoint(run_copy) / "model.safetensors", -3)
    assert main(["eval", str(run_copy), "--device", "cpu"]) == 1
    assert "model.safetensors: contents do not match the manifest" in one_line_error(capsys, "hrrformer eval: ")


def test_eval_refuses_bit_flipped_final_weights(run_copy, capsys):
    final = run_copy / "model.safetensors"
    with safe_open(str(final), framework="pt") as f:
        assert ck.DIGEST_KEY in (f.metadata() or {})
    flip_byte(final, -3)
    assert main(["eval", str(run_copy), "--device", "cpu"]) == 1
    assert "tensors do not match the sha256" in one_line_error(capsys, "hrrformer eval: ")


def test_save_weights_round_trip_and_detects_any_flipped_data_bit(tmp_path):
    weights = {"a": torch.randn(4, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.tensor(2.5)}
    path = save_weights(tmp_path / "w.safetensors", weights)
    loaded = load_weights(path)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    size = path.stat().st_size
    for offset in (size - 1, size - 40, size - 100):  # the data section, after the header
        damaged = tmp_path / f"flip{offset}.safetensors"
        shutil.copy(path, damaged)
        flip_byte(damaged, offset)
        with pytest.raises(CheckpointError, match=rf"flip{offset}\.safetensors: tensors do not match"):
            load_weights(damaged)
    with pytest.raises(CheckpointError, match="cannot write weights"):
        save_weights(tmp_path / "missing-folder" / "w.safetensors", weights)


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("manifest_updated", [False, True])
def test_a_malicious_pickle_in_the_trainer_state_never_runs(run_copy, listops_dir, tmp_path, capsys, manifest_updated):
    marker, probe = tmp_path / "pwned", tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))  # the payload is live: plain unpickling runs it
    assert probe.exists()
    checkpoint = latest_checkpoint(run_copy)
    torch.save({"optimizer": _Payload(marker)}, checkpoint / "trainer_state.pt")
    if manifest_updated:
        rewrite_manifest(checkpoint)
    message = "cannot load trainer state safely" if manifest_updated else "contents do not match the manifest"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(checkpoint)
    capsys.readouterr()
    assert main(train_args(listops_dir, run_copy, "--epochs", "2", "--resume")) == 1
    line = one_line_error(capsys, "hrrformer train: ")
    assert f"{checkpoint / 'trainer_state.pt'}: {message}" in line
    assert not marker.exists()


# ============================================================================ 3. hostile archives and files
def write_reviews(root: Path, n: int = 4) -> Path:
    """A small aclImdb tree: n reviews per polarity in train and test."""
    for split, polarity, i in itertools.product(("train", "test"), ("pos", "neg"), range(n)):
        folder = root / split / polarity
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}_{8 if polarity == 'pos' else 2}.txt").write_text(f"{split} {polarity} review {i}")
    return root


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data), link, 0o644
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_tar_is_read_without_writing_or_following_anything(tmp_path, monkeypatch, capsys):
    reviews = write_reviews(tmp_path / "src" / "aclImdb")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret_9.txt").write_text("secret")
    archive = tmp_path / "hostile.tar.gz"
    hostile = [
        tar_member("aclImdb/train/pos/../../../../escaped/train/pos/90_9.txt", data=b"escape"),
        tar_member("../aclImdb/train/pos/91_9.txt", data=b"parent"),
        tar_member(f"{outside}/aclImdb/train/pos/92_9.txt", data=b"absolute"),
        tar_member("aclImdb/train/pos/93_9.txt", tarfile.SYMTYPE, link=str(outside / "secret_9.txt")),
        tar_member("aclImdb/train/pos/94_9.txt", tarfile.LNKTYPE, link="../../../outside/secret_9.txt"),
        tar_member("aclImdb/train/neg/95_1.txt", tarfile.LNKTYPE, link="aclImdb/train/pos/0_8.txt"),
        tar_member("aclImdb/train/unsup", tarfile.SYMTYPE, link=str(outside)),
        tar_member("aclImdb/train/unsup/96_9.txt", data=b"through a link"),
        tar_member("aclImdb/train/pos/97_9.txt", tarfile.FIFOTYPE),
        tar_member("aclImdb/train/pos/98_9.txt", tarfile.CHRTYPE),
    ]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(reviews, arcname="aclImdb")
        for info, data in hostile:
            tar.addfile(info, data)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    assert main(["data", "inspect", str(archive), "--task", "text", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert snapshot(tmp_path) == before  # nothing written anywhere
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert train["count"] + report["splits"]["val"]["count"] == 8 and test["count"] == 8
    data = text.load(archive, val_fraction=0.0)
    contents = {bytes(int(t) - 1 for t in data.train[i][0]) for i in range(len(data.train))}
    assert not contents & {b"escape", b"parent", b"absolute", b"secret", b"through a link"}


def _with_alarm(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def handler(*_):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    return previous


def test_folder_fifos_are_skipped_links_followed_dangling_links_reported(tmp_path):
    reviews = write_reviews(tmp_path / "aclImdb")
    os.mkfifo(reviews / "train" / "pos" / "50_9.txt")
    (tmp_path / "elsewhere.txt").write_text("a linked review")
    os.symlink(tmp_path / "elsewhere.txt", reviews / "train" / "pos" / "51_9.txt")
    os.symlink(tmp_path / "nowhere.txt", reviews / "train" / "neg" / "52_1.txt")
    previous = _with_alarm(20)
    try:
        with pytest.raises(DataError, match=r"52_1\.txt: cannot read \(No such file or directory\)"):
            text.load(reviews)
        data = text.load(reviews, skip_bad=True, val_fraction=0.0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert data.skipped == {"unreadable file": 1}
    texts = {bytes(int(t) - 1 for t in data.train[i][0]) for i in range(len(data.train))}
    assert b"a linked review" in texts and len(data.train) == 9  # 8 reviews + the link; no FIFO


def _walk_then(action, victim: Path):
    """os.walk that damages ``victim`` right after listing its folder (before it is read)."""
    walk = os.walk

    def walk_and_damage(top, *args, **kwargs):
        for folder, subfolders, files in walk(top, *args, **kwargs):
            if Path(folder) == victim.parent and victim.exists():
                action(victim)
            yield folder, subfolders, files

    return walk_and_damage


def _replace_by_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("action", [Path.unlink, _replace_by_folder], ids=["deleted", "replaced by a folder"])
def test_a_file_that_changes_between_listing_and_reading(tmp_path, monkeypatch, action):
    # text (read at load time): DataError naming the file, or counted and skipped with skip_bad
    reviews = write_reviews(tmp_path / "aclImdb")
    victim = reviews / "train" / "pos" / "1_8.txt"
    monkeypatch.setattr(os, "walk", _walk_then(action, victim))
    with pytest.raises(DataError, match=rf"{re.escape(str(victim))}: cannot read"):
        text.load(reviews)
    monkeypatch.undo()
    reviews = write_reviews(tmp_path / "aclImdb2")
    victim = reviews / "train" / "pos" / "1_8.txt"
    monkeypatch.setattr(os, "walk", _walk_then(action, victim))
    data = text.load(reviews, skip_bad=True, val_fraction=0.0)
    assert data.skipped == {"unreadable file": 1} and len(data.train) == 7
    monkeypatch.undo()

    # binaries, listed then checked at load time: counted with skip_bad
    folder = tmp_path / "bin"
    for name in ("benign", "malicious"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            (folder / name / f"{i}.exe").write_bytes(bytes([i]) * 100)
    scan = binaries._scan_folder
    victim = folder / "benign" / "1.exe"

    def scan_then_damage(root):
        listed = scan(root)
        action(victim)
        return listed

    monkeypatch.setattr(binaries, "_scan_folder", scan_then_damage)
    with pytest.raises(DataError, match=rf"{re.escape(str(victim))}: (file not found|not a regular file)"):
        binaries.load(folder, val_fraction=0.0)
    _restore(victim)
    data = binaries.load(folder, val_fraction=0.0, skip_bad=True)
    reason = "missing file" if action is Path.unlink else "not a regular file"
    assert data.skipped == {reason: 1} and len(data.train) == 5
    monkeypatch.undo()

    # binaries, read lazily after loading: DataError naming the file when the item is read
    _restore(victim)
    data = binaries.load(folder, val_fraction=0.0)
    index = data.train.sequences.paths.index(str(victim))
    action(victim)
    with pytest.raises(DataError, match=rf"{re.escape(str(victim))}: cannot read"):
        data.train[index]


def _restore(path: Path) -> None:
    if path.is_dir():
        path.rmdir()
    path.write_bytes(b"\x01" * 100)


def test_inspect_binaries_reports_empty_files_and_cuts_gzip_bombs(tmp_path, capsys):
    folder = tmp_path / "bin"
    for name in ("benign", "malicious"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            (folder / name / f"{i}.bin").write_bytes(os.urandom(300))
    (folder / "benign" / "empty.bin").write_bytes(b"")
    with gzip.open(folder / "malicious" / "bomb.gz", "wb", compresslevel=9) as f:
        for _ in range(64):  # 64 MiB inflated, about 64 KiB on disk
            f.write(bytes(1 << 20))
    args = ["data", "inspect", str(folder), "--task", "binaries", "--max-len", "512", "--json"]
    assert main(args) == 1
    assert "empty.bin: zero-length file" in one_line_error(capsys, "hrrformer data: ")
    assert main([*args, "--skip-bad"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == {"empty file": 1}
    assert max(split["lengths"]["max"] for split in report["splits"].values() if split) == 512  # the bomb, cut


def test_tsv_nul_bytes_huge_lines_and_latin1_have_defined_outcomes(tmp_path, capsys):
    folder = tmp_path / "listops"
    folder.mkdir()
    valid = "( ( [MAX 2 ) 9 ) ]"
    huge_valid = "[MAX " + "1 " * 2_500_000 + "]"  # 5 MB of tokens: truncated to max_len
    huge_garbage = "x" * 5_000_000  # 5 MB without a space: one unknown token
    rows = [valid, "( [MAX\x00 2 ) ]", huge_valid, huge_garbage, "( [MIN 1 \xe9 ) ]", valid]
    for file in listops.FILES.values():
        with open(folder / file, "wb") as f:
            f.write(b"Source\tTarget\n")
            for row in rows:
                f.write(row.encode("latin-1") + b"\t2\n")
    with pytest.raises(DataError, match=r"basic_train\.tsv:3: unknown ListOps token '\[MAX\\x00'"):
        listops.load(folder)
    capsys.readouterr()
    assert main(["data", "inspect", str(folder), "--task", "listops"]) == 1
    line = one_line_error(capsys, "hrrformer data: ")
    assert "basic_train.tsv:3" in line and len(line) < 400
    data = listops.load(folder, skip_bad=True)
    assert data.skipped == {"malformed row": 9}  # NUL, 5 MB garbage, latin-1: 3 rows × 3 files
    assert [len(data.train[i][0]) for i in range(len(data.train))] == [4, 2000, 4]
    with pytest.raises(ValueError, match=r"^unknown ListOps token 'x{40}'… \(5,000,000 bytes\)$"):
        listops.tokenize(huge_garbage.encode())
    # A line longer than the reader's limit is one malformed row; the following line still parses.
    bad = BadInputs(skip_bad=True)
    rows = list(iter_rows(folder / "basic_train.tsv", 2, bad, header=(b"Source", b"Target"), max_line_bytes=1000))
    assert [lineno for lineno, _ in rows] == [2, 3, 6, 7] and bad.counts == {"malformed row": 2}
    with pytest.raises(DataError, match=r"basic_train\.tsv:4: line longer than 1,000 bytes"):
        list(
            iter_rows(
                folder / "basic_train.tsv", 2, BadInputs(False), header=(b"Source", b"Target"), max_line_bytes=1000
            )
        )

    # Byte-level tasks keep NUL and latin-1 bytes as they are (tokens byte + 1).
    aan = tmp_path / "aan"
    aan.mkdir()
    for file in retrieval.FILES.values():
        (aan / file).write_bytes(b"1\ta\tb\tnul\x00here\tcaf\xe9\n0\tc\td\tplain\tother\n")
    data = retrieval.load(aan)
    (first, second), label = data.train[0]
    assert label == 1 and bytes(int(t) - 1 for t in first) == b"nul\x00here"
    assert bytes(int(t) - 1 for t in second) == b"caf\xe9"

    # A CSV manifest must be UTF-8: the message names file and line.
    manifest = tmp_path / "list.csv"
    manifest.write_bytes(b"path,label\na.bin,x\nb\xe9.bin,y\n")
    with pytest.raises(DataError, match=r"list\.csv:3: the CSV manifest is not UTF-8"):
        binaries.load(manifest)


def test_read_prefix_refuses_fifos_and_reports_truncated_gzip(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    previous = _with_alarm(20)
    try:
        with pytest.raises(OSError, match="Not a regular file"):
            read_prefix(fifo, 10)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(OSError, match="Is a directory"):
        read_prefix(tmp_path, 10)
    compressed = gzip.compress(os.urandom(50_000))
    (tmp_path / "cut.gz").write_bytes(compressed[: len(compressed) // 2])
    assert len(read_prefix(tmp_path / "cut.gz", 1000)) == 1000  # the prefix exists: fine
    with pytest.raises(gzip.BadGzipFile, match="truncated or corrupt gzip data"):
        read_prefix(tmp_path / "cut.gz", 100_000)


# ============================================================================ 6. predict under load
@pytest.fixture(scope="module")
def binaries_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("binaries")
    rng = random.Random(0)
    for label in ("benign", "malicious"):
        (root / "data" / label).mkdir(parents=True)
        for i in range(24):
            size = rng.randint(20, 400)
            body = bytes(rng.randrange(128) + (128 if label == "malicious" else 0) for _ in range(size))
            (root / "data" / label / f"{i}.bin").write_bytes(body)
    run = root / "run"
    args = ["train", "--task", "binaries", "--data", str(root / "data"), "--out", str(run), *TINY]
    assert main([*args, "--max-len", "256", "--epochs", "1"]) == 0
    return run


def make_predict_inputs(folder: Path, n: int) -> tuple[list[str], dict[str, str]]:
    """n paths: small random binaries, a few gzip, and every kind of bad file. → (paths, expected errors)."""
    rng = random.Random(n)
    folder.mkdir()
    paths, errors = [], {}
    for i in range(n):
        path = folder / f"f{i:05d}.bin"
        body = rng.randbytes(rng.randint(1, 600))
        path.write_bytes(gzip.compress(body) if i % 97 == 0 else body)
        paths.append(str(path))
    bad = {
        "empty.bin": "empty file",
        "missing.bin": "cannot read: No such file or directory",
        "folder.bin": "cannot read: Is a directory",
        "fifo.bin": "cannot read: Not a regular file",
        "cut.gz": "truncated or corrupt gzip data",
        "garbage.gz": "truncated or corrupt gzip data",
    }
    (folder / "empty.bin").write_bytes(b"")
    (folder / "folder.bin").mkdir()
    os.mkfifo(folder / "fifo.bin")
    compressed = gzip.compress(rng.randbytes(5000))
    (folder / "cut.gz").write_bytes(compressed[:100])  # ends before the first max_len (256) bytes
    (folder / "garbage.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 50)  # invalid deflate block
    with gzip.open(folder / "bomb.gz", "wb", compresslevel=9) as f:
        for _ in range(64):
            f.write(bytes(1 << 20))
    latin1 = os.fsdecode(bytes(folder / "caf") + b"\xe9.bin")  # a file name that is not UTF-8
    Path(latin1).write_bytes(b"MZ" * 50)
    step = max(1, n // (len(bad) + 2))
    for k, name in enumerate([*bad, "bomb.gz", latin1]):  # spread the odd ones among the rest
        paths[k * step + 1] = str(folder / name)
    errors = {str(folder / name): message for name, message in bad.items()}
    return paths, errors


def run_predict(run: Path, paths: list[str], tmp_path: Path) -> dict:
    listing = tmp_path / "files.txt"
    with open(listing, "w", encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
        f.writelines(p + "\n" for p in paths)
    out, err, rss = tmp_path / "predict.out", tmp_path / "predict.err", tmp_path / "predict.rss"
    command = [sys.executable, "-m", "hrrformer", "predict", str(run), "--files-from", str(listing), "--json"]
    launcher = [sys.executable, "-c", PEAK_RSS_LAUNCHER, str(rss)]
    start = time.perf_counter()
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.run([*launcher, *command, "--device", "cpu"], stdout=stdout, stderr=stderr, env=CHILD_ENV)
    seconds = time.perf_counter() - start
    lines = out.read_bytes().decode("utf-8", errors="surrogateescape").splitlines()
    return {
        "rc": process.returncode,
        "results": [json.loads(line) for line in lines],
        "peak_rss_mb": int(rss.read_text()) / 1024,  # KiB on Linux
        "seconds": seconds,
        "stderr": err.read_text(errors="replace"),
    }


def check_predictions(done: dict, paths: list[str], errors: dict[str, str]) -> None:
    assert done["rc"] == 1, done["stderr"]  # some files failed
    results = done["results"]
    assert [r["file"] for r in results] == paths  # one line per file, in order
    failed = {r["file"]: r["error"] for r in results if "error" in r}
    assert failed.keys() == errors.keys()
    for path, message in errors.items():
        assert message in failed[path], (path, failed[path])
    good = [r for r in results if "error" not in r]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in good)
    assert sum(r["truncated"] for r in good) > len(good) // 4  # files over max_len (256) say so
    assert done["peak_rss_mb"] < 1536, done["peak_rss_mb"]


def _predict_at_scale(binaries_run, tmp_path, n):
    paths, errors = make_predict_inputs(tmp_path / "files", n)
    done = run_predict(binaries_run, paths, tmp_path)
    check_predictions(done, paths, errors)
    print(f"\npredict: {n:,} files in {done['seconds']:.1f} s, peak RSS {done['peak_rss_mb']:.0f} MB")


def test_predict_2000_files_in_bounded_memory(binaries_run, tmp_path):
    _predict_at_scale(binaries_run, tmp_path, 2_000)


@slow
def test_predict_10000_files_in_bounded_memory(binaries_run, tmp_path):
    _predict_at_scale(binaries_run, tmp_path, 10_000)


def test_predict_reads_the_list_from_stdin_and_needs_files(binaries_run, tmp_path, monkeypatch, capsys):
    good = tmp_path / "one.bin"
    good.write_bytes(b"\x90" * 300)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{good}\n\n{tmp_path / 'gone'}\n".encode())))
    assert main(["predict", str(binaries_run), "--files-from", "-", "--device", "cpu"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{good}\t") and "(truncated to the first 256 bytes)" in lines[0]
    assert lines[1] == f"{tmp_path / 'gone'}\terror: cannot read: No such file or directory"
    assert main(["predict", str(binaries_run)]) == 2
    assert "give files to classify" in capsys.readouterr().err


def test_concurrent_generation_into_the_cache_keeps_the_first_complete_copy(tmp_path, monkeypatch):
    """Two runs started at once both generate; the one finishing second must not delete the
    copy the first is already reading, and leaves no temporary folder behind."""
    from dataclasses import replace

    import hrrformer.data.listops_gen as listops_gen
    from hrrformer.tasks import get_task
    from hrrformer.train import generated_data_dir

    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path))
    preset = replace(get_task("listops").presets["demo"], generate=(40, 5, 5))
    real_generate = listops_gen.generate_listops
    first: dict[str, Path] = {}

    def generate_while_another_process_finishes(out: Path, **kwargs: int) -> None:
        monkeypatch.setattr(listops_gen, "generate_listops", real_generate)
        first["path"] = generated_data_dir("listops", preset, seed=0)  # the "other" process, done first
        (first["path"] / "marker").write_text("in use")
        real_generate(out, **kwargs)

    monkeypatch.setattr(listops_gen, "generate_listops", generate_while_another_process_finishes)
    target = generated_data_dir("listops", preset, seed=0)
    assert target == first["path"]
    assert (target / "marker").read_text() == "in use"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_generation_into_the_cache_respects_no_progress(tmp_path, monkeypatch, capfd):
    """``--no-progress`` reaches the generator: a log file gets no progress bar lines."""
    from dataclasses import replace

    from hrrformer.tasks import get_task
    from hrrformer.train import generated_data_dir

    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path))
    tiny = replace(get_task("listops").presets["demo"], generate=(40, 5, 5))
    quiet = generated_data_dir("listops", tiny, seed=1, progress=False)
    assert "ex/s" not in capfd.readouterr().err  # tqdm's rate column
    assert (quiet / ".complete").exists()
    generated_data_dir("listops", tiny, seed=2, progress=True)
    assert "ex/s" in capfd.readouterr().err  # the bar is on by default


def test_a_presets_generator_options_reach_the_generator_and_name_the_cache(tmp_path, monkeypatch):
    """A preset's ListOps lengths are the generated trees' lengths, and they get their own cache
    folder (LRA's 500-2000 keep the old name, so existing caches stay valid)."""
    from dataclasses import replace

    from hrrformer.data import load_task
    from hrrformer.tasks import get_task
    from hrrformer.train import generated_data_dir

    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path))
    lra = replace(get_task("listops").presets["demo"], generate=(30, 5, 5), generator_options=())
    short = replace(lra, generator_options=(("min_len", 5), ("max_len", 40)))
    assert generated_data_dir("listops", lra, seed=0, progress=False).name == "listops-30-5-5-seed0"
    path = generated_data_dir("listops", short, seed=0, progress=False)
    assert path.name == "listops-30-5-5-seed0-len5-40"
    data = load_task("listops", path)
    lengths = [len(data.train[i][0]) for i in range(len(data.train))]
    assert len(lengths) == 30 and min(lengths) > 5 and max(lengths) < 40


# ============================================================================ the driver entry point
if __name__ == "__main__" and sys.argv[1:2] == ["--kill-driver"]:
    print(json.dumps(_drive(json.loads(sys.argv[2]))))
