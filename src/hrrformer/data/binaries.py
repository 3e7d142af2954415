"""Raw files as byte sequences (malware-style classification, as in the paper's EMBER experiment).

``path`` is either a folder with one subfolder per class (``benign/``, ``malicious/``, …;
class index by sorted name; files found recursively), or a CSV manifest with the header
``path,label`` and optionally a ``split`` column (``train``/``val``/``test``). Manifest paths
are relative to the CSV's folder or absolute; labels are class names, or integers when every
label is one.

Tokens are the first ``max_len`` (default 2**14) bytes + 1 (0 = padding). Files are only ever
read as bytes, never executed, and read lazily when an item is requested: the dataset stores
paths. Gzip files (magic ``1f 8b``) are decompressed on the fly, but never past ``max_len``
bytes, so a gzip bomb stays bounded. Without a ``split`` column, validation (and, with
``test_fraction``, test) is held out by ``seed``, stratified by class.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .common import (
    BYTE_VOCAB,
    BadInputs,
    LazyFiles,
    check_options,
    choose,
    decode_bytes,
    split_indices,
)
from .files import read_prefix, require_path

__all__ = ["MAX_LEN", "decode", "load"]

MAX_LEN = 2**14
EXPECTED = "a folder with one subfolder per class, or a CSV manifest with header path,label"
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "eval": "val", "test": "test"}
decode = decode_bytes


def _scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of a folder of class subfolders; hidden names are ignored."""
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise DataError(f"{root}: no class subfolders (expected {EXPECTED})")
    files, labels = [], []
    for label, name in enumerate(class_names):
        for folder, subfolders, names in os.walk(root / name):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for file in sorted(n for n in names if not n.startswith(".")):
                files.append(Path(folder) / file)
                labels.append(label)
    return files, labels, class_names


def _manifest_row(row: list[str], column: dict[str, int], width: int) -> tuple[str, str, str | None]:
    """(path, label, split or None) of one manifest row; ValueError when malformed."""
    cells = [cell.strip() for cell in row]
    if len(cells) != width or not cells[column["path"]] or not cells[column["label"]]:
        raise ValueError(f"expected {width} columns with a path and a label, got {row}")
    if "split" not in column:
        return cells[column["path"]], cells[column["label"]], None
    split = cells[column["split"]].lower()
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r} (use train, val or test)")
    return cells[column["path"]], cells[column["label"]], SPLIT_NAMES[split]


def _read_manifest(manifest: Path, bad: BadInputs) -> tuple[list[Path], list[str], list[str | None]]:
    """(files, raw labels, splits or None) of a CSV manifest; malformed rows go to ``bad``."""
    files, labels, splits = [], [], []
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "path" not in header or "label" not in header:
                raise DataError(f"{manifest}: header must name the columns path,label (got {','.join(header)!r})")
            column = {name: header.index(name) for name in ("path", "label", "split") if name in header}
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                try:
                    file, label, split = _manifest_row(row, column, len(header))
                except ValueError as e:
                    bad("malformed row", f"{manifest}:{reader.line_num}: {e}")
                    continue
                files.append(manifest.parent / file)  # an absolute path stays as it is
                labels.append(label)
                splits.append(split)
    except UnicodeDecodeError as e:
        raise DataError(f"{_first_undecodable(manifest)}: the CSV manifest is not UTF-8 ({e.reason})") from e
    except (OSError, csv.Error) as e:
        raise DataError(f"{manifest}: cannot read the CSV manifest ({e})") from e
    return files, labels, splits


def _first_undecodable(manifest: Path) -> str:
    """``path:line`` of the first line of ``manifest`` that is not UTF-8 (for the error message)."""
    with open(manifest, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return f"{manifest}:{lineno}"
    return str(manifest)


def _class_indices(raw: list[str]) -> tuple[list[int], list[str] | None]:
    """Labels as indices: integers as they are when every label is one, else names by sorted order."""
    if raw and all(label.isascii() and label.isdigit() for label in raw):  # "²".isdigit() too
        return [int(label) for label in raw], None
    names = sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    return [index[label] for label in raw], names


def _check_file(path: Path, bad: BadInputs) -> bool:
    """Whether ``path`` is a readable, non-empty regular file (else report it)."""
    if not path.exists():
        bad("missing file", f"{path}: file not found")
    elif not path.is_file():
        bad("not a regular file", f"{path}: not a regular file (a directory, FIFO, socket or device)")
    elif not os.access(path, os.R_OK):
        bad("unreadable file", f"{path}: not readable")
    elif path.stat().st_size == 0:
        bad("empty file", f"{path}: zero-length file")
    else:
        return True
    return False


def _dataset(files: Sequence[Path], labels: Sequence[int], indices: np.ndarray, max_len: int, bad: BadInputs):
    kept = [i for i in indices if _check_file(files[i], bad)]
    reader = functools.partial(read_prefix, max_bytes=max_len)
    paths = [files[i] for i in kept]
    return TokenDataset(
        LazyFiles(paths, reader, shift=1, max_len=max_len), [labels[i] for i in kept], [str(p) for p in paths]
    )


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
    test_fraction: float = 0.0,
) -> TaskData:
    """Load a class-folder tree or CSV manifest of files at ``path`` (read lazily, bytes + 1).

    ``limit`` keeps a seeded sample of each split. Missing, unreadable, zero-length and
    non-regular files (checked now, for the kept sample) raise DataError, or with ``skip_bad``
    are skipped and counted; a file that vanishes or changes later raises DataError naming it
    when it is read.
    """
    check_options(val_fraction=val_fraction, test_fraction=test_fraction, limit=limit)
    max_len = max_len or MAX_LEN
    path, bad = require_path(path, EXPECTED), BadInputs(skip_bad)
    if path.is_dir():
        files, labels, class_names = _scan_folder(path)
        given = [None] * len(files)
    else:
        files, raw_labels, given = _read_manifest(path, bad)
        labels, class_names = _class_indices(raw_labels)
    if not files:
        raise DataError(f"{path}: no files listed or found (expected {EXPECTED})")
    if any(given):
        parts = [np.flatnonzero(np.array(given) == split) for split in ("train", "val", "test")]
        has_test = bool(len(parts[2]))
        own_splits = tuple(split for split, idx in zip(("train", "val", "test"), parts) if len(idx))
    else:
        parts = split_indices(labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        has_test, own_splits = test_fraction > 0, ()
    splits = {
        split: _dataset(files, labels, choose(idx, limit, seed, split), max_len, bad)
        for split, idx in zip(("train", "val", "test"), parts)
    }
    return TaskData(
        name="binaries",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"] if has_test else None,
        vocab_size=BYTE_VOCAB,
        num_classes=len(class_names) if class_names else max(labels) + 1,
        max_len=max_len,
        class_names=class_names,
        skipped=bad.counts,
        own_splits=own_splits,
    )
