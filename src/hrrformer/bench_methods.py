"""Worker side of ``hrrformer bench``: the methods it times, and one configuration measured here.

:mod:`hrrformer.bench` starts one fresh interpreter per configuration::

    python -m hrrformer.bench_methods '<JSON spec>'

which builds the inputs, records the memory baseline, runs ``warmup`` untimed steps and then up
to ``repeats`` timed ones, and prints one JSON object on its last stdout line (the result).

Methods (``--attention``):

* ``hrr``: :func:`hrrformer.hrr_attention`, the library's fast path;
* ``softmax``: ``F.scaled_dot_product_attention``;
* ``linear``: one E × E ``nn.Linear`` on the (B, T, E) tensor: the cost of a projection (E × N
  with the spec's ``out_dim`` N: what ``hrrformer bench --peak`` times);
* ``elementwise``: ``q * k + v``: reads q, k, v once and writes one tensor, a memory-bound floor.

Attention inputs are q, k, v of shape (B, heads, T, E / heads). A spec may also name an
attention function of its own, ``"function": "module:attr"`` (``hrrformer bench
--attention-function NAME=module:attr``), imported here and timed as the built-in methods are
(e.g. another formulation of HRR attention, against ``hrr``).

``--model TASK`` times a training step of the model of a task's ``cpu`` preset
(:func:`bench_model_for`); with ``count_flops`` the worker also counts the step's FLOPs once, and
with ``profile`` it profiles a few steps (:mod:`hrrformer.bench_profile`), both untimed and after
the peak memory is read.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import hrr_attention
from .bench_profile import count_flops, profile_steps
from .data import listops
from .data.common import BYTE_VOCAB
from .kinds import KINDS, untaken_options
from .model import Hrrformer, HrrformerConfig, HrrformerDualEncoder
from .options import pick
from .tasks import TASKS, get_preset

__all__ = [
    "ATTENTION_METHODS",
    "DATA_SHAPES",
    "METHODS",
    "MODEL_ALIASES",
    "MODEL_TASKS",
    "PROFILE_STEPS",
    "BenchModel",
    "DataShape",
    "ModelWorkload",
    "bench_model_for",
    "load_function",
    "measure",
    "model_config_for",
]

#: every method ``--attention`` accepts, in the order they are run and drawn.
METHODS = ("hrr", "softmax", "linear", "elementwise")
#: methods that are attention (q, k, v → output); the others only set the scale of things.
ATTENTION_METHODS = ("hrr", "softmax")
#: attention choices of ``--model``: the model's attention kinds (:mod:`hrrformer.kinds`).
MODEL_ATTENTIONS = tuple(KINDS)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
#: steps run under the profiler with ``profile`` (after the timed ones).
PROFILE_STEPS = 3


class DataShape(NamedTuple):
    """What a task's data decides about its model: vocabulary, classes, one or two documents."""

    vocab_size: int
    num_classes: int
    pair: bool = False


#: MQAR's vocabulary as the task generates it (Zoology's V = 8,192).
_MQAR_VOCAB: int = dict(TASKS["mqar"].generator_options)["vocab_size"]

#: Data module (``TaskSpec.data_task``) → its data's shape. The loaders read these from the data
#: (``hrrformer.data.*.load``); here are the standard data sets' values: bytes + padding (257
#: token ids), CIFAR-10's 10 classes, binaries as malware or not.
DATA_SHAPES: dict[str, DataShape] = {
    "listops": DataShape(len(listops.VOCAB), listops.NUM_CLASSES),
    "text": DataShape(BYTE_VOCAB, 2),
    "retrieval": DataShape(BYTE_VOCAB, 2, pair=True),
    "imdb-pairs": DataShape(BYTE_VOCAB, 2, pair=True),
    "image": DataShape(BYTE_VOCAB, 10),
    "pathfinder": DataShape(BYTE_VOCAB, 2),
    "binaries": DataShape(BYTE_VOCAB, 2),
    "mqar": DataShape(_MQAR_VOCAB, _MQAR_VOCAB),  # every token id, and a value per query
}
#: Per-position models (``pooling="none"``) are timed with one labelled position in this many (MQAR at
#: T = 64 with 4 pairs asks 4 queries); the head runs at those positions only, as in training.
QUERY_EVERY = 16
#: ``--model`` names that are not tasks: name → (task, preset). ``malware``: the authors' paper-sized
#: binaries network (T = 16,384, dim 256, 8 heads, one layer, batch 4).
MODEL_ALIASES: dict[str, tuple[str, str]] = {"malware": ("binaries", "paper")}
#: every name ``--model`` accepts (besides ``all``, every task).
MODEL_TASKS = (*TASKS, *MODEL_ALIASES)


