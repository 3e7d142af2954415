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
import functools
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from . import kinds
from .batching import bucketed_batches, evaluation_batches, length_keys, plain_batches
from .checkpoint import (
    CheckpointError,
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    save_weights,
)
from .config import HrrformerConfig
from .data.base import TaskData, collate
from .distributed import (
    DistInfo,
    all_reduce_sum,
    average_gradients,
    barrier,
    dp_all_reduce_sum,
    setup_distributed,
    teardown_distributed,
)
from .model import Hrrformer, HrrformerDualEncoder
from .options import add_flags, defaults, given, option, pick, resumable
from .parallel import enable_sequence_parallel, shard_sequence
from .tasks import PRESET_NAMES, TASKS, Preset, get_preset, get_task

__all__ = ["TrainConfig", "TrainingDiverged", "build_model", "evaluate", "load_run", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


_RUN = {"flag": False}  # set by the data or the launcher, not by a flag


@dataclass
class TrainConfig:
    """Everything a run depends on; written to RUN_DIR/config.json. Each field but those the data
    or the launcher set is an ``hrrformer train`` flag (:mod:`hrrformer.options`); the model's
    options are the fields of :class:`HrrformerConfig`, in ``model``."""

    task: str = option("listops", f"the task, one of: {', '.join(TASKS)}", metavar="TASK")
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


# ----------------------------------------------------------------------------- building blocks
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def build_model(config: TrainConfig) -> nn.Module:
    model_config = HrrformerConfig.from_dict(config.model)
    return HrrformerDualEncoder(model_config) if config.pair else Hrrformer(model_config)


def forward_batch(
    model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device, sequence_parallel_group: Any = None
) -> torch.Tensor:
    """Logits (B, C) for a collated batch of either kind.

    With ``sequence_parallel_group`` (a model made with ``enable_sequence_parallel``), the model
    gets this rank's chunk of the (whole, collated) batch: padded to a multiple of the group's
    size, the padding masked. Two-document batches are not supported then.
    """
    if "tokens" in batch:
        tokens, mask = batch["tokens"], batch["mask"]
        if sequence_parallel_group is not None:
            tokens = shard_sequence(tokens, sequence_parallel_group, dim=1, pad_value=0)[0]
            mask = shard_sequence(mask, sequence_parallel_group, dim=1, pad_value=True)[0]
        return model(tokens.to(device), mask.to(device))
    if sequence_parallel_group is not None:
        raise ValueError("sequence parallelism does not support two-document (pair) tasks")
    return model(
        batch["tokens_a"].to(device),
        batch["tokens_b"].to(device),
        batch["mask_a"].to(device),
        batch["mask_b"].to(device),
    )


def autocast(device: torch.device, amp: str):
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def default_cache_dir() -> Path:
    return Path(os.environ.get("HRRFORMER_CACHE", Path.home() / ".cache" / "hrrformer"))


def generated_data_dir(task: str, preset: Preset, seed: int, progress: bool = True) -> Path:
    """Generate the task's standard data set into the cache once (atomically), and return its path.

    ``progress=False`` turns the generator's progress bar off (``--no-progress``: logs stay clean).
    """
    spec = get_task(task)
    options = {**dict(spec.generator_options), **dict(preset.generator_options)}
    n_train, n_val, n_test = preset.generate
    if spec.generator == "listops":
        from .data.listops_gen import generate_listops

        lengths = (options.get("min_len", 500), options.get("max_len", 2000))
        suffix = "" if lengths == (500, 2000) else f"-len{lengths[0]}-{lengths[1]}"  # LRA's lengths: no suffix
        target = default_cache_dir() / f"listops-{n_train}-{n_val}-{n_test}-seed{seed}{suffix}"
        make = lambda out: generate_listops(  # noqa: E731
            out,
            train=n_train,
            val=n_val,
            test=n_test,
            seed=seed,
            min_len=lengths[0],
            max_len=lengths[1],
            progress=progress,
        )
    else:
        from .data.pathfinder_gen import generate_pathfinder

        size = options.get("size", 32)
        target = default_cache_dir() / f"pathfinder{size}-{n_train}-seed{seed}"
        make = lambda out: generate_pathfinder(out, size=size, n=n_train, seed=seed, progress=progress)  # noqa: E731
    if (target / ".complete").exists():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"generating {task} data into {target} (once; reused afterwards)", file=sys.stderr)
    make(tmp)
    (tmp / ".complete").write_text("")
    if target.exists() and not (target / ".complete").exists():  # an incomplete leftover
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)  # fails if another process's complete copy is there: it may be in use
    except OSError:
        if not (target / ".complete").exists():
            raise
        shutil.rmtree(tmp)
    return target


