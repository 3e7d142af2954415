"""Train an Hrrformer (or its softmax twin) on a task: ``hrrformer train``.

Adam with the authors' exponential decay (lr · 0.9^(step / steps per epoch), floored at 1e-5),
label smoothing 0.1, dropout 0.1, gradient clipping at norm 1 (the ``paper`` presets: each task's
decay rate, no clipping; :mod:`hrrformer.tasks`). Model, optimiser, scheduler and
RNG states are checkpointed every epoch (and every ``--save-every`` steps), atomically;
``--resume`` continues exactly where the last checkpoint left off. Under ``torchrun`` the same
code trains with DistributedDataParallel; rank 0 alone writes logs and checkpoints.

``--sequence-parallel N`` (under torchrun, world size = DP × N) splits every sequence over N
consecutive ranks, for inputs too long for one device's memory: the N ranks of a group see the
same batch, each embeds and attends over its contiguous chunk (padded to a multiple of N and
masked), and HRR attention couples the chunks with an all-reduce of O(batch·heads·head_dim)
numbers per layer (:mod:`hrrformer.parallel`). The groups split the data as DDP replicas do;
``--batch-size`` is per group. Gradients: no DDP; after backward one all-reduce over the world
(:func:`hrrformer.distributed.average_gradients`). Metrics and evaluation count each batch once
(summed over the data-parallel ranks only). HRR attention and single-document tasks only; the
learned position table, if any, stays whole (replicated) on every rank and in the checkpoints.

Every option is a field of :class:`TrainConfig` or of :class:`hrrformer.config.HrrformerConfig`
(``model``), with its help; the flags, config.json and the resume check are generated from them
(:mod:`hrrformer.options`), and a preset (:mod:`hrrformer.tasks`) is a partial dict of them.
:func:`train` reads as its steps: a :class:`Trainer` is set up, restored, started, trains epoch
by epoch, and finishes.

Outputs in RUN_DIR: ``config.json``, ``metrics.jsonl`` (one JSON line per logging step and per
epoch), ``summary.json``, ``checkpoints/``, and ``model.safetensors`` (final weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields

from . import kinds
from .checkpoint import CheckpointError
from .config import HrrformerConfig
from .data.load import default_cache_dir, generated_data_dir
from .distributed import teardown_distributed
from .forward import autocast, batch_collate, evaluate, forward_batch, resolve_device
from .options import add_flags, defaults, given, pick
from .rundir import RESUMABLE_CHANGES, TrainConfig, build_model, check_sequence_parallel, load_run
from .tasks import TASKS, get_preset
from .trainer import TrainingDiverged, load_data, train

# The command's own functions, and (re-exported) the names its callers use from this module.
__all__ = [
    "RESUMABLE_CHANGES",
    "TrainConfig",
    "TrainingDiverged",
    "add_arguments",
    "autocast",
    "batch_collate",
    "build_model",
    "check_sequence_parallel",
    "config_from_args",
    "default_cache_dir",
    "evaluate",
    "forward_batch",
    "generated_data_dir",
    "load_data",
    "load_run",
    "resolve_device",
    "run",
    "train",
]


def _preset_fields() -> set[str]:
    """The options some preset sets (their flags' help says "default: the preset's")."""
    return {name for spec in TASKS.values() for preset in spec.presets.values() for name in preset.options}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's own flags, then one flag per training option and per model option."""
    parser.add_argument("--out", help="run directory (default runs/<task>-<preset>-<attention>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    add_flags(parser.add_argument_group("training options"), TrainConfig, from_preset=_preset_fields())
    add_flags(parser.add_argument_group("model options"), HrrformerConfig, from_preset=_preset_fields())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the options' defaults, overridden by the preset's, overridden by the flags given."""
    train_flags, model_flags = given(args, TrainConfig), given(args, HrrformerConfig)
    named = {**defaults(TrainConfig), **train_flags}
    preset = get_preset(named["task"], named["preset"]).options
    unknown = sorted(set(preset) - set(named) - set(defaults(HrrformerConfig)))
    if unknown:
        raise ValueError(f"preset {named['preset']!r} of task {named['task']!r} sets unknown options {unknown}")
    model_defaults = {f.name: f.default for f in fields(HrrformerConfig) if f.metadata["flag"]}
    model = {**model_defaults, **pick(HrrformerConfig, preset), **model_flags}
    # a preset's variant options are for the kinds that take them (an explicit flag still must be taken)
    model.update({k: v for k, v in kinds.untaken_options(model["attention"]).items() if k not in model_flags})
    HrrformerConfig(**model)  # validate shapes early, before any data is read
    train_options = {**defaults(TrainConfig), **pick(TrainConfig, preset), **train_flags}
    config = TrainConfig(**{**train_options, "attention": model["attention"], "model": model})
    check_sequence_parallel(config)
    return config


def run(args: argparse.Namespace) -> int:
    """``hrrformer train``: 2 for a bad option, 1 for a failed run, else 0 (the summary printed)."""
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"hrrformer train: {e}", file=sys.stderr)
        return 2
    out = args.out or f"runs/{config.task}-{config.preset}-{config.attention}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        summary = train(config, out, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, CheckpointError, TrainingDiverged, OSError) as e:
        print(f"hrrformer train: {e}", file=sys.stderr)
        return 1
    finally:
        teardown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        test = summary["test_accuracy"]
        sequences = summary.get("test_sequence_accuracy")  # per position: accuracy over the queries, and per sequence
        print(json.dumps(summary, indent=2))
        print(
            f"{config.task}: val accuracy {summary['val_accuracy']:.4f}"
            + (f", test accuracy {test:.4f}" if test is not None else ", no test split")
            + (f" (whole sequences right: {sequences:.4f})" if sequences is not None else "")
            + f" after {summary['train_seconds']:.0f} s of training; run in {out}"
        )
    return 0
