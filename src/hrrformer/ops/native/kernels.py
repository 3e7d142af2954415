"""Autograd functions over the native kernels of ``parts.c``: the short convolution with SiLU, and
the output gate's RMSNorm times SiLU, each forward and backward in one pass over its tensors (the
maths is in ``parts.c``'s header and :mod:`hrrformer.parts`). CPU, float32 or bfloat16 inputs and
outputs, arithmetic in float32. :func:`available_for` says whether a call can take them;
:mod:`hrrformer.parts` falls back to its eager code where it cannot (float64, other devices,
``torch.compile``, no compiler)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from .loader import enabled, library

__all__ = ["MAX_KERNEL", "available_for", "conv_silu", "gated_rms_norm"]

#: the longest filter the kernels take (a ring of input rows on the stack)
MAX_KERNEL = 64
#: rows (positions) per block of work: a thread's unit, and the recomputed halo is K − 1 of them
_ROWS = 256
#: the dtypes the kernels read and write, and their codes in ``parts.c``
_TYPES = {torch.float32: 0, torch.bfloat16: 1}
_F32 = _TYPES[torch.float32]


def available_for(*tensors: torch.Tensor, writes: torch.dtype = torch.float32) -> bool:
    """True where the native kernels can compute a part of these tensors into a result of dtype
    ``writes``: on, built, eager (not under ``torch.compile``), every tensor on the CPU and every
    dtype float32 or bfloat16."""
    return (
        enabled()
        and not torch.compiler.is_compiling()
        and writes in _TYPES
        and all(t.device.type == "cpu" and t.dtype in _TYPES for t in tensors)
        and library() is not None
    )


def _threads() -> int:
    return torch.get_num_threads()


class _Layout(NamedTuple):
    """Where channel c = i·G + e of row (b, t) of a (B, T, C) result lies in its tensor: element
    ``offsets[i]`` + b·``stride_b`` + t·``stride_t`` + e (``parts.c``'s header)."""

    shape: tuple[int, ...]
    offsets: torch.Tensor  # (C / G,) int64
    group: int
    stride_b: int
    stride_t: int

    @staticmethod
    def of(b: int, t: int, c: int, heads: tuple[int, int] | None) -> _Layout:
        """(B, T, C) itself, or with ``heads`` (h, d) the heads (n, B, h, T, d), c = (part, head, i)."""
        if heads is None:
            return _Layout((b, t, c), torch.zeros(1, dtype=torch.long), c, t * c, c)
        h, d = heads
        n = c // (h * d)
        if n * h * d != c:
            raise ValueError(f"conv_silu: {c} channels are not parts of {h} heads of {d}")
        starts = torch.arange(n)[:, None] * (b * h * t * d) + torch.arange(h) * (t * d)  # (n, h)
        return _Layout((n, b, h, t, d), starts.flatten(), d, h * t * d, d)

    def arguments(self) -> tuple[int, int, int, int]:
        return self.offsets.data_ptr(), self.group, self.stride_b, self.stride_t


class _ConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, halo, weight, heads, dtype):  # type: ignore[override]
        u = u.contiguous()  # (B, T, C)
        halo = None if halo is None else halo.to(u.dtype).contiguous()  # (B, K−1, C)
        w = weight.detach().to(torch.float32).contiguous()  # (C, K)
        (b, t, c), k = u.shape, w.shape[1]
        layout = _Layout.of(b, t, c, heads)
        y = u.new_empty(layout.shape, dtype=dtype)  # (B, T, C) or (n, B, h, T, d)
        library().conv_silu_forward(
            u.data_ptr(), _pointer(halo), _TYPES[u.dtype], w.data_ptr(), y.data_ptr(), _TYPES[dtype],
            *layout.arguments(), b, t, c, k, _ROWS, _threads(),
        )  # fmt: skip
        ctx.save_for_backward(u, halo, w)
        ctx.layout, ctx.weight_dtype = layout, weight.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        u, halo, w = ctx.saved_tensors
        grad = grad.contiguous() if grad.dtype in _TYPES else grad.to(torch.float32).contiguous()
        (b, t, c), k = u.shape, w.shape[1]
        grad_u, grad_w = torch.empty_like(u), w.new_empty(c, k)
        grad_halo = None if halo is None or not ctx.needs_input_grad[1] else torch.empty_like(halo)
        library().conv_silu_backward(
            grad.data_ptr(), _TYPES[grad.dtype], *ctx.layout.arguments(), u.data_ptr(), _pointer(halo),
            _TYPES[u.dtype], w.data_ptr(), grad_u.data_ptr(), _pointer(grad_halo), grad_w.data_ptr(),
            b, t, c, k, _ROWS, _threads(),
        )  # fmt: skip
        return grad_u, grad_halo, grad_w.to(ctx.weight_dtype), None, None


