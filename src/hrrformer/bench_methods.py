"""Worker side of ``hrrformer bench``: the methods it times, and one configuration measured here.

:mod:`hrrformer.bench` starts one fresh interpreter per configuration::

    python -m hrrformer.bench_methods '<JSON spec>'

which builds the inputs, records the memory baseline, runs ``warmup`` untimed steps and then up
to ``repeats`` timed ones, and prints one JSON object on its last stdout line (the result).

Methods (``--attention``):

* ``hrr``: :func:`hrrformer.hrr_attention`, the library's fast path;
* ``hrr-reference``: :func:`authors_hrr_attention`, the authors' JAX formulation transcribed
  as they wrote it (complex FFTs, five of them forward; β over every position; −1e9 mask);
* ``softmax``: ``F.scaled_dot_product_attention``;
* ``linear``: one E × E ``nn.Linear`` on the (B, T, E) tensor: the cost of a projection;
* ``elementwise``: ``q * k + v``: reads q, k, v once and writes one tensor, a memory-bound floor.

Attention inputs are q, k, v of shape (B, heads, T, E / heads).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import hrr_attention
from .model import Hrrformer, HrrformerConfig
from .options import pick
from .tasks import get_preset

__all__ = [
    "ATTENTION_METHODS",
    "METHODS",
    "authors_hrr_attention",
    "measure",
    "model_config_for",
]

#: every method ``--attention`` accepts, in the order they are run and drawn.
METHODS = ("hrr", "hrr-reference", "softmax", "linear", "elementwise")
#: methods that are attention (q, k, v → output); the others only set the scale of things.
ATTENTION_METHODS = ("hrr", "hrr-reference", "softmax")
#: attention choices of ``--model`` (the model's own attention implementations).
MODEL_ATTENTIONS = ("hrr", "softmax")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


# ----------------------------------------------------------------------------- the authors' formulation
def _authors_binding(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``np.real(ifft(fft(x) * fft(y)))`` over the last axis (their ``HRR.with_flax.Binding``)."""
    return torch.fft.ifft(torch.fft.fft(x, dim=-1) * torch.fft.fft(y, dim=-1), dim=-1).real


def _authors_approx_inverse(x: torch.Tensor) -> torch.Tensor:
    """``np.roll(np.flip(x, axis), 1, axis)`` (their ``ApproxInverse``)."""
    return torch.roll(torch.flip(x, dims=(-1,)), shifts=1, dims=-1)


