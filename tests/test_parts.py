"""The layer parts (hrrformer.parts): the short convolution and the output gate, against plain
references, in every attention kind; padding, causality, halos, autocast and torch.compile.
Chunked and sequence-parallel runs: tests/test_chunked.py and tests/test_parallel.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrrformer import HrrAttention, Hrrformer, HrrformerConfig, NoAttention, SoftmaxAttention
from hrrformer.attention import hrr_attention_reference, softmax_attention
from hrrformer.ops.hrr_attention import SequenceReduction
from hrrformer.parts import GATE_EPS, ShortConvolution, causal_depthwise_conv
from test_amp import BF16_STEP_TOLERANCE

KINDS = [HrrAttention, SoftmaxAttention, NoAttention]
PARTS = {
    "short_conv": dict(short_conv=3),
    "pointwise_conv": dict(short_conv=1),  # K = 1: no halo, a per-channel scale then SiLU
    "output_gate": dict(output_gate=True),
    "both": dict(short_conv=4, output_gate=True),
    "wide_heads_both": dict(head_dim=7, short_conv=3, output_gate=True),  # h·d = 21 ≠ E = 12
    "value_skip": dict(value_skip=True),
    "all_three": dict(short_conv=4, output_gate=True, value_skip=True),
}
#: (kind, part) pairs a layer takes: the value skip only where the attention mixes positions.
TAKEN = [(cls, part) for cls in KINDS for part in PARTS if cls.mixes_positions or not PARTS[part].get("value_skip")]


# ----------------------------------------------------------------------------- plain references
def shifted(u: torch.Tensor, lag: int) -> torch.Tensor:
    """u (B, T, C) moved ``lag`` positions later, zeros in front: out_t = u_{t−lag}."""
    b, t, c = u.shape
    return torch.cat([u.new_zeros(b, min(lag, t), c), u[:, : max(t - lag, 0)]], dim=1)


def short_conv_reference(u: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """y_t[c] = SiLU(Σ_j w[c, j] u_{t−K+1+j}[c]) with u zeroed at padding: a loop over the lags."""
    u = u if keep is None else u * keep
    k = weight.shape[-1]
    return F.silu(sum(weight[:, 0, j] * shifted(u, k - 1 - j) for j in range(k)))


def gate_reference(o: torch.Tensor, x: torch.Tensor, gate: torch.nn.Module) -> torch.Tensor:
    """o (B, T, h, d) / sqrt(mean over d of o² + ε) · γ · SiLU(x W_g), written out."""
    b, t, h, d = o.shape
    g = F.silu(x @ gate.proj.weight.T).view(b, t, h, d)
    return (o / torch.sqrt((o * o).mean(-1, keepdim=True) + GATE_EPS) * gate.weight * g).reshape(b, t, h * d)


def kernel_reference(layer: torch.nn.Module, heads: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    """The attention of each kind on its heads (B, h, T, d): the HRR reference, softmax, or v."""
    if isinstance(layer, HrrAttention):
        return hrr_attention_reference(*heads, mask, causal=layer.causal)
    if isinstance(layer, SoftmaxAttention):
        return softmax_attention(*heads, mask, causal=layer.causal)
    return heads[0]


def layer_reference(layer: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The whole layer written plainly: projections, the convolution (padding zeroed after the
    projection, bias included), heads, the kernel, the gate, the output projection."""
    b, t, _ = x.shape
    h, d = layer.num_heads, layer.head_dim
    u = F.linear(x, layer.qkv_proj.weight, layer.qkv_proj.bias)  # (B, T, n·h·d)
    if layer.short_conv is not None:
        keep = None if mask is None else (~mask)[..., None].to(x.dtype)
        u = short_conv_reference(u, layer.short_conv.weight, keep)
    width = h * d
    heads = [
        u[..., i * width : (i + 1) * width].reshape(b, t, h, d).transpose(1, 2) for i in range(len(layer.projected))
    ]
    o = kernel_reference(layer, heads, mask)  # (B, h, T, d)
    if layer.skip is not None:
        o = o + layer.skip.weight[:, None, :] * heads[-1]  # + D ⊙ v_t
    o = o.transpose(1, 2)  # (B, T, h, d)
    o = o.reshape(b, t, width) if layer.gate is None else gate_reference(o, x, layer.gate)
    return F.linear(o, layer.out_proj.weight, layer.out_proj.bias)


