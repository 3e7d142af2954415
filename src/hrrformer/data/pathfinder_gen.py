"""Generator for the Pathfinder task (Linsley et al., NeurIPS 2018; LRA's Pathfinder / Path-X).

Each image holds curvy dashed paths ("snakes") made of short line segments ("paddles") with
gaps between them, and two circular markers. The label is 1 when the two markers sit at the
two ends of one snake and 0 when they sit on two different snakes.

Construction follows the official generator (``drewlinsley/pathfinder``, ``snakes2.py``), but
in continuous coordinates: paddles are exact segments kept in a spatial hash (Python floats,
where numpy's per-call overhead would dominate), and only the final rendering is vectorised
numpy. That makes about 200 images/s at 32×32 on one core (the original: about 10).

* two target snakes start from seeds ``seed_distance`` apart (the first seed drawn from the
  central square at least ``2 * seed_distance`` from the border) and grow alternately,
  ``contour_length`` paddles each; a failed growth restarts the pair;
* a paddle has length ``paddle_length``; the next one starts ``margin`` past the previous
  head and ``margin`` out along its own direction (so consecutive paddles are separated by
  a gap of about ``2 * margin``); its direction turns by δ from the previous one with weight
  ``cos²(min(continuity·|δ|, π/2))`` (``candidates`` directions evenly spread over the
  turns of positive weight, with a random common offset), among directions where the paddle
  stays inside the ``padding`` border and keeps ``clearance`` (default ``2 * margin``) from
  every paddle already drawn except its own predecessor (the official generator's
  non-overlap of margin-dilated paddle masks);
* then ``num_distractors`` distractor snakes of ``distractor_length`` paddles (each tried a
  few times, skipped when it does not fit), and optionally ``single_paddles`` lone paddles;
* the origin marker goes on the seed end of one target snake, the terminal marker on the far
  end of the same snake (label 1) or of the other one (label 0), so both classes have one
  marker near the centre and one at the end of a full-length snake.

Intensities as in the original: target paddles ``snake_contrast * paddle_contrast``,
distractors ``snake_contrast``, markers 1; lines are anti-aliased analytically (pixel-box
coverage of a line of width ``paddle_thickness``), markers likewise, overlaps take the
maximum, and the image is scaled so its maximum is 255 (``scipy.misc.imsave``'s bytescale).

LRA's parameters (``lra_benchmarks/data/pathfinder.py``) are the presets of
:meth:`PathfinderParams.lra`: at 32×32 paddle length 2, thickness 0.5, margin 1, padding 1,
contour length 14, distractor length ``14 // 3``, ``20 // 4`` distractors, marker radius
1.5, continuity 1.0, seed distance 7, snake contrast 2, paddle contrast 0.75; 64, 128
(Path-X) and 256 use the parameters listed there (paddle length 5, the script default).

Output layout (LRA's):

``OUT/curv_contour_length_14/imgs/<b>/sample_<i>.png``   8-bit grayscale PNGs
``OUT/curv_contour_length_14/metadata/<b>.npy``          TEXT, one line per image of folder b

where ``i`` counts from 0 within folder ``b`` (``per_folder`` images each). A metadata line
has the fields of ``snakes2.accumulate_meta``, separated by single spaces::

    imgs/<b> sample_<i>.png <i> <label> <continuity> <contour_length> <distractor_length>
    <paddle_length> <paddle_thickness> <margin> <number of paddle contrasts>

so the label is the 4th field. Contour length 6 is written to ``curv_baseline`` as in LRA.
``OUT/preview.png`` (and ``preview.txt``) show the first ``preview`` samples, upscaled, with
a green (label 1) or red (label 0) frame.

Labels are balanced (each consecutive pair of samples holds one of each), and sample ``g``
depends only on ``seed`` and ``g``. With LRA's 128×128 parameters (margins 2–3, paddle length
5, continuity 1.8) most snake pairs run into the border before 14 paddles and are redrawn,
as in the original, so Path-X is several times slower per image; ``workers`` runs processes.

Command line: ``hrrformer data pathfinder --size 32|128 --n N --out DIR [--workers W]``.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .optional import pil_image, require

__all__ = [
    "PathfinderParams",
    "generate_pathfinder",
    "render_sample",
    "subset_dir_name",
]


@dataclass(frozen=True)
class PathfinderParams:
    """Everything that shapes one image. Lengths are in pixels of the output image."""

    size: int = 32
    contour_length: int = 14
    paddle_length: float = 2.0
    paddle_thickness: float = 0.5
    margins: tuple[int, ...] = (1,)  # one drawn per image, as paddle_margin_list
    padding: float = 1.0
    seed_distance: float = 7.0
    marker_radius: float = 1.5
    continuity: float = 1.0
    distractor_length: int = 4
    num_distractors: int = 5
    single_paddles: int = 0
    snake_contrast: float = 2.0
    paddle_contrast: float = 0.75
    clearance: float | None = None  # None: 2 * margin
    candidates: int = 16  # directions tried per growth step
    distractor_tries: int = 5
    max_pair_tries: int = 20_000

    @classmethod
    def lra(cls, size: int = 32, contour_length: int = 14) -> PathfinderParams:
        """LRA's parameters for ``size`` 32, 64, 128 (Path-X) or 256; other sizes scale the
        32×32 ones linearly."""
        dl = max(contour_length // 3, 1)
        if size == 32:
            return cls(size=32, contour_length=contour_length, distractor_length=dl, num_distractors=20 // dl)
        presets = {
            64: dict(margins=(1,), padding=1, seed_distance=12, marker_radius=2.5, paddle_thickness=1.0,
                     continuity=1.8, n=22, snake_contrast=0.8),
            128: dict(margins=(2, 3), padding=1, seed_distance=20, marker_radius=3.0, paddle_thickness=1.5,
                      continuity=1.8, n=35, snake_contrast=0.9),
            256: dict(margins=(3,), padding=22, seed_distance=27, marker_radius=5.0, paddle_thickness=2.0,
                      continuity=1.8, n=30, snake_contrast=1.0),
        }  # fmt: skip
        if size in presets:
            p = dict(presets[size])
            return cls(
                size=size,
                contour_length=contour_length,
                paddle_length=5.0,
                distractor_length=dl,
                num_distractors=p.pop("n") // dl,
                paddle_contrast=1.0,
                **p,
            )
        s = size / 32
        base = cls.lra(32, contour_length)
        return replace(
            base,
            size=size,
            paddle_length=base.paddle_length * s,
            paddle_thickness=base.paddle_thickness * s,
            margins=tuple(max(1, round(m * s)) for m in base.margins),
            padding=base.padding * s,
            seed_distance=base.seed_distance * s,
            marker_radius=base.marker_radius * s,
        )


def subset_dir_name(contour_length: int) -> str:
    """LRA's folder for a contour length: ``curv_baseline`` for 6, else ``curv_contour_length_<n>``."""
    return "curv_baseline" if contour_length == 6 else f"curv_contour_length_{contour_length}"


