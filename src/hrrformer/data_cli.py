"""Generate and inspect data: ``hrrformer data listops|pathfinder|mqar|inspect``."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    listops = sub.add_parser("listops", help="generate ListOps in LRA's tsv format")
    listops.add_argument("--out", required=True, help="folder for basic_{train,val,test}.tsv")
    listops.add_argument("--train", type=int, default=96_000)
    listops.add_argument("--val", type=int, default=2_000)
    listops.add_argument("--test", type=int, default=2_000)
    listops.add_argument("--seed", type=int, default=0)
    listops.add_argument("--min-len", type=int, default=500, help="keep trees longer than this (tokens)")
    listops.add_argument("--max-len", type=int, default=2000, help="keep trees shorter than this (tokens)")

    path = sub.add_parser("pathfinder", help="generate Pathfinder / Path-X images in LRA's layout")
    path.add_argument("--out", required=True)
    path.add_argument("--size", type=int, default=32, help="32 (Pathfinder) or 128 (Path-X)")
    path.add_argument("--n", type=int, default=1000, help="number of images")
    path.add_argument("--seed", type=int, default=0)
    path.add_argument("--contour-length", type=int, default=14)
    path.add_argument("--workers", type=int, default=1, help="processes")

    mqar = sub.add_parser("mqar", help="generate multi-query associative recall (Zoology's MQAR) as .npz files")
    mqar.add_argument("--out", required=True, help="folder for {train,val,test}.npz (inputs, labels: (N, T) int64)")
    mqar.add_argument("--vocab", type=int, default=8192, help="vocabulary size V (keys below V/2, values above)")
    mqar.add_argument("--seq-len", type=int, default=64, help="sequence length T (even, < V)")
    mqar.add_argument("--kv-pairs", type=int, default=4, help="key-value pairs per sequence (4·pairs ≤ T)")
    mqar.add_argument("--train", type=int, default=100_000)
    mqar.add_argument("--val", type=int, default=3_000)
    mqar.add_argument("--test", type=int, default=3_000)
    mqar.add_argument("--seed", type=int, default=0)

    inspect = sub.add_parser("inspect", help="counts, lengths, vocabulary, a sample and problems of a data set")
    inspect.add_argument("path", help="the data in the task's format")
    inspect.add_argument("--task", required=True)
    inspect.add_argument("--max-len", type=int, help="truncate sequences as training would")
    inspect.add_argument("--skip-bad", action="store_true", help="skip and count bad inputs instead of stopping")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from .data.base import DataError

    try:
        if args.data_command == "listops":
            from .data.listops_gen import generate_listops

            info = generate_listops(
                args.out,
                train=args.train,
                val=args.val,
                test=args.test,
                seed=args.seed,
                min_len=args.min_len,
                max_len=args.max_len,
            )
            print(f"wrote {info['train']}/{info['val']}/{info['test']} trees to {args.out} in {info['seconds']:.0f} s")
        elif args.data_command == "pathfinder":
            from .data.pathfinder_gen import generate_pathfinder

            info = generate_pathfinder(
                args.out,
                size=args.size,
                n=args.n,
                seed=args.seed,
                contour_length=args.contour_length,
                workers=args.workers,
            )
            print(
                f"wrote {info['n']} images ({info['positives']} positive) under {info['root']}: {info['images_per_second']:.0f} images/s"
            )
        elif args.data_command == "mqar":
            from .data.mqar import generate_mqar

            info = generate_mqar(
                args.out,
                train=args.train,
                val=args.val,
                test=args.test,
                vocab_size=args.vocab,
                seq_len=args.seq_len,
                kv_pairs=args.kv_pairs,
                seed=args.seed,
            )
            print(
                f"wrote {info['train']}/{info['val']}/{info['test']} sequences (V={info['vocab_size']}, "
                f"T={info['seq_len']}, {info['kv_pairs']} pairs) to {args.out}"
            )
        else:
            from .data import load_task
            from .data.inspect import format_report, inspect_task

            kwargs = {"skip_bad": args.skip_bad} | ({"max_len": args.max_len} if args.max_len else {})
            report = inspect_task(load_task(args.task, args.path, **kwargs))
            print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    except (DataError, ValueError) as e:
        print(f"hrrformer data: {e}", file=sys.stderr)
        return 1
    return 0
