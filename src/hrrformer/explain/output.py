"""The files of one map: ``.weights.npy``, ``.mean.npy``, the PNG, and for sequences regions and HTML."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..data.inputs import BYTE_TASKS, IMAGE_TASKS, InputFile, image_shape
from .draw import draw_image_maps, draw_strip, save_heatmap
from .page import write_html
from .regions import default_window, region_text, top_regions

__all__ = ["safe_stem", "save_map"]


def safe_stem(name: str, used: set[str]) -> str:
    """A file-name stem for ``name``, not among ``used`` (a -2, -3 … suffix), then added to it."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "input"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate


def save_map(
    out: Path,
    stem: str,
    task: str,
    maps: np.ndarray,
    title: str,
    *,
    top_k: int,
    window: int | None,
    item: InputFile | None = None,
    image: np.ndarray | None = None,
) -> dict:
    """Write one input's (or one average's) .npy, PNG and, for sequences, regions and HTML.

    ``maps`` (L, h, T); ``image`` (H, W): the picture shown beside an average's maps; ``top_k``
    regions of ``window`` positions (None: :func:`default_window`). Returns the files written
    and the regions."""
    files: dict = {}
    shape = image_shape(task, maps.shape[-1]) if task in IMAGE_TASKS else None
    if item is not None and item.image is not None:
        shape = item.image.shape
    mean = maps.mean((0, 1))
    if shape is not None:
        maps = maps.reshape(*maps.shape[:2], *shape)
        mean = mean.reshape(shape)
    np.save(out / f"{stem}.weights.npy", maps)
    np.save(out / f"{stem}.mean.npy", mean)
    files.update(weights=f"{stem}.weights.npy", mean=f"{stem}.mean.npy", figure=f"{stem}.png")
    result: dict = {"files": files}
    if shape is not None:
        if item is None and image is not None:
            np.save(out / f"{stem}.input.npy", image.astype(np.float32))
            files["input"] = f"{stem}.input.npy"
        image = item.image if item is not None else image
        draw_image_maps(out / f"{stem}.png", image, maps, title)
        save_heatmap(out / f"{stem}.heatmap.png", mean)
        files["heatmap"] = f"{stem}.heatmap.png"
        return result
    length = len(mean)
    regions = top_regions(mean, top_k, window or default_window(length))
    unit = "byte offset" if task in BYTE_TASKS else "position"
    draw_strip(out / f"{stem}.png", maps, regions, title, unit)
    listed = []
    for r in regions:
        entry = asdict(r)
        if item is not None:
            entry["content"] = region_text(task, item, r)
        listed.append(entry)
    (out / f"{stem}.regions.json").write_text(json.dumps(listed, indent=2, ensure_ascii=False) + "\n")
    files["regions"] = f"{stem}.regions.json"
    if item is not None and item.raw is not None:
        write_html(out / f"{stem}.html", task, item, mean, regions, title)
        files["html"] = f"{stem}.html"
    result["regions"] = listed
    return result
