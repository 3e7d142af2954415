"""The heaviest regions of a map: :func:`top_regions`, and what an input holds there.

A region is a window of the sequence (bytes for byte tasks); its weight is the sum of the map
over it and its lift that weight over a uniform map's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.inputs import InputFile
from ..data.listops import decode

__all__ = ["TEXT_TASKS", "Region", "default_window", "region_text", "top_regions"]

#: Byte tasks whose bytes are text (highlighted in the HTML page); the others get a hex view.
TEXT_TASKS = ("text", "retrieval", "imdb-pairs")


@dataclass
class Region:
    """A window of the sequence: ``offset`` and ``length`` in positions (bytes for byte tasks),
    ``weight`` the sum of the map over it, ``lift`` that weight over a uniform map's."""

    offset: int
    length: int
    weight: float
    lift: float


def top_regions(weights: np.ndarray, k: int, window: int, length: int | None = None) -> list[Region]:
    """The ``k`` non-overlapping windows of ``window`` positions with the most weight, heaviest first.

    ``weights`` (T,) is one map (e.g. the mean over heads); only its first ``length`` positions
    (default all) are real. Greedy: take the heaviest window, exclude the windows overlapping it,
    repeat.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    n = len(w) if length is None else min(length, len(w))
    if n == 0 or k <= 0:
        return []
    window = max(1, min(window, n))
    total = float(w[:n].sum())
    sums = np.convolve(w[:n], np.ones(window), mode="valid")  # sums[i] = Σ w[i : i + window]
    regions = []
    for _ in range(k):
        if not np.isfinite(sums).any():
            break
        i = int(np.nanargmax(np.where(np.isfinite(sums), sums, -np.inf)))
        weight = float(sums[i])
        uniform = total * window / n
        regions.append(Region(i, window, weight, weight / uniform if uniform > 0 else float("nan")))
        sums[max(0, i - window + 1) : i + window] = -np.inf
    return regions


def default_window(length: int) -> int:
    """Region width for a sequence of ``length`` positions: about 1/128 of it, at least 8."""
    return max(8, length // 128)


def region_text(task: str, item: InputFile, region: Region) -> str:
    """What ``item`` holds in ``region``: text (UTF-8) or hex for byte tasks, the tokens for ListOps."""
    if item.raw is not None:
        chunk = item.raw[region.offset : region.offset + region.length]
        return chunk.decode("utf-8", errors="replace") if task in TEXT_TASKS else chunk.hex(" ")
    if task == "listops":
        return decode(item.tokens[region.offset : region.offset + region.length].tolist())
    return ""
