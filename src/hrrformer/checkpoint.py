"""Atomic, verifiable, pickle-free checkpoints.

Layout of a run directory::

    RUN_DIR/checkpoints/step-000001234/model.safetensors   weights (safetensors)
                                      /trainer_state.pt    optimiser, scheduler, RNG, counters
                                      /manifest.json       sha256 of both files
    RUN_DIR/checkpoints/LATEST                             name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, flushed to disk, renamed into place, and
only then named in ``LATEST`` (itself replaced atomically). A write killed at any point leaves
the previous checkpoint intact and named; a write that fails (disk full) raises CheckpointError
and leaves no temporary folder. Loading checks the hashes (the manifest must list both files),
reads the weights with safetensors and the trainer state with ``torch.load(weights_only=True)``:
no pickled code runs.

Weights files written here (checkpoints, and :func:`save_weights` for a run's final weights)
also carry a sha256 of their tensors in the safetensors metadata, which :func:`load_weights`
checks, so that a flipped bit in a lone weights file is found too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

__all__ = [
    "CheckpointError",
    "atomic_write_text",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "save_checkpoint",
    "save_weights",
]

MODEL_FILE, STATE_FILE, MANIFEST_FILE, LATEST_FILE = "model.safetensors", "trainer_state.pt", "manifest.json", "LATEST"
#: safetensors metadata key holding the sha256 of a weights file's tensors (names, dtypes, shapes, bytes).
DIGEST_KEY = "hrrformer.sha256"
_CHECKPOINT_NAME = re.compile(r"step-\d+")


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


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _write_weights(model_state: dict[str, torch.Tensor], file: Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    save_file(tensors, str(file), metadata={DIGEST_KEY: _tensor_digest(tensors)})


def save_weights(path: str | Path, model_state: dict[str, torch.Tensor]) -> Path:
    """Write a safetensors weights file atomically (temporary file, fsync, rename), with the sha256
    of its tensors in its metadata. Raises CheckpointError naming the file when it cannot be written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_weights(model_state, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except (OSError, SafetensorError) as e:  # safetensors reports I/O errors (a full disk) as SafetensorError
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write weights ({e})") from None
    return path


def save_checkpoint(
    run_dir: str | Path,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    *,
    step: int,
    keep: int = 2,
) -> Path:
    """Write a checkpoint for ``step`` atomically and keep the newest ``keep`` of them.

    A failed write (e.g. a full disk) raises CheckpointError naming the checkpoint, removes its
    temporary folder, and leaves the previous checkpoint in place and named in LATEST.
    """
    root = Path(run_dir) / "checkpoints"
    name = f"step-{step:09d}"
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_weights(model_state, tmp / MODEL_FILE)
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
    except (OSError, SafetensorError, RuntimeError) as e:  # torch.save: RuntimeError on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{final}: cannot write checkpoint ({e})") from None
    checkpoints = sorted(p for p in root.iterdir() if p.is_dir() and _CHECKPOINT_NAME.fullmatch(p.name))
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
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{latest}: unreadable ({e})") from None
    if not _CHECKPOINT_NAME.fullmatch(name):
        raise CheckpointError(f"{latest} names {name[:80]!r}, which is not a checkpoint folder name (step-N)")
    path = latest.parent / name
    if not path.is_dir():
        raise CheckpointError(f"{latest} names {path.name}, which does not exist")
    return path


def _verified(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        hashes = manifest["files"]
        if not isinstance(hashes, dict):
            raise TypeError(f"'files' is a {type(hashes).__name__}, not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path}: missing or unreadable checkpoint manifest ({e})") from None
    missing = {MODEL_FILE, STATE_FILE} - set(hashes)
    if missing:
        raise CheckpointError(f"{manifest_path}: lists no sha256 for {', '.join(sorted(missing))}")
    for name, expected in hashes.items():
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise CheckpointError(f"{manifest_path}: lists {name!r}, which is not a file of the checkpoint")
        file = path / name
        try:
            actual = _sha256(file)
        except FileNotFoundError:
            raise CheckpointError(f"{file}: missing from checkpoint") from None
        except OSError as e:
            raise CheckpointError(f"{file}: unreadable ({e})") from None
        if actual != expected:
            raise CheckpointError(f"{file}: contents do not match the manifest's sha256 (truncated or corrupted)")
    return manifest


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked against the sha256 in its metadata when it has one."""
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors weights file ({e})") from None
    expected = metadata.get(DIGEST_KEY)
    if expected is not None and _tensor_digest(tensors) != expected:
        raise CheckpointError(f"{file}: tensors do not match the sha256 in the file's metadata (corrupted)")
    return tensors


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights, with a clear error: a checkpoint folder (its manifest checked first) or a
    safetensors file (its own sha256 checked when its metadata has one)."""
    path = Path(path)
    if path.is_dir():
        _verified(path)
        return _read_weights(path / MODEL_FILE)
    return _read_weights(path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and load a checkpoint folder → (model state, trainer state)."""
    path = Path(path)
    _verified(path)
    weights = _read_weights(path / MODEL_FILE)
    try:
        trainer_state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path / STATE_FILE}: cannot load trainer state safely ({_one_line(e)})") from None
    if not isinstance(trainer_state, dict):
        raise CheckpointError(f"{path / STATE_FILE}: holds a {type(trainer_state).__name__}, not a trainer state")
    return weights, trainer_state


def _one_line(error: Exception) -> str:
    """The gist of a ``torch.load`` error in one line (its weights-only errors span many lines,
    with advice to load unsafely that does not apply to files of unknown origin)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    match = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
    detail = match.group(1) if match else next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {detail[:300]}"


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
