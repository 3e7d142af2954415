"""The Fourier form of HRR attention: three rffts, Parseval, no inverse FFT; causal or not.

Written per piece of the sequence (see :mod:`.reduction`), in three steps whose only coupling is
through the reduction::

    superpose(k, v)     β_c = Σ_{t∈c} m_t F(s_k k_t) F(s_v v_t), its scales (s_k, s_v)   (B, h, m·F, 2)
    combine             s* = min_c s,  β = Σ_c β_c · (s_k*/s_k)(s_v*/s_v)  (or exclusive prefixes)
    scores(q, v, β)     a_t = cos(v_t, q_t† ⊛ β), t ∈ c  (causal: β_t = prefix + running sum in c)

then :func:`~.weights.softmax_weights`; the output is w_t v_t (the paper) or, with the retrieved
output, w_t ‖v_t‖ v̂_t / ‖v̂_t‖ (:func:`retrieved_values`). The recall output, m_t √d v̂_t / ‖v̂_t‖
(:func:`recalled_values`), needs no scores and no softmax: superpose, combine, unbind, and the
direction of v̂_t at RMS 1. One process without chunking is one piece; the chunked
block (:mod:`hrrformer.chunked`) runs each step over its chunks (recomputing q, k, v in each).
With m memories (q, k of width m·d) β holds one spectrum per memory and F(v̂_t) = Σ_j
conj(F(q_t^(j))) F(β_j); m = 1 is the paper's single β. Memories given as one vector and its
routes (:class:`~.routed.Routed`) take one rfft per vector and the routes through matrix products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .cosine import parseval_cosine
from .precision import kernel_precision
from .range_control import downscale, downscales, scaled_eps2
from .reduction import SequenceReduction
from .routed import Routed, routed_prefix, routed_read, routed_total

__all__ = [
    "Unbinding",
    "combine_superpositions",
    "recalled_values",
    "retrieved_values",
    "scores",
    "superpose",
    "unbinding",
]


def _masked(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """x (B, h, T, …) times keep (B, 1, T) along T."""
    return x if keep is None else x * keep.view(*keep.shape, *[1] * (x.dim() - 3))


def _block_spectra(x: torch.Tensor, d: int) -> torch.Tensor:
    """(B, h, T, m·d) → the rfft of each block of d, (B, h, T, m, F)."""
    return torch.fft.rfft(x.unflatten(-1, (x.shape[-1] // d, d)), dim=-1)


def _vector(x: torch.Tensor | Routed) -> torch.Tensor:
    """What range control scales: the blocks, or a routed vector's y (its blocks r(j)·y are no larger)."""
    return x.y if isinstance(x, Routed) else x