def load_data(config: TrainConfig, info: DistInfo, data_path: str | None = None) -> TaskData:
    """The task's data from ``data_path`` (or config.data; generated into the cache when absent)."""
    from .data import load_task

    spec = get_task(config.task)
    path = data_path or config.data
    if path is None:
        if spec.generator is None:
            raise ValueError(f"--data is required for task {config.task!r} (it has no generator)")
        preset = get_preset(config.task, config.preset)
        if info.is_main:
            generated_data_dir(config.task, preset, 0, progress=config.progress)
        barrier(info)
        path = str(generated_data_dir(config.task, preset, 0, progress=config.progress))
    config.data = path
    max_len = config.model.get("max_len")
    data = load_task(
        spec.data_task, path, max_len=max_len, seed=config.seed, limit=config.limit, skip_bad=config.skip_bad
    )
    if data.skipped and info.is_main:
        print(f"skipped bad inputs: {data.skipped}", file=sys.stderr)
    return data


def _lr_factor(config: TrainConfig, steps_per_epoch: int):
    floor = config.min_lr / config.lr

    def factor(step: int) -> float:
        return max(config.lr_decay ** (step / steps_per_epoch), floor)

    return factor


def _epoch_batches(
    sampler: DistributedSampler, batch_size: int, epoch: int, skip: int, keys: np.ndarray | None, bucket: int
) -> list[list[int]]:
    """This rank's batches of indices for ``epoch`` (length-bucketed when ``keys`` are known),
    less the first ``skip`` (already trained). Deterministic in (seed, epoch): resuming redraws them."""
    sampler.set_epoch(epoch)
    indices = list(sampler)
    if keys is None:
        batches = plain_batches(indices, batch_size)
    else:
        batches = bucketed_batches(indices, keys, batch_size, pool_batches=bucket, seed=sampler.seed + epoch)
    return batches[skip:]


def batch_collate(model: nn.Module, pad_multiple: int):
    """The collate for ``model``: batch lengths rounded up to ``pad_multiple``, capped at its max_len.

    With every batch length distinct (length bucketing makes them so), glibc's heap fragments and
    a training process's resident memory grows without bound (measured: 3 → 7.5 GB in 240 steps
    of the Text model; 12 GB after 20 minutes); rounding to 128 keeps it flat (3.1 GB), and
    faster than returning memory to the kernel after each step (2.1× fewer tokens/s)."""
    config = getattr(model, "config", None)
    return functools.partial(collate, pad_multiple=pad_multiple, max_len=getattr(config, "max_len", None))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_classes: int,
    info: DistInfo | None = None,
    amp: str = "none",
    progress: bool = False,
    pad_multiple: int = 1,
) -> dict[str, Any]:
    """Accuracy, mean loss, example count and confusion matrix (rows = true class), over all ranks.

    Each data-parallel replica (a sequence-parallel group: its ranks evaluate the same examples,
    each its chunk of them) evaluates every DP-th example; totals are summed over the
    data-parallel ranks only, so each example counts once.
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    indices = range(info.dp_rank, len(dataset), info.dp_size)
    batches = evaluation_batches(indices, length_keys(dataset), batch_size)
    loader = DataLoader(
        dataset, batch_sampler=batches, collate_fn=batch_collate(model, pad_multiple), generator=torch.Generator()
    )
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and info.is_main)):
        with autocast(device, amp):
            logits = forward_batch(model, batch, device, info.sp_group).float()
        labels = batch["labels"].to(device)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
        pred = logits.argmax(-1).cpu()
        confusion.index_put_((batch["labels"], pred), torch.ones(len(pred), dtype=torch.float64), accumulate=True)
    dp_all_reduce_sum(confusion, info)
    dp_all_reduce_sum(loss_sum, info)
    model.train(was_training)
    n = int(confusion.sum())
    return {
        "accuracy": float(confusion.diagonal().sum() / n) if n else None,
        "loss": float(loss_sum / n) if n else None,
        "examples": n,
        "confusion_matrix": confusion.long().tolist(),
    }


class MetricsLog:
    """Append-only JSON lines, written by rank 0 only."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (work a resumed run will redo)."""
        if not (self.enabled and self.path.exists()):
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill mid-write: the resumed run rewrites what it held
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
DATA_DERIVED_MODEL_KEYS = ("vocab_size", "num_classes")


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


