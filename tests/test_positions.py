"""Per-position outputs (``pooling="none"``): logits (B, T, C), the head at the labelled positions
only, padding invariance, causality, chunked equal to whole, the loss over labelled positions
(−100 ignored, as ``F.cross_entropy(ignore_index=-100)``), and a toy task that learns."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hrrformer import Hrrformer, HrrformerConfig
from hrrformer.data.base import IGNORE_INDEX, PositionDataset, collate
from hrrformer.forward import batch_loss, evaluate, forward_batch
from hrrformer.model import HrrformerDualEncoder

CPU = torch.device("cpu")


def _model(**overrides) -> Hrrformer:
    values = dict(vocab_size=12, num_classes=7, max_len=32, dim=16, heads=2, layers=2, dropout=0.0, pooling="none")
    values.update(overrides)
    torch.manual_seed(0)
    return Hrrformer(HrrformerConfig(**values)).double().eval()


def _tokens(b: int = 3, t: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 12, (b, t), generator=torch.Generator().manual_seed(seed))


def _labels(tokens: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 7, tokens.shape, generator=g)
    labels[torch.rand(tokens.shape, generator=g) < 0.5] = IGNORE_INDEX
    return labels


def test_logits_at_every_position_and_at_the_positions_asked():
    model, tokens = _model(), _tokens()
    full = model(tokens)
    assert full.shape == (3, 10, 7)
    asked = _labels(tokens) != IGNORE_INDEX
    picked = model(tokens, positions=asked)
    assert picked.shape == (int(asked.sum()), 7)
    torch.testing.assert_close(picked, full[asked], rtol=1e-12, atol=1e-12)


def test_the_head_runs_at_the_positions_asked_only():
    model, tokens = _model(num_classes=8192), _tokens()
    rows = []
    model.head.register_forward_hook(lambda _module, inputs, _out: rows.append(inputs[0].shape[0]))
    asked = torch.zeros_like(tokens, dtype=torch.bool)
    asked[0, 3] = asked[2, 9] = True
    assert model(tokens, positions=asked).shape == (2, 8192)
    assert rows == [2]  # not B·T = 30 rows of 8,192 logits


def test_positions_are_refused_where_they_mean_nothing():
    tokens = _tokens()
    with pytest.raises(ValueError, match="pooling='none'"):
        _model(pooling="mean")(tokens, positions=tokens > 5)
    with pytest.raises(ValueError, match="bool tensor shaped like the tokens"):
        _model()(tokens, positions=(tokens > 5)[:, :4])
    with pytest.raises(ValueError, match="two-document"):
        HrrformerDualEncoder(HrrformerConfig(pooling="none"))


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_no_real_position(causal):
    model, tokens = _model(causal=causal, short_conv=3), _tokens(t=7)
    padded = torch.cat([tokens, torch.zeros(3, 5, dtype=torch.long)], dim=1)  # pad_id 0 at the end
    torch.testing.assert_close(model(padded)[:, :7], model(tokens), rtol=1e-10, atol=1e-10)
    # a mask given explicitly (pad_id=None: 0 is a token like any other) works the same way
    model = _model(causal=causal, short_conv=3, pad_id=None)
    mask = torch.zeros_like(padded, dtype=torch.bool)
    mask[:, 7:] = True
    torch.testing.assert_close(model(padded, mask)[:, :7], model(tokens), rtol=1e-10, atol=1e-10)


def test_causal_logits_depend_on_the_prefix_only():
    model, tokens = _model(causal=True, short_conv=4), _tokens(t=12)
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 3) % 11 + 1
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=1e-10, atol=1e-10)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def test_without_position_embedding_the_order_comes_from_causality_and_the_convolution():
    """pos_embedding='none': a non-causal model without a convolution is permutation-equivariant."""
    model, tokens = _model(pos_embedding="none"), _tokens(t=9)
    assert model.encoder.position_embedding is None
    order = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(tokens[:, order]), model(tokens)[:, order], rtol=1e-10, atol=1e-10)
    causal = _model(pos_embedding="none", causal=True)
    assert (causal(tokens[:, order]) - causal(tokens)[:, order]).abs().max() > 1e-3


@pytest.mark.parametrize("overrides", [dict(causal=True, short_conv=4), dict(hrr_output="retrieved", output_gate=True)])
def test_chunked_equals_whole(overrides):
    whole = _model(**overrides).train()  # dropout 0: train mode recomputes the chunks in backward
    chunked = copy.deepcopy(whole)
    for block in chunked.encoder.blocks:
        block.chunk_size = 3
    tokens = _tokens(t=11)
    tokens[1, 8:] = 0  # padding inside the last chunk
    asked = _labels(tokens) != IGNORE_INDEX
    torch.testing.assert_close(chunked(tokens), whole(tokens), rtol=1e-10, atol=1e-10)
    weights = torch.randn(int(asked.sum()), 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (whole(tokens, positions=asked) * weights).sum().backward()
    (chunked(tokens, positions=asked) * weights).sum().backward()
    grads = dict(chunked.named_parameters())
    for name, p in whole.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loss_is_cross_entropy_over_the_labelled_positions(smoothing):
    model, tokens = _model(), _tokens()
    labels = _labels(tokens)
    batch = {"tokens": tokens, "mask": torch.zeros_like(tokens, dtype=torch.bool), "labels": labels}
    scores = forward_batch(model, batch, CPU)
    assert scores.rows == int((labels != IGNORE_INDEX).sum()) == len(scores.labels)
    expected = F.cross_entropy(model(tokens).float().transpose(1, 2), labels, label_smoothing=smoothing)
    torch.testing.assert_close(batch_loss(scores, smoothing), expected, rtol=1e-6, atol=1e-7)
    # a batch that asks nothing: no rows, a zero loss (not 0/0), still a graph to backpropagate
    nothing = forward_batch(model, {**batch, "labels": torch.full_like(labels, IGNORE_INDEX)}, CPU)
    assert nothing.rows == 0 and nothing.logits.shape == (0, 7)
    empty = batch_loss(nothing, smoothing)
    assert empty.item() == 0.0 and empty.requires_grad


def test_collate_pads_labels_with_the_ignore_index_and_evaluate_counts_positions_and_sequences():
    sequences = [torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6])]
    labels = [torch.tensor([-100, 2, -100, 3]), torch.tensor([4, -100])]
    batch = collate(list(zip(sequences, labels)), pad_multiple=8, max_len=6)
    assert batch["labels"].tolist() == [[-100, 2, -100, 3, -100, -100], [4, -100, -100, -100, -100, -100]]
    assert batch["mask"][1].tolist() == [False, False, True, True, True, True]

    model = _model()
    data = PositionDataset(sequences, labels)
    result = evaluate(model, data, batch_size=2, device=CPU, num_classes=7)
    hits = [model(s[None])[0].argmax(-1)[y != IGNORE_INDEX] == y[y != IGNORE_INDEX] for s, y in zip(sequences, labels)]
    assert result["positions"] == 3 and result["examples"] == 2 and "confusion_matrix" not in result
    assert result["accuracy"] == pytest.approx(float(torch.cat(hits).double().mean()))
    assert result["sequence_accuracy"] == pytest.approx(sum(bool(h.all()) for h in hits) / 2)


def test_a_toy_task_learns_the_token_two_positions_back():
    """Output x_{t−2} at every position t ≥ 2 (a third of them unlabelled): a causal model whose short
    convolution sees x_{t−2} learns it in a few hundred steps, through the training path's loss."""
    torch.manual_seed(0)
    config = HrrformerConfig(
        vocab_size=8, num_classes=8, max_len=16, dim=32, heads=2, layers=1, mlp_dim=64, dropout=0.0,
        pooling="none", causal=True, short_conv=4, pos_embedding="none", pad_id=None,
    )  # fmt: skip
    model = Hrrformer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)

    def batch(n: int) -> dict[str, torch.Tensor]:
        tokens = torch.randint(0, 8, (n, 16), generator=g)
        labels = torch.full_like(tokens, IGNORE_INDEX)
        labels[:, 2:] = tokens[:, :-2]
        labels[torch.rand(tokens.shape, generator=g) < 1 / 3] = IGNORE_INDEX
        return {"tokens": tokens, "mask": torch.zeros_like(tokens, dtype=torch.bool), "labels": labels}

    for _ in range(300):
        loss = batch_loss(forward_batch(model, batch(32), CPU))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = forward_batch(model, batch(256), CPU)
    accuracy = (scores.logits.argmax(-1) == scores.labels).double().mean().item()
    assert accuracy > 0.95, accuracy  # chance: 1/8
