"""Range control: q, k and v divided by exact powers of two so every intermediate stays finite.

Where the largest magnitude of q, k or v in a (batch, head) is too large for the length T and
head size d (float32, T = 1024, d = 64: above 2^11; the plain formula's ‖v̂‖² overflows from about
1e5), the kernel scores s·x instead of x, with s a power of two per (batch, head) and the cosine
guard ε scaled alike. Multiplying by a power of two is exact, so the scores are bit for bit those
of the unscaled formula wherever that one neither overflows nor underflows.

Across pieces of a sequence (chunks, ranks) each piece picks its own s_k, s_v from its own maxima;
the superposition is summed at the common scales s_k* = min over pieces of s_k and s_v* likewise
(a :meth:`~.reduction.SequenceReduction.minimum`): exactly the scales one process would pick from
the maxima of the whole sequence. (Their product may underflow, so they are kept apart.)
"""

from __future__ import annotations

import math

import torch

__all__ = ["downscale", "downscales", "safe_exponent", "scaled_eps2"]

#: (integer view dtype, mantissa bits, exponent bias) of the compute dtypes, for exact powers of two.
FLOAT_BITS = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def safe_exponent(dtype: torch.dtype, length: int, d: int, memories: int = 1) -> int:
    """The largest E such that |q|, |k|, |v| ≤ 2^E keeps every intermediate finite for a sequence
    of ``length`` positions and head size d: |β| ≤ T d |k||v|, |v̂| ≤ T d² |q||k||v|, so
    ‖v̂‖² ≤ T² d⁵ (|q||k||v|)² (and the Fourier form's |F(q)|²|B|² ≤ T² d⁶ (…)²) must stay below
    the dtype's largest power of two. With m ``memories`` (v̂ = Σ_j q^(j)† ⊛ β_j) T becomes m·T."""
    room = FLOAT_BITS[dtype][2] - 3 - 2 * math.log2(max(length * memories, 1)) - 6 * math.log2(max(d, 1))
    return max(0, math.floor(room / 6))


def downscale(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """A power of two s ≤ 1 per (batch, head), (B, h, 1, 1), with max|s·x| ≤ 2^exponent; s = 1
    where that holds already (ordinary inputs are not touched at all).

    Built from the exponent bits of max|x| (no log, no pow: exactly a power of two).
    """
    x = x.detach()
    amax = torch.maximum(x.amax(dim=(-2, -1), keepdim=True), x.amin(dim=(-2, -1), keepdim=True).neg_())
    int_dtype, mantissa, bias = FLOAT_BITS[x.dtype]
    biased = (amax.view(int_dtype) >> mantissa) & (2 * bias + 1)  # max|x| < 2^(biased − bias + 1)
    shift = (biased - (bias - 1) - exponent).clamp_(0, bias - 1)  # s = 2^−shift, a normal number
    return ((bias - shift) << mantissa).view(x.dtype)


def downscales(*xs: torch.Tensor, exponent: int) -> tuple[torch.Tensor, ...]:
    """:func:`downscale` of each of ``xs``."""
    return tuple(downscale(x, exponent) for x in xs)


def scaled_eps2(eps: float, dtype: torch.dtype, *scales: torch.Tensor) -> torch.Tensor:
    """ε² · Π s², (B, h, 1): the guard for a vector scaled by Π s. Floored at the smallest normal
    number, which changes nothing unless the unscaled computation would have overflowed."""
    out = torch.tensor(eps * eps, dtype=dtype, device=scales[0].device)
    for s in scales:
        out = out * s[..., 0] * s[..., 0]
    return out.clamp_min(torch.finfo(dtype).tiny)
