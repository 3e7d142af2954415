"""Shallow baselines (hrrformer.baselines): features, the logistic fit, the first-operator rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hrrformer.baselines import (
    FirstOperatorClassifier,
    SparseRows,
    accuracy,
    bigram_keys,
    count_rows,
    featurize,
    first_operator,
    fit_logistic,
    majority_share,
    pair_rows,
    unigram_keys,
)
from hrrformer.data.listops import VOCAB

ROOT = Path(__file__).resolve().parents[1]


def order_task(n: int, seed: int, length: int = 40) -> tuple[list[np.ndarray], np.ndarray]:
    """Label 1: every 1 is followed by a 2; label 0: by a 3. Both have exactly the same token counts.

    Tokens are 1, 2, 3 in equal thirds (so unigram histograms carry no signal), arranged as
    repeated "1 2 3" or "1 3 2" blocks.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    block = {1: [1, 2, 3], 0: [1, 3, 2]}
    sequences = [np.array(block[int(y)] * (length // 3), dtype=np.int64) for y in labels]
    return sequences, labels


def test_unigram_rows_are_normalised_histograms():
    sequences = [np.array([1, 1, 2, 4]), np.array([3]), np.array([2, 2])]
    rows = featurize(sequences, "unigram", vocab_size=5)
    dense = rows.to_dense()
    assert dense.shape == (3, 5)
    expected = torch.tensor([[0, 0.5, 0.25, 0, 0.25], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0]])
    torch.testing.assert_close(dense, expected)
    torch.testing.assert_close(dense.sum(1), torch.ones(3))


def test_bigram_rows_count_adjacent_pairs():
    sequences = [np.array([1, 2, 1, 2]), np.array([7])]  # pairs (1,2) twice and (2,1) once; none
    rows = featurize(sequences, "bigram", vocab_size=8, buckets=2**10)
    dense = rows.to_dense()
    assert dense.shape == (2, 2**10)
    keys = bigram_keys(np.array([1, 2, 1]), 8, 2**10)  # (1,2), (2,1)
    assert dense[0, keys[0]] == pytest.approx(2 / 3)
    assert dense[0, keys[1]] == pytest.approx(1 / 3)
    assert dense[0].sum() == pytest.approx(1.0)
    assert dense[1].sum() == 0  # one token: no pair, an empty row


def test_bigram_keys_in_range_and_distinct_for_bytes():
    a, b = np.meshgrid(np.arange(257), np.arange(257), indexing="ij")
    tokens = np.stack([a.ravel(), b.ravel()], 1)  # every byte pair once
    keys = np.concatenate([bigram_keys(t, 257, 2**18) for t in tokens])
    assert keys.min() >= 0 and keys.max() < 2**18
    assert len(np.unique(keys)) > 0.85 * len(keys)  # few collisions at 2^18 buckets for 66,049 pairs
    with pytest.raises(ValueError, match="power of two"):
        bigram_keys(np.array([1, 2]), 257, 1000)


def test_count_rows_chunks_match_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 9, rng.integers(1, 30)) for _ in range(50)]
    whole = count_rows(sequences, lambda t: unigram_keys(t, 9), 9).to_dense()
    monkeypatch.setattr("hrrformer.baselines._CHUNK_TOKENS", 17)
    chunked = count_rows(sequences, lambda t: unigram_keys(t, 9), 9).to_dense()
    torch.testing.assert_close(whole, chunked)


def test_pair_rows_is_a_b_absdiff_product():
    a = featurize([np.array([1, 1, 2]), np.array([3])], "unigram", vocab_size=4)
    b = featurize([np.array([2, 3]), np.array([3, 3])], "unigram", vocab_size=4)
    joined = pair_rows(a, b).to_dense()
    da, db = a.to_dense(), b.to_dense()
    torch.testing.assert_close(joined, torch.cat([da, db, (da - db).abs(), da * db], 1))
    via_featurize = featurize(
        [(np.array([1, 1, 2]), np.array([2, 3])), (np.array([3]), np.array([3, 3]))], "unigram", vocab_size=4
    )
    torch.testing.assert_close(via_featurize.to_dense(), joined)


def test_sparse_matmul_and_column_scaling_match_dense():
    rng = np.random.default_rng(1)
    rows = featurize([rng.integers(1, 6, 12) for _ in range(7)], "unigram", vocab_size=6)
    weight = torch.randn(6, 3, requires_grad=True)
    out = rows.matmul(weight)
    torch.testing.assert_close(out, rows.to_dense() @ weight)
    out.sum().backward()
    torch.testing.assert_close(weight.grad, rows.to_dense().sum(0)[:, None].expand(6, 3))
    rms = rows.column_rms()
    torch.testing.assert_close(torch.from_numpy(rms), rows.to_dense().double().pow(2).mean(0).sqrt())
    scale = np.arange(6, dtype=np.float64)
    torch.testing.assert_close(rows.scale_columns(scale).to_dense(), rows.to_dense() * torch.arange(6.0))


