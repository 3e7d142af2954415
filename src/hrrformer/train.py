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
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

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
from .model import Hrrformer, HrrformerConfig, HrrformerDualEncoder
from .parallel import enable_sequence_parallel, shard_sequence
from .tasks import PRESET_NAMES, TASKS, Preset, get_preset, get_task

__all__ = ["TrainConfig", "TrainingDiverged", "build_model", "evaluate", "load_run", "train"]

#: Keys of config.json that may change on --resume (the budget and the machine, not the model or data).
RESUMABLE_CHANGES = {"epochs", "device", "workers", "log_every", "save_every", "progress", "data", "max_minutes"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything a run depends on; written to RUN_DIR/config.json."""

    task: str = "listops"
    preset: str = "demo"
    data: str | None = None
    attention: str = "hrr"
    model: dict[str, Any] = field(default_factory=dict)
    pair: bool = False
    class_names: list[str] | None = None
    batch_size: int = 32
    epochs: int = 2
    lr: float = 1e-3
    lr_decay: float = 0.9
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    limit: int | None = None
    skip_bad: bool = False
    seed: int = 0
    amp: str = "none"
    device: str = "auto"
    compile: bool = False
    workers: int = 0
    #: Length bucketing: sort pools of this many batches by length (0 or 1: random batches).
    bucket: int = 50
    #: Batches are padded to a multiple of this length (capped at max_len): few distinct shapes.
    pad_multiple: int = 128
    log_every: int = 10
    save_every: int = 0
    max_minutes: float | None = None
    world_size: int = 1
    sequence_parallel: int = 1
    progress: bool = True


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
    options = dict(spec.generator_options)
    n_train, n_val, n_test = preset.generate
    if spec.generator == "listops":
        from .data.listops_gen import generate_listops

        target = default_cache_dir() / f"listops-{n_train}-{n_val}-{n_test}-seed{seed}"
        make = lambda out: generate_listops(  # noqa: E731
            out, train=n_train, val=n_val, test=n_test, seed=seed, progress=progress
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

    def defaults(cls: type, names: Any) -> dict[str, Any]:
        return {f.name: f.default for f in fields(cls) if f.name in names and f.default is not MISSING}

    completed = {**defaults(TrainConfig, set(asdict(current)) - set(saved)), **saved}
    if isinstance(saved.get("model"), dict):
        missing = set(current.model) - set(saved["model"])
        completed["model"] = {**defaults(HrrformerConfig, missing), **saved["model"]}
    return completed


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    return [f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def prepare_run_dir(run_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool, info: DistInfo) -> None:
    """Refuse to mix runs: an existing run needs --resume (same config) or --overwrite."""
    config_path = run_dir / "config.json"
    if info.is_main and overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    barrier(info)
    if config_path.exists() and not resume:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if resume and config_path.exists():
        saved = _with_new_option_defaults(json.loads(config_path.read_text()), config)
        differences = _config_differences(saved, asdict(config))
        if differences:
            raise ValueError(
                f"--resume: {config_path} is from another config; differing keys: {'; '.join(differences)}"
            )
    barrier(info)  # every rank has checked before rank 0 writes: a slow rank must not see the new config.json
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, json.dumps(asdict(config), indent=2) + "\n")
    barrier(info)


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train according to ``config`` into ``run_dir``; returns the summary (also in summary.json)."""
    run_dir = Path(run_dir)
    device = resolve_device(config.device)
    check_sequence_parallel(config)
    info = setup_distributed(device, sequence_parallel=config.sequence_parallel)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    config.world_size = info.world_size
    if (run_dir / "config.json").exists() and not (resume or overwrite):
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    data = load_data(config, info)
    config.model.update(vocab_size=data.vocab_size, num_classes=data.num_classes)
    config.pair, config.class_names = data.pair, data.class_names
    check_sequence_parallel(config)
    prepare_run_dir(run_dir, config, resume=resume, overwrite=overwrite, info=info)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = build_model(config).to(device)
    if info.sequence_parallel > 1:
        enable_sequence_parallel(model, info.sp_group)
        if info.sp_rank:  # after the (identical) initialisation: each chunk draws its own dropout masks
            torch.manual_seed(config.seed + 10_007 * info.sp_rank)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # One replica per sequence-parallel group: its ranks draw the same batches.
    sampler = DistributedSampler(
        data.train, num_replicas=info.dp_size, rank=info.dp_rank, shuffle=True, seed=config.seed
    )
    if len(data.train) == 0:
        raise ValueError(f"{config.data}: the train split is empty")
    steps_per_epoch = math.ceil(len(sampler) / config.batch_size)
    train_keys = length_keys(data.train) if config.bucket > 1 else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, steps_per_epoch))
    metrics = MetricsLog(run_dir / "metrics.jsonl", info.is_main)

    step, start_epoch, skip, resumed_sums = 0, 0, 0, None
    history: list[dict[str, Any]] = []
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        weights, state = load_checkpoint(checkpoint)
        load_model_state(model, weights, checkpoint)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rng_ranks = state.get("rng_ranks")
            _set_rng_state(rng_ranks[info.rank] if rng_ranks and len(rng_ranks) == info.world_size else state["rng"])
            step, start_epoch, skip, history = state["step"], state["epoch"], state["batches_done"], state["history"]
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{checkpoint}: trainer state is incomplete or from another run ({e!r})") from None
        # The saved sums are the global ones (all data-parallel ranks): one replica carries them on.
        if skip:
            resumed_sums = state["epoch_sums"] if info.dp_rank == 0 else torch.zeros(3, dtype=torch.float64)
        metrics.truncate_after(step)
        if info.is_main:
            print(f"resumed from {checkpoint} (epoch {start_epoch}, step {step})", file=sys.stderr)
    elif resume and info.is_main:
        metrics.truncate_after(0)  # lines of an attempt killed before its first checkpoint
        print(f"--resume: no checkpoint in {run_dir}; starting from scratch", file=sys.stderr)

    train_model: nn.Module = model
    if info.enabled and info.sequence_parallel == 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)

    def save(epoch: int, batches_done: int, epoch_sums: torch.Tensor | None = None) -> None:
        # Collectives first, on every rank: each rank's RNG (its dropout stream) and the epoch's global sums.
        rng_ranks = [None] * info.world_size
        if info.enabled:
            dist.all_gather_object(rng_ranks, _rng_state())
        if epoch_sums is not None:
            epoch_sums = dp_all_reduce_sum(epoch_sums.clone(), info)
        if info.is_main:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "step": step,
                "epoch": epoch,
                "batches_done": batches_done,
                "epoch_sums": epoch_sums,
                "history": history,
            }
            if info.enabled:
                state["rng_ranks"] = rng_ranks
            save_checkpoint(run_dir, model.state_dict(), state, step=step)
        barrier(info)

    if info.is_main:
        grid = f" × {info.sequence_parallel} sequence-parallel ranks" if info.sequence_parallel > 1 else ""
        print(
            f"{config.task} [{config.preset}] {config.attention}: {params:,} parameters, "
            f"{len(data.train):,} train / {len(data.val):,} val / {len(data.test) if data.test else 0:,} test examples, "
            f"global batch {config.batch_size * info.dp_size} ({info.dp_size} replica(s) × {config.batch_size}{grid}), "
            f"device {device}",
            file=sys.stderr,
        )
        _warn_replicated_positions(config, info)

    def evaluate_split(dataset: Dataset) -> dict[str, Any]:
        return evaluate(
            model,
            dataset,
            batch_size=config.batch_size,
            device=device,
            num_classes=data.num_classes,
            info=info,
            amp=config.amp,
            pad_multiple=config.pad_multiple,
        )

    train_start = time.perf_counter()
    train_seconds = sum(h["seconds"] for h in history)
    examples_seen = sum(h["examples"] for h in history)
    model.train()
    out_of_time = False
    for epoch in range(start_epoch, config.epochs):
        if out_of_time:
            break
        batches = _epoch_batches(sampler, config.batch_size, epoch, skip, train_keys, config.bucket)
        done_before = skip
        skip = 0
        # A private generator: creating a loader must not draw from the global RNG (dropout's).
        loader = DataLoader(
            data.train,
            batch_sampler=batches,
            collate_fn=batch_collate(model, config.pad_multiple),
            num_workers=config.workers,
            generator=torch.Generator(),
        )
        epoch_start = time.perf_counter()
        sums = resumed_sums if resumed_sums is not None else torch.zeros(3, dtype=torch.float64)  # loss·n, correct, n
        resumed_sums = None
        bar = tqdm(
            total=steps_per_epoch,
            initial=done_before,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not (config.progress and info.is_main),
            dynamic_ncols=True,
        )
        batches_done = done_before
        for i, batch in enumerate(loader, start=done_before + 1):
            batches_done = i
            with autocast(device, config.amp):
                logits = forward_batch(train_model, batch, device, info.sp_group).float()
            labels = batch["labels"].to(device)
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            if not torch.isfinite(loss):
                last = latest_checkpoint(run_dir)
                raise TrainingDiverged(
                    f"loss became {loss.item()} at step {step + 1} (epoch {epoch + 1}); "
                    f"last good checkpoint: {last if last else 'none'}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if info.sequence_parallel > 1:
                average_gradients(model, info)  # what DDP does otherwise
            grad_norm = None  # before clipping; the same on every rank (the gradients are reduced)
            if config.grad_clip > 0:
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            n = len(labels)
            correct = (logits.argmax(-1) == labels).sum().item()
            sums += torch.tensor([loss.item() * n, correct, n], dtype=torch.float64)
            elapsed = time.perf_counter() - epoch_start
            rate = (sums[2].item() * info.dp_size) / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{sums[1].item() / sums[2].item():.3f}", ex_s=f"{rate:.1f}")
            if config.log_every and step % config.log_every == 0:
                step_stats = dp_all_reduce_sum(torch.tensor([loss.item() * n, correct, n], dtype=torch.float64), info)
                metrics.write(
                    {
                        "type": "train",
                        "step": step,
                        "epoch": epoch + (i / steps_per_epoch),
                        "loss": step_stats[0].item() / step_stats[2].item(),
                        "accuracy": step_stats[1].item() / step_stats[2].item(),
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": None if grad_norm is None else grad_norm.item(),
                        "examples_per_second": rate,
                    }
                )
            if config.save_every and step % config.save_every == 0 and i < steps_per_epoch:
                save(epoch, i, sums)
            if config.max_minutes is not None:
                elapsed_min = (train_seconds + time.perf_counter() - epoch_start) / 60
                out_of_time = bool(all_reduce_sum(torch.tensor(float(elapsed_min >= config.max_minutes)), info) > 0)
                if out_of_time:
                    break
        bar.close()
        epoch_seconds = time.perf_counter() - epoch_start
        totals = dp_all_reduce_sum(sums.clone(), info)
        val = evaluate_split(data.val)
        # A budget-stopped epoch counts as the fraction of its batches that ran.
        epoch_reached = epoch + 1 if batches_done >= steps_per_epoch else epoch + batches_done / steps_per_epoch
        record = {
            "type": "epoch",
            "step": step,
            "epoch": epoch_reached,
            "train_loss": totals[0].item() / max(totals[2].item(), 1),
            "train_accuracy": totals[1].item() / max(totals[2].item(), 1),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "seconds": epoch_seconds,
            "examples": int(totals[2].item()),
            "examples_per_second": totals[2].item() / max(epoch_seconds, 1e-9),
        }
        history.append(record)
        metrics.write(record)
        if info.is_main:
            print(
                f"epoch {epoch_reached:g}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f} | "
                f"val acc {val['accuracy']:.4f} | {epoch_seconds:.0f} s, {record['examples_per_second']:.1f} ex/s",
                file=sys.stderr,
            )
        train_seconds += epoch_seconds
        examples_seen += record["examples"]
        save(epoch + 1, 0)

    test = None
    if data.test is not None and len(data.test):
        test = evaluate_split(data.test)
    summary = {
        "task": config.task,
        "preset": config.preset,
        "attention": config.attention,
        "params": params,
        "epochs": history[-1]["epoch"] if history else 0,  # fractional when the budget stopped an epoch
        "stopped_by_time_budget": out_of_time,
        "train_seconds": train_seconds,
        "wall_seconds_this_process": time.perf_counter() - train_start,
        "examples_per_second": examples_seen / max(train_seconds, 1e-9),
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "best_val_accuracy": max((h["val_accuracy"] for h in history), default=None),
        "test_accuracy": test["accuracy"] if test else None,
        "test_examples": test["examples"] if test else 0,
        "train_examples": len(data.train),
        "val_examples": len(data.val),
        "skipped_inputs": data.skipped,
        "world_size": info.world_size,
        "sequence_parallel": info.sequence_parallel,
        "device": str(device),
        "peak_rss_mb": _peak_rss_mb(),
    }
    if info.is_main:
        save_weights(run_dir / "model.safetensors", model.state_dict())
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    barrier(info)
    return summary


def check_sequence_parallel(config: TrainConfig) -> None:
    """ValueError for what sequence parallelism does not support (the world size is checked on joining)."""
    n = config.sequence_parallel
    if n < 1:
        raise ValueError(f"--sequence-parallel must be ≥ 1, got {n}")
    if n == 1:
        return
    if config.attention != "hrr":
        raise ValueError(
            f"--sequence-parallel {n} needs --attention hrr: softmax attention has no form with O(heads·head_dim) "
            "communication per layer (it would need ring attention, O(T))"
        )
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
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="listops", help=f"one of: {', '.join(TASKS)} (default listops)")
    parser.add_argument("--data", help="data path in the task's official format (generated tasks: omit to generate)")
    parser.add_argument("--out", help="run directory (default runs/<task>-<preset>-<attention>-<time>)")
    parser.add_argument("--preset", default="demo", help=f"one of: {', '.join(PRESET_NAMES)} (default demo)")
    parser.add_argument("--attention", default="hrr", choices=["hrr", "softmax"])
    for flag, kind in (("--layers", int), ("--dim", int), ("--heads", int), ("--mlp-dim", int), ("--max-len", int)):
        parser.add_argument(flag, type=kind)
    parser.add_argument("--batch-size", type=int, help="per process (per sequence-parallel group)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--limit", type=int, help="use at most this many examples per split")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count bad inputs instead of stopping")
    parser.add_argument("--pooling", choices=["mean", "cls"])
    parser.add_argument("--pos-embedding", choices=["learned", "sinusoidal"])
    parser.add_argument("--norm", choices=["pre", "post", "pre_mlp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument(
        "--pad-multiple",
        type=int,
        default=128,
        metavar="N",
        help="pad each batch to a multiple of N positions (capped at --max-len): few shapes, flat memory",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="sequence chunking (hrr): run each block over N positions at a time, recomputing in backward; "
        "for inputs of 10^5-10^6+ tokens",
    )
    parser.add_argument(
        "--length-scale",
        action="store_true",
        help="hrr: multiply the attention output by the number of real positions, n·w_t·v_t "
        "(the paper's w_t·v_t is ~1/T the size of the residual; EXPERIMENTS.md)",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--bucket",
        type=int,
        default=50,
        metavar="N",
        help="length bucketing: sort pools of N batches by length to cut padding (0: random batches)",
    )
    parser.add_argument("--log-every", type=int, default=10, help="steps between metrics.jsonl lines")
    parser.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps (0: per epoch only)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="training time budget: stop after the step that crosses it, then validate and test",
    )
    parser.add_argument(
        "--sequence-parallel",
        type=int,
        default=1,
        metavar="N",
        help="split each sequence over N consecutive ranks (torchrun; world size a multiple of N): "
        "for inputs too long for one device; HRR attention, single-document tasks",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    preset = get_preset(
        args.task,
        args.preset,
        layers=args.layers,
        dim=args.dim,
        heads=args.heads,
        mlp_dim=args.mlp_dim,
        max_len=args.max_len,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        dropout=args.dropout,
        limit=args.limit,
        pooling=args.pooling,
        pos_embedding=args.pos_embedding,
        norm=args.norm,
        max_minutes=args.max_minutes,
    )
    model = {
        "max_len": preset.max_len,
        "dim": preset.dim,
        "heads": preset.heads,
        "layers": preset.layers,
        "mlp_dim": preset.mlp_dim,
        "dropout": preset.dropout,
        "pos_embedding": preset.pos_embedding,
        "norm": preset.norm,
        "pooling": preset.pooling,
        "attention": args.attention,
        "activation_checkpointing": args.activation_checkpointing,
        "chunk_size": args.chunk_size,
        "length_scale": args.length_scale,
        **dict(preset.model_options),
    }
    HrrformerConfig(**model)  # validate shapes early, before any data is read
    if args.sequence_parallel != 1:
        check_sequence_parallel(TrainConfig(attention=args.attention, sequence_parallel=args.sequence_parallel))
    return TrainConfig(
        task=args.task,
        preset=args.preset,
        data=args.data,
        attention=args.attention,
        model=model,
        batch_size=preset.batch_size,
        epochs=preset.epochs,
        lr=preset.lr,
        lr_decay=preset.lr_decay,
        grad_clip=preset.grad_clip,
        label_smoothing=preset.label_smoothing,
        limit=preset.limit,
        skip_bad=args.skip_bad,
        seed=args.seed,
        amp=args.amp,
        device=args.device,
        compile=args.compile,
        workers=args.workers,
        bucket=args.bucket,
        pad_multiple=args.pad_multiple,
        log_every=args.log_every,
        save_every=args.save_every,
        max_minutes=preset.max_minutes,
        sequence_parallel=args.sequence_parallel,
        progress=not args.no_progress,
    )


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
