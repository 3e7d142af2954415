"""The Fourier form of HRR attention: three rffts, Parseval, no inverse FFT; causal or not.

Written per piece of the sequence (see :mod:`.reduction`), in three steps whose only coupling is
through the reduction::

    superpose(k, v)     β_c = Σ_{t∈c} m_t F(s_k k_t) F(s_v v_t), its scales (s_k, s_v)   (B, h, F, 2)
    combine             s* = min_c s,  β = Σ_c β_c · (s_k*/s_k)(s_v*/s_v)  (or exclusive prefixes)
    scores(q, v, β)     a_t = cos(v_t, q_t† ⊛ β), t ∈ c  (causal: β_t = prefix + running sum in c)

then :func:`~.weights.softmax_weights`; the output is w_t v_t (the paper) or, with the retrieved
output, w_t ‖v_t‖ v̂_t / ‖v̂_t‖ (:func:`retrieved_values`). One process without chunking is one piece; the chunked
block (:mod:`hrrformer.chunked`) runs each step over its chunks (recomputing q, k, v in each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .cosine import parseval_cosine
from .range_control import downscale, downscales, scaled_eps2
from .reduction import SequenceReduction

__all__ = ["Unbinding", "combine_superpositions", "retrieved_values", "scores", "superpose", "unbinding"]


def _masked(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x if keep is None else x * keep[..., None]  # keep (B, 1, T) on (B, h, T, F)


def superpose(
    k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None, exponent: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """This piece's Σ_t m_t F(s_k k_t) F(s_v v_t) as a real (B, h, F, 2) tensor, and its scales
    (s_k, s_v) stacked, (2, B, h, 1, 1). k, v (B, h, T_c, d); keep (B, 1, T_c) or None."""
    s_k, s_v = downscales(k, v, exponent=exponent)
    bound = _masked(torch.fft.rfft(k * s_k, dim=-1) * torch.fft.rfft(v * s_v, dim=-1), keep)  # (B, h, T_c, F)
    return torch.view_as_real(bound.sum(-2)), torch.stack([s_k, s_v])


def combine_superpositions(
    parts: Sequence[torch.Tensor], scales: Sequence[torch.Tensor], causal: bool, reduction: SequenceReduction
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Bring every piece's β_c to the common scales s* (exactly: powers of two) and sum them:
    → (per piece, β of the whole sequence — or, causal, of every piece before it —, and s*)."""
    common = reduction.minimum(scales)  # (s_k*, s_v*) (2, B, h, 1, 1)
    at_common = [part * (common[0] / s[0]) * (common[1] / s[1]) for part, s in zip(parts, scales, strict=True)]
    if causal:
        return reduction.exclusive_prefix(at_common), common
    return [reduction.total(at_common)] * len(parts), common


class Unbinding(NamedTuple):
    """The spectra behind v̂_t = q_t† ⊛ β_t for one piece, in scaled variables (see :func:`unbinding`)."""

    qf: torch.Tensor  # F(s_q q) (B, h, T_c, F)
    vf: torch.Tensor  # F(s_v v) (B, h, T_c, F)
    v: torch.Tensor  # s_v v (B, h, T_c, d)
    beta_f: torch.Tensor  # F(β') (B, h, T_c or 1, F), at the common scales
    eps2_vhat: torch.Tensor  # ε² for ‖v̂'‖ (B, h, 1)
    eps2_v: torch.Tensor  # ε² for ‖v'‖ (B, h, 1)
    s_v: torch.Tensor  # (B, h, 1, 1)


def unbinding(
    q: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor,
    keep: torch.Tensor | None,
    beta: torch.Tensor,
    common: torch.Tensor,
    causal: bool,
    exponent: int,
    eps: float,
) -> Unbinding:
    """What one piece needs to score (:func:`scores`) and to retrieve (:func:`retrieved_values`),
    against β (B, h, F, 2) at the common scales (s_k*, s_v*) (2, B, h, 1, 1). Causal: β holds the
    pieces before this one, and the running sum inside it is added (k is needed only then; ``keep``
    weights that running sum only: the keep of β, :func:`~.weights.beta_keep`)."""
    s_q, s_v = downscales(q, v, exponent=exponent)
    qf, vf = torch.fft.rfft(q * s_q, dim=-1), torch.fft.rfft(v * s_v, dim=-1)  # (B, h, T_c, F)
    beta_f = torch.view_as_complex(beta.contiguous())[..., None, :]  # (B, h, 1, F)
    if causal:
        s_k = downscale(k, exponent)
        bound = torch.fft.rfft(k * s_k, dim=-1) * vf * (common[0] / s_k) * (common[1] / s_v)  # at s*, exactly
        beta_f = beta_f + _masked(bound, keep).cumsum(-2)  # (B, h, T_c, F)
    eps2_vhat = scaled_eps2(eps, q.dtype, s_q, common[0], common[1])
    return Unbinding(qf, vf, v * s_v, beta_f, eps2_vhat, scaled_eps2(eps, q.dtype, s_v), s_v)


def scores(u: Unbinding) -> torch.Tensor:
    """a_t = cos_ε(v_t, v̂_t) (B, h, T_c), by Parseval (no inverse FFT)."""
    return parseval_cosine(u.qf, u.vf, u.v, u.beta_f, u.eps2_vhat, u.eps2_v)


def retrieved_values(u: Unbinding) -> torch.Tensor:
    """‖v_t‖_ε · v̂_t / ‖v̂_t‖_ε (B, h, T_c, d): what query t unbinds from β (content of the whole
    sequence), at the length of its own value. One inverse rfft."""
    vhat = torch.fft.irfft(u.qf.conj() * u.beta_f, n=u.v.shape[-1], dim=-1)  # v̂' (B, h, T_c, d)
    unit = vhat * torch.rsqrt(vhat.square().sum(-1, keepdim=True) + u.eps2_vhat[..., None])
    v_norm = torch.sqrt(u.v.square().sum(-1, keepdim=True) + u.eps2_v[..., None]) / u.s_v  # ‖v‖_ε (B, h, T_c, 1)
    return unit * v_norm