def test_bigram_model_beats_unigram_on_an_order_task():
    train, train_y = order_task(300, seed=0)
    val, val_y = order_task(100, seed=1)
    test, test_y = order_task(200, seed=2)
    scores = {}
    for features in ("unigram", "bigram"):
        x = {name: featurize(s, features, vocab_size=4, buckets=2**8) for name, s in (("tr", train), ("va", val))}
        fit = fit_logistic(x["tr"], train_y, x["va"], val_y, num_classes=2, l2_grid=(1e-2, 1e-4), max_iter=50)
        scores[features] = accuracy(fit.predict(featurize(test, features, vocab_size=4, buckets=2**8)), test_y)
        assert [r["l2"] for r in fit.grid] == [1e-2, 1e-4]
    assert scores["bigram"] == 1.0
    assert scores["unigram"] <= 0.7  # identical histograms: at most chance plus noise
    assert scores["unigram"] == pytest.approx(majority_share(train_y, test_y), abs=0.15)


def test_logistic_fit_learns_unigram_signal_and_picks_l2_on_val():
    rng = np.random.default_rng(3)

    def make(n: int) -> tuple[list[np.ndarray], np.ndarray]:
        labels = rng.integers(0, 3, n)
        return [rng.choice([1, 2, 3, 4], 30, p=np.roll([0.55, 0.15, 0.15, 0.15], int(y))) for y in labels], labels

    (train, train_y), (val, val_y) = make(300), make(100)
    x_train, x_val = featurize(train, "unigram", 5), featurize(val, "unigram", 5)
    fit = fit_logistic(x_train, train_y, x_val, val_y, num_classes=3, max_iter=50)
    assert fit.weight.shape == (5, 3) and fit.bias.shape == (3,)
    assert fit.scale[0] == 0  # padding id 0 never occurs: its column is dropped
    assert accuracy(fit.predict(x_val), val_y) > 0.9
    best = max(r["val_accuracy"] for r in fit.grid)
    assert next(r for r in fit.grid if r["l2"] == fit.l2)["val_accuracy"] == best
    assert fit.logits(x_val).shape == (100, 3)


def test_first_operator_classifier():
    ops = [VOCAB.index(op) for op in ("[MIN", "[MAX", "[MED", "[SM")]
    digit = {d: VOCAB.index(str(d)) for d in range(10)}
    x = VOCAB.index("X")
    minimum, maximum = ops[0], ops[1]
    assert first_operator(np.array([minimum, digit[3], maximum, digit[1], x, x]), ops) == minimum
    assert first_operator(np.array([digit[5]]), ops) == -1
    train = [
        np.array([minimum, digit[2], digit[7], x]),
        np.array([minimum, digit[2], digit[9], x]),
        np.array([minimum, digit[4], digit[5], x]),
        np.array([maximum, digit[2], digit[9], x]),
        np.array([maximum, digit[1], digit[9], x]),
    ]
    labels = [2, 2, 4, 9, 9]
    classifier = FirstOperatorClassifier(ops).fit(train, labels)
    assert classifier.table == {minimum: 2, maximum: 9}
    assert classifier.default == 2  # the most frequent label overall (2 and 9 tie: the smaller)
    unseen = np.array([ops[3], digit[1], x])
    np.testing.assert_array_equal(classifier.predict([train[3], unseen, np.array([digit[6]])]), [9, 2, 2])


def test_majority_share_and_accuracy():
    assert majority_share([0, 1, 1, 2], [1, 1, 0, 2]) == 0.5
    assert accuracy(np.array([1, 0]), [1, 1]) == 0.5
    with pytest.raises(ValueError, match="no labels"):
        accuracy(np.array([]), [])


def test_sparse_rows_shapes_checked():
    a = SparseRows.from_keys(np.array([0, 5]), np.array([1.0, 1.0]), n_rows=2, width=4)
    b = SparseRows.from_keys(np.array([1]), np.array([1.0]), n_rows=1, width=4)
    assert a.rows.tolist() == [0, 1] and a.cols.tolist() == [0, 1]
    with pytest.raises(ValueError, match="shapes differ"):
        pair_rows(a, b)
    with pytest.raises(ValueError, match="unknown features"):
        featurize([np.array([1])], "trigram", vocab_size=3)


def test_script_end_to_end_on_generated_listops(tmp_path, monkeypatch, load_script):
    """scripts/baselines.py on a tiny generated ListOps set (the demo sizes shrunk), then --table."""
    script = load_script("baselines")
    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path / "cache"))
    from hrrformer.data.listops_gen import generate_listops

    data = tmp_path / "listops"
    generate_listops(data, train=200, val=60, test=60, seed=0, min_len=10, max_len=100, progress=False)
    out = tmp_path / "out"
    assert script.main(["listops", "--data", str(data), "--buckets", "1024", "--out-dir", str(out)]) == 0
    result = json.loads((out / "listops.json").read_text())
    assert result["sizes"] == {"train": 200, "val": 60, "test": 60}
    names = [r["baseline"] for r in result["baselines"]]
    assert names == ["first operator", "unigram logistic regression", "bigram logistic regression"]
    for record in result["baselines"]:
        assert 0 <= record["val_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1
    assert script.main(["--table", str(out)]) == 0
    table = (out / "baselines.md").read_text()
    assert table.count("| listops |") == 3
    assert len(json.loads((out / "baselines.json").read_text())) == 1