# ----------------------------------------------------------------------------- geometry


def _point_segment_dist2(py, px, ay, ax, by, bx):
    """Squared distance from points to segments, broadcasting (numpy)."""
    dy, dx = by - ay, bx - ax
    den = dy * dy + dx * dx
    t = np.clip(((py - ay) * dy + (px - ax) * dx) / np.where(den > 0, den, 1.0), 0.0, 1.0)
    ey, ex = py - (ay + t * dy), px - (ax + t * dx)
    return ey * ey + ex * ex


def _pt_seg_d2(py: float, px: float, ay: float, ax: float, by: float, bx: float) -> float:
    dy, dx = by - ay, bx - ax
    den = dy * dy + dx * dx
    t = ((py - ay) * dy + (px - ax) * dx) / den if den > 0 else 0.0
    t = 0.0 if t < 0.0 else 1.0 if t > 1.0 else t
    ey, ex = py - ay - t * dy, px - ax - t * dx
    return ey * ey + ex * ex


def _seg_seg_d2(s: tuple, q: tuple) -> float:
    """Squared distance between two segments ``(ay, ax, by, bx)``: 0 if they cross, else the
    smallest endpoint-to-segment distance."""
    ay, ax, by, bx = s
    cy, cx, dy, dx = q
    uy, ux, vy, vx = by - ay, bx - ax, dy - cy, dx - cx
    o1 = uy * (cx - ax) - ux * (cy - ay)
    o2 = uy * (dx - ax) - ux * (dy - ay)
    if o1 * o2 < 0:
        o3 = vy * (ax - cx) - vx * (ay - cy)
        o4 = vy * (bx - cx) - vx * (by - cy)
        if o3 * o4 < 0:
            return 0.0
    return min(
        _pt_seg_d2(ay, ax, cy, cx, dy, dx),
        _pt_seg_d2(by, bx, cy, cx, dy, dx),
        _pt_seg_d2(cy, cx, ay, ax, by, bx),
        _pt_seg_d2(dy, dx, ay, ax, by, bx),
    )