def _authors_cosine(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
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
    bind = _authors_binding(k_, v_)  # (B, h, T, d)
    bind = bind.sum(-2, keepdim=True)  # (B, h, 1, d)
    vp = _authors_binding(bind, _authors_approx_inverse(q_))  # unbinding(bind, q): (B, h, T, d)
    scale = _authors_cosine(v_, vp, eps)  # (B, h, T, 1)
    if key_padding_mask is not None:
        mask = (~key_padding_mask).to(dtype)[:, None, :, None]  # (B, 1, T, 1), 1 = real token
        scale = scale + (1.0 - mask) * (-1e9)
    weight = torch.softmax(scale, dim=-2)  # over T
    return (weight * v_).to(q.dtype)  # (B, h, T, d)


def _hrr(q, k, v):
    return hrr_attention(q, k, v)


def _softmax(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def _elementwise(q, k, v):
    return q * k + v


_ATTENTION_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "hrr": _hrr,
    "hrr-reference": authors_hrr_attention,
    "softmax": _softmax,
    "elementwise": _elementwise,
}


# ----------------------------------------------------------------------------- memory probes
def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux ≥ 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _CpuMemory:
    """Peak resident memory of this process over a baseline.

    The baseline is VmRSS after imports and inputs. ``ru_maxrss`` alone is a high-water mark
    since the process began (imports can leave it above the current RSS, and a vfork'd child may
    even inherit its parent's), so the mark is reset first through /proc/self/clear_refs and the
    peak read back from VmHWM; where that is refused, ``ru_maxrss`` before and after is used.
    """

    def start(self) -> None:
        self.reset_ok = _reset_peak_rss()
        self.base_kb = _status_kb("VmRSS") if self.reset_ok else None
        if self.base_kb is None:
            self.base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def peak_mb(self) -> float:
        peak_kb = _status_kb("VmHWM") if self.reset_ok else None
        if peak_kb is None:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(peak_kb - self.base_kb, 0) / 1024.0

    def baseline_mb(self) -> float:
        return self.base_kb / 1024.0


class _CudaMemory:
    """Peak ``torch.cuda.max_memory_allocated`` over what was allocated before the work."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)

    def peak_mb(self) -> float:
        return max(torch.cuda.max_memory_allocated(self.device) - self.base, 0) / 2**20

    def baseline_mb(self) -> float:
        return self.base / 2**20


# ----------------------------------------------------------------------------- workloads
class _Workload:
    """One configuration: ``reset()`` (untimed) then ``step()`` (timed)."""

    extra: dict[str, Any]

    def reset(self) -> None:  # pragma: no cover - overridden
        pass

    def step(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _KernelWorkload(_Workload):
    """An attention method (or a reference) on random inputs, forward or forward + backward."""

    def __init__(self, spec: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
        method = spec["method"]
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        b, t, e, h = spec["batch"], spec["seq_len"], spec["dim"], spec["heads"]
        if e % h:
            raise ValueError(f"--dim ({e}) must be divisible by --heads ({h})")
        self.backward = spec["mode"] == "fwd+bwd"
        g = torch.Generator(device="cpu").manual_seed(spec.get("seed", 0))

        def randn(*shape: int) -> torch.Tensor:
            x = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
            return x.requires_grad_(self.backward)

        if method == "linear":
            layer = nn.Linear(e, e, bias=False).to(device=device, dtype=dtype)
            if not self.backward:
                layer.requires_grad_(False)
            self.inputs: tuple[torch.Tensor, ...] = (randn(b, t, e),)  # (B, T, E)
            self.params = list(layer.parameters())
            fn: Callable[..., torch.Tensor] = layer
        else:
            self.inputs = tuple(randn(b, h, t, e // h) for _ in range(3))  # q, k, v (B, h, T, d)
            self.params = []
            fn = _ATTENTION_FUNCTIONS[method]
        self.fn = torch.compile(fn) if spec.get("compile") else fn
        out_shape = self.inputs[0].shape
        self.grad = torch.randn(*out_shape, generator=g).to(device=device, dtype=dtype) if self.backward else None
        self.extra = {}

    def reset(self) -> None:
        for x in (*self.inputs, *self.params):
            x.grad = None

    def step(self) -> None:
        if self.backward:
            out = self.fn(*self.inputs)
            out.backward(self.grad)
        else:
            with torch.no_grad():
                self.fn(*self.inputs)


def model_config_for(task: str) -> tuple[HrrformerConfig, int, int]:
    """(model config, batch, sequence length) benchmarked by ``--model TASK``.

    Raises ValueError for an unknown task.
    """
    names = {"listops": ("listops", "cpu", 20, 10), "malware": ("binaries", "paper", 257, 2)}
    if task not in names:
        raise ValueError(f"unknown --model task {task!r}; known: {sorted(names)}")
    task_name, preset_name, vocab_size, num_classes = names[task]
    options = get_preset(task_name, preset_name).options
    model = {**pick(HrrformerConfig, options), "layers": 1, "vocab_size": vocab_size, "num_classes": num_classes}
    config = HrrformerConfig(**model)
    return config, options["batch_size"], config.max_len


class _ModelWorkload(_Workload):
    """One training step of a whole Hrrformer: forward, cross-entropy, backward, Adam."""

    def __init__(self, spec: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
        config, batch, seq_len = model_config_for(spec["task"])
        batch = spec.get("batch") or batch
        seq_len = spec.get("seq_len") or seq_len
        config.attention = spec["method"]
        config.chunk_size = spec.get("chunk_size")
        config.max_len = max(config.max_len, seq_len)
        config.__post_init__()  # re-validate after the overrides
        g = torch.Generator(device="cpu").manual_seed(spec.get("seed", 0))
        torch.manual_seed(spec.get("seed", 0))
        self.model = Hrrformer(config).to(device)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        low = 1 if config.pad_id == 0 else 0  # no padding: every position is real
        tokens = torch.randint(low, config.vocab_size, (batch, seq_len), generator=g)
        tokens = tokens.masked_fill(tokens == config.pad_id, low) if config.pad_id else tokens
        self.tokens = tokens.to(device)  # (B, T)
        self.labels = torch.randint(0, config.num_classes, (batch,), generator=g).to(device)
        self.forward = torch.compile(self.model) if spec.get("compile") else self.model
        self.autocast = dtype in (torch.bfloat16, torch.float16)
        self.dtype, self.device_type = dtype, device.type
        self.batch, self.seq_len = batch, seq_len
        self.extra = {"dim": config.dim, "heads": config.heads, "batch": batch, "seq_len": seq_len}

    def reset(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.autocast):
            logits = self.forward(self.tokens)  # (B, C)
        loss = F.cross_entropy(logits.float(), self.labels)
        loss.backward()
        self.optimizer.step()


# ----------------------------------------------------------------------------- measurement
def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_error = getattr(torch, "OutOfMemoryError", None)
    if oom_error is not None and isinstance(exc, oom_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this process and return the result (see the module doc).

    spec keys: kind ("kernel" | "model"), method, seq_len, dim, heads, batch, mode, dtype,
    device, compile, warmup, repeats, time_budget_s (stop repeating once a run's time × repeats
    passes it), deadline (``time.time()`` by which the parent kills us), seed, threads, task,
    memory_limit_mb (RLIMIT_DATA: an allocation past it fails and is reported as ``oom``).
    """
    device = _resolve_device(spec.get("device", "cpu"))
    dtype = _DTYPES[spec.get("dtype", "float32")]
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec.get("memory_limit_mb"):  # heap and private mappings: allocations past it raise, no OOM killer
        limit = int(spec["memory_limit_mb"]) * 2**20
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    result: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        workload_cls = _ModelWorkload if spec.get("kind") == "model" else _KernelWorkload
        # Prime: one eager step of a tiny copy loads what a first call loads once per process
        # (autograd and OpenMP threads, kernels, FFT plans: ~40 MB of RSS on CPU), so that it is
        # not counted as the peak memory of the configuration.
        tiny = workload_cls({**spec, "seq_len": min(8, spec["seq_len"]), "batch": 1, "compile": False}, device, dtype)
        tiny.reset()
        tiny.step()
        del tiny
        workload: _Workload = workload_cls(spec, device, dtype)
        memory = _CudaMemory(device) if device.type == "cuda" else _CpuMemory()
        sync()
        memory.start()
        warm_times = []
        # With torch.compile the first call compiles: one more warm-up, so that the last one
        # (which sizes the repeats) is a compiled run.
        n_warmup = max(int(spec.get("warmup", 1)), 0) + bool(spec.get("compile"))
        for _ in range(n_warmup):
            workload.reset()
            sync()
            start = time.perf_counter()
            workload.step()
            sync()
            warm_times.append(time.perf_counter() - start)
        per_run = warm_times[-1] if warm_times else 0.0
        repeats = max(int(spec.get("repeats", 5)), 1)
        budget = float(spec.get("time_budget_s", 10.0))
        if per_run > 0:
            repeats = min(repeats, max(1, int(budget / per_run)))
        deadline = spec.get("deadline")
        notes = ["peak includes torch.compile's own memory"] if spec.get("compile") and device.type == "cpu" else []
        if deadline is not None and warm_times and per_run > 0.9 * (deadline - time.time()):
            repeats = 0
            notes.append("timed from the warm-up run: no repeat fits before the timeout")
        times = []
        for _ in range(repeats):
            workload.reset()
            sync()
            start = time.perf_counter()
            workload.step()
            sync()
            times.append(time.perf_counter() - start)
        if not times:
            if not warm_times:
                raise RuntimeError("nothing was timed: warmup=0 and repeats=0")
            times = warm_times[-1:]
        ms = [1000.0 * s for s in times]
        result.update(
            status="ok",
            times_ms=ms,
            warmup_ms=[1000.0 * s for s in warm_times],
            median_ms=statistics.median(ms),
            min_ms=min(ms),
            max_ms=max(ms),
            repeats=repeats,
            peak_mb=memory.peak_mb(),
            baseline_mb=memory.baseline_mb(),
            note="; ".join(notes),
            **workload.extra,
        )
    except Exception as exc:
        result.update(status="oom" if _is_oom(exc) else "error", error=f"{type(exc).__name__}: {exc}"[:500])
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hrrformer.bench_methods '<JSON spec>'", file=sys.stderr)
        return 2
    result = measure(json.loads(argv[0]))
    sys.stdout.flush()
    print("\n" + json.dumps(result), flush=True)
    # Skip interpreter teardown (freeing big tensors, compile workers): the parent has its answer.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
