"""Pathfinder and Path-X from LRA's ``pathfinder{32,64,128,256}/curv_*/`` folders.

A ``curv_*`` folder holds ``metadata/*.npy`` and ``imgs/<b>/sample_<i>.png`` (grayscale). The
metadata files are TEXT despite their name, one image per line: ``imgs/<b> sample_<i>.png <x>
<label> …`` (label in the 4th field); real ``np.save`` arrays of the same rows are accepted
too (detected by the ``\\x93NUMPY`` magic, loaded without pickle). Tokens are pixel values + 1
(0 = padding), size² of them (1,024 for 32×32, 16,384 for Path-X 128×128); 2 classes.

LRA has no split files: the images are split by ``seed`` into train/val/test (stratified,
``val_fraction`` and ``test_fraction``, default 80/10/10).
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .common import (
    BYTE_VOCAB,
    BadInputs,
    LazyFiles,
    Packed,
    ascii_image,
    check_options,
    choose,
    parse_label,
    split_indices,
)
from .files import decode_image, require_path

__all__ = ["DEFAULT_DIFFICULTY", "decode", "load", "read_metadata"]

DEFAULT_DIFFICULTY = "curv_contour_length_14"
EXPECTED = "a pathfinder curv_* folder (with metadata/ and imgs/) or its parent folder"


def decode(tokens: Sequence[int]) -> str:
    """A small ASCII picture of the image."""
    return ascii_image(tokens)


def _resolve(path: str | Path, difficulty: str | None) -> Path:
    """The curv_* folder: ``path`` itself, or its subfolder ``difficulty`` (or its only curv_* subfolder)."""
    path = require_path(path, EXPECTED)
    if (path / "metadata").is_dir():
        return path
    candidates = sorted(p.name for p in path.iterdir() if (p / "metadata").is_dir()) if path.is_dir() else []
    if difficulty is None:
        difficulty = candidates[0] if len(candidates) == 1 else DEFAULT_DIFFICULTY
    if difficulty not in candidates:
        found = ", ".join(candidates) or "none"
        raise DataError(f"{path / difficulty}: not found (expected {EXPECTED}; curv_* folders found: {found})")
    return path / difficulty


def _metadata_lines(file: Path) -> list[list[str]]:
    """Rows of fields of one metadata file, text or ``np.save`` array."""
    content = file.read_bytes()
    if not content.startswith(b"\x93NUMPY"):
        return [line.split() for line in content.decode("utf-8", errors="replace").splitlines()]
    try:
        array = np.load(io.BytesIO(content), allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{file}: unreadable .npy array ({e})") from e
    if array.ndim == 1:
        return [str(line).split() for line in array]
    return [[str(x) for x in row] for row in array.reshape(len(array), -1)]


def _natural(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def read_metadata(folder: Path, bad: BadInputs) -> tuple[list[str], list[int]]:
    """(image paths relative to ``folder``, labels) from every ``metadata/*.npy`` file, in natural order."""
    files = sorted((folder / "metadata").glob("*.npy"), key=_natural)
    if not files:
        raise DataError(f"{folder / 'metadata'}: no *.npy metadata files (expected {EXPECTED})")
    images, labels = [], []
    for file in files:
        for lineno, fields in enumerate(_metadata_lines(file), start=1):
            if not fields:
                continue
            try:
                if len(fields) < 4:
                    raise ValueError(f"expected at least 4 fields, got {len(fields)}")
                image = PurePosixPath(fields[0], fields[1])
                if image.is_absolute() or ".." in image.parts:
                    raise ValueError(f"image path {image} leaves the folder")
                label = parse_label(fields[3], 2)
            except ValueError as e:
                bad("malformed row", f"{file}:{lineno}: {e}")
                continue
            images.append(str(image))
            labels.append(label)
    return images, labels


def _read_pixels(path: Path, size: int | None = None, max_len: int | None = None) -> np.ndarray:
    """The gray pixels of one image file, flattened (uint8), the first ``max_len`` of them."""
    return decode_image(path, str(path), mode="L", size=size).reshape(-1)[:max_len]


def _image_size(paths: list[Path]) -> int:
    """The width of the first readable image among ``paths``."""
    for path in paths:
        try:
            return decode_image(path, str(path), mode="L").shape[1]
        except DataError:
            continue
    raise DataError(f"{paths[0].parent if paths else 'pathfinder'}: no readable image to learn the image size from")


def _dataset(paths: list[Path], labels: list[int], size: int, max_len: int, lazy: bool, bad: BadInputs) -> TokenDataset:
    """Images read now (kept as uint8) or, with ``lazy``, when an item is requested."""
    kept, pixels, kept_labels = [], [], []
    for path, label in zip(paths, labels):
        try:
            if lazy:
                if not path.is_file():
                    raise DataError(f"{path}: image not found")
            else:
                pixels.append(_read_pixels(path, size, max_len))
        except DataError as e:
            bad("undecodable image", str(e))
            continue
        kept.append(path)
        kept_labels.append(label)
    if lazy:
        reader = functools.partial(_read_pixels, size=size, max_len=max_len)
        return TokenDataset(LazyFiles(kept, reader, shift=1), kept_labels)
    matrix = np.stack(pixels) if pixels else np.zeros((0, min(max_len, size * size)), np.uint8)
    return TokenDataset(Packed.from_matrix(matrix, shift=1), kept_labels)


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
    difficulty: str | None = None,
    test_fraction: float = 0.1,
    image_size: int | None = None,
    lazy: bool = False,
) -> TaskData:
    """Load one Pathfinder difficulty from ``path`` (a ``curv_*`` folder or the folder holding it).

    ``difficulty`` picks the ``curv_*`` subfolder (default: the only one, else
    ``curv_contour_length_14``). ``image_size`` is taken from the first image unless given;
    other sizes are bad inputs. ``limit`` keeps a seeded sample of each split. With ``lazy``
    (advised for Path-X) images are read when an item is requested, and a bad image then raises
    DataError naming it; otherwise they are read now, and bad ones raise or, with
    ``skip_bad``, are skipped and counted. ``max_len`` (default size²) truncates.
    """
    check_options(val_fraction=val_fraction, test_fraction=test_fraction, limit=limit)
    folder, bad = _resolve(path, difficulty), BadInputs(skip_bad)
    images, labels = read_metadata(folder, bad)
    if not images:
        raise DataError(f"{folder / 'metadata'}: no image rows")
    parts = split_indices(labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    chosen = {split: choose(idx, limit, seed, split) for split, idx in zip(("train", "val", "test"), parts)}
    size = image_size or _image_size([folder / images[i] for i in np.concatenate(list(chosen.values()))[:100]])
    max_len = min(max_len or size * size, size * size)
    splits = {
        split: _dataset([folder / images[i] for i in idx], [labels[i] for i in idx], size, max_len, lazy, bad)
        for split, idx in chosen.items()
    }
    return TaskData(
        name="pathfinder",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"] if test_fraction > 0 else None,
        vocab_size=BYTE_VOCAB,
        num_classes=2,
        max_len=max_len,
        class_names=["disconnected", "connected"],
        skipped=bad.counts,
    )