def make(cls, parts: dict, causal: bool = False, bias: bool = False, dim: int = 12, heads: int = 3):
    torch.manual_seed(0)
    return cls(dim, heads, bias=bias, causal=causal, **parts).double()


def inputs(b: int = 3, t: int = 10, e: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, E) float64 and a mask with right, left and scattered padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, e, generator=g, dtype=torch.float64)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[0, t - 3 :] = True
    mask[1, :4] = True
    if b > 2:
        mask[2] = torch.rand(t, generator=g) < 0.3
    return x, mask


# ----------------------------------------------------------------------------- the parts against references
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("cls", "parts"), TAKEN)
def test_layer_with_parts_equals_the_plain_reference_in_value_and_gradient(cls, parts, causal, bias):
    layer = make(cls, PARTS[parts], causal, bias)
    x, mask = inputs()
    x.requires_grad_()
    upstream = torch.randn(3, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    upstream[mask] = 0  # padded outputs are not defined the same way (softmax zeroes them)
    params = [x, *layer.parameters()]
    fast = layer(x, mask)
    ref = layer_reference(layer, x, mask)
    real = ~mask
    assert (fast - ref)[real].abs().max().item() < 1e-9
    grads = torch.autograd.grad((fast * upstream).sum(), params)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), params, allow_unused=True)
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g - (torch.zeros_like(g) if r is None else r)).abs().max().item() < 1e-9


def test_the_convolution_is_a_depthwise_filter_over_lags():
    """One channel, K = 3, weights (1, 2, 3) on u = e_0 (one impulse): y_t = SiLU(w[K−1−t])."""
    layer = make(NoAttention, dict(short_conv=3), dim=1, heads=1)
    with torch.no_grad():
        layer.qkv_proj.weight.fill_(1.0)
        layer.short_conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0]]]))
    [v] = layer.heads(torch.tensor([[[1.0], [0.0], [0.0], [0.0]]], dtype=torch.float64))
    torch.testing.assert_close(v.flatten(), F.silu(torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)))


@pytest.mark.parametrize("kernel_size", [1, 4])
def test_the_convolutions_written_out_backward_passes_gradcheck(kernel_size):
    """The hand-written backward (∂u by the reversed filter, ∂w by K products) against finite
    differences, and its value against the loop over lags."""
    torch.manual_seed(0)
    u = torch.randn(2, kernel_size - 1 + 7, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, kernel_size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(causal_depthwise_conv, (u, weight))
    reference = short_conv_reference(u, weight[:, None], None)[:, kernel_size - 1 :]  # its last T outputs
    assert torch.allclose(F.silu(causal_depthwise_conv(u, weight)), reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(12, 100, 512), (3, 150, 4096)])  # 5 whole sequences a piece; a sequence in 3
