"""The kernel's precision under mixed precision: it computes in its own dtype, never autocast's.

Under ``torch.autocast`` (CPU or CUDA, bfloat16 or float16) a matrix multiply inside the kernel
would silently run in half precision: the cosine scores (Parseval's weighted sums, the circulant
form's V̂ = QC) would keep 8 bits of mantissa, and a backward pass would mix float32 saved tensors
with half-precision ones. Every function of the kernel that the layer or the chunked block calls
is therefore wrapped in :func:`kernel_precision`: autocast is off for the device of its first
tensor argument, and the kernel runs in :func:`hrrformer.hrr.compute_dtype` of its inputs (float32
for half precision; the caller casts). The projections around the kernel stay under autocast,
which is where the matrix units pay.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

__all__ = ["autocast_off", "kernel_precision"]

P = ParamSpec("P")
R = TypeVar("R")


def autocast_off(device_type: str) -> torch.autocast:
    """A context in which autocast is disabled for ``device_type`` ("cpu", "cuda", …)."""
    return torch.autocast(device_type, enabled=False)


def _device_type(args: tuple, kwargs: dict) -> str | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return value[0].device.type
    return None


def kernel_precision(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with autocast disabled on the device of its first tensor argument (see the module)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        device_type = _device_type(args, kwargs)
        if device_type is None or not torch.is_autocast_enabled(device_type):
            return fn(*args, **kwargs)
        with autocast_off(device_type):
            return fn(*args, **kwargs)

    return wrapper
