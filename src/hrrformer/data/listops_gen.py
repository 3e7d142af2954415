"""Generator for the Long Range Arena ListOps task (Nangia & Bowman, 2018; LRA's ``listops.py``).

An example is a random expression tree over the digits 0–9 and four list operators:

=========  ===================================================================
``[MIN``   smallest argument
``[MAX``   largest argument
``[MED``   ``int(numpy.median(args))``: the middle element of the sorted list, or, for an
           even count, the mean of the two middle ones truncated to an integer
``[SM``    sum of the arguments modulo 10
=========  ===================================================================

Sampling follows LRA exactly: a node at depth ``d`` (the root has depth 1) is an operator
with probability 0.25 while ``d < 10`` and a digit otherwise (always a digit at depth 10);
an operator takes a uniform 2–10 arguments, each a fresh node one level deeper; the
operator and the digits are uniform over their sets. Trees are rejection-sampled until
``min_len < length < max_len`` and all kept trees (over all splits) are distinct. The label
is the value of the tree, 0–9.

**Length** is counted as LRA counts it: 2 per operator (its ``[OP`` token and its closing
``]``) plus 1 per digit, i.e. the number of tokens once the parentheses are removed. A
tree is abandoned as soon as its running length reaches ``max_len``, which keeps rejection
sampling fast (about 8 % of trees land in 500–2000; most rejects are tiny).

**Text format** is LRA's ``to_string``: an operator with arguments ``a1 … ak`` is the left-
nested pair ``(((op, a1), a2) … ak), ]`` and each pair is written ``( x y )``, so
``[MAX 2 9 ]`` is written ``( ( ( [MAX 2 ) 9 ) ] )``. Deleting every ``(`` and ``)`` gives
the flat prefix sequence ``[MAX 2 9 ]``. Files are LRA's: ``basic_train.tsv``,
``basic_val.tsv``, ``basic_test.tsv``, tab-separated with the header ``Source\\tTarget``
(lines end in ``\\n``; LRA's csv writer used ``\\r\\n``).

Determinism: everything is drawn from one ``random.Random(seed)``, so the same arguments
give byte-identical files.

Command line: ``hrrformer data listops --out DIR [--train N --val N --test N --seed S]``.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "END",
    "OPERATORS",
    "SPLIT_FILES",
    "evaluate_listops",
    "generate_listops",
    "sample_tree",
    "tree_length",
]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = "Source\tTarget\n"

VALUE_P = 0.25  # probability that a node above the depth limit is an operator (LRA's VALUE_P)
MAX_DEPTH = 10
MAX_ARGS = 10


def _median(values: Sequence[int]) -> int:
    """``int(numpy.median(values))`` for non-negative integers, without numpy."""
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


_APPLY: tuple[Callable[[Sequence[int]], int], ...] = (
    min,
    max,
    _median,
    lambda v: sum(v) % 10,
)
_OP_INDEX = {op: i for i, op in enumerate(OPERATORS)}


class _TooLong(Exception):
    pass


def sample_tree(
    rng: random.Random, max_len: int, *, max_depth: int = MAX_DEPTH, max_args: int = MAX_ARGS
) -> tuple[str, int, int] | None:
    """One tree as ``(text, value, length)``, or None once its length reaches ``max_len``.

    ``text`` is in LRA's parenthesised format; ``length`` counts tokens without parentheses.
    """
    rand = rng.random
    pieces: list[str] = []
    append = pieces.append
    length = 0
    span = max_args - 1

    def node(depth: int) -> int:
        nonlocal length
        if depth < max_depth and rand() <= VALUE_P:
            k = 2 + int(rand() * span)  # uniform over 2..max_args
            length += 2
            if length >= max_len:
                raise _TooLong
            slot = len(pieces)
            append("")
            values = []
            for _ in range(k):
                append(" ")
                values.append(node(depth + 1))
                append(" )")
            append(" ] )")
            op = int(rand() * 4)
            pieces[slot] = "( " * (k + 1) + OPERATORS[op]
            return _APPLY[op](values)
        length += 1
        if length >= max_len:
            raise _TooLong
        digit = int(rand() * 10)
        append(str(digit))
        return digit

    try:
        value = node(1)
    except _TooLong:
        return None
    return "".join(pieces), value, length


def tree_length(source: str) -> int:
    """Length as LRA counts it: tokens other than ``(`` and ``)``."""
    return sum(1 for t in source.split() if t not in ("(", ")"))


def evaluate_listops(source: str) -> int:
    """Value of a ListOps expression, in LRA's parenthesised format or flat (``[MAX 2 9 ]``).

    Parentheses are ignored; raises ValueError on anything malformed.
    """
    stack: list[tuple[int, list[int]]] = []
    result: int | None = None
    for token in source.split():
        if token in ("(", ")"):
            continue
        if token in _OP_INDEX:
            if result is not None:
                raise ValueError(f"token {token!r} after the expression ended")
            stack.append((_OP_INDEX[token], []))
            continue
        if token == END:
            if not stack:
                raise ValueError("']' without an operator")
            op, args = stack.pop()
            if not args:
                raise ValueError(f"{OPERATORS[op]} without arguments")
            value = _APPLY[op](args)
        elif len(token) == 1 and token.isdigit():
            value = int(token)
        else:
            raise ValueError(f"unknown token {token!r}")
        if stack:
            stack[-1][1].append(value)
        elif result is None:
            result = value
        else:
            raise ValueError("more than one expression")
    if stack:
        raise ValueError(f"{len(stack)} unclosed operator(s)")
    if result is None:
        raise ValueError("empty expression")
    return result


def generate_listops(
    out_dir: str | os.PathLike,
    *,
    train: int = 96_000,
    val: int = 2_000,
    test: int = 2_000,
    seed: int = 0,
    min_len: int = 500,
    max_len: int = 2000,
    progress: bool = True,
) -> dict:
    """Write ``basic_{train,val,test}.tsv`` under ``out_dir`` and return the counts.

    Trees are kept when ``min_len < length < max_len`` (strict, as LRA) and new; the first
    ``train`` kept trees go to train, the next ``val`` to val, the last ``test`` to test.
    Files are written to ``*.tmp`` and renamed at the end, so a finished name is a finished
    file. Returns ``{"train", "val", "test", "sampled", "duplicates", "seconds"}``.
    """
    counts = {"train": train, "val": val, "test": test}
    if min(counts.values()) < 0:
        raise ValueError(f"negative split size in {counts}")
    if max_len <= min_len + 1:
        raise ValueError(f"no length lies strictly between min_len={min_len} and max_len={max_len}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = train + val + test
    rng = random.Random(seed)
    seen: set[bytes] = set()
    sampled = duplicates = 0
    start = time.perf_counter()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="listops", unit="ex", mininterval=0.5)
    tmp_paths = {split: out / (name + ".tmp") for split, name in SPLIT_FILES.items()}
    try:
        for split in ("train", "val", "test"):
            with open(tmp_paths[split], "w", encoding="utf-8", newline="\n") as f:
                f.write(HEADER)
                kept = 0
                while kept < counts[split]:
                    tree = sample_tree(rng, max_len)
                    sampled += 1
                    if tree is None or tree[2] <= min_len:
                        continue
                    text, value, _ = tree
                    key = hashlib.blake2b(text.encode(), digest_size=16).digest()
                    if key in seen:
                        duplicates += 1
                        continue
                    seen.add(key)
                    f.write(f"{text}\t{value}\n")
                    kept += 1
                    if bar is not None:
                        bar.update(1)
        for split, name in SPLIT_FILES.items():
            os.replace(tmp_paths[split], out / name)
    finally:
        if bar is not None:
            bar.close()
        for path in tmp_paths.values():
            path.unlink(missing_ok=True)
    return {**counts, "sampled": sampled, "duplicates": duplicates, "seconds": time.perf_counter() - start}
