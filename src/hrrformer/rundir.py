"""A training run's directory: its config, the rules for resuming it, and loading it when done.

:class:`TrainConfig` is everything a run depends on (written to ``RUN_DIR/config.json``); each
of its fields is an ``hrrformer train`` flag (:mod:`hrrformer.options`) but those the data or
the launcher set. :func:`prepare_run_dir` refuses to mix runs (an existing run needs
``--resume`` with the same config, or ``--overwrite``; :data:`RESUMABLE_CHANGES` may differ);
:func:`load_run` gives a finished (or checkpointed) run's config and model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import kinds
from .checkpoint import CheckpointError, atomic_write_text, latest_checkpoint, load_model_state, load_weights
from .config import HrrformerConfig
from .distributed import DistInfo, barrier
from .model import Hrrformer, HrrformerDualEncoder
from .options import defaults, option, resumable
from .tasks import PRESET_NAMES, TASKS

__all__ = [
    "DATA_DERIVED_FIELDS",
    "DATA_DERIVED_MODEL_KEYS",
    "RESUMABLE_CHANGES",
    "TrainConfig",
    "build_model",
    "check_run_dir",
    "check_sequence_parallel",
    "load_run",
    "prepare_run_dir",
    "refuse_other_config",
]

_RUN = {"flag": False}  # set by the data or the launcher, not by a flag


@dataclass
class TrainConfig:
    """Everything a run depends on; written to RUN_DIR/config.json. Each field but those the data
    or the launcher set is an ``hrrformer train`` flag (:mod:`hrrformer.options`); the model's
    options are the fields of :class:`HrrformerConfig`, in ``model``."""

    task: str = option("mqar", f"the task, one of: {', '.join(TASKS)}", metavar="TASK")
    preset: str = option("demo", f"the options preset, one of: {', '.join(PRESET_NAMES)}", metavar="NAME")
    data: str | None = option(
        None,
        "data path in the task's official format (generated tasks: omit to generate)",
        metavar="PATH",
        resumable=True,
    )
    attention: str = option("hrr", "the model's attention (model.attention, repeated for summaries)", **_RUN)
    model: dict[str, Any] = option(help="the HrrformerConfig fields (flags: the model's options)", factory=dict, **_RUN)
    pair: bool = option(False, "a two-document task (set from the data)", **_RUN)
    class_names: list[str] | None = option(None, "class names (from the data)", **_RUN)
    batch_size: int = option(32, "examples per batch, per process (per sequence-parallel group)")
    epochs: int = option(2, "training epochs", resumable=True)
    lr: float = option(1e-3, "Adam's learning rate")
    lr_decay: float = option(0.9, "learning rate factor per epoch (exponential decay, continuous)")
    min_lr: float = option(1e-5, "the decay's floor")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy")
    grad_clip: float = option(1.0, "clip the gradient to this norm (0: off)")
    limit: int | None = option(None, "use at most this many examples per split")
    skip_bad: bool = option(False, "skip and count bad inputs instead of stopping")
    seed: int = option(0, "random seed: initialisation, shuffling, dropout")
    amp: Literal["none", "bf16"] = option("none", "mixed precision")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to train (auto: cuda if available)", resumable=True)
    compile: bool = option(False, "torch.compile the model")
    workers: int = option(0, "DataLoader worker processes", resumable=True)
    bucket: int = option(
        50, "length bucketing: sort pools of N batches by length to cut padding (0 or 1: random batches)"
    )
    pad_multiple: int = option(
        128, "pad each batch to a multiple of N positions (capped at --max-len): few shapes, flat memory"
    )
    log_every: int = option(10, "steps between metrics.jsonl lines", resumable=True)
    save_every: int = option(0, "also checkpoint every N steps (0: per epoch only)", resumable=True)
    max_minutes: float | None = option(
        None,
        "training time budget: stop after the step that crosses it, then validate and test",
        metavar="M",
        resumable=True,
    )
    world_size: int = option(1, "processes (from torchrun)", **_RUN)
    sequence_parallel: int = option(
        1,
        "split each sequence over N consecutive ranks (torchrun; world size a multiple of N): "
        "for inputs too long for one device; HRR attention, single-document tasks",
    )
    progress: bool = option(True, "progress bars", resumable=True)


#: Keys of config.json that may change on --resume (the budget and the machine, not the model or data).
RESUMABLE_CHANGES = resumable(TrainConfig)


def build_model(config: TrainConfig) -> nn.Module:
    """The (freshly initialised) model ``config`` describes: a dual encoder for two-document tasks."""
    model_config = HrrformerConfig.from_dict(config.model)
    return HrrformerDualEncoder(model_config) if config.pair else Hrrformer(model_config)


def check_sequence_parallel(config: TrainConfig) -> None:
    """ValueError for what sequence parallelism does not support (the world size is checked on joining)."""
    n = config.sequence_parallel
    if n < 1:
        raise ValueError(f"--sequence-parallel must be ≥ 1, got {n}")
    if n == 1:
        return
    kind = kinds.get(config.attention)
    if not kind.sequence_parallel:
        parallel = ", ".join(k.name for k in kinds.KINDS.values() if k.sequence_parallel)
        raise ValueError(f"--sequence-parallel {n} needs --attention {parallel}: {kind.note}")
    if config.pair:
        raise ValueError(
            f"--sequence-parallel {n} does not support two-document tasks ({config.task}); "
            "train them with data parallelism only"
        )


def _with_new_option_defaults(saved: dict[str, Any], current: TrainConfig) -> dict[str, Any]:
    """A saved config completed with the defaults of options it predates: a run written before
    an option existed ran with that option's default (TrainConfig fields, and model keys)."""
    completed = {**defaults(TrainConfig), **saved}
    if isinstance(saved.get("model"), dict):
        model_defaults = {k: v for k, v in defaults(HrrformerConfig).items() if k in current.model}
        completed["model"] = {**model_defaults, **saved["model"]}
    return completed


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    return [f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


#: What loading the data sets in the config (TrainConfig fields, then model keys).
DATA_DERIVED_FIELDS = ("pair", "class_names")
DATA_DERIVED_MODEL_KEYS = ("vocab_size", "num_classes", "pad_id")


def refuse_other_config(config_path: Path, config: TrainConfig, *, data_loaded: bool = True) -> None:
    """Raise if --resume would continue ``config_path``'s run with another config (keys beyond
    :data:`RESUMABLE_CHANGES`). Before the data is loaded (``data_loaded=False``) the keys the data
    sets are taken from the saved config, so a mismatch is refused before any data is read or made."""
    saved = _with_new_option_defaults(json.loads(config_path.read_text()), config)
    current = asdict(config)
    if not data_loaded:
        current.update({key: saved.get(key) for key in DATA_DERIVED_FIELDS})
        saved_model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
        current["model"].update({key: saved_model.get(key) for key in DATA_DERIVED_MODEL_KEYS})
    differences = _config_differences(saved, current)
    if differences:
        raise ValueError(f"--resume: {config_path} is from another config; differing keys: {'; '.join(differences)}")


def check_run_dir(
    run_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool, data_loaded: bool = True
) -> None:
    """Refuse to mix runs: a run already in ``run_dir`` needs --resume (with the same config, see
    :func:`refuse_other_config`) or --overwrite. ValueError otherwise."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return
    if not (resume or overwrite):
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if resume:
        refuse_other_config(config_path, config, data_loaded=data_loaded)


def prepare_run_dir(run_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool, info: DistInfo) -> None:
    """Empty ``run_dir`` for --overwrite, check it (:func:`check_run_dir`), and write config.json (rank 0)."""
    config_path = run_dir / "config.json"
    if info.is_main and overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    barrier(info)
    check_run_dir(run_dir, config, resume=resume, overwrite=False)  # what --overwrite allowed is gone
    barrier(info)  # every rank has checked before rank 0 writes: a slow rank must not see the new config.json
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, json.dumps(asdict(config), indent=2) + "\n")
    barrier(info)


def load_run(run_dir: str | Path, device: torch.device | None = None) -> tuple[TrainConfig, nn.Module]:
    """A run's config and model with its final (or latest checkpointed) weights, in eval mode."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise ValueError(f"{run_dir}: not a run directory (no config.json)")
    try:
        config = TrainConfig(**json.loads(config_path.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{config_path}: not a config written by this version of hrrformer ({e})") from None
    model = build_model(config)
    final = run_dir / "model.safetensors"
    source = final if final.exists() else latest_checkpoint(run_dir)
    if source is None:
        raise CheckpointError(f"{run_dir}: no model.safetensors and no checkpoint")
    load_model_state(model, load_weights(source), source)
    return config, model.to(device or torch.device("cpu")).eval()
