"""Text classification data of your own for the text task: class folders of ``.txt`` files, or a
CSV or JSON-lines table (``hrrformer train --task text --data PATH``; :func:`hrrformer.data.text.load`
picks the format).

Formats:

- **Class folders**: ``PATH/<class>/…/*.txt``, one subfolder per class (hidden ones ignored),
  class index by sorted subfolder name. ``.txt`` files (any case) are found recursively; other
  files, and files directly in ``PATH``, are ignored. A class folder without a ``.txt`` file is a
  DataError naming it. Files are read as bytes, as IMDB's reviews are (no encoding check).
- **CSV** (``*.csv``): a header naming the columns ``text`` and ``label`` (any order and case;
  other columns are ignored), optionally ``split``. Standard quoting, so a text may hold commas,
  quotes and line breaks (kept as written). Every row has the header's number of columns.
- **JSON lines** (``*.jsonl``): one JSON object per line with ``text`` (a string) and ``label``,
  optionally ``split``; other keys are ignored. The first example decides whether the file has
  a split: then every example needs one, else none may have one.

CSV and JSON-lines files must be UTF-8 (a byte-order mark is allowed); they are read line by line
(a line may be up to 64 MiB), and only the first ``max_len`` bytes of each text are kept.

Labels are class names (strings), or integers: when every label is an integer (a JSON integer, or
a CSV cell of digits), labels are those numbers (``num_classes`` = largest + 1, no class names);
otherwise every label is a class name (``3`` is the name "3") and class indices follow the
sorted names. A ``split`` is ``train``, ``val`` or ``test`` (also ``valid``, ``validation``,
``eval``; any case).

Splits: without a split column (and for class folders) every example is in one pool and
validation (and, with ``test_fraction``, test) is held out of it by ``seed``, stratified by class.
With one, the rows say their split; a split no row names is held out of train by seed for val
(as IMDB does), and for test only with ``test_fraction`` (else there is no test split).

Text is tokenised as IMDB's reviews are: its UTF-8 bytes + 1 (0 = padding), cut at ``max_len``
bytes. A text that is empty or only whitespace is an "empty document"; a malformed row (wrong
number of columns, a missing field, a label that is neither a class name nor an integer, an
unknown split) is a "malformed row": both raise DataError naming ``file:line``, or with
``skip_bad`` are skipped and counted (so is a JSON line longer than 64 MiB). A file that is not
UTF-8, a CSV header without ``text`` and ``label``, a CSV that cannot be parsed (broken quoting)
and a CSV line longer than 64 MiB always raise DataError naming ``file:line``. The csv module's
field size limit is raised to 64 MiB while a CSV file is read (and restored after).
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .binaries import SPLIT_NAMES
from .common import BYTE_VOCAB, BadInputs, Packed, choose, shorten, split_indices
from .files import MAX_LINE_BYTES, iter_tree, open_regular

__all__ = [
    "FOLDERS",
    "TABLES",
    "TABLE_SUFFIXES",
    "Examples",
    "class_folders",
    "class_indices",
    "is_table",
    "read_class_folders",
    "read_table",
    "task_data",
]

FOLDERS = "a folder with one subfolder of .txt files per class"
TABLES = "a .csv or .jsonl file with the columns text and label (and optionally split)"
TABLE_SUFFIXES = (".csv", ".jsonl")
SPLITS = ("train", "val", "test")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}


@dataclass
class Examples:
    """Texts read from one source, in its order: bytes (cut at ``max_len``), labels, where each
    came from, and its split (None for all when the source has no split structure).

    ``labels`` are indices into ``class_names``, or the integers themselves when it is None."""

    texts: list[bytes]
    labels: list[int]
    names: list[str]
    splits: list[str] | None
    class_names: list[str] | None


def is_table(path: Path) -> bool:
    """Whether ``path`` is a CSV or JSON-lines file (by its suffix, in any case)."""
    return path.suffix.lower() in TABLE_SUFFIXES and not path.is_dir()


def class_folders(root: Path) -> list[str]:
    """The class subfolders of ``root`` (sorted, hidden ones ignored); [] when it has none."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_class_folders(root: Path, classes: Sequence[str], bad: BadInputs, *, max_bytes: int) -> Examples:
    """The ``.txt`` files under each of ``classes`` (subfolders of ``root``), read as bytes."""
    texts, labels, names = [], [], []
    for label, name in enumerate(classes):
        found = 0

        def select(file: str) -> bool:
            nonlocal found
            is_text = file.lower().endswith(".txt")
            found += is_text
            return is_text

        for file, content in iter_tree(root / name, select, expected=FOLDERS, max_bytes=max_bytes, bad=bad):
            if not content.strip():
                bad("empty document", f"{root / name / file}: empty")
                continue
            texts.append(content)
            labels.append(label)
            names.append(f"{name}/{file}")
        if not found:
            raise DataError(f"{root / name}: no .txt files in this class folder (expected {FOLDERS})")
    return Examples(texts, labels, names, None, list(classes))