def prepare_run_dir(run_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool, info: DistInfo) -> None:
    """Refuse to mix runs: an existing run needs --resume (same config) or --overwrite."""
    config_path = run_dir / "config.json"
    if info.is_main and overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    barrier(info)
    if config_path.exists() and not resume:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if resume and config_path.exists():
        refuse_other_config(config_path, config)
    barrier(info)  # every rank has checked before rank 0 writes: a slow rank must not see the new config.json
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, json.dumps(asdict(config), indent=2) + "\n")
    barrier(info)


# ----------------------------------------------------------------------------- the loop
@dataclass
class Progress:
    """Where training stands: what a checkpoint records besides the weights and optimiser."""

    step: int = 0
    #: The epoch running (or to run next) and how many of its batches are done.
    epoch: int = 0
    batches_done: int = 0
    #: This rank's share of the epoch's (loss·n, correct, n) so far, when resuming mid-epoch.
    epoch_sums: torch.Tensor | None = None
    #: One record per epoch done (as in metrics.jsonl).
    history: list[dict[str, Any]] = field(default_factory=list)
    out_of_time: bool = False


class StepResult(NamedTuple):
    loss: float
    correct: int
    examples: int
    #: Before clipping; the same on every rank (the gradients are reduced). None without clipping.
    grad_norm: torch.Tensor | None


def join_world(config: TrainConfig) -> tuple[torch.device, DistInfo]:
    """This process's device and place in the (torchrun) world; records the world size in ``config``."""
    device = resolve_device(config.device)
    check_sequence_parallel(config)
    info = setup_distributed(device, sequence_parallel=config.sequence_parallel)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    config.world_size = info.world_size
    return device, info


def seeded_model(config: TrainConfig, info: DistInfo, device: torch.device) -> nn.Module:
    """The model, initialised from ``config.seed`` (identically on every rank)."""
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = build_model(config).to(device)
    if info.sequence_parallel > 1:
        enable_sequence_parallel(model, info.sp_group)
        if info.sp_rank:  # after the (identical) initialisation: each chunk draws its own dropout masks
            torch.manual_seed(config.seed + 10_007 * info.sp_rank)
    return model


