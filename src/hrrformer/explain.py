"""Attention maps of a trained run: ``hrrformer explain RUN_DIR INPUT... --out DIR``.

An HRR attention head gives one weight per position, w_t = softmax_t(cos(v_t, q_t† ⊛ β)), so a
layer's heads are H vectors over the sequence, not T × T matrices. Reshaped to an image they
show the 2D structure a model learned from a 1D sequence (the paper's Figure 5); over a file's
bytes they show which regions weighed most. What a weight means, honestly: it scales that
position's own value in the attention output (out_t = w_t v_t); it says what the layer
emphasised, not by itself that the prediction depends on it.

For notebooks: :func:`attention_maps` → (layers, heads, B, T), no drawing. For CLS pooling the
CLS token (position 0) is dropped, so the maps align with the input and, per head, sum to
1 − (the CLS token's weight) over the real positions. Softmax-attention models are refused:
their weights are a T × T matrix per head.

The command writes, for each INPUT, into ``--out``:

* ``<name>.weights.npy`` (layers, heads, T), or (layers, heads, H, W) for images, and
  ``<name>.mean.npy`` (T) or (H, W): the mean over layers and heads;
* ``<name>.png``: image tasks (``image``, ``pathfinder``, ``pathx``; INPUT a png/jpg, made
  gray as the loaders do): the input beside a heatmap per layer and head and their mean;
  ``<name>.heatmap.png`` is the mean map alone at the image's own pixel size. Other tasks: a
  strip over the positions (a row per layer and head, and the mean), with the top-k regions
  marked;
* ``<name>.regions.json`` and ``<name>.html`` (sequence tasks): the top-k regions (offset,
  length, weight, and their bytes or tokens); the page highlights the text (text, retrieval,
  imdb-pairs), or shows a hex view of the top regions (binaries);
* ``explain.json``: the inputs, their predictions (single-sequence tasks) and files.

INPUT is a file: an image for image tasks, a file read as bytes for ``text``, ``binaries``,
``retrieval`` and ``imdb-pairs`` (one document: the pair tasks encode each document alone),
and a ListOps expression for ``listops``. ``--average N --data PATH [--split val] [--label L]``
averages the maps of N examples of class L (default: of each class) from the task's data, as in
the paper's figure (``--data`` and ``--split`` are read as by ``hrrformer eval``: ``--split all``
for the whole of it, classes matched by name to the run's); the average is the plain mean, 0
counted at padding, so it is the expected weight at each position. Both documents of a pair count for pair tasks.
"""

from __future__ import annotations

import argparse
import codecs
import html
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import kinds
from .attention import HrrAttention
from .collectives import group_size
from .data.base import DataError, pad_sequences
from .data.files import decode_image, read_prefix, rgb_to_gray
from .data.selection import SPLIT_CHOICES
from .model import Hrrformer, HrrformerEncoder

__all__ = [
    "IMAGE_TASKS",
    "Region",
    "attention_maps",
    "explain_tokens",
    "image_shape",
    "top_regions",
]

#: Tasks whose inputs are images (row-major pixels).
IMAGE_TASKS = ("image", "pathfinder", "pathx")
#: Tasks whose inputs are files read as bytes (tokens byte + 1).
BYTE_TASKS = ("text", "binaries", "retrieval", "imdb-pairs")
#: Byte tasks whose bytes are text (highlighted in the HTML page); the others get a hex view.
TEXT_TASKS = ("text", "retrieval", "imdb-pairs")
_CMAP = "inferno"


# ----------------------------------------------------------------------------- maps
def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP or torch.compile wrapper."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        model = inner if isinstance(inner, nn.Module) else model
    return model


def _encoder_of(model: nn.Module) -> HrrformerEncoder:
    """The HrrformerEncoder of a classifier, a dual encoder, or a DDP / compiled wrapper of one."""
    model = _unwrap(model)
    encoder = model if isinstance(model, HrrformerEncoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, HrrformerEncoder):
        raise TypeError(f"expected an Hrrformer, HrrformerDualEncoder or HrrformerEncoder, got {type(model).__name__}")
    return encoder


def _weighted() -> str:
    """The attention kinds with one weight per position, for messages."""
    return "attention " + " or ".join(k.name for k in kinds.KINDS.values() if k.position_weights)


