"""Time and peak memory of attention methods (or a whole training step) against sequence length.

Every configuration (method × length × dtype; with ``--model``, task × method × dtype) runs in a
fresh interpreter (``python -m hrrformer.bench_methods``): warm-up, then repeated timed runs; the
median and min–max wall time and the peak memory of that process over its baseline (CPU:
resident memory after imports and inputs; CUDA: ``max_memory_allocated``). A configuration past
``--timeout`` seconds is killed (``timeout``); one that runs out of memory is ``oom``; the longer
lengths of that method (and task and dtype) are then ``skipped``. Results go to ``DIR/bench.csv``
(written as they come) and ``DIR/bench.png``, and a table of ratios to ``hrr`` is printed.

``--model TASK`` (a task of :data:`hrrformer.tasks.TASKS`, ``malware``, ``all`` or a
comma-separated list) times one training step of the task's ``cpu``-preset model at its batch
size and length (:func:`hrrformer.bench_methods.bench_model_for`); two-document tasks run the
dual encoder, and their ``tokens_per_s`` counts both documents. Each model row also gets the
step's FLOPs (``gflop_per_step``: matrix products only, forward and backward, counted once by
``FlopCounterMode``; FFTs and elementwise work are not counted, :mod:`hrrformer.bench_profile`),
``achieved_gflops`` (those FLOPs over the median time) and, given a peak (``--peak`` now, or a
``peak.json`` in ``--out`` or ``--peak-file``), ``pct_of_peak``: against the peak of the same dtype
and thread count. ``--profile`` adds the costliest operators by self CPU time (``top_costs``, and
``DIR/profile_<task>_<method>_<dtype>.json`` with the share of matmul, FFT, elementwise,
allocation and other time). A summary per task compares the dtypes' examples per second.

``--peak`` first measures this machine's dense matmul peak: ``F.linear`` forward + backward
(M × K input, N × K weight, 6·M·K·N FLOPs) per ``--peak-shapes``, dtype and thread count (1 and
torch's default, or ``--threads``), each in a fresh worker; the best shape per dtype and thread
count is the peak, written to ``DIR/peak.json``. Without ``--model``, ``--peak`` runs nothing else.

``--attention-function NAME=MODULE:ATTR`` (repeatable) also times an attention function of your
own, ``f(q, k, v)`` with q, k, v (B, heads, T, E / heads) → (B, heads, T, E / heads), under NAME,
in the same workers as the built-in methods; MODULE must be importable by them (on PYTHONPATH).

Examples::

    hrrformer bench --seq-lens 1024,4096,16384 --mode fwd+bwd --out runs/bench
    PYTHONPATH=. hrrformer bench --attention hrr,mine --attention-function mine=my_module:my_attention
    hrrformer bench --model listops --attention hrr,softmax --seq-lens 1000,2000
    hrrformer bench --peak --model all --dtype float32,bfloat16 --profile --out runs/bench-cpu
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import kinds
from .bench_methods import METHODS, MODEL_ATTENTIONS, MODEL_TASKS, bench_model_for, load_function, model_config_for
from .bench_profile import top_costs
from .config import HrrformerConfig
from .perf import keep_freed_memory_env
from .tasks import TASKS

__all__ = [
    "CSV_COLUMNS",
    "DTYPES",
    "compute_table",
    "load_peak",
    "model_config_for",
    "model_option",
    "peak_gflops",
    "peak_record",
    "peak_specs",
    "peak_table",
    "ratio_table",
    "run_config",
    "run_peak",
    "throughput_table",
]

#: bench.csv's columns: the required ones first, then what describes the run further.
CSV_COLUMNS = (
    "method",
    "seq_len",
    "dim",
    "heads",
    "batch",
    "mode",
    "dtype",
    "median_ms",
    "min_ms",
    "max_ms",
    "peak_mb",
    "status",
    "malloc",
    "device",
    "compile",
    "threads",
    "repeats",
    "model",
    "examples_per_s",
    "tokens_per_s",
    "chunk_size",
    "options",
    "gflop_per_step",
    "achieved_gflops",
    "pct_of_peak",
    "top_costs",
    "note",
)

DEFAULT_SEQ_LENS = (1024, 4096, 16384, 65536)
#: the dtypes ``--dtype`` takes (bfloat16: inputs in bfloat16; a model's forward under autocast).
DTYPES = ("float32", "bfloat16")
#: ``--peak``'s default (M, K, N): a projection of 4,096 positions at width 1,024, and one of
#: 32,000 positions (a batch of the cpu presets' long inputs) at width 256.
DEFAULT_PEAK_SHAPES = ((4096, 1024, 1024), (32000, 256, 256))
#: seconds of timed runs per peak configuration (a few repeats of ~0.1-1 s).
PEAK_TIME_BUDGET_S = 2.0
PEAK_WHAT = "F.linear forward+backward: x (M, K), weight (N, K), grads of both; 6·M·K·N FLOPs per step"
#: statuses after which the longer lengths of the same method are not tried.
_STOPPING = ("timeout", "oom")


# ----------------------------------------------------------------------------- running one configuration
def _worker_env(malloc: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in keep_freed_memory_env():
        env.pop(key, None)
    if malloc == "keep":
        env.update(keep_freed_memory_env())
    env["HRRFORMER_MALLOC"] = malloc  # what hrrformer.perf.keep_freed_memory reads, should the worker call it
    src = str(Path(__file__).resolve().parents[1])  # the directory holding the hrrformer package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def run_config(spec: dict[str, Any], timeout: float, malloc: str = "keep") -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; the worker's result, with ``status`` always set.

    status: ``ok``; ``timeout`` (killed after ``timeout`` seconds, interpreter start included);
    ``oom`` (the worker reported an allocation failure, or was killed by SIGKILL, the OOM
    killer's signal); ``error`` (anything else, with ``error`` holding the message).
    """
    spec = {**spec, "deadline": time.time() + timeout}
    cmd = [sys.executable, "-m", "hrrformer.bench_methods", json.dumps(spec)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_worker_env(malloc),
        start_new_session=True,  # its own process group, so a kill reaches compile workers too
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "timeout", "note": f"killed after {timeout:g} s"}
    except BaseException:  # Ctrl-C: its own session does not get the SIGINT, so end it here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode < 0:
        sig = -proc.returncode
        status = "oom" if sig == signal.SIGKILL else "error"
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return {"status": status, "note": f"killed by signal {name}"}
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (stderr or stdout).strip().splitlines()[-3:]
        return {"status": "error", "note": f"exit {proc.returncode}: " + " | ".join(tail)}
    if result.get("error"):
        result["note"] = result["error"]
    return result


