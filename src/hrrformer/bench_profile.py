"""What one benchmarked step is made of: its FLOPs, and where its time goes by kind of operator.

* :func:`count_flops` runs a step once under ``torch.utils.flop_counter.FlopCounterMode``. That
  counts matrix products only (mm, bmm, addmm, convolutions and scaled-dot-product attention, the
  CPU flash kernel included through :data:`EXTRA_FLOP_FORMULAS`), forward and backward, as
  2·M·N·K per product, whatever the dtype. **FFTs and elementwise work are not counted**
  (softmax, norms, activations, the optimizer): HRR attention's binding counts where it runs as
  matrix products (the circulant form, non-causal) and not where it runs as FFTs (causal).
* :func:`profile_steps` runs a few steps under ``torch.profiler`` (CPU activity) and
  :func:`summarize` sorts the operators by self CPU time (time in the operator itself, not in
  the operators it calls), each put in one of :data:`CATEGORIES` by :func:`classify`, with each
  category's share of the total self time. The profiler adds a little time to every operator
  call, so many small operators weigh somewhat more than they do unprofiled. On CUDA, self CPU
  time is the time to launch kernels, not to run them.

:mod:`hrrformer.bench_methods` calls both in its worker; :mod:`hrrformer.bench` writes the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = [
    "CATEGORIES",
    "EXTRA_FLOP_FORMULAS",
    "classify",
    "count_flops",
    "profile_steps",
    "summarize",
    "top_costs",
]

#: the kinds of operator time is split into, in the order they are reported.
CATEGORIES = ("matmul", "fft", "elementwise", "allocation", "other")

#: aten operators (without ``aten::``) that multiply matrices.
_MATMUL = frozenset(
    {
        "mm", "bmm", "addmm", "addbmm", "baddbmm", "addmv", "mv", "dot", "vdot", "matmul", "linear", "einsum",
        "_addmm_activation", "mkldnn_linear", "_mkl_linear", "mkldnn_matmul", "_convolution", "convolution",
        "conv1d", "conv2d", "conv3d", "mkldnn_convolution", "convolution_backward",
    }
)  # fmt: skip
_MATMUL_PREFIXES = ("scaled_dot_product", "_scaled_dot_product", "_flash_attention", "_efficient_attention")
_FFT_PREFIXES = ("_fft_", "fft_")
#: aten operators that allocate or fill memory without computing from other tensors.
_ALLOCATION = frozenset(
    {
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
        "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "resize_", "fill_",
        "zero_", "scalar_tensor", "_efficientzerotensor",
    }
)  # fmt: skip
#: aten operators that only make views or metadata (their self time is dispatch overhead).
_VIEWS = frozenset(
    {
        "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "transpose", "t", "permute", "expand",
        "expand_as", "unsqueeze", "squeeze", "select", "slice", "narrow", "split", "split_with_sizes", "chunk",
        "unbind", "alias", "detach", "detach_", "lift_fresh", "view_as_real", "view_as_complex", "contiguous",
        "numpy_T", "flatten", "unflatten", "movedim", "diagonal", "real", "imag", "resolve_conj", "resolve_neg",
    }
)  # fmt: skip


def classify(name: str) -> str:
    """The category of a profiler event name (one of :data:`CATEGORIES`).

    ``matmul``: matrix products, convolutions, scaled-dot-product attention; ``fft``: ``_fft_*``
    and ``fft_*``; ``allocation``: empty, zeros, full, resize_, fill_ and the like; ``other``:
    views and metadata, and events that are not aten operators (autograd engine nodes, optimizer
    annotations); ``elementwise``: every other aten operator (add, mul, copy_, to, cat,
    layer_norm, gelu, softmax, reductions, indexing: memory-bound work).
    """
    if not name.startswith("aten::"):
        return "other"
    op = name.removeprefix("aten::")
    if op in _ALLOCATION:
        return "allocation"
    if op in _MATMUL or op.rstrip("_") in _MATMUL or op.startswith(_MATMUL_PREFIXES):
        return "matmul"
    if op.startswith(_FFT_PREFIXES):
        return "fft"
    if op in _VIEWS:
        return "other"
    return "elementwise"


def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of ``_scaled_dot_product_flash_attention_for_cpu``: Q·Kᵀ and P·V, 4·B·h·T·S·d."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(
    grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    """FLOPs of its backward: the four products of dQ, dK, dV and dP, and the recomputed Q·Kᵀ."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas FlopCounterMode lacks: PyTorch counts its CUDA attention kernels but not the CPU one."""
    aten = torch.ops.aten
    pairs = (
        ("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_sdpa_backward_flops),
    )
    return {getattr(aten, name): formula for name, formula in pairs if hasattr(aten, name)}


#: operator → FLOP formula (on shapes), added to FlopCounterMode's own table.
EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = _extra_flop_formulas()


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of the matrix products that ``step()`` runs, forward and backward (see the module doc)."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
        step()
    return int(counter.get_total_flops())


def summarize(events: Iterable[tuple[str, float, int]], top: int = 10) -> dict[str, Any]:
    """Operators ``(name, self time in µs, calls)`` → the profile record.

    Returns ``total_self_ms``; ``shares``, each category's fraction of the total self time
    (summing to 1 when anything was timed); and ``top``, the ``top`` operators by self time,
    each with ``name``, ``category``, ``self_ms``, ``pct`` of the total and ``calls``.
    Events of the same name are added together.
    """
    merged: dict[str, list[float]] = {}
    for name, self_us, calls in events:
        entry = merged.setdefault(name, [0.0, 0])
        entry[0] += max(float(self_us), 0.0)
        entry[1] += int(calls)
    total_us = sum(us for us, _ in merged.values())
    by_category = dict.fromkeys(CATEGORIES, 0.0)
    for name, (us, _) in merged.items():
        by_category[classify(name)] += us
    ranked = sorted(merged.items(), key=lambda item: item[1][0], reverse=True)[:top]
    return {
        "total_self_ms": total_us / 1000.0,
        "shares": {c: (us / total_us if total_us > 0 else 0.0) for c, us in by_category.items()},
        "top": [
            {
                "name": name,
                "category": classify(name),
                "self_ms": us / 1000.0,
                "pct": 100.0 * us / total_us if total_us > 0 else 0.0,
                "calls": calls,
            }
            for name, (us, calls) in ranked
        ],
    }


def profile_steps(reset: Callable[[], None], step: Callable[[], None], steps: int = 3, top: int = 10) -> dict[str, Any]:
    """Run ``reset(); step()`` ``steps`` times under ``torch.profiler`` → :func:`summarize`'s record,
    with ``steps`` added (the times are those of all the steps together)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            reset()
            step()
    events = ((e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages())
    return {"steps": steps, **summarize(events, top)}


def top_costs(profile: dict[str, Any], n: int = 3) -> str:
    """The ``n`` costliest operators of a profile record as ``name pct%`` joined by ``; `` (aten:: dropped)."""
    return "; ".join(f"{op['name'].removeprefix('aten::')} {op['pct']:.1f}%" for op in profile["top"][:n])
