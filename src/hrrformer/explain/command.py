"""The ``hrrformer explain`` command: its flags, the maps of INPUT files and of class averages.

See :mod:`hrrformer.explain` for what it writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import kinds
from ..checkpoint import CheckpointError
from ..data.base import pad_sequences
from ..data.inputs import image_shape, read_input
from ..data.selection import SPLIT_CHOICES
from ..evaluate import load_for_run
from ..forward import resolve_device
from ..rundir import TrainConfig, load_run
from .draw import draw_class_grid
from .maps import explain_tokens, no_weights_message
from .output import safe_stem, save_map

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags."""
    parser.add_argument("run_dir", help="a run directory written by `hrrformer train` (HRR attention)")
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files to explain: images (image, pathfinder, pathx), files read as bytes (text, binaries, "
        "retrieval, imdb-pairs), or a ListOps expression (listops)",
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--average", type=int, metavar="N", help="also average the maps of N examples per class")
    parser.add_argument("--data", help="data for --average, in the task's format (default: the run's data)")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        help="split for --average, or all (default: val of the run's own data; other data as `hrrformer eval`)",
    )
    parser.add_argument("--label", help="class (index or name) for --average (default: each class)")
    parser.add_argument("--top-k", type=int, default=5, help="regions listed and marked (sequence tasks)")
    parser.add_argument("--window", type=int, help="region width in positions (default: length/128, at least 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _fail(message: str) -> int:
    """Say what went wrong on stderr; exit status 1."""
    print(f"hrrformer explain: {message}", file=sys.stderr)
    return 1


def _batched_maps(
    model: nn.Module, sequences: Sequence[torch.Tensor], batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(maps (L, h, T_i) per sequence, probabilities (C,) or None per sequence)."""
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        tokens, mask = pad_sequences(chunk)
        maps, probs = explain_tokens(model, tokens, mask)
        for i, seq in enumerate(chunk):
            yield maps[:, :, i, : len(seq)], None if probs is None else probs[i]


def _explain_inputs(
    model: nn.Module, config: TrainConfig, args: argparse.Namespace, out: Path, used: set[str], class_names: list[str]
) -> list[dict]:
    """The maps of each INPUT file (with the prediction, for single-sequence tasks), written and listed."""
    task, max_len = config.task, config.model["max_len"]
    items = [read_input(task, path, max_len) for path in args.inputs]
    results = []
    for path, item, (maps, probs) in zip(
        args.inputs, items, _batched_maps(model, [i.tokens for i in items], args.batch_size)
    ):
        stem = safe_stem(item.name, used)
        title = f"{item.name}: {task}, {len(item.tokens):,} tokens"
        entry: dict = {"input": str(path), "tokens": len(item.tokens), "truncated": item.truncated}
        if probs is not None:
            best = int(probs.argmax())
            entry["prediction"] = class_names[best]
            entry["probabilities"] = {n: round(float(p), 6) for n, p in zip(class_names, probs)}
            title += f"; predicted {class_names[best]} ({probs[best]:.2f})"
        entry.update(save_map(out, stem, task, maps, title, top_k=args.top_k, window=args.window, item=item))
        results.append(entry)
        _print_entry(entry)
    return results


def _print_entry(entry: dict) -> None:
    """An input's (or average's) line on stdout, then a line per top region."""
    head = entry.get("input") or entry.get("average")
    note = f"\tpredicted {entry['prediction']}" if "prediction" in entry else ""
    print(f"{head}\t{entry['files']['figure']}{note}")
    for rank, r in enumerate(entry.get("regions", []), start=1):
        content = f"\t{r['content']!r}" if r.get("content") else ""
        print(
            f"  #{rank}\toffset {r['offset']:,}\tlength {r['length']}\tweight {r['weight']:.4f} ({r['lift']:.2f}×){content}"
        )


def _class_indices(label: str | None, class_names: list[str]) -> list[int]:
    """The classes ``--label`` names (an index or a name; None: every class)."""
    if label is None:
        return list(range(len(class_names)))
    if label in class_names:
        return [class_names.index(label)]
    if label.isdigit() and int(label) < len(class_names):
        return [int(label)]
    raise ValueError(f"--label {label!r}: not a class index or name (classes: {', '.join(class_names)})")


def _explain_average(
    model: nn.Module, config: TrainConfig, args: argparse.Namespace, out: Path, used: set[str]
) -> list[dict]:
    """The mean maps of ``--average`` examples per class of the data's split, written and listed."""
    if (args.data or config.data) is None:
        raise ValueError("--average needs --data (the run records no data path)")
    # The run's own seed and limit: the same split (and sample) as in training, so val was never trained on.
    selected = load_for_run(config, args.data, args.split, own_default="val", limit=config.limit)
    args.split, dataset, class_names = selected.split, selected.dataset, selected.class_names
    labels = np.asarray(dataset.labels)
    results, grid = [], ([], [], [])
    for c in _class_indices(args.label, class_names):
        chosen = np.flatnonzero(labels == c)[: args.average]
        if len(chosen) == 0:
            print(f"hrrformer explain: no {args.split} example of class {class_names[c]}; skipped", file=sys.stderr)
            continue
        if len(chosen) < args.average:
            print(
                f"hrrformer explain: only {len(chosen)} {args.split} examples of class {class_names[c]}",
                file=sys.stderr,
            )
        sequences = []
        for i in chosen:
            seq = dataset[int(i)][0]
            sequences.extend(seq if isinstance(seq, tuple | list) else [seq])
        length = max(len(s) for s in sequences)
        total = None
        for maps, _ in _batched_maps(model, sequences, args.batch_size):
            padded = np.zeros((*maps.shape[:2], length), dtype=np.float64)
            padded[..., : maps.shape[-1]] = maps
            total = padded if total is None else total + padded
        average = (total / len(sequences)).astype(np.float32)
        shape = image_shape(config.task, length)
        image = None
        if shape is not None and all(len(s) == length for s in sequences):
            image = (torch.stack(sequences).double().mean(0).numpy() - 1).reshape(shape)
            grid[0].append(image)
            grid[1].append(average.reshape(*average.shape[:2], *shape))
            grid[2].append(class_names[c])
        stem = safe_stem(f"average-{class_names[c]}", used)
        title = f"{config.task}: mean of {len(sequences)} {args.split} maps of class {class_names[c]}"
        entry = {"average": class_names[c], "examples": len(chosen), "maps": len(sequences), "split": args.split}
        entry.update(
            save_map(out, stem, config.task, average, title, top_k=args.top_k, window=args.window, image=image)
        )
        results.append(entry)
        _print_entry(entry)
    if len(grid[2]) > 1:
        name = "average.png"
        title = f"{config.task}: HRR attention weights averaged over {args.average} {args.split} images per class"
        draw_class_grid(out / name, *grid, title)
        print(f"all classes\t{name}")
    return results


def run(args: argparse.Namespace) -> int:
    """``hrrformer explain``: 1 with a one-line message on any failure, else 0 (explain.json written)."""
    if not args.inputs and not args.average:
        return _fail("give INPUT files, or --average N (with --data)")
    if args.average is not None and args.average < 1:
        return _fail("--average must be ≥ 1")
    if args.top_k < 0 or (args.window is not None and args.window < 1) or args.batch_size < 1:
        return _fail("--top-k must be ≥ 0, --window and --batch-size ≥ 1")
    try:
        config, model = load_run(args.run_dir, resolve_device(args.device))
    except (ValueError, CheckpointError) as e:
        return _fail(str(e))
    if getattr(model, "per_position", False):
        return _fail(f"{args.run_dir}: a run labelled per position ({config.task}); explain shows sequence classifiers")
    kind = kinds.get(config.attention)
    if not kind.position_weights:
        return _fail(f"{args.run_dir}: {no_weights_message(kind)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    class_names = config.class_names or [str(i) for i in range(config.model.get("num_classes", 2))]
    used: set[str] = set()
    summary: dict = {"run": str(args.run_dir), "task": config.task, "inputs": [], "averages": []}
    try:
        if args.inputs:
            summary["inputs"] = _explain_inputs(model, config, args, out, used, class_names)
        if args.average:
            summary["averages"] = _explain_average(model, config, args, out, used)
    except ValueError as e:  # DataError included
        return _fail(str(e))
    (out / "explain.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0
