"""Evaluate a trained run on any labelled data in the task's format: ``hrrformer eval``.

``--data PATH`` is read by the task's loader, as in training. ``--split`` picks one of its
splits, or ``all`` (every labelled example: a class-folder tree, a manifest without a split
column, an ``aclImdb`` tree with only ``test/``). Without ``--split``: the test split on the
run's own data; on other data its test split, or all of it when it has no split structure. A
split PATH lacks is an error naming the splits it has. Labels are mapped by name to the run's
classes (a subset is fine; an unknown class is an error listing the run's).

The report (printed, and written to ``--out``, default ``RUN_DIR/eval-<data>-<split>.json``):
accuracy, loss, the confusion matrix (rows = true class, in the order of ``class_names``),
per-class precision/recall/F1, the numbers of examples and skipped inputs, and for two classes
ROC AUC and the detection rate at 1 % and 0.1 % false-positive rate. For a run labelled per
position (``pooling="none"``, MQAR): accuracy and loss over the labelled positions, their number,
and the fraction of sequences whose queries are all right (:func:`hrrformer.metrics.position_report`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from .batching import evaluation_batches, length_keys
from .checkpoint import CheckpointError
from .data.base import IGNORE_INDEX, DataError, TokenDataset
from .data.load import load_task_data
from .data.selection import SPLIT_CHOICES, default_split, map_to_classes, select_split
from .forward import Scores, batch_collate, forward_batch, resolve_device
from .metrics import classification_report, position_report
from .rundir import TrainConfig, load_run

__all__ = ["EvalData", "PositionOutputs", "load_for_run", "model_outputs", "position_outputs", "run_report"]


@dataclass
class EvalData:
    """What to score: the examples (labels as indices of the run's classes) and where they came from."""

    dataset: TokenDataset
    split: str
    path: str
    class_names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)


