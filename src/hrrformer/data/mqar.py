"""Multi-query associative recall (MQAR): Zoology's recall task (Arora, Eyuboglu et al., 2023), generated here.

A sequence of T tokens over a vocabulary of V holds k key-value pairs, then k queries among noise::

    position  0    1    2    3    …  2k−2  2k−1 │ 2k  2k+1 …                              T−1
    input     κ₁   ν₁   κ₂   ν₂   …  κ_k   ν_k  │ noise, but κ_j at position 2k + 2·g_j
    label     −100 everywhere, but ν_j at position 2k + 2·g_j (where κ_j is asked again)

* keys κ: k distinct integers, uniform on [1, V/2); values ν: k distinct, uniform on [V/2, V)
  (each an ordered sample without replacement, the two independent);
* gaps g₁ … g_k: k distinct of {0, …, S − 1}, S = (T − 2k)/2, drawn one after the other without
  replacement with P(g) ∝ a·(g + 1)^(a − 1), a = ``power_a`` = 0.01 (a power law: short gaps are far
  likelier). Successive sampling: gap g_j goes to pair j, so the earlier pairs tend to be asked earlier;
* noise: every other position of the query region (the odd offsets, and the even ones no query
  took) uniform on [0, V) (``random_non_queries``; else 0).

The model must output ν_j at the position of κ_j's second occurrence: a label per position, −100
(:data:`~hrrformer.data.base.IGNORE_INDEX`) where nothing is asked, k queries per sequence, and no
padding (every position is real). The distribution is that of Zoology's ``multiquery_ar``
(``zoology/data/multiquery_ar.py``, ``num_passes=1``), whose sampling we rewrote in numpy with a
seeded ``numpy.random.Generator`` (their code seeds numpy's global state and draws the noise from
torch's): the gaps by the Gumbel top-k trick (the k largest of log P(g) + Gumbel noise, in order,
are a successive sample), the keys and values by drawing the j-th uniformly among the values not
yet taken. ``tests/test_mqar.py`` compares the statistics with a fixture of their generator's
output (``research/zoology_fixtures.py``). Zoology's constraints hold: T even, V > T, 4k ≤ T.

Files: ``train.npz``, ``val.npz``, ``test.npz`` in a folder, each with ``inputs`` (N, T) int64,
``labels`` (N, T) int64 and ``meta`` (a JSON string: the generator's arguments, the split). Each
split is drawn from its own stream, ``numpy.random.default_rng([seed, split index])``, so a split
does not change with the others' sizes. Command line: ``hrrformer data mqar --vocab 8192
--seq-len 64 --kv-pairs 4 --train N --val N --test N --seed S --out DIR``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .base import IGNORE_INDEX, DataError, PositionDataset, TaskData
from .common import BadInputs, Packed, check_options, choose
from .files import require_path

__all__ = [
    "POWER_A",
    "SPLIT_FILES",
    "Mqar",
    "check_setting",
    "decode",
    "generate_mqar",
    "load",
    "multiquery_ar",
    "power_law",
    "sample_distinct",
    "successive_sample",
]

POWER_A = 0.01
SPLIT_FILES = {"train": "train.npz", "val": "val.npz", "test": "test.npz"}
#: Rows generated at a time (bounds the generator's memory at large T; part of the stream's definition).
BLOCK = 10_000


class Mqar(NamedTuple):
    """Sequences of the task: ``inputs`` (N, T) int64 token ids, ``labels`` (N, T) int64, −100 where nothing is asked."""

    inputs: np.ndarray
    labels: np.ndarray


def power_law(space: int, power_a: float = POWER_A) -> np.ndarray:
    """(space,) float64: P(g) ∝ a·(g + 1)^(a − 1) for the gaps g = 0 … space − 1, summing to 1."""
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def sample_distinct(rng: np.random.Generator, low: int, high: int, k: int, n: int) -> np.ndarray:
    """(n, k) int64: per row, k distinct integers of [low, high), uniform over the ordered samples
    without replacement. The j-th is uniform among the high − low − j values not yet taken: draw its
    rank r among them, then step r past each taken value ≤ it (in increasing order)."""
    if not 0 <= k <= high - low:
        raise ValueError(f"cannot draw {k} distinct values from [{low}, {high})")
    chosen = np.empty((n, k), dtype=np.int64)
    for j in range(k):
        rank = rng.integers(0, high - low - j, size=n)  # (n,)
        for taken in np.sort(chosen[:, :j], axis=1).T:  # the taken values, smallest first
            rank += rank >= taken
        chosen[:, j] = rank
    return chosen + low


def successive_sample(rng: np.random.Generator, p: np.ndarray, k: int, n: int) -> np.ndarray:
    """(n, k) int64: per row, k distinct indices of ``p`` drawn one after the other without replacement,
    each with probability ∝ p among those left (numpy's ``choice(replace=False, p=p)``). Gumbel top-k:
    the indices of the k largest log p_i + G_i (G standard Gumbel), in decreasing order."""
    if not 0 <= k <= np.count_nonzero(p):
        raise ValueError(f"cannot draw {k} distinct indices from {np.count_nonzero(p)} of nonzero probability")
    with np.errstate(divide="ignore"):
        scores = np.log(p) + rng.gumbel(size=(n, len(p)))  # (n, S)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def check_setting(vocab_size: int, seq_len: int, num_kv_pairs: int) -> None:
    """ValueError unless Zoology's constraints hold: T even, V > T, k ≥ 1 and 4k ≤ T."""
    if seq_len % 2 or vocab_size <= seq_len or num_kv_pairs < 1 or 4 * num_kv_pairs > seq_len:
        raise ValueError(
            f"MQAR needs an even seq_len T, vocab_size V > T and 1 ≤ 4·kv_pairs ≤ T; "
            f"got V={vocab_size}, T={seq_len}, kv_pairs={num_kv_pairs}"
        )


def multiquery_ar(
    n: int,
    *,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    rng: np.random.Generator,
    power_a: float = POWER_A,
    random_non_queries: bool = True,
) -> Mqar:
    """n MQAR sequences (see the module docstring) drawn from ``rng``."""
    check_setting(vocab_size, seq_len, num_kv_pairs)
    k, half = num_kv_pairs, vocab_size // 2
    context = 2 * k
    keys = sample_distinct(rng, 1, half, k, n)  # (n, k)
    values = sample_distinct(rng, half, vocab_size, k, n)  # (n, k)
    gaps = successive_sample(rng, power_law((seq_len - context) // 2, power_a), k, n)  # (n, k)
    if random_non_queries:
        inputs = rng.integers(0, vocab_size, size=(n, seq_len))  # (n, T) the noise
    else:
        inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    asked = context + 2 * gaps  # (n, k) where key j is asked again
    np.put_along_axis(inputs, asked, keys, axis=1)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    np.put_along_axis(labels, asked, values, axis=1)
    return Mqar(inputs, labels)


def generate_mqar(
    out_dir: str | os.PathLike,
    *,
    train: int,
    val: int,
    test: int,
    vocab_size: int = 8192,
    seq_len: int = 64,
    kv_pairs: int = 4,
    seed: int = 0,
    power_a: float = POWER_A,
    random_non_queries: bool = True,
) -> dict[str, Any]:
    """Write ``train.npz``, ``val.npz`` and ``test.npz`` under ``out_dir`` (each via a temporary
    file renamed when complete) and return the counts. Split i is drawn from
    ``default_rng([seed, i])``, ``BLOCK`` rows at a time."""
    check_setting(vocab_size, seq_len, kv_pairs)
    counts = {"train": train, "val": val, "test": test}
    if min(counts.values()) < 0:
        raise ValueError(f"negative split size in {counts}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setting = dict(
        vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=kv_pairs, power_a=power_a, random_non_queries=random_non_queries
    )  # fmt: skip
    for index, (split, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, index])
        blocks = [multiquery_ar(min(BLOCK, n - start), rng=rng, **setting) for start in range(0, n, BLOCK)]
        inputs = np.concatenate([b.inputs for b in blocks]) if blocks else np.zeros((0, seq_len), np.int64)
        labels = np.concatenate([b.labels for b in blocks]) if blocks else np.zeros((0, seq_len), np.int64)
        meta = json.dumps({"task": "mqar", **setting, "seed": seed, "split": split, "examples": n})
        tmp = out / f".{SPLIT_FILES[split]}.tmp.npz"
        np.savez_compressed(tmp, inputs=inputs, labels=labels, meta=np.array(meta))
        os.replace(tmp, out / SPLIT_FILES[split])
    return {**counts, "vocab_size": vocab_size, "seq_len": seq_len, "kv_pairs": kv_pairs, "seed": seed}


class _Split(NamedTuple):
    inputs: np.ndarray
    labels: np.ndarray
    vocab_size: int | None  # from the file's meta, where it has one


def _read_split(file: Path) -> _Split:
    try:
        with np.load(file, allow_pickle=False) as npz:
            if "inputs" not in npz or "labels" not in npz:
                raise DataError(f"{file}: expected arrays 'inputs' and 'labels', found {sorted(npz.files)}")
            inputs, labels = npz["inputs"], npz["labels"]
            meta = json.loads(str(npz["meta"])) if "meta" in npz else {}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{file}: not a readable .npz file ({e})") from None
    if inputs.ndim != 2 or inputs.shape != labels.shape or not all(a.dtype.kind in "iu" for a in (inputs, labels)):
        raise DataError(
            f"{file}: 'inputs' and 'labels' must be integer arrays of the same shape (N, T), "
            f"got {inputs.dtype} {inputs.shape} and {labels.dtype} {labels.shape}"
        )
    return _Split(inputs.astype(np.int64, copy=False), labels.astype(np.int64, copy=False), meta.get("vocab_size"))


def _dataset(split: _Split, file: Path, vocab_size: int, bad: BadInputs, limit: int | None) -> PositionDataset:
    """The split's rows as a dataset; rows with a token or label outside the vocabulary are bad inputs."""
    inputs, labels = split.inputs[:limit], split.labels[:limit]
    wrong = ((inputs < 0) | (inputs >= vocab_size)).any(1)
    wrong |= (((labels < 0) | (labels >= vocab_size)) & (labels != IGNORE_INDEX)).any(1)
    for row in np.flatnonzero(wrong):
        bad(
            "malformed row",
            f"{file}: row {row}: a token or label outside [0, {vocab_size}) (labels: or {IGNORE_INDEX})",
        )
    keep = ~wrong
    return PositionDataset(
        Packed.from_matrix(inputs[keep].astype(np.int32)), Packed.from_matrix(labels[keep].astype(np.int32))
    )


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
) -> TaskData:
    """The splits of the folder ``path`` that are there (``train.npz``, ``val.npz``, ``test.npz``).

    The vocabulary is the files' ``meta`` ``vocab_size`` (else one past the largest token or label);
    sequences longer than ``max_len`` lose their end (and the queries there). Without ``val.npz``,
    ``val_fraction`` of train is held out by ``seed``; ``limit`` keeps the first rows of each file.
    A row with a token or label outside the vocabulary is a DataError, or skipped with ``skip_bad``.
    """
    check_options(val_fraction=val_fraction, limit=limit)
    folder = require_path(path, "a folder with " + ", ".join(SPLIT_FILES.values()))
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder with {', '.join(SPLIT_FILES.values())}")
    files = {split: folder / name for split, name in SPLIT_FILES.items() if (folder / name).is_file()}
    if not files:
        raise DataError(f"{folder}: none of {', '.join(SPLIT_FILES.values())} is there")
    own_splits = tuple(files)
    splits = {split: _read_split(file) for split, file in files.items()}
    if max_len is not None:
        splits = {s: x._replace(inputs=x.inputs[:, :max_len], labels=x.labels[:, :max_len]) for s, x in splits.items()}
    if "val" not in splits and "train" in splits:  # held out of train by seed
        train, files["val"] = splits["train"], files["train"]
        order = choose(np.arange(len(train.inputs)), None, seed, "val")
        n_val = int(np.floor(len(order) * val_fraction + 0.5))
        for split, rows in (("val", order[:n_val]), ("train", order[n_val:])):
            rows = np.sort(rows)
            splits[split] = train._replace(inputs=train.inputs[rows], labels=train.labels[rows])
    declared = {x.vocab_size for x in splits.values()} - {None}
    if len(declared) > 1:
        raise DataError(f"{folder}: the files declare different vocabularies {sorted(declared)}")
    seen = max(int(max(x.inputs.max(initial=0), x.labels.max(initial=0))) for x in splits.values()) + 1
    vocab_size = declared.pop() if declared else seen
    bad = BadInputs(skip_bad)
    datasets = {split: _dataset(x, files[split], vocab_size, bad, limit) for split, x in splits.items()}
    length = max(x.inputs.shape[1] for x in splits.values())
    for split in ("train", "val"):  # absent (a test-only folder): empty
        if split not in datasets:
            nothing = np.zeros((0, length), np.int64)
            datasets[split] = _dataset(_Split(nothing, nothing, None), folder, vocab_size, bad, None)
    return TaskData(
        name="mqar",
        train=datasets["train"],
        val=datasets["val"],
        test=datasets.get("test"),
        vocab_size=vocab_size,
        num_classes=vocab_size,
        max_len=length,
        skipped=bad.counts,
        own_splits=own_splits,
        per_position=True,
        pad_id=None,
    )


def decode(tokens) -> str:
    """Token ids as numbers (keys below V/2, values above; the vocabulary has no words)."""
    return " ".join(str(int(t)) for t in tokens)
