"""Evaluating a trained run on other labelled data: every layout, whole or by split, and the errors."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrrformer.cli import main
from hrrformer.data import DataError, binaries, image, text
from hrrformer.data.selection import default_split, map_to_classes, select_split
from test_data_loaders import tar_folder, write_aclimdb, write_cifar, write_image_folder
from test_train import TINY

# --- fixtures -------------------------------------------------------------------------------


def write_classes(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """A class-folder tree ``root/<class>/<i>.bin``: benign bytes < 128, every other class's ≥ 128."""
    rng = random.Random(seed)
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            body = bytes(rng.randrange(128) + (0 if label == "benign" else 128) for _ in range(rng.randint(20, 200)))
            (root / label / f"{i}.bin").write_bytes(body)
    return root


def write_test_only(root: Path, **kwargs) -> Path:
    """An aclImdb tree with ``test/`` and no ``train/``."""
    write_aclimdb(root, test=True, **kwargs)
    shutil.rmtree(root / "train")
    return root


def train_run(task: str, data: Path, run: Path, *extra: str) -> Path:
    args = ["train", "--task", task, "--data", str(data), "--out", str(run), "--epochs", "1", *TINY, *extra]
    assert main([*args, "--batch-size", "8"]) == 0
    return run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    return train_run("text", write_aclimdb(root / "aclImdb", test=True), root / "run", "--max-len", "64")


@pytest.fixture(scope="module")
def binaries_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("binaries")
    data = write_classes(root / "train", {"benign": 12, "malicious": 12})
    return train_run("binaries", data, root / "run", "--max-len", "128")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("image")
    write_image_folder(root / "images", per_class=5)
    return train_run("image", root / "images", root / "run")


