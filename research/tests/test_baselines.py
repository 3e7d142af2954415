"""Shallow baselines (research.shallow, research.baselines): features, the logistic fit, the first-operator rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from hrrformer.data.listops import VOCAB
from research.shallow import (
    FirstOperatorClassifier,
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


def dense(x: sp.spmatrix) -> np.ndarray:
    return x.toarray()


def test_unigram_rows_are_normalised_histograms():
    sequences = [np.array([1, 1, 2, 4]), np.array([3]), np.array([2, 2])]
    rows = featurize(sequences, "unigram", vocab_size=5)
    assert sp.issparse(rows) and rows.shape == (3, 5)
    expected = np.array([[0, 0.5, 0.25, 0, 0.25], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0]])
    np.testing.assert_allclose(dense(rows), expected)
    np.testing.assert_allclose(dense(rows).sum(1), np.ones(3))


def test_bigram_rows_count_adjacent_pairs():
    sequences = [np.array([1, 2, 1, 2]), np.array([7])]  # pairs (1,2) twice and (2,1) once; none
    rows = dense(featurize(sequences, "bigram", vocab_size=8, buckets=2**10))
    assert rows.shape == (2, 2**10)
    keys = bigram_keys(np.array([1, 2, 1]), 8, 2**10)  # (1,2), (2,1)
    assert rows[0, keys[0]] == pytest.approx(2 / 3)
    assert rows[0, keys[1]] == pytest.approx(1 / 3)
    assert rows[0].sum() == pytest.approx(1.0)
    assert rows[1].sum() == 0  # one token: no pair, an empty row


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
    whole = dense(count_rows(sequences, lambda t: unigram_keys(t, 9), 9))
    monkeypatch.setattr("research.shallow.CHUNK_TOKENS", 17)
    chunked = dense(count_rows(sequences, lambda t: unigram_keys(t, 9), 9))
    np.testing.assert_allclose(whole, chunked)
    np.testing.assert_allclose(whole.sum(1), np.ones(50))


def test_pair_rows_is_a_b_absdiff_product():
    a = featurize([np.array([1, 1, 2]), np.array([3])], "unigram", vocab_size=4)
    b = featurize([np.array([2, 3]), np.array([3, 3])], "unigram", vocab_size=4)
    joined = dense(pair_rows(a, b))
    da, db = dense(a), dense(b)
    np.testing.assert_allclose(joined, np.concatenate([da, db, np.abs(da - db), da * db], 1))
    via_featurize = featurize(
        [(np.array([1, 1, 2]), np.array([2, 3])), (np.array([3]), np.array([3, 3]))], "unigram", vocab_size=4
    )
    np.testing.assert_allclose(dense(via_featurize), joined)


def test_bigram_model_beats_unigram_on_an_order_task():
    train, train_y = order_task(300, seed=0)
    val, val_y = order_task(100, seed=1)
    test, test_y = order_task(200, seed=2)
    scores = {}
    for features in ("unigram", "bigram"):
        x = {name: featurize(s, features, vocab_size=4, buckets=2**8) for name, s in (("tr", train), ("va", val))}
        fit = fit_logistic(x["tr"], train_y, x["va"], val_y, l2_grid=(1e-4, 1e-2), max_iter=50)
        scores[features] = accuracy(fit.predict(featurize(test, features, vocab_size=4, buckets=2**8)), test_y)
        assert [r["l2"] for r in fit.grid] == [1e-2, 1e-4]  # strong to weak
    assert scores["bigram"] == 1.0
    assert scores["unigram"] <= 0.7  # identical histograms: at most chance plus noise
    assert scores["unigram"] == pytest.approx(majority_share(train_y, test_y), abs=0.15)


def unigram_signal(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Three classes; class y draws token y + 1 with probability 0.55, the other three 0.15 each."""
    labels = rng.integers(0, 3, n)
    return [rng.choice([1, 2, 3, 4], 30, p=np.roll([0.55, 0.15, 0.15, 0.15], int(y))) for y in labels], labels