class _Scene:
    """Paddles placed so far, as segments ``(ay, ax, by, bx)`` (a = start, b = far end) with the
    curve each belongs to, in a spatial hash for the clearance test.

    Pure Python on purpose: one growth step touches a handful of paddles, where numpy's
    per-call overhead would dominate.
    """

    def __init__(self, p: PathfinderParams, margin: int, rand):
        self.p = p
        self.rand = rand  # random.Random().random
        self.margin = float(margin)
        self.length = float(p.paddle_length)
        self.clear = float(p.clearance) if p.clearance is not None else 2.0 * margin
        self.clear2 = self.clear**2
        self.lo = float(p.padding)
        self.hi = p.size - 1 - float(p.padding)
        self.cell = self.length + self.clear
        self.segs: list[tuple[float, float, float, float]] = []
        self.owner: list[int] = []
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.keys: list[list[tuple[int, int]]] = []
        half = min(math.pi / (2 * p.continuity), math.pi)  # turns beyond this have weight 0
        self.step = 2 * half / p.candidates
        self.grid = [-half + self.step * k for k in range(p.candidates)]

    def _cell_keys(self, s: tuple) -> list[tuple[int, int]]:
        """Cells met by the segment's bounding box grown by clear / 2: two segments closer
        than ``clear`` share a cell."""
        r, c = self.clear / 2, self.cell
        y0, y1 = (s[0], s[2]) if s[0] <= s[2] else (s[2], s[0])
        x0, x1 = (s[1], s[3]) if s[1] <= s[3] else (s[3], s[1])
        return [
            (i, j)
            for i in range(math.floor((y0 - r) / c), math.floor((y1 + r) / c) + 1)
            for j in range(math.floor((x0 - r) / c), math.floor((x1 + r) / c) + 1)
        ]

    def add(self, s: tuple, curve: int) -> int:
        j = len(self.segs)
        self.segs.append(s)
        self.owner.append(curve)
        keys = self._cell_keys(s)
        self.keys.append(keys)
        for key in keys:
            self.cells.setdefault(key, []).append(j)
        return j

    def rollback(self, n: int) -> None:
        """Remove the paddles added after the first ``n``."""
        while len(self.segs) > n:
            for key in self.keys.pop():
                self.cells[key].pop()  # j is the last entry of each of its cells
            self.segs.pop()
            self.owner.pop()

    def fits(self, s: tuple, skip: int = -1) -> bool:
        """Inside the border and at least ``clear`` from every paddle but ``skip``."""
        lo, hi = self.lo, self.hi
        if not (lo <= s[0] <= hi and lo <= s[1] <= hi and lo <= s[2] <= hi and lo <= s[3] <= hi):
            return False
        seen = set()
        segs, cells, clear2 = self.segs, self.cells, self.clear2
        for key in self._cell_keys(s):
            for j in cells.get(key, ()):
                if j != skip and j not in seen:
                    seen.add(j)
                    if _seg_seg_d2(s, segs[j]) < clear2:
                        return False
        return True

    def seed(self, curve: int, tries: int = 32) -> tuple[int, float] | None:
        """A first paddle anywhere free; returns (paddle index, direction) or None."""
        rand, lo, span, L = self.rand, self.lo, self.hi - self.lo, self.length
        for _ in range(tries):
            ty, tx = lo + span * rand(), lo + span * rand()
            theta = math.pi * (2 * rand() - 1)
            s = (ty, tx, ty + L * math.sin(theta), tx + L * math.cos(theta))
            if self.fits(s):
                return self.add(s, curve), theta
        return None

    def extend(self, last: int, theta: float, curve: int) -> tuple[int, float] | None:
        """Grow the snake whose last paddle is ``last`` (direction ``theta``) by one paddle.

        Directions: a grid of ``candidates`` turns over (−π/2c, π/2c) shifted by one uniform
        offset, weighted ``cos²(c·δ)``. One is drawn by weight and checked; a misfit gets
        weight 0 and the draw is repeated, which samples the weights restricted to the
        directions that fit. None when none fits.
        """
        rand, c = self.rand, self.p.continuity
        off = rand() * self.step
        deltas = [g + off for g in self.grid]
        weights = [math.cos(c * d) ** 2 for d in deltas]
        total = sum(weights)
        m, r1 = self.margin, self.margin + self.length
        hy, hx = self.segs[last][2], self.segs[last][3]
        py, px = hy + m * math.sin(theta), hx + m * math.cos(theta)  # the pivot
        while total > 1e-9:
            x = rand() * total
            k = 0
            for k, w in enumerate(weights):  # noqa: B007
                x -= w
                if x < 0:
                    break
            if weights[k] == 0.0:  # rounding ran past the last positive weight
                k = max(i for i, w in enumerate(weights) if w > 0)
            angle = theta + deltas[k]
            sy, sx = math.sin(angle), math.cos(angle)
            s = (py + m * sy, px + m * sx, py + r1 * sy, px + r1 * sx)
            if self.fits(s, skip=last):
                return self.add(s, curve), angle
            total -= weights[k]
            weights[k] = 0.0
        return None

    def grow(self, curve: int, length: int) -> list[int] | None:
        """A whole free-standing snake of ``length`` paddles, or None (scene unchanged)."""
        start = len(self.segs)
        got = self.seed(curve)
        if got is None:
            return None
        idx, theta = got
        out = [idx]
        for _ in range(length - 1):
            got = self.extend(idx, theta, curve)
            if got is None:
                self.rollback(start)
                return None
            idx, theta = got
            out.append(idx)
        return out

    def two_snakes(self) -> tuple[list[int], list[int]] | None:
        """The two target snakes (curves 1 and 2) from seeds ``seed_distance`` apart, grown
        alternately; None (scene to be discarded) when either gets stuck."""
        p, rand, L, sd = self.p, self.rand, self.length, float(self.p.seed_distance)
        c_lo, c_hi = 2 * sd, p.size - 1 - 2 * sd
        if c_lo > c_hi:
            c_lo = c_hi = (p.size - 1) / 2
        for _ in range(8):
            t1y, t1x = c_lo + (c_hi - c_lo) * rand(), c_lo + (c_hi - c_lo) * rand()
            th1, phi, th2 = (math.pi * (2 * rand() - 1) for _ in range(3))
            t2y, t2x = t1y + sd * math.sin(phi), t1x + sd * math.cos(phi)
            s1 = (t1y, t1x, t1y + L * math.sin(th1), t1x + L * math.cos(th1))
            s2 = (t2y, t2x, t2y + L * math.sin(th2), t2x + L * math.cos(th2))
            if self.fits(s1):
                i1 = self.add(s1, 1)
                if self.fits(s2):
                    break
                self.rollback(0)
        else:
            return None
        i2 = self.add(s2, 2)
        snakes, last, theta = ([i1], [i2]), [i1, i2], [th1, th2]
        for _ in range(p.contour_length - 1):
            for j in range(2):
                got = self.extend(last[j], theta[j], j + 1)
                if got is None:
                    return None
                last[j], theta[j] = got
                snakes[j].append(got[0])
        return snakes


