"""Pictures of attention maps (matplotlib, the ``plot`` extra): image heatmaps, a class grid, strips.

Image maps are shown in units of a uniform map's weight (weight × pixels), on one colour scale
per figure; a sequence's maps are a strip over the positions with the top regions marked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.optional import pyplot
from .regions import Region

__all__ = ["draw_class_grid", "draw_image_maps", "draw_strip", "save_heatmap"]

_CMAP = "inferno"


def _labels(layers: int, heads: int) -> list[str]:
    """A panel label per layer and head ("head j" alone for one layer)."""
    return [
        f"layer {i + 1} head {j + 1}" if layers > 1 else f"head {j + 1}" for i in range(layers) for j in range(heads)
    ]


def _relative(maps: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Maps (…, H, W) in units of a uniform map's weight (weight × H·W), and a colour range shared
    by all of them (2nd to 98th percentile, so one hot pixel does not wash the rest out)."""
    scaled = maps * (maps.shape[-1] * maps.shape[-2])
    lo, hi = np.percentile(scaled, [2, 98]) if scaled.size else (0.0, 1.0)
    return scaled, float(lo), float(max(hi, lo + 1e-6))


_SCALE_LABEL = "weight × pixels (1 = uniform)"


def draw_image_maps(out: Path, image: np.ndarray | None, maps: np.ndarray, title: str) -> None:
    """The input (gray) beside a heatmap per layer and head and their mean, on one colour scale.

    ``maps`` (L, h, H, W)."""
    plt = pyplot()
    layers, heads = maps.shape[:2]
    scaled, lo, hi = _relative(maps)
    panels = [(label, m) for label, m in zip(_labels(layers, heads), scaled.reshape(-1, *maps.shape[2:]))]
    if layers * heads > 1:
        panels.append(("mean", scaled.mean((0, 1))))
    if image is not None:
        panels.insert(0, ("input", image))
    cols = min(len(panels), 6)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.9 * cols + 0.8, 2.0 * rows + 0.3), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    shown = None
    for ax, (label, data) in zip(axes.flat, panels):
        if label == "input":
            ax.imshow(data, cmap="gray", interpolation="nearest")
        else:
            shown = ax.imshow(data, cmap=_CMAP, interpolation="nearest", vmin=lo, vmax=hi)
        ax.set_title(label, fontsize=8)
    fig.colorbar(shown, ax=axes, shrink=0.8, pad=0.02).set_label(_SCALE_LABEL, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def draw_class_grid(out: Path, inputs: list[np.ndarray], maps: list[np.ndarray], names: list[str], title: str) -> None:
    """Columns = classes; rows = the average input, each layer and head's average map, and their
    mean, all maps on one colour scale. ``maps``: one (L, h, H, W) array per class."""
    plt = pyplot()
    layers, heads = maps[0].shape[:2]
    row_labels = ["input", *_labels(layers, heads)] + (["mean"] if layers * heads > 1 else [])
    scaled, lo, hi = _relative(np.stack(maps))
    cols, rows = len(names), len(row_labels)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.05 * cols + 1.2, 1.1 * rows + 0.4), squeeze=False, layout="constrained"
    )
    shown = None
    for c, (image, m, name) in enumerate(zip(inputs, scaled, names)):
        panels = [image, *m.reshape(-1, *m.shape[2:])] + ([m.mean((0, 1))] if layers * heads > 1 else [])
        for r, data in enumerate(panels):
            ax = axes[r, c]
            if r == 0:
                ax.imshow(data, cmap="gray", interpolation="nearest")
                ax.set_title(name, fontsize=8)
            else:
                shown = ax.imshow(data, cmap=_CMAP, interpolation="nearest", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.colorbar(shown, ax=axes[1:, :], shrink=0.9, pad=0.01).set_label(_SCALE_LABEL, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=72)
    plt.close(fig)


def draw_strip(out: Path, maps: np.ndarray, regions: list[Region], title: str, unit: str) -> None:
    """A strip over the positions: a row per layer and head and the mean, then the mean as a curve
    with the top regions shaded and numbered. ``maps`` (L, h, T)."""
    plt = pyplot()
    layers, heads, length = maps.shape
    rows = maps.reshape(-1, length)
    labels = _labels(layers, heads)
    if len(rows) > 1:
        rows = np.concatenate([rows, maps.mean((0, 1))[None]])
        labels.append("mean")
    mean = maps.mean((0, 1))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 1.2 + 0.28 * len(rows) + 1.6), sharex=True, height_ratios=[0.3 * len(rows) + 0.3, 1.6]
    )
    top.imshow(rows, aspect="auto", cmap=_CMAP, interpolation="nearest", extent=(0, length, len(rows), 0))
    top.set_yticks(np.arange(len(rows)) + 0.5, labels, fontsize=7)
    bottom.plot(np.arange(length), mean, lw=0.7, color="black")
    if length:
        bottom.axhline(mean.sum() / length, color="gray", lw=0.6, ls="--", label="uniform")
    for rank, r in enumerate(regions, start=1):
        bottom.axvspan(r.offset, r.offset + r.length, color="tab:red", alpha=0.25, lw=0)
        where = (r.offset + r.length / 2, 1.0)
        bottom.annotate(f"#{rank}", where, xycoords=("data", "axes fraction"), fontsize=7, ha="center", color="tab:red")
        top.axvline(r.offset, color="tab:cyan", lw=0.6)
        top.axvline(r.offset + r.length, color="tab:cyan", lw=0.6)
    bottom.set_xlim(0, max(length, 1))
    bottom.set_xlabel(unit)
    bottom.set_ylabel("mean weight", fontsize=8)
    if length:
        bottom.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def save_heatmap(out: Path, mean: np.ndarray) -> None:
    """The mean map (H, W) alone, at the image's own pixel size."""
    pyplot().imsave(out, mean, cmap=_CMAP)