def _pointer(x: torch.Tensor | None) -> int | None:
    """x's data pointer, or None (NULL) for no tensor."""
    return None if x is None else x.data_ptr()


def conv_silu(
    u: torch.Tensor,
    weight: torch.Tensor,
    halo: torch.Tensor | None = None,
    heads: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """u (B, T, C) after ``halo`` (B, K−1, C) (None: zeros, the sequence's start), weight (C, K) →
    y_t = SiLU(Σ_j weight[c, j] · in_{t+j}[c]) over in = [halo; u], (B, T, C) in ``dtype`` (float32
    or bfloat16; arithmetic in float32), or with ``heads`` (h, d) laid out as heads, (n, B, h, T, d)
    for C = n·h·d channels of n parts, contiguous."""
    k = weight.shape[1]
    if k > MAX_KERNEL:
        raise ValueError(f"the native short convolution takes kernels up to {MAX_KERNEL}, got {k}")
    if dtype not in _TYPES:
        raise ValueError(f"conv_silu writes float32 or bfloat16, not {dtype}")
    if halo is not None and halo.shape != (u.shape[0], k - 1, u.shape[2]):
        raise ValueError(
            f"conv_silu: the halo must be (B, K−1, C) = {(u.shape[0], k - 1, u.shape[2])}, got {tuple(halo.shape)}"
        )
    return _ConvSilu.apply(u, halo, weight, heads, dtype)


class _GatedRmsNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, z, gamma, eps, dtype):  # type: ignore[override]
        o = o.to(torch.float32)  # (B, T, h, d), its layout kept: the attention's (B, h, T, d) read in place
        if not (o.is_contiguous() or o.transpose(1, 2).is_contiguous()):
            o = o.contiguous()
        z = z.contiguous()  # (B, T, h, d)
        g = gamma.detach().to(torch.float32).contiguous()  # (d,)
        b, t, h, d = o.shape
        out = o.new_empty(o.shape, dtype=dtype)  # (B, T, h, d) contiguous
        rho = o.new_empty(b * t * h)  # one ρ per position and head
        library().gate_forward(
            o.data_ptr(), *_row_strides(o), z.data_ptr(), _TYPES[z.dtype], g.data_ptr(), out.data_ptr(), _TYPES[dtype],
            rho.data_ptr(), b, t, h, d, eps, _threads(),
        )  # fmt: skip
        ctx.save_for_backward(o, z, g, rho)
        ctx.gamma_dtype = gamma.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        o, z, g, rho = ctx.saved_tensors
        grad = grad.contiguous() if grad.dtype in _TYPES else grad.to(torch.float32).contiguous()  # (B, T, h, d)
        grad_o = torch.empty_strided(o.shape, o.stride(), dtype=o.dtype)  # laid out as o
        grad_z, grad_gamma = torch.empty_like(z), g.new_empty(g.shape)
        library().gate_backward(
            grad.data_ptr(), _TYPES[grad.dtype], o.data_ptr(), *_row_strides(o), z.data_ptr(), _TYPES[z.dtype], g.data_ptr(),
            rho.data_ptr(), grad_o.data_ptr(), grad_z.data_ptr(), grad_gamma.data_ptr(), *o.shape, _threads(),
        )  # fmt: skip
        return grad_o, grad_z, grad_gamma.to(ctx.gamma_dtype), None, None


def _row_strides(o: torch.Tensor) -> tuple[int, int, int]:
    """The strides of b, t and head of o (B, T, h, d), in the order ``parts.c`` takes them."""
    return o.stride(0), o.stride(1), o.stride(2)


def gated_rms_norm(
    o: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, eps: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """o (B, T, h, d), contiguous or a transposed view of a contiguous (B, h, T, d) (other strides
    are copied), and the gate's pre-activation z (B, T, h, d) → o / sqrt(mean_d o² + ε) · γ · SiLU(z),
    (B, T, h, d) contiguous in ``dtype`` (float32 or bfloat16; arithmetic in float32)."""
    if o.dim() != 4 or o.shape != z.shape or o.shape[-1] != gamma.shape[0]:
        raise ValueError(f"gated_rms_norm: o {tuple(o.shape)}, z {tuple(z.shape)} and γ {tuple(gamma.shape)} differ")
    if dtype not in _TYPES:
        raise ValueError(f"gated_rms_norm writes float32 or bfloat16, not {dtype}")
    return _GatedRmsNorm.apply(o, z, gamma, eps, dtype)
