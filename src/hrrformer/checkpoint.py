"""Atomic, verifiable, pickle-free checkpoints.

Layout of a run directory::

    RUN_DIR/checkpoints/step-000001234/model.safetensors   weights (safetensors)
                                      /trainer_state.pt    optimiser, scheduler, RNG, counters
                                      /manifest.json       sha256 of both files
    RUN_DIR/checkpoints/LATEST                             name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, flushed to disk, renamed into place, and
only then named in ``LATEST`` (itself replaced atomically). A write killed at any point leaves
the previous checkpoint intact and named. Loading checks the hashes, reads the weights with
safetensors and the trainer state with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "CheckpointError",
    "atomic_write_text",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "save_checkpoint",
]

MODEL_FILE, STATE_FILE, MANIFEST_FILE, LATEST_FILE = "model.safetensors", "trainer_state.pt", "manifest.json", "LATEST"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or from another model. The message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def save_checkpoint(
    run_dir: str | Path,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    *,
    step: int,
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``step`` atomically and keep the newest ``keep`` of them."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:09d}"
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / MODEL_FILE))
    torch.save(trainer_state, tmp / STATE_FILE)
    manifest = {"step": step, "files": {f: _sha256(tmp / f) for f in (MODEL_FILE, STATE_FILE)}}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    for f in (MODEL_FILE, STATE_FILE, MANIFEST_FILE):
        _fsync(tmp / f)
    if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    atomic_write_text(root / LATEST_FILE, name + "\n")
    checkpoints = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint named in LATEST, or None when the run has none."""
    latest = Path(run_dir) / "checkpoints" / LATEST_FILE
    if not latest.exists():
        return None
    path = latest.parent / latest.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{latest} names {path.name}, which does not exist")
    return path


def _verified(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        hashes = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path}: missing or unreadable checkpoint manifest ({e})") from None
    for name, expected in hashes.items():
        file = path / name
        if not file.exists():
            raise CheckpointError(f"{file}: missing from checkpoint")
        if _sha256(file) != expected:
            raise CheckpointError(f"{file}: contents do not match the manifest's sha256 (truncated or corrupted)")
    return manifest


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (a checkpoint folder or the file itself), with a clear error."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors weights file ({e})") from None


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and load a checkpoint folder → (model state, trainer state)."""
    path = Path(path)
    _verified(path)
    weights = load_weights(path)
    try:
        trainer_state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(
            f"{path / STATE_FILE}: cannot load trainer state safely ({type(e).__name__}: {e})"
        ) from None
    return weights, trainer_state


def load_model_state(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict`` that names the file and the differing keys or shapes on a mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong_shape:
            details.append(
                "shape differs for "
                + ", ".join(f"{k} {tuple(weights[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong_shape[:5])
            )
        raise CheckpointError(f"{source}: weights are from another model: {'; '.join(details)}")
    model.load_state_dict(weights)