def class_indices(raw: Sequence[str]) -> tuple[list[int], list[str] | None]:
    """Labels as indices: the integers themselves when every label is one, else indices of the
    sorted class names."""
    if raw and all(label.isascii() and label.isdigit() for label in raw):
        return [int(label) for label in raw], None
    names = sorted(set(raw))
    index = {name: i for i, name in enumerate(names)}
    return [index[label] for label in raw], names


# ----------------------------------------------------------------------------- tables
def _utf8_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, str | None]]:
    """(line number, line with its line end) of a UTF-8 file, read line by line; None for a line
    longer than ``max_line_bytes`` (read and dropped, never held whole). DataError naming the line
    when one is not UTF-8; a byte-order mark at the start is dropped."""
    try:
        with open_regular(path) as f:
            lineno = 0
            while line := f.readline(max_line_bytes + 2):
                lineno += 1
                if len(line.rstrip(b"\r\n")) > max_line_bytes:
                    while line and not line.endswith(b"\n"):
                        line = f.readline(1 << 20)
                    yield lineno, None
                    continue
                try:
                    decoded = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start + 1} of the line); "
                        "save the file as UTF-8"
                    ) from None
                yield lineno, decoded
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """The csv module's field size limit (131,072 characters by default) raised to ``limit`` for a while."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


class _Table:
    """Examples collected row by row from a CSV or JSON-lines file, each checked as it comes."""

    def __init__(self, path: Path, bad: BadInputs, max_bytes: int) -> None:
        self.path, self.bad, self.max_bytes = path, bad, max_bytes
        self.texts: list[bytes] = []
        self.labels: list[str] = []
        self.names: list[str] = []
        self.splits: list[str] = []

    def add(self, lineno: int, text: str, label: str | None, split: str | None) -> None:
        """One example; ``label`` None means it was neither a class name nor an integer (already reported)."""
        where = f"{self.path}:{lineno}"
        if label is None:
            return
        if not label:
            self.bad("malformed row", f"{where}: empty label (expected a class name or an integer)")
            return
        if split is not None and split.lower() not in SPLIT_NAMES:
            self.bad("malformed row", f"{where}: unknown split {shorten(split)} (use train, val or test)")
            return
        try:  # only what is kept is encoded: each character is at least one byte
            data = text[: self.max_bytes].encode("utf-8")[: self.max_bytes]
        except UnicodeEncodeError:  # a lone surrogate, which a JSON escape such as "\ud800" can write
            self.bad("malformed row", f"{where}: text is not valid Unicode (a lone surrogate)")
            return
        if not data.strip():
            self.bad("empty document", f"{where}: empty text")
            return
        self.texts.append(data)
        self.labels.append(label)
        self.names.append(f"{self.path.name}:{lineno}")
        self.splits.append("" if split is None else SPLIT_NAMES[split.lower()])

    def examples(self, has_split: bool) -> Examples:
        labels, class_names = class_indices(self.labels)
        return Examples(self.texts, labels, self.names, self.splits if has_split else None, class_names)


def _read_csv(path: Path, bad: BadInputs, max_bytes: int) -> Examples:
    table = _Table(path, bad, max_bytes)

    def lines() -> Iterator[str]:
        for lineno, line in _utf8_lines(path, MAX_LINE_BYTES):
            if line is None:
                raise DataError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES:,} bytes")
            yield line

    reader = csv.reader(lines(), strict=True)
    start = 1
    try:
        with _csv_field_limit(MAX_LINE_BYTES):
            header = [cell.strip().lower() for cell in next(reader, [])]
            if "text" not in header or "label" not in header:
                got = (
                    shorten(",".join(header), 80) if header else "an empty line" if reader.line_num else "an empty file"
                )
                raise DataError(
                    f"{path}:{max(reader.line_num, 1)}: the header must name the columns text,label (got {got})"
                )
            column = {name: header.index(name) for name in ("text", "label", "split") if name in header}
            while True:
                start = reader.line_num + 1  # a quoted text may run over several lines
                row = next(reader, None)
                if row is None:
                    break
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    bad(
                        "malformed row", f"{path}:{start}: expected {len(header)} columns as the header, got {len(row)}"
                    )
                    continue
                split = row[column["split"]].strip() if "split" in column else None
                table.add(start, row[column["text"]], row[column["label"]].strip(), split)
    except csv.Error as e:
        raise DataError(f"{path}:{start}: not valid CSV ({e})") from None
    return table.examples("split" in column)


def _json_label(value, where: str, bad: BadInputs) -> str | None:
    """A JSON label as a string (integers in decimal), or None after reporting one that is neither."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, float) and value.is_integer() and value >= 0:  # 2.0, as some writers put it
        return str(int(value))
    written = json.dumps(value)
    written = written if len(written) <= 40 else f"{written[:40]}…"
    bad("malformed row", f"{where}: label {written} is neither a class name nor an integer ≥ 0")
    return None


