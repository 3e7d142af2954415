"""Attention layers: HRR self-attention (Hrrformer, Alam et al. 2023) and a softmax baseline
behind one interface, like ``torch.nn.MultiheadAttention`` (batch-first, ``key_padding_mask``
with True = padding).

The HRR kernel itself is written once in :mod:`hrrformer.ops.hrr_attention` (its reference, the
circulant and Fourier forms, range control and the reduction over the sequence); its functions
are re-exported here. A layer's ``forward(x, key_padding_mask, reduction=None)`` takes the
reduction of the execution context: None in one process, a
:class:`~hrrformer.ops.hrr_attention.SequenceReduction` over a process group for sequence
parallelism. Softmax attention has no such form (it would need ring attention) and refuses one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import hrr
from .ops.hrr_attention import (
    COSINE_EPS,
    Method,
    SequenceReduction,
    hrr_attention,
    hrr_attention_reference,
    hrr_attention_weights,
)
from .ops.hrr_attention.validation import Output, check_attention_inputs, check_method

__all__ = [
    "COSINE_EPS",
    "HrrAttention",
    "SoftmaxAttention",
    "hrr_attention",
    "hrr_attention_reference",
    "hrr_attention_weights",
    "softmax_attention",
]


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention with the same signature; fully padded rows return zeros."""
    check_attention_inputs(q, k, v, key_padding_mask)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    t = q.shape[-2]
    allowed = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()  # (B, 1, T, T)
    nothing_allowed = ~allowed.any(-1, keepdim=True)  # (B, 1, T or 1, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | nothing_allowed)
    return out.masked_fill(nothing_allowed, 0.0)


def _contiguous_as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x contiguous and in ``dtype``, in one copy (``Tensor.to`` ignores the layout when the dtype matches)."""
    return x.contiguous() if x.dtype == dtype else x.to(dtype, memory_format=torch.contiguous_format)


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matrix multiply reads x in: autocast's where it is on, else x's own. Casting the
    attention output to it in the copy that merges the heads saves autocast a second pass."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


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

    def split_heads(self, x: torch.Tensor, upcast: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, E) → q, k, v, each (B, h, T, d) and contiguous (one copy here saves several
        inside the batched matrix multiplies of the attention). ``upcast``: in the HRR kernel's
        dtype (float32 for a half-precision projection under autocast), cast in the same copy."""
        b, t, _ = x.shape
        qkv = self.qkv_proj(x).view(b, t, 3, self.num_heads, self.head_dim)  # (B, T, 3, h, d)
        dtype = hrr.compute_dtype(qkv.dtype) if upcast else qkv.dtype
        return _contiguous_as(qkv.permute(2, 0, 3, 1, 4), dtype).unbind(0)  # 3 × (B, h, T, d)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        reduction: SequenceReduction | None = None,
    ) -> torch.Tensor:
        """x (B, T, E), key_padding_mask (B, T) bool with True = padding → (B, T, E).

        ``reduction``: how sums over the sequence are taken (None: this x is the whole sequence;
        a :class:`~hrrformer.ops.hrr_attention.SequenceReduction` over a group: x is this rank's part)."""
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
        y = self.attend(q, k, v, key_padding_mask, reduction)  # (B, h, T, d)
        y = _contiguous_as(y.transpose(1, 2), _matmul_dtype(y)).view(b, t, e)  # (B, T, E)
        return self.out_proj(self.dropout(y))

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        reduction: SequenceReduction | None = None,
    ) -> torch.Tensor:
        """The kernel: q, k, v (B, h, T, d) → (B, h, T, d)."""
        raise NotImplementedError


