"""Routed memories: q and k of a head as one vector and its routes over m memories.

Several β per head (``memories``) take q and k as m blocks of d, block j = r_t(j)·y_t, where
r_t (m,) are the routes of position t (the layer's softmax). Then, with P_s = F(k_s) F(v_s),

    β_j = Σ_s m_s r^k_s(j) F(k_s) F(v_s),   F(v̂_t) = conj(F(q_t)) Σ_j r^q_t(j) β_j

so the m blocks never need their own spectra: one rfft of q and of k, and the routes enter
through matrix products over the memories. Causal, position t reads
Σ_{s≤t} (r^q_t · r^k_s) m_s P_s, computed per block of C positions as linear attentions are: the
products r^q_t · r^k_s within a block (a lower-triangular C × C matrix), and the sums of the
blocks before it (m × F each). Time O(T·(C + m)·F), memory O(T·F + (T/C)·m·F), where the blocks
form took O(T·m·F) of both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["ROUTED_BLOCK", "Routed", "as_blocks", "routed_prefix", "routed_read", "routed_total"]

#: Positions per block of the causal routed sum (the C of the module docstring).
ROUTED_BLOCK = 64


class Routed(NamedTuple):
    """q or k of a head routed to m memories: y (B, h, T, d) and its routes r (B, h, T, m); block j
    of the memories' form (B, h, T, m·d) is r_t(j)·y_t."""

    y: torch.Tensor
    r: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """The shape of the blocks form, (B, h, T, m·d)."""
        return torch.Size((*self.y.shape[:-1], self.r.shape[-1] * self.y.shape[-1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.y.dtype

    @property
    def device(self) -> torch.device:
        return self.y.device

    def to(self, dtype: torch.dtype) -> Routed:
        return Routed(self.y.to(dtype), self.r.to(dtype))

    def blocks(self) -> torch.Tensor:
        """The memories' form (B, h, T, m·d): block j = r_t(j)·y_t."""
        return (self.r[..., None] * self.y[..., None, :]).flatten(-2)


def as_blocks(x: torch.Tensor | Routed) -> torch.Tensor:
    """x in the memories' form (B, h, T, m·d): a tensor as it is, a :class:`Routed` expanded."""
    return x.blocks() if isinstance(x, Routed) else x


def _as_real(x: torch.Tensor) -> torch.Tensor:
    """Complex (…, F) → real (…, 2F), interleaved."""
    return torch.view_as_real(x).flatten(-2)


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """Real (…, 2F), interleaved → complex (…, F)."""
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())


def routed_total(r: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Σ_s r_s ⊗ p_s: r (B, h, T, m), p complex (B, h, T, F) → complex (B, h, m, F)."""
    return _as_complex(r.transpose(-1, -2) @ _as_real(p))


def routed_read(r: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Σ_j r_t(j) β_j: r (B, h, T, m), β complex (B, h, m, F) → complex (B, h, T, F)."""
    return _as_complex(r @ _as_real(beta))


def routed_prefix(rq: torch.Tensor, rk: torch.Tensor, p: torch.Tensor, block: int = ROUTED_BLOCK) -> torch.Tensor:
    """Σ_{s≤t} (rq_t · rk_s) p_s for every t: rq, rk (B, h, T, m), p complex (B, h, T, F) → complex
    (B, h, T, F), in blocks of ``block`` positions (within a block, the C × C products; across
    blocks, the exclusive prefix of the blocks' sums Σ_s rk_s ⊗ p_s)."""
    t = p.shape[-2]
    n = -(-t // block)
    pad = n * block - t
    x = _as_real(p)  # (B, h, T, 2F)
    if pad:
        rq, rk, x = (torch.nn.functional.pad(y, (0, 0, 0, pad)) for y in (rq, rk, x))
    rq_b, rk_b, x_b = (y.unflatten(-2, (n, block)) for y in (rq, rk, x))  # (B, h, n, C, ·)
    within = (rq_b @ rk_b.transpose(-1, -2)).tril() @ x_b  # (B, h, n, C, 2F)
    if n > 1:
        sums = rk_b.transpose(-1, -2) @ x_b  # (B, h, n, m, 2F): each block's Σ_s rk_s ⊗ p_s
        before = torch.cat([torch.zeros_like(sums[:, :, :1]), sums[:, :, :-1].cumsum(2)], dim=2)
        within = within + rq_b @ before  # (B, h, n, C, 2F)
    return _as_complex(within.flatten(2, 3)[..., :t, :])
