"""Byte-level text classification: IMDB sentiment (LRA Text), or text of your own.

``load(path)`` reads, checked in this order:

1. a ``.csv`` or ``.jsonl`` file: a table with ``text`` and ``label`` columns (and optionally
   ``split``), see :mod:`hrrformer.data.text_own`;
2. IMDB: ``aclImdb_v1.tar.gz``, any tar holding ``aclImdb/``, or a folder holding an aclImdb
   tree (any other file is read as a tar);
3. a folder without an aclImdb tree: one subfolder of ``.txt`` files per class
   (:mod:`hrrformer.data.text_own`).

IMDB reviews are ``{train,test}/{pos,neg}/<id>_<rating>.txt`` (``train/unsup`` is ignored), read
as raw UTF-8 bytes + 1 (0 = padding) and truncated to ``max_len`` (4,000). Labels: neg = 0,
pos = 1. Validation is held out of train (stratified by ``seed``); test is the data's
``test/`` split, or None when the data has only ``train/``. A tree with only ``test/`` loads
too (train and val are then empty: such data can be evaluated, not trained on). Text of your
own is tokenised the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import text_own
from .base import DataError, TaskData, TokenDataset
from .common import BYTE_VOCAB, BadInputs, Packed, check_options, decode_bytes, standard_splits
from .files import iter_tree, require_path, single_root

__all__ = ["CLASS_NAMES", "MAX_LEN", "AclImdb", "Review", "decode", "load", "read_aclimdb"]

MAX_LEN = 4000
CLASS_NAMES = ["neg", "pos"]
ACLIMDB = "aclImdb_v1.tar.gz, a tar holding aclImdb/, or an aclImdb folder with {train,test}/{pos,neg}/*.txt"
EXPECTED = (
    "aclImdb_v1.tar.gz, a tar holding aclImdb/, an aclImdb folder with {train,test}/{pos,neg}/*.txt, "
    f"{text_own.FOLDERS}, or {text_own.TABLES}"
)
decode = decode_bytes

_REVIEW = re.compile(r"^(?P<root>(?:.+/)?)(?P<split>train|test)/(?P<polarity>pos|neg)/(?P<file>[^/]+\.txt)$")
_URLS = re.compile(r"^(?P<root>(?:.+/)?)(?P<split>train|test)/urls_(?P<polarity>pos|neg)\.txt$")


@dataclass(frozen=True)
class Review:
    """One review: its split (``train``/``test``), label (neg 0, pos 1), file name and text."""

    split: str
    label: int
    file: str
    text: bytes


@dataclass
class AclImdb:
    """The reviews of an aclImdb tree (sorted by split, label, file) and its URL lists.

    ``found`` counts the review files seen, empty and unreadable ones included."""

    root: str
    reviews: list[Review]
    urls: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    found: int = 0


def read_aclimdb(path: str | Path, bad: BadInputs, *, max_bytes: int, with_urls: bool = False) -> AclImdb:
    """Read an aclImdb tree (folder or tar) in one pass; empty reviews are reported to ``bad``.

    ``urls`` maps (split, polarity) to the lines of ``{split}/urls_{polarity}.txt`` when
    ``with_urls``. More than one aclImdb tree in ``path`` is a DataError.
    """
    roots, reviews, urls, found = set(), [], {}, 0

    def select(name: str) -> bool:
        nonlocal found
        if _REVIEW.match(name):
            found += 1
            return True
        return bool(with_urls and _URLS.match(name))

    def cap(name: str) -> int | None:
        return max_bytes if _REVIEW.match(name) else None  # URL lists are read whole

    for name, content in iter_tree(path, select, expected=ACLIMDB, max_bytes=cap, bad=bad):
        match = _REVIEW.match(name)
        if match is None:
            match = _URLS.match(name)
            urls[match["split"], match["polarity"]] = content.decode("utf-8", errors="replace").splitlines()
        elif not content.strip():
            bad("empty document", f"{path}: {name} is empty")
        else:
            reviews.append(Review(match["split"], CLASS_NAMES.index(match["polarity"]), name, content))
        roots.add(match["root"])
    root = single_root(roots, path, "aclImdb")
    reviews.sort(key=lambda r: (r.split, r.label, r.file))
    return AclImdb(root=root, reviews=reviews, urls=urls, found=found)


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
    """Load IMDB reviews, a CSV or JSON-lines table, or class folders of ``.txt`` files from ``path``.

    ``limit`` keeps a seeded sample of each split. ``test_fraction`` holds a test split out by
    ``seed`` from data of your own that has none (IMDB's is always its ``test/``).
    """
    check_options(val_fraction=val_fraction, test_fraction=test_fraction, limit=limit)
    max_len = max_len or MAX_LEN
    path, bad = require_path(path, EXPECTED), BadInputs(skip_bad)
    own = {
        "max_len": max_len,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "limit": limit,
    }
    if text_own.is_table(path):
        return text_own.task_data(text_own.read_table(path, bad, max_bytes=max_len), path, bad, **own)
    imdb = read_aclimdb(path, bad, max_bytes=max_len)
    if not imdb.found and path.is_dir():
        classes = text_own.class_folders(path)
        if not classes:
            raise DataError(
                f"{path}: no reviews in train/ or test/ (pos, neg) and no class subfolders (expected {EXPECTED})"
            )
        examples = text_own.read_class_folders(path, classes, bad, max_bytes=max_len)
        return text_own.task_data(examples, path, bad, **own)
    reviews = imdb.reviews
    pools = {split: [r for r in reviews if r.split == split] for split in ("train", "test")}
    if not reviews:
        raise DataError(f"{path}: no reviews in train/ or test/ (pos, neg) (expected {EXPECTED})")
    test_labels = [r.label for r in pools["test"]] if pools["test"] else None
    chosen = standard_splits(
        [r.label for r in pools["train"]], test_labels, seed=seed, val_fraction=val_fraction, limit=limit
    )

    def dataset(pool: list[Review], indices) -> TokenDataset:
        picked = [pool[i] for i in indices]
        return TokenDataset(
            Packed.from_bytes([r.text for r in picked]), [r.label for r in picked], [r.file for r in picked]
        )

    return TaskData(
        name="text",
        train=dataset(pools["train"], chosen["train"]),
        val=dataset(pools["train"], chosen["val"]),
        test=None if chosen["test"] is None else dataset(pools["test"], chosen["test"]),
        vocab_size=BYTE_VOCAB,
        num_classes=2,
        max_len=max_len,
        class_names=list(CLASS_NAMES),
        skipped=bad.counts,
        own_splits=tuple(split for split, pool in pools.items() if pool),
    )
