"""The cosine a_t = cos_ε(v_t, v̂_t) with ‖x‖_ε = sqrt(‖x‖² + ε²), in time or from spectra.

Parseval: for real x, y of length d with F = rfft, ⟨x, y⟩ = Σ_f (c_f / d) Re(F(x)_f conj(F(y))_f),
c_f = 1 for the DC bin and (even d) the Nyquist bin, 2 otherwise. With v̂_t = q_t† ⊛ β,
F(v̂_t) = conj(F(q_t)) F(β), so ⟨v_t, v̂_t⟩ and ‖v̂_t‖² come from spectra with no inverse FFT.
"""

from __future__ import annotations

import torch

__all__ = ["COSINE_EPS", "Cosine", "inv_norm", "parseval_cosine", "parseval_weights", "rowdot"]

#: Cosine guard: ‖x‖_ε = sqrt(‖x‖² + ε²). Shared by every formulation so they agree exactly.
COSINE_EPS = 1e-6


def rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(…, T, d) · (…, T, d) → (…, T) without a (…, T, d) temporary (einsum lowers it to bmm)."""
    return torch.einsum("...d,...d->...", x, y)


def inv_norm(x: torch.Tensor, eps2: torch.Tensor) -> torch.Tensor:
    """(‖x‖² + ε²)^(-1/2) over the last axis: (…, T, d) → (…, T); ``eps2`` holds ε², (…, 1)."""
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1).square_().add_(eps2))


def parseval_weights(d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """c_f / d for f = 0 … d//2, so that ⟨x, y⟩ = Σ_f (c_f/d) Re(F(x)_f conj(F(y))_f)."""
    c = torch.full((d // 2 + 1,), 2.0, device=device, dtype=dtype)
    c[0] = 1.0
    if d % 2 == 0:
        c[-1] = 1.0
    return c / d


class Cosine(torch.autograd.Function):
    """a = num · r₁ · r₂ with r_i = (n_i + e_i)^(-1/2), on (B, h, T) vectors.

    The backward forms ∂a/∂n_i = −a r_i² / 2 directly: autograd's chain through r_i would first
    form num · r₂ (up to ‖v̂‖) times the upstream gradient (up to |v|), which overflows for large
    inputs even where every true gradient is finite.
    """

    @staticmethod
    def forward(ctx, num, n1, n2, e1, e2):
        r1, r2 = torch.rsqrt(n1 + e1), torch.rsqrt(n2 + e2)
        a = num * r1 * r2
        ctx.save_for_backward(a, r1, r2)
        return a

    @staticmethod
    def backward(ctx, g):
        a, r1, r2 = ctx.saved_tensors
        g_n = g * a * -0.5  # |a| ≤ 1
        return g * r1 * r2, g_n * r1.square(), g_n * r2.square(), None, None


def parseval_cosine(
    vhat_f: torch.Tensor,
    vf: torch.Tensor,
    v: torch.Tensor,
    eps2_vhat: torch.Tensor,
    eps2_v: torch.Tensor,
) -> torch.Tensor:
    """a_t = cos_ε(v_t, v̂_t) from the spectra of v̂ and v (Parseval, no inverse FFT).

    vhat_f, vf: rfft of v̂ and v (B, h, T, F) (F(v̂_t) = conj(F(q_t)) F(β) needs no inverse FFT
    either); v (B, h, T, d); eps2_*: ε² for each norm (B, h, 1) or scalars. → (B, h, T).
    """
    weight = parseval_weights(v.shape[-1], v.device, v.dtype)  # (F,)
    num = (vhat_f.real * vf.real + vhat_f.imag * vf.imag) @ weight  # ⟨v, v̂⟩ (B, h, T)
    vhat_norm2 = (vhat_f.real.square() + vhat_f.imag.square()) @ weight  # ‖v̂‖² (B, h, T)
    v_norm2 = v.square().sum(-1)
    return Cosine.apply(num, vhat_norm2, v_norm2, eps2_vhat, eps2_v)
