"""``hrrformer bench``: the authors' formulation, the worker, and the command end to end (no timings)."""

import csv
import os

import pytest
import torch

from hrrformer import cli
from hrrformer.attention import hrr_attention_reference
from hrrformer.bench import (
    CSV_COLUMNS,
    _worker_env,
    model_config_for,
    ratio_table,
    run_config,
)
from hrrformer.bench_methods import authors_hrr_attention, measure
from hrrformer.perf import keep_freed_memory_env

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


# ----------------------------------------------------------------------------- the authors' formulation
@pytest.mark.parametrize("d", [16, 15])
def test_authors_formulation_equals_reference_without_padding(d):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(2, 3, 40, d, dtype=torch.float64)
    ours = authors_hrr_attention(q, k, v)
    ref = hrr_attention_reference(q, k, v)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)
    g_ours = torch.autograd.grad(ours, (q, k, v), grad)
    g_ref = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_authors_formulation_keeps_padding_in_beta():
    """As in their code: the mask only enters the softmax, so padding changes real outputs."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 30, 8, dtype=torch.float64) for _ in range(3))
    pad = torch.zeros(1, 30, dtype=torch.bool)
    pad[:, 20:] = True
    ours = authors_hrr_attention(q, k, v, pad)
    assert ours[:, :, 20:].abs().max() == 0  # padded positions get zero weight
    assert (ours - hrr_attention_reference(q, k, v, pad)).abs().max() > 1e-3
    # without the padded positions at all, the library reference is what the authors compute
    torch.testing.assert_close(
        hrr_attention_reference(q, k, v, pad)[:, :, :20], authors_hrr_attention(*(x[:, :, :20] for x in (q, k, v)))
    )


def test_authors_formulation_half_precision_is_finite():
    q, k, v = (torch.randn(1, 2, 16, 8).to(torch.bfloat16) for _ in range(3))
    out = authors_hrr_attention(q, k, v)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- the worker, in process
@pytest.mark.parametrize("method", ["hrr", "hrr-reference", "softmax", "linear", "elementwise"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_measure_in_process(method, mode):
    spec = dict(method=method, seq_len=32, dim=16, heads=2, batch=2, mode=mode, dtype="float32", repeats=2)
    result = measure(spec)
    assert result["status"] == "ok", result
    assert result["repeats"] == 2 and len(result["times_ms"]) == 2
    assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["peak_mb"] >= 0


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
    assert (config.vocab_size, config.dim, config.heads, config.layers, config.mlp_dim) == (20, 128, 4, 1, 256)
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
    methods = "hrr,hrr-reference,softmax,linear,elementwise"
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
    assert printed.count("hrr-reference") >= 4  # two progress lines and two table rows


def test_timeout_then_skipped(tmp_path):
    argv = ["bench", "--attention", "hrr-reference", "--seq-lens", "262144,524288", "--timeout", "0.5"]
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