# ----------------------------------------------------------------------------- rendering


def _line_coverage(segs: np.ndarray, size: int, half_width: float, length: float):
    """Per-paddle anti-aliased patches: (rows, cols, coverage), each of shape (P, S, S).

    Coverage of a pixel by a line of width ``2 * half_width``: the box-filtered profile
    ``clip(0.5 + w - d, 0, min(2w, 1))`` of the distance d from the pixel centre.
    """
    reach = half_width + 0.5
    s = math.ceil(length + 2 * reach) + 2
    ay, ax, by, bx = (segs[:, i] for i in range(4))
    oy = np.floor(np.minimum(ay, by) - reach).astype(np.int64)
    ox = np.floor(np.minimum(ax, bx) - reach).astype(np.int64)
    ar = np.arange(s)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = (ox[:, None] + ar)[:, None, :]
    d2 = _point_segment_dist2(rows.astype(float), cols.astype(float), *(v[:, None, None] for v in (ay, ax, by, bx)))
    cov = np.clip(0.5 + half_width - np.sqrt(d2), 0.0, min(2 * half_width, 1.0))
    rows, cols = np.broadcast_to(rows, cov.shape), np.broadcast_to(cols, cov.shape)
    keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size) & (cov > 0)
    return rows, cols, cov, keep


