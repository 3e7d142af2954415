"""Running a model on collated batches: the device, the collate, one forward, autocast, evaluation.

What training, ``hrrformer eval`` and ``explain`` share to put a batch through a model:
:func:`resolve_device` (``--device``), :func:`batch_collate` (a model's padding),
:func:`forward_batch` (one- and two-document batches, sequence-parallel chunks, per-position
labels) and its :class:`Scores`, :func:`batch_loss` and :func:`batch_totals`, :func:`autocast`
(``--amp``), and :func:`evaluate` (accuracy, loss and confusion over the ranks).

**Per-position tasks** (labels (B, T), −100 where nothing is asked; a model with
``pooling="none"``) are scored at their labelled positions only: a row of :class:`Scores` per
labelled position, the head run on those positions alone. The loss is the mean cross-entropy over
the batch's labelled positions, and accuracy is over them too, with a per-sequence score beside it
(the fraction of sequences with every query right).

**Sequence parallelism.** A classifier's ranks all hold the batch's logits, so each computes the
same loss, J = SP·loss for the group, and :func:`hrrformer.distributed.average_gradients` divides
by the world size. A per-position task's rank holds its own positions' logits only: its term of the
loss is Σ (its rows' cross-entropy) / N, N the batch's labelled positions over all ranks (known on
every rank: each collates the whole batch), so the terms of a group sum to the batch's mean loss,
and the gradient shares summed over the world are divided by the data-parallel size only
(``replicated_loss=False``). Its counts (loss, correct, per-sequence misses) are summed over the
sequence-parallel group (:func:`hrrformer.distributed.sp_all_reduce_sum`) before they are counted
once per batch over the data-parallel ranks, as a classifier's are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .batching import evaluation_batches, length_keys
from .data.base import IGNORE_INDEX, collate
from .distributed import DistInfo, dp_all_reduce_sum, sp_all_reduce_sum
from .metrics import misses_per_sequence, sequences_all_right
from .parallel import group_size, shard_sequence

__all__ = [
    "Scores",
    "autocast",
    "batch_collate",
    "batch_loss",
    "batch_totals",
    "evaluate",
    "forward_batch",
    "resolve_device",
]


def resolve_device(name: str) -> torch.device:
    """The device ``--device NAME`` names (``auto``: CUDA if available); ValueError for an absent CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


class Scores(NamedTuple):
    """What a batch scores on this rank: a row per example (a classifier) or per labelled position
    (a per-position task; under sequence parallelism, this rank's positions only)."""

    #: (n, C) float32 logits and (n,) their labels.
    logits: torch.Tensor
    labels: torch.Tensor
    #: The batch's rows over its sequence-parallel group (n for a classifier or one process).
    rows: int
    #: Per position: (n,) the example (row of the batch) of each row, and (B,) the positions
    #: asked in each example (all ranks'); None for a classifier.
    sequences: torch.Tensor | None = None
    asked: torch.Tensor | None = None
    #: Whether the rows are split over the sequence-parallel ranks (per position, under sequence
    #: parallelism): sums over them need the group's.
    split: bool = False


def forward_batch(
    model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device, sequence_parallel_group: Any = None
) -> Scores:
    """The :class:`Scores` of a collated batch of either kind, logits in float32.

    With ``sequence_parallel_group`` (a model made with ``enable_sequence_parallel``), the model
    gets this rank's chunk of the (whole, collated) batch: padded to a multiple of the group's
    size, the padding masked (and, per position, labelled −100). Two-document batches are not
    supported then. Per-position labels (B, T) are scored where they are not −100: the model gets
    those positions (``positions=``) and runs its head on them alone.
    """
    labels = batch["labels"]
    if "tokens" in batch:
        tokens, mask = batch["tokens"], batch["mask"]
        per_position = labels.dim() == 2
        asked = labels != IGNORE_INDEX if per_position else None  # (B, T) the whole batch's
        if sequence_parallel_group is not None:
            tokens = shard_sequence(tokens, sequence_parallel_group, dim=1, pad_value=0)[0]
            mask = shard_sequence(mask, sequence_parallel_group, dim=1, pad_value=True)[0]
            if per_position:
                labels = shard_sequence(labels, sequence_parallel_group, dim=1, pad_value=IGNORE_INDEX)[0]
        if not per_position:
            return Scores(model(tokens.to(device), mask.to(device)).float(), labels.to(device), len(labels))
        positions = labels != IGNORE_INDEX  # (B, T_local) this rank's labelled positions
        logits = model(tokens.to(device), mask.to(device), positions=positions.to(device)).float()  # (n, C)
        return Scores(
            logits,
            labels[positions].to(device),
            int(asked.sum()),
            sequences=positions.nonzero()[:, 0].to(device),
            asked=asked.sum(1).to(device),
            split=group_size(sequence_parallel_group) > 1,
        )
    if sequence_parallel_group is not None:
        raise ValueError("sequence parallelism does not support two-document (pair) tasks")
    logits = model(
        batch["tokens_a"].to(device),
        batch["tokens_b"].to(device),
        batch["mask_a"].to(device),
        batch["mask_b"].to(device),
    )
    return Scores(logits.float(), labels.to(device), len(labels))


