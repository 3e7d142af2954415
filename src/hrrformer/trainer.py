"""The training loop: a :class:`Trainer` per run, and :func:`train`, which reads as its steps.

``Trainer(...)`` joins the (torchrun) world, reads the task's data (:func:`load_data`), checks
and writes the run directory (:mod:`hrrformer.rundir`) and builds the seeded model, optimiser
and schedule; :meth:`Trainer.restore` continues from the last checkpoint; :meth:`Trainer.start`
wraps the model for DDP and torch.compile; :meth:`Trainer.train_epoch` runs an epoch;
:meth:`Trainer.finish` tests and writes the final weights and ``summary.json``. The command
(flags, messages) is :mod:`hrrformer.train`.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from .batching import epoch_batches, length_keys
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
from .data.base import TaskData
from .data.load import load_task_data
from .distributed import (
    DistInfo,
    all_reduce_sum,
    average_gradients,
    barrier,
    dp_all_reduce_sum,
    setup_distributed,
)
from .forward import autocast, batch_collate, batch_loss, batch_totals, evaluate, forward_batch, resolve_device
from .parallel import enable_sequence_parallel
from .rundir import TrainConfig, build_model, check_run_dir, check_sequence_parallel, prepare_run_dir

__all__ = ["EPOCH_SUMS", "Trainer", "TrainingDiverged", "check_pooling", "load_data", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def load_data(config: TrainConfig, info: DistInfo, data_path: str | None = None) -> TaskData:
    """The task's data from ``data_path`` (or config.data; generated into the cache when absent).

    Records the path read in ``config.data`` (the cache folder for generated data)."""
    data, config.data = load_task_data(
        config.task,
        data_path or config.data,
        preset=config.preset,
        max_len=config.model.get("max_len"),
        seed=config.seed,
        limit=config.limit,
        skip_bad=config.skip_bad,
        progress=config.progress,
        info=info,
    )
    return data


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate's factor at a step: the exponential decay per epoch, floored at ``min_lr``."""
    floor = config.min_lr / config.lr

    def factor(step: int) -> float:
        return max(config.lr_decay ** (step / steps_per_epoch), floor)

    return factor


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
        """Append ``record`` as one line (rank 0 only)."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, Python, CUDA), as a checkpoint keeps them."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states :func:`_rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """Where training stands: what a checkpoint records besides the weights and optimiser."""

    step: int = 0
    #: The epoch running (or to run next) and how many of its batches are done.
    epoch: int = 0
    batches_done: int = 0
    #: This rank's share of the epoch's :data:`EPOCH_SUMS` so far, when resuming mid-epoch.
    epoch_sums: torch.Tensor | None = None
    #: One record per epoch done (as in metrics.jsonl).
    history: list[dict[str, Any]] = field(default_factory=list)
    out_of_time: bool = False


#: What an epoch sums over its batches: Σ loss·rows, correct rows, rows, examples. Rows are what is
#: scored: the examples of a classifier, the labelled positions of a per-position task.
EPOCH_SUMS = ("loss", "correct", "rows", "examples")


class StepResult(NamedTuple):
    """One training step on this rank: its batch's mean loss, correct rows, rows and examples
    (rows: examples, or labelled positions per position; over the sequence-parallel group)."""

    loss: float
    correct: int
    rows: int
    examples: int
    #: Before clipping; the same on every rank (the gradients are reduced). None without clipping.
    grad_norm: torch.Tensor | None

    def sums(self) -> torch.Tensor:
        """(4,) float64: this step's :data:`EPOCH_SUMS`."""
        return torch.tensor([self.loss * self.rows, self.correct, self.rows, self.examples], dtype=torch.float64)


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
        # before the data is read or generated
        check_run_dir(run_dir, config, resume=resume, overwrite=overwrite, data_loaded=False)
        self.data = data = load_data(config, self.info)
        config.model.update(vocab_size=data.vocab_size, num_classes=data.num_classes, pad_id=data.pad_id)
        check_pooling(config, data)
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
            sums = saved["epoch_sums"]
            if sums is not None and len(sums) == 3:  # saved before examples were counted apart from rows (= examples)
                sums = torch.cat([sums, sums[2:]])
            s.epoch_sums = sums if info.dp_rank == 0 else torch.zeros(len(EPOCH_SUMS), dtype=torch.float64)
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
        """The model's number of parameters."""
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
        sums = s.epoch_sums if s.epoch_sums is not None else torch.zeros(len(EPOCH_SUMS), dtype=torch.float64)
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
            sums += result.sums()
            rate = (sums[3].item() * self.info.dp_size) / max(time.perf_counter() - epoch_start, 1e-9)
            bar.update(1)
            accuracy = sums[1].item() / max(sums[2].item(), 1)
            bar.set_postfix(loss=f"{result.loss:.3f}", acc=f"{accuracy:.3f}", ex_s=f"{rate:.1f}")
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
        batches = epoch_batches(
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
            scores = forward_batch(self.train_model, batch, self.device, info.sp_group)
        loss = batch_loss(scores, config.label_smoothing)  # this rank's term (hrrformer.forward)
        mean_loss, correct = batch_totals(scores, loss, info)  # the same on every rank of the group
        if not math.isfinite(mean_loss):
            last = latest_checkpoint(self.run_dir)
            raise TrainingDiverged(
                f"loss became {mean_loss} at step {self.state.step + 1} (epoch {self.state.epoch + 1}); "
                f"last good checkpoint: {last if last else 'none'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if info.sequence_parallel > 1:
            average_gradients(self.model, info, replicated_loss=not scores.split)  # what DDP does otherwise
        grad_norm = None
        if config.grad_clip > 0:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        examples = len(batch["labels"])
        return StepResult(mean_loss, correct, scores.rows, examples, grad_norm)

    def log_step(self, result: StepResult, rate: float) -> None:
        """A metrics.jsonl line for this step (its batch over all data-parallel ranks)."""
        s = self.state
        stats = dp_all_reduce_sum(result.sums(), self.info)
        self.metrics.write(
            {
                "type": "train",
                "step": s.step,
                "epoch": s.epoch + (s.batches_done / self.steps_per_epoch),
                "loss": stats[0].item() / max(stats[2].item(), 1),
                "accuracy": stats[1].item() / max(stats[2].item(), 1),
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
        rows, examples = totals[2].item(), totals[3].item()
        record = {
            "type": "epoch",
            "step": s.step,
            "epoch": s.epoch + 1 if finished else s.epoch + s.batches_done / self.steps_per_epoch,
            "train_loss": totals[0].item() / max(rows, 1),
            "train_accuracy": totals[1].item() / max(rows, 1),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            **({"val_sequence_accuracy": val["sequence_accuracy"]} if "sequence_accuracy" in val else {}),
            "seconds": seconds,
            "examples": int(examples),
            "examples_per_second": examples / max(seconds, 1e-9),
        }
        s.history.append(record)
        self.metrics.write(record)
        if info.is_main:
            sequences = (
                f" (sequences {val['sequence_accuracy']:.4f})" if val.get("sequence_accuracy") is not None else ""
            )
            print(
                f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_accuracy']:.4f} | val acc {val['accuracy']:.4f}{sequences} | "
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
        """:func:`hrrformer.forward.evaluate` of the model on ``dataset``, with this run's batch and precision."""
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
            **_position_summary(history, test),
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


def check_pooling(config: TrainConfig, data: TaskData) -> None:
    """ValueError unless the model scores what the data labels: every position (``pooling="none"``)
    for a task labelled per position, the pooled sequence otherwise."""
    pooling = config.model.get("pooling")
    if data.per_position and pooling != "none":
        raise ValueError(f"task {config.task} labels positions, not sequences: it needs --pooling none")
    if pooling == "none" and not data.per_position:
        raise ValueError(f"--pooling none scores every position; task {config.task} labels whole sequences")


def _position_summary(history: list[dict[str, Any]], test: dict[str, Any] | None) -> dict[str, Any]:
    """A per-position run's summary keys: the sequence accuracies (of the last epoch's val and of
    test) and the test's labelled positions; nothing for a classifier."""
    if not history or "val_sequence_accuracy" not in history[-1]:
        return {}
    return {
        "val_sequence_accuracy": history[-1]["val_sequence_accuracy"],
        "test_sequence_accuracy": test["sequence_accuracy"] if test else None,
        "test_positions": test["positions"] if test else 0,
    }


def _warn_replicated_positions(config: TrainConfig, info: DistInfo) -> None:
    """A note on stderr when sequence parallelism keeps a large learned position table whole on every rank."""
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
    """This process's peak resident memory in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