def _disk(size: int, center, radius: float) -> np.ndarray:
    y = np.arange(size, dtype=float)[:, None] - center[0]
    x = np.arange(size, dtype=float)[None, :] - center[1]
    return np.clip(radius + 0.5 - np.sqrt(y * y + x * x), 0.0, 1.0)


def render_sample(
    rng: np.random.Generator,
    params: PathfinderParams | None = None,
    *,
    label: int | None = None,
    return_masks: bool = False,
):
    """One Pathfinder image: ``(image uint8 (size, size), label)``.

    ``label`` None draws it from ``rng``. With ``return_masks=True`` returns
    ``(image, label, info)`` where ``info`` has ``curves`` (int (size, size): 0 background,
    1 and 2 the target snakes, 3… distractors; each pixel the curve covering it most, where
    that coverage is ≥ 0.1), ``markers`` ((2, 2) float, (row, col) of the origin and
    terminal marker centres), ``marker_curves`` (the curve each marker was put on),
    ``segments`` (list per curve id of (n, 4) arrays (ay, ax, by, bx)) and ``margin``.
    """
    p = params if params is not None else PathfinderParams.lra()
    if label is None:
        label = int(rng.integers(2))
    image, label, _, info = _render(rng, p, label, masks=return_masks)
    return (image, label, info) if return_masks else (image, label)


