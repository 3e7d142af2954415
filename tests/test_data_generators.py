"""The ListOps and Pathfinder generators, checked against independent readings of their output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrrformer.data.listops_gen import evaluate_listops, generate_listops, sample_tree, tree_length
from hrrformer.data.pathfinder_gen import PathfinderParams, generate_pathfinder, render_sample

# ----------------------------------------------------------------------------- ListOps

OPS = {
    "[MIN": min,
    "[MAX": max,
    "[MED": lambda args: int(np.median(args)),  # LRA's definition
    "[SM": lambda args: int(np.sum(args)) % 10,
}


def parse(source: str):
    """Flat tokens → nested tree: a digit, or (op, [children]). Recursive descent, asserts well-formed."""
    tokens = [t for t in source.split() if t not in ("(", ")")]

    def node(i):
        t = tokens[i]
        if t in OPS:
            children, i = [], i + 1
            while tokens[i] != "]":
                child, i = node(i)
                children.append(child)
            return (t, children), i + 1
        assert t.isdigit() and len(t) == 1, t
        return int(t), i + 1

    tree, end = node(0)
    assert end == len(tokens), "trailing tokens"
    return tree


def value(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, children = tree
    return OPS[op]([value(c) for c in children])


def stats(tree, depth=1):
    """(length as LRA counts it, max depth, list of argument counts)."""
    if isinstance(tree, int):
        return 1, depth, []
    length, deepest, counts = 2, depth, [len(tree[1])]
    for c in tree[1]:
        n, d, k = stats(c, depth + 1)
        length, deepest, counts = length + n, max(deepest, d), counts + k
    return length, deepest, counts


def lra_string(tree) -> str:
    """LRA's ``to_string`` of the left-nested pair form of ``tree``."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    s = op
    for c in children:
        s = f"( {s} {lra_string(c)} )"
    return f"( {s} ] )"