@contextmanager
def _recording(model: nn.Module) -> Iterator[tuple[HrrformerEncoder, list[HrrAttention]]]:
    """Eval mode, no gradient, and ``record_weights`` on every attention layer; all restored after."""
    encoder = _encoder_of(model)
    layers = [block.attn for block in encoder.blocks]
    for kind in map(kinds.of_layer, layers):
        if not kind.position_weights:
            raise ValueError(f"attention maps need one weight per position ({_weighted()}): {kind.note}")
    group = encoder.sequence_parallel_group
    if group is not None and group_size(group) > 1:
        raise ValueError("attention maps are taken from a plain forward: set sequence_parallel_group to None first")
    missing = object()
    saved = [(a.__dict__.get("record_weights", missing), a.__dict__.get("last_weights", missing)) for a in layers]
    training = model.training
    try:
        model.eval()
        for a in layers:
            a.record_weights = True
            a.__dict__.pop("last_weights", None)
        with torch.no_grad():
            yield encoder, layers
    finally:
        model.train(training)
        for a, (flag, last) in zip(layers, saved):
            for name, value in (("record_weights", flag), ("last_weights", last)):
                if value is missing:
                    a.__dict__.pop(name, None)
                else:
                    a.__dict__[name] = value


def _prepare(model: nn.Module, tokens, key_padding_mask) -> tuple[torch.Tensor, torch.Tensor | None]:
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
        if key_padding_mask is not None:
            key_padding_mask = torch.as_tensor(key_padding_mask)[None]
    device = next(model.parameters()).device
    mask = None if key_padding_mask is None else torch.as_tensor(key_padding_mask).to(device)
    return tokens.to(device), mask


def _collect(encoder: HrrformerEncoder, layers: list[HrrAttention], include_cls: bool) -> np.ndarray:
    w = torch.stack([a.last_weights for a in layers])  # (L, B, h, T')
    w = w.permute(0, 2, 1, 3).float().cpu().numpy()  # (L, h, B, T')
    return w if encoder.cls is None or include_cls else w[..., 1:]


def attention_maps(
    model: nn.Module, tokens, key_padding_mask: torch.Tensor | None = None, *, include_cls: bool = False
) -> np.ndarray:
    """The HRR attention weights w_t of every layer and head: float32 array (layers, heads, B, T).

    ``model``: an Hrrformer, HrrformerDualEncoder (its shared encoder is run on ``tokens``) or
    HrrformerEncoder, with HRR attention. ``tokens``: (B, T) or (T,) integers;
    ``key_padding_mask`` (True = padding) defaults to ``tokens == pad_id`` as in the model.
    Padded positions get 0, and per head the weights sum to 1 over the real positions (for a
    ``causal`` model w_t is normalised over s ≤ t instead). With CLS pooling the CLS token's
    column is dropped unless ``include_cls`` (then T + 1 columns, CLS first).

    The model runs once, in eval mode and without gradient; its mode and the layers'
    ``record_weights`` flags are restored afterwards. Raises ValueError for softmax attention.
    """
    tokens, mask = _prepare(model, tokens, key_padding_mask)
    with _recording(model) as (encoder, layers):
        encoder(tokens, mask)
        return _collect(encoder, layers, include_cls)


def explain_tokens(
    model: nn.Module, tokens, key_padding_mask: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (layers, heads, B, T) as :func:`attention_maps`, class probabilities (B, C) or None).

    One forward gives both for a single-sequence classifier; for a dual encoder (or a bare
    encoder) the probabilities are None, since one document alone has no prediction.
    """
    tokens, mask = _prepare(model, tokens, key_padding_mask)
    with _recording(model) as (encoder, layers):
        if isinstance(_unwrap(model), Hrrformer):
            probs = model(tokens, mask).float().softmax(-1).cpu().numpy()
        else:
            encoder(tokens, mask)
            probs = None
        return _collect(encoder, layers, include_cls=False), probs


# ----------------------------------------------------------------------------- regions
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


# ----------------------------------------------------------------------------- inputs
def image_shape(task: str, length: int) -> tuple[int, int] | None:
    """(H, W) of a square image task's sequence of ``length`` pixels, or None."""
    side = math.isqrt(length)
    return (side, side) if task in IMAGE_TASKS and side * side == length else None


def read_image(task: str, path: str | Path) -> np.ndarray:
    """A png/jpg as (H, W) uint8 gray, as the task's loader makes it (CIFAR: LRA's RGB weights)."""
    if task == "image":
        return rgb_to_gray(decode_image(Path(path), str(path), mode="RGB"))
    return decode_image(Path(path), str(path), mode="L")


@dataclass
class _Input:
    """One sequence to explain: its name, tokens, image (H, W) for image tasks, and raw bytes."""

    name: str
    tokens: torch.Tensor
    image: np.ndarray | None = None
    raw: bytes | None = None
    truncated: bool = False