def _render(rng: np.random.Generator, p: PathfinderParams, label: int, masks: bool):
    """(image, label, margin, info or None); see :func:`render_sample`."""
    margin = int(p.margins[int(rng.integers(len(p.margins)))]) if len(p.margins) > 1 else int(p.margins[0])
    origin_idx = int(rng.integers(2))
    rand = random.Random(int(rng.integers(2**63))).random  # geometry runs on Python floats
    for _ in range(p.max_pair_tries):
        scene = _Scene(p, margin, rand)
        targets = scene.two_snakes()
        if targets is not None:
            break
    else:
        raise RuntimeError(f"could not place two snakes in {p.max_pair_tries} tries with {p}")
    curve = 3
    for length, count in ((p.distractor_length, p.num_distractors), (1, p.single_paddles)):
        for _ in range(count):
            for _ in range(p.distractor_tries):
                if scene.grow(curve, length) is not None:
                    curve += 1
                    break

    terminal_idx = origin_idx if label == 1 else 1 - origin_idx
    segs, owner = np.array(scene.segs, dtype=float), np.array(scene.owner)
    origin = segs[targets[origin_idx][0], :2]
    terminal = segs[targets[terminal_idx][-1], 2:]

    contrast = np.where(owner <= 2, p.snake_contrast * p.paddle_contrast, p.snake_contrast)
    rows, cols, cov, keep = _line_coverage(segs, p.size, p.paddle_thickness / 2, p.paddle_length)
    image = np.zeros((p.size, p.size))
    vals = (cov * contrast[:, None, None])[keep]
    np.maximum.at(image, (rows[keep], cols[keep]), vals)
    image = np.maximum(image, _disk(p.size, origin, p.marker_radius))
    image = np.maximum(image, _disk(p.size, terminal, p.marker_radius))
    top = image.max()
    out = (image * (255.0 / top) + 0.5).astype(np.uint8) if top > 0 else image.astype(np.uint8)
    if not masks:
        return out, label, margin, None

    n_curves = int(owner.max()) + 1
    per_curve = np.zeros((n_curves, p.size, p.size))
    idx = np.broadcast_to(owner[:, None, None], cov.shape)
    np.maximum.at(per_curve, (idx[keep], rows[keep], cols[keep]), cov[keep])
    curves = per_curve.argmax(axis=0)
    curves[per_curve.max(axis=0) < 0.1] = 0
    info = {
        "curves": curves,
        "markers": np.stack([origin, terminal]),
        "marker_curves": (origin_idx + 1, terminal_idx + 1),
        "segments": [segs[owner == c] for c in range(n_curves)],
        "margin": margin,
    }
    return out, label, margin, info


# ----------------------------------------------------------------------------- dataset


def _metadata_line(b: int, i: int, label: int, p: PathfinderParams, margin: int) -> str:
    fields = [
        f"imgs/{b}",
        f"sample_{i}.png",
        i,
        label,
        p.continuity,
        p.contour_length,
        p.distractor_length,
        p.paddle_length,
        p.paddle_thickness,
        margin,
        1,
    ]
    return " ".join(str(f) for f in fields)


