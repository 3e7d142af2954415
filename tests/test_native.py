"""The native kernels of the layer parts (hrrformer.ops.native): the short convolution with SiLU
and the gated RMSNorm, against the plain references of tests/test_parts.py in float64, values and
gradients, in float32 and bfloat16, at one and two threads and across the kernels' blocks of
rows; the layers with the kernels on and off; NaN kept; and the build's failure modes."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

from hrrformer import HrrAttention, SoftmaxAttention
from hrrformer.ops import native
from hrrformer.ops.native import loader
from hrrformer.parts import GATE_EPS
from test_parts import short_conv_reference

needs_native = pytest.mark.skipif(native.library() is None, reason="the native kernels could not be built here")

#: float32 arithmetic against float64 (an exponential within ~2 ulp, sums in another order)
F32_TOLERANCE = 2e-5
#: one bf16 rounding of the output, 2⁻⁸ relative, with room
BF16_TOLERANCE = 8e-3


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.double() - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# (B, T, C, K): one short block; T not a multiple of the kernels' 256-row blocks (so the halo of
# each later block is recomputed); K = 1 (no halo); more blocks than threads with B = 1
SHAPES = [(2, 5, 7, 4), (3, 300, 33, 3), (1, 1000, 16, 1), (1, 700, 40, 5)]


@needs_native
@pytest.mark.parametrize("with_halo", [False, True], ids=["start", "halo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_native_short_convolution_matches_the_reference(shape, dtype, with_halo, threads):
    b, t, c, k = shape
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(b, t, c, generator=gen).to(dtype).requires_grad_()
    halo = torch.randn(b, k - 1, c, generator=gen).to(dtype).requires_grad_() if with_halo else None
    weight = torch.randn(c, k, generator=gen, requires_grad=True)
    y = native.conv_silu(u, weight, halo)  # (B, T, C)
    g = torch.randn(y.shape, generator=gen)
    inputs = (u, weight) if halo is None else (u, weight, halo)
    grads = torch.autograd.grad(y, inputs, g)

    inputs64 = [a.detach().double().requires_grad_() for a in inputs]  # the same (rounded) inputs
    u64, w64 = inputs64[:2]
    before = inputs64[2] if with_halo else u64.new_zeros(b, k - 1, c)
    reference = short_conv_reference(torch.cat([before, u64], dim=1), w64[:, None], None)[:, k - 1 :]
    ref_grads = torch.autograd.grad(reference, inputs64, g.double())
    assert y.dtype == torch.float32 and y.shape == (b, t, c)
    assert relative_error(y, reference) < F32_TOLERANCE
    for grad, ref, name in zip(grads, ref_grads, ("u", "w", "halo"), strict=False):
        assert grad.dtype == (torch.float32 if name == "w" else dtype), name
        tolerance = F32_TOLERANCE if name == "w" or dtype == torch.float32 else BF16_TOLERANCE
        if k > 1 or name != "halo":
            assert relative_error(grad, ref) < tolerance, name


@needs_native
@pytest.mark.parametrize("heads_first", [False, True], ids=["o (B, T, h, d)", "o a view of (B, h, T, d)"])
@pytest.mark.parametrize("z_dtype", [torch.float32, torch.bfloat16])
def test_native_gated_rms_norm_matches_the_reference(z_dtype, heads_first, threads):
    gen = torch.Generator().manual_seed(1)
    o = torch.randn(3, 41, 2, 24, generator=gen).mul(1e-3)  # (B, T, h, d), small as w_t v_t
    o = (o.transpose(1, 2).contiguous().transpose(1, 2) if heads_first else o).requires_grad_()
    z = torch.randn(3, 41, 2, 24, generator=gen).to(z_dtype).requires_grad_()
    gamma = torch.rand(24, generator=gen).add(0.5).requires_grad_()
    out = native.gated_rms_norm(o, z, gamma, GATE_EPS)  # (B, T, h, d)
    g = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad(out, (o, z, gamma), g)

    o64, z64, gamma64 = (a.detach().double().requires_grad_() for a in (o, z, gamma))
    reference = o64 / torch.sqrt((o64 * o64).mean(-1, keepdim=True) + GATE_EPS) * gamma64 * F.silu(z64)
    ref_grads = torch.autograd.grad(reference, (o64, z64, gamma64), g.double())
    assert out.dtype == torch.float32 and out.is_contiguous() and relative_error(out, reference) < F32_TOLERANCE
    assert grads[0].stride() == o.stride()  # ∂o laid out as o
    for grad, ref, name in zip(grads, ref_grads, ("o", "z", "γ"), strict=True):
        tolerance = BF16_TOLERANCE if name == "z" and z_dtype == torch.bfloat16 else F32_TOLERANCE
        assert grad.shape == ref.shape and relative_error(grad, ref) < tolerance, name


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_short_convolution_writes_heads(dtype, threads):
    """heads=(h, d): the result is the (B, T, C) one as (n, B, h, T, d), and so is the gradient read."""
    b, t, h, d, k = 2, 300, 3, 8, 4
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(b, t, 2 * h * d, generator=gen).requires_grad_()  # n = 2 parts
    weight = torch.randn(2 * h * d, k, generator=gen).requires_grad_()
    plain = native.conv_silu(u, weight)  # (B, T, C) float32
    heads = native.conv_silu(u, weight, heads=(h, d), dtype=dtype)  # (n, B, h, T, d)
    expected = plain.view(b, t, 2, h, d).permute(2, 0, 3, 1, 4)
    assert heads.shape == (2, b, h, t, d) and heads.dtype == dtype and heads.is_contiguous()
    assert torch.equal(heads, expected.to(dtype))
    g = torch.randn(heads.shape, generator=gen).to(dtype)
    by_heads = torch.autograd.grad(heads, (u, weight), g)
    by_rows = torch.autograd.grad(plain, (u, weight), g.float().permute(1, 3, 0, 2, 4).reshape(b, t, -1))
    for a, e in zip(by_heads, by_rows, strict=True):
        assert torch.equal(a, e)


@needs_native
def test_native_kernels_keep_nan():
    """A NaN in the input reaches exactly the outputs that read it: nothing clamps it away."""
    u = torch.randn(1, 20, 8)
    u[0, 10, 2] = float("nan")
    y = native.conv_silu(u, torch.randn(8, 4))
    nan_rows = torch.isnan(y[0, :, 2]).nonzero().flatten().tolist()
    assert nan_rows == [10, 11, 12, 13] and not torch.isnan(y[0, :, [0, 1, 3]]).any()
    o, z = torch.randn(1, 4, 1, 16), torch.randn(1, 4, 1, 16)
    z[0, 1, 0, 3] = float("nan")
    out = native.gated_rms_norm(o, z, torch.ones(16), GATE_EPS)
    assert torch.isnan(out).nonzero().tolist() == [[0, 1, 0, 3]]


@needs_native
@pytest.mark.parametrize("kind", [HrrAttention, SoftmaxAttention])
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16 autocast"])
def test_layers_equal_with_the_native_kernels_on_and_off(kind, amp, monkeypatch):
    """The same layer, input and gradient with HRRFORMER_NATIVE unset and =0 (eager PyTorch)."""
    torch.manual_seed(2)
    layer = kind(16, 2, short_conv=4, output_gate=True)
    x = torch.randn(3, 37, 16)
    mask = torch.zeros(3, 37, dtype=torch.bool)
    mask[1, 30:] = True

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        layer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = layer(x, key_padding_mask=mask)
        out.float().square().sum().backward()
        return out.detach().float(), [p.grad.clone() for p in layer.parameters()]

    assert native.available_for(x)
    fused, fused_grads = run()
    monkeypatch.setenv("HRRFORMER_NATIVE", "0")
    assert not native.available_for(x)
    eager, eager_grads = run()
    tolerance = 2e-2 if amp else 1e-4  # bf16: the projections' rounding reaches the two paths apart
    assert relative_error(fused, eager.double()) < tolerance
    for fused_grad, eager_grad in zip(fused_grads, eager_grads, strict=True):
        assert relative_error(fused_grad, eager_grad.double()) < tolerance * 5


def test_float64_and_half_precision_take_the_eager_path():
    assert not native.available_for(torch.zeros(2, dtype=torch.float64))
    assert not native.available_for(torch.zeros(2), torch.zeros(2, dtype=torch.float16))
    assert not native.available_for(torch.zeros(2), writes=torch.float16)


def test_a_layer_under_float16_autocast_takes_the_eager_parts():
    """float16 is no dtype of the kernels: the parts fall back, they do not refuse."""
    layer = HrrAttention(16, 2, short_conv=4, output_gate=True)
    with torch.autocast("cpu", dtype=torch.float16):
        out = layer(torch.randn(2, 9, 16))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_a_failed_build_names_the_compiler_command(tmp_path):
    with pytest.raises(RuntimeError, match=r"building the native layer-part kernels failed:\n\$ /bin/false"):
        loader.build("/bin/false", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-written library is left


def test_without_a_compiler_the_library_is_none_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path))
    loader.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="eager PyTorch"):
            assert loader.library() is None
    finally:
        loader.library.cache_clear()


@needs_native
def test_a_build_writes_a_loadable_library(tmp_path):
    path = loader.build(loader.find_compiler() or "cc", tmp_path)
    assert path == tmp_path / "parts.so" and hasattr(ctypes.CDLL(str(path)), "conv_silu_forward")