class Trainer:
    """One run. ``Trainer(...)`` sets it up, :meth:`restore` continues from the last checkpoint,
    :meth:`start` readies the model, :meth:`train_epoch` runs one epoch (:meth:`train_step` per
    batch, :meth:`end_epoch` after), :meth:`finish` tests and writes the results. The state a
    checkpoint carries on, besides the weights, optimiser, scheduler and RNG, is :attr:`state`."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, resume: bool, overwrite: bool) -> None:
        self.config, self.run_dir = config, run_dir
        self.device, self.info = join_world(config)
        if (run_dir / "config.json").exists() and not (resume or overwrite):
            raise ValueError(
                f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        if resume and (run_dir / "config.json").exists():  # before the data is read or generated
            refuse_other_config(run_dir / "config.json", config, data_loaded=False)
        self.data = data = load_data(config, self.info)
        config.model.update(vocab_size=data.vocab_size, num_classes=data.num_classes)
        config.pair, config.class_names = data.pair, data.class_names
        check_sequence_parallel(config)
        prepare_run_dir(run_dir, config, resume=resume, overwrite=overwrite, info=self.info)

        self.model = self.train_model = seeded_model(config, self.info, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        # One replica per sequence-parallel group: its ranks draw the same batches.
        self.sampler = DistributedSampler(
            data.train, num_replicas=self.info.dp_size, rank=self.info.dp_rank, shuffle=True, seed=config.seed
        )
        if len(data.train) == 0:
            raise ValueError(f"{config.data}: the train split is empty")
        self.steps_per_epoch = math.ceil(len(self.sampler) / config.batch_size)
        self.train_keys = length_keys(data.train) if config.bucket > 1 else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(config, self.steps_per_epoch))
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", self.info.is_main)
        self.state = Progress()
        self.start_time = time.perf_counter()  # reset by start()

    def restore(self) -> None:
        """Continue from the run directory's last checkpoint: weights, optimiser, RNG and progress."""
        info, checkpoint = self.info, latest_checkpoint(self.run_dir)
        if checkpoint is None:
            if info.is_main:
                self.metrics.truncate_after(0)  # lines of an attempt killed before its first checkpoint
                print(f"--resume: no checkpoint in {self.run_dir}; starting from scratch", file=sys.stderr)
            return
        weights, saved = load_checkpoint(checkpoint)
        load_model_state(self.model, weights, checkpoint)
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            rng_ranks = saved.get("rng_ranks")
            _set_rng_state(rng_ranks[info.rank] if rng_ranks and len(rng_ranks) == info.world_size else saved["rng"])
            s = self.state = Progress(saved["step"], saved["epoch"], saved["batches_done"], history=saved["history"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{checkpoint}: trainer state is incomplete or from another run ({e!r})") from None
        # The saved sums are the global ones (all data-parallel ranks): one replica carries them on.
        if s.batches_done:
            s.epoch_sums = saved["epoch_sums"] if info.dp_rank == 0 else torch.zeros(3, dtype=torch.float64)
        self.metrics.truncate_after(s.step)
        if info.is_main:
            print(f"resumed from {checkpoint} (epoch {s.epoch}, step {s.step})", file=sys.stderr)

    def start(self) -> None:
        """Wrap the model for DDP (without sequence parallelism) and torch.compile; say what runs."""
        config, info, data = self.config, self.info, self.data
        if info.enabled and info.sequence_parallel == 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        if info.is_main:
            grid = f" × {info.sequence_parallel} sequence-parallel ranks" if info.sequence_parallel > 1 else ""
            print(
                f"{config.task} [{config.preset}] {config.attention}: {self.params:,} parameters, "
                f"{len(data.train):,} train / {len(data.val):,} val / {len(data.test) if data.test else 0:,} "
                f"test examples, global batch {config.batch_size * info.dp_size} ({info.dp_size} replica(s) × "
                f"{config.batch_size}{grid}), device {self.device}",
                file=sys.stderr,
            )
            _warn_replicated_positions(config, info)
        self.start_time = time.perf_counter()
        self.model.train()

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def train_seconds(self) -> float:
        """Training time of the epochs done (over every attempt of a resumed run)."""
        return sum(h["seconds"] for h in self.state.history)

    def train_epoch(self) -> None:
        """The epoch's (remaining) batches, logged and checkpointed as asked; stops early on the time budget."""
        config, s = self.config, self.state
        done_before = s.batches_done
        loader = self.epoch_loader()
        sums = s.epoch_sums if s.epoch_sums is not None else torch.zeros(3, dtype=torch.float64)  # loss·n, correct, n
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=done_before,
            desc=f"epoch {s.epoch + 1}/{config.epochs}",
            disable=not (config.progress and self.info.is_main),
            dynamic_ncols=True,
        )
        epoch_start = time.perf_counter()
        for i, batch in enumerate(loader, start=done_before + 1):
            s.batches_done = i
            result = self.train_step(batch)
            sums += torch.tensor([result.loss * result.examples, result.correct, result.examples], dtype=torch.float64)
            rate = (sums[2].item() * self.info.dp_size) / max(time.perf_counter() - epoch_start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.3f}", acc=f"{sums[1].item() / sums[2].item():.3f}", ex_s=f"{rate:.1f}")
            if config.log_every and s.step % config.log_every == 0:
                self.log_step(result, rate)
            if config.save_every and s.step % config.save_every == 0 and i < self.steps_per_epoch:
                self.save(sums)
            if config.max_minutes is not None and self.out_of_time(epoch_start):
                s.out_of_time = True
                break
        bar.close()
        self.end_epoch(sums, time.perf_counter() - epoch_start)

    def epoch_loader(self) -> DataLoader:
        """The batches of this epoch not yet done, in the order the seed and the epoch fix."""
        config, s = self.config, self.state
        batches = _epoch_batches(
            self.sampler, config.batch_size, s.epoch, s.batches_done, self.train_keys, config.bucket
        )
        # A private generator: creating a loader must not draw from the global RNG (dropout's).
        return DataLoader(
            self.data.train,
            batch_sampler=batches,
            collate_fn=batch_collate(self.model, config.pad_multiple),
            num_workers=config.workers,
            generator=torch.Generator(),
        )

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepResult:
        """Forward, backward and one optimiser step on a batch; TrainingDiverged on a NaN or infinite loss."""
        config, info = self.config, self.info
        with autocast(self.device, config.amp):
            logits = forward_batch(self.train_model, batch, self.device, info.sp_group).float()
        labels = batch["labels"].to(self.device)
        loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
        if not torch.isfinite(loss):
            last = latest_checkpoint(self.run_dir)
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.state.step + 1} (epoch {self.state.epoch + 1}); "
                f"last good checkpoint: {last if last else 'none'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if info.sequence_parallel > 1:
            average_gradients(self.model, info)  # what DDP does otherwise
        grad_norm = None
        if config.grad_clip > 0:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        correct = (logits.argmax(-1) == labels).sum().item()
        return StepResult(loss.item(), correct, len(labels), grad_norm)

    def log_step(self, result: StepResult, rate: float) -> None:
        """A metrics.jsonl line for this step (its batch over all data-parallel ranks)."""
        s, n = self.state, result.examples
        stats = dp_all_reduce_sum(torch.tensor([result.loss * n, result.correct, n], dtype=torch.float64), self.info)
        self.metrics.write(
            {
                "type": "train",
                "step": s.step,
                "epoch": s.epoch + (s.batches_done / self.steps_per_epoch),
                "loss": stats[0].item() / stats[2].item(),
                "accuracy": stats[1].item() / stats[2].item(),
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": None if result.grad_norm is None else result.grad_norm.item(),
                "examples_per_second": rate,
            }
        )

    def out_of_time(self, epoch_start: float) -> bool:
        """Whether the training time (this epoch's included) has reached --max-minutes on any rank."""
        elapsed_min = (self.train_seconds + time.perf_counter() - epoch_start) / 60
        return bool(all_reduce_sum(torch.tensor(float(elapsed_min >= self.config.max_minutes)), self.info) > 0)

    def end_epoch(self, sums: torch.Tensor, seconds: float) -> None:
        """Validate, record the epoch (metrics.jsonl, stderr) and checkpoint at its end.

        An epoch the time budget stopped is recorded as the fraction that ran and checkpointed
        where it stopped, so ``--resume`` with a larger budget trains the rest of that epoch (its
        next record covers the rest only) instead of starting the next one."""
        s, info = self.state, self.info
        totals = dp_all_reduce_sum(sums.clone(), info)
        val = self.evaluate(self.data.val)
        # A budget-stopped epoch counts as the fraction of its batches that ran.
        finished = s.batches_done >= self.steps_per_epoch
        examples = totals[2].item()
        record = {
            "type": "epoch",
            "step": s.step,
            "epoch": s.epoch + 1 if finished else s.epoch + s.batches_done / self.steps_per_epoch,
            "train_loss": totals[0].item() / max(examples, 1),
            "train_accuracy": totals[1].item() / max(examples, 1),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "seconds": seconds,
            "examples": int(examples),
            "examples_per_second": examples / max(seconds, 1e-9),
        }
        s.history.append(record)
        self.metrics.write(record)
        if info.is_main:
            print(
                f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_accuracy']:.4f} | val acc {val['accuracy']:.4f} | "
                f"{seconds:.0f} s, {record['examples_per_second']:.1f} ex/s",
                file=sys.stderr,
            )
        if finished:
            s.epoch, s.batches_done = s.epoch + 1, 0
        s.epoch_sums = None
        self.save()

    def save(self, epoch_sums: torch.Tensor | None = None) -> None:
        """Checkpoint the weights, optimiser, RNG and progress (``epoch_sums``: mid-epoch, this rank's)."""
        info, s = self.info, self.state
        # Collectives first, on every rank: each rank's RNG (its dropout stream) and the epoch's global sums.
        rng_ranks = [None] * info.world_size
        if info.enabled:
            dist.all_gather_object(rng_ranks, _rng_state())
        if epoch_sums is not None:
            epoch_sums = dp_all_reduce_sum(epoch_sums.clone(), info)
        if info.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": _rng_state(),
                "step": s.step,
                "epoch": s.epoch,
                "batches_done": s.batches_done,
                "epoch_sums": epoch_sums,
                "history": s.history,
            }
            if info.enabled:
                state["rng_ranks"] = rng_ranks
            save_checkpoint(self.run_dir, self.model.state_dict(), state, step=s.step)
        barrier(info)

    def evaluate(self, dataset: Dataset) -> dict[str, Any]:
        config = self.config
        return evaluate(
            self.model,
            dataset,
            batch_size=config.batch_size,
            device=self.device,
            num_classes=self.data.num_classes,
            info=self.info,
            amp=config.amp,
            pad_multiple=config.pad_multiple,
        )

    def finish(self) -> dict[str, Any]:
        """Test, then write the final weights and summary.json; returns the summary."""
        config, data, history = self.config, self.data, self.state.history
        test = self.evaluate(data.test) if data.test is not None and len(data.test) else None
        summary = {
            "task": config.task,
            "preset": config.preset,
            "attention": config.attention,
            "params": self.params,
            "epochs": history[-1]["epoch"] if history else 0,  # fractional when the budget stopped an epoch
            "stopped_by_time_budget": self.state.out_of_time,
            "train_seconds": self.train_seconds,
            "wall_seconds_this_process": time.perf_counter() - self.start_time,
            "examples_per_second": sum(h["examples"] for h in history) / max(self.train_seconds, 1e-9),
            "val_accuracy": history[-1]["val_accuracy"] if history else None,
            "best_val_accuracy": max((h["val_accuracy"] for h in history), default=None),
            "test_accuracy": test["accuracy"] if test else None,
            "test_examples": test["examples"] if test else 0,
            "train_examples": len(data.train),
            "val_examples": len(data.val),
            "skipped_inputs": data.skipped,
            "world_size": self.info.world_size,
            "sequence_parallel": self.info.sequence_parallel,
            "device": str(self.device),
            "peak_rss_mb": _peak_rss_mb(),
        }
        if self.info.is_main:
            save_weights(self.run_dir / "model.safetensors", self.model.state_dict())
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        barrier(self.info)
        return summary


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train according to ``config`` into ``run_dir``; returns the summary (also in summary.json)."""
    trainer = Trainer(config, Path(run_dir), resume=resume, overwrite=overwrite)
    if resume:
        trainer.restore()
    trainer.start()
    while trainer.state.epoch < config.epochs and not trainer.state.out_of_time:
        trainer.train_epoch()
    return trainer.finish()


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


def _warn_replicated_positions(config: TrainConfig, info: DistInfo) -> None:
    model = HrrformerConfig.from_dict(config.model)
    if info.sequence_parallel == 1 or model.pos_embedding != "learned":
        return
    mib = (model.max_len + 1) * model.dim * 4 / 2**20
    if mib >= 64:
        print(
            f"note: the learned position table ({mib:,.0f} MiB) is whole on every rank, with its gradient "
            "and Adam state, and its gradient is all-reduced every step; --pos-embedding sinusoidal has no table",
            file=sys.stderr,
        )


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- loading a finished run
def load_run(run_dir: str | Path, device: torch.device | None = None) -> tuple[TrainConfig, nn.Module]:
    """A run's config and model with its final (or latest checkpointed) weights, in eval mode."""
    from .checkpoint import load_weights

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


# ----------------------------------------------------------------------------- command line
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
        print(json.dumps(summary, indent=2))
        print(
            f"{config.task}: val accuracy {summary['val_accuracy']:.4f}"
            + (f", test accuracy {test:.4f}" if test is not None else ", no test split")
            + f" after {summary['train_seconds']:.0f} s of training; run in {out}"
        )
    return 0
