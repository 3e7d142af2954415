"""CIFAR-10 in grayscale, 1,024-pixel sequences (LRA Image).

Reads either the official ``cifar-10-python.tar.gz`` (or its ``cifar-10-batches-py/`` folder):
pickled ``data_batch_1..5`` (train) and ``test_batch`` (test), each a dict with ``b"data"``,
an (N, 3072) uint8 array of channel-major rows, and ``b"labels"``; or an image-folder layout
``{train,test}/<class>/*.{png,jpg}`` (either split optional, classes by sorted name) as a
folder or a tar archive. Data with a test split only (``test/<class>/`` or ``test_batch``) loads
with empty train and val: it can be evaluated, not trained on. Pixels become
``round(0.2989 R + 0.5870 G + 0.1140 B) + 1`` (0 = padding).

Pickle is used only for the official CIFAR batch files, and with an unpickler that accepts
nothing but plain containers and numpy arrays: any other object in the file is an error.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .common import BYTE_VOCAB, BadInputs, Packed, ascii_image, check_options, standard_splits
from .files import decode_image, iter_tree, rgb_to_gray, single_root

__all__ = ["CIFAR10_CLASSES", "decode", "load"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
EXPECTED = "cifar-10-python.tar.gz, a cifar-10-batches-py folder, or {train,test}/<class>/*.png|jpg (folder or tar)"
_BATCH = re.compile(r"^(?P<root>(?:.+/)?)(?P<file>data_batch_(?P<number>\d+)|test_batch|batches\.meta)$")
_IMAGE = re.compile(r"^(?P<root>(?:.+/)?)(?P<split>train|test)/(?P<cls>[^/]+)/[^/]+\.(?:png|jpe?g|bmp|gif)$", re.I)
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def decode(tokens: Sequence[int]) -> str:
    """A small ASCII picture of a grayscale image."""
    return ascii_image(tokens)


# --- the official pickled batches -------------------------------------------------------------


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: dicts, lists, bytes, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _unpickle(content: bytes, name: str) -> dict:
    """A batch file's dict, keys as str."""
    try:
        batch = _CifarUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as e:  # any failure to unpickle means a corrupt or foreign file
        raise DataError(f"{name}: not a CIFAR batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{name}: not a CIFAR batch (a {type(batch).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


@dataclass
class _Batches:
    """CIFAR rows (N, 3072), channel-major RGB, and their labels."""

    rows: np.ndarray
    labels: np.ndarray

    @classmethod
    def read(cls, content: bytes, name: str) -> _Batches:
        batch = _unpickle(content, name)
        data, labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{name}: 'data' must be an (N, 3072) uint8 array")
        labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
        if labels.shape != (len(data),) or (labels < 0).any() or (labels >= len(CIFAR10_CLASSES)).any():
            raise DataError(f"{name}: 'labels' must be {len(data)} integers in [0, {len(CIFAR10_CLASSES)})")
        return cls(data, labels)

    def gray(self, indices: np.ndarray, bad: BadInputs, chunk: int = 4096) -> tuple[np.ndarray, list[int]]:
        """(n, 1024) uint8 gray pixels and labels of the rows ``indices``."""
        rows = self.rows[indices]
        out = np.empty((len(rows), 1024), dtype=np.uint8)
        for i in range(0, len(rows), chunk):
            out[i : i + chunk] = rgb_to_gray(rows[i : i + chunk].reshape(-1, 3, 1024).transpose(0, 2, 1))
        return out, self.labels[indices].tolist()


def _batch_pools(files: dict[str, bytes], path: str | Path) -> tuple[dict[str, _Batches | None], list[str]]:
    """Train and test pools (train empty, test None when absent) and class names from the batch files."""
    numbered = {int(m["number"]): n for n in files if (m := _BATCH.match(n))["number"]}
    test = next((n for n in files if _BATCH.match(n)["file"] == "test_batch"), None)
    if not numbered and test is None:
        raise DataError(f"{path}: no data_batch_* or test_batch files (expected {EXPECTED})")
    parts = [_Batches.read(files[numbered[k]], f"{path}: {numbered[k]}") for k in sorted(numbered)]
    parts.append(_Batches(np.zeros((0, 3072), np.uint8), np.zeros(0, np.int64)))  # train may be absent
    pools = {"train": _Batches(np.concatenate([p.rows for p in parts]), np.concatenate([p.labels for p in parts]))}
    pools["test"] = None if test is None else _Batches.read(files[test], f"{path}: {test}")
    meta = next((n for n in files if _BATCH.match(n)["file"] == "batches.meta"), None)
    names = _unpickle(files[meta], f"{path}: {meta}").get("label_names") if meta else None
    return pools, [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else list(CIFAR10_CLASSES)


# --- image folders ----------------------------------------------------------------------------


@dataclass
class _Images:
    """Encoded image files of one split: (name, content) and labels."""

    files: list[tuple[str, bytes]]
    labels: np.ndarray
    size: int

    def gray(self, indices: np.ndarray, bad: BadInputs) -> tuple[np.ndarray, list[int]]:
        """(n, size²) uint8 gray pixels and labels of the decodable images among ``indices``."""
        pixels, labels = [], []
        for i in indices:
            name, content = self.files[i]
            try:
                pixels.append(rgb_to_gray(decode_image(content, name, mode="RGB", size=self.size)).reshape(-1))
            except DataError as e:
                bad("undecodable image", str(e))
                continue
            labels.append(int(self.labels[i]))
        return (np.stack(pixels) if pixels else np.zeros((0, self.size**2), np.uint8)), labels


def _folder_pools(
    images: list[tuple[str, str, str, bytes]], path: str | Path, size: int
) -> tuple[dict[str, _Images | None], list[str]]:
    """Train and test pools (train empty, test None when absent) from (split, class, name, content)
    tuples. Classes are train's (sorted names); a folder with only ``test/`` gives test's."""
    classes = {split: sorted({c for s, c, _, _ in images if s == split}) for split in ("train", "test")}
    class_names = classes["train"] or classes["test"]
    unknown = sorted(set(classes["test"]) - set(class_names))
    if unknown:
        raise DataError(f"{path}: test classes {unknown} have no train/ folder")
    pools: dict[str, _Images | None] = {}
    for split in ("train", "test"):
        members = [(c, f"{path}: {n}", x) for s, c, n, x in images if s == split]
        labels = np.array([class_names.index(c) for c, _, _ in members], dtype=np.int64)
        pools[split] = _Images([(n, x) for _, n, x in members], labels, size) if members or split == "train" else None
    return pools, class_names


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
    image_size: int = 32,
) -> TaskData:
    """Load grayscale CIFAR-10 (or an image-folder data set of ``image_size``² images) from ``path``.

    Validation is held out of train (stratified by ``seed``); test is the data's own test
    split or None. ``limit`` keeps a seeded sample of each split, and only those images are
    decoded. Images that cannot be decoded or have the wrong size raise DataError, or with
    ``skip_bad`` are skipped and counted. ``max_len`` (default ``image_size``²) truncates.
    """
    check_options(val_fraction=val_fraction, limit=limit)
    max_len = min(max_len or image_size**2, image_size**2)
    batches, images, roots, bad = {}, [], set(), BadInputs(skip_bad)
    select = lambda n: bool(_BATCH.match(n) or _IMAGE.match(n))  # noqa: E731
    for name, content in iter_tree(path, select, expected=EXPECTED, bad=bad):
        if match := _BATCH.match(name):
            batches[name] = content
        else:
            match = _IMAGE.match(name)
            images.append((match["split"], match["cls"], name, content))
        roots.add(match["root"])
    single_root(roots, path, "CIFAR")
    if batches:
        pools, class_names = _batch_pools(batches, path)
    elif images:
        pools, class_names = _folder_pools(images, path, image_size)
    else:
        raise DataError(f"{path}: no CIFAR batches or images found (expected {EXPECTED})")
    test_labels = None if pools["test"] is None else pools["test"].labels
    chosen = standard_splits(pools["train"].labels, test_labels, seed=seed, val_fraction=val_fraction, limit=limit)
    splits = {}
    for split, indices in chosen.items():
        if indices is not None:
            pixels, labels = pools["test" if split == "test" else "train"].gray(indices, bad)
            splits[split] = TokenDataset(Packed.from_matrix(pixels[:, :max_len], shift=1), labels)
    return TaskData(
        name="image",
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        vocab_size=BYTE_VOCAB,
        num_classes=len(class_names),
        max_len=max_len,
        class_names=class_names,
        skipped=bad.counts,
        own_splits=tuple(split for split in ("train", "test") if pools[split] is not None and len(pools[split].labels)),
    )
