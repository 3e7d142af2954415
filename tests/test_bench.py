"""``hrrformer bench``: the worker, and the command end to end (no timings). The authors' formulation
(``hrr-reference``) is research code: research/tests/test_authors_attention.py."""

import argparse
import csv
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from hrrformer import cli
from hrrformer.attention import hrr_attention_reference
from hrrformer.bench import (
    CSV_COLUMNS,
    _model_tasks,
    _row,
    _worker_env,
    model_config_for,
    model_option,
    peak_gflops,
    ratio_table,
    run_config,
    throughput_table,
)
from hrrformer.bench_methods import MODEL_TASKS, bench_model_for, load_function, measure
from hrrformer.bench_profile import CATEGORIES, classify, count_flops, summarize, top_costs
from hrrformer.perf import keep_freed_memory_env
from hrrformer.tasks import TASKS, get_preset

REQUIRED = [
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
]


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


# ----------------------------------------------------------------------------- the worker, in process
@pytest.mark.parametrize("method", ["hrr", "softmax", "linear", "elementwise"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_measure_in_process(method, mode):
    spec = dict(method=method, seq_len=32, dim=16, heads=2, batch=2, mode=mode, dtype="float32", repeats=2)
    result = measure(spec)
    assert result["status"] == "ok", result
    assert result["repeats"] == 2 and len(result["times_ms"]) == 2
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["peak_mb"] >= 0


def test_measure_times_a_function_named_in_the_spec():
    spec = dict(method="ref", function="hrrformer.attention:hrr_attention_reference", seq_len=16, dim=8, heads=2)
    result = measure({**spec, "batch": 1, "mode": "fwd+bwd", "dtype": "float32", "repeats": 1})
    assert result["status"] == "ok", result
    missing = measure({**spec, "function": "hrrformer.attention:nope", "batch": 1, "mode": "fwd", "dtype": "float32"})
    assert missing["status"] == "error" and "cannot import" in missing["error"]


def test_load_function():
    assert load_function("hrrformer.attention:hrr_attention_reference") is hrr_attention_reference
    assert load_function("hrrformer.bench_methods:BenchModel.__init__") is not None  # dotted attributes
    for bad in ("hrrformer.attention", "nope_module:f", "hrrformer.bench_methods:METHODS", ":f"):
        with pytest.raises(ValueError):
            load_function(bad)


def test_measure_reports_errors():
    result = measure(dict(method="hrr", seq_len=8, dim=10, heads=3, batch=1, mode="fwd", dtype="float32"))
    assert result["status"] == "error" and "divisible" in result["error"]


def test_worker_reports_allocation_failure_as_oom():
    spec = dict(method="elementwise", seq_len=2**21, dim=512, heads=8, batch=1, mode="fwd", dtype="float32")
    result = run_config({**spec, "device": "cpu", "threads": 1, "memory_limit_mb": 1500}, timeout=60)  # 4 GB per tensor
    assert result["status"] == "oom", result


# ----------------------------------------------------------------------------- environment and presets
def test_keep_freed_memory_env():
    env = keep_freed_memory_env()
    assert env["MALLOC_MMAP_MAX_"] == "0"
    assert int(env["MALLOC_TRIM_THRESHOLD_"]) >= 2**30 and int(env["MALLOC_TOP_PAD_"]) > 0
    assert all(isinstance(v, str) for v in env.values())
    assert _worker_env("keep")["MALLOC_MMAP_MAX_"] == "0"
    os.environ["MALLOC_MMAP_MAX_"] = "0"  # set by whoever started us: "default" must remove it
    try:
        assert not set(keep_freed_memory_env()) & set(_worker_env("default"))
    finally:
        del os.environ["MALLOC_MMAP_MAX_"]


def test_model_config_for():
    config, batch, seq_len = model_config_for("listops")
    assert (config.vocab_size, config.dim, config.heads, config.layers, config.mlp_dim) == (16, 128, 4, 1, 256)
    assert (config.pooling, batch, seq_len, config.max_len) == ("mean", 32, 2000, 2000)
    config, _, _ = model_config_for("malware")
    assert (config.vocab_size, config.dim, config.heads, config.mlp_dim, config.pooling) == (257, 256, 8, 512, "cls")
    assert config.pos_embedding == "learned"
    with pytest.raises(ValueError, match="unknown"):
        model_config_for("nope")


def test_ratio_table():
    def row(method, t, ms, mb, status="ok"):
        return dict(method=method, seq_len=t, median_ms=ms, peak_mb=mb, status=status)

    rows = [row("hrr", 64, "2.0", "4.0"), row("softmax", 64, "6.0", "2.0"), row("softmax", 128, "", "", "timeout")]
    lines = ratio_table(rows).splitlines()
    assert "time/hrr" in lines[0] and "mem/hrr" in lines[0]
    assert lines[2].split()[-3:] == ["3.00", "0.50", "ok"]
    assert lines[3].split()[-3:] == ["-", "-", "timeout"]
    assert "time/softmax" in ratio_table(rows[1:])  # no hrr: the first method is the baseline


# ----------------------------------------------------------------------------- the command, end to end
def test_bench_end_to_end(tmp_path, capsys):
    methods = "hrr,softmax,linear,elementwise"
    argv = ["bench", "--seq-lens", "64,128", "--dim", "32", "--heads", "2", "--repeats", "1", "--threads", "1"]
    assert cli.main([*argv, "--attention", methods, "--out", str(tmp_path)]) == 0
    columns, rows = read_csv(tmp_path / "bench.csv")
    assert columns[: len(REQUIRED)] == REQUIRED and tuple(columns) == CSV_COLUMNS
    assert [(r["method"], int(r["seq_len"])) for r in rows] == [(m, t) for t in (64, 128) for m in methods.split(",")]
    for r in rows:
        assert r["status"] == "ok", r
        assert (r["dim"], r["heads"], r["batch"], r["mode"], r["dtype"], r["malloc"]) == (
            "32",
            "2",
            "1",
            "fwd+bwd",
            "float32",
            "keep",
        )
        assert 0 < float(r["min_ms"]) <= float(r["median_ms"]) <= float(r["max_ms"])
        assert float(r["peak_mb"]) >= 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "time/hrr" in printed and "mem/hrr" in printed
    assert printed.count("elementwise") >= 4  # two progress lines and two table rows


def test_bench_times_an_attention_function_like_the_methods(tmp_path, capsys):
    argv = ["bench", "--seq-lens", "32", "--dim", "16", "--heads", "2", "--repeats", "1", "--threads", "1"]
    argv += ["--attention-function", "ref=hrrformer.attention:hrr_attention_reference", "--mode", "fwd"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0  # no --attention: the methods, then the functions
    _, rows = read_csv(tmp_path / "bench.csv")
    assert [(r["method"], r["status"]) for r in rows] == [
        (m, "ok") for m in ("hrr", "softmax", "linear", "elementwise", "ref")
    ]
    assert "time/hrr" in capsys.readouterr().out


def test_bad_attention_functions_exit_2(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert cli.main(["bench", "--attention-function", "hrr=hrrformer.attention:hrr_attention_reference", *out]) == 2
    assert cli.main(["bench", "--attention-function", "x=hrrformer.attention:nope", *out]) == 2
    assert cli.main(["bench", "--model", "listops", "--attention-function", "x=hrrformer.hrr:bind", *out]) == 2
    err = capsys.readouterr().err
    assert "name is taken" in err and "cannot import" in err and "--model" in err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--attention-function", "no-module-given", *out])


def test_timeout_then_skipped(tmp_path):
    argv = ["bench", "--attention", "softmax", "--seq-lens", "262144,524288", "--timeout", "0.5"]
    assert cli.main([*argv, "--malloc", "default", "--out", str(tmp_path)]) == 1  # nothing finished
    _, rows = read_csv(tmp_path / "bench.csv")
    assert [(r["seq_len"], r["status"], r["malloc"]) for r in rows] == [
        ("262144", "timeout", "default"),
        ("524288", "skipped", "default"),
    ]
    assert rows[0]["median_ms"] == "" and rows[1]["peak_mb"] == ""
    assert (tmp_path / "bench.png").exists()


def test_model_listops_tiny(tmp_path, capsys):
    argv = ["bench", "--model", "listops", "--attention", "hrr", "--seq-lens", "48", "--batch", "2", "--repeats", "1"]
    argv += ["--threads", "1"]  # one thread: the test machine's cores are shared
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    columns, rows = read_csv(tmp_path / "bench.csv")
    assert columns[: len(REQUIRED)] == REQUIRED and {"examples_per_s", "tokens_per_s"} <= set(columns)
    (row,) = rows
    assert (row["method"], row["model"], row["mode"], row["status"]) == ("hrr", "listops", "train", "ok")
    assert (row["seq_len"], row["batch"], row["dim"], row["heads"]) == ("48", "2", "128", "4")
    seconds = float(row["median_ms"]) / 1000
    assert float(row["examples_per_s"]) == pytest.approx(2 / seconds, rel=1e-3)
    assert float(row["tokens_per_s"]) == pytest.approx(96 / seconds, rel=1e-3)
    assert "ex/s" in capsys.readouterr().out


def test_bad_requests_exit_2(tmp_path, capsys):
    assert cli.main(["bench", "--attention", "nope", "--out", str(tmp_path)]) == 2
    assert cli.main(["bench", "--model", "listops", "--attention", "linear", "--out", str(tmp_path)]) == 2
    assert cli.main(["bench", "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown" in capsys.readouterr().err


# ----------------------------------------------------------------------------- every task's model
@pytest.mark.parametrize("task", TASKS)
def test_bench_model_is_the_cpu_preset(task):
    options = get_preset(task, "cpu").options
    bench = bench_model_for(task)
    c = bench.config
    assert (c.dim, c.heads, c.layers, c.mlp_dim, c.max_len) == tuple(
        options[k] for k in ("dim", "heads", "layers", "mlp_dim", "max_len")
    )
    assert (bench.batch, bench.seq_len) == (options["batch_size"], options["max_len"])
    assert bench.pair == (task in ("retrieval", "imdb-pairs"))
    assert c.vocab_size == {"listops": 16, "mqar": 8192}.get(task, 257)
    # a preset's HRR-only options are dropped for softmax attention, as hrrformer train does
    assert bench_model_for(task, "softmax").config.hrr_output == "value"
    if bench.config.pooling == "cls":  # the ablation pools by the mean: CLS pooling needs attention
        assert bench_model_for(task, "none").config.pooling == "mean"


@pytest.mark.parametrize("method", ["hrr", "softmax", "none"])
@pytest.mark.parametrize("task", MODEL_TASKS)
def test_every_task_model_runs_a_step(task, method):
    """The worker builds each task's model (the dual encoder for pairs) and times one tiny step."""
    spec = dict(kind="model", task=task, method=method, seq_len=12, batch=2, dim=0, heads=0, mode="train")
    result = measure({**spec, "dtype": "float32", "warmup": 0, "repeats": 1, "count_flops": True})
    assert result["status"] == "ok", result
    assert (result["seq_len"], result["batch"]) == (12, 2)
    assert result["tokens"] == 2 * 12 * (2 if bench_model_for(task).pair else 1)
    assert result["flops"] > 0
    if task == "mqar":  # per position: a loss over the labelled positions (here the last of each sequence)
        assert bench_model_for(task).config.pooling == "none" and math.isfinite(result["median_ms"])


def test_set_puts_model_options_on_the_preset_and_in_the_row():
    """--set FIELD=VALUE: parsed as JSON (else a string), checked against HrrformerConfig, applied by the
    worker (more parameters with the parts) and written to the row's options column."""
    assert model_option("short_conv=4") == ("short_conv", 4)
    assert model_option("output_gate=true") == ("output_gate", True)
    assert model_option("pos_embedding=sinusoidal") == ("pos_embedding", "sinusoidal")
    with pytest.raises(argparse.ArgumentTypeError, match="HrrformerConfig field"):
        model_option("no_such_field=1")
    spec = dict(kind="model", task="listops", method="hrr", seq_len=12, batch=2, dim=0, heads=0, mode="train")
    spec.update(dtype="float32", warmup=0, repeats=1, count_flops=True)
    plain, parts = measure(spec), measure({**spec, "model_options": {"short_conv": 4, "output_gate": True}})
    assert plain["status"] == parts["status"] == "ok"
    assert parts["flops"] > plain["flops"]  # the gate's E × E projection
    args = argparse.Namespace(malloc="keep")
    row = _row({**spec, "compile": False, "model_options": {"short_conv": 4}}, parts, args, "cpu", None)
    assert row["options"] == "short_conv=4"


def test_model_all_is_every_task():
    assert _model_tasks(["all"]) == list(TASKS)
    assert _model_tasks(["malware", "listops", "malware"]) == ["malware", "listops"]
    with pytest.raises(ValueError, match="unknown"):
        _model_tasks(["nope"])


# ----------------------------------------------------------------------------- FLOPs and the profile
def test_flop_count_of_a_linear_forward_and_backward():
    m, k, n = 24, 16, 40
    x = torch.randn(m, k, requires_grad=True)
    w = torch.randn(n, k, requires_grad=True)
    assert count_flops(lambda: F.linear(x, w).sum().backward()) == 2 * m * n * k * 3  # y, dx, dw


def test_flop_count_of_cpu_attention():
    """PyTorch counts its CUDA attention kernels only; the CPU flash kernel is added: Q·Kᵀ and P·V."""
    b, h, t, d = 2, 3, 20, 8
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * (2 * b * h * t * t * d)


def test_classify_op_names():
    expected = {
        "aten::mm": "matmul",
        "aten::addmm": "matmul",
        "aten::bmm": "matmul",
        "aten::linear": "matmul",
        "aten::_scaled_dot_product_flash_attention_for_cpu": "matmul",
        "aten::_fft_r2c": "fft",
        "aten::_fft_c2r": "fft",
        "aten::add_": "elementwise",
        "aten::mul": "elementwise",
        "aten::copy_": "elementwise",
        "aten::to": "elementwise",
        "aten::cat": "elementwise",
        "aten::native_layer_norm": "elementwise",
        "aten::gelu_backward": "elementwise",
        "aten::_softmax": "elementwise",
        "aten::empty": "allocation",
        "aten::empty_strided": "allocation",
        "aten::zeros": "allocation",
        "aten::resize_": "allocation",
        "aten::fill_": "allocation",
        "aten::view": "other",
        "autograd::engine::evaluate_function: MmBackward0": "other",
        "Optimizer.step#Adam.step": "other",
    }
    assert {name: classify(name) for name in expected} == expected
    assert set(expected.values()) == set(CATEGORIES)


def test_summarize_shares_and_top():
    events = [("aten::mm", 600.0, 4), ("aten::_fft_r2c", 200.0, 2), ("aten::add", 100.0, 8)]
    events += [("aten::empty", 50.0, 9), ("aten::mm", 0.0, 1), ("MmBackward0", 50.0, 4)]
    profile = summarize(events, top=3)
    assert math.isclose(sum(profile["shares"].values()), 1.0)
    assert profile["shares"] == pytest.approx(dict(matmul=0.6, fft=0.2, elementwise=0.1, allocation=0.05, other=0.05))
    assert profile["total_self_ms"] == pytest.approx(1.0)
    assert [(op["name"], op["calls"], op["category"]) for op in profile["top"]] == [
        ("aten::mm", 5, "matmul"),
        ("aten::_fft_r2c", 2, "fft"),
        ("aten::add", 1 * 8, "elementwise"),
    ]
    assert top_costs(profile) == "mm 60.0%; _fft_r2c 20.0%; add 10.0%"


# ----------------------------------------------------------------------------- the command: dtypes, FLOPs, profile, peak
def test_model_dtypes_flops_profile_and_peak(tmp_path, capsys):
    peak = {"peak": {"float32": {"1": 2.0}, "bfloat16": {"1": 4.0}}}
    (tmp_path / "peak.json").write_text(json.dumps(peak))  # as --peak writes it, in the same --out
    argv = ["bench", "--model", "imdb-pairs", "--attention", "hrr", "--seq-lens", "16", "--batch", "2"]
    argv += ["--dtype", "float32,bfloat16", "--profile", "--repeats", "1", "--threads", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    _, rows = read_csv(tmp_path / "bench.csv")
    assert [(r["model"], r["method"], r["dtype"], r["status"]) for r in rows] == [
        ("imdb-pairs", "hrr", "float32", "ok"),
        ("imdb-pairs", "hrr", "bfloat16", "ok"),
    ]
    assert rows[0]["gflop_per_step"] == rows[1]["gflop_per_step"]  # FLOPs do not depend on the dtype
    for r in rows:
        seconds, gflop = float(r["median_ms"]) / 1000, float(r["gflop_per_step"])
        assert gflop > 0 and r["threads"] == "1"
        assert float(r["achieved_gflops"]) == pytest.approx(gflop / seconds, rel=1e-2)
        best = peak["peak"][r["dtype"]]["1"]
        assert float(r["pct_of_peak"]) == pytest.approx(100 * float(r["achieved_gflops"]) / best, rel=1e-2)
        assert float(r["tokens_per_s"]) == pytest.approx(2 * 2 * 16 / seconds, rel=1e-3)  # two documents
        assert len(r["top_costs"].split("; ")) == 3 and r["top_costs"].endswith("%")
        profile = json.loads((tmp_path / f"profile_imdb-pairs_hrr_{r['dtype']}.json").read_text())
        assert (profile["task"], profile["dtype"], profile["steps"]) == ("imdb-pairs", r["dtype"], 3)
        assert set(profile["shares"]) == set(CATEGORIES)
        assert math.isclose(sum(profile["shares"].values()), 1.0)
    printed = capsys.readouterr().out
    assert "ex/s float32" in printed and "ex/s bfloat16" in printed and "bf16/fp32" in printed


def test_kernel_dtypes_one_row_each(tmp_path):
    argv = ["bench", "--attention", "hrr,linear", "--seq-lens", "32", "--dim", "16", "--heads", "2"]
    argv += ["--dtype", "float32,bfloat16", "--repeats", "1", "--threads", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    _, rows = read_csv(tmp_path / "bench.csv")
    assert [(r["method"], r["dtype"], r["status"]) for r in rows] == [
        ("hrr", "float32", "ok"),
        ("linear", "float32", "ok"),
        ("hrr", "bfloat16", "ok"),
        ("linear", "bfloat16", "ok"),
    ]


def test_peak_writes_peak_json(tmp_path, capsys):
    m, k, n = 64, 32, 48
    argv = ["bench", "--peak", "--peak-shapes", f"{m}x{k}x{n}", "--dtype", "float32,bfloat16", "--threads", "1"]
    assert cli.main([*argv, "--repeats", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "peak.json").read_text())
    assert {(e["dtype"], e["threads"], e["status"]) for e in record["entries"]} == {
        ("float32", 1, "ok"),
        ("bfloat16", 1, "ok"),
    }
    for e in record["entries"]:
        assert e["gflop_per_step"] == pytest.approx(6 * m * k * n / 1e9)  # counted, equal to the hand count
    for dtype in ("float32", "bfloat16"):
        assert peak_gflops(record, dtype, 1) > 0
    assert peak_gflops(record, "float32", 7) is None
    assert not (tmp_path / "bench.csv").exists()  # --peak alone runs nothing else
    assert "peak" in capsys.readouterr().out


def test_ratio_and_throughput_tables_by_dtype():
    def row(method, dtype, ex, status="ok"):
        sizes = dict(model="text", method=method, seq_len=64, dtype=dtype, median_ms="1", peak_mb="1")
        return {**sizes, "examples_per_s": ex, "status": status}

    rows = [row("hrr", "float32", "10.0"), row("hrr", "bfloat16", "15.0"), row("softmax", "float32", "5.0")]
    rows.append(row("softmax", "bfloat16", "", "timeout"))
    lines = throughput_table(rows).splitlines()
    assert lines[0].split()[-1] == "bf16/fp32"
    assert lines[1].split() == ["text", "hrr", "64", "10.00", "15.00", "1.50"]
    assert lines[2].split() == ["text", "softmax", "64", "5.00", "timeout", "-"]
    table = ratio_table(rows).splitlines()
    assert table[0].split()[:4] == ["task", "T", "dtype", "method"]
    assert len(table) == 5  # one row per (method, dtype), each against hrr of its own dtype


def test_bad_bench_flags(tmp_path, capsys):
    assert cli.main(["bench", "--profile", "--out", str(tmp_path)]) == 2  # --profile needs --model
    assert cli.main(["bench", "--model", "text", "--peak-file", str(tmp_path / "none.json")]) == 2
    assert "needs --model" in capsys.readouterr().err
    for bad in (["--dtype", "float16"], ["--peak-shapes", "64x32"]):
        with pytest.raises(SystemExit):
            cli.main(["bench", *bad, "--out", str(tmp_path)])
