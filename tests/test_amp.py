"""Mixed precision (bfloat16 autocast on the CPU): every attention form trains, the HRR kernel
computes in float32 inside, and ``--amp bf16`` learns, resumes and runs under DDP.

The tolerance of a bf16 training step. Under autocast every matrix multiply of the projections,
the MLP and the head reads its operands rounded to bfloat16, whose unit roundoff is u = 2⁻⁸ ≈ 0.0039
(8 significant bits); it accumulates in float32. Each rounded operand moves a product by at most
u relative, and a gradient passes through ~10 such products (2 layers forward and backward), whose
independent rounding errors add in quadrature: ~u·√10 ≈ 0.012 relative to the gradient's norm.
We allow 0.05 (13u, 4× that estimate). Measured here: 0.004–0.007 for every HRR form (the kernel
is float32), 0.005 for causal softmax and 0.039 for non-causal softmax with padding, whose
attention probabilities ``scaled_dot_product_attention`` computes in bfloat16 itself. A kernel
that ran its own products in bfloat16 is caught exactly by :func:`test_kernel_computes_in_float32_under_autocast`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hrrformer import Hrrformer, HrrformerConfig, hrr_attention
from hrrformer.cli import main
from test_train import _torchrun

BF16_STEP_TOLERANCE = 0.05

#: Every attention form a model can use: config overrides, and "method" set on the layers.
FORMS: dict[str, dict] = {
    "circulant": {},
    "fourier": {"method": "fourier"},
    "causal": {"causal": True},
    "chunked": {"chunk_size": 16},
    "causal_chunked": {"causal": True, "chunk_size": 16},
    "projection": {"projection": True},
    "memories": {"memories": 2},
    "causal_chunked_key_routed": {
        "causal": True,
        "chunk_size": 16,
        "hrr_output": "retrieved",
        "memories": 8,
        "memory_routing": "key",
    },
    "retrieved_scaled": {
        "hrr_output": "retrieved",
        "length_scale": True,
        "score_scale": 4.0,
        "learn_score_scale": True,
    },
    "authors_padding": {"authors_padding": True},
    "recall_write_gate": {"hrr_output": "recall", "write_gate": True},
    "causal_chunked_recall_write_gate_short_conv": {
        "causal": True,
        "chunk_size": 16,
        "hrr_output": "recall",
        "write_gate": True,
        "short_conv": 4,
    },
    "softmax": {"attention": "softmax"},
    "softmax_causal": {"attention": "softmax", "causal": True},
    "short_conv_gate": {"short_conv": 4, "output_gate": True},
    "causal_chunked_short_conv_gate": {"causal": True, "chunk_size": 16, "short_conv": 4, "output_gate": True},
    "softmax_short_conv_gate": {"attention": "softmax", "short_conv": 4, "output_gate": True},
    "none_short_conv_gate": {"attention": "none", "short_conv": 4, "output_gate": True},
}


def _model(form: str) -> Hrrformer:
    overrides = dict(FORMS[form])
    method = overrides.pop("method", None)
    torch.manual_seed(0)
    config = HrrformerConfig(
        vocab_size=50, max_len=64, dim=32, heads=2, layers=2, dropout=0.0, num_classes=3, **overrides
    )
    model = Hrrformer(config)
    for block in model.encoder.blocks:
        if method is not None:
            block.attn.method = method
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 50, (4, 48), generator=g)  # (B, T)
    tokens[0, 30:] = 0  # padding in one row
    return tokens, torch.randint(0, 3, (4,), generator=g)


def _gradient(model: Hrrformer, amp: bool) -> torch.Tensor:
    """All parameter gradients of one cross-entropy step, flattened."""
    tokens, labels = _batch()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        logits = model(tokens)  # (B, C)
    F.cross_entropy(logits.float(), labels).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("form", list(FORMS))
def test_a_training_step_under_autocast_matches_float32(form):
    model = _model(form)
    full, mixed = _gradient(model, amp=False), _gradient(model, amp=True)
    assert torch.isfinite(mixed).all()
    relative = ((mixed - full).norm() / full.norm()).item()
    assert relative < BF16_STEP_TOLERANCE, f"{form}: relative gradient error {relative:.4f}"
    # the comparison can fail: another model's gradient is far outside the tolerance
    other = _gradient(
        _model(form).apply(lambda m: torch.nn.init.normal_(m.weight) if hasattr(m, "weight") else None), amp=False
    )
    assert ((other - full).norm() / full.norm()).item() > 10 * BF16_STEP_TOLERANCE


@pytest.mark.parametrize(
    "causal,method,output", [(False, "circulant", "value"), (False, "circulant", "retrieved"),
                             (False, "fourier", "value"), (True, "fourier", "retrieved"),
                             (False, "auto", "recall"), (True, "fourier", "recall")]
)  # fmt: skip
def test_kernel_computes_in_float32_under_autocast(causal, method, output):
    """bf16 inputs under autocast give exactly the float32 kernel's weights and gradients on the
    same (upcast) inputs: no product inside the kernel runs in bfloat16."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 40, 16, generator=g).bfloat16() for _ in range(3))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[1, 25:] = True
    tau = None if output == "recall" else torch.tensor([2.0, 5.0])  # recall has no scores to scale
    upstream = torch.randn(2, 2, 40, 16, generator=g).bfloat16().float()  # ∂L/∂out, exact in both dtypes

    def run(amp: bool, dtype: torch.dtype):
        x = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out, w = hrr_attention(*x, mask, causal, method, score_scale=tau, output=output, return_weights=True)
            (out.float() * upstream).sum().backward()  # a backward called inside autocast, too
        return w, out.float(), [t.grad.float() for t in x]

    w_mixed, out_mixed, grads_mixed = run(True, torch.bfloat16)
    w_full, out_full, grads_full = run(False, torch.float32)
    assert w_mixed.dtype == torch.float32
    torch.testing.assert_close(w_mixed, w_full, rtol=0, atol=0)
    torch.testing.assert_close(out_mixed, out_full.bfloat16().float(), rtol=0, atol=0)
    for a, b in zip(grads_mixed, grads_full, strict=True):
        torch.testing.assert_close(a, b.bfloat16().float(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- --amp bf16 end to end
TINY = ["--dim", "16", "--heads", "2", "--layers", "1", "--mlp-dim", "16", "--no-progress", "--log-every", "5"]


@pytest.fixture(scope="module")
def marked_bytes(tmp_path_factory) -> Path:
    """Class folders of 128-byte files: "marked" files hold byte 255 at 8 random places, "plain"
    ones only bytes 1 … 200. Held-out accuracy needs the model to find one symbol anywhere."""
    root = tmp_path_factory.mktemp("bins")
    g = torch.Generator().manual_seed(0)
    for label, name in enumerate(["plain", "marked"]):
        (root / name).mkdir()
        for i in range(240):
            content = torch.randint(1, 201, (128,), generator=g, dtype=torch.int32)
            if label:
                content[torch.randperm(128, generator=g)[:8]] = 255
            (root / name / f"{i}.bin").write_bytes(bytes(content.to(torch.uint8).tolist()))
    return root


def _train(data: Path, run: Path, *extra: str) -> dict:
    args = ["train", "--task", "binaries", "--data", str(data), "--out", str(run), "--max-len", "128"]
    assert main([*args, "--batch-size", "16", "--lr", "1e-2", "--dropout", "0", *TINY, *extra]) == 0
    return json.loads((run / "summary.json").read_text())


def test_a_tiny_model_learns_under_amp_bf16_as_in_float32(marked_bytes, tmp_path):
    """~300 steps (12 epochs of 384 / 16) each; both twins must learn the marker."""
    full = _train(marked_bytes, tmp_path / "fp32", "--epochs", "12", "--amp", "none")
    mixed = _train(marked_bytes, tmp_path / "bf16", "--epochs", "12", "--amp", "bf16")
    assert full["val_accuracy"] >= 0.9 and mixed["val_accuracy"] >= 0.9, (full["val_accuracy"], mixed["val_accuracy"])
    assert abs(full["val_accuracy"] - mixed["val_accuracy"]) <= 0.1
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["amp"] == "bf16"


def test_amp_bf16_resumes_to_the_same_weights(marked_bytes, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(marked_bytes, straight, "--epochs", "2", "--amp", "bf16")
    _train(marked_bytes, resumed, "--epochs", "1", "--amp", "bf16", "--save-every", "7")
    _train(marked_bytes, resumed, "--epochs", "2", "--amp", "bf16", "--save-every", "7", "--resume")
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_amp_bf16_under_ddp_matches_one_process(marked_bytes, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--task", "binaries", "--data", str(marked_bytes), "--max-len", "128", "--epochs", "1"]
    common += ["--limit", "64", "--bucket", "0", "--dropout", "0", "--amp", "bf16", *TINY]
    one = _torchrun(["train", *common, "--out", str(tmp_path / "one"), "--batch-size", "8"], 1, env)
    assert one.returncode == 0, one.stderr
    two = _torchrun(["train", *common, "--out", str(tmp_path / "two"), "--batch-size", "4"], 2, env)
    assert two.returncode == 0, two.stderr

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["type"] == "train"]

    # each rank rounds its half of the batch as one process does the whole: the same bf16 numbers,
    # summed in another order (tolerance: a few bf16 roundings of the loss)
    assert losses("two") == pytest.approx(losses("one"), rel=2e-2)
    assert len(losses("one")) >= 1
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2


def test_the_compiled_model_gives_the_eager_outputs_and_gradients():
    """``--compile`` (inductor on the CPU) computes what the eager model does, to float32 rounding
    (one compilation: the bf16 path differs from eager only in how inductor fuses the casts)."""
    model = _model("retrieved_scaled")
    compiled = torch.compile(model)
    eager, fused = _gradient(model, amp=False), _gradient(compiled, amp=False)
    assert ((fused - eager).norm() / eager.norm()).item() < 1e-5
    tokens, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens), model(tokens), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task", ["listops", "text", "image"])
def test_these_cpu_presets_train_in_bf16_and_amp_none_turns_it_off(task):
    import argparse

    from hrrformer.train import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def amp(*args: str) -> str:
        return config_from_args(parser.parse_args(["--task", task, *args])).amp

    assert amp("--preset", "cpu") == "bf16"
    assert amp("--preset", "cpu", "--amp", "none") == "none"
    assert amp("--preset", "demo") == "none"  # presets not measured in bf16 keep float32