@kernel_precision
def superpose(
    k: torch.Tensor | Routed, v: torch.Tensor, keep: torch.Tensor | None, exponent: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """This piece's β_c,j = Σ_t m_t F(s_k k_t^(j)) F(s_v v_t) for each memory j, as a real
    (B, h, m·F, 2) tensor, and its scales (s_k, s_v) stacked, (2, B, h, 1, 1). k (B, h, T_c, m·d)
    or routed, v (B, h, T_c, d); keep (B, 1, T_c) or None."""
    s_k, s_v = downscales(_vector(k), v, exponent=exponent)
    vf = torch.fft.rfft(v * s_v, dim=-1)  # (B, h, T_c, F)
    if isinstance(k, Routed):  # β_c,j = Σ_t r_t(j) m_t F(s_k y_t) F(s_v v_t)
        beta = routed_total(k.r, _masked(torch.fft.rfft(k.y * s_k, dim=-1) * vf, keep))  # (B, h, m, F)
        return torch.view_as_real(beta.flatten(-2)), torch.stack([s_k, s_v])
    bound = _masked(_block_spectra(k * s_k, v.shape[-1]) * vf[..., None, :], keep)  # (B, h, T_c, m, F)
    return torch.view_as_real(bound.sum(-3).flatten(-2)), torch.stack([s_k, s_v])


@kernel_precision
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
    """The spectra behind v̂_t = Σ_j q_t^(j)† ⊛ β_j,t for one piece, in scaled variables (see :func:`unbinding`)."""

    vhat_f: torch.Tensor  # F(v̂') (B, h, T_c, F)
    vf: torch.Tensor  # F(s_v v) (B, h, T_c, F)
    v: torch.Tensor  # s_v v (B, h, T_c, d)
    eps2_vhat: torch.Tensor  # ε² for ‖v̂'‖ (B, h, 1)
    eps2_v: torch.Tensor  # ε² for ‖v'‖ (B, h, 1)
    s_v: torch.Tensor  # (B, h, 1, 1)


@kernel_precision
def unbinding(
    q: torch.Tensor | Routed,
    k: torch.Tensor | Routed | None,
    v: torch.Tensor,
    keep: torch.Tensor | None,
    beta: torch.Tensor,
    common: torch.Tensor,
    causal: bool,
    exponent: int,
    eps: float,
) -> Unbinding:
    """What one piece needs to score (:func:`scores`) and to retrieve (:func:`retrieved_values`),
    against β (B, h, m·F, 2) at the common scales (s_k*, s_v*) (2, B, h, 1, 1):
    F(v̂_t) = Σ_j conj(F(q_t^(j))) F(β_j). Causal: β holds the pieces before this one, and the
    running sum inside it is added (k is needed only then; ``keep`` weights that running sum only:
    the keep of β, :func:`~.weights.beta_keep`). Routed q and k (:class:`~.routed.Routed`, both or
    neither) read β through their routes: F(v̂_t) = conj(F(q_t)) Σ_j r^q_t(j) F(β_j)."""
    d = v.shape[-1]
    s_q, s_v = downscales(_vector(q), v, exponent=exponent)
    vf = torch.fft.rfft(v * s_v, dim=-1)  # (B, h, T_c, F)
    beta_f = torch.view_as_complex(beta.contiguous()).unflatten(-1, (-1, vf.shape[-1]))  # (B, h, m, F)
    s_k = downscale(_vector(k), exponent) if causal else None
    at_common = None if s_k is None else (common[0] / s_k) * (common[1] / s_v)  # exactly: powers of two (B, h, 1, 1)
    if isinstance(q, Routed):
        read = routed_read(q.r, beta_f)  # (B, h, T_c, F)
        if causal:
            bound = torch.fft.rfft(k.y * s_k, dim=-1) * vf * at_common  # (B, h, T_c, F)
            read = read + routed_prefix(q.r, k.r, _masked(bound, keep))
        vhat_f = torch.fft.rfft(q.y * s_q, dim=-1).conj() * read  # (B, h, T_c, F)
    else:
        qf = _block_spectra(q * s_q, d)  # (B, h, T_c, m, F)
        beta_f = beta_f[..., None, :, :]  # (B, h, 1, m, F)
        if causal:
            bound = _block_spectra(k * s_k, d) * vf[..., None, :] * at_common[..., None]  # (B, h, T_c, m, F)
            beta_f = beta_f + _masked(bound, keep).cumsum(-3)  # (B, h, T_c, m, F)
        unbound = qf.conj() * beta_f  # (B, h, T_c, m, F)
        vhat_f = unbound[..., 0, :] if unbound.shape[-2] == 1 else unbound.sum(-2)  # (B, h, T_c, F)
    eps2_vhat = scaled_eps2(eps, q.dtype, s_q, common[0], common[1])
    return Unbinding(vhat_f, vf, v * s_v, eps2_vhat, scaled_eps2(eps, q.dtype, s_v), s_v)


@kernel_precision
def scores(u: Unbinding) -> torch.Tensor:
    """a_t = cos_ε(v_t, v̂_t) (B, h, T_c), by Parseval (no inverse FFT)."""
    return parseval_cosine(u.vhat_f, u.vf, u.v, u.eps2_vhat, u.eps2_v)


def _unit_retrieved(u: Unbinding) -> torch.Tensor:
    """v̂_t / ‖v̂_t‖_ε (B, h, T_c, d), from the scaled v̂' with the guard scaled alike (ε² s_q² s_k*² s_v*²):
    the same direction as unscaled. One inverse rfft."""
    vhat = torch.fft.irfft(u.vhat_f, n=u.v.shape[-1], dim=-1)  # v̂' (B, h, T_c, d)
    return vhat * torch.rsqrt(vhat.square().sum(-1, keepdim=True) + u.eps2_vhat[..., None])


@kernel_precision
def retrieved_values(u: Unbinding) -> torch.Tensor:
    """‖v_t‖_ε · v̂_t / ‖v̂_t‖_ε (B, h, T_c, d): what query t unbinds from β (content of the whole
    sequence), at the length of its own value. One inverse rfft."""
    v_norm = torch.sqrt(u.v.square().sum(-1, keepdim=True) + u.eps2_v[..., None]) / u.s_v  # ‖v‖_ε (B, h, T_c, 1)
    return _unit_retrieved(u) * v_norm


@kernel_precision
def recalled_values(u: Unbinding, keep: torch.Tensor | None) -> torch.Tensor:
    """m_t · √d · v̂_t / ‖v̂_t‖_ε (B, h, T_c, d): the recall output, the direction of what query t
    unbinds from β (causal: β_t, the pairs s ≤ t) at RMS 1, with no score and no weight; 0 at padding
    (``keep`` (B, 1, T_c), the real positions, or None: all real). One inverse rfft."""
    return _masked(_unit_retrieved(u) * math.sqrt(u.v.shape[-1]), keep)
