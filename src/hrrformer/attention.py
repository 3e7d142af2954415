"""HRR self-attention (Hrrformer, Alam et al. 2023) and a softmax baseline behind one interface.

Per head, with q, k, v of shape (T, d) and m_t = 1 for real tokens, 0 for padding::

    β     = Σ_t m_t (k_t ⊛ v_t)              # one superposition of all key-value pairs (d,)
    v̂_t   = q_t† ⊛ β                         # what query t retrieves                   (T, d)
    a_t   = cos(v_t, v̂_t)                    # in [-1, 1]                               (T,)
    w     = softmax_t(a), padded t → −∞      #                                          (T,)
    out_t = w_t · v_t                        #                                          (T, d)

With ``causal=True``, β_t = Σ_{s≤t} m_s (k_s ⊛ v_s) and w_t = exp(a_t) / Σ_{s≤t} m_s exp(a_s),
so output t depends on no position after t.

Because |a_t| ≤ 1, exp(a_t) lies in [1/e, e] and the softmax needs no max subtraction; a row
whose positions are all padding returns zeros.

Range: the cosine is computed with ‖x‖_ε = sqrt(‖x‖² + ε²), ε = :data:`COSINE_EPS`. Where the
largest magnitude of q, k or v in a (batch, head) is too large for T and d (float32, T = 1024,
d = 64: above 2^11; the plain formula's ‖v̂‖² overflows from about 1e5), the fast forms divide
that tensor by a power of two first, ε alike. Power-of-two scaling is exact in floating point, so
the scores are bit for bit those of the unscaled formula wherever that one neither overflows nor
underflows, and every finite input gives finite outputs. The output w·v keeps v's own scale.
Vectors whose norm is far below ε (say 1e-30) score a ≈ 0: their weights are uniform.

Three exact formulations of the same numbers live here:

* **circulant** (default without ``causal``): with M = Kᵀ·V (padded rows zeroed),
  β[n] = Σ_m M[m, (n − m) mod d] and v̂ = Q·C, C[j, n] = β[(j + n) mod d]: two matrix
  multiplies per head, no FFT. A custom autograd function with a hand-derived backward keeps
  only q, k, v, C and four (B, h, T) vectors for the backward pass.
* **fourier** (default with ``causal``, where β is a running sum): B_f = Σ_t m_t K_t V_t,
  V̂_t = conj(Q_t) B, ⟨v_t, v̂_t⟩ and ‖v̂_t‖ by Parseval; three rffts and no inverse FFT.
* **reference**: :func:`hrr_attention_reference`, the formula written plainly in the time
  domain, which the tests hold the fast forms to.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import hrr

__all__ = [
    "HrrAttention",
    "SoftmaxAttention",
    "hrr_attention",
    "hrr_attention_reference",
    "hrr_attention_weights",
    "softmax_attention",
]

Method = Literal["auto", "circulant", "fourier"]

#: Cosine guard: ‖x‖_ε = sqrt(‖x‖² + ε²). Shared by every formulation so they agree exactly.
COSINE_EPS = 1e-6


# ----------------------------------------------------------------------------- validation
def _check_attention_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, h, T, d), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k, v must have the same shape, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        b, _, t, _ = q.shape
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(
                f"key_padding_mask must be a bool tensor (True = padding), got dtype {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (b, t):
            raise ValueError(f"key_padding_mask must have shape (B, T) = {(b, t)}, got {tuple(key_padding_mask.shape)}")


def _keep_weights(key_padding_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) bool padding mask → (B, 1, T) float, 1 for real tokens, 0 for padding."""
    if key_padding_mask is None:
        return None
    return (~key_padding_mask).to(dtype)[:, None, :]