def evaluate(capsys, run: Path, *args: str) -> dict:
    """``hrrformer eval`` that must succeed; its report (stdout, the same as the file it wrote)."""
    assert main(["eval", str(run), *args]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    written = Path(captured.err.strip().splitlines()[-1].removeprefix("wrote "))
    assert json.loads(written.read_text()) == report
    summary = (
        f"{report['data']} [{report['split']}]: {report['examples']:,} examples, accuracy {report['accuracy']:.4f}"
    )
    assert summary in captured.err
    for name, row in zip(report["class_names"], report["confusion_matrix"]):  # the matrix, rows named
        assert any(line.split() == [name, *map(str, row)] for line in captured.err.splitlines())
    return report


def eval_error(capsys, run: Path, *args: str) -> str:
    assert main(["eval", str(run), *args]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.strip()


def check_report(report: dict, examples: int, class_names: list[str]) -> None:
    assert report["examples"] == examples and report["class_names"] == class_names
    assert sum(map(sum, report["confusion_matrix"])) == examples
    assert set(report["per_class"]) == set(class_names)
    assert sum(s["support"] for s in report["per_class"].values()) == examples
    assert report["skipped_inputs"] == 0 and 0 <= report["accuracy"] <= 1
    hits = sum(report["confusion_matrix"][i][i] for i in range(len(class_names)))
    assert report["accuracy"] == pytest.approx(hits / examples)


# --- text: aclImdb trees with one split only ------------------------------------------------


def test_text_eval_on_an_archive_with_only_test(text_run, tmp_path, capsys):
    archive = tar_folder(write_test_only(tmp_path / "aclImdb"), tmp_path / "aclImdb_test_only.tar.gz")
    for args in ([], ["--split", "test"], ["--split", "all"]):
        report = evaluate(capsys, text_run, "--data", str(archive), *args)
        check_report(report, 40, ["neg", "pos"])
        assert report["split"] == (args[1] if args else "test") and report["data"] == str(archive)
        assert [report["per_class"][c]["support"] for c in ("neg", "pos")] == [20, 20]
        assert 0 <= report["roc_auc"] <= 1 and report["positive_class"] == "pos"
        assert set(report["detection_rate_at_fpr"]) == {"0.01", "0.001"}
    assert (text_run / "eval-aclImdb_test_only.tar.gz-test.json").exists()
    error = eval_error(capsys, text_run, "--data", str(archive), "--split", "train")
    assert error == (
        f"hrrformer eval: {archive}: has no train split; it has test (40 examples); all: 40 examples "
        "(choose the split test or all)"
    )


def test_text_eval_on_a_tree_with_only_train(text_run, tmp_path, capsys):
    folder = write_aclimdb(tmp_path / "aclImdb", movies=5)
    report = evaluate(capsys, text_run, "--data", str(folder), "--split", "all", "--out", str(tmp_path / "r.json"))
    check_report(report, 20, ["neg", "pos"])
    assert json.loads((tmp_path / "r.json").read_text()) == report
    error = eval_error(capsys, text_run, "--data", str(folder))  # a split structure, but no test split
    assert "has no test split; it has train (18 examples), val (2 examples, held out by seed)" in error
    assert "(choose the split train or val or all)" in error


def test_text_eval_on_the_runs_own_data_keeps_its_splits(text_run, capsys):
    report = evaluate(capsys, text_run)
    summary = json.loads((text_run / "summary.json").read_text())
    assert report["split"] == "test" and report["examples"] == summary["test_examples"] == 40
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert evaluate(capsys, text_run, "--split", "val")["examples"] == 4


def test_text_loader_reads_a_test_only_tree(tmp_path):
    data = text.load(write_test_only(tmp_path / "aclImdb"))
    assert (len(data.train), len(data.val), len(data.test)) == (0, 0, 40) and data.own_splits == ("test",)
    assert all(
        name.startswith(f"test/{['neg', 'pos'][label]}/") for name, label in zip(data.test.names, data.test.labels)
    )
    assert "test/neg/0_2.txt" in data.test.names
    assert text.load(write_aclimdb(tmp_path / "full", test=True)).own_splits == ("train", "test")


# --- binaries: class folders and manifests ---------------------------------------------------


def test_binaries_eval_on_a_separate_class_folder(binaries_run, tmp_path, capsys):
    folder = write_classes(tmp_path / "test_folder", {"benign": 6, "malicious": 4}, seed=1)
    report = evaluate(capsys, binaries_run, "--data", str(folder))
    check_report(report, 10, ["benign", "malicious"])
    assert report["split"] == "all" and report["confusion_matrix"][0][0] + report["confusion_matrix"][0][1] == 6
    assert report["positive_class"] == "malicious" and 0 <= report["roc_auc"] <= 1
    for rate in report["detection_rate_at_fpr"].values():
        assert set(rate) == {"detection_rate", "threshold", "false_positive_rate"}
        assert rate["false_positive_rate"] == 0.0  # 6 negatives: none may score above the threshold
    assert evaluate(capsys, binaries_run, "--data", str(folder), "--split", "all") == report
    error = eval_error(capsys, binaries_run, "--data", str(folder), "--split", "test")
    assert error == (
        f"hrrformer eval: {folder}: has no test split; it has no split structure of its own; "
        "train (9 examples, held out by seed), val (1 example, held out by seed); all: 10 examples "
        "(choose the split train or val or all)"
    )


def test_binaries_subset_of_classes_maps_by_name_and_unknown_class_is_named(binaries_run, tmp_path, capsys):
    only = write_classes(tmp_path / "only_malicious", {"malicious": 5})
    report = evaluate(capsys, binaries_run, "--data", str(only))
    assert report["class_names"] == ["benign", "malicious"]  # the run's classes, not the folder's
    assert report["confusion_matrix"][0] == [0, 0] and sum(report["confusion_matrix"][1]) == 5
    assert report["per_class"]["benign"]["support"] == 0 and report["roc_auc"] is None
    assert report["detection_rate_at_fpr"] == {"0.01": None, "0.001": None}
    other = write_classes(tmp_path / "other", {"benign": 2, "trojan": 2})
    error = eval_error(capsys, binaries_run, "--data", str(other))
    assert error == f"hrrformer eval: {other}: class 'trojan' is not one of the run's classes (benign, malicious)"


def test_binaries_csv_manifests_with_and_without_split_column(binaries_run, tmp_path, capsys):
    folder = write_classes(tmp_path / "files", {"benign": 3, "malicious": 3})
    rows = [f"{c}/{i}.bin,{c}" for c in ("benign", "malicious") for i in range(3)]
    plain = tmp_path / "files" / "plain.csv"
    plain.write_text("path,label\n" + "\n".join(rows) + "\n")
    report = evaluate(capsys, binaries_run, "--data", str(plain))
    check_report(report, 6, ["benign", "malicious"])
    assert report["split"] == "all"
    split = folder / "split.csv"
    split.write_text(
        "path,label,split\n" + "\n".join(f"{r},{'test' if i % 2 else 'train'}" for i, r in enumerate(rows))
    )
    report = evaluate(capsys, binaries_run, "--data", str(split))  # a test split: the default
    assert report["split"] == "test" and report["examples"] == 3
    assert evaluate(capsys, binaries_run, "--data", str(split), "--split", "all")["examples"] == 6
    error = eval_error(capsys, binaries_run, "--data", str(split), "--split", "val")
    assert "has no val split; it has train (3 examples), test (3 examples); all: 6 examples" in error


def test_binaries_skipped_inputs_are_counted(binaries_run, tmp_path, capsys):
    folder = write_classes(tmp_path / "data", {"benign": 2, "malicious": 2})
    (folder / "benign" / "empty.bin").write_bytes(b"")
    assert "empty.bin: zero-length file" in eval_error(capsys, binaries_run, "--data", str(folder))
    report = evaluate(capsys, binaries_run, "--data", str(folder), "--skip-bad")
    assert report["examples"] == 4 and report["skipped_inputs"] == 1 and report["skipped"] == {"empty file": 1}


def test_predict_data_gives_every_example_with_its_true_class(binaries_run, tmp_path, capsys):
    folder = write_classes(tmp_path / "data", {"benign": 2, "malicious": 3})
    assert main(["predict", str(binaries_run), "--data", str(folder), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = {str(folder / c / f"{i}.bin"): c for c, n in (("benign", 2), ("malicious", 3)) for i in range(n)}
    assert {line["file"]: line["label"] for line in lines} == expected
    assert all(line["prediction"] == max(line["probabilities"], key=line["probabilities"].get) for line in lines)
    assert main(["predict", str(binaries_run), "--data", str(folder), "--split", "test"]) == 1
    assert "has no test split" in capsys.readouterr().err


# --- image folders --------------------------------------------------------------------------


def test_image_eval_on_a_folder_with_only_test_and_some_classes(image_run, tmp_path, capsys):
    write_image_folder(tmp_path / "images", per_class=2, classes=("cat", "ship"))
    shutil.rmtree(tmp_path / "images" / "train")
    for source in (tmp_path / "images", tar_folder(tmp_path / "images", tmp_path / "images.tar.gz")):
        report = evaluate(capsys, image_run, "--data", str(source))
        check_report(report, 4, ["cat", "dog", "ship"])
        assert report["split"] == "test" and "roc_auc" not in report
        assert [sum(row) for row in report["confusion_matrix"]] == [2, 0, 2]  # ship is the run's class 2
    error = eval_error(capsys, image_run, "--data", str(tmp_path / "images"), "--split", "val")
    assert "has no val split; it has test (4 examples); all: 4 examples (choose the split test or all)" in error


def test_image_loaders_read_test_only_data(tmp_path):
    write_image_folder(tmp_path / "images", per_class=2, classes=("cat", "ship"))
    shutil.rmtree(tmp_path / "images" / "train")
    data = image.load(tmp_path / "images")
    assert data.class_names == ["cat", "ship"] and data.own_splits == ("test",)
    assert (len(data.train), len(data.val), len(data.test)) == (0, 0, 4)
    write_cifar(tmp_path / "cifar")
    for k in range(1, 6):
        (tmp_path / "cifar" / f"data_batch_{k}").unlink()
    data = image.load(tmp_path / "cifar")
    assert (len(data.train), len(data.test)) == (0, 8) and data.own_splits == ("test",)


# --- explain --average with the same rules --------------------------------------------------


def test_explain_average_on_a_test_only_archive(text_run, tmp_path, capsys):
    archive = tar_folder(write_test_only(tmp_path / "aclImdb"), tmp_path / "test_only.tar.gz")
    out = tmp_path / "maps"
    assert main(["explain", str(text_run), "--average", "2", "--data", str(archive), "--out", str(out)]) == 0
    averages = json.loads((out / "explain.json").read_text())["averages"]
    assert [(a["average"], a["split"], a["examples"]) for a in averages] == [("neg", "test", 2), ("pos", "test", 2)]
    capsys.readouterr()
    args = ["explain", str(text_run), "--average", "2", "--data", str(archive), "--split", "train", "--out", str(out)]
    assert main(args) == 1
    assert "has no train split; it has test (40 examples)" in capsys.readouterr().err


# --- selection without a model --------------------------------------------------------------


def test_select_all_joins_every_split_and_limits_by_seed(tmp_path):
    data = text.load(write_aclimdb(tmp_path / "aclImdb", test=True))
    everything = select_split(data, "all", path="x")
    assert len(everything) == len(data.train) + len(data.val) + len(data.test) == 80
    assert sorted(everything.names) == sorted(data.train.names + data.val.names + data.test.names)
    assert list(everything.sequences.lengths()) == [len(everything[i][0]) for i in range(80)]
    picked = select_split(data, "all", path="x", limit=7, seed=3)
    assert len(picked) == 7 and set(picked.names) <= set(everything.names)
    assert picked.names == select_split(data, "all", path="x", limit=7, seed=3).names
    assert default_split(data, own_data=False, own_default="val") == "test"
    assert default_split(data, own_data=True, own_default="val") == "val"
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        select_split(data, "dev", path="x")


def test_data_without_split_structure_defaults_to_all_even_with_a_seeded_test_split(tmp_path):
    data = binaries.load(write_classes(tmp_path / "bin", {"benign": 5, "malicious": 5}), test_fraction=0.2)
    assert data.own_splits == () and len(data.test) == 2
    assert default_split(data, own_data=False, own_default="test") == "all"
    assert default_split(data, own_data=True, own_default="test") == "test"


def test_map_to_classes_by_name_and_by_index(tmp_path):
    data = text.load(write_aclimdb(tmp_path / "aclImdb"))
    mapped = map_to_classes(data.train, ["neg", "pos"], ["pos", "neg", "other"], 3, path="p")
    assert mapped.labels == [1 - label for label in data.train.labels]
    assert np.array_equal(mapped[0][0], data.train[0][0])
    with pytest.raises(DataError, match=r"^p: class 'neg' is not one of the run's classes \(pos, other\)$"):
        map_to_classes(data.train, ["neg", "pos"], ["pos", "other"], 2, path="p")
    assert map_to_classes(data.train, None, None, 2, path="p") is data.train
    with pytest.raises(DataError, match=r"^p: label 1 is not a class of the run \(classes 0 … 0\)$"):
        map_to_classes(data.train, None, None, 1, path="p")
