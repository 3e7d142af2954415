"""The text task on data of your own: class folders of .txt files, CSV and JSON-lines tables."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import pytest

from hrrformer.cli import main
from hrrformer.data import DataError, load_task, text, text_own
from test_data_loaders import as_bytes, check_common, tokens_of, write_aclimdb

TINY = ["--dim", "8", "--heads", "2", "--layers", "1", "--mlp-dim", "8", "--batch-size", "4", "--no-progress"]


def contents(dataset) -> list[tuple[bytes, int, str]]:
    """(text bytes, label, name) of every example."""
    return [
        (as_bytes(tokens), label, name)
        for tokens, label, name in zip(tokens_of(dataset), dataset.labels, dataset.names)
    ]


def write_csv(path: Path, rows: list[list[str]], header=("text", "label", "split")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8"
    )
    return path


def write_folders(root: Path, counts: dict[str, int]) -> dict[str, tuple[bytes, int]]:
    """``root/<class>/<i>.txt`` texts ``<class> <i> …``; returns name → (bytes, label)."""
    files = {}
    for label, name in enumerate(sorted(counts)):
        for i in range(counts[name]):
            relative = f"{name}/{'deep/' if i == 0 else ''}{i}.txt"
            body = f"{name} {i} – é".encode() + (b"\xff latin-1 \xe9" if i == 1 else b"")
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(body)
            files[relative] = (body, label)
    return files


# --- round trips ----------------------------------------------------------------------------


def test_csv_round_trip_with_its_own_splits(tmp_path):
    rows = [
        ["plain", "pos", "train"],
        ['a "quoted", comma\r\nand a line break', "neg", "TRAIN"],
        ["ünïcödé ✓ 日本", "pos", "validation"],
        ["  spaces kept  ", "neg", "test"],
        ["", "", ""],  # a blank row is skipped
        ["last", "neg", "test"],
    ]
    path = write_csv(tmp_path / "data.csv", rows, header=("TEXT", " Label ", "Split"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a byte-order mark, as spreadsheets write
    data = text.load(path)
    assert (data.name, data.vocab_size, data.num_classes, data.class_names) == ("text", 257, 2, ["neg", "pos"])
    assert data.own_splits == ("train", "val", "test")
    assert sorted(contents(data.train)) == [
        (b'a "quoted", comma\r\nand a line break', 0, "data.csv:3"),
        (b"plain", 1, "data.csv:2"),
    ]
    assert contents(data.val) == [("ünïcödé ✓ 日本".encode(), 1, "data.csv:5")]
    assert sorted(contents(data.test)) == [(b"  spaces kept  ", 0, "data.csv:6"), (b"last", 0, "data.csv:8")]
    check_common(data)
    assert load_task("text", path).train.labels == data.train.labels


def test_csv_without_val_rows_holds_val_out_of_train(tmp_path):
    rows = [[f"text {i}", "ab"[i % 2], "train"] for i in range(20)] + [["t", "a", "test"]]
    data = text.load(write_csv(tmp_path / "d.csv", rows), val_fraction=0.2)
    assert data.own_splits == ("train", "test") and (len(data.train), len(data.val), len(data.test)) == (16, 4, 1)
    assert sorted(data.val.labels) == [0, 0, 1, 1] and not set(data.train.names) & set(data.val.names)
    no_test = text.load(write_csv(tmp_path / "e.csv", rows[:20]), val_fraction=0.2)
    assert no_test.test is None and no_test.own_splits == ("train",)


def test_jsonl_round_trip_integer_and_named_labels(tmp_path):
    rows = [
        {"text": "zero", "label": 0, "split": "train", "id": 7},
        {"text": "two ✓", "label": 2.0, "split": "train"},
        {"text": "one", "label": "1", "split": "test"},
        {"text": "tab\tand \\u escape \u00e9", "label": 0, "split": "val"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", [*rows[:2], "", "   ", *rows[2:]])
    data = text.load(path)
    assert data.class_names is None and data.num_classes == 3 and data.own_splits == ("train", "val", "test")
    assert sorted(contents(data.train)) == [(b"two \xe2\x9c\x93", 2, "d.jsonl:2"), (b"zero", 0, "d.jsonl:1")]
    assert contents(data.test) == [(b"one", 1, "d.jsonl:5")]
    assert contents(data.val) == [("tab\tand \\u escape é".encode(), 0, "d.jsonl:6")]
    named = write_jsonl(tmp_path / "n.jsonl", [{"text": f"t{i}", "label": ["cat", "dog", 3][i % 3]} for i in range(9)])
    data = text.load(named, val_fraction=1 / 3)
    assert data.class_names == ["3", "cat", "dog"] and data.own_splits == () and data.test is None
    assert sorted(data.val.labels) == [0, 1, 2]  # stratified
    check_common(data)


def test_class_folders_round_trip_bytes_as_written(tmp_path):
    files = write_folders(tmp_path / "cf", {"ham": 5, "spam": 5, "eggs": 5})
    (tmp_path / "cf" / "ham" / "notes.md").write_text("not a .txt: ignored")
    (tmp_path / "cf" / "ham" / ".hidden.txt").write_text("hidden: ignored")
    (tmp_path / "cf" / ".git").mkdir()
    (tmp_path / "cf" / "README.txt").write_text("top level: ignored")
    (tmp_path / "cf" / "spam" / "UPPER.TXT").write_text("upper case suffix")
    data = text.load(tmp_path / "cf", val_fraction=0.2, test_fraction=0.2)
    assert data.class_names == ["eggs", "ham", "spam"] and data.own_splits == () and data.test is not None
    seen = [example for split in (data.train, data.val, data.test) for example in contents(split)]
    assert len(seen) == 16 and len({name for _, _, name in seen}) == 16
    for body, label, name in seen:
        assert (body, label) == files.get(name, (b"upper case suffix", 2))  # bytes as written, not decoded
    short = text.load(tmp_path / "cf", max_len=4)
    assert all(len(tokens) <= 4 for tokens in tokens_of(short.train)) and short.max_len == 4
    check_common(data)


def test_held_out_splits_are_disjoint_stratified_and_seeded(tmp_path):
    rows = [[f"example {i}", ["x", "y"][i % 2]] for i in range(40)]
    path = write_csv(tmp_path / "d.csv", rows, header=("text", "label"))

    def splits(**kwargs):
        data = text.load(path, val_fraction=0.25, test_fraction=0.25, **kwargs)
        return [sorted(as_bytes(t) for t in tokens_of(split)) for split in (data.train, data.val, data.test)]

    train, val, test = splits()
    assert (len(train), len(val), len(test)) == (20, 10, 10)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert splits() == [train, val, test] and splits(seed=1) != [train, val, test]
    limited = text.load(path, val_fraction=0.25, test_fraction=0.25, limit=3)
    assert len(limited.train) == 3 and {as_bytes(t) for t in tokens_of(limited.val)} <= set(val)
    data = text.load(path, val_fraction=0.25)
    assert data.test is None and sorted(data.val.labels) == [0] * 5 + [1] * 5


def test_format_detection_order(tmp_path):
    write_aclimdb(tmp_path / "both" / "aclImdb")
    write_folders(tmp_path / "both", {"other": 2})  # a class folder beside an aclImdb tree: IMDB wins
    assert text.load(tmp_path / "both").class_names == ["neg", "pos"]
    upper = write_csv(tmp_path / "UP.CSV", [["a", "b", "train"]])
    assert text.load(upper).own_splits == ("train",)
    (tmp_path / "notes.txt").write_text("text,label\na,b\n")
    with pytest.raises(DataError, match=r"notes\.txt: not a folder or a readable tar archive"):
        text.load(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no reviews in train/ or test/ \(pos, neg\) and no class subfolders"):
        text.load(tmp_path / "empty")
    with pytest.raises(DataError, match=r"gone\.csv: not found \(expected aclImdb_v1\.tar\.gz.*\.csv or \.jsonl"):
        text.load(tmp_path / "gone.csv")


# --- errors name the file and the line ------------------------------------------------------

CSV_ERRORS = [
    ("text,name\na,b\n", r"d\.csv:1: the header must name the columns text,label \(got 'text,name'\)"),
    ("", r"d\.csv:1: the header must name the columns text,label \(got an empty file\)"),
    ("text,label\nok,a\n ,b\n", r"d\.csv:3: empty text"),
    ("text,label,split\nok,a,train\nx,b,dev\n", r"d\.csv:3: unknown split 'dev' \(use train, val or test\)"),
    ("text,label\nok,a\nx,\n", r"d\.csv:3: empty label \(expected a class name or an integer\)"),
    ("text,label\nok,a\nx,b,c\n", r"d\.csv:3: expected 2 columns as the header, got 3"),
    ('text,label\nok,a\n"two\nlines",b,c\n', r"d\.csv:3: expected 2 columns"),  # the row's first line
    (b"text,label\nok,a\nx\xe9,b\n", r"d\.csv:3: not UTF-8 \(invalid continuation byte at byte 2 of the line\)"),
    ('text,label\nok,a\n"x"y,b\n', r"d\.csv:3: not valid CSV \(',' expected after '\"'\)"),
    ('text,label\nok,a\n"unterminated,a\nmore\n', r"d\.csv:3: not valid CSV \(unexpected end of data\)"),
]


@pytest.mark.parametrize(("content", "message"), CSV_ERRORS)
def test_csv_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        text.load(path)


JSONL_ERRORS = [
    ('{"text": "a", "label": 0}\n{"text": "b"}\n', r"d\.jsonl:2: no 'label' field", "malformed row"),
    ('{"label": 0}\n', r"d\.jsonl:1: no 'text' field", "malformed row"),
    ('{"text": "a", "label": 0}\n{"text": " \\n", "label": 1}\n', r"d\.jsonl:2: empty text", "empty document"),
    ('{"text": 5, "label": 0}\n', r"d\.jsonl:1: 'text' is a number, not a string", "malformed row"),
    (
        '{"text": "a", "label": 1.5}\n',
        r"d\.jsonl:1: label 1\.5 is neither a class name nor an integer",
        "malformed row",
    ),
    ('{"text": "a", "label": true}\n', r"d\.jsonl:1: label true is neither", "malformed row"),
    ('{"text": "a", "label": null}\n', r"d\.jsonl:1: label null is neither", "malformed row"),
    ('{"text": "a", "label": -1}\n', r"d\.jsonl:1: label -1 is neither", "malformed row"),
    ('{"text": "a", "label": [1]}\n', r"d\.jsonl:1: label \[1\] is neither", "malformed row"),
    ('{"text": "a", "label": ""}\n', r"d\.jsonl:1: empty label", "malformed row"),
    ('{"text": "a", "label": 0, "split": "dev"}\n', r"d\.jsonl:1: unknown split 'dev'", "malformed row"),
    (
        '{"text": "a", "label": 0, "split": "train"}\n{"text": "b", "label": 0}\n',
        r"d\.jsonl:2: no 'split' field, but the first example has one",
        "malformed row",
    ),
    (
        '{"text": "a", "label": 0}\n{"text": "b", "label": 0, "split": "test"}\n',
        r"d\.jsonl:2: a 'split' field, but the first example has none",
        "malformed row",
    ),
    (
        '{"text": "a", "label": 0}\n{"text": "b", "label": 0\n',
        r"d\.jsonl:2: not JSON \(Expecting ',' delimiter at column 25\)",
        "malformed row",
    ),
    ('["a", 0]\n', r"d\.jsonl:1: expected a JSON object with text and label, got an array", "malformed row"),
    (
        '{"text": "\\ud800", "label": 0}\n',
        r"d\.jsonl:1: text is not valid Unicode \(a lone surrogate\)",
        "malformed row",
    ),
]


@pytest.mark.parametrize(("content", "message", "reason"), JSONL_ERRORS)
def test_jsonl_errors_name_file_and_line_or_are_skipped(tmp_path, content, message, reason):
    path = tmp_path / "d.jsonl"
    path.write_text(content + '{"text": "good", "label": 0}\n' * ("split" not in content))
    with pytest.raises(DataError, match=message + r".* \(pass skip_bad=True to skip such inputs\)"):
        text.load(path)
    if "split" not in content:
        assert text.load(path, skip_bad=True, val_fraction=0.0).skipped == {reason: 1}


def test_jsonl_not_utf8_is_fatal_and_csv_bad_rows_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a", "label": 0}\n{"text": "\xe9t\xe9", "label": 0}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8 \(invalid continuation byte at byte 11 of the line\)"):
        text.load(path, skip_bad=True)
    rows = "text,label,split\nok,a,train\n,a,train\nx,,train\ny,a,dev\nz,a\nok2,b,train\n"
    (tmp_path / "d.csv").write_text(rows)
    data = text.load(tmp_path / "d.csv", skip_bad=True, val_fraction=0.0)
    assert data.skipped == {"empty document": 1, "malformed row": 3} and len(data.train) == 2


def test_class_folder_errors_name_the_folder_or_file(tmp_path):
    write_folders(tmp_path / "cf", {"a": 2, "b": 2})
    (tmp_path / "cf" / "c").mkdir()
    (tmp_path / "cf" / "c" / "notes.md").write_text("no .txt here")
    with pytest.raises(DataError, match=r"cf/c: no \.txt files in this class folder"):
        text.load(tmp_path / "cf")
    (tmp_path / "cf" / "c" / "0.txt").write_text(" \n\t")
    with pytest.raises(DataError, match=r"cf/c/0\.txt: empty \(pass skip_bad=True"):
        text.load(tmp_path / "cf")
    data = text.load(tmp_path / "cf", skip_bad=True)
    assert data.skipped == {"empty document": 1} and data.class_names == ["a", "b", "c"]


def test_long_lines_and_texts(tmp_path, monkeypatch):
    long_text = "é" * 200_000  # 400,000 bytes: more than the csv module's default field limit
    path = write_csv(tmp_path / "long.csv", [[long_text, "a", "train"], ["short", "b", "train"]])
    limit = csv.field_size_limit()
    data = text.load(path, max_len=5, val_fraction=0.0)
    assert csv.field_size_limit() == limit
    assert sorted(as_bytes(t) for t in tokens_of(data.train)) == [b"short", "é".encode() * 2 + b"\xc3"]
    monkeypatch.setattr(text_own, "MAX_LINE_BYTES", 1000)
    with pytest.raises(DataError, match=r"long\.csv:2: line longer than 1,000 bytes"):
        text.load(path)
    jsonl = write_jsonl(tmp_path / "long.jsonl", [{"text": long_text, "label": 0}, {"text": "ok", "label": 1}])
    with pytest.raises(DataError, match=r"long\.jsonl:1: line longer than 1,000 bytes"):
        text.load(jsonl)
    assert text.load(jsonl, skip_bad=True, val_fraction=0.0).train.labels == [1]


def test_large_tables_are_read_row_by_row(tmp_path):
    body = "word " * 1000  # 5,000 bytes a row, 10 MB a file; 100 bytes of each kept
    path = write_csv(tmp_path / "big.csv", [[body, i % 2, "train"] for i in range(2000)])
    jsonl = write_jsonl(tmp_path / "big.jsonl", [{"text": body, "label": i % 2} for i in range(2000)])
    for file in (path, jsonl):
        tracemalloc.start()
        data = text.load(file, max_len=100)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(data.train) + len(data.val) == 2000 and peak < 3 * 2**20, (file, peak)


# --- the commands ---------------------------------------------------------------------------


def test_train_eval_predict_and_inspect_a_csv(tmp_path, capsys):
    rows = [[("good " if i % 2 else "bad ") * (i % 7 + 1), ["neg", "pos"][i % 2], "train"] for i in range(24)]
    rows += [["good good", "pos", "test"], ["bad bad", "neg", "test"], ["good", "pos", "val"], ["bad", "neg", "val"]]
    data, run = write_csv(tmp_path / "reviews.csv", rows), tmp_path / "run"
    args = ["train", "--task", "text", "--data", str(data), "--out", str(run), "--epochs", "1", "--max-len", "64"]
    assert main([*args, *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["neg", "pos"]
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0  # the run's own data: its test split
    report = json.loads(capsys.readouterr().out)
    assert (report["split"], report["examples"], report["class_names"]) == ("test", 2, ["neg", "pos"])
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": "good good good", "label": "pos"}])
    assert main(["eval", str(run), "--data", str(other)]) == 0  # no split structure: all of it
    assert json.loads(capsys.readouterr().out)["examples"] == 1
    assert main(["predict", str(run), "--data", str(data), "--split", "val", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["file"] for line in lines) == ["reviews.csv:28", "reviews.csv:29"]
    assert {line["label"] for line in lines} == {"neg", "pos"}
    assert main(["data", "inspect", str(data), "--task", "text", "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["class_names"] == ["neg", "pos"]