# ----------------------------------------------------------------------------- shared pieces
def _cosine_softmax(a: torch.Tensor, keep: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """Softmax over time of cosine scores a (B, h, T), padding excluded, prefix-normalised if causal.

    |a| ≤ 1, so exp(a) ≥ 1/e: a normaliser is either 0 (nothing real yet: the weights there are
    0 too, and it is replaced by 1) or ≥ 1/e. No max is subtracted, since exp(a) ≤ e.
    """
    e = torch.exp(a)  # (B, h, T)
    if keep is not None:
        e = e * keep
    denom = e.cumsum(-1) if causal else e.sum(-1, keepdim=True)
    return e / denom.masked_fill(denom == 0, 1.0)


def _wrapped_diagonal_sums(x: torch.Tensor) -> torch.Tensor:
    """(…, d, d) → (…, d) with out[n] = Σ_m x[m, (n − m) mod d]."""
    d = x.shape[-1]
    ar = torch.arange(d, device=x.device)
    idx = (ar[None, :] - ar[:, None]) % d  # idx[m, n] = (n − m) mod d
    return x.gather(-1, idx.expand(x.shape)).sum(-2)


def _hankel(beta: torch.Tensor) -> torch.Tensor:
    """(…, d) → (…, d, d) with C[j, n] = β[(j + n) mod d]."""
    d = beta.shape[-1]
    ar = torch.arange(d, device=beta.device)
    return beta[..., (ar[:, None] + ar[None, :]) % d]


def _parseval_weights(d: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """c_f / d for f = 0 … d//2, so that ⟨x, y⟩ = Σ_f (c_f/d) Re(F(x)_f conj(F(y))_f)."""
    c = torch.full((d // 2 + 1,), 2.0, device=device, dtype=dtype)
    c[0] = 1.0
    if d % 2 == 0:
        c[-1] = 1.0
    return c / d


# ----------------------------------------------------------------------------- circulant form
def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(…, T, d) · (…, T, d) → (…, T) without a (…, T, d) temporary (einsum lowers it to bmm)."""
    return torch.einsum("...d,...d->...", x, y)


def _inv_norm(x: torch.Tensor, eps2: torch.Tensor) -> torch.Tensor:
    """(‖x‖² + ε²)^(-1/2) over the last axis: (…, T, d) → (…, T); ``eps2`` holds ε², (…, 1)."""
    return torch.rsqrt(torch.linalg.vector_norm(x, dim=-1).square_().add_(eps2))


# ----------------------------------------------------------------------------- range control
#: (bits of the mantissa, exponent bias) of the compute dtypes, for exact powers of two.
_FLOAT_BITS = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def _safe_exponent(dtype: torch.dtype, t: int, d: int) -> int:
    """The largest E such that |q|, |k|, |v| ≤ 2^E keeps every intermediate finite, for length t
    and head size d: |β| ≤ t d |k||v|, |v̂| ≤ t d² |q||k||v|, so ‖v̂‖² ≤ t² d⁵ (|q||k||v|)² (and
    the Fourier form's |F(q)|²|B|² ≤ t² d⁶ (…)²) must stay below the dtype's largest power of two."""
    room = _FLOAT_BITS[dtype][2] - 3 - 2 * math.log2(max(t, 1)) - 6 * math.log2(max(d, 1))  # max = 2^(bias+1)
    return max(0, math.floor(room / 6))


def _downscale(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """A power of two s ≤ 1 per (batch, head), (B, h, 1, 1), with max|s·x| ≤ 2^exponent; s = 1
    where that holds already (so ordinary inputs are not touched at all).

    Built from the exponent bits of max|x| (no log, no pow: exactly a power of two). Multiplying
    by it is exact, so scores computed from s·x with ε scaled alike equal the unscaled ones.
    """
    x = x.detach()
    amax = torch.maximum(x.amax(dim=(-2, -1), keepdim=True), x.amin(dim=(-2, -1), keepdim=True).neg_())
    int_dtype, mantissa, bias = _FLOAT_BITS[x.dtype]
    biased = (amax.view(int_dtype) >> mantissa) & (2 * bias + 1)  # max|x| < 2^(biased − bias + 1)
    shift = (biased - (bias - 1) - exponent).clamp_(0, bias - 1)  # s = 2^−shift, a normal number
    return ((bias - shift) << mantissa).view(x.dtype)


def _downscales(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(s_q, s_k, s_v) of :func:`_downscale` for this length and head size."""
    exponent = _safe_exponent(q.dtype, q.shape[-2], q.shape[-1])
    return _downscale(q, exponent), _downscale(k, exponent), _downscale(v, exponent)


def _scaled_eps2(eps: float, dtype: torch.dtype, *scales: torch.Tensor) -> torch.Tensor:
    """ε² · Π s², (B, h, 1): the guard for a vector scaled by Π s. Floored at the smallest normal
    number, which changes nothing unless the unscaled computation would have overflowed."""
    out = torch.tensor(eps * eps, dtype=dtype, device=scales[0].device)
    for s in scales:
        out = out * s[..., 0] * s[..., 0]
    return out.clamp_min(torch.finfo(dtype).tiny)


class _CirculantHrrAttention(torch.autograd.Function):
    """Non-causal HRR attention by two matrix multiplies per head, with a hand-derived backward.

    Forward:  M = (m⊙K)ᵀV, β = diagsum(M), C = hankel(β), V̂ = QC,
              a = ⟨v, v̂⟩ r_v̂ r_v with r_x = (‖x‖² + ε²)^(-1/2), w = softmax(a), out = w v.
    Backward (g = ∂L/∂out):
              g_w = ⟨g, v⟩, g_a = w (g_w − Σ w g_w),
              ∂L/∂v̂ = g_a (r_v̂ r_v v − a r_v̂² v̂),
              ∂L/∂v = w g + g_a (r_v̂ r_v v̂ − a r_v² v) + (m⊙K) G,
              ∂L/∂q = (∂L/∂v̂) Cᵀ,  ∂L/∂β = diagsum(Qᵀ ∂L/∂v̂),  G = hankel(∂L/∂β),
              ∂L/∂k = m ⊙ (V Gᵀ).
    The scores are computed from q' = s_q q, k' = s_k k, v' = s_v v (exact powers of two, see
    :func:`_downscale`); s_k rides on the mask, s_q on the d×d matrix C, so only v' is a new
    full-size tensor. Only q, k, v', C and four (B, h, T) vectors are kept; V̂ is recomputed in
    backward (one matrix multiply) instead of stored. Full-size temporaries are updated in place,
    since on CPUs a fresh large tensor costs more in page faults than the arithmetic on it.
    """

    @staticmethod
    def forward(ctx, q, k, v, keep, eps: float):  # q, k, v (B, h, T, d); keep (B, 1, T) or None
        s_q, s_k, s_v = _downscales(q, k, v)  # (B, h, 1, 1)
        v_ = v * s_v  # v' (B, h, T, d)
        km = k * (s_k if keep is None else keep[..., None] * s_k)  # m ⊙ k' (B, h, T, d)
        circ = _hankel(_wrapped_diagonal_sums(km.transpose(-1, -2) @ v_))  # C' = s_k s_v C (B, h, d, d)
        vhat = q @ (circ * s_q)  # v̂' = s_q s_k s_v v̂ (B, h, T, d)
        r_vhat = _inv_norm(vhat, _scaled_eps2(eps, q.dtype, s_q, s_k, s_v))  # (B, h, T)
        r_v = _inv_norm(v_, _scaled_eps2(eps, q.dtype, s_v))  # (B, h, T)
        a = _rowdot(vhat, v_) * r_vhat * r_v  # (B, h, T), the same as unscaled
        del vhat
        w = _cosine_softmax(a, keep, causal=False)  # (B, h, T)
        ctx.save_for_backward(q, k, v_, keep, circ, a, w, r_vhat, r_v, s_q, s_k, s_v)
        return w[..., None] * v  # (B, h, T, d)

    @staticmethod
    def backward(ctx, g_out):
        # In the scaled variables (primes); ∂L/∂x = s_x ∂L/∂x', with each s_x folded into a small factor.
        q, k, v_, keep, circ, a, w, r_vhat, r_v, s_q, s_k, s_v = ctx.saved_tensors
        g_w = _rowdot(g_out, v_) / s_v[..., 0]  # ⟨g, v⟩ (B, h, T)
        g_a = w * (g_w - (w * g_w).sum(-1, keepdim=True))  # (B, h, T)
        g_num = g_a * r_vhat * r_v  # (B, h, T)
        vhat = q @ (circ * s_q)  # v̂' (B, h, T, d), recomputed rather than stored
        g_v = (g_num[..., None] * vhat).addcmul_((g_a * a * r_v.square())[..., None], v_, value=-1)  # ∂L/∂v' (score)
        # h = s_q ∂L/∂v̂', in place of v̂': then ∂L/∂q = h C'ᵀ and qᵀh = q'ᵀ ∂L/∂v̂'.
        s_q1 = s_q[..., 0]
        h = vhat.mul_((g_a * a * r_vhat.square() * s_q1).neg_()[..., None]).addcmul_((g_num * s_q1)[..., None], v_)
        g_q = h @ circ.transpose(-1, -2)  # (B, h, T, d)
        g_mkv = _hankel(_wrapped_diagonal_sums(q.transpose(-1, -2) @ h))  # G' (B, h, d, d)
        del h
        coef_k = s_k if keep is None else keep[..., None] * s_k  # m s_k, (B, h or 1, T or 1, 1)
        g_v += (k * coef_k) @ g_mkv  # + (m⊙k') G'
        g_v.mul_(s_v).addcmul_(w[..., None], g_out)  # ∂L/∂v = s_v ∂L/∂v' + w g
        g_k = (v_ @ g_mkv.transpose(-1, -2)).mul_(coef_k)  # ∂L/∂k = s_k m ⊙ (v' G'ᵀ)
        return g_q, g_k, g_v, None, None


# ----------------------------------------------------------------------------- Fourier form
def _fourier_scores(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None, causal: bool, eps: float
) -> torch.Tensor:
    """a_t = cos(v_t, q_t† ⊛ β_t) from three rffts and Parseval, no inverse FFT. → (B, h, T).

    q, k and v are first scaled by exact powers of two (see :func:`_downscale`), ε alike.
    """
    s_q, s_k, s_v = _downscales(q, k, v)  # (B, h, 1, 1)
    q, k, v = q * s_q, k * s_k, v * s_v
    qf, kf, vf = (torch.fft.rfft(x, dim=-1) for x in (q, k, v))  # (B, h, T, F), F = d//2 + 1
    bound = kf * vf
    if keep is not None:
        bound = bound * keep[..., None]
    beta = bound.cumsum(-2) if causal else bound.sum(-2, keepdim=True)  # (B, h, T or 1, F)
    eps2_vhat, eps2_v = _scaled_eps2(eps, q.dtype, s_q, s_k, s_v), _scaled_eps2(eps, q.dtype, s_v)
    return _parseval_cosine(qf, vf, v, beta, eps2_vhat, eps2_v)


def _parseval_cosine(
    qf: torch.Tensor,
    vf: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    eps2_vhat: torch.Tensor,
    eps2_v: torch.Tensor,
) -> torch.Tensor:
    """a_t = cos_ε(v_t, v̂_t), v̂_t = q_t† ⊛ β, from spectra only (Parseval, no inverse FFT).

    qf, vf: rfft of q and v (B, h, T, F); v (B, h, T, d); beta: the spectrum of β (B, h, T or 1, F);
    eps2_*: ε² for each norm (B, h, 1) or scalars. → (B, h, T).
    """
    weight = _parseval_weights(v.shape[-1], v.device, v.dtype)  # (F,)
    qv = qf * vf  # ⟨v, v̂⟩ = Σ_f c_f/d Re(conj(Q V) B)
    num = (qv.real * beta.real + qv.imag * beta.imag) @ weight  # (B, h, T)
    beta_abs2 = beta.real.square() + beta.imag.square()  # (B, h, T or 1, F)
    vhat_norm2 = ((qf.real.square() + qf.imag.square()) * beta_abs2) @ weight  # ‖v̂‖² (B, h, T)
    v_norm2 = v.square().sum(-1)
    return _Cosine.apply(num, vhat_norm2, v_norm2, eps2_vhat, eps2_v)


class _Cosine(torch.autograd.Function):
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


# ----------------------------------------------------------------------------- public functions
def hrr_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    method: Method = "auto",
    group=None,
) -> torch.Tensor:
    """HRR attention with the calling convention of ``F.scaled_dot_product_attention``.

    Args:
        q, k, v: (B, h, T, d), any float dtype (half precision is computed in float32).
        key_padding_mask: (B, T) bool, True = padding (PyTorch's meaning). Padding is excluded
            from β and from the softmax, so padding a sequence changes no real output.
        causal: β and the softmax normaliser run over positions ≤ t only.
        method: ``"circulant"`` (matrix form, non-causal only), ``"fourier"`` (Parseval form),
            or ``"auto"``: circulant unless causal.
        group: a ``torch.distributed`` process group over which the sequence is split (each rank
            holds a contiguous chunk, in rank order): β and the softmax normaliser are
            all-reduced, O(h·d) numbers per call; see :func:`hrrformer.parallel.sp_hrr_attention`.

    Returns:
        (B, h, T, d): ``w_t · v_t`` in the dtype of q.

    Range: finite for every finite input. Where q, k or v is too large for the dtype, T and d,
    it is divided by a power of two per (batch, head) before scoring (exact, so the numbers are
    those of the plain formula wherever it does not overflow); float32 inputs as large as 1e36
    give finite outputs and gradients (with unit upstream gradients), where the plain formula
    overflows from about 1e5. Vectors far shorter than :data:`COSINE_EPS` (e.g. 1e-30) score 0,
    so their weights are uniform; zero vectors give zero output and finite gradients. NaN or
    infinite inputs give NaN outputs.
    """
    if group is not None:
        from .parallel import sp_hrr_attention

        return sp_hrr_attention(q, k, v, key_padding_mask, causal, group=group, method=method)
    _check_attention_inputs(q, k, v, key_padding_mask)
    if method not in ("auto", "circulant", "fourier"):
        raise ValueError(f"method must be 'auto', 'circulant' or 'fourier', got {method!r}")
    if method == "circulant" and causal:
        raise ValueError("method='circulant' has no causal form (β would be a running d×d sum); use 'fourier'")
    dtype = hrr.compute_dtype(q.dtype)
    q_, k_, v_ = q.to(dtype), k.to(dtype), v.to(dtype)
    keep = _keep_weights(key_padding_mask, dtype)
    if method == "fourier" or causal:
        a = _fourier_scores(q_, k_, v_, keep, causal, COSINE_EPS)
        out = _cosine_softmax(a, keep, causal)[..., None] * v_
    else:
        out = _CirculantHrrAttention.apply(q_, k_, v_, keep, COSINE_EPS)
    return out.to(q.dtype)


@torch.no_grad()
def hrr_attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """The softmax weights w (B, h, T) of :func:`hrr_attention` (0 at padding; each row sums to 1
    over real positions without ``causal``). For attention maps; no gradient."""
    _check_attention_inputs(q, k, v, key_padding_mask)
    dtype = hrr.compute_dtype(q.dtype)
    keep = _keep_weights(key_padding_mask, dtype)
    a = _fourier_scores(q.to(dtype), k.to(dtype), v.to(dtype), keep, causal, COSINE_EPS)
    return _cosine_softmax(a, keep, causal)


def hrr_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """The formula of the paper written plainly, in the time domain. Slow; for tests.

    bind each key-value pair, sum (or running-sum) them into β, unbind with each query's
    flip-and-roll inverse, cosine against the value, softmax with padding at −∞ (causal: the
    explicit T × T lower-triangular softmax, of which output t takes the diagonal entry).
    """
    _check_attention_inputs(q, k, v, key_padding_mask)
    dtype = hrr.compute_dtype(q.dtype)
    q_, k_, v_ = q.to(dtype), k.to(dtype), v.to(dtype)
    b, _, t, _ = q.shape
    pad = torch.zeros(b, t, dtype=torch.bool, device=q.device) if key_padding_mask is None else key_padding_mask
    bound = hrr.bind(k_, v_).masked_fill(pad[:, None, :, None], 0.0)  # (B, h, T, d)
    beta = bound.cumsum(-2) if causal else bound.sum(-2, keepdim=True)  # (B, h, T or 1, d)
    vhat = hrr.bind(hrr.approx_inverse(q_), beta)  # (B, h, T, d)
    a = hrr.cosine_similarity(v_, vhat, eps=COSINE_EPS)  # (B, h, T)
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
    return (w[..., None] * v_).to(q.dtype)


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention with the same signature; fully padded rows return zeros."""
    _check_attention_inputs(q, k, v, key_padding_mask)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    t = q.shape[-2]
    allowed = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()  # (B, 1, T, T)
    nothing_allowed = ~allowed.any(-1, keepdim=True)  # (B, 1, T or 1, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | nothing_allowed)
    return out.masked_fill(nothing_allowed, 0.0)


# ----------------------------------------------------------------------------- modules
class _MultiHeadAttention(nn.Module):
    """Projections, head split and merge around an attention kernel (the one seam to swap)."""

    def __init__(
        self, embed_dim: int, num_heads: int, bias: bool = False, dropout: float = 0.0, causal: bool = False
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, causal
        self.head_dim = embed_dim // num_heads
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, E) → q, k, v, each (B, h, T, d) and contiguous (one copy here saves several
        inside the batched matrix multiplies of the attention)."""
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, 3, self.num_heads, self.head_dim)  # (B, T, 3, h, d)
        return qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # 3 × (B, h, T, d)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, E), key_padding_mask (B, T) bool with True = padding → (B, T, E)."""
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must have shape (B, T, embed_dim={self.embed_dim}), got {tuple(x.shape)}")
        if key_padding_mask is not None and (
            key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != tuple(x.shape[:2])
        ):
            raise ValueError(
                f"key_padding_mask must be bool of shape (B, T) = {tuple(x.shape[:2])}, "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        b, t, e = x.shape
        q, k, v = self.split_heads(x)
        y = self.attend(q, k, v, key_padding_mask)  # (B, h, T, d)
        y = y.transpose(1, 2).reshape(b, t, e)  # (B, T, E)
        return self.out_proj(self.dropout(y))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError


class HrrAttention(_MultiHeadAttention):
    """Multi-head HRR self-attention, a drop-in for self-attention uses of ``nn.MultiheadAttention``.

    ``forward(x, key_padding_mask=None)``: x (B, T, E) batch-first, key_padding_mask (B, T) bool
    with True = padding → (B, T, E). Time O(T·d²) or O(T·d log d), memory O(T·d) per head.
    ``projection=True`` applies π (unit-magnitude spectrum) to q and k before attending.
    ``length_scale=True`` multiplies each output by the number n of real positions its softmax
    runs over (n_t = real positions ≤ t when causal): n·w_t·v_t. The weights sum to 1, so the
    paper's w_t·v_t is about v_t / T, and the attention branch starts ~1/T the size of the
    residual it is added to (measured: 7·10⁻⁴ at T ≈ 1,100, EXPERIMENTS.md); scaled, uniform
    weights give v_t and the weights act as gates around 1. Off by default (the paper's formula).
    Dropout is applied to the merged heads before the output projection.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = False,
        dropout: float = 0.0,
        causal: bool = False,
        projection: bool = False,
        method: Method = "auto",
        length_scale: bool = False,
    ) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, dropout=dropout, causal=causal)
        self.projection, self.method, self.length_scale = projection, method, length_scale

    #: When True, each forward stores its attention weights w (B, h, T) in ``last_weights``.
    record_weights: bool = False

    #: A ``torch.distributed`` group over which the sequence is split (each rank holds a contiguous
    #: chunk; see :mod:`hrrformer.parallel`), or None. ``sequence_parallel_check``: gather every
    #: rank's shapes first, so bad input raises on all ranks instead of hanging one.
    sequence_parallel_group = None
    sequence_parallel_check: bool = True

    def attend(self, q, k, v, key_padding_mask):
        if self.projection:
            q, k = hrr.projection(q), hrr.projection(k)
        if self.sequence_parallel_group is not None:
            from .parallel import sp_hrr_attention

            if self.length_scale:
                raise ValueError("length_scale is not supported with sequence parallelism")
            return sp_hrr_attention(
                q, k, v, key_padding_mask, causal=self.causal, group=self.sequence_parallel_group,
                method=self.method, check=self.sequence_parallel_check,
            )  # fmt: skip
        if self.record_weights:
            self.last_weights = hrr_attention_weights(q, k, v, key_padding_mask, self.causal)
        out = hrr_attention(q, k, v, key_padding_mask, causal=self.causal, method=self.method)  # (B, h, T, d)
        if self.length_scale:
            out = out * real_position_counts(key_padding_mask, q.shape[-2], self.causal, q)
        return out


def real_position_counts(
    key_padding_mask: torch.Tensor | None, length: int, causal: bool, like: torch.Tensor
) -> torch.Tensor:
    """n, the number of real positions each softmax of :func:`hrr_attention` normalises over:
    (B, 1, 1, 1), or (B, 1, T, 1) with n_t = real positions ≤ t when causal (at least 1), in the
    dtype and device of ``like``."""
    keep = _keep_weights(key_padding_mask, like.dtype)  # (B, 1, T) or None
    if keep is None:
        keep = like.new_ones(1, 1, length)
    counts = keep.cumsum(-1).clamp_min(1.0) if causal else keep.sum(-1, keepdim=True)  # (B, 1, T or 1)
    return counts[..., None]


class SoftmaxAttention(_MultiHeadAttention):
    """Softmax attention (``F.scaled_dot_product_attention``) with HrrAttention's interface.

    Dropout, as in :class:`HrrAttention`, acts on the merged heads before the output projection.
    """

    def attend(self, q, k, v, key_padding_mask):
        return softmax_attention(q, k, v, key_padding_mask, self.causal)