def read_input(task: str, path: str | Path, max_len: int) -> _Input:
    """INPUT file → tokens as the task's loader makes them (cut to ``max_len``)."""
    path = Path(path)
    if task in IMAGE_TASKS:
        image = read_image(task, path)
        if image.size > max_len:
            raise DataError(f"{path}: {image.shape[1]}×{image.shape[0]} = {image.size} pixels > max_len={max_len}")
        return _Input(path.name, torch.from_numpy(image.reshape(-1).astype(np.int64)) + 1, image=image)
    if task == "listops":
        from .data.listops import tokenize

        try:
            ids = tokenize(path.read_bytes().strip())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: {e}") from e
        return _Input(path.name, torch.from_numpy(ids[:max_len].astype(np.int64)), truncated=len(ids) > max_len)
    try:
        data = read_prefix(path, max_len + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if len(data) == 0:
        raise DataError(f"{path}: empty file")
    raw = data[:max_len].tobytes()
    return _Input(
        path.name, torch.from_numpy(data[:max_len].astype(np.int64)) + 1, raw=raw, truncated=len(data) > max_len
    )


def _region_text(task: str, item: _Input, region: Region) -> str:
    if item.raw is not None:
        chunk = item.raw[region.offset : region.offset + region.length]
        return chunk.decode("utf-8", errors="replace") if task in TEXT_TASKS else chunk.hex(" ")
    if task == "listops":
        from .data.listops import decode

        return decode(item.tokens[region.offset : region.offset + region.length].tolist())
    return ""


# ----------------------------------------------------------------------------- drawing
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _labels(layers: int, heads: int) -> list[str]:
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
    plt = _plt()
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
    plt = _plt()
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
    plt = _plt()
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


def _color(value: float) -> str:
    """A weight scaled to [0, 1] → a CSS background, white to red."""
    v = min(max(value, 0.0), 1.0)
    return f"rgba(220,40,30,{v * 0.85:.2f})"


def _text_spans(raw: bytes, weights: np.ndarray, scale: float, marked: np.ndarray) -> str:
    """The bytes decoded as UTF-8, each character shaded by the largest weight among its bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    spans, start = [], 0
    for i in range(len(raw)):
        text = decoder.decode(raw[i : i + 1], final=i == len(raw) - 1)
        if not text:
            continue
        w = float(weights[start : i + 1].max())
        border = ";outline:1px solid #1565c0" if marked[start : i + 1].any() else ""
        title = f"offset {start}: {w:.3g}"
        spans.append(f'<span style="background:{_color(w / scale)}{border}" title="{title}">{html.escape(text)}</span>')
        start = i + 1
    return "".join(spans)


def _hex_rows(raw: bytes, weights: np.ndarray, scale: float, marked: np.ndarray, start: int, stop: int) -> str:
    lines = []
    for row in range(start - start % 16, stop, 16):
        cells, chars = [], []
        for i in range(row, min(row + 16, len(raw))):
            style = f"background:{_color(float(weights[i]) / scale)}"
            style += ";outline:1px solid #1565c0" if marked[i] else ""
            cells.append(f'<span style="{style}" title="offset {i}: {weights[i]:.3g}">{raw[i]:02x}</span>')
            c = chr(raw[i]) if 32 <= raw[i] < 127 else "."
            chars.append(f'<span style="{style}">{html.escape(c)}</span>')
        lines.append(f"{row:08x}  {' '.join(cells)}  {''.join(chars)}")
    return "\n".join(lines)


def write_html(out: Path, task: str, item: _Input, mean: np.ndarray, regions: list[Region], title: str) -> None:
    """Text: the whole text, shaded by weight, top regions outlined. Binaries: a hex view of each top region."""
    raw = item.raw or b""
    scale = float(mean[: len(raw)].max()) if len(raw) else 1.0
    scale = scale if scale > 0 else 1.0
    marked = np.zeros(len(raw), dtype=bool)
    for r in regions:
        marked[r.offset : r.offset + r.length] = True
    listing = "".join(
        f"<li>offset {r.offset:,}, length {r.length}: weight {r.weight:.4f} ({r.lift:.2f}× uniform)</li>"
        for r in regions
    )
    if task in TEXT_TASKS:
        body = f'<div class="text">{_text_spans(raw, mean, scale, marked)}</div>'
    else:
        views = []
        for rank, r in enumerate(regions, start=1):
            lo, hi = max(0, r.offset - 16), min(len(raw), r.offset + r.length + 16)
            views.append(
                f"<h3>#{rank}: offset {r.offset:,} (0x{r.offset:x})</h3><pre>{_hex_rows(raw, mean, scale, marked, lo, hi)}</pre>"
            )
        body = "".join(views)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
.text{{font-family:monospace;white-space:pre-wrap;line-height:1.5}} pre{{font-size:13px}}</style></head>
<body><h2>{html.escape(title)}</h2>
<p>Background: the mean HRR attention weight over layers and heads (darkest = {scale:.3g}); outlined: the top regions.</p>
<ol>{listing}</ol>{body}</body></html>
"""
    out.write_text(page, encoding="utf-8")


# ----------------------------------------------------------------------------- writing one map
def _safe_stem(name: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "input"
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate


def _save_map(
    out: Path,
    stem: str,
    task: str,
    maps: np.ndarray,
    title: str,
    args: argparse.Namespace,
    item: _Input | None = None,
    image: np.ndarray | None = None,
) -> dict:
    """Write one input's (or one average's) .npy, PNG and, for sequences, regions and HTML.

    ``maps`` (L, h, T); ``image`` (H, W): the picture shown beside an average's maps."""
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
        _plt().imsave(out / f"{stem}.heatmap.png", mean, cmap=_CMAP)
        files["heatmap"] = f"{stem}.heatmap.png"
        return result
    length = len(mean)
    window = args.window or default_window(length)
    regions = top_regions(mean, args.top_k, window)
    unit = "byte offset" if task in BYTE_TASKS else "position"
    draw_strip(out / f"{stem}.png", maps, regions, title, unit)
    listed = []
    for r in regions:
        entry = asdict(r)
        if item is not None:
            entry["content"] = _region_text(task, item, r)
        listed.append(entry)
    (out / f"{stem}.regions.json").write_text(json.dumps(listed, indent=2, ensure_ascii=False) + "\n")
    files["regions"] = f"{stem}.regions.json"
    if item is not None and item.raw is not None:
        write_html(out / f"{stem}.html", task, item, mean, regions, title)
        files["html"] = f"{stem}.html"
    result["regions"] = listed
    return result


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `hrrformer train` (HRR attention)")
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="files to explain: images (image, pathfinder, pathx), files read as bytes (text, binaries, "
        "retrieval, imdb-pairs), or a ListOps expression (listops)",
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--average", type=int, metavar="N", help="also average the maps of N examples per class")
    parser.add_argument("--data", help="data for --average, in the task's format (default: the run's data)")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        help="split for --average, or all (default: val of the run's own data; other data as `hrrformer eval`)",
    )
    parser.add_argument("--label", help="class (index or name) for --average (default: each class)")
    parser.add_argument("--top-k", type=int, default=5, help="regions listed and marked (sequence tasks)")
    parser.add_argument("--window", type=int, help="region width in positions (default: length/128, at least 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _fail(message: str) -> int:
    print(f"hrrformer explain: {message}", file=sys.stderr)
    return 1


def _batched_maps(model: nn.Module, sequences: Sequence[torch.Tensor], batch_size: int):
    """(maps (L, h, T_i) per sequence, probabilities (C,) or None per sequence)."""
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        tokens, mask = pad_sequences(chunk)
        maps, probs = explain_tokens(model, tokens, mask)
        for i, seq in enumerate(chunk):
            yield maps[:, :, i, : len(seq)], None if probs is None else probs[i]


def _explain_inputs(model, config, args, out: Path, used: set[str], class_names: list[str]) -> list[dict]:
    task, max_len = config.task, config.model["max_len"]
    items = [read_input(task, path, max_len) for path in args.inputs]
    results = []
    for path, item, (maps, probs) in zip(
        args.inputs, items, _batched_maps(model, [i.tokens for i in items], args.batch_size)
    ):
        stem = _safe_stem(item.name, used)
        title = f"{item.name}: {task}, {len(item.tokens):,} tokens"
        entry: dict = {"input": str(path), "tokens": len(item.tokens), "truncated": item.truncated}
        if probs is not None:
            best = int(probs.argmax())
            entry["prediction"] = class_names[best]
            entry["probabilities"] = {n: round(float(p), 6) for n, p in zip(class_names, probs)}
            title += f"; predicted {class_names[best]} ({probs[best]:.2f})"
        entry.update(_save_map(out, stem, task, maps, title, args, item))
        results.append(entry)
        _print_entry(entry)
    return results


def _print_entry(entry: dict) -> None:
    head = entry.get("input") or entry.get("average")
    note = f"\tpredicted {entry['prediction']}" if "prediction" in entry else ""
    print(f"{head}\t{entry['files']['figure']}{note}")
    for rank, r in enumerate(entry.get("regions", []), start=1):
        content = f"\t{r['content']!r}" if r.get("content") else ""
        print(
            f"  #{rank}\toffset {r['offset']:,}\tlength {r['length']}\tweight {r['weight']:.4f} ({r['lift']:.2f}×){content}"
        )


def _class_indices(label: str | None, class_names: list[str]) -> list[int]:
    if label is None:
        return list(range(len(class_names)))
    if label in class_names:
        return [class_names.index(label)]
    if label.isdigit() and int(label) < len(class_names):
        return [int(label)]
    raise ValueError(f"--label {label!r}: not a class index or name (classes: {', '.join(class_names)})")


def _explain_average(model, config, args, out: Path, used: set[str]) -> list[dict]:
    from .evaluate import load_for_run

    if (args.data or config.data) is None:
        raise ValueError("--average needs --data (the run records no data path)")
    # The run's own seed and limit: the same split (and sample) as in training, so val was never trained on.
    selected = load_for_run(config, args.data, args.split, own_default="val", limit=config.limit)
    args.split, dataset, class_names = selected.split, selected.dataset, selected.class_names
    labels = np.asarray(dataset.labels)
    results, grid = [], ([], [], [])
    for c in _class_indices(args.label, class_names):
        chosen = np.flatnonzero(labels == c)[: args.average]
        if len(chosen) == 0:
            print(f"hrrformer explain: no {args.split} example of class {class_names[c]}; skipped", file=sys.stderr)
            continue
        if len(chosen) < args.average:
            print(
                f"hrrformer explain: only {len(chosen)} {args.split} examples of class {class_names[c]}",
                file=sys.stderr,
            )
        sequences = []
        for i in chosen:
            seq = dataset[int(i)][0]
            sequences.extend(seq if isinstance(seq, tuple | list) else [seq])
        length = max(len(s) for s in sequences)
        total = None
        for maps, _ in _batched_maps(model, sequences, args.batch_size):
            padded = np.zeros((*maps.shape[:2], length), dtype=np.float64)
            padded[..., : maps.shape[-1]] = maps
            total = padded if total is None else total + padded
        average = (total / len(sequences)).astype(np.float32)
        shape = image_shape(config.task, length)
        image = None
        if shape is not None and all(len(s) == length for s in sequences):
            image = (torch.stack(sequences).double().mean(0).numpy() - 1).reshape(shape)
            grid[0].append(image)
            grid[1].append(average.reshape(*average.shape[:2], *shape))
            grid[2].append(class_names[c])
        stem = _safe_stem(f"average-{class_names[c]}", used)
        title = f"{config.task}: mean of {len(sequences)} {args.split} maps of class {class_names[c]}"
        entry = {"average": class_names[c], "examples": len(chosen), "maps": len(sequences), "split": args.split}
        entry.update(_save_map(out, stem, config.task, average, title, args, image=image))
        results.append(entry)
        _print_entry(entry)
    if len(grid[2]) > 1:
        name = "average.png"
        title = f"{config.task}: HRR attention weights averaged over {args.average} {args.split} images per class"
        draw_class_grid(out / name, *grid, title)
        print(f"all classes\t{name}")
    return results


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .train import load_run, resolve_device

    if not args.inputs and not args.average:
        return _fail("give INPUT files, or --average N (with --data)")
    if args.average is not None and args.average < 1:
        return _fail("--average must be ≥ 1")
    if args.top_k < 0 or (args.window is not None and args.window < 1) or args.batch_size < 1:
        return _fail("--top-k must be ≥ 0, --window and --batch-size ≥ 1")
    try:
        config, model = load_run(args.run_dir, resolve_device(args.device))
    except (ValueError, CheckpointError) as e:
        return _fail(str(e))
    kind = kinds.get(config.attention)
    if not kind.position_weights:
        return _fail(f"{args.run_dir}: attention maps need one weight per position ({_weighted()}): {kind.note}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    class_names = config.class_names or [str(i) for i in range(config.model.get("num_classes", 2))]
    used: set[str] = set()
    summary: dict = {"run": str(args.run_dir), "task": config.task, "inputs": [], "averages": []}
    try:
        if args.inputs:
            summary["inputs"] = _explain_inputs(model, config, args, out, used, class_names)
        if args.average:
            summary["averages"] = _explain_average(model, config, args, out, used)
    except ValueError as e:  # DataError included
        return _fail(str(e))
    (out / "explain.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0
