"""Shallow baselines on the exact splits training uses: the bar that attention has to clear.

Per task: logistic regression on normalised token/byte histograms (``unigram``) and on hashed
adjacent-pair histograms (``bigram``), and for ListOps the first-operator classifier
(:mod:`research.shallow`, scikit-learn). The data comes from the package's own loader
(``hrrformer.train.load_data``) with the same task, preset, max_len, limit and seed as
``hrrformer train``, so train/val/test are the training run's splits; generated tasks
(ListOps, Pathfinder) use the same cached data set.

    OMP_NUM_THREADS=1 .venv/bin/python -m research.baselines listops
    OMP_NUM_THREADS=1 .venv/bin/python -m research.baselines text --data ../shared/data/aclImdb_train.tar.gz
    OMP_NUM_THREADS=1 .venv/bin/python -m research.baselines binaries --data data/binaries/manifest.csv --max-len 131072
    .venv/bin/python -m research.baselines --table runs/baselines     # all results → baselines.json, baselines.md

(from the repository root; scikit-learn from research/requirements.txt).

Each run writes ``OUT_DIR/<name>.json`` (default name: task, plus ``-T<max_len>`` when given).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch
from torch.utils.data import Dataset

from hrrformer.data import TaskData
from hrrformer.data.listops import VOCAB as LISTOPS_VOCAB
from hrrformer.distributed import DistInfo
from hrrformer.model import HrrformerConfig
from hrrformer.tasks import TASKS, get_preset
from hrrformer.train import TrainConfig, load_data
from research.shallow import (
    FEATURES,
    L2_GRID,
    FirstOperatorClassifier,
    accuracy,
    featurize,
    fit_logistic,
    majority_share,
)

LISTOPS_OPERATORS = [LISTOPS_VOCAB.index(op) for op in ("[MIN", "[MAX", "[MED", "[SM")]


def split_arrays(dataset: Dataset) -> tuple[list, np.ndarray]:
    """A split's sequences as numpy arrays (pairs as tuples of two) and its labels."""
    sequences, labels = [], []
    for i in range(len(dataset)):
        tokens, label = dataset[i]
        if isinstance(tokens, tuple | list):
            sequences.append(tuple(t.numpy() for t in tokens))
        else:
            sequences.append(tokens.numpy())
        labels.append(label)
    return sequences, np.asarray(labels, dtype=np.int64)


def load_splits(
    task: str, preset: str, data: str | None, max_len: int | None, seed: int
) -> tuple[TaskData, str, dict[str, tuple[list, np.ndarray]]]:
    """The task's data loaded as ``hrrformer train`` loads it.

    Returns the TaskData, the data path used (for generated tasks the cache folder) and
    {split: (sequences, labels)} for the non-empty splits.
    """
    options = get_preset(task, preset).options
    length = max_len if max_len is not None else options.get("max_len", HrrformerConfig.max_len)
    config = TrainConfig(
        task=task, preset=preset, data=data, model={"max_len": length}, limit=options.get("limit"), seed=seed
    )
    config.progress = False
    loaded = load_data(config, DistInfo())
    splits = {"train": loaded.train, "val": loaded.val, "test": loaded.test}
    arrays = {name: split_arrays(ds) for name, ds in splits.items() if ds is not None and len(ds)}
    return loaded, str(config.data), arrays


def held_out(splits: dict) -> list[str]:
    """The evaluation splits present, in order."""
    return [name for name in ("val", "test") if name in splits]


