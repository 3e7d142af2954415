"""The circulant form of HRR attention: two matrix multiplies per head, no FFT (non-causal).

With M = (m⊙K)ᵀV (d × d), β[n] = Σ_r M[r, (n − r) mod d] (sums along wrapped diagonals), and
since v̂_t[n] = Σ_j q_t[j] β[(j + n) mod d], V̂ = Q·C with C[j, n] = β[(j + n) mod d]. That is
O(T·d²) arithmetic, but in BLAS: faster than the FFT forms at the head sizes used here.

Several memories (q, k of width m·d, see :func:`~.attend.hrr_attention`) are the same products
with K, Q of m·d columns: M (m·d × d) holds one d × d block per memory, β (m, d) one row each, and
C (m·d × d) stacks their Hankel blocks, so V̂ = QC = Σ_j Q^(j) C_j. Nothing else changes.

The two sums over time (β forward, and in backward ∂L/∂β and Σ_t w_t g_w,t) and the softmax
normaliser go through a :class:`~.reduction.SequenceReduction`, so the same function runs in one
process or over a sequence split across a process group.
"""

from __future__ import annotations

import torch

from .cosine import inv_norm, rowdot
from .precision import autocast_off
from .range_control import downscales, safe_exponent, scaled_eps2
from .reduction import SequenceReduction
from .validation import memory_count
from .weights import MAX_SCORE_SCALE, beta_keep, softmax_weights

__all__ = ["CirculantHrrAttention", "hankel", "wrapped_diagonal_sums"]


