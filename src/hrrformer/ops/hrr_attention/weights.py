"""From scores to weights: w = softmax over the (prefix of the) sequence, padding excluded.

For pieces c of a sequence (see :mod:`.reduction`), with e_t = m_t exp(τ a_t − |τ|) (τ = 1 in the
paper; a per-head score scale τ otherwise: softmax is shift-invariant, and τ a − |τ| ≤ 0 can
never overflow, so no max over the sequence is needed)::

    non-causal:  w_t = e_t / Z,    Z   = Σ_{all t} e_t                     (reduction.total)
    causal:      w_t = e_t / Z_t,  Z_t = Σ_{pieces before} e + Σ_{s ≤ t in c} e_s

|a| ≤ 1, so e_t ∈ [e^(−2|τ|), 1]; a normaliser is either 0 (nothing real yet: the weights there
are 0 too, and it is replaced by 1) or ≥ e^(−2|τ|), a normal float32 number for |τ| ≤ 40
(:data:`MAX_SCORE_SCALE`, to which τ is clamped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .precision import kernel_precision
from .reduction import SequenceReduction

__all__ = [
    "MAX_SCORE_SCALE",
    "beta_keep",
    "equal_weights",
    "keep_weights",
    "position_counts",
    "running_totals",
    "scaled_exp",
    "softmax_weights",
]

#: |τ| is clamped here, so that e^(−2|τ|) stays a normal float32 number (≈ 1.8e-35).
MAX_SCORE_SCALE = 40.0


def keep_weights(key_padding_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) bool padding mask → (B, 1, T) float, 1 for real tokens, 0 for padding."""
    if key_padding_mask is None:
        return None
    return (~key_padding_mask).to(dtype)[:, None, :]


def beta_keep(keep: torch.Tensor | None, pads_in_beta: bool) -> torch.Tensor | None:
    """The keep weights of the superposition β: ``keep`` itself (padding left out of β, ours), or
    None (every position enters β) with ``pads_in_beta``, the authors' padding, where pads are
    excluded from the softmax only."""
    return None if pads_in_beta else keep


def running_totals(values: Sequence[torch.Tensor], causal: bool, reduction: SequenceReduction) -> list[torch.Tensor]:
    """Per piece, Σ of ``values`` (…, T_c) over the whole sequence (…, 1), or with ``causal`` over
    every position up to and including t (…, T_c)."""
    if causal:
        before = reduction.exclusive_prefix([x.sum(-1) for x in values])
        return [x.cumsum(-1) + b[..., None] for x, b in zip(values, before, strict=True)]
    total = reduction.total([x.sum(-1, keepdim=True) for x in values])
    return [total] * len(values)


def scaled_exp(a: torch.Tensor, keep: torch.Tensor | None, score_scale: torch.Tensor | None) -> torch.Tensor:
    """e = m ⊙ exp(τ a − |τ|) (B, h, T) for scores a (B, h, T), τ (h,) or None (the paper: exp(a))."""
    if score_scale is None:
        e = torch.exp(a)
    else:
        tau = score_scale.clamp(-MAX_SCORE_SCALE, MAX_SCORE_SCALE).to(a.dtype)[:, None]  # (h, 1)
        e = torch.exp(a * tau - tau.abs())
    return e if keep is None else e * keep


@kernel_precision
def softmax_weights(
    scores: Sequence[torch.Tensor],
    keeps: Sequence[torch.Tensor | None],
    causal: bool,
    reduction: SequenceReduction,
    score_scale: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """w per piece (B, h, T_c) from scores a (B, h, T_c), keep weights (B, 1, T_c) or None, and
    the per-head score scale τ (h,) or None."""
    exps = [scaled_exp(a, keep, score_scale) for a, keep in zip(scores, keeps, strict=True)]
    denoms = running_totals(exps, causal, reduction)
    return [e / z.masked_fill(z == 0, 1.0) for e, z in zip(exps, denoms, strict=True)]


def equal_weights(
    keeps: Sequence[torch.Tensor | None],
    shapes: Sequence[tuple[int, int, int]],
    causal: bool,
    reduction: SequenceReduction,
    like: torch.Tensor,
) -> list[torch.Tensor]:
    """The weights every score being equal would give, per piece (B, h, T_c) of ``shapes``: m_t / n
    (causal: m_t / n_t), in ``like``'s dtype. What the recall output, which has no scores, reports."""
    return softmax_weights([like.new_zeros(shape) for shape in shapes], keeps, causal, reduction)


@kernel_precision
def position_counts(
    keeps: Sequence[torch.Tensor | None],
    lengths: Sequence[int],
    causal: bool,
    reduction: SequenceReduction,
    like: torch.Tensor,
) -> list[torch.Tensor]:
    """n per piece: the number of real positions each softmax normalises over, (B, 1, 1, 1), or
    (B, 1, T_c, 1) with n_t = real positions ≤ t (at least 1) when causal; dtype of ``like``."""
    b = like.shape[0]
    ones = [like.new_ones(b, 1, t) if keep is None else keep.to(like.dtype) for keep, t in zip(keeps, lengths)]
    counts = running_totals(ones, causal, reduction)
    return [(n.clamp_min(1.0) if causal else n)[..., None] for n in counts]
