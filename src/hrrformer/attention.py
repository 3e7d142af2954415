"""Attention layers: HRR self-attention (Hrrformer, Alam et al. 2023), a softmax baseline and the
no-attention ablation behind one interface, like ``torch.nn.MultiheadAttention`` (batch-first,
``key_padding_mask`` with True = padding), each with the optional layer parts of
:mod:`hrrformer.parts` (short convolution, output gate). :mod:`hrrformer.kinds` lists them.

The HRR kernel itself is written once in :mod:`hrrformer.ops.hrr_attention` (its reference, the
circulant and Fourier forms, range control and the reduction over the sequence); its functions
are re-exported here. A layer's ``forward(x, key_padding_mask, reduction=None)`` takes the
reduction of the execution context: None in one process, a
:class:`~hrrformer.ops.hrr_attention.SequenceReduction` over a process group for sequence
parallelism. Softmax attention has no such form (it would need ring attention) and refuses one.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, get_args

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
from .ops.hrr_attention.precision import autocast_off
from .ops.hrr_attention.routed import Routed
from .ops.hrr_attention.validation import Output, check_attention_inputs, check_method, check_recall_options
from .parts import (
    ConvInit,
    Halo,
    OutputGate,
    ShortConvolution,
    ValueSkip,
    check_short_conv_init,
    contiguous_as,
    halos,
    matmul_dtype,
)

__all__ = [
    "COSINE_EPS",
    "ROUTINGS",
    "HrrAttention",
    "NoAttention",
    "Routing",
    "SoftmaxAttention",
    "hrr_attention",
    "hrr_attention_reference",
    "hrr_attention_weights",
    "softmax_attention",
]


#: How the memories of a head are chosen (``memories`` > 1): by a map of the block's input x
#: ("input"), or by the head's own q and k ("key"), so that a query reads what its own key wrote.
Routing = Literal["input", "key"]
ROUTINGS: tuple[str, ...] = get_args(Routing)
#: The key router's initial scale: logits ŷ·R of std 8 give nearly one-hot routes over m ≤ 64.
KEY_ROUTE_SCALE = 8.0


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


# ----------------------------------------------------------------------------- modules
class _MultiHeadAttention(nn.Module):
    """Projections, the optional parts, head split and merge around an attention kernel (the one
    seam to swap)::

        x (B, T, E) ─x W (the ``projected`` parts)─► [short conv + SiLU] ─► heads (B, h, T, d) each
                    ─attend─► o (B, h, T, d) ─merge─► [gate] ─► dropout ─► out_proj ─► (B, T, E)

    ``short_conv=K``: a depthwise causal convolution of kernel K on the projections, then SiLU;
    ``output_gate=True``: o ← RMSNorm_d(o) ⊙ SiLU(x W_g) before the output projection;
    ``value_skip=True``: o ← o + D ⊙ v_t first, the attention added to the block without it (kinds
    that mix positions only) (:mod:`hrrformer.parts`). None and False (defaults): none of them, the
    paper's layer.
    ``head_dim=d``: each head's width, so the projections map E → h·d and the output projection
    h·d → E (None, the default: d = E / h, ``nn.MultiheadAttention``'s). For HRR it is the
    memory's size: n pairs superposed in d dimensions unbind with crosstalk ~√(n/d).
    ``shared_qk=True``: q and k from one projection, W_q = W_k (``qkv_proj`` holds k's and v's
    rows); each keeps its own short-convolution filters.
    ``short_conv_init="shift"``: the convolution's filters start as unit impulses, k's at lag 1
    and q's and v's at lag 0 (a token shift: k_t ⊛ v_t binds token t − 1 to token t); "random"
    (default): PyTorch's initialisation.
    """

    #: The projections a position makes, in the order of ``qkv_proj``'s rows (E each).
    projected: ClassVar[str] = "qkv"
    #: The heads are upcast to the kernel's compute dtype (float32 for half precision) in their copy.
    upcast: ClassVar[bool] = False
    #: Whether an output depends on other positions than its own (beyond the short convolution's).
    mixes_positions: ClassVar[bool] = True

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = False,
        dropout: float = 0.0,
        causal: bool = False,
        short_conv: int | None = None,
        output_gate: bool = False,
        head_dim: int | None = None,
        shared_qk: bool = False,
        short_conv_init: ConvInit = "random",
        value_skip: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive, got {embed_dim} and {num_heads}")
        if head_dim is None and embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if head_dim is not None and head_dim < 1:
            raise ValueError(f"head_dim must be ≥ 1 or None, got {head_dim}")
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, causal
        self.head_dim = embed_dim // num_heads if head_dim is None else head_dim
        self.inner_dim = num_heads * self.head_dim  # h·d: the width of each projection
        if shared_qk and self.projected != "qkv":
            raise ValueError(f"shared_qk needs q and k projections; {type(self).__name__} projects {self.projected!r}")
        self.shared_qk = shared_qk
        width = len(self.projected) * self.inner_dim
        self.qkv_proj = nn.Linear(embed_dim, width - self.inner_dim if shared_qk else width, bias=bias)
        check_short_conv_init(short_conv, short_conv_init)
        self.short_conv = (
            None if short_conv is None else ShortConvolution(width, short_conv, self._conv_delays(short_conv_init))
        )
        self.gate = OutputGate(embed_dim, num_heads, self.head_dim) if output_gate else None
        if value_skip and not self.mixes_positions:
            raise ValueError(f"value_skip adds v_t to an attention's output; {type(self).__name__} outputs v_t itself")
        self.skip = ValueSkip(num_heads, self.head_dim) if value_skip else None
        self.out_proj = nn.Linear(self.inner_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _conv_delays(self, init: ConvInit) -> list[int] | None:
        """The lag each convolution channel starts at: None for random filters; for ``"shift"``,
        1 for k's channels and 0 for the others (q, v), in ``projected``'s order."""
        if init == "random":
            return None
        return [int(part == "k") for part in self.projected for _ in range(self.inner_dim)]

    @property
    def halo_size(self) -> int:
        """How many positions before a piece of the sequence the layer reads (K − 1; 0 without a short convolution)."""
        return 0 if self.short_conv is None else self.short_conv.context

    def _rows(self, parts: str) -> slice | torch.Tensor | None:
        """The rows of ``qkv_proj`` (and channels of the convolution) of ``parts``, in their order
        (None: all of them)."""
        if parts == self.projected:
            return None
        e, first = self.inner_dim, self.projected.index(parts[0])
        if self.projected[first : first + len(parts)] == parts:
            return slice(first * e, (first + len(parts)) * e)  # a view
        device = self.qkv_proj.weight.device
        return torch.cat([torch.arange(i * e, (i + 1) * e, device=device) for i in map(self.projected.index, parts)])

    def project(
        self,
        x: torch.Tensor,
        parts: str | None = None,
        key_padding_mask: torch.Tensor | None = None,
        halo: Halo | None = None,
    ) -> torch.Tensor:
        """x (B, T, E) → the heads of the projections x W_p of ``parts`` ⊆ ``projected``, (n, B, h, T, d)
        contiguous in the kernel's dtype, through the short convolution and SiLU where there is one
        (which writes them in this layout); padding is zeroed before it and ``halo`` holds the K − 1
        positions before x (None: x starts the sequence)."""
        parts = parts or self.projected
        rows = self._rows(parts)
        weight, bias = self.projection_weights()
        if rows is not None:
            weight, bias = weight[rows], None if bias is None else bias[rows]
        conv, heads = self.short_conv, (self.num_heads, self.head_dim)
        if conv is None:
            y = F.linear(x, weight, bias)  # (B, T, n·h·d)
            b, t, _ = y.shape
            y = y.view(b, t, len(parts), *heads).permute(2, 0, 3, 1, 4)  # (n, B, h, T, d)
            return contiguous_as(y, self._heads_dtype(y.dtype, y.device))
        u, before = conv.inputs(x, key_padding_mask, halo, lambda z: F.linear(z, weight, bias), bias is not None)
        return conv(u, before, rows, heads, self._heads_dtype(hrr.compute_dtype(u.dtype), u.device))  # (n, B, h, T, d)

    def _heads_dtype(self, dtype: torch.dtype, device: torch.device) -> torch.dtype:
        """The heads' dtype for projections in ``dtype``: the kernel's (float32 at least) where it
        ``upcast``s, else the one its matrix multiplies read (autocast's where it is on)."""
        return hrr.compute_dtype(dtype) if self.upcast else matmul_dtype(dtype, device)

    def projection_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight (n·h·d, E) and bias of every projected part, in ``projected``'s order: ``qkv_proj``'s
        own, or with ``shared_qk`` its k rows twice, [W_k; W_k; W_v] (one parameter, two uses)."""
        weight, bias = self.qkv_proj.weight, self.qkv_proj.bias
        if not self.shared_qk:
            return weight, bias
        e = self.inner_dim
        twice = [0, 0, 1]  # q and k read block 0, v block 1

        def blocks(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[i * e : (i + 1) * e] for i in twice])

        return blocks(weight), None if bias is None else blocks(bias)

    def heads(
        self,
        x: torch.Tensor,
        parts: str | None = None,
        key_padding_mask: torch.Tensor | None = None,
        halo: Halo | None = None,
    ) -> list[torch.Tensor]:
        """The heads of ``parts`` ⊆ ``projected`` (default all) of x (B, T, E) as the kernel takes
        them, each (B, h, T, d) and contiguous (one copy here saves several inside the batched matrix
        multiplies), in the kernel's dtype where ``upcast`` (cast in the same copy). See :meth:`project`."""
        return list(self.project(x, parts, key_padding_mask, halo).unbind(0))  # n × (B, h, T, d)

    def project_out(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The attention's output y (B, h, T, d) → (B, T, E): heads merged, gated by the layer's
        input x (B, T, E) (``output_gate``), dropout, output projection."""
        b, _, t, _ = y.shape
        if self.gate is None:
            merged = contiguous_as(y.transpose(1, 2), matmul_dtype(y.dtype, y.device)).view(
                b, t, self.inner_dim
            )  # (B, T, h·d)
        else:  # the norm in float32 at least, reading the heads in place
            merged = self.gate(y.transpose(1, 2), x)  # (B, T, h·d)
        return self.out_proj(self.dropout(merged))

    def halo(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, reduction: SequenceReduction | None
    ) -> Halo | None:
        """The K − 1 positions before this rank's part x (from the ranks before it), or None where
        there are none to fetch (no short convolution; one process: x starts the sequence)."""
        if not self.halo_size or reduction is None or not reduction.parallel:
            return None
        return halos([x], [key_padding_mask], self.halo_size, reduction)[0]

    def check_reduction(self, reduction: SequenceReduction | None) -> None:
        """ValueError where the layer cannot take its sums through ``reduction`` (before any collective)."""

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
        self.check_reduction(reduction)
        return self.piece(x, key_padding_mask, reduction, self.halo(x, key_padding_mask, reduction))

    def piece(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        reduction: SequenceReduction | None,
        halo: Halo | None,
    ) -> torch.Tensor:
        """The layer on x (B, T, E), a piece of the sequence whose K − 1 positions before it are ``halo``."""
        heads = self.heads(x, None, key_padding_mask, halo)  # v last
        y = self.attend(*heads, key_padding_mask, reduction)  # (B, h, T, d)
        return self.project_out(self.skipped(y, heads[-1]), x)

    def skipped(self, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention's output y (B, h, T, d) plus D ⊙ v (``value_skip``; y itself without it)."""
        return y if self.skip is None else self.skip(y, v)

    def attend(self, *heads: torch.Tensor) -> torch.Tensor:
        """The kernel: the heads of ``projected`` (B, h, T, d) each, key_padding_mask, reduction → (B, h, T, d)."""
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
    value times one scalar). ``output="recall"``: position t outputs √d v̂_t / ‖v̂_t‖, that direction
    at RMS 1, with no score and no softmax weight (0 at padding; Fourier form only, so ``method``
    "auto" picks it): β as an associative memory that q_t reads. It refuses ``length_scale``,
    ``score_scale`` and ``learn_score_scale``, which act on the weights it does not have.
    ``write_gate=True``: a learned write gate g_t = sigmoid(x_t W_w + b_w) per position and head
    (``write_gate``, a Linear E → h, bias 0 at first: g = 1/2 everywhere), and k_t ← g_t k_t (all
    m·d channels of the head) before the kernel, so β = Σ_t m_t g_t (k_t ⊛ v_t): each position
    decides how much it writes into the memory; q is not gated. Applied where the heads are
    formed (:meth:`heads`), so the chunked and sequence-parallel paths gate alike.
    ``pads_in_beta=True``: the authors' padding, pads bound into β and masked in the softmax only
    (see :func:`~hrrformer.ops.hrr_attention.hrr_attention`).
    ``memories=m`` (> 1): several β per head. A router (``router``, a Linear E → 2·h·m, PyTorch's
    random initialisation: uniform routes are a saddle point where every memory gets the same
    gradient) gives each position query and key routes r_t^q, r_t^k = softmax over m, per head, and
    the kernel runs on the blocks q_t^(j) = r_t^q(j) q_t, k_t^(j) = r_t^k(j) k_t::

        β_j = Σ_t m_t r_t^k(j) (k_t ⊛ v_t),   v̂_t = Σ_j r_t^q(j) (q_t† ⊛ β_j)

    so each memory superposes the pairs routed to it (~T/m of them instead of T, whose crosstalk is
    ~1/√T) and each query reads the memories it routes to. m = 1 (default): the paper's one β.
    ``routing="key"`` routes each head by its own q or k instead of by x: with one map R_h (d × m,
    ``key_router``, entries N(0, 8²) at first, so that routes start nearly one-hot),
    r_t^q = softmax(q̂_t R_h), r_t^k = softmax(k̂_t R_h), ŷ = y / ‖y‖_ε (after π). A query and a key
    that are equal then route alike, so the weight with which q_t reads the pair written at s,
    r_t^q · r_s^k, is ~1 for its own key and ~1/m for another: the write is selected by the match,
    as softmax's is, and a query reads ~n/m of n writes (``research/hrr_capacity.py --memories``).
    ``short_conv=K``, ``output_gate=True``, ``value_skip=True``: the layer parts of
    :mod:`hrrformer.parts` (a causal convolution of q, k and v; a gated RMSNorm of the output; the
    position's own value added to the output, o + D ⊙ v_t); off by default. ``head_dim=d``: the
    size of each head's memory β, independent of E (default E / h); the cost grows as O(T·d log d).
    ``shared_qk=True``: W_q = W_k. With ``projection`` and a short convolution, q_t and k_s are then
    the same function of their windows but for the convolution's filters: when q's filter reads
    lag 0 and k's lag 1 (where ``short_conv_init="shift"`` starts them), the key stored at s + 1
    (token s) unbinds exactly with the query of the same token, q_t† ⊛ k_{s+1} = δ.
    Dropout is applied to the merged heads before the output projection.
    """

    upcast = True

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
        short_conv: int | None = None,
        output_gate: bool = False,
        write_gate: bool = False,
        head_dim: int | None = None,
        shared_qk: bool = False,
        short_conv_init: ConvInit = "random",
        routing: Routing = "input",
        value_skip: bool = False,
    ) -> None:
        super().__init__(
            embed_dim, num_heads, bias, dropout, causal, short_conv, output_gate, head_dim, shared_qk, short_conv_init,
            value_skip,
        )  # fmt: skip
        if memories < 1:
            raise ValueError(f"memories must be ≥ 1, got {memories}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if routing == "key" and memories == 1:
            raise ValueError("routing='key' routes several memories: it needs memories > 1")
        self.memories, self.routing = memories, routing
        routed = memories > 1
        self.router = nn.Linear(embed_dim, 2 * num_heads * memories) if routed and routing == "input" else None
        self.key_router = (
            nn.Parameter(KEY_ROUTE_SCALE * torch.randn(num_heads, self.head_dim, memories))
            if routed and routing == "key"
            else None
        )
        self.write_gate = nn.Linear(embed_dim, num_heads) if write_gate else None
        if self.write_gate is not None:
            nn.init.zeros_(self.write_gate.bias)
        self.projection, self.method, self.length_scale, self.output = projection, method, length_scale, output
        self.pads_in_beta = pads_in_beta
        check_method(method, causal, output)
        check_recall_options(output, length_scale, score_scale is not None or learn_score_scale)
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

    def heads(
        self,
        x: torch.Tensor,
        parts: str | None = None,
        key_padding_mask: torch.Tensor | None = None,
        halo: Halo | None = None,
    ) -> list[torch.Tensor]:
        """The heads of ``parts`` ⊆ "qkv" (default all) of x (B, T, E), as the kernel takes them, in
        its compute dtype: v (B, h, T, d); q, k (B, h, T, d), π applied (``projection``), k times its
        write gate (``write_gate``), and with ``memories`` > 1 each with its routes
        (:class:`~hrrformer.ops.hrr_attention.Routed`, the memories' blocks r(j)·y). Only the named
        parts are projected; ``key_padding_mask`` and ``halo`` feed the short convolution
        (:meth:`project`)."""
        parts = parts or self.projected
        named = dict(zip(parts, super().heads(x, parts, key_padding_mask, halo), strict=True))
        routes = self.routes(x) if self.router is not None and set(parts) & {"q", "k"} else None
        for part in set(parts) & {"q", "k"}:
            y = hrr.projection(named[part]) if self.projection else named[part]
            r = routes["qk".index(part)] if routes is not None else self.key_routes(y)  # (B, h, T, m) or None
            if part == "k" and self.write_gate is not None:
                y = self.write_gates(x).to(y.dtype) * y  # g_t k_t (B, h, T, d)
            named[part] = y if r is None else Routed(y, r)  # block j of the memories: r(j) y
        return [named[part] for part in parts]

    def write_gates(self, x: torch.Tensor) -> torch.Tensor:
        """The write gates g_t = sigmoid(x_t W_w + b_w) of x (B, T, E), (B, h, T, 1): how much each
        position writes into each head's β (``write_gate``)."""
        return torch.sigmoid(self.write_gate(x)).transpose(1, 2)[..., None]  # (B, h, T, 1)

    def routes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory routes (r^q, r^k) of x (B, T, E), each (B, h, T, m), softmax over m."""
        b, t, _ = x.shape
        logits = self.router(x).view(b, t, 2, self.num_heads, self.memories)  # (B, T, 2, h, m)
        return logits.softmax(-1).permute(2, 0, 3, 1, 4).unbind(0)  # 2 × (B, h, T, m)

    def key_routes(self, y: torch.Tensor) -> torch.Tensor | None:
        """The routes softmax(ŷ R_h) (B, h, T, m) of the heads y (B, h, T, d) of q or k, ŷ = y / ‖y‖_ε
        (``routing="key"``), or None for the other routings."""
        if self.key_router is None:
            return None
        with autocast_off(y.device.type):  # logits of std ~8 keep their 24 bits: bf16's 8 would move the routes
            unit = y / torch.sqrt(y.square().sum(-1, keepdim=True) + COSINE_EPS**2)  # (B, h, T, d)
            return torch.einsum("bhtd,hdm->bhtm", unit, self.key_router.to(y.dtype)).softmax(-1)  # (B, h, T, m)

    def attend(self, q, k, v, key_padding_mask, reduction=None):
        out = hrr_attention(
            q, k, v, key_padding_mask, causal=self.causal, method=self.method,
            reduction=reduction, length_scale=self.length_scale, score_scale=self.score_scales(), output=self.output,
            pads_in_beta=self.pads_in_beta, return_weights=self.record_weights,
        )  # fmt: skip
        if self.record_weights:
            out, self.last_weights = out
        return out  # (B, h, T, d)


class SoftmaxAttention(_MultiHeadAttention):
    """Softmax attention (``F.scaled_dot_product_attention``) with HrrAttention's interface and parts
    (``short_conv``, ``output_gate``). It has no sequence-parallel form (it would need ring attention).

    Dropout, as in :class:`HrrAttention`, acts on the merged heads before the output projection.
    """

    def check_reduction(self, reduction: SequenceReduction | None) -> None:
        if reduction is not None and reduction.parallel:
            raise ValueError(
                "sequence parallelism supports HRR attention only: softmax attention would need O(T) "
                "communication per layer (ring attention)"
            )

    def attend(self, q, k, v, key_padding_mask, reduction=None):
        self.check_reduction(reduction)
        return softmax_attention(q, k, v, key_padding_mask, self.causal)


class NoAttention(_MultiHeadAttention):
    """The no-attention ablation: the attention's output is v_t itself (out_t = v_t, then the merge,
    the gate and the output projection as in the other kinds).

    The layer keeps the value and output projections (``qkv_proj`` holds v's rows only) and the
    parts; nothing crosses positions but the short convolution (K − 1 positions back), so it runs
    chunked and sequence-parallel with no sums at all. What a model learns with it is what the
    surround learns without attention.
    """

    projected = "v"
    mixes_positions = False

    def attend(self, v, key_padding_mask=None, reduction=None):
        return v