def read_tsv(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().split("\n")
    assert lines[0] == "Source\tTarget" and lines[-1] == ""
    rows = []
    for line in lines[1:-1]:
        source, target = line.split("\t")
        rows.append((source, int(target)))
    return rows


@pytest.fixture(scope="module")
def small_listops(tmp_path_factory):
    out = tmp_path_factory.mktemp("listops")
    info = generate_listops(out, train=150, val=25, test=25, seed=1, min_len=20, max_len=80, progress=False)
    return out, info


def test_listops_files_and_labels(small_listops):
    out, info = small_listops
    assert {k: info[k] for k in ("train", "val", "test")} == {"train": 150, "val": 25, "test": 25}
    assert sorted(p.name for p in out.iterdir()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    sources = []
    for name, count in (("basic_train.tsv", 150), ("basic_val.tsv", 25), ("basic_test.tsv", 25)):
        rows = read_tsv(out / name)
        assert len(rows) == count
        for source, label in rows:
            tree = parse(source)
            length, depth, arg_counts = stats(tree)
            assert label == value(tree) == evaluate_listops(source)
            assert 20 < length < 80 and tree_length(source) == length
            assert depth <= 10 and all(2 <= k <= 10 for k in arg_counts)
            assert source == lra_string(tree)  # LRA's parenthesisation, token for token
            sources.append(source)
    assert len(set(sources)) == len(sources) == 200  # distinct across all splits
    labels = [label for name in ("basic_train.tsv",) for _, label in read_tsv(out / name)]
    assert len(set(labels)) >= 8  # all values occur, not a constant


def test_listops_default_lengths(tmp_path):
    generate_listops(tmp_path, train=3, val=1, test=1, seed=5, progress=False)
    for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        for source, label in read_tsv(tmp_path / name):
            tree = parse(source)
            assert 500 < stats(tree)[0] < 2000
            assert label == value(tree)


def test_listops_deterministic(tmp_path):
    kw = dict(train=20, val=5, test=5, min_len=10, max_len=60, progress=False)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_listops(tmp_path / name, seed=seed, **kw)
    for f in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_evaluate_listops():
    assert evaluate_listops("( ( ( [MAX 2 ) 9 ) ] )") == 9
    assert evaluate_listops("[MED 1 2 ]") == int(np.median([1, 2])) == 1
    assert evaluate_listops("[MED 3 4 5 6 ]") == 4
    assert evaluate_listops("[SM 9 9 [MIN 3 4 ] ]") == 1
    assert evaluate_listops("7") == 7
    for bad in ("", "[MAX 1 2", "[MAX ]", "1 2", "]", "[FOO 1 ]", "[MIN 1 12 ]"):
        with pytest.raises(ValueError):
            evaluate_listops(bad)
    import random

    rng = random.Random(0)
    for _ in range(300):
        got = sample_tree(rng, 300)
        if got is not None:
            text, label, length = got
            assert label == value(parse(text)) == evaluate_listops(text) and length == tree_length(text)


def test_listops_roundtrip_through_loader(small_listops):
    listops = pytest.importorskip("hrrformer.data.listops")
    out, _ = small_listops
    data = listops.load(out)
    rows = read_tsv(out / "basic_train.tsv")
    assert len(data.train) == 150 and len(data.val) == 25 and len(data.test) == 25
    for k in (0, 1, 149):
        tokens, label = data.train[k]
        assert label == rows[k][1]
        flat = " ".join("]" if t == "X" else t for t in listops.decode(tokens).split())
        assert evaluate_listops(flat) == label and len(tokens) == tree_length(rows[k][0])


# ----------------------------------------------------------------------------- Pathfinder

N, PER_FOLDER = 40, 16


@pytest.fixture(scope="module")
def small_pathfinder(tmp_path_factory):
    out = tmp_path_factory.mktemp("pathfinder")
    info = generate_pathfinder(out, n=N, per_folder=PER_FOLDER, seed=0, progress=False, preview=8)
    return out, info


def metadata_rows(root: Path) -> list[list[str]]:
    rows = []
    for b in range(-(-N // PER_FOLDER)):
        rows += [line.split(" ") for line in (root / "metadata" / f"{b}.npy").read_text().splitlines()]
    return rows


def test_pathfinder_layout_and_metadata(small_pathfinder):
    out, info = small_pathfinder
    root = out / "curv_contour_length_14"
    assert info["root"] == str(root) and info["n"] == N and info["folders"] == 3
    assert sorted(p.name for p in (root / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    assert sorted(p.name for p in (root / "imgs").iterdir()) == ["0", "1", "2"]
    assert (out / "preview.png").is_file() and (out / "preview.txt").is_file()
    rows = metadata_rows(root)
    assert len(rows) == N
    for g, fields in enumerate(rows):
        b, i = divmod(g, PER_FOLDER)
        assert fields[:3] == [f"imgs/{b}", f"sample_{i}.png", str(i)]
        assert fields[3] in ("0", "1") and len(fields) == 11
        assert fields[5] == "14" and fields[6] == "4"  # contour length, distractor length
        img = Image.open(root / fields[0] / fields[1])
        assert img.mode == "L" and img.size == (32, 32) and img.format == "PNG"
    labels = [int(f[3]) for f in rows]
    assert sum(labels) == N // 2 == info["positives"] == info["negatives"]


def test_pathfinder_deterministic(small_pathfinder, tmp_path):
    out, _ = small_pathfinder
    generate_pathfinder(tmp_path / "same", n=6, per_folder=PER_FOLDER, seed=0, progress=False, preview=0)
    generate_pathfinder(tmp_path / "other", n=6, per_folder=PER_FOLDER, seed=1, progress=False, preview=0)
    a, s, o = (d / "curv_contour_length_14" for d in (out, tmp_path / "same", tmp_path / "other"))
    for i in range(6):
        f = f"imgs/0/sample_{i}.png"
        same = np.asarray(Image.open(a / f))
        assert np.array_equal(same, np.asarray(Image.open(s / f)))
        assert not np.array_equal(same, np.asarray(Image.open(o / f)))
    first = (a / "metadata" / "0.npy").read_text().splitlines()[:6]
    assert first == (s / "metadata" / "0.npy").read_text().splitlines()
    x1, y1 = render_sample(np.random.default_rng(7))
    x2, y2 = render_sample(np.random.default_rng(7))
    assert np.array_equal(x1, x2) and y1 == y2


def test_render_sample_image():
    for label in (0, 1):
        img, got = render_sample(np.random.default_rng(label), label=label)
        assert got == label and img.dtype == np.uint8 and img.shape == (32, 32) and img.max() == 255
        assert 0.05 < (img > 0).mean() < 0.6  # dashed curves, not empty, not filled
    assert {render_sample(np.random.default_rng(s))[1] for s in range(20)} == {0, 1}


def marker_curves(info, radius: float = 1.0) -> list[set[int]]:
    """Curve ids of the mask pixels within ``radius`` of each marker centre."""
    curves = info["curves"]
    yy, xx = np.mgrid[: curves.shape[0], : curves.shape[1]]
    out = []
    for y, x in info["markers"]:
        near = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
        out.append(set(np.unique(curves[near]).tolist()) - {0})
    return out


@pytest.mark.parametrize("size", [32, 128])
def test_pathfinder_label_is_geometric(size):
    """Positives: both markers on one curve, at its two ends; negatives: on two curves."""
    p = PathfinderParams.lra(size)
    count = 16 if size == 32 else 4
    for k in range(count):
        label = k % 2
        img, got, info = render_sample(np.random.default_rng((size, k)), p, label=label, return_masks=True)
        assert got == label and img.shape == (size, size)
        near = marker_curves(info)
        assert all(len(ids) == 1 for ids in near), near  # each marker touches exactly one curve
        (c0,), (c1,) = near
        assert {c0, c1} <= {1, 2}  # markers sit on the target snakes, never on distractors
        assert (c0 == c1) == (label == 1)
        assert (c0, c1) == info["marker_curves"]
        # the marked curve(s): a chain of contour_length paddles with small gaps, markers at its ends
        for c, end in ((c0, 0), (c1, 1)):
            segs = info["segments"][c]
            assert len(segs) == p.contour_length
            gaps = np.hypot(*(segs[1:, :2] - segs[:-1, 2:]).T)
            assert gaps.max() <= 2 * info["margin"] + 1e-9
            tip = segs[0, :2] if end == 0 else segs[-1, 2:]
            assert np.allclose(info["markers"][end], tip)
        for y, x in info["markers"]:  # markers are visible in the image
            assert img[round(y), round(x)] >= 200


def test_pathfinder_roundtrip_through_loader(small_pathfinder):
    pathfinder = pytest.importorskip("hrrformer.data.pathfinder")
    out, _ = small_pathfinder
    root = out / "curv_contour_length_14"
    data = pathfinder.load(out)
    items = [data.train[k] for k in range(len(data.train))] + [data.val[k] for k in range(len(data.val))]
    if data.test is not None:
        items += [data.test[k] for k in range(len(data.test))]
    assert len(items) == N and sum(label for _, label in items) == N // 2
    pixels = {}
    for fields in metadata_rows(root):
        arr = np.asarray(Image.open(root / fields[0] / fields[1])).reshape(-1).astype(np.int64) + 1
        pixels[arr.tobytes()] = int(fields[3])
    for tokens, label in items:
        assert pixels[np.asarray(tokens, dtype=np.int64).tobytes()] == label


def test_pathfinder_workers_change_nothing(tmp_path):
    kw = dict(n=5, per_folder=3, seed=2, progress=False, preview=0)
    generate_pathfinder(tmp_path / "one", **kw)
    generate_pathfinder(tmp_path / "two", workers=2, **kw)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 5 + 2
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