def _save_preview(out: Path, samples: list[tuple[np.ndarray, int]]) -> None:
    Image, ImageDraw = pil_image(), require("PIL.ImageDraw")

    size = samples[0][0].shape[0]
    scale = max(1, 128 // size)
    cell, frame = size * scale, 4
    ncol = min(4, len(samples))
    nrow = -(-len(samples) // ncol)
    grid = Image.new("RGB", (ncol * (cell + 2 * frame), nrow * (cell + 2 * frame)), (40, 40, 40))
    draw = ImageDraw.Draw(grid)
    for k, (img, label) in enumerate(samples):
        r, c = divmod(k, ncol)
        x0, y0 = c * (cell + 2 * frame), r * (cell + 2 * frame)
        colour = (0, 200, 0) if label == 1 else (220, 0, 0)
        draw.rectangle([x0, y0, x0 + cell + 2 * frame - 1, y0 + cell + 2 * frame - 1], fill=colour)
        tile = Image.fromarray(img, mode="L").resize((cell, cell), Image.NEAREST).convert("RGB")
        grid.paste(tile, (x0 + frame, y0 + frame))
        draw.text((x0 + frame + 2, y0 + frame + 1), f"{k}:{label}", fill=colour)
    grid.save(out / "preview.png")
    lines = [
        f"{k} label={label} {'same curve' if label else 'different curves'}" for k, (_, label) in enumerate(samples)
    ]
    (out / "preview.txt").write_text(
        "preview.png: first samples, row by row; frame green = label 1, red = label 0\n" + "\n".join(lines) + "\n"
    )


def _balanced_labels(seed: int, n: int) -> np.ndarray:
    """Labels of samples 0 … n-1: each pair (2j, 2j+1) is (0, 1) or (1, 0), by a coin drawn
    from ``default_rng((seed, 1))``, so any even prefix is exactly balanced and a prefix does
    not depend on ``n``."""
    first = (np.random.default_rng((seed, 1)).random(-(-n // 2)) < 0.5).astype(np.int64)
    return np.stack([first, 1 - first], axis=1).reshape(-1)[:n]


def _make_chunk(task: tuple) -> tuple[list[str], list[tuple[np.ndarray, int]]]:
    """Render and write images ``i0 … i0 + len(labels) - 1`` of folder ``b``; returns their
    metadata lines and the first ``keep`` (image, label) pairs for the preview."""
    Image = pil_image()

    root, p, seed, b, i0, per_folder, labels, keep = task
    folder = Path(root) / "imgs" / str(b)
    lines, shown = [], []
    for k, label in enumerate(labels):
        i = i0 + k
        rng = np.random.default_rng((seed, 0, b * per_folder + i))
        image, label, margin, _ = _render(rng, p, int(label), masks=False)
        Image.fromarray(image, mode="L").save(folder / f"sample_{i}.png")
        lines.append(_metadata_line(b, i, label, p, margin))
        if len(shown) < keep:
            shown.append((image, label))
    return lines, shown


def generate_pathfinder(
    out_dir: str | os.PathLike,
    *,
    size: int = 32,
    n: int = 1000,
    seed: int = 0,
    contour_length: int = 14,
    progress: bool = True,
    preview: int = 16,
    per_folder: int = 1000,
    workers: int = 1,
    params: PathfinderParams | None = None,
) -> dict:
    """Write ``n`` images and their metadata in LRA's layout under ``out_dir``.

    Labels are balanced in seeded random order (each pair of consecutive samples holds one
    of each; for odd ``n`` the last is a coin toss); sample ``g`` is drawn from its own
    generator ``default_rng((seed, 0, g))``. So sample ``g`` depends only on ``seed`` and
    ``g`` (``per_folder`` only names files; a smaller ``n`` gives a prefix; ``workers``, the
    number of processes, for big sets such as Path-X, changes nothing). ``params`` overrides the LRA preset for ``size`` and
    ``contour_length``. A folder's metadata file is written after all its images. Returns
    ``{"n", "positives", "negatives", "folders", "root", "seconds", "images_per_second"}``.
    """
    p = params if params is not None else PathfinderParams.lra(size, contour_length)
    if n < 0 or per_folder < 1 or workers < 1:
        raise ValueError(f"n={n}, per_folder={per_folder}, workers={workers}")
    out = Path(out_dir)
    root = out / subset_dir_name(p.contour_length)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    labels = _balanced_labels(seed, n)

    chunk = 100 if workers > 1 else per_folder
    tasks, folders = [], {}
    for b in range(-(-n // per_folder)):
        (root / "imgs" / str(b)).mkdir(parents=True, exist_ok=True)
        count = min(per_folder, n - b * per_folder)
        folders[b] = [0, -(-count // chunk)]  # chunks done, chunks in all
        for i0 in range(0, count, chunk):
            g0 = b * per_folder + i0
            sub = labels[g0 : g0 + min(chunk, count - i0)].tolist()
            tasks.append((str(root), p, seed, b, i0, per_folder, sub, max(0, preview - g0)))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"pathfinder{p.size}", unit="img", mininterval=0.5)
    start = time.perf_counter()
    shown: list[tuple[np.ndarray, int]] = []
    pending: dict[int, list[str]] = {}
    pool = None
    try:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            results = pool.map(_make_chunk, tasks)
        else:
            results = map(_make_chunk, tasks)
        for task, (lines, got) in zip(tasks, results):  # in task order
            b = task[3]
            pending.setdefault(b, []).extend(lines)
            shown.extend(got[: max(0, preview - len(shown))])
            folders[b][0] += 1
            if folders[b][0] == folders[b][1]:
                (root / "metadata" / f"{b}.npy").write_text("\n".join(pending.pop(b)) + "\n")
            if bar is not None:
                bar.update(len(lines))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if shown:
        _save_preview(out, shown)
    positives = int(labels.sum())
    return {
        "n": n,
        "positives": positives,
        "negatives": n - positives,
        "folders": len(folders),
        "root": str(root),
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("inf"),
    }