def wrapped_diagonal_sums(x: torch.Tensor) -> torch.Tensor:
    """(…, m·d, d) → (…, m, d): per block j of d rows, out[j, n] = Σ_r x[j·d + r, (n − r) mod d]."""
    d = x.shape[-1]
    blocks = x.unflatten(-2, (x.shape[-2] // d, d))  # (…, m, d, d)
    ar = torch.arange(d, device=x.device)
    idx = (ar[None, :] - ar[:, None]) % d  # idx[r, n] = (n − r) mod d
    return blocks.gather(-1, idx.expand(blocks.shape)).sum(-2)


def hankel(beta: torch.Tensor) -> torch.Tensor:
    """(…, m, d) → (…, m·d, d), the blocks C_j[r, n] = β_j[(r + n) mod d] stacked."""
    d = beta.shape[-1]
    ar = torch.arange(d, device=beta.device)
    return beta[..., (ar[:, None] + ar[None, :]) % d].flatten(-3, -2)


class CirculantHrrAttention(torch.autograd.Function):
    """Non-causal HRR attention weights and output by matrix multiplies, with a hand-derived backward.

    ``apply(q, k, v, keep, eps, reduction, score_scale, retrieved, pads_in_beta)`` → (out (B, h, T, d),
    w (B, h, T)); w has no gradient of its own (it is returned for attention maps). ``score_scale``:
    τ (h,) or None; w = softmax(τ a) (:mod:`.weights`). out = w v, or with ``retrieved`` w u,
    u = ‖v‖_ε v̂ / ‖v̂‖_ε (v̂ is computed anyway: no extra cost). ``pads_in_beta``: the m of β below
    is 1 at every position (the authors' padding); the softmax still excludes padding.

    Forward:  M = (m⊙K)ᵀV, β = Σ_sequence diagsum(M), C = hankel(β), V̂ = QC,
              a = ⟨v, v̂⟩ r_v̂ r_v with r_x = (‖x‖² + ε²)^(-1/2), w = softmax(τ a), out = w v.
    Backward (g = ∂L/∂out):
              g_w = ⟨g, v⟩, g_s = w (g_w − Σ_sequence w g_w), g_a = τ g_s, ∂L/∂τ = Σ_{b,t} a g_s,
              ∂L/∂v̂ = g_a (r_v̂ r_v v − a r_v̂² v̂),
              ∂L/∂v = w g + g_a (r_v̂ r_v v̂ − a r_v² v) + (m⊙K) G,
              ∂L/∂q = (∂L/∂v̂) Cᵀ,  ∂L/∂β = Σ_sequence diagsum(Qᵀ ∂L/∂v̂),  G = hankel(∂L/∂β),
              ∂L/∂k = m ⊙ (V Gᵀ).
    Retrieved output (out = w u): g_w = ⟨g, u⟩, ∂L/∂v̂ gains (‖v‖/‖v̂‖)(w g − ⟨w g, v̂⟩ v̂/‖v̂‖²),
              and ∂L/∂v gains w ⟨g, v̂⟩ v / (‖v̂‖ ‖v‖) in place of w g.
    Scores are computed from q' = s_q q, k' = s_k k, v' = s_v v (exact powers of two, see
    :mod:`.range_control`); s_k rides on the mask, s_q on the d×d matrix C, so only v' is a new
    full-size tensor. Only q, k, v', C and four (B, h, T) vectors are kept; V̂ is recomputed in
    backward (one matrix multiply) instead of stored. Full-size temporaries are updated in place,
    since on CPUs a fresh large tensor costs more in page faults than the arithmetic on it.
    """

    @staticmethod
    def forward(
        ctx, q, k, v, keep, eps, reduction: SequenceReduction, score_scale=None, retrieved=False, pads_in_beta=False
    ):
        exponent = safe_exponent(q.dtype, reduction.sequence_length(q.shape[-2]), v.shape[-1], memory_count(q, v))
        s_q, s_k, s_v = downscales(q, k, v, exponent=exponent)  # (B, h, 1, 1)
        s_k, s_v = reduction.minimum([torch.stack([s_k, s_v])]).unbind(0)  # the whole sequence's
        v_ = v * s_v  # v' (B, h, T, d)
        keep_b = beta_keep(keep, pads_in_beta)  # m of β: (B, 1, T) or None
        km = k * (s_k if keep_b is None else keep_b[..., None] * s_k)  # m ⊙ k' (B, h, T, m·d)
        mkv = km.transpose(-1, -2) @ v_  # (B, h, m·d, d)
        beta = reduction.total([wrapped_diagonal_sums(mkv).contiguous()])  # s_k s_v β (B, h, m, d)
        del km, mkv
        circ = hankel(beta)  # C' = s_k s_v C (B, h, m·d, d)
        vhat = q @ (circ * s_q)  # v̂' = s_q s_k s_v v̂ (B, h, T, d)
        r_vhat = inv_norm(vhat, scaled_eps2(eps, q.dtype, s_q, s_k, s_v))  # (B, h, T)
        r_v = inv_norm(v_, scaled_eps2(eps, q.dtype, s_v))  # (B, h, T)
        a = rowdot(vhat, v_) * r_vhat * r_v  # (B, h, T), the same as unscaled
        [w] = softmax_weights([a], [keep], False, reduction, score_scale)  # (B, h, T)
        ctx.reduction, ctx.retrieved = reduction, retrieved
        ctx.save_for_backward(q, k, v_, keep_b, circ, a, w, r_vhat, r_v, s_q, s_k, s_v, score_scale)
        ctx.mark_non_differentiable(w)
        if retrieved:  # u = ‖v‖ v̂ / ‖v̂‖ = v̂' r_v̂ / (s_v r_v), in place of v̂'
            return vhat.mul_((w * r_vhat / (r_v * s_v[..., 0]))[..., None]), w
        del vhat
        return w[..., None] * v, w  # (B, h, T, d), (B, h, T)

    @staticmethod
    def backward(ctx, g_out, _g_w):
        with autocast_off(g_out.device.type):  # a backward called inside autocast stays in float32
            return CirculantHrrAttention._backward(ctx, g_out)

    @staticmethod
    def _backward(ctx, g_out):
        # In the scaled variables (primes); ∂L/∂x = s_x ∂L/∂x', with each s_x folded into a small factor.
        q, k, v_, keep_b, circ, a, w, r_vhat, r_v, s_q, s_k, s_v, score_scale = ctx.saved_tensors
        reduction, s_q1, s_v1 = ctx.reduction, s_q[..., 0], s_v[..., 0]
        vhat = q @ (circ * s_q)  # v̂' (B, h, T, d), recomputed rather than stored
        if ctx.retrieved:  # out = w u, u = gain · v̂', gain = r_v̂ / (s_v r_v) = ‖v‖ r_v̂'
            gain, g_dot_vhat = r_vhat / (r_v * s_v1), rowdot(g_out, vhat)  # (B, h, T)
            g_w = gain * g_dot_vhat  # ⟨g, u⟩
        else:
            g_w = rowdot(g_out, v_) / s_v1  # ⟨g, v⟩ (B, h, T)
        g_a = w * (g_w - reduction.total([(w * g_w).sum(-1, keepdim=True)]))  # g_s (B, h, T)
        g_scale = None
        if score_scale is not None:
            inside = score_scale.abs() < MAX_SCORE_SCALE  # the clamp passes no gradient
            g_scale = ((a * g_a).sum((0, 2)) * inside).to(score_scale.dtype)  # (h,)
            g_a = g_a * score_scale.clamp(-MAX_SCORE_SCALE, MAX_SCORE_SCALE).to(a.dtype)[:, None]
        g_num = g_a * r_vhat * r_v  # (B, h, T)
        g_v = (g_num[..., None] * vhat).addcmul_((g_a * a * r_v.square())[..., None], v_, value=-1)  # ∂L/∂v' (score)
        # h = s_q ∂L/∂v̂', in place of v̂': then ∂L/∂q = h C'ᵀ and qᵀh = q'ᵀ ∂L/∂v̂'.
        coef_vhat = g_a * a * r_vhat.square()  # score: −coef v̂' + g_num v'
        if ctx.retrieved:  # output: gain (w g − r_v̂'² ⟨w g, v̂'⟩ v̂')
            coef_vhat = coef_vhat + w * gain * g_dot_vhat * r_vhat.square()
        h = vhat.mul_((coef_vhat * s_q1).neg_()[..., None]).addcmul_((g_num * s_q1)[..., None], v_)
        if ctx.retrieved:
            h.addcmul_((w * gain * s_q1)[..., None], g_out)
        g_q = h @ circ.transpose(-1, -2)  # (B, h, T, m·d)
        g_beta = reduction.total([wrapped_diagonal_sums(q.transpose(-1, -2) @ h).contiguous()])  # (B, h, m, d)
        g_mkv = hankel(g_beta)  # G' (B, h, m·d, d)
        del h
        coef_k = s_k if keep_b is None else keep_b[..., None] * s_k  # m s_k, (B, h or 1, T or 1, 1)
        g_v += (k * coef_k) @ g_mkv  # + (m⊙k') G'
        if ctx.retrieved:  # ∂L/∂v = s_v ∂L/∂v' + w ⟨g, v̂'⟩ r_v̂' r_v v' (through ‖v‖)
            g_v.mul_(s_v).addcmul_((w * g_dot_vhat * r_vhat * r_v)[..., None], v_)
        else:  # ∂L/∂v = s_v ∂L/∂v' + w g
            g_v.mul_(s_v).addcmul_(w[..., None], g_out)
        g_k = (v_ @ g_mkv.transpose(-1, -2)).mul_(coef_k)  # ∂L/∂k = s_k m ⊙ (v' G'ᵀ)
        return g_q, g_k, g_v, None, None, None, g_scale, None, None
