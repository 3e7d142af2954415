"""The ``hrrformer`` command: one subcommand per module, each exposing ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .perf import keep_freed_memory

#: subcommand → (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("hrrformer.train", "train a model on a task (no arguments: the associative-recall demo, mqar)"),
    "eval": ("hrrformer.evaluate", "evaluate a trained run on a data split"),
    "predict": ("hrrformer.predict", "classify files with a trained run (text, binaries)"),
    "explain": ("hrrformer.explain", "attention maps of a trained HRR run, for files or class averages"),
    "plot": ("hrrformer.plot", "plot training curves of one or more runs"),
    "data": ("hrrformer.data_cli", "generate ListOps / Pathfinder data, or inspect a data set"),
    "demo": ("hrrformer.demo", "run the HRR attention layer on a long random sequence"),
    "bench": ("hrrformer.bench", "time and peak memory of attention methods against sequence length"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrrformer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
