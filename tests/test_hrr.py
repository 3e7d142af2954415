"""HRR algebra identities."""

import pytest
import torch

from hrrformer import hrr


def circular_convolution(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Definition: (x ⊛ y)[n] = Σ_j x[j] y[(n − j) mod d], by loops over the last axis."""
    d = x.shape[-1]
    out = torch.zeros(torch.broadcast_shapes(x.shape, y.shape), dtype=x.dtype)
    for n in range(d):
        for j in range(d):
            out[..., n] += x[..., j] * y[..., (n - j) % d]
    return out


@pytest.mark.parametrize("d", [1, 2, 7, 16])
def test_bind_is_circular_convolution(d):
    x, y = torch.randn(3, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    torch.testing.assert_close(hrr.bind(x, y), circular_convolution(x, y))


def test_bind_commutes_and_works_on_any_dim():
    x, y = torch.randn(4, 9, 5, dtype=torch.float64), torch.randn(4, 9, 5, dtype=torch.float64)
    torch.testing.assert_close(hrr.bind(x, y, dim=1), hrr.bind(y, x, dim=1))
    moved = hrr.bind(x.transpose(1, -1), y.transpose(1, -1)).transpose(1, -1)
    torch.testing.assert_close(hrr.bind(x, y, dim=1), moved)


def test_approx_inverse_is_index_negation_and_conjugate_spectrum():
    x = torch.randn(2, 8, dtype=torch.float64)
    idx = (-torch.arange(8)) % 8
    torch.testing.assert_close(hrr.approx_inverse(x), x[:, idx])
    torch.testing.assert_close(torch.fft.rfft(hrr.approx_inverse(x)), torch.fft.rfft(x).conj())


def test_unbind_equals_bind_with_approx_inverse():
    s, y = torch.randn(5, 11, dtype=torch.float64), torch.randn(5, 11, dtype=torch.float64)
    torch.testing.assert_close(hrr.unbind(s, y), hrr.bind(s, hrr.approx_inverse(y)))


def test_unbinding_projected_key_recovers_value():
    torch.manual_seed(0)
    d = 1024
    key = hrr.projection(torch.randn(d, dtype=torch.float64) / d**0.5)
    value = torch.randn(d, dtype=torch.float64) / d**0.5
    recovered = hrr.unbind(hrr.bind(key, value), key)
    assert hrr.cosine_similarity(recovered, value) > 0.99
    # Without projection, the approximate inverse is noticeably noisier.
    raw_key = torch.randn(d, dtype=torch.float64) / d**0.5
    assert hrr.cosine_similarity(hrr.unbind(hrr.bind(raw_key, value), raw_key), value) < 0.9


def test_exact_inverse_round_trips():
    torch.manual_seed(1)
    x = torch.randn(3, 64, dtype=torch.float64)
    identity = torch.zeros(3, 64, dtype=torch.float64)
    identity[:, 0] = 1.0
    torch.testing.assert_close(hrr.bind(x, hrr.exact_inverse(x, eps=1e-12)), identity, atol=1e-8, rtol=0)
    value = torch.randn(3, 64, dtype=torch.float64)
    torch.testing.assert_close(hrr.bind(hrr.bind(x, value), hrr.exact_inverse(x, eps=1e-12)), value)


def test_projection_has_unit_spectrum_and_is_finite_at_zero():
    x = torch.randn(4, 32, dtype=torch.float64)
    mag = torch.fft.rfft(hrr.projection(x)).abs()
    torch.testing.assert_close(mag, torch.ones_like(mag), atol=1e-6, rtol=0)
    zero = torch.zeros(32, dtype=torch.float64, requires_grad=True)
    hrr.projection(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_cosine_similarity_matches_torch_and_is_zero_for_zero_vectors():
    x, y = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    torch.testing.assert_close(
        hrr.cosine_similarity(x, y, eps=0.0), torch.nn.functional.cosine_similarity(x, y, dim=-1)
    )
    zero = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    out = hrr.cosine_similarity(zero, y[0])
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(zero.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_as_input(dtype):
    x, y = torch.randn(4, 64), torch.randn(4, 64)
    out = hrr.bind(x.to(dtype), y.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), hrr.bind(x.to(dtype).float(), y.to(dtype).float()).to(dtype).float())
    assert hrr.unbind(x.to(dtype), y.to(dtype)).dtype == dtype
    assert hrr.projection(x.to(dtype)).dtype == dtype


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        hrr.bind(torch.randn(3, 4), torch.randn(3, 5))
