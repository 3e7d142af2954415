"""scripts/branch_scale.py: the attention branch's size and the weights' focus, with mean and CLS pooling."""

from __future__ import annotations

import pytest
import torch

from hrrformer.data.base import collate
from hrrformer.model import Hrrformer, HrrformerConfig, HrrformerDualEncoder


def entropies(lines: list[str]) -> list[float]:
    return [float(line.split("H(w)/log n ")[1].split(",")[0]) for line in lines]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_branch_ratio_and_focus_count_the_real_positions_only(pooling, load_script):
    script = load_script("branch_scale")
    torch.manual_seed(0)
    config = HrrformerConfig(vocab_size=10, max_len=40, dim=8, heads=2, layers=2, pooling=pooling, score_scale=30.0)
    model = Hrrformer(config).eval()
    items = [(torch.randint(1, 10, (n,)), 0) for n in (12, 7, 4)]
    tight, padded = collate(items), collate(items, pad_multiple=32)
    assert padded["mask"].shape[1] == 32 > tight["mask"].shape[1]
    ratios = script.branch_ratios(model, tight)
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    assert ratios == pytest.approx(script.branch_ratios(model, padded), rel=1e-5)
    focused = entropies(script.focus(model, tight))
    assert focused == pytest.approx(entropies(script.focus(model, padded)), abs=1e-3)
    assert all(0.0 < h < 1.0 for h in focused)  # τ = 30 focuses; n includes the CLS token when there is one
    model.encoder.blocks[0].attn.score_scale.fill_(0.0)  # τ = 0: uniform weights, entropy exactly log n
    assert entropies(script.focus(model, tight))[0] == pytest.approx(1.0, abs=1e-3)


def test_a_pair_model_is_measured_through_its_shared_encoder(load_script):
    script = load_script("branch_scale")
    torch.manual_seed(0)
    config = HrrformerConfig(vocab_size=10, max_len=40, dim=8, heads=2, layers=1, score_scale=30.0)
    single, pair = Hrrformer(config).eval(), HrrformerDualEncoder(config).eval()
    pair.encoder.load_state_dict(single.encoder.state_dict())
    batch = collate([(torch.randint(1, 10, (n,)), 0) for n in (12, 7, 4)])
    assert script.branch_ratios(pair, batch) == pytest.approx(script.branch_ratios(single, batch), rel=1e-6)
    assert script.focus(pair, batch) == script.focus(single, batch)
