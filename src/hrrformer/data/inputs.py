"""One input file → the tokens the task's loader would make of it (``hrrformer explain`` and ``predict``).

Images (:data:`IMAGE_TASKS`) are decoded and made gray as the loaders do, a token per pixel
(value + 1); a ListOps file holds one expression; every other task's file is read as bytes
(gzip decompressed on the fly, never executed), a token per byte (byte + 1). Sequences are cut
to the run's ``max_len``, as in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import DataError
from .files import decode_image, read_prefix, rgb_to_gray
from .listops import tokenize

__all__ = [
    "BYTE_TASKS",
    "IMAGE_TASKS",
    "EmptyInput",
    "InputFile",
    "image_shape",
    "read_bytes",
    "read_image",
    "read_input",
]

#: Tasks whose inputs are images (row-major pixels).
IMAGE_TASKS = ("image", "pathfinder", "pathx")
#: Tasks whose inputs are files read as bytes (tokens byte + 1).
BYTE_TASKS = ("text", "binaries", "retrieval", "imdb-pairs")


class EmptyInput(DataError):
    """The input file holds no bytes."""


@dataclass
class InputFile:
    """One sequence read from a file: its name, tokens, image (H, W) for image tasks, and raw bytes
    (the ones kept, for byte tasks); ``truncated`` when the file was longer than ``max_len``."""

    name: str
    tokens: torch.Tensor
    image: np.ndarray | None = None
    raw: bytes | None = None
    truncated: bool = False


def read_bytes(path: str | Path, max_len: int) -> InputFile:
    """A file's first ``max_len`` bytes as tokens byte + 1 (gzip decompressed on the fly).

    Reads at most ``max_len + 1`` bytes, whatever the file's size. Raises OSError when the file
    cannot be read (missing, not a regular file, corrupt gzip) and :class:`EmptyInput` when it
    is empty."""
    data = read_prefix(path, max_len + 1)
    if len(data) == 0:
        raise EmptyInput(f"{path}: empty file")
    kept = data[:max_len]
    return InputFile(
        Path(path).name, torch.from_numpy(kept.astype(np.int64)) + 1, raw=kept.tobytes(), truncated=len(data) > max_len
    )


def image_shape(task: str, length: int) -> tuple[int, int] | None:
    """(H, W) of a square image task's sequence of ``length`` pixels, or None."""
    side = math.isqrt(length)
    return (side, side) if task in IMAGE_TASKS and side * side == length else None


def read_image(task: str, path: str | Path) -> np.ndarray:
    """A png/jpg as (H, W) uint8 gray, as the task's loader makes it (CIFAR: LRA's RGB weights)."""
    if task == "image":
        return rgb_to_gray(decode_image(Path(path), str(path), mode="RGB"))
    return decode_image(Path(path), str(path), mode="L")


def read_input(task: str, path: str | Path, max_len: int) -> InputFile:
    """An input file → tokens as the task's loader makes them (cut to ``max_len``).

    An image for image tasks, an expression for ``listops``, bytes otherwise. Every failure is a
    DataError naming the file."""
    path = Path(path)
    if task in IMAGE_TASKS:
        image = read_image(task, path)
        if image.size > max_len:
            raise DataError(f"{path}: {image.shape[1]}×{image.shape[0]} = {image.size} pixels > max_len={max_len}")
        return InputFile(path.name, torch.from_numpy(image.reshape(-1).astype(np.int64)) + 1, image=image)
    if task == "listops":
        try:
            ids = tokenize(path.read_bytes().strip())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: {e}") from e
        return InputFile(path.name, torch.from_numpy(ids[:max_len].astype(np.int64)), truncated=len(ids) > max_len)
    try:
        return read_bytes(path, max_len)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