class HrrAttention(_MultiHeadAttention):
    """Multi-head HRR self-attention, a drop-in for self-attention uses of ``nn.MultiheadAttention``.

    ``forward(x, key_padding_mask=None, reduction=None)``: x (B, T, E) batch-first, key_padding_mask (B, T) bool
    with True = padding → (B, T, E). Time O(T·d²) or O(T·d log d), memory O(T·d) per head.
    ``projection=True`` applies π (unit-magnitude spectrum) to q and k before attending.
    ``length_scale=True`` multiplies each output by the number n of real positions its softmax
    runs over (n_t = real positions ≤ t when causal): n·w_t·v_t. The weights sum to 1, so the
    paper's w_t·v_t is about v_t / T, and the attention branch starts ~1/T the size of the
    residual it is added to (measured: 7·10⁻⁴ at T ≈ 1,100, EXPERIMENTS.md); scaled, uniform
    weights give v_t and the weights act as gates around 1. Off by default (the paper's formula).
    ``score_scale=τ`` (a float): w = softmax_t(τ_h a_t) per head h, τ_h starting at τ; |τ| is clamped
    at 40. The paper's cosine scores lie in [−1, 1], so without it every weight is within e² of
    uniform. None (default): the paper's formula. ``learn_score_scale=True`` learns it as
    τ_h = exp(ρ_h), ρ_h = log τ a parameter (``log_score_scale``; τ > 0): Adam then changes τ by a
    roughly constant *fraction* per step (~lr), where learning τ itself moved it by ~lr in absolute
    terms, 16 → 16.07 in 2,000 steps (EXPERIMENTS.md). Fixed, τ is a buffer (``score_scale``).
    ``output="retrieved"``: position t outputs w_t ‖v_t‖ v̂_t / ‖v̂_t‖, the direction of what its
    query unbinds from β (content from the whole sequence), instead of the paper's w_t v_t (its own
    value times one scalar).
    ``pads_in_beta=True``: the authors' padding, pads bound into β and masked in the softmax only
    (see :func:`~hrrformer.ops.hrr_attention.hrr_attention`).
    ``memories=m`` (> 1): several β per head. A router (``router``, a Linear E → 2·h·m, PyTorch's
    random initialisation: uniform routes are a saddle point where every memory gets the same
    gradient) gives each position query and key routes r_t^q, r_t^k = softmax over m, per head, and
    the kernel runs on the blocks q_t^(j) = r_t^q(j) q_t, k_t^(j) = r_t^k(j) k_t::

        β_j = Σ_t m_t r_t^k(j) (k_t ⊛ v_t),   v̂_t = Σ_j r_t^q(j) (q_t† ⊛ β_j)

    so each memory superposes the pairs routed to it (~T/m of them instead of T, whose crosstalk is
    ~1/√T) and each query reads the memories it routes to. m = 1 (default): the paper's one β.
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
        score_scale: float | None = None,
        learn_score_scale: bool = False,
        output: Output = "value",
        pads_in_beta: bool = False,
        memories: int = 1,
    ) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, dropout=dropout, causal=causal)
        if memories < 1:
            raise ValueError(f"memories must be ≥ 1, got {memories}")
        self.memories = memories
        self.router = nn.Linear(embed_dim, 2 * num_heads * memories) if memories > 1 else None
        self.projection, self.method, self.length_scale, self.output = projection, method, length_scale, output
        self.pads_in_beta = pads_in_beta
        check_method(method, causal, output)
        if learn_score_scale and score_scale is None:
            raise ValueError("learn_score_scale=True needs a score_scale to start from")
        learned = score_scale is not None and learn_score_scale
        if learned and score_scale <= 0:
            raise ValueError(f"learn_score_scale=True learns log τ and needs score_scale > 0, got {score_scale}")
        fixed = score_scale is not None and not learn_score_scale
        self.score_scale: torch.Tensor | None
        self.register_buffer("score_scale", torch.full((num_heads,), float(score_scale)) if fixed else None)
        self.log_score_scale = nn.Parameter(torch.full((num_heads,), math.log(score_scale))) if learned else None

    def score_scales(self) -> torch.Tensor | None:
        """τ (h,) as the kernel uses it: exp(log τ) when learned, the fixed buffer, or None (the paper)."""
        if self.log_score_scale is not None:
            return self.log_score_scale.exp()
        return self.score_scale

    #: When True, each forward stores its attention weights w (B, h, T) in ``last_weights``.
    record_weights: bool = False

    def heads(self, x: torch.Tensor, parts: str = "qkv") -> list[torch.Tensor]:
        """The heads of ``parts`` ⊆ "qkv" of x (B, T, E), as the kernel takes them: v (B, h, T, d);
        q, k (B, h, T, m·d), π applied (``projection``) and split into the routed memory blocks
        (``memories``; m = 1: (B, h, T, d)). Only the named parts are projected."""
        if parts == "qkv":
            named = dict(zip("qkv", super().split_heads(x, upcast=True), strict=True))
        else:
            named = {part: self._project(x, "qkv".index(part)) for part in parts}
        routes = self.routes(x) if self.router is not None and set(parts) & {"q", "k"} else None
        for part in set(parts) & {"q", "k"}:
            y = hrr.projection(named[part]) if self.projection else named[part]
            if routes is not None:
                r = routes["qk".index(part)]  # (B, h, T, m)
                y = (r[..., None] * y[..., None, :]).flatten(-2)  # (B, h, T, m·d): block j = r(j) y
            named[part] = y
        return [named[part] for part in parts]

    def _project(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """One of q (0), k (1), v (2): (B, T, E) → (B, h, T, d), from its rows of ``qkv_proj``."""
        b, t, e = x.shape
        rows = slice(index * e, (index + 1) * e)  # qkv_proj.weight (3E, E): rows q, then k, then v
        bias = self.qkv_proj.bias
        y = F.linear(x, self.qkv_proj.weight[rows], None if bias is None else bias[rows])  # (B, T, E)
        return y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)

    def routes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory routes (r^q, r^k) of x (B, T, E), each (B, h, T, m), softmax over m."""
        b, t, _ = x.shape
        logits = self.router(x).view(b, t, 2, self.num_heads, self.memories)  # (B, T, 2, h, m)
        return logits.softmax(-1).permute(2, 0, 3, 1, 4).unbind(0)  # 2 × (B, h, T, m)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.heads(x)
        return q, k, v

    def attend(self, q, k, v, key_padding_mask, reduction=None):
        out, w = hrr_attention(
            q, k, v, key_padding_mask, causal=self.causal, method=self.method,
            reduction=reduction, length_scale=self.length_scale, score_scale=self.score_scales(), output=self.output,
            pads_in_beta=self.pads_in_beta, return_weights=True,
        )  # fmt: skip
        if self.record_weights:
            self.last_weights = w
        return out  # (B, h, T, d)


class SoftmaxAttention(_MultiHeadAttention):
    """Softmax attention (``F.scaled_dot_product_attention``) with HrrAttention's interface.

    Dropout, as in :class:`HrrAttention`, acts on the merged heads before the output projection.
    """

    def attend(self, q, k, v, key_padding_mask, reduction=None):
        if reduction is not None and reduction.parallel:
            raise ValueError(
                "sequence parallelism supports HRR attention only: softmax attention would need O(T) "
                "communication per layer (ring attention)"
            )
        return softmax_attention(q, k, v, key_padding_mask, self.causal)
