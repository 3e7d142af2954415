"""Holographic Reduced Representations (Plate, 1995) on any axis, with real FFTs.

For real vectors x, y of length d and F = rfft over the chosen axis:

====================  =============================  ============================
operation             time domain                    frequency domain
====================  =============================  ============================
bind ``x ⊛ y``        circular convolution           ``F(x) · F(y)``
approximate inverse   ``y†[i] = y[-i mod d]``        ``conj(F(y))``
exact inverse         --                             ``conj(F(y)) / (|F(y)|² + ε)``
unbind ``s ⊛ y†``                                    ``F(s) · conj(F(y))``
projection ``π(x)``                                  ``F(x) / sqrt(|F(x)|² + ε²)``
cosine                ``<x, y> / (‖x‖_ε ‖y‖_ε)``     with ``‖x‖_ε = sqrt(‖x‖² + ε²)``
====================  =============================  ============================

float16 / bfloat16 inputs are computed in float32 (FFTs of half precision are slow and
inaccurate) and returned in the input dtype. Divisions by small magnitudes are guarded by
an epsilon that keeps every function smooth, so gradients stay finite at zero.
"""

from __future__ import annotations

import torch

__all__ = [
    "approx_inverse",
    "bind",
    "compute_dtype",
    "cosine_similarity",
    "exact_inverse",
    "projection",
    "unbind",
]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype HRR arithmetic runs in: float32 for half precision, else ``dtype``."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x.to(compute_dtype(x.dtype))


def _check_same_length(x: torch.Tensor, y: torch.Tensor, dim: int, name: str) -> None:
    if x.shape[dim] != y.shape[dim]:
        raise ValueError(
            f"{name}: both inputs need the same length along dim={dim}, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _spectrum_op(x: torch.Tensor, dim: int, op) -> torch.Tensor:
    """irfft(op(rfft(x))) along ``dim`` in the compute dtype, cast back to x's dtype."""
    n = x.shape[dim]
    out = torch.fft.irfft(op(torch.fft.rfft(_upcast(x), dim=dim)), n=n, dim=dim)
    return out.to(x.dtype)


def bind(x: torch.Tensor, y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Circular convolution ``x ⊛ y``: ``(x ⊛ y)[n] = Σ_j x[j] y[(n - j) mod d]``."""
    _check_same_length(x, y, dim, "bind")
    fy = torch.fft.rfft(_upcast(y), dim=dim)
    return _spectrum_op(x, dim, lambda fx: fx * fy).to(torch.promote_types(x.dtype, y.dtype))


def approx_inverse(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Plate's involution ``x†[i] = x[-i mod d]`` (flip, then roll by one)."""
    return torch.roll(torch.flip(x, dims=(dim,)), shifts=1, dims=dim)


def unbind(s: torch.Tensor, y: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Retrieve what was bound to ``y`` in ``s``: ``s ⊛ y†`` = irfft(F(s) · conj(F(y)))."""
    _check_same_length(s, y, dim, "unbind")
    fy = torch.fft.rfft(_upcast(y), dim=dim)
    return _spectrum_op(s, dim, lambda fs: fs * fy.conj()).to(torch.promote_types(s.dtype, y.dtype))


def exact_inverse(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """``x⁻¹`` with ``x ⊛ x⁻¹ ≈ δ``: irfft(conj(F) / (|F|² + ε)), a Tikhonov-guarded 1/F."""
    return _spectrum_op(x, dim, lambda f: f.conj() / (f.real.square() + f.imag.square() + eps))


def projection(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """``π(x)``: every frequency scaled to unit magnitude, F / sqrt(|F|² + ε²).

    After projection the approximate inverse is (nearly) the exact inverse, so unbinding
    recovers bound values with far less noise.
    """
    return _spectrum_op(x, dim, lambda f: f / torch.sqrt(f.real.square() + f.imag.square() + eps * eps))


def cosine_similarity(x: torch.Tensor, y: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """``<x, y> / (‖x‖_ε ‖y‖_ε)`` with ``‖x‖_ε = sqrt(‖x‖² + ε²)``: in [-1, 1], 0 for zero vectors.

    The axis ``dim`` is reduced. Unlike ``torch.nn.functional.cosine_similarity`` the guard is
    smooth, so the gradient at a zero vector is finite.
    """
    _check_same_length(x, y, dim, "cosine_similarity")
    out_dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = _upcast(x), _upcast(y)
    dot = (x * y).sum(dim)
    norm_x = torch.sqrt(x.square().sum(dim) + eps * eps)
    norm_y = torch.sqrt(y.square().sum(dim) + eps * eps)
    return (dot / (norm_x * norm_y)).to(out_dtype)
