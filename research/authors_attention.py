"""The authors' formulation of HRR attention, transcribed from their JAX code into PyTorch.

Their ``SelfAttention`` (``*/hrrformer_mgpu.py`` of NeuromorphicComputationResearchProgram/Hrrformer,
commit 8a127d1) as they wrote it: complex FFTs (five of them forward), β over every position
(padding included), the padding mask as ``−1e9`` in the softmax only, and a cosine without an
epsilon. ``python -m research.bench_authors`` times it against the package's methods as
``hrr-reference`` (the rows BENCHMARKS.md calls "the authors' formulation").

The package's own plain reference is :func:`hrrformer.attention.hrr_attention_reference`; with
``pads_in_beta=True`` the package computes what this function does (research/tests check both).
"""

from __future__ import annotations

import torch

__all__ = ["authors_hrr_attention"]


def binding(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``np.real(ifft(fft(x) * fft(y)))`` over the last axis (their ``HRR.with_flax.Binding``)."""
    return torch.fft.ifft(torch.fft.fft(x, dim=-1) * torch.fft.fft(y, dim=-1), dim=-1).real


def approx_inverse(x: torch.Tensor) -> torch.Tensor:
    """``np.roll(np.flip(x, axis), 1, axis)`` (their ``ApproxInverse``)."""
    return torch.roll(torch.flip(x, dims=(-1,)), shifts=1, dims=-1)


def cosine(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """``sum(x * y) / (‖x‖ ‖y‖)`` over the last axis, keepdims (their ``CosineSimilarity``).

    They have no epsilon; ``eps`` (added to the product of norms) only keeps a zero vector from
    giving NaN.
    """
    norm_x = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    norm_y = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    return (x * y).sum(-1, keepdim=True) / (norm_x * norm_y + eps)


def authors_hrr_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """HRR attention as the authors' ``SelfAttention`` computes it (``*/hrrformer_mgpu.py``).

    q, k, v (B, h, T, d); key_padding_mask (B, T) bool, True = padding (PyTorch's meaning; they
    pass 1 = real token). Faithful to their code, including what :func:`hrrformer.hrr_attention`
    does differently: complex FFTs and inverse FFTs, padded positions **included** in β (the
    mask only enters the softmax, as ``+ (1 − mask) · (−1e9)``), no epsilon in the cosine but
    the tiny ``eps``. Half precision is computed in float32 (no complex half FFTs on CPU).
    Autograd gives the backward, as JAX's did.
    """
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q_, k_, v_ = q.to(dtype), k.to(dtype), v.to(dtype)
    bind = binding(k_, v_)  # (B, h, T, d)
    bind = bind.sum(-2, keepdim=True)  # (B, h, 1, d)
    vp = binding(bind, approx_inverse(q_))  # unbinding(bind, q): (B, h, T, d)
    scale = cosine(v_, vp, eps)  # (B, h, T, 1)
    if key_padding_mask is not None:
        mask = (~key_padding_mask).to(dtype)[:, None, :, None]  # (B, 1, T, 1), 1 = real token
        scale = scale + (1.0 - mask) * (-1e9)
    weight = torch.softmax(scale, dim=-2)  # over T
    return (weight * v_).to(q.dtype)  # (B, h, T, d)