def _same_path(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def load_for_run(
    config: TrainConfig,
    data_path: str | None,
    split: str | None,
    *,
    own_default: str,
    limit: int | None = None,
    skip_bad: bool = False,
) -> EvalData:
    """The examples of ``split`` of ``data_path`` (default: the run's data), read as in training.

    ``split`` None picks the default (``own_default`` on the run's own data, see
    :func:`hrrformer.data.selection.default_split`). Raises DataError for missing splits and
    classes the run does not know.
    """
    own_data = data_path is None or _same_path(data_path, config.data)
    data, path = load_task_data(
        config.task,
        data_path or config.data,
        preset=config.preset,
        max_len=config.model.get("max_len"),
        seed=config.seed,
        limit=limit,
        skip_bad=config.skip_bad or skip_bad,
        progress=config.progress,
    )
    split = split or default_split(data, own_data=own_data, own_default=own_default)
    dataset = select_split(data, split, path=path, limit=limit, seed=config.seed)
    num_classes = config.model["num_classes"]
    dataset = map_to_classes(dataset, data.class_names, config.class_names, num_classes, path=path)
    class_names = config.class_names or [str(i) for i in range(num_classes)]
    return EvalData(dataset, split, path, list(class_names), dict(data.skipped))


def _scored_batches(
    model: torch.nn.Module, dataset: TokenDataset, *, batch_size: int, device: torch.device, progress: bool
) -> Iterator[tuple[list[int], dict[str, torch.Tensor], Scores]]:
    """(the examples' indices, the collated batch, its :class:`~hrrformer.forward.Scores`) of every
    batch, sorted by length (less padding), the model in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    batches = evaluation_batches(range(len(dataset)), length_keys(dataset), batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=batch_collate(model, 1))
    try:
        for indices, batch in zip(batches, tqdm(loader, desc="eval", leave=False, disable=not progress)):
            with torch.no_grad():
                yield indices, batch, forward_batch(model, batch, device)
    finally:
        model.train(was_training)


def model_outputs(
    model: torch.nn.Module, dataset: TokenDataset, *, batch_size: int, device: torch.device, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) float32 and labels (N,) of every example, in the dataset's order (a classifier)."""
    logits, labels, order = [], [], []
    for indices, _, scores in _scored_batches(model, dataset, batch_size=batch_size, device=device, progress=progress):
        logits.append(scores.logits.cpu())
        labels.append(scores.labels.cpu())
        order.extend(indices)
    out_logits = torch.empty(len(dataset), logits[0].shape[-1] if logits else 0)
    out_labels = torch.empty(len(dataset), dtype=torch.long)
    if logits:
        out_logits[order], out_labels[order] = torch.cat(logits), torch.cat(labels)
    return out_logits, out_labels


class PositionOutputs(NamedTuple):
    """A per-position model's answers at every labelled position of a dataset, one row each, sorted
    by (example, position): each (N,). The logits themselves (N × classes) are not kept."""

    sequence: torch.Tensor  # the example's index in the dataset
    position: torch.Tensor  # the position in it
    label: torch.Tensor
    prediction: torch.Tensor  # the arg max
    probability: torch.Tensor  # the prediction's softmax probability
    loss: torch.Tensor  # the cross-entropy at the position
    num_sequences: int


def position_outputs(
    model: torch.nn.Module, dataset: TokenDataset, *, batch_size: int, device: torch.device, progress: bool = False
) -> PositionOutputs:
    """The :class:`PositionOutputs` of a per-position model on ``dataset``."""
    columns: list[list[torch.Tensor]] = [[] for _ in range(6)]
    for indices, batch, scores in _scored_batches(
        model, dataset, batch_size=batch_size, device=device, progress=progress
    ):
        where = (batch["labels"] != IGNORE_INDEX).nonzero()  # (n, 2): row in the batch, position
        log_p = scores.logits.log_softmax(-1)  # (n, C)
        top, prediction = log_p.max(-1)
        loss = F.nll_loss(log_p, scores.labels, reduction="none")
        found = (torch.as_tensor(indices)[where[:, 0]], where[:, 1], scores.labels, prediction, top.exp(), loss)
        for column, values in zip(columns, found):
            column.append(values.cpu())
    sequence, position, label, prediction, probability, loss = (
        torch.cat(c) if c else torch.zeros(0, dtype=torch.long) for c in columns
    )
    order = torch.argsort(sequence * (position.max() + 1 if len(position) else 1) + position)
    rows = (sequence[order], position[order], label[order], prediction[order], probability[order], loss[order])
    return PositionOutputs(*rows, num_sequences=len(dataset))


def run_report(model: torch.nn.Module, data: EvalData, *, batch_size: int, device: torch.device) -> dict:
    """The eval report of ``model`` on ``data`` (see the module docstring)."""
    report = {"data": data.path, "split": data.split}
    if data.dataset.per_position:
        out = position_outputs(model, data.dataset, batch_size=batch_size, device=device, progress=True)
        report.update(position_report(out.prediction, out.label, out.loss, out.sequence, out.num_sequences))
    else:
        logits, labels = model_outputs(model, data.dataset, batch_size=batch_size, device=device, progress=True)
        report.update(classification_report(logits, labels, data.class_names))
    report["skipped_inputs"] = sum(data.skipped.values())
    report["skipped"] = data.skipped
    return report


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_position_report(report: dict) -> str:
    """A per-position report in two lines: accuracy over the queries, and per sequence."""
    lines = [
        f"{report['data']} [{report['split']}]: {report['examples']:,} sequences, {report['positions']:,} "
        f"labelled positions: accuracy {_show(report['accuracy'])}, loss {_show(report['loss'])}",
        f"sequences with every query right: {_show(report['sequence_accuracy'])} "
        f"(of {report['sequences_with_queries']:,} with a query)",
    ]
    if report["skipped_inputs"]:
        lines.append(f"skipped inputs: {report['skipped']}")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """A short human-readable summary: accuracy, the confusion matrix with names, per-class scores."""
    if "positions" in report:
        return format_position_report(report)
    names = report["class_names"]
    width = max(9, *(len(n) for n in names))  # a column
    first = max(len("true \\ predicted"), *(len(n) for n in names)) + 2  # the row labels
    accuracy = "n/a" if report["accuracy"] is None else f"{report['accuracy']:.4f}"
    lines = [f"{report['data']} [{report['split']}]: {report['examples']:,} examples, accuracy {accuracy}"]
    lines.append("true \\ predicted".ljust(first) + " ".join(n.rjust(width) for n in names))
    lines += [
        n.ljust(first) + " ".join(str(v).rjust(width) for v in row) for n, row in zip(names, report["confusion_matrix"])
    ]

    lines.append("class".ljust(first) + " ".join(h.rjust(width) for h in ("precision", "recall", "f1", "support")))
    for name, s in report["per_class"].items():
        cells = (_show(s["precision"]), _show(s["recall"]), _show(s["f1"]), str(s["support"]))
        lines.append(name.ljust(first) + " ".join(c.rjust(width) for c in cells))
    if "roc_auc" in report:
        rates = ", ".join(
            f"{float(k):.1%} FPR: {_show(v and v['detection_rate'])}"
            for k, v in report["detection_rate_at_fpr"].items()
        )
        lines.append(f"ROC AUC {_show(report['roc_auc'])}; detection rate ({report['positive_class']}) at {rates}")
    if report["skipped_inputs"]:
        lines.append(f"skipped inputs: {report['skipped']}")
    return "\n".join(lines)


def default_out(run_dir: str | Path, data: str, split: str) -> Path:
    """``RUN_DIR/eval-<data name>-<split>.json`` (the name made safe for a file name)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data).name) or "data"
    return Path(run_dir) / f"eval-{stem}-{split}.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `hrrformer train`")
    parser.add_argument("--data", help="labelled data in the task's format (default: the run's own data)")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        help="split of --data, or all of it (default: test; all for data without a split structure)",
    )
    parser.add_argument("--out", help="write the JSON report here (default: RUN_DIR/eval-<data>-<split>.json)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--limit", type=int, help="evaluate at most this many examples (a seeded sample)")
    parser.add_argument("--skip-bad", action="store_true", help="skip (and count) bad inputs instead of failing")


def run(args: argparse.Namespace) -> int:
    try:
        device = resolve_device(args.device)
        config, model = load_run(args.run_dir, device)
        data = load_for_run(config, args.data, args.split, own_default="test", limit=args.limit, skip_bad=args.skip_bad)
        report = {"run": str(args.run_dir), **run_report(model, data, batch_size=args.batch_size, device=device)}
    except (ValueError, CheckpointError, DataError) as e:
        print(f"hrrformer eval: {e}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else default_out(args.run_dir, data.path, data.split)
    text = json.dumps(report, indent=2)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    except OSError as e:
        print(f"hrrformer eval: {out}: cannot write the report ({e.strerror or e})", file=sys.stderr)
        return 1
    print(format_report(report), file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    print(text)
    return 0
