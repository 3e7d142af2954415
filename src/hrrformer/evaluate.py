"""Evaluate a trained run on a split of any data in the task's format: ``hrrformer eval``."""

from __future__ import annotations

import argparse
import json
import sys

from .checkpoint import CheckpointError
from .data.base import DataError
from .distributed import DistInfo
from .train import evaluate, load_data, load_run, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `hrrformer train`")
    parser.add_argument("--data", help="data in the task's official format (default: the run's own data)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--limit", type=int, help="evaluate at most this many examples per split")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    try:
        config, model = load_run(args.run_dir, device)
        config.limit = args.limit
        data = load_data(config, DistInfo(), data_path=args.data)
    except (ValueError, CheckpointError, DataError) as e:
        print(f"hrrformer eval: {e}", file=sys.stderr)
        return 1
    dataset = getattr(data, args.split)
    if dataset is None:
        print(f"hrrformer eval: {args.data or config.data} has no {args.split} split", file=sys.stderr)
        return 1
    result = evaluate(
        model, dataset, batch_size=args.batch_size, device=device, num_classes=data.num_classes, progress=True
    )
    result.update(split=args.split, data=args.data or config.data, class_names=data.class_names)
    print(json.dumps(result, indent=2))
    return 0