def test_the_filter_gradient_sums_every_piece_once(shape):
    """∂w summed piece by piece (pieces of ~2 MB: 64 rows of 4,096 float64 channels) equals one sum."""
    b, t, c = shape
    g = torch.Generator().manual_seed(0)
    u = torch.randn(b, 3 + t, c, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(c, 4, dtype=torch.float64, generator=g, requires_grad=True)
    upstream = torch.randn(b, t, c, dtype=torch.float64, generator=g)
    (grad_w,) = torch.autograd.grad((causal_depthwise_conv(u, weight) * upstream).sum(), weight)
    plain = torch.stack([(upstream * u[:, j : j + t]).sum((0, 1)) for j in range(4)], dim=1)  # (C, K)
    torch.testing.assert_close(grad_w, plain, rtol=1e-12, atol=1e-9)


def test_the_convolution_runs_in_float32_under_autocast_and_returns_gradients_in_the_inputs_dtypes():
    torch.manual_seed(0)
    u = torch.randn(2, 3 + 50, 8).bfloat16().requires_grad_()
    weight = torch.randn(8, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = causal_depthwise_conv(u, weight)
    assert y.dtype == torch.float32
    y.square().sum().backward()
    assert u.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    u64, w64 = u.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    causal_depthwise_conv(u64, w64).square().sum().backward()
    assert torch.allclose(y.double(), causal_depthwise_conv(u64, w64), atol=1e-5)
    assert torch.allclose(weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(("cls", "parts"), TAKEN)
def test_gradcheck_of_the_layer_with_each_part(cls, parts):
    layer = make(cls, PARTS[parts], causal=cls is SoftmaxAttention, bias=True, dim=4, heads=2)
    x, mask = inputs(2, 5, 4, seed=3)
    mask[1] = False
    names = [n for n, _ in layer.named_parameters()]

    def run(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params, strict=True)), (x, mask))

    assert torch.autograd.gradcheck(run, (x.requires_grad_(), *layer.parameters()))


# ----------------------------------------------------------------------------- padding and causality
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("cls", "parts"), [(cls, part) for cls, part in TAKEN if part in ("both", "all_three")])
def test_left_or_right_padding_changes_no_real_output(cls, parts, causal):
    layer = make(cls, PARTS[parts], causal, bias=True)
    x, _ = inputs(2, 9)
    noise = torch.randn(2, 5, 12, dtype=torch.float64) * 100
    want = layer(x)
    pads, real = torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 9, dtype=torch.bool)
    left = layer(torch.cat([noise, x], dim=1), torch.cat([pads, real], dim=1))[:, 5:]
    right = layer(torch.cat([x, noise], dim=1), torch.cat([real, pads], dim=1))[:, :9]
    torch.testing.assert_close(left, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(right, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("attention", "value_skip"), [("hrr", False), ("softmax", False), ("none", False), ("hrr", True), ("softmax", True)]
)
def test_a_causal_model_with_the_parts_stays_prefix_exact(attention, value_skip):
    """Changing the future changes no past output: the convolution looks back only."""
    config = HrrformerConfig(
        vocab_size=20, max_len=32, dim=12, heads=3, dropout=0.0, causal=True, attention=attention, short_conv=4,
        output_gate=True, value_skip=value_skip,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Hrrformer(config).double()
    x, _ = inputs(2, 12)
    block = model.encoder.blocks[0]
    changed = x.clone()
    changed[:, 7:] = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(block(changed)[:, :7], block(x)[:, :7], rtol=0, atol=1e-12)
    assert (block(changed)[:, 7:] - block(x)[:, 7:]).abs().max() > 1e-3


def test_no_attention_crosses_positions_only_through_the_convolution():
    """A change at position 5 moves outputs 5 … 5 + K − 1 (K = 1 without a convolution), no others."""
    x = torch.randn(1, 12, 12, dtype=torch.float64)
    changed = x.clone()
    changed[:, 5] += 1.0
    t = torch.arange(12)
    for parts, reach in (({}, 1), (dict(output_gate=True), 1), (dict(short_conv=4, output_gate=True), 4)):
        layer = make(NoAttention, parts)
        moved = (layer(changed) - layer(x)).abs().amax(-1)[0]  # (T,)
        assert torch.equal(moved > 0, (t >= 5) & (t < 5 + reach)), parts


# ----------------------------------------------------------------------------- halos
def test_halos_of_short_pieces_come_from_several_pieces_before():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lengths, width = [1, 2, 1, 5], 3
    pieces = x.split(lengths, dim=1)
    before = torch.cat([x.new_zeros(2, width, 3), x], dim=1)
    got = SequenceReduction().halo(pieces, width)
    starts = [0, 1, 3, 4]
    for h, s in zip(got, starts, strict=True):
        torch.testing.assert_close(h, before[:, s : s + width], rtol=0, atol=0)
    sum(h.sum() for h in got).backward()
    expected = sum(torch.zeros(2, 9 + width, 1, dtype=torch.float64).index_fill(1, torch.arange(s, s + width), 1.0)
                   for s in starts)[:, width:].expand(2, 9, 3)  # fmt: skip
    torch.testing.assert_close(x.grad, expected)
    with pytest.raises(ValueError, match="at least one position"):
        SequenceReduction().halo(pieces, 0)


def test_a_piece_with_its_halo_equals_the_whole_sequence():
    """The layer's ``piece`` on x[:, s:] with the halo of the positions before gives the whole
    layer's outputs there (NoAttention: nothing else crosses positions)."""
    from hrrformer.parts import halos

    layer = make(NoAttention, dict(short_conv=5, output_gate=True), bias=True)
    x, mask = inputs()
    whole = layer(x, mask)
    pieces, masks = x.split([6, 4], dim=1), mask.split([6, 4], dim=1)
    edges = halos(pieces, masks, layer.halo_size, SequenceReduction())
    for i, (p, m, h) in enumerate(zip(pieces, masks, edges, strict=True)):
        got = layer.piece(p, m, None, h)
        torch.testing.assert_close(got, whole[:, 6 * i : 6 * i + p.shape[1]], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- autocast, compile, checks
@pytest.mark.parametrize("attention", ["hrr", "softmax", "none"])
def test_bf16_autocast_step_with_both_parts_is_close_to_float32(attention):
    config = HrrformerConfig(
        vocab_size=20, max_len=32, dim=16, heads=2, dropout=0.0, attention=attention, short_conv=4, output_gate=True
    )
    torch.manual_seed(0)
    model = Hrrformer(config)
    tokens = torch.randint(1, 20, (3, 17), generator=torch.Generator().manual_seed(0))
    tokens[0, 11:] = 0
    want = model(tokens)
    want.square().sum().backward()
    grad_want = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(tokens).float()
    got.square().sum().backward()
    grad_got = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(got, want, rtol=BF16_STEP_TOLERANCE, atol=BF16_STEP_TOLERANCE)
    assert torch.isfinite(grad_got).all()
    assert ((grad_got - grad_want).norm() / grad_want.norm()).item() < BF16_STEP_TOLERANCE


@pytest.mark.parametrize("cls", KINDS)
def test_module_with_both_parts_compiles(cls):
    torch.manual_seed(0)
    layer = cls(16, 2, short_conv=4, output_gate=True)
    x = torch.randn(2, 11, 16)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, 8:] = True
    compiled = torch.compile(layer, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(x, mask), layer(x, mask))


def test_no_parts_is_the_paper_layer():
    plain = make(HrrAttention, {})
    assert plain.short_conv is None and plain.gate is None and plain.halo_size == 0
    assert {n for n, _ in plain.named_parameters()} == {"qkv_proj.weight", "out_proj.weight"}
    x, mask = inputs()
    torch.testing.assert_close(plain(x, mask)[~mask], layer_reference(plain, x, mask)[~mask], rtol=0, atol=1e-12)


def test_parts_are_checked_and_counted():
    with pytest.raises(ValueError, match=r"short_conv .* ≥ 1"):
        HrrAttention(8, 2, short_conv=0)
    with pytest.raises(ValueError, match="short_conv must be ≥ 1"):
        HrrformerConfig(short_conv=0)
    layer = HrrAttention(8, 2, short_conv=4, output_gate=True)
    assert layer.short_conv.weight.shape == (24, 1, 4) and layer.halo_size == 3
    assert layer.gate.proj.weight.shape == (8, 8) and layer.gate.weight.shape == (4,)
    assert NoAttention(8, 2, short_conv=4).short_conv.weight.shape == (8, 1, 4)  # v's channels only


@pytest.mark.parametrize("cls", [HrrAttention, SoftmaxAttention])
def test_the_value_skip_adds_the_attention_to_the_block_without_it(cls):
    """With its attention's output zeroed, a layer with the value skip (D = 1 at first) is the
    no-attention layer of the same v projection, convolution, gate and output projection."""
    layer, ablation = make(cls, PARTS["all_three"], bias=True), make(NoAttention, PARTS["both"], bias=True)
    e = layer.inner_dim
    with torch.no_grad():
        ablation.qkv_proj.weight.copy_(layer.qkv_proj.weight[2 * e :])
        ablation.qkv_proj.bias.copy_(layer.qkv_proj.bias[2 * e :])
        ablation.short_conv.weight.copy_(layer.short_conv.weight[2 * e :])
        ablation.gate.load_state_dict(layer.gate.state_dict())
        ablation.out_proj.load_state_dict(layer.out_proj.state_dict())
    x, mask = inputs()
    layer.attend = lambda q, k, v, *rest: torch.zeros_like(v)  # the attention's own term removed
    torch.testing.assert_close(layer(x, mask)[~mask], ablation(x, mask)[~mask], rtol=0, atol=1e-12)
    assert torch.equal(layer.skip.weight, torch.ones(3, 4, dtype=torch.float64))


def test_the_value_skip_is_refused_where_the_output_is_already_v():
    with pytest.raises(ValueError, match="NoAttention outputs v_t itself"):
        NoAttention(8, 2, value_skip=True)
    with pytest.raises(ValueError, match=r"value_skip needs attention in \('hrr', 'softmax'\)"):
        HrrformerConfig(attention="none", value_skip=True)
    assert {n for n, _ in HrrAttention(8, 2, value_skip=True).named_parameters()} == {
        "qkv_proj.weight", "out_proj.weight", "skip.weight"
    }  # fmt: skip


def test_head_dim_sets_each_heads_width_apart_from_the_model_width():
    """head_dim d: projections E → h·d, the gate's W_g E → h·d, the output projection h·d → E."""
    layer = HrrAttention(8, 2, head_dim=16, short_conv=4, output_gate=True)
    assert layer.qkv_proj.weight.shape == (96, 8) and layer.out_proj.weight.shape == (8, 32)
    assert layer.short_conv.weight.shape == (96, 1, 4) and layer.gate.proj.weight.shape == (32, 8)
    assert layer(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    assert SoftmaxAttention(6, 4, head_dim=3).head_dim == 3  # 6 % 4 ≠ 0 is fine with a head_dim
    with pytest.raises(ValueError, match="divisible"):
        SoftmaxAttention(6, 4)
    with pytest.raises(ValueError, match="head_dim must be ≥ 1"):
        HrrAttention(8, 2, head_dim=0)
    with pytest.raises(ValueError, match="head_dim must be ≥ 1"):
        HrrformerConfig(head_dim=0)
    config = HrrformerConfig(vocab_size=20, max_len=16, dim=12, heads=1, head_dim=64, attention="none")
    assert Hrrformer(config).encoder.blocks[0].attn.qkv_proj.weight.shape == (64, 12)  # v's rows only


# ----------------------------------------------------------------------------- the shift initialisation
@pytest.mark.parametrize("cls", KINDS)
def test_the_shift_initialisation_delays_the_keys_by_one_position(cls):
    """short_conv_init="shift": each filter starts as a unit impulse, k's at lag 1 and q's and v's
    at lag 0, so at the start k_t = SiLU(x_{t−1} W_k) and q_t, v_t = SiLU(x_t W)."""
    layer = make(cls, dict(short_conv=3, short_conv_init="shift"))
    x, _ = inputs()
    b, t, _ = x.shape
    weight, _ = layer.projection_weights()
    width = layer.inner_dim
    for i, (part, head) in enumerate(zip(layer.projected, layer.heads(x), strict=True)):
        u = F.silu(shifted(x @ weight[i * width : (i + 1) * width].T, int(part == "k")))  # (B, T, h·d)
        expected = u.reshape(b, t, layer.num_heads, layer.head_dim).transpose(1, 2)
        torch.testing.assert_close(head, expected, rtol=0, atol=1e-12)


def test_with_shared_qk_a_shifted_key_is_the_query_of_the_token_before():
    """W_q = W_k and the shift: k_{t+1} = q_t, so with π the key stored after a token unbinds
    exactly with a later query of that token (associative recall's binding, at the start)."""
    layer = make(HrrAttention, dict(short_conv=4, short_conv_init="shift", shared_qk=True, projection=True))
    x, _ = inputs()
    q, k, _ = layer.heads(x)
    torch.testing.assert_close(k[:, :, 1:], q[:, :, :-1], rtol=0, atol=0)
    assert k[:, :, 0].abs().max() == 0  # position 0 reads the zeros before the sequence: SiLU(0)


def test_the_shift_initialisation_is_checked():
    with pytest.raises(ValueError, match="needs a short_conv"):
        HrrAttention(8, 2, short_conv_init="shift")
    with pytest.raises(ValueError, match="a shift needs short_conv ≥ 2"):
        HrrAttention(8, 2, short_conv=1, short_conv_init="shift")
    with pytest.raises(ValueError, match="short_conv_init must be one of"):
        SoftmaxAttention(8, 2, short_conv=4, short_conv_init="identity")
    with pytest.raises(ValueError, match="needs a short_conv"):
        HrrformerConfig(short_conv_init="shift")
    with pytest.raises(ValueError, match="a shift needs short_conv ≥ 2"):
        HrrformerConfig(short_conv=1, short_conv_init="shift")
    with pytest.raises(ValueError, match="short_conv_init must be one of"):
        HrrformerConfig(short_conv=4, short_conv_init="identity")
    with pytest.raises(ValueError, match=r"a lag in \[0, 2\)"):
        ShortConvolution(4, 2, delays=[0, 1, 2, 0])
    assert HrrAttention(8, 2, short_conv=4).short_conv.weight.abs().max() <= 0.5  # random: U(±1/√K)
