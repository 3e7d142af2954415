"""The authors' formulation of HRR attention (research.authors_attention) against the package, and
its benchmark (python -m research.bench_authors: ``hrrformer bench`` with ``hrr-reference``)."""

from __future__ import annotations

import csv

import pytest
import torch

from hrrformer import hrr_attention
from hrrformer.attention import hrr_attention_reference
from hrrformer.bench_methods import measure
from research import bench_authors
from research.authors_attention import authors_hrr_attention


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


def test_pads_in_beta_is_the_authors_attention():
    """The package's ``pads_in_beta=True`` against the transcription of their SelfAttention (complex
    FFTs, −1e9 mask, cosine without our ε), with right, left and scattered padding."""
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(3, 2, 20, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.zeros(3, 20, dtype=torch.bool)
    mask[0, 13:] = True
    mask[1, :5] = True
    mask[2] = torch.rand(20, generator=g) < 0.4
    mask[2, 0] = False
    ours = hrr_attention(q, k, v, mask, pads_in_beta=True)
    assert (ours - authors_hrr_attention(q, k, v, mask)).abs().max().item() < 1e-9


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_the_bench_worker_times_it(mode):
    spec = dict(method=bench_authors.NAME, function=bench_authors.FUNCTION, seq_len=32, dim=16, heads=2, batch=2)
    result = measure({**spec, "mode": mode, "dtype": "float32", "repeats": 2})
    assert result["status"] == "ok", result
    assert len(result["times_ms"]) == 2 and result["peak_mb"] >= 0


def test_bench_authors_end_to_end(tmp_path, capsys):
    """Every method of hrrformer bench and hrr-reference, in fresh workers, as hrrformer bench runs them."""
    argv = ["--seq-lens", "64", "--dim", "32", "--heads", "2", "--repeats", "1", "--threads", "1"]
    assert bench_authors.main([*argv, "--out", str(tmp_path)]) == 0
    with open(tmp_path / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["hrr", "hrr-reference", "softmax", "linear", "elementwise"]
    assert all(r["status"] == "ok" and float(r["median_ms"]) > 0 for r in rows), rows
    printed = capsys.readouterr().out
    assert printed.count("hrr-reference") >= 2 and "time/hrr" in printed  # progress line and table row
    one = ["--attention", "hrr-reference", "--seq-lens", "32", "--dim", "16", "--heads", "2", "--repeats", "1"]
    assert bench_authors.main([*one, "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    with open(tmp_path / "one" / "bench.csv", newline="") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["hrr-reference"]
