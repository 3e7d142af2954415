"""research.exactness: the chunked differences it reports are those of an exact implementation."""

from __future__ import annotations

import torch

from research.exactness import CONFIGS, chunked, difference, model_of, sample_tokens, step


def test_chunked_differences_are_at_rounding_level_in_float64():
    table = chunked(CONFIGS["causal, both parts"], torch.float64, range(1, 4))
    assert set(table) == {"1", "2", "3"}
    assert all(0 <= d["logits"] < 1e-12 and 0 <= d["gradients"] < 1e-12 for d in table.values())


def test_a_different_model_is_reported_as_different():
    """The measure can fail: a model with the short convolution against one without differs at O(1)."""
    plain = step(model_of({}, torch.float64), sample_tokens())
    with_conv = step(model_of(CONFIGS["short_conv 4"], torch.float64), sample_tokens())
    assert difference(with_conv, plain)["gradients"] > 1e-3
