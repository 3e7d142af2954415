"""Layer parts around an attention kernel: a short causal convolution of q, k and v, an output gate,
and a value skip.

Both after flash-linear-attention, whose layers run projections → short convolution → SiLU → the
op → gated RMSNorm → output projection (``fla/modules/conv/short_conv.py``,
``fla/modules/fused_norm_gate.py``). Any attention kind takes them (:mod:`hrrformer.attention`).

**Short convolution** of kernel K, depthwise (one filter w[c] of K taps per channel c, no bias), on
the projections u = x W of q, k and v side by side, then SiLU::

    y_t[c] = SiLU( Σ_{j=0}^{K−1} w[c, j] · u_{t−K+1+j}[c] ),   u_s = 0 where s is padding or s < 0

Causal: y_t depends on u_{t−K+1}, …, u_t only, so a causal model stays prefix-exact, and zeroing
padding first means that left or right padding changes no real output. A piece of the sequence
(a chunk, a rank's part) needs the K − 1 positions before it, its :class:`Halo`, which
:func:`halos` takes through :meth:`SequenceReduction.halo`. Cost: one depthwise convolution
in float32 (``F.conv2d`` in channels-last layout, which is the (B, T, C) layout of the projections;
in bf16 it is ~2.5× slower on this CPU) with a hand-written backward, and one SiLU, O(T·C·K).

**Output gate**, per position t and head, o (d,) the attention's output and x (E,) the layer's input::

    o ← o / sqrt(mean_c o_c² + ε) ⊙ γ ⊙ SiLU(x W_g)[head]       γ (d,) learned (ones at first), W_g: E → h·d

(RMSNorm over each head's d channels with one weight per channel shared by the heads, as fla's
``FusedRMSNormGated``.) ε = 1e-10, not fla's 1e-5: the paper's output w_t·v_t is ~v_t/T, whose
mean square at T = 2,000 is ~1e-7, so ε = 1e-5 would scale it by ~1/√ε instead of normalising it;
1e-10 normalises outputs down to an RMS of ~1e-5 (T ~ 10⁵ for unit values). It runs on the merged heads, before the output
projection.

**Value skip**, per position t and head, o (d,) the attention's output and v_t (d,) the position's own
value (after the short convolution)::

    o ← o + D ⊙ v_t       D (h, d) learned, ones at first

(Mamba's and Hyena's D term.) The attention's output then adds to what the block without attention
(``NoAttention``, whose output is v_t) computes, instead of replacing it: the retrieved output
keeps only ‖v_t‖ of the position's own value, and the convolution's features of the neighbours
reach the residual only through v. It runs before the output gate. Only for kinds that mix
positions: without attention it would be v_t + D ⊙ v_t, a rescaled v.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn

from . import hrr
from .ops import native
from .ops.hrr_attention import SequenceReduction
from .ops.hrr_attention.precision import autocast_off

__all__ = [
    "GATE_EPS",
    "ConvInit",
    "Halo",
    "OutputGate",
    "ShortConvolution",
    "ValueSkip",
    "causal_depthwise_conv",
    "check_short_conv_init",
    "contiguous_as",
    "halos",
    "keep_of",
    "matmul_dtype",
]

#: bytes of one piece of g in the short convolution's filter gradient: within a core's L2/L3 share.
_PIECE_BYTES = 1 << 21

#: How the short convolution's filters start: PyTorch's random filters, or a token shift (k reads
#: the position before, q and v their own; :class:`ShortConvolution`'s ``delays``).
ConvInit = Literal["random", "shift"]


def check_short_conv_init(kernel_size: int | None, init: str, name: str = "short_conv_init") -> None:
    """ValueError unless ``init`` is a :data:`ConvInit` that a convolution of ``kernel_size``
    (None: no convolution) can start at: "shift" needs a kernel of at least 2 (k's lag 1)."""
    if init not in get_args(ConvInit):
        raise ValueError(f"{name} must be one of {get_args(ConvInit)}, got {init!r}")
    if init != "random" and kernel_size is None:
        raise ValueError(f"{name}={init!r} starts the short convolution's filters: it needs a short_conv")
    if init == "shift" and kernel_size is not None and kernel_size < 2:
        raise ValueError(f"{name}='shift' delays k by one position: a shift needs short_conv ≥ 2")


#: ε of the gate's RMSNorm: far below the paper's output's mean square (~1/T², see the module docstring).
GATE_EPS = 1e-10


class Halo(NamedTuple):
    """The K − 1 positions right before a piece of the sequence: the layer's input there ``x``
    (B, K−1, E) and ``keep`` (B, K−1, 1), 1 for real positions, 0 for padding and for positions
    before the sequence's start (where x is 0)."""

    x: torch.Tensor
    keep: torch.Tensor


def contiguous_as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x contiguous and in ``dtype``, in one copy (``Tensor.to`` ignores the layout when the dtype matches)."""
    return x.contiguous() if x.dtype == dtype else x.to(dtype, memory_format=torch.contiguous_format)


def matmul_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype a matrix multiply reads a tensor of ``dtype`` on ``device`` in: autocast's where it
    is on, else its own. Casting to it in a copy that is made anyway (the heads' split and merge, the
    gate's output) saves autocast a second pass."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else dtype


def keep_of(key_padding_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """(B, T) bool, True = padding → (B, T, 1) in ``like``'s dtype, 1 = real; None stays None."""
    return None if key_padding_mask is None else (~key_padding_mask)[..., None].to(like.dtype)


def halos(
    pieces: Sequence[torch.Tensor],
    key_padding_masks: Sequence[torch.Tensor | None],
    width: int,
    reduction: SequenceReduction,
) -> list[Halo]:
    """The :class:`Halo` of ``width`` positions of each piece (B, T_c, E) of a sequence, in order
    (the chunks of this rank's part; over a group, the ranks' parts come in rank order).

    The input and its keep weights travel together, as E + 1 channels of each piece's last
    ``width`` positions: one :meth:`SequenceReduction.halo`, autograd-aware."""
    tails = []
    for x, mask in zip(pieces, key_padding_masks, strict=True):
        x = x[:, -width:]  # (B, ≤W, E): all that a halo reads
        keep = torch.ones_like(x[..., :1]) if mask is None else keep_of(mask[:, -width:], x)
        tails.append(torch.cat([x, keep], dim=-1))  # (B, ≤W, E + 1)
    return [Halo(h[..., :-1], h[..., -1:]) for h in reduction.halo(tails, width)]


def _depthwise(x: torch.Tensor, weight: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """Σ_j weight[c, j] · x_{t+j}[c] for x (B, L, C), weight (C, K), with ``padding`` zeros on both
    sides of time → (B, L + 2·padding − K + 1, C). One ``F.conv2d`` on x in channels-last strides
    (the (B, L, C) layout itself, no copy)."""
    channels_last = x[:, None].permute(0, 3, 1, 2)  # (B, C, 1, L)
    y = F.conv2d(channels_last, weight[:, None, None, :], groups=weight.shape[0], padding=(0, padding))
    return y.permute(0, 2, 3, 1)[:, 0]  # (B, L', C)


class _CausalDepthwiseConv(torch.autograd.Function):
    """y_t[c] = Σ_j w[c, j] · u_{t+j}[c], t < T, for u (B, K−1 + T, C) and w (C, K), in float32 at
    least with autocast off. The backward is written out because oneDNN's depthwise weight gradient
    is slow on CPU (~10× its forward, BENCHMARKS.md)::

        ∂u_s[c] = Σ_j w[c, j] · g_{s−j}[c]        (the same convolution of g, zero-padded, w reversed)
        ∂w[c, j] = Σ_{b,t} g_t[c] · u_{t+j}[c]     (K products, each summed over batch and time)
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dtype = hrr.compute_dtype(u.dtype)
        with autocast_off(u.device.type):
            u_c, w_c = u.to(dtype), weight.to(dtype)
            ctx.save_for_backward(u_c, w_c)
            ctx.dtypes = u.dtype, weight.dtype
            return _depthwise(u_c, w_c)  # (B, T, C)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        u, weight = ctx.saved_tensors  # (B, K−1 + T, C), (C, K)
        u_dtype, weight_dtype = ctx.dtypes
        k = weight.shape[1]
        grad_u = grad_w = None
        with autocast_off(u.device.type):
            grad = grad.to(u.dtype).contiguous()  # (B, T, C)
            if ctx.needs_input_grad[0]:
                grad_u = _depthwise(grad, weight.flip(1), padding=k - 1).to(u_dtype)  # (B, K−1 + T, C)
            if ctx.needs_input_grad[1]:
                grad_w = _filter_gradient(grad, u, k).to(weight_dtype)  # (C, K)
        return grad_u, grad_w


def _filter_gradient(grad: torch.Tensor, u: torch.Tensor, k: int) -> torch.Tensor:
    """∂w[c, j] = Σ_{b,t} g_t[c] · u_{t+j}[c] (C, K) for g (B, T, C) and u (B, K−1 + T, C), summed
    over pieces of about :data:`_PIECE_BYTES` (a stretch of one long sequence, or several short
    sequences whole), so that a piece's K products are formed while it is in cache (3× faster at
    the ListOps shape than whole-tensor products, which each stream (B, T, C) through memory; 2.4×
    at MQAR's T = 64 than one piece per sequence)."""
    b, t, c = grad.shape
    rows = max(64, _PIECE_BYTES // (c * grad.element_size()))
    per_piece = max(1, rows // t)  # whole sequences in one piece where they are short (MQAR: T = 64)
    total = grad.new_zeros(k, c)
    product = grad.new_empty(min(per_piece, b), min(rows, t), c)  # one buffer for every product
    for first in range(0, b, per_piece):
        last = min(first + per_piece, b)
        for start in range(0, t, rows):
            stop = min(start + rows, t)
            piece, out = grad[first:last, start:stop], product[: last - first, : stop - start]  # (S, R, C)
            for j in range(k):
                total[j] += torch.mul(piece, u[first:last, start + j : stop + j], out=out).sum((0, 1))
    return total.t()


def causal_depthwise_conv(u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """u (B, K−1 + T, C), weight (C, K) → y (B, T, C), y_t[c] = Σ_j weight[c, j] · u_{t+j}[c]: the
    causal convolution of the T positions after the first K − 1, in float32 at least (half-precision
    u is upcast; autocast does not apply)."""
    return _CausalDepthwiseConv.apply(u, weight)


class ShortConvolution(nn.Module):
    """Depthwise causal convolution over time of ``channels`` channels, kernel ``kernel_size``, no
    bias, then SiLU (see the module docstring). ``weight`` (C, 1, K) as ``nn.Conv1d``'s.

    ``delays`` None: PyTorch's initialisation (uniform ±1/√K). Else one lag per channel, each
    filter starting as a unit impulse at its lag: y_t[c] = SiLU(u_{t−delays[c]}[c]) at first, a
    token shift (lag 0: the channel's own position; lag 1: the one before).
    """

    def __init__(self, channels: int, kernel_size: int, delays: Sequence[int] | None = None) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"short_conv (the kernel size) must be ≥ 1, got {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        if delays is None:
            bound = kernel_size**-0.5  # nn.Conv1d's default: kaiming_uniform(a=√5) = U(±1/√fan_in)
            nn.init.uniform_(self.weight, -bound, bound)
            return
        lags = torch.as_tensor(list(delays), dtype=torch.long)
        if lags.shape != (channels,) or lags.min() < 0 or lags.max() >= kernel_size:
            raise ValueError(
                f"ShortConvolution: delays must give each of the {channels} channels a lag in [0, {kernel_size}), "
                f"got {lags.shape[0]} lags in [{lags.min().item()}, {lags.max().item()}]"
            )
        with torch.no_grad():
            self.weight.zero_()
            self.weight[torch.arange(channels), 0, kernel_size - 1 - lags] = 1.0  # tap K−1 is lag 0

    @property
    def context(self) -> int:
        """K − 1: how many positions before its own each output reads."""
        return self.kernel_size - 1

    def inputs(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        halo: Halo | None,
        project: Callable[[torch.Tensor], torch.Tensor],
        bias: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution's input: u = project(x) (B, T, C') and the halo's projection (B, K−1, C')
        (None where x starts the sequence: zeros), each zero at padding (x zeroed first; with a
        ``bias``, x W + b is b there, so the projection is zeroed too)."""
        keep = keep_of(key_padding_mask, x)
        u = project(x if keep is None else x * keep)  # (B, T, C')
        if bias and keep is not None:
            u = u * keep.to(u.dtype)
        if halo is None:
            return u, None
        before = project(halo.x * halo.keep)  # (B, K−1, C')
        return u, before * halo.keep.to(before.dtype) if bias else before

    def forward(
        self,
        u: torch.Tensor,
        halo: torch.Tensor | None = None,
        channels: slice | torch.Tensor | None = None,
        heads: tuple[int, int] | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """u (B, T, C') after ``halo`` (B, K−1, C'), the input of the K − 1 positions before (None:
        zeros, the sequence's start), zero at padding → SiLU(convolution) (B, T, C'). ``channels``:
        which of the C channels u holds (their filters; None: all, in order). ``heads`` (h, d): the
        result as heads, (n, B, h, T, d) contiguous for C' = n·h·d. ``dtype``: the result's, default
        float32 at least; the arithmetic is float32 at least either way."""
        weight = (self.weight if channels is None else self.weight[channels])[:, 0]  # (C', K)
        dtype = dtype or hrr.compute_dtype(u.dtype)
        if self.kernel_size <= native.MAX_KERNEL and native.available_for(u, weight, writes=dtype):
            return native.conv_silu(u, weight, halo, heads, dtype)  # one pass each way (ops/native)
        b, t, c = u.shape
        before = u.new_zeros(b, self.context, c) if halo is None else halo.to(u.dtype)
        y = F.silu(causal_depthwise_conv(torch.cat([before, u], dim=1), weight))  # (B, T, C'), float32 at least
        if heads is not None:
            y = y.view(b, t, c // (heads[0] * heads[1]), *heads).permute(2, 0, 3, 1, 4)  # (n, B, h, T, d)
        return contiguous_as(y, dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class OutputGate(nn.Module):
    """o ← RMSNorm_d(o) ⊙ SiLU(x W_g) (see the module docstring): ``proj`` W_g (E → h·d, no bias),
    ``weight`` γ (d,); ``head_dim`` d defaults to E / h."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int | None = None, eps: float = GATE_EPS) -> None:
        super().__init__()
        self.num_heads, self.eps = num_heads, eps
        self.head_dim = embed_dim // num_heads if head_dim is None else head_dim
        self.proj = nn.Linear(embed_dim, num_heads * self.head_dim, bias=False)
        self.weight = nn.Parameter(torch.ones(self.head_dim))

    def forward(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o (B, T, h, d) the attention's output (a transposed view of its (B, h, T, d) is read in
        place), x (B, T, E) its input → (B, T, h·d). The norm runs in float32 at least (half-precision
        o is upcast)."""
        b, t, _ = x.shape
        z = self.proj(x).view(b, t, self.num_heads, self.head_dim)  # (B, T, h, d): the gate before SiLU
        dtype = matmul_dtype(torch.float32, o.device)  # what the output projection reads
        if native.available_for(o, z, self.weight, writes=dtype):  # one pass each way
            return native.gated_rms_norm(o, z, self.weight, self.eps, dtype).view(b, t, -1)
        o = contiguous_as(o, hrr.compute_dtype(o.dtype))
        normed = F.rms_norm(o, (self.head_dim,), self.weight.to(o.dtype), self.eps)  # (B, T, h, d)
        return (normed * F.silu(z)).view(b, t, self.num_heads * self.head_dim)


class ValueSkip(nn.Module):
    """o ← o + D ⊙ v (see the module docstring): ``weight`` D (h, d), ones at first."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_heads, head_dim))

    def forward(self, o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """o, v (B, h, T, d) → o + D ⊙ v (B, h, T, d), in o's dtype."""
        return o + self.weight[:, None, :].to(o.dtype) * v.to(o.dtype)
