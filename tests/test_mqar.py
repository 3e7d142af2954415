"""MQAR (hrrformer.data.mqar): the generator against Zoology's own output on statistics, its files, the
loader, the generated-data cache, and ``hrrformer train|eval|predict --task mqar`` end to end.

``tests/fixtures/zoology/mqar.npz`` is Zoology's ``multiquery_ar`` run by
``research/zoology_fixtures.py`` (their commit in its meta): 2,000 sequences at V = 8,192, T = 64,
4 pairs, and 250 at T = 256, 16 pairs. Every statistic is compared with ours drawn from a fixed seed,
so the tests are deterministic; the thresholds are ~4 standard errors of Zoology's sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrrformer.cli import main
from hrrformer.data import load_task
from hrrformer.data.base import IGNORE_INDEX, DataError
from hrrformer.data.inspect import inspect_task
from hrrformer.data.load import load_task_data
from hrrformer.data.mqar import generate_mqar, multiquery_ar, power_law, sample_distinct, successive_sample

FIXTURE = Path(__file__).parent / "fixtures" / "zoology" / "mqar.npz"
#: fixture setting → (V, T, pairs)
SETTINGS = {"v8192_t64_kv4": (8192, 64, 4), "v8192_t256_kv16": (8192, 256, 16)}


def facts(inputs: np.ndarray, labels: np.ndarray, v: int, k: int) -> dict[str, np.ndarray]:
    """Check what every MQAR sequence must be, and return what the distributions are compared on:
    keys and values (n, k), the gap of each pair's query (n, k, in pair order) and the noise tokens."""
    inputs, labels = inputs.astype(np.int64), labels.astype(np.int64)
    n = len(inputs)
    keys, values = inputs[:, 0 : 2 * k : 2], inputs[:, 1 : 2 * k : 2]
    assert ((keys >= 1) & (keys < v // 2)).all() and ((v // 2 <= values) & (values < v)).all()
    assert all(len(set(row)) == k for row in keys) and all(len(set(row)) == k for row in values)
    asked = labels != IGNORE_INDEX
    assert (asked.sum(1) == k).all()  # k queries per sequence
    positions = np.nonzero(asked)[1]
    assert (positions >= 2 * k).all() and ((positions - 2 * k) % 2 == 0).all()  # in the query region, even offsets
    positions = positions.reshape(n, k)
    queried = np.take_along_axis(inputs, positions, 1)  # the keys asked, in position order
    pair = (queried[:, :, None] == keys[:, None, :]).argmax(2)  # which pair each query asks
    assert (np.sort(pair, 1) == np.arange(k)).all()  # each key asked once
    assert (np.take_along_axis(labels, positions, 1) == np.take_along_axis(values, pair, 1)).all()  # its value
    gaps = np.empty((n, k), dtype=np.int64)
    np.put_along_axis(gaps, pair, (positions - 2 * k) // 2, axis=1)
    noise = inputs[:, 2 * k :][~asked[:, 2 * k :]]
    assert ((noise >= 0) & (noise < v)).all()
    return {"keys": keys, "values": values, "gaps": gaps, "noise": noise}


@pytest.fixture(scope="module")
def zoology() -> dict[str, dict[str, np.ndarray]]:
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {name: facts(f[f"{name}/inputs"], f[f"{name}/labels"], v, k) for name, (v, _, k) in SETTINGS.items()}


@pytest.fixture(scope="module")
def ours() -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name, (v, t, k) in SETTINGS.items():
        data = multiquery_ar(8000, vocab_size=v, seq_len=t, num_kv_pairs=k, rng=np.random.default_rng(7))
        out[name] = facts(data.inputs, data.labels, v, k)
    return out


def test_the_fixture_is_zoologys_output():
    with np.load(FIXTURE, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
    assert meta["zoology_repo"] == "HazyResearch/zoology" and len(meta["zoology_commit"]) == 40
    assert meta["settings"]["v8192_t64_kv4"]["num_examples"] == 2000


def _within(a: np.ndarray, b: np.ndarray, sigmas: float = 4.0) -> bool:
    """Whether the means of two samples agree within ``sigmas`` standard errors of their difference."""
    se = np.sqrt(a.var() / a.size + b.var() / b.size)
    return abs(a.mean() - b.mean()) < sigmas * se


@pytest.mark.parametrize("name", SETTINGS)
def test_keys_values_and_noise_are_distributed_as_zoologys(zoology, ours, name):
    v = SETTINGS[name][0]
    for part in ("keys", "values", "noise"):
        assert _within(ours[name][part].astype(float), zoology[name][part].astype(float)), part
    # the noise is uniform on the whole vocabulary: half of it below V/2 (among the keys' ids)
    for sample in (ours[name]["noise"], zoology[name]["noise"]):
        assert abs((sample < v // 2).mean() - 0.5) < 4 * 0.5 / np.sqrt(sample.size)


@pytest.mark.parametrize("name", SETTINGS)
def test_query_gaps_are_distributed_as_zoologys(zoology, ours, name):
    """The histogram of all gaps (a chi-square test of homogeneity, the sparse tail pooled), and the
    mean gap of each pair: successive sampling asks the first pairs earliest, in both."""
    _, t, k = SETTINGS[name]
    space = (t - 2 * k) // 2
    a = np.bincount(ours[name]["gaps"].ravel(), minlength=space).astype(float)
    b = np.bincount(zoology[name]["gaps"].ravel(), minlength=space).astype(float)
    expected_b = (a + b) * b.sum() / (a.sum() + b.sum())
    sparse = np.flatnonzero(expected_b < 5)  # the probabilities decrease with the gap: a tail
    if len(sparse):  # pooled into one bin
        a, b = np.append(a[: sparse[0]], a[sparse[0] :].sum()), np.append(b[: sparse[0]], b[sparse[0] :].sum())
    total = a + b
    chi2 = sum(((x - total * x.sum() / total.sum()) ** 2 / (total * x.sum() / total.sum())).sum() for x in (a, b))
    df = len(total) - 1
    assert chi2 < df + 4 * np.sqrt(2 * df), (chi2, df)
    mine, theirs = ours[name]["gaps"], zoology[name]["gaps"]
    for j in range(k):
        assert _within(mine[:, j].astype(float), theirs[:, j].astype(float)), j
    assert np.diff(mine.mean(0)).min() > 0  # later pairs are asked later on average (8,000 sequences)
    assert mine[:, -1].mean() - mine[:, 0].mean() > 8 * np.sqrt(mine[:, 0].var() / len(mine))


def test_the_first_pairs_gap_follows_the_power_law_exactly():
    """The first draw of a successive sample is a plain draw: P(g) = power_law(S)[g]."""
    k, space = 4, 28
    gaps = successive_sample(np.random.default_rng(0), power_law(space), k, 50_000)
    assert gaps.shape == (50_000, k) and all(len(set(row)) == k for row in gaps[:500])
    p = power_law(space)
    observed = np.bincount(gaps[:, 0], minlength=space) / len(gaps)
    assert np.abs(observed - p).max() < 4 * np.sqrt(p.max() / len(gaps))
    assert p[0] / p[1] == pytest.approx(2**0.99)  # P(g) ∝ (g + 1)^(a − 1), a = 0.01


def test_distinct_samples_are_uniform_ordered_samples():
    draws = sample_distinct(np.random.default_rng(0), 3, 8, 3, 60_000)  # 5 values, ordered triples
    assert ((draws >= 3) & (draws < 8)).all() and all(len(set(row)) == 3 for row in draws[:1000])
    triples = np.unique(draws, axis=0, return_counts=True)[1]
    assert len(triples) == 5 * 4 * 3 and triples.min() > 0.85 * 60_000 / 60 and triples.max() < 1.15 * 60_000 / 60
    with pytest.raises(ValueError, match="distinct"):
        sample_distinct(np.random.default_rng(0), 0, 3, 4, 1)


def test_zoologys_constraints_are_checked():
    rng = np.random.default_rng(0)
    for v, t, k in ((64, 15, 2), (16, 16, 2), (64, 16, 5), (64, 16, 0)):
        with pytest.raises(ValueError, match="MQAR needs"):
            multiquery_ar(1, vocab_size=v, seq_len=t, num_kv_pairs=k, rng=rng)
    plain = multiquery_ar(5, vocab_size=64, seq_len=16, num_kv_pairs=2, rng=rng, random_non_queries=False)
    asked = plain.labels != IGNORE_INDEX
    assert (plain.inputs[:, 4:][~asked[:, 4:]] == 0).all()  # no noise: zeros, as Zoology's


def test_data_command_writes_the_splits(tmp_path, capsys):
    out = tmp_path / "mqar"
    args = ["data", "mqar", "--vocab", "128", "--seq-len", "32", "--kv-pairs", "3", "--train", "40"]
    assert main([*args, "--val", "10", "--test", "12", "--seed", "5", "--out", str(out)]) == 0
    assert "wrote 40/10/12 sequences" in capsys.readouterr().out
    for split, n in (("train", 40), ("val", 10), ("test", 12)):
        with np.load(out / f"{split}.npz", allow_pickle=False) as f:
            assert f["inputs"].shape == f["labels"].shape == (n, 32)
            assert f["inputs"].dtype == f["labels"].dtype == np.int64
            facts(f["inputs"], f["labels"], 128, 3)
            assert json.loads(str(f["meta"]))["vocab_size"] == 128
    # the same seed gives the same files; a split does not depend on the others' sizes
    again = tmp_path / "again"
    generate_mqar(again, train=7, val=10, test=12, vocab_size=128, seq_len=32, kv_pairs=3, seed=5)
    for split in ("val", "test"):
        with np.load(out / f"{split}.npz") as a, np.load(again / f"{split}.npz") as b:
            assert np.array_equal(a["inputs"], b["inputs"]) and np.array_equal(a["labels"], b["labels"])
    assert main(["data", "mqar", "--vocab", "16", "--seq-len", "32", "--out", str(tmp_path / "bad")]) == 1
    assert "MQAR needs" in capsys.readouterr().err


def test_loader_reads_what_is_there(tmp_path):
    folder = tmp_path / "mqar"
    generate_mqar(folder, train=30, val=0, test=6, vocab_size=64, seq_len=16, kv_pairs=2, seed=0)
    data = load_task("mqar", folder)
    assert (data.vocab_size, data.num_classes, data.max_len, data.pad_id) == (64, 64, 16, None)
    assert data.per_position and data.own_splits == ("train", "val", "test")
    tokens, labels = data.test[0]
    assert tokens.shape == labels.shape == (16,) and int((labels != IGNORE_INDEX).sum()) == 2
    report = inspect_task(data)
    assert report["splits"]["test"]["labels"] == {"labelled positions": 12} and report["problems"] == ["val is empty"]
    assert "per position" in report["sample"]
    short = load_task("mqar", folder, max_len=10, limit=4)
    assert short.test[0][0].shape == (10,) and len(short.train) == 4

    (folder / "val.npz").unlink()  # val held out of train by seed
    held = load_task("mqar", folder, seed=3)
    assert (len(held.train), len(held.val)) == (27, 3) and held.own_splits == ("train", "test")
    (folder / "train.npz").unlink()
    only_test = load_task("mqar", folder)  # what `hrrformer eval` needs
    assert len(only_test.train) == len(only_test.val) == 0 and len(only_test.test) == 6

    with np.load(folder / "test.npz") as f:
        inputs, labels = f["inputs"].copy(), f["labels"]
    inputs[2, 5] = 64  # outside the vocabulary the file declares
    np.savez(folder / "test.npz", inputs=inputs, labels=labels, meta=np.array(json.dumps({"vocab_size": 64})))
    with pytest.raises(DataError, match="row 2"):
        load_task("mqar", folder)
    assert load_task("mqar", folder, skip_bad=True).skipped == {"malformed row": 1}
    (folder / "test.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_task("mqar", folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="none of"):
        load_task("mqar", empty)


def test_without_data_the_presets_set_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HRRFORMER_CACHE", str(tmp_path))
    first = load_task_data("mqar", None, preset="demo")
    assert Path(first.path).name == "mqar-v256-t64-kv4-10000-1000-1000-seed0"
    assert (len(first.data.train), first.data.vocab_size, first.data.max_len) == (10_000, 256, 64)
    stamp = (Path(first.path) / "train.npz").stat().st_mtime_ns
    assert load_task_data("mqar", None, preset="demo").path == first.path
    assert (Path(first.path) / "train.npz").stat().st_mtime_ns == stamp  # reused, not remade


def test_train_eval_predict_end_to_end(tmp_path, capsys):
    """A tiny generated set: training reports the accuracy over the queries and per sequence; softmax
    attention with a short convolution learns it far above chance in a few seconds."""
    data = tmp_path / "mqar"
    generate_mqar(data, train=3000, val=200, test=200, vocab_size=64, seq_len=16, kv_pairs=2, seed=0)
    run = tmp_path / "run"
    tiny = ["--dim", "32", "--heads", "1", "--mlp-dim", "64", "--batch-size", "32", "--dropout", "0", "--no-progress"]
    common = ["train", "--task", "mqar", "--data", str(data), *tiny, "--lr", "3e-3", "--lr-decay", "1"]
    assert main([*common, "--attention", "softmax", "--epochs", "3", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert "whole sequences right" in out and summary["test_positions"] == 400 and summary["test_examples"] == 200
    assert summary["test_accuracy"] > 0.5, summary  # chance: 1/64 (1/32 among the values)
    assert 0 <= summary["test_sequence_accuracy"] <= summary["test_accuracy"]
    config = json.loads((run / "config.json").read_text())["model"]
    assert (config["pooling"], config["pos_embedding"], config["pad_id"], config["causal"]) == (
        "none",
        "none",
        None,
        True,
    )

    assert main(["eval", str(run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["positions"] == 400 and report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert report["sequence_accuracy"] == pytest.approx(summary["test_sequence_accuracy"])

    only_test = tmp_path / "only-test"
    only_test.mkdir()
    (only_test / "test.npz").write_bytes((data / "test.npz").read_bytes())
    assert main(["eval", str(run), "--data", str(only_test), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(summary["test_accuracy"])

    assert main(["predict", str(run), "--data", str(data), "--split", "val", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 200 and all(len(r["positions"]) == len(r["predictions"]) == 2 for r in lines)
    assert sum(r["correct"] for r in lines) / 400 > 0.5
    assert main(["predict", str(run), str(data / "test.npz")]) == 1
    assert "give --data" in capsys.readouterr().err

    assert main(["explain", str(run), str(data / "test.npz"), "--out", str(tmp_path / "maps")]) == 1
    assert "labelled per position" in capsys.readouterr().err

    assert main([*common, "--pooling", "mean", "--epochs", "1", "--out", str(tmp_path / "pooled")]) == 1
    assert "needs --pooling none" in capsys.readouterr().err