def _read_jsonl(path: Path, bad: BadInputs, max_bytes: int) -> Examples:
    table, has_split = _Table(path, bad, max_bytes), None
    for lineno, line in _utf8_lines(path, MAX_LINE_BYTES):
        where = f"{path}:{lineno}"
        if line is None:
            bad("malformed row", f"{where}: line longer than {MAX_LINE_BYTES:,} bytes")
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            bad("malformed row", f"{where}: not JSON ({e.msg} at column {e.colno})")
            continue
        except (ValueError, RecursionError) as e:  # a number too long to convert, nesting too deep
            bad("malformed row", f"{where}: not JSON ({type(e).__name__}: {shorten(str(e), 80)})")
            continue
        if not isinstance(row, dict):
            bad("malformed row", f"{where}: expected a JSON object with text and label, got {_json_type(row)}")
            continue
        missing = [key for key in ("text", "label") if key not in row]
        if missing:
            bad("malformed row", f"{where}: no {missing[0]!r} field")
            continue
        if not isinstance(row["text"], str):
            bad("malformed row", f"{where}: 'text' is {_json_type(row['text'])}, not a string")
            continue
        if has_split is None:
            has_split = "split" in row
        if has_split != ("split" in row):
            first = "has one" if has_split else "has none"
            bad("malformed row", f"{where}: {'no' if has_split else 'a'} 'split' field, but the first example {first}")
            continue
        split = None
        if has_split:
            split = row["split"].strip() if isinstance(row["split"], str) else json.dumps(row["split"])
        table.add(lineno, row["text"], _json_label(row["label"], where, bad), split)
    return table.examples(bool(has_split))


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def read_table(path: Path, bad: BadInputs, *, max_bytes: int) -> Examples:
    """The examples of a CSV (``.csv``) or JSON-lines (``.jsonl``) file, read line by line."""
    if path.suffix.lower() == ".csv":
        return _read_csv(path, bad, max_bytes)
    return _read_jsonl(path, bad, max_bytes)


# ----------------------------------------------------------------------------- splits
def task_data(
    examples: Examples,
    path: Path,
    bad: BadInputs,
    *,
    max_len: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    limit: int | None,
) -> TaskData:
    """The text task's data from ``examples``: the splits they name, the others held out by seed."""
    if not examples.labels:
        skipped = ", ".join(f"{n:,} {reason}" for reason, n in bad.counts.items())
        raise DataError(f"{path}: no examples" + (f" left after skipping bad inputs ({skipped})" if skipped else ""))
    labels = np.asarray(examples.labels, dtype=np.int64)
    given = np.asarray(examples.splits if examples.splits is not None else ["train"] * len(labels))
    pools = {split: np.flatnonzero(given == split) for split in SPLITS}
    train = pools["train"]
    kept, held_val, held_test = split_indices(
        labels[train],
        seed=seed,
        val_fraction=0.0 if len(pools["val"]) else val_fraction,
        test_fraction=0.0 if len(pools["test"]) else test_fraction,
    )
    parts = {
        "train": train[kept],
        "val": pools["val"] if len(pools["val"]) else train[held_val],
        "test": pools["test"] if len(pools["test"]) else train[held_test],
    }
    has_test = bool(len(pools["test"])) or test_fraction > 0

    def dataset(split: str) -> TokenDataset:
        picked = choose(parts[split], limit, seed, split).tolist()
        return TokenDataset(
            Packed.from_bytes([examples.texts[i] for i in picked]),
            [examples.labels[i] for i in picked],
            [examples.names[i] for i in picked],
        )

    class_names = examples.class_names
    return TaskData(
        name="text",
        train=dataset("train"),
        val=dataset("val"),
        test=dataset("test") if has_test else None,
        vocab_size=BYTE_VOCAB,
        num_classes=len(class_names) if class_names else int(labels.max()) + 1,
        max_len=max_len,
        class_names=None if class_names is None else list(class_names),
        skipped=bad.counts,
        own_splits=tuple(s for s in SPLITS if examples.splits is not None and len(pools[s])),
    )
