"""The HTML page of a byte input: its text shaded by weight, or a hex view of its top regions."""

from __future__ import annotations

import codecs
import html
from pathlib import Path

import numpy as np

from ..data.inputs import InputFile
from .regions import TEXT_TASKS, Region

__all__ = ["write_html"]


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
    """Rows of 16 bytes covering [start, stop): offset, shaded hex cells, shaded printable characters."""
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


def write_html(out: Path, task: str, item: InputFile, mean: np.ndarray, regions: list[Region], title: str) -> None:
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
