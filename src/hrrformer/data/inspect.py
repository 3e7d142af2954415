"""Look at a loaded task before training on it: counts, lengths, vocabulary, a sample, problems.

``inspect_task`` reads at most ``max_items`` items per split (evenly spaced), so it stays quick
on large or lazily read data; label counts use every label.
"""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import IGNORE_INDEX, DataError, TaskData

__all__ = ["format_report", "inspect_task"]

SPLITS = ("train", "val", "test")
IMBALANCE_RATIO = 1.5  # largest class / smallest class above this is reported
TRUNCATED_SHARE = 0.25  # a larger share of sequences at max_len is reported


def _label_counts(dataset: Dataset, class_names: list[str] | None) -> Counter:
    """Examples per class (by name where the data has names); per position, the labelled positions."""
    labels = getattr(dataset, "labels", None)
    if getattr(dataset, "per_position", False):
        return Counter({"labelled positions": sum(int((y != IGNORE_INDEX).sum()) for y in labels)})
    labels = list(labels) if labels is not None else [int(dataset[i][1]) for i in range(len(dataset))]
    names = class_names or []
    return Counter(names[y] if y < len(names) else y for y in labels)


def _documents(item) -> list[torch.Tensor]:
    """The token sequences of one item (one, or two for a pair)."""
    tokens = item[0]
    return [torch.as_tensor(t) for t in tokens] if isinstance(tokens, tuple | list) else [torch.as_tensor(tokens)]


def _scan(dataset: Dataset, max_items: int) -> dict:
    """Lengths, token counts and content hashes of up to ``max_items`` evenly spaced items."""
    n = len(dataset)
    indices = np.unique(np.linspace(0, n - 1, min(n, max_items)).astype(np.int64)) if n else []
    lengths, hashes, errors, counts = [], {}, [], np.zeros(0, np.int64)
    min_token = None
    for i in indices:
        try:
            docs = _documents(dataset[int(i)])
        except DataError as e:
            errors.append(str(e))
            continue
        for doc in docs:
            values = doc.numpy().astype(np.int64, copy=False)
            lengths.append(len(values))
            if len(values):
                min_token = int(values.min()) if min_token is None else min(min_token, int(values.min()))
                found = np.bincount(values.clip(0))
                counts = np.pad(counts, (0, max(0, len(found) - len(counts))))
                counts[: len(found)] += found
        hashes[hash(tuple(d.numpy().tobytes() for d in docs))] = int(i)
    scanned = len(indices) - len(errors)
    return {
        "lengths": np.array(lengths),
        "counts": counts,
        "min": min_token,
        "hashes": hashes,
        "errors": errors,
        "scanned": scanned,
    }


def _length_stats(lengths: np.ndarray, max_len: int) -> dict:
    if not len(lengths):
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0, "truncated": 0.0}
    p50, p90, p99 = (int(v) for v in np.percentile(lengths, [50, 90, 99]))
    return {
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": int(lengths.max()),
        "truncated": float(np.mean(lengths >= max_len)),
    }


def _decoder(name: str):
    """The task module's ``decode``, or a plain list of ids."""
    try:
        return importlib.import_module(f"{__package__}.{name.replace('-', '_')}").decode
    except (ImportError, AttributeError):
        return lambda tokens: " ".join(str(int(t)) for t in tokens[:64])


def _sample(data: TaskData) -> str | None:
    for split in SPLITS:
        dataset = getattr(data, split)
        if dataset is not None and len(dataset):
            try:
                item = dataset[0]
            except DataError as e:
                return f"({split}[0] unreadable: {e})"
            if isinstance(item[1], torch.Tensor):  # per position: position:label where one is asked
                asked = torch.nonzero(item[1] != IGNORE_INDEX)[:, 0].tolist()
                name = "per position " + " ".join(f"{p}:{int(item[1][p])}" for p in asked)
            else:
                label = int(item[1])
                name = data.class_names[label] if data.class_names and label < len(data.class_names) else label
            decode = _decoder(data.name)
            docs = "\n--- second document ---\n".join(decode(d.tolist()) for d in _documents(item))
            return f"{split}[0], label {name}:\n{docs}"
    return None


def _split_problems(split: str, info: dict, data: TaskData) -> list[str]:
    problems = []
    if info["count"] == 0 and split != "test":
        problems.append(f"{split} is empty")
    counts = list(info["labels"].values())
    if info["count"] and data.class_names and len(counts) < data.num_classes:
        missing = sorted(set(data.class_names) - set(info["labels"]))
        problems.append(f"{split} has no examples of {', '.join(map(str, missing))}")
    if len(counts) > 1 and max(counts) > IMBALANCE_RATIO * min(counts):
        problems.append(f"{split} labels are imbalanced ({max(counts):,} vs {min(counts):,} per class)")
    if TRUNCATED_SHARE < info["lengths"]["truncated"] < 1.0:  # all at max_len = fixed length (images)
        problems.append(f"{split}: {info['lengths']['truncated']:.0%} of sequences reach max_len {data.max_len:,}")
    if info["unreadable"]:
        problems.append(f"{split}: {info['unreadable']} items could not be read, e.g. {info['first_error']}")
    return problems