# ----------------------------------------------------------------------------- kernels
def _hrr(q, k, v):
    return hrr_attention(q, k, v)


def _softmax(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def _elementwise(q, k, v):
    return q * k + v


_ATTENTION_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "hrr": _hrr,
    "softmax": _softmax,
    "elementwise": _elementwise,
}


def load_function(path: str) -> Callable[..., torch.Tensor]:
    """The callable ``module:attr`` names (``attr`` may be dotted); ValueError when it is not one."""
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"expected module:attr, got {path!r}")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path}: {type(exc).__name__}: {exc}") from exc
    if not callable(found):
        raise ValueError(f"{path} is not callable")
    return found


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
    """One configuration: ``reset()`` (untimed) then ``step()`` (timed); ``flop_step()`` is the
    same work run eagerly (never compiled), for counting FLOPs."""

    extra: dict[str, Any]

    def reset(self) -> None:  # pragma: no cover - overridden
        pass

    def step(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def flop_step(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _KernelWorkload(_Workload):
    """An attention method (or a ``function`` of the spec) on random inputs, forward or forward + backward."""

    def __init__(self, spec: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
        method, function = spec["method"], spec.get("function")
        if method not in METHODS and not function:
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
            n = spec.get("out_dim") or e
            layer = nn.Linear(e, n, bias=False).to(device=device, dtype=dtype)
            if not self.backward:
                layer.requires_grad_(False)
            self.inputs: tuple[torch.Tensor, ...] = (randn(b, t, e),)  # (B, T, E)
            self.params = list(layer.parameters())
            fn: Callable[..., torch.Tensor] = layer
            out_shape: tuple[int, ...] = (b, t, n)
        else:
            self.inputs = tuple(randn(b, h, t, e // h) for _ in range(3))  # q, k, v (B, h, T, d)
            self.params = []
            fn = load_function(function) if function else _ATTENTION_FUNCTIONS[method]
            out_shape = (b, h, t, e // h)
        self.eager = fn
        self.fn = torch.compile(fn) if spec.get("compile") else fn
        self.grad = torch.randn(*out_shape, generator=g).to(device=device, dtype=dtype) if self.backward else None
        self.extra = {}

    def reset(self) -> None:
        for x in (*self.inputs, *self.params):
            x.grad = None

    def step(self) -> None:
        self._run(self.fn)

    def flop_step(self) -> None:
        self._run(self.eager)

    def _run(self, fn: Callable[..., torch.Tensor]) -> None:
        if self.backward:
            out = fn(*self.inputs)
            out.backward(self.grad)
        else:
            with torch.no_grad():
                fn(*self.inputs)


@dataclass(frozen=True)
class BenchModel:
    """The model ``--model TASK`` times: its config, batch size, sequence length (per document) and
    whether it reads two documents (:class:`~hrrformer.model.HrrformerDualEncoder`)."""

    config: HrrformerConfig
    batch: int
    seq_len: int
    pair: bool = False


def bench_model_for(task: str, attention: str = "hrr") -> BenchModel:
    """The model of ``task``'s ``cpu`` preset (an alias of :data:`MODEL_ALIASES`: its preset) with
    ``attention``: the preset's model options, layers included, its batch size and ``max_len``, and
    :data:`DATA_SHAPES`' vocabulary and classes. As ``hrrformer train`` does, a preset's options
    that ``attention`` does not take (HRR's, for the other kinds) are dropped, and a kind that mixes
    no positions (``none``) pools by the mean where the preset pools by CLS (which it refuses).

    Raises ValueError for an unknown task.
    """
    if task not in MODEL_TASKS:
        raise ValueError(f"unknown --model task {task!r}; known: {', '.join(MODEL_TASKS)}, all")
    task_name, preset_name = MODEL_ALIASES.get(task, (task, "cpu"))
    options = get_preset(task_name, preset_name).options
    data = DATA_SHAPES[TASKS[task_name].data_task]
    model = {**pick(HrrformerConfig, options), "vocab_size": data.vocab_size, "num_classes": data.num_classes}
    model["attention"] = attention
    model.update(untaken_options(attention))
    if model.get("pooling") == "cls" and not KINDS[attention].mixes_positions:
        model["pooling"] = "mean"
    config = HrrformerConfig(**model)
    return BenchModel(config, options["batch_size"], config.max_len, data.pair)


def model_config_for(task: str) -> tuple[HrrformerConfig, int, int]:
    """(model config, batch, sequence length) of :func:`bench_model_for` (HRR attention)."""
    model = bench_model_for(task)
    return model.config, model.batch, model.seq_len


def _random_tokens(config: HrrformerConfig, batch: int, seq_len: int, g: torch.Generator) -> torch.Tensor:
    """(B, T) token ids drawn uniformly, none of them padding: every position is real."""
    low = 1 if config.pad_id == 0 else 0
    tokens = torch.randint(low, config.vocab_size, (batch, seq_len), generator=g)
    return tokens.masked_fill(tokens == config.pad_id, low) if config.pad_id else tokens


class ModelWorkload(_Workload):
    """One training step of a whole model: forward, cross-entropy, backward, Adam.

    Two-document tasks run :class:`~hrrformer.model.HrrformerDualEncoder` on two (B, T) token
    tensors. bfloat16 / float16: the forward under ``torch.autocast``, the loss in float32.
    """

    def __init__(self, spec: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
        bench = bench_model_for(spec["task"], spec["method"])
        config = bench.config
        batch = spec.get("batch") or bench.batch
        seq_len = spec.get("seq_len") or bench.seq_len
        config.chunk_size = spec.get("chunk_size")
        for name, value in spec.get("model_options", {}).items():  # --set FIELD=VALUE
            setattr(config, name, value)
        config.max_len = max(config.max_len, seq_len)
        config.__post_init__()  # re-validate after the overrides
        g = torch.Generator(device="cpu").manual_seed(spec.get("seed", 0))
        torch.manual_seed(spec.get("seed", 0))
        model_cls = HrrformerDualEncoder if bench.pair else Hrrformer
        self.model = model_cls(config).to(device)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        documents = 2 if bench.pair else 1
        # tokens, or tokens_a and tokens_b: (B, T) each
        self.tokens = tuple(_random_tokens(config, batch, seq_len, g).to(device) for _ in range(documents))
        # per position: a (B, T) mask of the labelled positions and their labels (N,); else (B,)
        self.positions = None
        if config.pooling == "none":
            t = torch.arange(seq_len)
            labelled = (t % QUERY_EVERY == QUERY_EVERY - 1) | (t == seq_len - 1)  # at least one per sequence
            self.positions = labelled.expand(batch, seq_len).to(device)
        rows = batch if self.positions is None else int(self.positions.sum())
        self.labels = torch.randint(0, config.num_classes, (rows,), generator=g).to(device)
        self.forward = torch.compile(self.model) if spec.get("compile") else self.model
        self.autocast = dtype in (torch.bfloat16, torch.float16)
        self.dtype, self.device_type = dtype, device.type
        self.extra = {
            "dim": config.dim,
            "heads": config.heads,
            "batch": batch,
            "seq_len": seq_len,
            "tokens": batch * seq_len * documents,  # per step
        }

    def reset(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self._loss(self.forward).backward()
        self.optimizer.step()

    def flop_step(self) -> None:
        """Forward and backward of the eager model; Adam's update has no matrix product to count."""
        self._loss(self.model).backward()

    def _loss(self, forward: Callable[..., torch.Tensor]) -> torch.Tensor:
        extra = {} if self.positions is None else {"positions": self.positions}
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.autocast):
            logits = forward(*self.tokens, **extra)  # (B, C), or (N, C) at the labelled positions
        return F.cross_entropy(logits.float(), self.labels)


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


def _limit_memory(limit_mb: int) -> None:
    """RLIMIT_DATA (heap and private mappings): an allocation past it raises, no OOM killer."""
    limit = int(limit_mb) * 2**20
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _time_steps(workload: _Workload, runs: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of ``runs`` steps, each after an untimed ``reset()``."""
    times = []
    for _ in range(runs):
        workload.reset()
        sync()
        start = time.perf_counter()
        workload.step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _fits(deadline: float | None, seconds: float) -> bool:
    """Whether ``seconds`` more of work ends well before the parent's ``deadline``."""
    return deadline is None or seconds < 0.9 * (deadline - time.time())


def _repeats(spec: dict[str, Any], per_run: float, notes: list[str]) -> int:
    """Timed runs: ``repeats``, fewer when they would pass ``time_budget_s``, none when even one
    would pass the deadline (then the warm-up run is the timing)."""
    repeats = max(int(spec.get("repeats", 5)), 1)
    budget = float(spec.get("time_budget_s", 10.0))
    if per_run > 0:
        repeats = min(repeats, max(1, int(budget / per_run)))
        if not _fits(spec.get("deadline"), per_run):
            notes.append("timed from the warm-up run: no repeat fits before the timeout")
            return 0
    return repeats


def _analyses(spec: dict[str, Any], workload: _Workload, per_run: float, notes: list[str]) -> dict[str, Any]:
    """The untimed extras: ``flops`` of one step (``count_flops``) and a ``profile`` of a few
    (``profile``), each skipped with a note when it would not end before the deadline."""
    out: dict[str, Any] = {}
    deadline = spec.get("deadline")
    if spec.get("count_flops"):
        if _fits(deadline, 2 * per_run):
            workload.reset()
            out["flops"] = count_flops(workload.flop_step)
        else:
            notes.append("FLOPs not counted: no time left before the timeout")
    if spec.get("profile"):
        steps = int(spec.get("profile_steps", PROFILE_STEPS))
        if _fits(deadline, 1.5 * steps * per_run):
            out["profile"] = profile_steps(workload.reset, workload.step, steps)
        else:
            notes.append("not profiled: no time left before the timeout")
    return out


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this process and return the result (see the module doc).

    spec keys: kind ("kernel" | "model"), method, seq_len, dim, heads, batch, mode, dtype,
    device, compile, warmup, repeats, time_budget_s (stop repeating once a run's time × repeats
    passes it), deadline (``time.time()`` by which the parent kills us), seed, threads, task,
    chunk_size, memory_limit_mb (RLIMIT_DATA: an allocation past it fails and is reported as
    ``oom``), out_dim (method ``linear``: its output width, default dim), function (``module:attr``:
    an attention function timed under the name ``method``), count_flops and profile
    (the untimed extras, :func:`_analyses`; profile_steps, default :data:`PROFILE_STEPS`).

    The result holds the times (``times_ms``, ``median_ms`` …), ``peak_mb``, ``threads`` (this
    worker's ``torch.get_num_threads()``), what the workload reports (a model: its sizes and
    ``tokens`` per step), and ``flops`` and ``profile`` when asked for.
    """
    device = _resolve_device(spec.get("device", "cpu"))
    dtype = _DTYPES[spec.get("dtype", "float32")]
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec.get("memory_limit_mb"):
        _limit_memory(spec["memory_limit_mb"])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    result: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        workload_cls = ModelWorkload if spec.get("kind") == "model" else _KernelWorkload
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
        # With torch.compile the first call compiles: one more warm-up, so that the last one
        # (which sizes the repeats) is a compiled run.
        n_warmup = max(int(spec.get("warmup", 1)), 0) + bool(spec.get("compile"))
        warm_times = _time_steps(workload, n_warmup, sync)
        per_run = warm_times[-1] if warm_times else 0.0
        notes = ["peak includes torch.compile's own memory"] if spec.get("compile") and device.type == "cpu" else []
        repeats = _repeats(spec, per_run, notes)
        times = _time_steps(workload, repeats, sync)
        if not times:
            if not warm_times:
                raise RuntimeError("nothing was timed: warmup=0 and repeats=0")
            times = warm_times[-1:]
        peak_mb = memory.peak_mb()  # before the extras, which allocate on their own
        extras = _analyses(spec, workload, statistics.median(times), notes)
        ms = [1000.0 * s for s in times]
        result.update(
            status="ok",
            times_ms=ms,
            warmup_ms=[1000.0 * s for s in warm_times],
            median_ms=statistics.median(ms),
            min_ms=min(ms),
            max_ms=max(ms),
            repeats=repeats,
            peak_mb=peak_mb,
            baseline_mb=memory.baseline_mb(),
            note="; ".join(notes),
            **workload.extra,
            **extras,
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