def logistic_record(features: str, splits: dict, vocab_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Fit one feature set on train (L2 from ``args.l2`` chosen on val) and measure it on every split."""
    start = time.perf_counter()
    matrices = {name: featurize(seqs, features, vocab_size, args.buckets) for name, (seqs, _) in splits.items()}
    featurized = time.perf_counter()
    train, val = matrices["train"], matrices["val"]
    fit = fit_logistic(train, splits["train"][1], val, splits["val"][1], l2_grid=args.l2, max_iter=args.max_iter)
    fitted = time.perf_counter()
    record: dict[str, Any] = {
        "baseline": f"{features} logistic regression",
        "features": features,
        "width": matrices["train"].shape[1],
        "nnz_train": int(matrices["train"].nnz),
        "l2": fit.l2,
        "grid": fit.grid,
        "feature_seconds": round(featurized - start, 1),
        "fit_seconds": round(fitted - featurized, 1),
    }
    for name, matrix in matrices.items():
        record[f"{name}_accuracy"] = accuracy(fit.predict(matrix), splits[name][1])
    return record


def first_operator_record(splits: dict) -> dict[str, Any]:
    """The ListOps first-operator classifier, fitted on train."""
    start = time.perf_counter()
    classifier = FirstOperatorClassifier(LISTOPS_OPERATORS).fit(*splits["train"])
    record: dict[str, Any] = {
        "baseline": "first operator",
        "table": {LISTOPS_VOCAB[op] if op >= 0 else "none": label for op, label in classifier.table.items()},
    }
    for name, (sequences, labels) in splits.items():
        record[f"{name}_accuracy"] = accuracy(classifier.predict(sequences), labels)
    record["fit_seconds"] = round(time.perf_counter() - start, 1)
    return record


def run_task(args: argparse.Namespace) -> dict[str, Any]:
    """All baselines of one task; the result as a JSON-ready dict."""
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    loaded, data_path, splits = load_splits(args.task, args.preset, args.data, args.max_len, args.seed)
    load_seconds = time.perf_counter() - start
    train_labels = splits["train"][1]
    result: dict[str, Any] = {
        "name": args.name,
        "task": args.task,
        "preset": args.preset,
        "data": data_path,
        "max_len": loaded.max_len,
        "seed": args.seed,
        "buckets": args.buckets,
        "l2_grid": args.l2,
        "max_iter": args.max_iter,
        "classes": loaded.class_names,
        "sizes": {name: len(labels) for name, (_, labels) in splits.items()},
        "majority": {name: majority_share(train_labels, splits[name][1]) for name in ("train", *held_out(splits))},
        "load_seconds": round(load_seconds, 1),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.node()}, torch {torch.__version__}, scikit-learn {sklearn.__version__}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "baselines": [],
    }
    if args.task == "listops":
        result["baselines"].append(first_operator_record(splits))
    for features in args.features:
        record = logistic_record(features, splits, loaded.vocab_size, args)
        result["baselines"].append(record)
        print(f"{args.name} {features}: " + ", ".join(f"{k} {v}" for k, v in record.items() if k != "grid"))
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    return result


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per (task, baseline): sizes, held-out accuracies, majority share, L2, time."""
    lines = [
        "| task | T | train / val / test | baseline | train % | val % | test % | majority val / test % | L2 | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        sizes = " / ".join(f"{result['sizes'].get(name, 0):,}" for name in ("train", "val", "test"))
        majority = " / ".join(_percent(result["majority"].get(name)) for name in ("val", "test"))
        for record in result["baselines"]:
            seconds = record.get("feature_seconds", 0) + record["fit_seconds"]
            lines.append(
                f"| {result['name']} | {result['max_len']:,} | {sizes} | {record['baseline']} "
                f"| {_percent(record.get('train_accuracy'))} | {_percent(record.get('val_accuracy'))} "
                f"| {_percent(record.get('test_accuracy'))} | {majority} | {record.get('l2', '–')} | {seconds:.0f} |"
            )
    return "\n".join(lines) + "\n"


def write_table(folder: Path) -> None:
    """Collect every run's JSON in ``folder`` into baselines.json and baselines.md."""
    skip = {"baselines.json"}
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name not in skip]
    (folder / "baselines.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (folder / "baselines.md").write_text(table)
    print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", nargs="?", choices=list(TASKS), help="the task (as for hrrformer train --task)")
    parser.add_argument("--data", help="data path, as for hrrformer train (generated tasks: omit)")
    parser.add_argument("--preset", default="cpu", help="preset whose max_len, limit and generated sizes to use")
    parser.add_argument("--max-len", type=int, help="override the preset's max_len (T)")
    parser.add_argument("--seed", type=int, default=0, help="the split seed, as hrrformer train --seed")
    parser.add_argument("--buckets", type=int, default=2**18, help="hashed bigram buckets (a power of two)")
    parser.add_argument("--features", nargs="+", default=list(FEATURES), choices=list(FEATURES))
    parser.add_argument("--l2", type=float, nargs="+", default=list(L2_GRID), help="L2 values to try (on val)")
    parser.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per L2 value (scikit-learn)")
    parser.add_argument("--name", help="result name (default: the task, plus -T<max_len> when --max-len is given)")
    parser.add_argument("--out-dir", default="runs/baselines", help="where to write <name>.json")
    parser.add_argument("--table", metavar="DIR", help="only collect DIR/*.json into baselines.json and baselines.md")
    args = parser.parse_args(argv)
    if args.table is None and args.task is None:
        parser.error("give a task, or --table DIR")
    if args.name is None and args.task is not None:
        args.name = args.task + (f"-T{args.max_len}" if args.max_len else "")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        write_table(Path(args.table))
        return 0
    result = run_task(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table([result]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