def inspect_task(task_data: TaskData, *, max_items: int = 20_000) -> dict:
    """A report on ``task_data``: per split counts, labels, lengths (percentiles 50/90/99/max),
    vocabulary seen, overlap (items identical to one of an earlier split), a decoded sample, and
    problems found."""
    data, report = task_data, {"splits": {}, "problems": []}
    report.update(name=data.name, vocab_size=data.vocab_size, num_classes=data.num_classes, max_len=data.max_len)
    report.update(pair=data.pair, class_names=data.class_names, skipped=dict(data.skipped))
    total, earlier, lows = np.zeros(0, np.int64), set(), []
    for split in SPLITS:
        dataset = getattr(data, split)
        if dataset is None:
            report["splits"][split] = None
            continue
        scan = _scan(dataset, max_items)
        labels = _label_counts(dataset, data.class_names)
        overlap = sum(h in earlier for h in scan["hashes"])
        earlier |= set(scan["hashes"])
        info = {
            "count": len(dataset),
            "labels": dict(sorted(labels.items(), key=lambda kv: str(kv[0]))),
            "lengths": _length_stats(scan["lengths"], data.max_len),
            "scanned": scan["scanned"],
            "vocab_seen": int(np.count_nonzero(scan["counts"])),
            "overlap": overlap,
            "unreadable": len(scan["errors"]),
            "first_error": scan["errors"][0] if scan["errors"] else None,
        }
        report["splits"][split] = info
        report["problems"] += _split_problems(split, info, data)
        total = np.pad(total, (0, max(0, len(scan["counts"]) - len(total))))
        total[: len(scan["counts"])] += scan["counts"]
        lows += [] if scan["min"] is None else [scan["min"]]
        if overlap:
            report["problems"].append(
                f"{split}: {overlap} of {info['scanned']} scanned items also appear in an earlier split"
            )
    seen = np.flatnonzero(total)
    report["vocab_seen"] = len(seen)
    report["token_range"] = (int(seen.min()), int(seen.max())) if len(seen) else None
    if len(seen) and (seen.max() >= data.vocab_size or min(lows) < 0):
        report["problems"].append(
            f"token ids {min(lows)}…{seen.max()} fall outside the vocabulary [0, {data.vocab_size})"
        )
    pad = data.pad_id  # None: no padding token, every id is real (MQAR)
    if len(seen) and pad is not None and pad < len(total) and total[pad]:
        report["problems"].append(f"{total[pad]:,} padding ids ({pad}) found inside sequences")
    if data.skipped:
        skipped = ", ".join(f"{n:,} {reason}" for reason, n in data.skipped.items())
        report["problems"].append(f"inputs skipped: {skipped}")
    report["sample"] = _sample(data)
    return report


def _label_text(labels: dict) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in labels.items())


def format_report(report: dict) -> str:
    """The report of :func:`inspect_task` as text for a terminal."""
    kind = "pairs of sequences" if report["pair"] else "single sequences"
    names = report["class_names"] or range(report["num_classes"])
    classes = ", ".join(map(str, names)) if len(names) <= 20 else f"{names[0]} … {names[-1]}"
    lines = [
        f"task {report['name']}: {kind}, {report['num_classes']} classes ({classes}), "
        f"vocabulary {report['vocab_size']}, max_len {report['max_len']:,}",
        f"{'split':<6} {'count':>9}  {'len p50':>7} {'p90':>6} {'p99':>6} {'max':>6} {'at max':>6}  labels",
    ]
    for split, info in report["splits"].items():
        if info is None:
            lines.append(f"{split:<6} {'none':>9}")
            continue
        s = info["lengths"]
        lines.append(
            f"{split:<6} {info['count']:>9,}  {s['p50']:>7,} {s['p90']:>6,} {s['p99']:>6,} {s['max']:>6,} "
            f"{s['truncated']:>6.1%}  {_label_text(info['labels'])}"
        )
    token_range = report["token_range"]
    ids = f" (ids {token_range[0]}–{token_range[1]})" if token_range else ""
    lines.append(f"tokens seen: {report['vocab_seen']} of {report['vocab_size']}{ids}")
    if report["sample"]:
        lines.append(f"sample {_indent(report['sample'])}")
    lines.append("problems:" + ("" if report["problems"] else " none"))
    lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)


def _indent(text: str, prefix: str = "  ") -> str:
    first, *rest = text.splitlines() or [""]
    return "\n".join([first, *(prefix + line for line in rest)])