def test_logistic_fit_learns_unigram_signal_and_picks_l2_on_val():
    rng = np.random.default_rng(3)
    (train, train_y), (val, val_y) = unigram_signal(rng, 300), unigram_signal(rng, 100)
    x_train, x_val = featurize(train, "unigram", 5), featurize(val, "unigram", 5)
    fit = fit_logistic(x_train, train_y, x_val, val_y, max_iter=50)
    assert fit.model.coef_.shape == (3, 5) and fit.model.intercept_.shape == (3,)
    assert fit.scale[0] == 0  # padding id 0 never occurs: its column is dropped
    assert accuracy(fit.predict(x_val), val_y) > 0.9
    assert [r["l2"] for r in fit.grid] == [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    best = max(r["val_accuracy"] for r in fit.grid)
    chosen = next(r for r in fit.grid if r["l2"] == fit.l2)
    assert chosen["val_accuracy"] == best
    assert fit.l2 == next(r["l2"] for r in fit.grid if r["val_accuracy"] == best)  # ties: the stronger L2
    assert fit.predict(x_val).tolist() == fit.decision_function(x_val).argmax(1).tolist()
    # the chosen fit is the model of its own grid step, not the last (weakest) one of the walk
    assert accuracy(fit.predict(x_train), train_y) == chosen["train_accuracy"]


def test_l2_is_the_penalty_on_the_mean_loss():
    """Strong L2 shrinks the weights towards 0 (predictions of the prior); weak L2 fits train."""
    rng = np.random.default_rng(4)
    (train, train_y), (val, val_y) = unigram_signal(rng, 200), unigram_signal(rng, 50)
    x_train, x_val = featurize(train, "unigram", 5), featurize(val, "unigram", 5)
    norms = {}
    for l2 in (1e3, 1e-4):
        fit = fit_logistic(x_train, train_y, x_val, val_y, l2_grid=(l2,), max_iter=200)
        norms[l2] = float(np.abs(fit.model.coef_).max())
    assert norms[1e3] < 1e-2 < norms[1e-4]


def test_the_val_split_decides_l2():
    """Validation labels that only a strong L2 predicts (always the majority class) pick the strongest L2."""
    rng = np.random.default_rng(5)
    (train, train_y), (val, _) = unigram_signal(rng, 300), unigram_signal(rng, 60)
    x_train, x_val = featurize(train, "unigram", 5), featurize(val, "unigram", 5)
    majority = int(np.bincount(train_y).argmax())
    fit = fit_logistic(x_train, train_y, x_val, np.full(60, majority), l2_grid=(1e3, 1e-3), max_iter=100)
    assert fit.l2 == 1e3
    assert fit.grid[0]["val_accuracy"] > fit.grid[1]["val_accuracy"]


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


def test_shapes_and_names_checked():
    a = featurize([np.array([1]), np.array([2])], "unigram", vocab_size=4)
    b = featurize([np.array([1])], "unigram", vocab_size=4)
    with pytest.raises(ValueError, match="shapes differ"):
        pair_rows(a, b)
    with pytest.raises(ValueError, match="unknown features"):
        featurize([np.array([1])], "trigram", vocab_size=3)
    with pytest.raises(ValueError, match="empty"):
        fit_logistic(a, [0, 1], a, [0, 1], l2_grid=())


def test_script_end_to_end_on_generated_listops(tmp_path, monkeypatch):
    """python -m research.baselines on a tiny generated ListOps set (the demo sizes shrunk), then --table."""
    from hrrformer.data.listops_gen import generate_listops
    from research import baselines

    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "listops"
    generate_listops(data, train=200, val=60, test=60, seed=0, min_len=10, max_len=100, progress=False)
    out = tmp_path / "out"
    assert baselines.main(["listops", "--data", str(data), "--buckets", "1024", "--out-dir", str(out)]) == 0
    result = json.loads((out / "listops.json").read_text())
    assert result["sizes"] == {"train": 200, "val": 60, "test": 60}
    names = [r["baseline"] for r in result["baselines"]]
    assert names == ["first operator", "unigram logistic regression", "bigram logistic regression"]
    for record in result["baselines"]:
        assert 0 <= record["val_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1
    first = result["baselines"][0]
    assert first["test_accuracy"] > result["majority"]["test"]  # the first operator carries signal
    assert result["baselines"][1]["width"] == len(VOCAB) and result["baselines"][2]["width"] == 1024
    assert result["baselines"][1]["l2"] in result["l2_grid"]
    assert baselines.main(["--table", str(out)]) == 0
    table = (out / "baselines.md").read_text()
    assert table.count("| listops |") == 3
    assert len(json.loads((out / "baselines.json").read_text())) == 1
