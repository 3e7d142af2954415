"""The plain reference: the paper's formula written in the time domain, for tests. Slow."""

from __future__ import annotations

import torch

from ... import hrr
from .cosine import COSINE_EPS
from .validation import check_attention_inputs, check_recall_options, memory_count

__all__ = ["hrr_attention_reference"]


def hrr_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    score_scale: torch.Tensor | None = None,
    output: str = "value",
    pads_in_beta: bool = False,
) -> torch.Tensor:
    """HRR attention as the paper writes it, in the time domain. Slow; for tests.

    ``score_scale`` τ (h,): softmax over τ_h a_t instead of a_t (the score-scale variant).
    ``output="retrieved"``: w_t ‖v_t‖_ε v̂_t / ‖v̂_t‖_ε instead of w_t v_t; ``output="recall"``:
    m_t √d v̂_t / ‖v̂_t‖_ε, no weight (the softmax is computed and left unused).
    ``pads_in_beta``: padding is bound into β like any position (the authors' padding) and is
    masked in the softmax only. q and k of shape (B, h, T, m·d): m memories (several β per head),
    β_j = Σ_t m_t k_t^(j) ⊛ v_t and v̂_t = Σ_j q_t^(j)† ⊛ β_j over the blocks j of d.

    Bind each key-value pair, sum (or running-sum) them into β, unbind with each query's
    flip-and-roll inverse, cosine against the value, softmax with padding at −∞ (causal: the
    explicit T × T lower-triangular softmax, of which output t takes the diagonal entry).
    """
    check_attention_inputs(q, k, v, key_padding_mask, memories=True)
    check_recall_options(output, False, score_scale is not None)
    dtype = hrr.compute_dtype(q.dtype)
    b, h, t, d = v.shape
    m = memory_count(q, v)
    q_, k_, v_ = q.to(dtype).view(b, h, t, m, d), k.to(dtype).view(b, h, t, m, d), v.to(dtype)
    pad = torch.zeros(b, t, dtype=torch.bool, device=q.device) if key_padding_mask is None else key_padding_mask
    bound = hrr.bind(k_, v_[..., None, :])  # (B, h, T, m, d)
    if not pads_in_beta:
        bound = bound.masked_fill(pad[:, None, :, None, None], 0.0)
    beta = bound.cumsum(2) if causal else bound.sum(2, keepdim=True)  # (B, h, T or 1, m, d)
    vhat = hrr.bind(hrr.approx_inverse(q_), beta).sum(-2)  # (B, h, T, d)
    a = hrr.cosine_similarity(v_, vhat, eps=COSINE_EPS)  # (B, h, T)
    if score_scale is not None:
        a = a * score_scale.to(dtype)[:, None]
    if causal:
        allowed = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()  # [t, s]: s ≤ t
        allowed = allowed[None, None] & ~pad[:, None, None, :]  # (B, 1, T, T)
        scores = a[:, :, None, :].expand(-1, -1, t, -1)  # (B, h, T, T): row t holds a_s
    else:
        allowed = ~pad[:, None, None, :]  # (B, 1, 1, T)
        scores = a[:, :, None, :]  # (B, h, 1, T)
    nothing_allowed = ~allowed.any(-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(nothing_allowed, 0.0)
    probs = scores.softmax(-1).masked_fill(~allowed, 0.0)
    w = probs.diagonal(dim1=-2, dim2=-1) if causal else probs[:, :, 0, :]  # (B, h, T)
    values = v_
    vhat_norm = torch.sqrt(vhat.square().sum(-1, keepdim=True) + COSINE_EPS**2)  # ‖v̂‖_ε (B, h, T, 1)
    if output == "retrieved":
        v_norm = torch.sqrt(v_.square().sum(-1, keepdim=True) + COSINE_EPS**2)
        values = vhat / vhat_norm * v_norm
    if output == "recall":  # m_t √d v̂_t / ‖v̂_t‖_ε
        real = (~pad).to(dtype)[:, None, :, None]  # (B, 1, T, 1)
        return (real * d**0.5 * vhat / vhat_norm).to(q.dtype)
    return (w[..., None] * values).to(q.dtype)
