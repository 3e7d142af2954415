"""Time and peak memory of attention methods (or a whole training step) against sequence length.

Every configuration (method × length) runs in a fresh interpreter
(``python -m hrrformer.bench_methods``): warm-up, then repeated timed runs; the median and
min–max wall time and the peak memory of that process over its baseline (CPU: resident memory
after imports and inputs; CUDA: ``max_memory_allocated``). A configuration past ``--timeout``
seconds is killed (``timeout``); one that runs out of memory is ``oom``; the longer lengths of
that method are then ``skipped``. Results go to ``DIR/bench.csv`` (written as they come) and
``DIR/bench.png``, and a table of ratios to ``hrr`` is printed.

Examples::

    hrrformer bench --seq-lens 1024,4096,16384 --mode fwd+bwd --out runs/bench
    hrrformer bench --model listops --attention hrr,softmax --seq-lens 1000,2000
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .bench_methods import METHODS, MODEL_ATTENTIONS
from .model import HrrformerConfig
from .options import pick
from .perf import keep_freed_memory_env

__all__ = ["CSV_COLUMNS", "model_config_for", "run_config"]

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
    "note",
)

DEFAULT_SEQ_LENS = (1024, 4096, 16384, 65536)
#: statuses after which the longer lengths of the same method are not tried.
_STOPPING = ("timeout", "oom")


# ----------------------------------------------------------------------------- reusable pieces
def model_config_for(task: str) -> tuple[HrrformerConfig, int, int]:
    """(model config, batch, sequence length) benchmarked by ``--model TASK``.

    The one seam for task presets: replace the body by a call into ``hrrformer.tasks`` when it
    exists. Raises ValueError for an unknown task.
    """
    from .tasks import get_preset

    names = {"listops": ("listops", "cpu", 20, 10), "malware": ("binaries", "paper", 257, 2)}
    if task not in names:
        raise ValueError(f"unknown --model task {task!r}; known: {sorted(names)}")
    task_name, preset_name, vocab_size, num_classes = names[task]
    options = get_preset(task_name, preset_name).options
    model = {**pick(HrrformerConfig, options), "layers": 1, "vocab_size": vocab_size, "num_classes": num_classes}
    config = HrrformerConfig(**model)
    return config, options["batch_size"], config.max_len


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


def _row(spec: dict[str, Any], result: dict[str, Any], args: argparse.Namespace, device: str) -> dict[str, Any]:
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
        note=str(result.get("note", "") or "").replace("\n", " "),
    )
    if result["status"] == "ok":
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
        if spec.get("kind") == "model":
            seconds = result["median_ms"] / 1000.0
            row["examples_per_s"] = f"{row['batch'] / seconds:.3f}"
            row["tokens_per_s"] = f"{row['batch'] * row['seq_len'] / seconds:.1f}"
    return row


# ----------------------------------------------------------------------------- reporting
def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _progress_line(row: dict[str, Any]) -> str:
    head = f"{row['method']:<14} T={int(row['seq_len']):>7,}  {row['mode']:<7} {row['dtype']:<8}"
    if row["status"] != "ok":
        return f"{head} {row['status']:<8} {row['note']}"
    text = (
        f"{head} {float(row['median_ms']):>10.2f} ms [{float(row['min_ms']):.2f}–{float(row['max_ms']):.2f}]"
        f"  peak {float(row['peak_mb']):>9.1f} MB  ×{row['repeats']}"
    )
    if row["examples_per_s"]:
        text += f"  {float(row['examples_per_s']):.2f} ex/s  {float(row['tokens_per_s']):,.0f} tok/s"
    return text


def ratio_table(rows: list[dict[str, Any]], baseline: str = "hrr") -> str:
    """Text table per length: each method's time and memory, and their ratios to ``baseline``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if baseline not in methods and methods:
        baseline = methods[0]
    lengths = sorted({int(r["seq_len"]) for r in rows})
    by_key = {(r["method"], int(r["seq_len"])): r for r in rows}
    lines = [
        f"{'T':>8}  {'method':<14} {'median ms':>11} {'peak MB':>10} {'time/' + baseline:>12} {'mem/' + baseline:>11}  status"
    ]
    for t in lengths:
        base = by_key.get((baseline, t))
        base_ms = _float(base["median_ms"]) if base else None
        base_mb = _float(base["peak_mb"]) if base else None
        for m in methods:
            r = by_key.get((m, t))
            if r is None:
                continue
            ms, mb = _float(r["median_ms"]), _float(r["peak_mb"])
            t_ratio = f"{ms / base_ms:.2f}" if ms is not None and base_ms else "-"
            m_ratio = f"{mb / base_mb:.2f}" if mb is not None and base_mb and base_mb > 0 else "-"
            ms_text = f"{ms:.2f}" if ms is not None else "-"
            mb_text = f"{mb:.1f}" if mb is not None else "-"
            lines.append(f"{t:>8}  {m:<14} {ms_text:>11} {mb_text:>10} {t_ratio:>12} {m_ratio:>11}  {r['status']}")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, rows: list[dict[str, Any]], title: str = "") -> None:
    """Two log-log panels, time and peak memory against T, one line per method; ✕ where it stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: int(r["seq_len"]))
        ok = [r for r in mine if r["status"] == "ok"]
        stopped = [r for r in mine if r["status"] in (*_STOPPING, "error")]
        label = m + (f" ({stopped[0]['status']} at T={int(stopped[0]['seq_len']):,})" if stopped else "")
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


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--attention",
        type=_name_list,
        default=None,
        help=f"comma-separated methods from {','.join(METHODS)} (default: all; with --model: hrr,softmax)",
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
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
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
        "--model", metavar="TASK", default=None, help="time a training step of a model (listops, malware)"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="with --model: sequence chunking, each block run over N positions at a time (hrr only)",
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


def _plan(args: argparse.Namespace) -> tuple[list[str], list[int], dict[str, Any]]:
    """Methods, lengths and the fields shared by every spec; raises ValueError on a bad request."""
    if args.model:
        config, batch, seq_len = model_config_for(args.model)
        methods = args.attention or list(MODEL_ATTENTIONS)
        bad = [m for m in methods if m not in MODEL_ATTENTIONS]
        if bad:
            raise ValueError(f"--model takes --attention from {MODEL_ATTENTIONS}, got {bad}")
        lengths = args.seq_lens or [seq_len]
        common = dict(kind="model", task=args.model, dim=config.dim, heads=config.heads, batch=args.batch or batch)
        if args.chunk_size is not None and methods != ["hrr"]:
            raise ValueError("--chunk-size applies to --attention hrr only (softmax cannot be chunked)")
        common["chunk_size"] = args.chunk_size
        mode = "train"
    else:
        if args.chunk_size is not None:
            raise ValueError("--chunk-size needs --model (it chunks a whole encoder block)")
        methods = args.attention or list(METHODS)
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown --attention {bad}; choose from {METHODS}")
        lengths = args.seq_lens or list(DEFAULT_SEQ_LENS)
        dim, heads = args.dim or 512, args.heads or 8
        if dim % heads:
            raise ValueError(f"--dim ({dim}) must be divisible by --heads ({heads})")
        common = dict(kind="kernel", dim=dim, heads=heads, batch=args.batch or 1)
        mode = args.mode
    if args.timeout <= 0 or args.repeats < 1 or args.warmup < 0:
        raise ValueError("--timeout must be > 0, --repeats ≥ 1 and --warmup ≥ 0")
    limit_gb = args.memory_limit_gb
    if limit_gb is None:
        available = _available_mb()
        limit_mb = int(0.8 * available) if available else 0
    else:
        limit_mb = int(limit_gb * 1024)
    common.update(
        mode=mode,
        dtype=args.dtype,
        device=args.device,
        compile=bool(args.compile),
        warmup=args.warmup,
        repeats=args.repeats,
        time_budget_s=args.time_budget,
        seed=args.seed,
        threads=args.threads,
        memory_limit_mb=limit_mb if args.device == "cpu" or not _cuda_available() else 0,
    )
    return list(dict.fromkeys(methods)), sorted(set(lengths)), common


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    try:
        methods, lengths, common = _plan(args)
    except ValueError as exc:
        print(f"hrrformer bench: {exc}", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if _cuda_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "bench.csv", out / "bench.png"
    what = f"model {args.model}" if args.model else f"E={common['dim']} heads={common['heads']}"
    print(
        f"hrrformer bench: {what} B={common['batch']} {common['mode']} {args.dtype} on {device}"
        f"{' compiled' if args.compile else ''}, malloc={args.malloc}, timeout {args.timeout:g} s"
        f" → {csv_path}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    stopped: dict[str, str] = {}  # method → "timeout at T=…"
    for t in lengths:
        for m in methods:
            spec = {**common, "method": m, "seq_len": t}
            if m in stopped:
                result = {"status": "skipped", "note": f"after {stopped[m]}"}
            else:
                result = run_config(spec, args.timeout, args.malloc)
                if result["status"] in _STOPPING:
                    stopped[m] = f"{result['status']} at T={t}"
            row = _row(spec, result, args, device)
            rows.append(row)
            write_csv(csv_path, rows)
            print(_progress_line(row), flush=True)
    try:
        plot(
            png_path,
            rows,
            title=f"hrrformer bench: {what}, B={common['batch']}, {common['mode']}, {args.dtype}, {device}",
        )
    except Exception as exc:  # the CSV is the result; a plotting failure should not lose it
        print(f"hrrformer bench: could not draw {png_path}: {exc}", file=sys.stderr)
    print()
    print(ratio_table(rows))
    print(f"\nwrote {csv_path} and {png_path}")
    return 0 if any(r["status"] == "ok" for r in rows) else 1
