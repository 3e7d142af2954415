"""Argument checks of the HRR attention functions, locally or agreed on by every rank of a group."""

from __future__ import annotations

from typing import Literal

import torch

from ... import collectives
from .reduction import SequenceReduction
from .routed import Routed

__all__ = [
    "METHODS",
    "OUTPUTS",
    "Method",
    "Output",
    "check_attention_inputs",
    "check_method",
    "check_on_every_rank",
    "check_recall_options",
    "memory_count",
]

Method = Literal["auto", "circulant", "fourier"]
METHODS = ("auto", "circulant", "fourier")
#: what each position outputs: the paper's w_t v_t, w_t ‖v_t‖ v̂_t / ‖v̂_t‖, or √d v̂_t / ‖v̂_t‖ with no
#: weight at all (the recall output; see fourier.py)
Output = Literal["value", "retrieved", "recall"]
OUTPUTS = ("value", "retrieved", "recall")
_DTYPE_CODES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def memory_count(q: torch.Tensor, v: torch.Tensor) -> int:
    """m, the number of superpositions per head: q and k are (B, h, T, m·d) for v (B, h, T, d)."""
    return q.shape[-1] // max(v.shape[-1], 1)


def check_attention_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    memories: bool = False,
) -> None:
    """q, k, v float (B, h, T, d) of one shape; key_padding_mask None or bool (B, T).

    ``memories``: q and k may also be (B, h, T, m·d), m blocks of d (HRR's several β per head), or
    both :class:`~.routed.Routed`, y (B, h, T, d) with routes r (B, h, T, m)."""
    if isinstance(q, Routed) or isinstance(k, Routed):
        q, k = _routed_vectors(q, k, memories)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, h, T, d), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    d = v.shape[-1]
    blocks = memories and d > 0 and q.shape[-1] % d == 0 and q.shape[-1] >= d
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1] or (q.shape[-1] != d and not blocks):
        wanted = "q, k of shape (B, h, T, m·d) and v (B, h, T, d)" if memories else "q, k, v of the same shape"
        raise ValueError(f"attention needs {wanted}, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if key_padding_mask is not None:
        b, _, t, _ = q.shape
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be a bool tensor (True = padding), got dtype {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (b, t):
            raise ValueError(f"key_padding_mask must have shape (B, T) = {(b, t)}, got {tuple(key_padding_mask.shape)}")


def _routed_vectors(q, k, memories: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The vectors y of routed q and k, once their routes are checked: both routed, each r (B, h, T, m)."""
    if not (memories and isinstance(q, Routed) and isinstance(k, Routed)):
        raise ValueError("routed memories need q and k both routed (Routed(y, r)), and an HRR kernel that takes them")
    for name, x in (("q", q), ("k", k)):
        if x.r.dim() != 4 or x.r.shape[:-1] != x.y.shape[:-1] or not x.r.is_floating_point():
            raise ValueError(
                f"{name}'s routes must be float (B, h, T, m) for y {tuple(x.y.shape)}, got {tuple(x.r.shape)}"
            )
    if q.r.shape != k.r.shape:
        raise ValueError(f"q and k must have routes of one shape, got {tuple(q.r.shape)} and {tuple(k.r.shape)}")
    return q.y, k.y


def check_method(method: str, causal: bool, output: str = "value") -> None:
    if method not in METHODS:
        raise ValueError(f"method must be 'auto', 'circulant' or 'fourier', got {method!r}")
    if method == "circulant" and causal:
        raise ValueError("method='circulant' has no causal form (β would be a running d×d sum); use 'fourier'")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if method == "circulant" and output == "recall":
        raise ValueError(
            "method='circulant' has no form of output='recall' (it computes the softmax-weighted output); "
            "use 'fourier' or 'auto'"
        )


def check_recall_options(output: str, length_scale: bool, score_scale: bool, name: str = "output") -> None:
    """ValueError where an option that acts on the softmax weights is set with the recall output,
    which has none (out_t = √d v̂_t / ‖v̂_t‖): the length scale n (which undoes the weights' 1/n) and
    the score scale τ (``score_scale`` True: a τ is given, fixed or learned). ``name``: how the
    caller spells the output option, in the message."""
    if output != "recall":
        return
    given = [option for option, on in (("length_scale", length_scale), ("score_scale", score_scale)) if on]
    if given:
        raise ValueError(
            f"{name}='recall' has no softmax weights (out_t = √d·v̂_t/‖v̂_t‖), so {' and '.join(given)} would "
            "have no effect: leave them off (--no-length-scale, --score-scale none, --no-learn-score-scale)"
        )


def check_on_every_rank(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    causal: bool,
    method: str,
    reduction: SequenceReduction,
) -> None:
    """The checks above on every rank at once (one all-gather of six integers), so that bad input
    on any rank raises on all of them instead of leaving the others waiting in a collective; the
    ranks must also agree on batch, heads, head size, dtype and ``causal``."""
    error = None
    try:
        check_attention_inputs(q, k, v, key_padding_mask, memories=True)
        check_method(method, causal)
        b, h, _, d = q.shape
        facts = [0, b, h, d, _DTYPE_CODES.index(q.dtype) if q.dtype in _DTYPE_CODES else -1, int(causal)]
    except ValueError as err:
        error, facts = str(err), [1, -1, -1, -1, -1, int(causal)]
    everyone = collectives.gather_ints(facts, reduction.group, q.device)
    if error is not None:
        raise ValueError(error)
    bad = [r for r, f in enumerate(everyone) if f[0]]
    if bad:
        raise ValueError(f"hrr_attention: rank(s) {bad} of the sequence-parallel group rejected their input")
    if any(f[1:] != everyone[0][1:] for f in everyone):
        shapes = [
            f"rank {r}: B={f[1]} h={f[2]} d={f[3]} dtype={_DTYPE_CODES[f[4]]} causal={bool(f[5])}"
            for r, f in enumerate(everyone)
        ]
        raise ValueError(
            "hrr_attention: the ranks disagree on batch, heads, head size, dtype or causal: " + "; ".join(shapes)
        )