def batch_loss(scores: Scores, label_smoothing: float = 0.0) -> torch.Tensor:
    """This rank's term of the batch's mean cross-entropy: Σ_rows CE / ``scores.rows``.

    That is the mean for a classifier; per position under sequence parallelism, the terms of the
    group's ranks sum to it (see the module docstring)."""
    loss = F.cross_entropy(scores.logits, scores.labels, label_smoothing=label_smoothing, reduction="sum")
    return loss / max(scores.rows, 1)


def batch_totals(scores: Scores, loss: torch.Tensor, info: DistInfo) -> tuple[float, int]:
    """(the batch's mean loss, its correct rows) over its sequence-parallel group, from this rank's
    ``loss`` (:func:`batch_loss`) and rows: the same on every rank of the group."""
    correct = (scores.logits.argmax(-1) == scores.labels).sum()
    totals = torch.stack([loss.detach().double().cpu(), correct.double().cpu()])
    if scores.split:
        sp_all_reduce_sum(totals, info)
    return totals[0].item(), int(totals[1].item())


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """bf16 autocast on ``device`` for ``amp == "bf16"``, else a context that does nothing."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def batch_collate(model: nn.Module, pad_multiple: int) -> Callable[[list], dict[str, torch.Tensor]]:
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

    Per position (labels (B, T)): accuracy and loss over the labelled positions, ``positions``
    their number, ``sequence_accuracy`` the fraction of sequences (with a query) whose queries are
    all right, and no confusion matrix (a vocabulary of classes would make it huge).
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    indices = range(info.dp_rank, len(dataset), info.dp_size)
    batches = evaluation_batches(indices, length_keys(dataset), batch_size)
    loader = DataLoader(
        dataset, batch_sampler=batches, collate_fn=batch_collate(model, pad_multiple), generator=torch.Generator()
    )
    per_position = bool(getattr(dataset, "per_position", False))
    confusion = None if per_position else torch.zeros(num_classes, num_classes, dtype=torch.float64)
    # Σ loss, correct rows, rows, examples, sequences asked, sequences all right
    sums = torch.zeros(6, dtype=torch.float64)
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and info.is_main)):
        with autocast(device, amp):
            scores = forward_batch(model, batch, device, info.sp_group)
        predictions = scores.logits.argmax(-1)
        hit = predictions == scores.labels
        batch_sums = torch.stack([F.cross_entropy(scores.logits, scores.labels, reduction="sum"), hit.sum()])
        batch_sums = batch_sums.double().cpu()
        if scores.sequences is None:  # a classifier: every rank holds the whole batch's rows
            ones = torch.ones(len(hit), dtype=torch.float64)
            confusion.index_put_((scores.labels.cpu(), predictions.cpu()), ones, accumulate=True)
            whole = (0, 0)
        else:
            misses = misses_per_sequence(hit, scores.sequences, len(scores.asked)).cpu()  # (B,) this rank's
            if scores.split:
                sp_all_reduce_sum(batch_sums, info)
                sp_all_reduce_sum(misses, info)
            whole = sequences_all_right(misses, scores.asked.cpu())
        examples = len(batch["labels"])
        sums += torch.tensor([*batch_sums.tolist(), scores.rows, examples, *whole], dtype=torch.float64)
    dp_all_reduce_sum(sums, info)
    model.train(was_training)
    loss, correct, rows, examples, asked, right = sums.tolist()
    result = {
        "accuracy": correct / rows if rows else None,
        "loss": loss / rows if rows else None,
        "examples": int(examples),
    }
    if per_position:
        result.update(positions=int(rows), sequence_accuracy=right / asked if asked else None)
    else:
        result["confusion_matrix"] = dp_all_reduce_sum(confusion, info).long().tolist()
    return result