# ----------------------------------------------------------------------------- the matmul peak
def peak_specs(
    shapes: Iterable[tuple[int, int, int]], dtypes: Iterable[str], threads: Iterable[int], common: dict[str, Any]
) -> list[dict[str, Any]]:
    """One worker spec per (shape, dtype, threads): the ``linear`` kernel at batch 1, T = M,
    E = K, out_dim = N, forward + backward, FLOPs counted."""
    return [
        {
            **common,
            "kind": "kernel",
            "method": "linear",
            "mode": "fwd+bwd",
            "batch": 1,
            "heads": 1,
            "seq_len": m,
            "dim": k,
            "out_dim": n,
            "dtype": dtype,
            "threads": t,
            "compile": False,
            "count_flops": True,
            "profile": False,
            "time_budget_s": min(float(common.get("time_budget_s", PEAK_TIME_BUDGET_S)), PEAK_TIME_BUDGET_S),
        }
        for (m, k, n) in shapes
        for dtype in dtypes
        for t in threads
    ]


def _peak_entry(spec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    entry = dict(
        m=spec["seq_len"],
        k=spec["dim"],
        n=spec["out_dim"],
        dtype=spec["dtype"],
        threads=result.get("threads", spec["threads"]),
        status=result["status"],
        note=str(result.get("note", "") or ""),
    )
    if result["status"] == "ok" and result.get("flops"):
        entry.update(
            median_ms=result["median_ms"],
            gflop_per_step=result["flops"] / 1e9,
            gflops=result["flops"] / 1e9 / (result["median_ms"] / 1000.0),
        )
    return entry


def peak_record(entries: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """peak.json: the measurements, and ``peak[dtype][threads]``, the best GFLOP/s over shapes."""
    peak: dict[str, dict[str, float]] = {}
    for e in entries:
        if "gflops" in e:
            best = peak.setdefault(e["dtype"], {})
            best[str(e["threads"])] = max(best.get(str(e["threads"]), 0.0), e["gflops"])
    return {"what": PEAK_WHAT, "device": device, "entries": entries, "peak": peak}


def peak_table(record: dict[str, Any]) -> str:
    """GFLOP/s per shape and thread count (rows) and dtype (columns), then the peak rows."""
    dtypes = list(dict.fromkeys(e["dtype"] for e in record["entries"]))
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for e in record["entries"]:
        shape = f"{e['m']}x{e['k']}x{e['n']}"
        cells.setdefault((shape, int(e["threads"])), {})[e["dtype"]] = (
            f"{e['gflops']:.1f}" if "gflops" in e else e["status"]
        )
    lines = [f"{'M×K×N':<18} {'threads':>7} " + " ".join(f"{d:>10}" for d in dtypes)]
    for (shape, t), by_dtype in cells.items():
        lines.append(f"{shape:<18} {t:>7} " + " ".join(f"{by_dtype.get(d, '-'):>10}" for d in dtypes))
    for t in sorted({int(e["threads"]) for e in record["entries"]}):
        values = [peak_gflops(record, d, t) for d in dtypes]
        lines.append(f"{'peak':<18} {t:>7} " + " ".join(f"{v:>10.1f}" if v else f"{'-':>10}" for v in values))
    return "\n".join(lines)


def peak_gflops(record: dict[str, Any] | None, dtype: str, threads: int | str) -> float | None:
    """The peak GFLOP/s of ``dtype`` at ``threads`` in a peak.json record, or None."""
    if not record:
        return None
    value = record.get("peak", {}).get(dtype, {}).get(str(threads))
    return float(value) if value else None


def load_peak(path: Path, required: bool = False) -> dict[str, Any] | None:
    """A peak.json written by ``--peak``; None when absent (ValueError when ``required``)."""
    if not path.is_file():
        if required:
            raise ValueError(f"--peak-file {path} does not exist")
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the peak file {path}: {exc}") from exc


def run_peak(args: argparse.Namespace, device: str, out: Path) -> dict[str, Any]:
    """Measure the matmul peak (``--peak``), write ``out/peak.json``, print its table; the record."""
    threads = [args.threads] if args.threads else sorted({1, _default_threads()})
    specs = peak_specs(args.peak_shapes, args.dtype, threads, _common(args))
    print(f"hrrformer bench: matmul peak, {PEAK_WHAT}", flush=True)
    entries = []
    for spec in specs:
        entry = _peak_entry(spec, run_config(spec, args.timeout, args.malloc))
        entries.append(entry)
        shape = f"{entry['m']}x{entry['k']}x{entry['n']}"
        done = f"{entry['gflops']:.1f} GFLOP/s" if "gflops" in entry else f"{entry['status']} {entry['note']}"
        print(f"  {shape:<18} {entry['dtype']:<9} {entry['threads']} thread(s)  {done}", flush=True)
    record = peak_record(entries, device)
    with open(out / "peak.json", "w") as f:
        json.dump(record, f, indent=2)
    print(f"\n{peak_table(record)}\nwrote {out / 'peak.json'}\n", flush=True)
    return record


# ----------------------------------------------------------------------------- one row of bench.csv
def _row(
    spec: dict[str, Any], result: dict[str, Any], args: argparse.Namespace, device: str, peak: dict[str, Any] | None
) -> dict[str, Any]:
    row: dict[str, Any] = {key: "" for key in CSV_COLUMNS}
    row.update(
        method=spec["method"],
        seq_len=spec["seq_len"],
        dim=spec["dim"],
        heads=spec["heads"],
        batch=spec["batch"],
        mode=spec["mode"],
        dtype=spec["dtype"],
        status=result["status"],
        malloc=args.malloc,
        device=result.get("device", device),
        compile=int(bool(spec["compile"])),
        threads=result.get("threads", spec.get("threads") or ""),
        model=spec.get("task", "") or "",
        chunk_size=spec.get("chunk_size") or "",
        options=" ".join(f"{k}={json.dumps(v)}" for k, v in spec.get("model_options", {}).items()),
        note=str(result.get("note", "") or "").replace("\n", " "),
    )
    if result["status"] != "ok":
        return row
    for key in ("dim", "heads", "batch", "seq_len"):  # model mode reports the sizes it built
        if key in result:
            row[key] = result[key]
    row.update(
        median_ms=f"{result['median_ms']:.4f}",
        min_ms=f"{result['min_ms']:.4f}",
        max_ms=f"{result['max_ms']:.4f}",
        peak_mb=f"{result['peak_mb']:.2f}",
        repeats=result["repeats"],
    )
    seconds = result["median_ms"] / 1000.0
    if spec.get("kind") == "model":
        row["examples_per_s"] = f"{row['batch'] / seconds:.3f}"
        row["tokens_per_s"] = f"{result.get('tokens', row['batch'] * row['seq_len']) / seconds:.1f}"
    if "flops" in result:
        gflop = result["flops"] / 1e9
        row["gflop_per_step"] = f"{gflop:.6g}"
        row["achieved_gflops"] = f"{gflop / seconds:.3f}"
        best = peak_gflops(peak, spec["dtype"], row["threads"])
        row["pct_of_peak"] = f"{100.0 * gflop / seconds / best:.2f}" if best else ""
    if "profile" in result:
        row["top_costs"] = top_costs(result["profile"])
    return row


def _write_profile(path: Path, row: dict[str, Any], profile: dict[str, Any]) -> None:
    """The worker's profile record (:func:`hrrformer.bench_profile.summarize`), with what was profiled."""
    record = {"task": row["model"], **{key: row[key] for key in ("method", "dtype", "seq_len", "batch", "threads")}}
    with open(path, "w") as f:
        json.dump({**record, **profile}, f, indent=2)


def _profile_path(out: Path, spec: dict[str, Any], with_length: bool) -> Path:
    """``out/profile_<task>_<method>_<dtype>[_T<len>].json``."""
    suffix = f"_T{spec['seq_len']}" if with_length else ""
    return out / f"profile_{spec['task']}_{spec['method']}_{spec['dtype']}{suffix}.json"


# ----------------------------------------------------------------------------- reporting
def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _progress_line(row: dict[str, Any]) -> str:
    head = f"{row['method']:<14} T={int(row['seq_len']):>7,}  {row['mode']:<7} {row['dtype']:<8}"
    if row.get("model"):
        head = f"{row['model']:<11} B={row['batch']:<3} {head}"
    if row.get("options"):
        head = f"{head} [{row['options']}]"
    if row["status"] != "ok":
        return f"{head} {row['status']:<8} {row['note']}"
    text = (
        f"{head} {float(row['median_ms']):>10.2f} ms [{float(row['min_ms']):.2f}–{float(row['max_ms']):.2f}]"
        f"  peak {float(row['peak_mb']):>9.1f} MB  ×{row['repeats']}"
    )
    if row["examples_per_s"]:
        text += f"  {float(row['examples_per_s']):.2f} ex/s  {float(row['tokens_per_s']):,.0f} tok/s"
    if row.get("achieved_gflops"):
        pct = f" ({float(row['pct_of_peak']):.1f}% of peak)" if row.get("pct_of_peak") else ""
        text += f"  {float(row['achieved_gflops']):.1f} GFLOP/s{pct}"
    return text


def _first_seen(values: Iterable[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(dict.fromkeys(values))}


def ratio_table(rows: list[dict[str, Any]], baseline: str = "hrr") -> str:
    """Text table per (task, dtype, length): each method's time and memory, and their ratios to
    ``baseline`` at the same task, dtype and length. The task and dtype columns appear when they vary."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if baseline not in methods and methods:
        baseline = methods[0]
    model_order = _first_seen(r.get("model", "") for r in rows)
    dtype_order = _first_seen(r.get("dtype", "") for r in rows)
    show_model, show_dtype = any(model_order), len(dtype_order) > 1

    def group(r: dict[str, Any]) -> tuple[str, str, int]:
        return r.get("model", ""), r.get("dtype", ""), int(r["seq_len"])

    groups = sorted({group(r) for r in rows}, key=lambda g: (model_order[g[0]], g[2], dtype_order[g[1]]))
    by_key = {(*group(r), r["method"]): r for r in rows}

    def label(g: tuple[str, str, int]) -> str:
        return (f"{g[0]:<11} " if show_model else "") + f"{g[2]:>8}" + (f" {g[1]:<9}" if show_dtype else "")

    head = (f"{'task':<11} " if show_model else "") + f"{'T':>8}" + (f" {'dtype':<9}" if show_dtype else "")
    lines = [
        f"{head}  {'method':<14} {'median ms':>11} {'peak MB':>10} {'time/' + baseline:>12} {'mem/' + baseline:>11}  status"
    ]
    for g in groups:
        base = by_key.get((*g, baseline))
        base_ms = _float(base["median_ms"]) if base else None
        base_mb = _float(base["peak_mb"]) if base else None
        for m in methods:
            r = by_key.get((*g, m))
            if r is None:
                continue
            ms, mb = _float(r["median_ms"]), _float(r["peak_mb"])
            t_ratio = f"{ms / base_ms:.2f}" if ms is not None and base_ms else "-"
            m_ratio = f"{mb / base_mb:.2f}" if mb is not None and base_mb and base_mb > 0 else "-"
            ms_text = f"{ms:.2f}" if ms is not None else "-"
            mb_text = f"{mb:.1f}" if mb is not None else "-"
            lines.append(f"{label(g)}  {m:<14} {ms_text:>11} {mb_text:>10} {t_ratio:>12} {m_ratio:>11}  {r['status']}")
    return "\n".join(lines)


def throughput_table(rows: list[dict[str, Any]]) -> str:
    """Per task, method and length of the model rows: examples per second in each dtype (a status
    where it did not finish) and, with both, the ratio bfloat16 / float32."""
    rows = [r for r in rows if r.get("model")]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    both = "float32" in dtypes and "bfloat16" in dtypes
    cells: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["method"], int(r["seq_len"])), {})[r["dtype"]] = r
    lines = [
        f"{'task':<11} {'method':<8} {'T':>6} "
        + " ".join(f"{'ex/s ' + d:>16}" for d in dtypes)
        + (f" {'bf16/fp32':>10}" if both else "")
    ]
    for (task, method, t), by_dtype in cells.items():
        texts = []
        for d in dtypes:
            r = by_dtype.get(d)
            texts.append("-" if r is None else (r["examples_per_s"] or r["status"]))
        line = f"{task:<11} {method:<8} {t:>6} " + " ".join(
            f"{float(x):>16.2f}" if _float(x) is not None else f"{x:>16}" for x in texts
        )
        if both:
            fp32 = _float(by_dtype.get("float32", {}).get("examples_per_s"))
            bf16 = _float(by_dtype.get("bfloat16", {}).get("examples_per_s"))
            line += f" {bf16 / fp32:>10.2f}" if fp32 and bf16 else f" {'-':>10}"
        lines.append(line)
    return "\n".join(lines)


def compute_table(rows: list[dict[str, Any]]) -> str:
    """The rows with counted FLOPs: GFLOP per step, GFLOP/s, % of peak and the top costs."""
    lines = [
        f"{'task':<11} {'method':<8} {'T':>6} {'dtype':<9} {'thr':>3} {'GFLOP/step':>11} {'GFLOP/s':>9} {'% peak':>7}"
        "  top costs (self CPU time)"
    ]
    for r in rows:
        if not r.get("gflop_per_step"):
            continue
        pct = f"{float(r['pct_of_peak']):.1f}" if r.get("pct_of_peak") else "-"
        lines.append(
            f"{r.get('model', ''):<11} {r['method']:<8} {int(r['seq_len']):>6} {r['dtype']:<9} {r['threads']!s:>3}"
            f" {float(r['gflop_per_step']):>11.3f} {float(r['achieved_gflops']):>9.2f} {pct:>7}  {r.get('top_costs', '')}"
        )
    return "\n".join(lines) if len(lines) > 1 else ""


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by plotted line: method, with the task and the dtype in the label where they vary."""
    show_model = len({r.get("model", "") for r in rows}) > 1
    show_dtype = len({r.get("dtype", "") for r in rows}) > 1
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        parts = (r.get("model", "") if show_model else "", r["method"], r.get("dtype", "") if show_dtype else "")
        out.setdefault(" ".join(p for p in parts if p), []).append(r)
    return out


def plot(path: Path, rows: list[dict[str, Any]], title: str = "") -> None:
    """Two log-log panels, time and peak memory against T, one line per method (and task and
    dtype where they vary); ✕ where it stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, series in _series(rows).items():
        mine = sorted(series, key=lambda r: int(r["seq_len"]))
        ok = [r for r in mine if r["status"] == "ok"]
        stopped = [r for r in mine if r["status"] in (*_STOPPING, "error")]
        label = name + (f" ({stopped[0]['status']} at T={int(stopped[0]['seq_len']):,})" if stopped else "")
        for ax, key in zip(axes, ("median_ms", "peak_mb")):
            pts = [(int(r["seq_len"]), float(r[key])) for r in ok if _float(r[key]) and float(r[key]) > 0]
            if pts:
                (line,) = ax.plot(*zip(*pts), marker="o", label=label)
                if stopped:
                    ax.plot([int(stopped[0]["seq_len"])], [pts[-1][1]], marker="x", ms=10, color=line.get_color())
    for ax, ylabel in zip(axes, ("median wall time (ms)", "peak memory over baseline (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line
def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def model_option(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` → (field, value): VALUE as JSON (4, 0.5, true, null) or else as a string."""
    name, sep, value = text.partition("=")
    fields = {f.name for f in dataclasses.fields(HrrformerConfig)}
    if not sep or name not in fields:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with an HrrformerConfig field, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _name_list(text: str) -> list[str]:
    return list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))


def _dtype_list(text: str) -> list[str]:
    values = _name_list(text)
    bad = [d for d in values if d not in DTYPES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated dtypes from {','.join(DTYPES)}, got {text!r}")
    return values


def _function_spec(text: str) -> tuple[str, str]:
    """``NAME=MODULE:ATTR`` → (NAME, MODULE:ATTR)."""
    name, equals, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not equals or not name or "," in name or ":" not in path:
        raise argparse.ArgumentTypeError(f"expected NAME=MODULE:ATTR, got {text!r}")
    return name, path


def _shape_list(text: str) -> list[tuple[int, int, int]]:
    """``4096x1024x1024,32000x256x256`` → [(M, K, N), …]."""
    shapes = []
    for part in _name_list(text):
        try:
            m, k, n = (int(v) for v in part.lower().split("x"))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected shapes MxKxN, got {part!r}") from exc
        if min(m, k, n) < 1:
            raise argparse.ArgumentTypeError(f"expected positive sizes, got {part!r}")
        shapes.append((m, k, n))
    if not shapes:
        raise argparse.ArgumentTypeError(f"expected shapes MxKxN, got {text!r}")
    return shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--attention",
        type=_name_list,
        default=None,
        help=(
            f"comma-separated methods from {','.join(METHODS)} and the --attention-function names (default: all; "
            f"with --model: the attention kinds, {','.join(MODEL_ATTENTIONS)})"
        ),
    )
    parser.add_argument(
        "--attention-function",
        metavar="NAME=MODULE:ATTR",
        type=_function_spec,
        action="append",
        default=[],
        help="also time f(q, k, v) → output, q, k, v (B, heads, T, E/heads), under NAME (repeatable; "
        "MODULE importable by the workers, e.g. on PYTHONPATH; not with --model)",
    )
    parser.add_argument(
        "--seq-lens",
        type=_int_list,
        default=None,
        help=f"comma-separated lengths T (default {','.join(map(str, DEFAULT_SEQ_LENS))}; with --model: the task's)",
    )
    parser.add_argument("--dim", type=int, default=None, help="embedding size E (default 512; ignored with --model)")
    parser.add_argument("--heads", type=int, default=None, help="heads (default 8; ignored with --model)")
    parser.add_argument("--batch", type=int, default=None, help="batch size B (default 1; --model: the task's)")
    parser.add_argument("--mode", choices=("fwd", "fwd+bwd"), default="fwd+bwd", help="default fwd+bwd")
    parser.add_argument(
        "--dtype",
        type=_dtype_list,
        default=["float32"],
        help=f"comma-separated dtypes from {','.join(DTYPES)}, each its own rows (default float32)",
    )
    parser.add_argument("--compile", action="store_true", help="wrap the method (or model) in torch.compile")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per configuration, interpreter start included (60)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (5), fewer when one run is slow")
    parser.add_argument(
        "--time-budget", type=float, default=10.0, help="seconds of timed runs per configuration before cutting repeats"
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in each worker (default torch's)")
    parser.add_argument(
        "--malloc",
        choices=("default", "keep"),
        default="keep",
        help="keep: glibc keeps freed memory in the worker (hrrformer.perf.keep_freed_memory_env); default: glibc's own",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="CPU: allocation limit per worker (RLIMIT_DATA), past which it is 'oom' "
        "(default 80%% of available memory; 0 = none)",
    )
    parser.add_argument(
        "--model",
        metavar="TASK",
        type=_name_list,
        default=None,
        help=f"time a training step of each task's cpu-preset model: {','.join(MODEL_TASKS)}, or all "
        "(comma-separated; malware: the paper-sized binaries model)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="with --model: sequence chunking, each block run over N positions at a time (hrr only)",
    )
    parser.add_argument(
        "--set",
        dest="model_options",
        type=model_option,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="with --model: a model option over the preset's (an HrrformerConfig field; repeatable), "
        "e.g. --set short_conv=4 --set output_gate=true",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="with --model: profile a few steps; top ops by self CPU time in DIR/profile_*.json and top_costs",
    )
    parser.add_argument(
        "--peak",
        action="store_true",
        help="first measure the dense matmul peak (F.linear fwd+bwd) per dtype at 1 and the default threads "
        "(or --threads) → DIR/peak.json; alone, nothing else is run",
    )
    parser.add_argument(
        "--peak-shapes",
        type=_shape_list,
        default=list(DEFAULT_PEAK_SHAPES),
        metavar="MxKxN,...",
        help="--peak's matmul shapes (default " + ",".join("x".join(map(str, s)) for s in DEFAULT_PEAK_SHAPES) + ")",
    )
    parser.add_argument(
        "--peak-file",
        type=Path,
        default=None,
        help="a peak.json for pct_of_peak (default: DIR/peak.json when there is one)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="output directory (runs/bench)")


def _available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _common(args: argparse.Namespace) -> dict[str, Any]:
    """The worker fields every configuration shares; ValueError on a bad request."""
    if args.timeout <= 0 or args.repeats < 1 or args.warmup < 0:
        raise ValueError("--timeout must be > 0, --repeats ≥ 1 and --warmup ≥ 0")
    limit_gb = args.memory_limit_gb
    if limit_gb is None:
        available = _available_mb()
        limit_mb = int(0.8 * available) if available else 0
    else:
        limit_mb = int(limit_gb * 1024)
    return dict(
        device=args.device,
        compile=bool(args.compile),
        warmup=args.warmup,
        repeats=args.repeats,
        time_budget_s=args.time_budget,
        seed=args.seed,
        threads=args.threads,
        memory_limit_mb=limit_mb if args.device == "cpu" or not _cuda_available() else 0,
    )


def _model_tasks(names: list[str]) -> list[str]:
    """``--model``'s names, ``all`` expanded to every task; ValueError for an unknown one."""
    tasks = [t for name in names for t in (TASKS if name == "all" else [name])]
    bad = [t for t in tasks if t not in MODEL_TASKS]
    if bad:
        raise ValueError(f"unknown --model task(s) {bad}; known: {', '.join(MODEL_TASKS)}, all")
    return list(dict.fromkeys(tasks))


def _functions(args: argparse.Namespace) -> dict[str, str]:
    """``--attention-function``'s {NAME: MODULE:ATTR}, each checked to import here; ValueError otherwise."""
    functions: dict[str, str] = {}
    for name, path in getattr(args, "attention_function", None) or []:
        if name in METHODS or name in functions:
            raise ValueError(f"--attention-function {name}: the name is taken; choose another")
        load_function(path)
        functions[name] = path
    return functions


def _model_specs(args: argparse.Namespace, common: dict[str, Any]) -> list[dict[str, Any]]:
    if getattr(args, "attention_function", None):
        raise ValueError("--attention-function times kernels; it does not go with --model")
    methods = args.attention or list(MODEL_ATTENTIONS)
    bad = [m for m in methods if m not in MODEL_ATTENTIONS]
    if bad:
        raise ValueError(f"--model takes --attention from {MODEL_ATTENTIONS}, got {bad}")
    unchunkable = [m for m in methods if not kinds.get(m).chunkable]
    if args.chunk_size is not None and unchunkable:
        raise ValueError(
            f"--chunk-size cannot chunk --attention {', '.join(unchunkable)}: {kinds.get(unchunkable[0]).note}"
        )
    specs = []
    for task in _model_tasks(args.model):
        bench = bench_model_for(task)
        shared = dict(common, kind="model", task=task, dim=bench.config.dim, heads=bench.config.heads, mode="train")
        shared.update(batch=args.batch or bench.batch, chunk_size=args.chunk_size, count_flops=True)
        shared["model_options"] = dict(args.model_options)
        shared["profile"] = bool(args.profile)
        for t in sorted(set(args.seq_lens or [bench.seq_len])):
            specs += [{**shared, "seq_len": t, "dtype": d, "method": m} for d in args.dtype for m in methods]
    return specs


def _kernel_specs(args: argparse.Namespace, common: dict[str, Any]) -> list[dict[str, Any]]:
    if args.chunk_size is not None:
        raise ValueError("--chunk-size needs --model (it chunks a whole encoder block)")
    if args.profile:
        raise ValueError("--profile needs --model")
    functions = _functions(args)
    known = (*METHODS, *functions)
    methods = args.attention or list(known)
    bad = [m for m in methods if m not in known]
    if bad:
        raise ValueError(f"unknown --attention {bad}; choose from {known}")
    dim, heads = args.dim or 512, args.heads or 8
    if dim % heads:
        raise ValueError(f"--dim ({dim}) must be divisible by --heads ({heads})")
    shared = dict(common, kind="kernel", dim=dim, heads=heads, batch=args.batch or 1, mode=args.mode)
    lengths = sorted(set(args.seq_lens or DEFAULT_SEQ_LENS))
    return [
        {**shared, "seq_len": t, "dtype": d, "method": m, **({"function": functions[m]} if m in functions else {})}
        for t in lengths
        for d in args.dtype
        for m in methods
    ]


def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The worker specs in the order they run (per task: length, dtype, method); none for
    ``--peak`` alone. Raises ValueError on a bad request."""
    common = _common(args)
    if args.model:
        return _model_specs(args, common)
    if args.peak:
        return []
    return _kernel_specs(args, common)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()


def _run_specs(
    specs: list[dict[str, Any]], args: argparse.Namespace, device: str, out: Path, peak: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Run every spec (skipping the longer lengths after a timeout or oom), writing bench.csv and
    the profiles as the rows come; the rows."""
    csv_path = out / "bench.csv"
    with_length = len(set(args.seq_lens or [])) > 1
    rows: list[dict[str, Any]] = []
    stopped: dict[tuple[str, str, str], str] = {}  # (task, method, dtype) → "timeout at T=…"
    for spec in specs:
        key = (spec.get("task", ""), spec["method"], spec["dtype"])
        if key in stopped:
            result: dict[str, Any] = {"status": "skipped", "note": f"after {stopped[key]}"}
        else:
            result = run_config(spec, args.timeout, args.malloc)
            if result["status"] in _STOPPING:
                stopped[key] = f"{result['status']} at T={spec['seq_len']}"
        row = _row(spec, result, args, device, peak)
        if "profile" in result:
            _write_profile(_profile_path(out, spec, with_length), row, result["profile"])
        rows.append(row)
        write_csv(csv_path, rows)
        print(_progress_line(row), flush=True)
    return rows


def _report(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    png_path = out / "bench.png"
    try:
        plot(png_path, rows, title=title)
    except Exception as exc:  # the CSV is the result; a plotting failure should not lose it
        print(f"hrrformer bench: could not draw {png_path}: {exc}", file=sys.stderr)
    print()
    print(ratio_table(rows))
    if any(r.get("model") for r in rows):
        print()
        print(throughput_table(rows))
    compute = compute_table(rows)
    if compute:
        print()
        print(compute)
    print(f"\nwrote {out / 'bench.csv'} and {png_path}")


def run(args: argparse.Namespace) -> int:
    try:
        specs = _plan(args)
        peak = None if args.peak else load_peak(args.peak_file or args.out / "peak.json", args.peak_file is not None)
    except ValueError as exc:
        print(f"hrrformer bench: {exc}", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if _cuda_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.peak:
        peak = run_peak(args, device, out)
        if not specs:
            return 0 if peak["peak"] else 1
    first = specs[0]
    models = list(dict.fromkeys(s["task"] for s in specs)) if args.model else []
    what = f"model {','.join(models)}" if models else f"E={first['dim']} heads={first['heads']} B={first['batch']}"
    dtypes = ",".join(args.dtype)
    print(
        f"hrrformer bench: {what} {first['mode']} {dtypes} on {device}"
        f"{' compiled' if args.compile else ''}, malloc={args.malloc}, timeout {args.timeout:g} s"
        f" → {out / 'bench.csv'}",
        flush=True,
    )
    rows = _run_specs(specs, args, device, out, peak)
    _report(rows, out, title=f"hrrformer bench: {what}, {first['mode']}, {dtypes}, {device}")
    return 0 if any(r["status"] == "ok" for r in rows) else 1
