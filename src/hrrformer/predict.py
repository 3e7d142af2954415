"""Classify files with a trained run: ``hrrformer predict RUN_DIR FILE...`` (text and binaries tasks).

Each file is read as bytes (gzip decompressed on the fly, never executed), cut to the run's
``max_len`` as in training, and turned into tokens byte + 1. One line per file with the class
probabilities; the output says when a file was truncated. Files are processed in batches, so
memory stays bounded however many files are given; ``--files-from LIST`` (``-``: standard
input) reads the paths, one per line, as they are needed. A file that cannot be read (missing,
a directory or FIFO, empty, corrupt gzip) gets an error line of its own and the others go on;
the exit status is then 1.

``--data PATH`` also classifies every example of labelled data in the task's format (one split
with ``--split``, chosen as ``hrrformer eval`` does), each line with its true class.

A run labelled per position (``pooling="none"``, e.g. MQAR) takes ``--data`` only (its inputs are
token ids, not files): one line per sequence, with its labelled positions, the predicted and true
class at each, and how many are right.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator

import torch

from .checkpoint import CheckpointError
from .data.base import DataError, pad_sequences
from .data.inputs import EmptyInput, read_bytes
from .data.selection import SPLIT_CHOICES
from .evaluate import EvalData, load_for_run, model_outputs, position_outputs
from .forward import resolve_device
from .rundir import load_run

BYTE_TASKS = ("text", "binaries")


def _read(path: str, max_len: int) -> tuple[torch.Tensor | None, bool, str | None]:
    """(tokens, truncated, error) for one file."""
    try:
        item = read_bytes(path, max_len)
    except OSError as e:
        return None, False, f"cannot read: {e.strerror or e}"
    except EmptyInput:
        return None, False, "empty file"
    return item.tokens, item.truncated, None


def predict_files(
    model: torch.nn.Module,
    files: Iterable[str],
    *,
    max_len: int,
    class_names: list[str],
    batch_size: int,
    device: torch.device,
) -> Iterator[dict]:
    """One result dict per file, in order: file, probabilities by class, prediction, truncated, or error.

    ``files`` is consumed ``batch_size`` at a time, so it may be a lazy stream of any length."""
    files = iter(files)
    while chunk := list(itertools.islice(files, batch_size)):
        read = [_read(path, max_len) for path in chunk]
        good = [i for i, (tokens, _, _) in enumerate(read) if tokens is not None]
        probs = None
        if good:
            tokens, mask = pad_sequences([read[i][0] for i in good])
            with torch.no_grad():
                probs = model(tokens.to(device), mask.to(device)).float().softmax(-1).cpu()
        row = {i: r for r, i in enumerate(good)}
        for i, path in enumerate(chunk):
            _, truncated, error = read[i]
            if error is not None:
                yield {"file": path, "error": error}
                continue
            p = probs[row[i]]
            yield {
                "file": path,
                "prediction": class_names[int(p.argmax())],
                "probabilities": {name: round(float(v), 6) for name, v in zip(class_names, p)},
                "truncated": truncated,
            }


def predict_data(model: torch.nn.Module, data: EvalData, *, batch_size: int, device: torch.device) -> Iterator[dict]:
    """One result dict per example of ``data``, in order: its name, true class, prediction, probabilities."""
    logits, labels = model_outputs(model, data.dataset, batch_size=batch_size, device=device)
    names = data.dataset.names or [f"{data.path} #{i}" for i in range(len(labels))]
    for name, p, label in zip(names, logits.softmax(-1), labels.tolist()):
        yield {
            "file": name,
            "label": data.class_names[label],
            "prediction": data.class_names[int(p.argmax())],
            "probabilities": {n: round(float(v), 6) for n, v in zip(data.class_names, p)},
        }


def predict_positions(
    model: torch.nn.Module, data: EvalData, *, batch_size: int, device: torch.device
) -> Iterator[dict]:
    """One result dict per example of ``data`` (a per-position run), in order: its name, its labelled
    positions, and at each the true class, the prediction and its probability; the number right."""
    out = position_outputs(model, data.dataset, batch_size=batch_size, device=device)
    names = data.dataset.names or [f"{data.path} #{i}" for i in range(out.num_sequences)]
    counts = torch.bincount(out.sequence, minlength=out.num_sequences).tolist()
    start = 0
    for name, n in zip(names, counts):
        rows = slice(start, start + n)
        start += n
        yield {
            "file": name,
            "positions": out.position[rows].tolist(),
            "labels": out.label[rows].tolist(),
            "predictions": out.prediction[rows].tolist(),
            "probabilities": [round(float(v), 6) for v in out.probability[rows]],
            "correct": int((out.prediction[rows] == out.label[rows]).sum()),
        }


def _paths_from(list_file) -> Iterator[str]:
    """Non-blank lines of a text stream, without their line ends."""
    for line in list_file:
        path = line.rstrip("\r\n")
        if path.strip():
            yield path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir",
        help="a run directory written by `hrrformer train` (task text or binaries; a run labelled per position, "
        "such as mqar, with --data)",
    )
    parser.add_argument("files", nargs="*", help="files to classify")
    parser.add_argument(
        "--files-from", metavar="LIST", help="also classify the files listed in LIST, one path per line ('-': stdin)"
    )
    parser.add_argument("--data", help="also classify every labelled example of this data (the task's format)")
    parser.add_argument("--split", choices=SPLIT_CHOICES, help="split of --data (default: as `hrrformer eval`)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _open_list(name: str, stack: contextlib.ExitStack):
    """The path list ``name`` ('-': stdin) as text, file names decoded as the OS does for argv."""
    encoding = sys.getfilesystemencoding()
    if name != "-":
        return stack.enter_context(open(name, encoding=encoding, errors="surrogateescape"))
    if getattr(sys.stdin, "buffer", None) is None:
        return sys.stdin
    wrapper = io.TextIOWrapper(sys.stdin.buffer, encoding=encoding, errors="surrogateescape")
    stack.callback(wrapper.detach)  # leave stdin open
    return wrapper


def run(args: argparse.Namespace) -> int:
    if not args.files and args.files_from is None and args.data is None:
        print("hrrformer predict: give files to classify, --files-from LIST or --data PATH", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    try:
        config, model = load_run(args.run_dir, device)
        per_position = getattr(model, "per_position", False)
        if per_position and (args.files or args.files_from is not None):
            raise ValueError(f"this run ({config.task}) is labelled per position: give --data, not files")
        if config.task not in BYTE_TASKS and not per_position:
            raise ValueError(f"works for the tasks {BYTE_TASKS}; this run is {config.task!r}")
        data = None if args.data is None else load_for_run(config, args.data, args.split, own_default="test")
    except (ValueError, CheckpointError, DataError) as e:
        print(f"hrrformer predict: {e}", file=sys.stderr)
        return 1
    max_len = config.model["max_len"]
    class_names = config.class_names or [str(i) for i in range(config.model["num_classes"])]
    with contextlib.ExitStack() as stack:
        files: Iterable[str] = args.files
        if args.files_from is not None:
            try:
                listed = _open_list(args.files_from, stack)
            except OSError as e:
                print(f"hrrformer predict: {args.files_from}: cannot read ({e.strerror or e})", file=sys.stderr)
                return 1
            files = itertools.chain(args.files, _paths_from(listed))
        results = predict_files(
            model, files, max_len=max_len, class_names=class_names, batch_size=args.batch_size, device=device
        )
        if data is not None:
            predict = predict_positions if per_position else predict_data
            results = itertools.chain(results, predict(model, data, batch_size=args.batch_size, device=device))
        return _print_results(results, args.json, max_len)


def _print_results(results: Iterator[dict], as_json: bool, max_len: int) -> int:
    if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8 are written back as their bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    failures = 0
    for result in results:
        failures += "error" in result
        if as_json:
            print(json.dumps(result))
        elif "error" in result:
            print(f"{result['file']}\terror: {result['error']}")
        elif "positions" in result:  # per position: position:prediction (true class where it differs)
            answers = " ".join(
                f"{t}:{p}" + ("" if p == y else f"(true {y})")
                for t, p, y in zip(result["positions"], result["predictions"], result["labels"])
            )
            print(f"{result['file']}\t{result['correct']}/{len(result['positions'])} right\t{answers}")
        else:
            probs = " ".join(f"{k}={v:.4f}" for k, v in result["probabilities"].items())
            note = f"\t(truncated to the first {max_len:,} bytes)" if result.get("truncated") else ""
            label = f"\ttrue={result['label']}" if "label" in result else ""
            print(f"{result['file']}\t{result['prediction']}\t{probs}{label}{note}")
    return 1 if failures else 0
