"""Loaders of the official file formats, on small fixtures written here in each format."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrrformer.cli import main
from hrrformer.data import (
    TASKS,
    DataError,
    TaskData,
    binaries,
    collate,
    image,
    imdb_pairs,
    listops,
    load_task,
    pathfinder,
    retrieval,
    text,
)
from hrrformer.data.common import Packed, split_indices
from hrrformer.data.files import decode_image, iter_tree, read_prefix
from hrrformer.data.inspect import format_report, inspect_task
from hrrformer.data.optional import MissingExtra, pyplot

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --- helpers --------------------------------------------------------------------------------


def tar_folder(folder: Path, archive: Path, extra: list[tarfile.TarInfo] | None = None) -> Path:
    """``folder`` as a .tar.gz holding ``folder.name/…``, plus ``extra`` members (no content)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return archive


def member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def tokens_of(dataset) -> list[list[int]]:
    return [dataset[i][0].tolist() for i in range(len(dataset))]


def as_bytes(tokens) -> bytes:
    return bytes(t - 1 for t in tokens)


def check_common(data: TaskData) -> None:
    """Token ranges, lengths, labels, and that the collate accepts a batch of every split."""
    for split in (data.train, data.val, data.test):
        if split is None or not len(split):
            continue
        for i in range(len(split)):
            docs, label = split[i]
            for doc in docs if data.pair else (docs,):
                assert doc.dtype == torch.long and doc.ndim == 1
                assert 1 <= len(doc) <= data.max_len
                assert int(doc.min()) >= 1 and int(doc.max()) < data.vocab_size
            assert 0 <= label < data.num_classes
        batch = collate([split[i] for i in range(min(3, len(split)))])
        assert batch["labels"].shape == (min(3, len(split)),)


# --- ListOps --------------------------------------------------------------------------------

LISTOPS_ROWS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9, [12, 3, 10, 15]),
    ("( ( ( ( [MIN 4 ) ( ( [SM 1 ) 2 ) ) ] ) ] )", 3, [11, 5, 14, 2, 3, 15, 15]),
    ("( ( [MED 0 ) ] )", 0, [13, 1, 15]),
]


def write_listops(folder: Path, rows=LISTOPS_ROWS, header: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file in listops.FILES.values():
        lines = ["Source\tTarget"] if header else []
        lines += [f"{source}\t{label}" for source, label, _ in rows]
        (folder / file).write_text("\n".join(lines) + "\n")
    return folder


def test_listops_round_trip(tmp_path):
    data = load_task("listops", write_listops(tmp_path / "lo"))
    assert (data.vocab_size, data.num_classes, data.max_len) == (16, 10, 2000)
    for split in (data.train, data.val, data.test):
        assert tokens_of(split) == [ids for _, _, ids in LISTOPS_ROWS]
        assert split.labels == [label for _, label, _ in LISTOPS_ROWS]
    assert listops.decode(data.train[0][0]) == "[MAX 2 9 X"
    check_common(data)


def test_listops_truncates_limits_and_reads_crlf(tmp_path):
    folder = write_listops(tmp_path / "lo")
    for file in listops.FILES.values():
        (folder / file).write_bytes((folder / file).read_bytes().replace(b"\n", b"\r\n"))
    data = listops.load(folder, max_len=2, limit=2)
    assert tokens_of(data.train) == [[12, 3], [11, 5]]


def test_listops_fast_and_plain_tokenizers_agree():
    rng = np.random.default_rng(0)
    words = [t for t in listops.VOCAB[1:] if t != "X"] + ["]", "(", ")"]
    for _ in range(50):
        source = " ".join(rng.choice(words, 40)).encode()
        plain = source.replace(b"(", b"").replace(b")", b"").replace(b"]", b"X").split()
        assert listops.decode(listops.tokenize(source)).split() == [t.decode() for t in plain]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("( [MAX 2 ] )\t3\textra", "expected 2 tab-separated columns, got 3"),
        ("( [MAX 2 ] )\tseven", "label 'seven' is not a number"),
        ("( [MAX 2 ] )\t3.5", "is not an integer"),
        ("( [MAX 2 ] )\t10", "is not an integer in [0, 10)"),
        ("( [MAX 12 ] )\t3", "unknown ListOps token '12'"),
        ("( [MAX \x01 ] )\t3", "unknown ListOps token"),
        ("( [MAXX 2 ] )\t3", "unknown ListOps token '[MAXX'"),
    ],
)
def test_listops_bad_rows_name_file_and_line(tmp_path, row, message):
    folder = write_listops(tmp_path / "lo")
    with open(folder / "basic_val.tsv", "a") as f:
        f.write(row + "\n")
    with pytest.raises(DataError, match=r"basic_val\.tsv:5: ") as error:
        listops.load(folder)
    assert message in str(error.value)
    data = listops.load(folder, skip_bad=True)
    assert data.skipped == {"malformed row": 1} and len(data.val) == 3


def test_listops_empty_source_and_missing_split(tmp_path):
    folder = write_listops(tmp_path / "lo")
    with open(folder / "basic_train.tsv", "a") as f:
        f.write("( )\t3\n")
    with pytest.raises(DataError, match=r"basic_train\.tsv:5: empty Source"):
        listops.load(folder)
    assert listops.load(folder, skip_bad=True).skipped == {"empty document": 1}
    (folder / "basic_test.tsv").unlink()
    with pytest.raises(DataError, match=r"basic_test\.tsv: not found \(expected LRA's ListOps test split\)"):
        listops.load(folder)


# --- IMDB (text) and IMDB pairs --------------------------------------------------------------


def write_aclimdb(root: Path, movies: int = 10, per_movie: int = 4, test: bool = False) -> Path:
    """An aclImdb tree: reviews ``movie <m> review <r> <pol>`` with ids per polarity and URL lists."""
    for split in ("train", "test") if test else ("train",):
        urls = {"pos": [], "neg": []}
        for m in range(movies):
            for r in range(per_movie):
                polarity = "pos" if (m + r) % 2 else "neg"
                review_id = len(urls[polarity])
                folder = root / split / polarity
                folder.mkdir(parents=True, exist_ok=True)
                content = f"{split} movie {m} review {r} {polarity} – é"
                (folder / f"{review_id}_{7 if polarity == 'pos' else 2}.txt").write_text(content, encoding="utf-8")
                urls[polarity].append(f"http://www.imdb.com/title/tt{split}{m:04d}/usercomments")
        for polarity, lines in urls.items():
            (root / split / f"urls_{polarity}.txt").write_text("\n".join(lines) + "\n")
    (root / "README").write_text("fixture")
    return root


def test_text_round_trip_folder_and_tar_give_the_same_data(tmp_path):
    folder = write_aclimdb(tmp_path / "aclImdb", test=True)
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("unlabelled, ignored")
    evil = [
        member("/abs/train/pos/99_9.txt", size=3),
        member("aclImdb/../train/pos/98_9.txt", size=3),
        member("aclImdb/train/pos/97_9.txt", tarfile.SYMTYPE, link="/etc/passwd"),
        member("aclImdb/train/pos/._96_9.txt", size=3),
    ]
    archive = tar_folder(folder, tmp_path / "aclImdb_v1.tar.gz", extra=evil)
    from_folder, from_tar = text.load(folder), text.load(archive)
    for data in (from_folder, from_tar, text.load(tmp_path)):
        assert (data.vocab_size, data.num_classes, data.class_names) == (257, 2, ["neg", "pos"])
        assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 40)
    assert tokens_of(from_folder.train) == tokens_of(from_tar.train)
    assert from_folder.train.labels == from_tar.train.labels
    for i in range(len(from_tar.train)):
        tokens, label = from_tar.train[i]
        review = as_bytes(tokens.tolist()).decode("utf-8")
        assert review.startswith("train movie") and review.split()[5] == ["neg", "pos"][label]
    check_common(from_tar)


def test_text_train_only_holds_out_a_stratified_disjoint_val(tmp_path):
    data = text.load(write_aclimdb(tmp_path / "aclImdb"), val_fraction=0.25)
    assert data.test is None
    train, val = {as_bytes(t) for t in tokens_of(data.train)}, {as_bytes(t) for t in tokens_of(data.val)}
    assert len(train) == 30 and len(val) == 10 and not train & val
    assert sorted(data.val.labels) == [0] * 5 + [1] * 5
    again = text.load(tmp_path / "aclImdb", val_fraction=0.25)
    assert tokens_of(again.val) == tokens_of(data.val)
    other_seed = text.load(tmp_path / "aclImdb", val_fraction=0.25, seed=1)
    assert {as_bytes(t) for t in tokens_of(other_seed.val)} != val
    limited = text.load(tmp_path / "aclImdb", val_fraction=0.25, limit=3)
    assert len(limited.train) == 3 and {as_bytes(t) for t in tokens_of(limited.val)} <= val


def test_text_truncates_bytes(tmp_path):
    data = text.load(write_aclimdb(tmp_path / "aclImdb"), max_len=5)
    assert data.max_len == 5 and all(len(t) == 5 for t in tokens_of(data.train))
    assert as_bytes(data.train[0][0].tolist()) == b"train"


def test_text_empty_review_missing_path_and_corrupt_archive(tmp_path):
    folder = write_aclimdb(tmp_path / "aclImdb")
    (folder / "train" / "pos" / "500_8.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"train/pos/500_8\.txt is empty"):
        text.load(folder)
    assert text.load(folder, skip_bad=True).skipped == {"empty document": 1}
    with pytest.raises(DataError, match=r"nowhere\.tar\.gz: not found \(expected aclImdb_v1\.tar\.gz"):
        text.load(tmp_path / "nowhere.tar.gz")
    archive = tar_folder(folder, tmp_path / "imdb.tar.gz")
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:200])  # inside the first members
    with pytest.raises(DataError, match=r"cut\.tar\.gz: not a folder or a readable tar archive"):
        text.load(tmp_path / "cut.tar.gz")
    (tmp_path / "noise.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match=r"noise\.tar: not a folder or a readable tar archive"):
        text.load(tmp_path / "noise.tar")


def test_text_refuses_two_trees_and_empty_ones(tmp_path):
    write_aclimdb(tmp_path / "both" / "a")
    write_aclimdb(tmp_path / "both" / "b")
    with pytest.raises(DataError, match="several aclImdb trees"):
        text.load(tmp_path / "both")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no reviews in train/ or test/ \(pos, neg\)"):
        text.load(tmp_path / "empty")


def movie_of(tokens) -> str:
    words = as_bytes(tokens.tolist()).decode("utf-8").split()
    return f"{words[0]}-{words[2]}"


def test_imdb_pairs_are_balanced_and_split_by_movie(tmp_path):
    data = imdb_pairs.load(write_aclimdb(tmp_path / "aclImdb", movies=20, per_movie=3, test=True))
    assert data.pair and data.num_classes == 2 and data.test is not None
    movies, reviews = {}, {}
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        assert len(split) > 0 and sum(split.labels) * 2 == len(split)
        movies[name], reviews[name] = set(), set()
        for i in range(len(split)):
            (a, b), label = split[i]
            assert (movie_of(a) == movie_of(b)) == bool(label) and not torch.equal(a, b)
            movies[name] |= {movie_of(a), movie_of(b)}
            reviews[name] |= {as_bytes(a.tolist()), as_bytes(b.tolist())}
    assert len(movies["train"]) == 32 and len(movies["val"]) == len(movies["test"]) == 4
    for x, y in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not movies[x] & movies[y] and not reviews[x] & reviews[y]
    assert len(data.train) == 2 * 32 * 3  # pairs_per_review × reviews of train movies
    check_common(data)
    again = imdb_pairs.load(tmp_path / "aclImdb")
    assert [[t.tolist() for t in again.train[i][0]] for i in range(9)] == [
        [t.tolist() for t in data.train[i][0]] for i in range(9)
    ]
    limited = imdb_pairs.load(tmp_path / "aclImdb", limit=7, pairs_per_review=1)
    assert len(limited.train) == 7 and sum(limited.train.labels) == 3


def test_sample_pairs_distinct_balanced_and_correct():
    movie = np.repeat(np.arange(50), 10)[np.random.default_rng(1).permutation(500)]
    a, b, labels = imdb_pairs.sample_pairs(movie, 300, np.random.default_rng(0))
    assert len(a) == 300 and labels.sum() == 150
    assert np.array_equal(movie[a] == movie[b], labels.astype(bool)) and not (a == b).any()
    assert len({(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}) == 300
    a, b, labels = imdb_pairs.sample_pairs(np.array([0, 0, 1]), 6, np.random.default_rng(0))
    assert labels.sum() == 3 and set(zip(a[labels == 1].tolist(), b[labels == 1].tolist())) <= {(0, 1), (1, 0)}


def test_imdb_pairs_needs_urls_and_named_files(tmp_path):
    folder = write_aclimdb(tmp_path / "aclImdb", movies=20)
    (folder / "train" / "pos" / "notanid.txt").write_text("review without id")
    with pytest.raises(DataError, match=r"notanid\.txt is not named <id>_<rating>\.txt"):
        imdb_pairs.load(folder)
    assert imdb_pairs.load(folder, skip_bad=True).skipped == {"bad file name": 1}
    (folder / "train" / "pos" / "notanid.txt").unlink()
    (folder / "train" / "pos" / "900_9.txt").write_text("review beyond the URL list")
    with pytest.raises(DataError, match=r"no URL for aclImdb/train/pos/900_9\.txt on line 900"):
        imdb_pairs.load(tmp_path)
    (folder / "train" / "urls_pos.txt").unlink()
    with pytest.raises(DataError, match=r"missing train/urls_pos\.txt"):
        imdb_pairs.load(folder)


def test_imdb_pairs_with_too_few_movies_says_so(tmp_path):
    with pytest.raises(DataError, match=r"val split .* too few movies"):
        imdb_pairs.load(write_aclimdb(tmp_path / "aclImdb", movies=3, per_movie=2), val_fraction=0.34)


# --- AAN retrieval --------------------------------------------------------------------------


def write_aan(folder: Path, rows_per_split: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, file in retrieval.FILES.items():
        lines = []
        for i in range(rows_per_split):
            label = "1.0" if i % 2 else "0"
            lines.append(f'{label}\tdoc{i}\tdoc{i + 1}\t"quoted" text of doc{i}\ttext of doc{i + 1} in {split}')
        (folder / file).write_text("\n".join(lines) + "\n")
    return folder


def test_retrieval_round_trip(tmp_path):
    data = load_task("retrieval", write_aan(tmp_path / "aan"))
    assert data.pair and (data.vocab_size, data.num_classes, data.max_len) == (257, 2, 4000)
    assert data.train.labels == [0, 1, 0, 1]
    (a, b), _ = data.train[0]
    assert (as_bytes(a.tolist()), as_bytes(b.tolist())) == (b'"quoted" text of doc0', b"text of doc1 in train")
    (a, b), _ = data.val[1]  # documents are stored once by id: doc1 and doc2 were first seen in train
    assert (as_bytes(a.tolist()), as_bytes(b.tolist())) == (b"text of doc1 in train", b"text of doc2 in train")
    check_common(data)
    short = retrieval.load(tmp_path / "aan", max_len=4, limit=2)
    assert len(short.test) == 2 and as_bytes(short.test[0][0][0].tolist()) == b'"quo'


@pytest.mark.parametrize(
    ("row", "message", "reason"),
    [
        ("1\tdoc8\tdoc9\tonly four", "expected 5 tab-separated columns, got 4", "malformed row"),
        ("yes\tdoc8\tdoc9\ta\tb", "label 'yes' is not a number", "malformed row"),
        ("0.5\tdoc8\tdoc9\ta\tb", "is not an integer in [0, 2)", "malformed row"),
        ("1\tdoc8\tdoc9\t\tb", "empty document", "empty document"),
    ],
)
def test_retrieval_bad_rows(tmp_path, row, message, reason):
    folder = write_aan(tmp_path / "aan")
    with open(folder / "new_aan_pairs.test.tsv", "a") as f:
        f.write(row + "\n")
    with pytest.raises(DataError, match=r"new_aan_pairs\.test\.tsv:5: ") as error:
        retrieval.load(folder)
    assert message in str(error.value)
    assert retrieval.load(folder, skip_bad=True).skipped == {reason: 1}


def test_retrieval_missing_split_names_the_file(tmp_path):
    folder = write_aan(tmp_path / "aan")
    (folder / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(DataError, match=r"new_aan_pairs\.eval\.tsv: not found \(expected LRA's AAN val split\)"):
        retrieval.load(folder)


# --- CIFAR-10 (image) -----------------------------------------------------------------------


def cifar_rows(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(x) for x in rng.integers(0, 10, n)]


def expected_gray(rows: np.ndarray) -> np.ndarray:
    r, g, b = (rows[:, i * 1024 : (i + 1) * 1024].astype(np.float64) for i in range(3))
    return np.rint(0.2989 * r + 0.5870 * g + 0.1140 * b).astype(np.int64) + 1


def write_cifar(folder: Path, per_batch: int = 10) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_rows(per_batch, i) for i in range(1, 6)} | {"test_batch": cifar_rows(8, 9)}
    for name, (rows, labels) in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": rows, b"labels": labels}, f, protocol=2)
    names = [f"class{i}".encode() for i in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return batches


def test_cifar_batches_round_trip_in_grayscale(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    archive = tar_folder(tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    data = image.load(archive, val_fraction=0.2)
    assert data.class_names == [f"class{i}" for i in range(10)] and data.max_len == 1024
    assert len(data.train) + len(data.val) == 50 and abs(len(data.val) - 10) <= 3 and len(data.test) == 8
    rows = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = [y for i in range(1, 6) for y in batches[f"data_batch_{i}"][1]]
    gray = {tuple(g): y for g, y in zip(expected_gray(rows).tolist(), labels)}
    seen = [tuple(t) for t in tokens_of(data.train) + tokens_of(data.val)]
    assert sorted(seen) == sorted(gray) and len(set(seen)) == 50  # every row once: disjoint splits
    assert all(gray[tuple(t)] == y for t, y in zip(tokens_of(data.train), data.train.labels))
    test_rows, test_labels = batches["test_batch"]
    order = sorted(range(8), key=lambda i: tuple(data.test[i][0].tolist()))
    expected = sorted(zip(expected_gray(test_rows).tolist(), test_labels))
    assert [(data.test[i][0].tolist(), data.test[i][1]) for i in order] == expected
    assert tokens_of(image.load(tmp_path / "cifar-10-batches-py", val_fraction=0.2).train) == tokens_of(data.train)
    check_common(data)


def test_cifar_gray_of_pure_colours():
    rows = np.zeros((4, 3072), np.uint8)
    rows[1, :1024], rows[2, 1024:2048], rows[3] = 255, 255, 255
    gray = image._Batches(rows, np.zeros(4, np.int64)).gray(np.arange(4), None)[0]
    assert gray[:, 0].tolist() == [0, 76, 150, 255]


def test_cifar_unpickler_refuses_foreign_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR batch .*posix\.getcwd is not allowed"):
        image.load(folder)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be an \(N, 3072\) uint8 array"):
        image.load(folder)


def write_image_folder(root: Path, per_class: int = 6, classes=("cat", "dog", "ship"), test: bool = True) -> dict:
    """PNG images filled with 40·class + index (+ 120 in test); returns name → RGB array."""
    written = {}
    for split in ("train", "test") if test else ("train",):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                rgb = np.full((32, 32, 3), 40 * c + i + 120 * (split == "test"), np.uint8)
                rgb[0, 0] = (200, 100, 50)
                rgb[1, :, 0] = np.arange(32) * 8  # a red ramp
                Image.fromarray(rgb).save(root / split / name / f"{i:04d}.png")
                written[f"{split}/{name}/{i:04d}.png"] = rgb
    return written


def test_image_folder_round_trip_folder_and_tar(tmp_path):
    written = write_image_folder(tmp_path / "cifar")
    archive = tar_folder(tmp_path / "cifar", tmp_path / "cifar.tar.gz")
    expected = {tuple(np.rint(rgb.reshape(-1, 3) @ [0.2989, 0.587, 0.114]).astype(int) + 1) for rgb in written.values()}
    for source in (tmp_path / "cifar", archive):
        data = image.load(source, val_fraction=1 / 3)
        assert data.class_names == ["cat", "dog", "ship"] and data.num_classes == 3
        assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 18)
        assert sorted(data.val.labels) == [0, 0, 1, 1, 2, 2]
        seen = [tuple(t) for split in (data.train, data.val, data.test) for t in tokens_of(split)]
        assert set(seen) == expected and len(seen) == len(set(seen)) == 36
        check_common(data)
    write_image_folder(tmp_path / "train_only", test=False)
    data = image.load(tmp_path / "train_only", limit=4)
    assert data.test is None and len(data.train) == 4


def test_image_folder_labels_follow_pixels(tmp_path):
    write_image_folder(tmp_path / "cifar", per_class=2, test=False)
    data = image.load(tmp_path / "cifar", val_fraction=0.5)
    for split in (data.train, data.val):
        for tokens, label in (split[i] for i in range(len(split))):
            value = int(tokens[5 * 32 + 5]) - 1  # a plain gray pixel: 40·class + index
            assert value // 40 == label


def test_image_folder_undecodable_and_wrong_size(tmp_path):
    write_image_folder(tmp_path / "cifar", per_class=2, test=False)
    (tmp_path / "cifar" / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        image.load(tmp_path / "cifar")
    Image.new("RGB", (8, 8)).save(tmp_path / "cifar" / "train" / "dog" / "small.png")
    data = image.load(tmp_path / "cifar", skip_bad=True, val_fraction=0.0)
    assert data.skipped == {"undecodable image": 2} and len(data.train) == 6
    (tmp_path / "cifar" / "train" / "cat" / "broken.png").unlink()
    with pytest.raises(DataError, match=r"small\.png: image is 8×8, expected 32×32"):
        image.load(tmp_path / "cifar")


def test_image_missing_and_unrecognised(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: not found \(expected cifar-10-python"):
        image.load(tmp_path / "cifar-10-python.tar.gz")
    (tmp_path / "other" / "x").mkdir(parents=True)
    (tmp_path / "other" / "x" / "a.txt").write_text("nothing")
    with pytest.raises(DataError, match="no CIFAR batches or images found"):
        image.load(tmp_path / "other")


# --- Pathfinder -----------------------------------------------------------------------------


def write_pathfinder(curv: Path, n: int = 20, size: int = 8, npy: bool = False) -> list[np.ndarray]:
    """``n`` images in 2 metadata files; image i is filled with value i, label i % 2."""
    images = []
    for b in range(2):
        (curv / "imgs" / str(b)).mkdir(parents=True)
        lines = []
        for i in range(b * n // 2, (b + 1) * n // 2):
            pixels = np.full((size, size), i, np.uint8)
            pixels[0, 0] = 255
            Image.fromarray(pixels, mode="L").save(curv / "imgs" / str(b) / f"sample_{i}.png")
            images.append(pixels)
            lines.append(f"imgs/{b} sample_{i}.png {i} {i % 2} 1.0 14 4 2 0.5 1 1")
        (curv / "metadata").mkdir(exist_ok=True)
        if npy:
            np.save(curv / "metadata" / f"{b}.npy", np.array([line.split() for line in lines]))
        else:
            (curv / "metadata" / f"{b}.npy").write_text("\n".join(lines) + "\n")
    return images


def image_index(tokens) -> int:
    return int(tokens[1]) - 1


@pytest.mark.parametrize("npy", [False, True])
def test_pathfinder_round_trip_and_disjoint_splits(tmp_path, npy):
    write_pathfinder(tmp_path / "pathfinder32" / "curv_contour_length_14", npy=npy)
    data = load_task("pathfinder", tmp_path / "pathfinder32")
    assert (data.max_len, data.num_classes, data.vocab_size) == (64, 2, 257)
    assert (len(data.train), len(data.val), len(data.test)) == (16, 2, 2)
    seen = []
    for split in (data.train, data.val, data.test):
        for tokens, label in (split[i] for i in range(len(split))):
            index = image_index(tokens)
            assert label == index % 2 and tokens[0] == 256 and len(tokens) == 64
            seen.append(index)
        assert sorted(split.labels).count(0) == len(split) // 2  # stratified
    assert sorted(seen) == list(range(20))
    check_common(data)


def test_pathfinder_lazy_difficulty_and_limit(tmp_path):
    write_pathfinder(tmp_path / "pf" / "curv_baseline", n=10)
    write_pathfinder(tmp_path / "pf" / "curv_contour_length_14", n=20)
    eager = pathfinder.load(tmp_path / "pf")
    lazy = pathfinder.load(tmp_path / "pf", lazy=True)
    assert tokens_of(lazy.train) == tokens_of(eager.train) and lazy.train.labels == eager.train.labels
    assert len(pathfinder.load(tmp_path / "pf", difficulty="curv_baseline").train) == 6
    direct = pathfinder.load(tmp_path / "pf" / "curv_baseline", limit=3, max_len=10)
    assert len(direct.train) == 3 and len(direct.train[0][0]) == 10 and direct.max_len == 10
    with pytest.raises(DataError, match=r"curv_contour_length_9: not found .*curv_baseline, curv_contour_length_14"):
        pathfinder.load(tmp_path / "pf", difficulty="curv_contour_length_9")
    path = Path(lazy.train.sequences.paths[0])
    path.unlink()
    with pytest.raises(DataError, match=rf"{path.name}"):
        lazy.train[0]


def test_pathfinder_bad_rows_and_images(tmp_path):
    curv = tmp_path / "curv_contour_length_14"
    write_pathfinder(curv)
    with open(curv / "metadata" / "1.npy", "a") as f:
        f.write("imgs/1 sample_99.png 99\n")
    with pytest.raises(DataError, match=r"1\.npy:11: expected at least 4 fields, got 3"):
        pathfinder.load(curv)
    assert pathfinder.load(curv, skip_bad=True).skipped == {"malformed row": 1}
    (curv / "metadata" / "1.npy").write_text("imgs/1 sample_10.png 10 maybe\n../x sample_11.png 11 1\n")
    data = pathfinder.load(curv, skip_bad=True)
    assert data.skipped == {"malformed row": 2} and len(data.train) + len(data.val) + len(data.test) == 10
    write_pathfinder(tmp_path / "p2", n=10)
    (tmp_path / "p2" / "imgs" / "1" / "sample_7.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"sample_7\.png: cannot decode image"):
        pathfinder.load(tmp_path / "p2", val_fraction=0.0, test_fraction=0.0)
    assert pathfinder.load(tmp_path / "p2", skip_bad=True).skipped == {"undecodable image": 1}
    Image.new("L", (8, 8)).save(tmp_path / "p2" / "imgs" / "1" / "sample_7.png")
    (tmp_path / "p2" / "imgs" / "1" / "sample_8.png").unlink()
    with pytest.raises(DataError, match=r"sample_8\.png: cannot decode image"):
        pathfinder.load(tmp_path / "p2", skip_bad=False, val_fraction=0.0, test_fraction=0.0)


def test_pathfinder_refuses_pickled_metadata(tmp_path):
    curv = tmp_path / "curv_baseline"
    write_pathfinder(curv, n=4)
    np.save(curv / "metadata" / "0.npy", np.array([["imgs/0", "sample_0.png", "0", "0"], None], dtype=object))
    with pytest.raises(DataError, match=r"0\.npy: unreadable \.npy array"):
        pathfinder.load(curv)


# --- binaries -------------------------------------------------------------------------------


def write_binaries(root: Path) -> dict[str, tuple[bytes, int]]:
    files = {}
    for label, name in enumerate(["benign", "malicious"]):
        for i in range(5):
            content = bytes([label, i]) + bytes(range(256)) * (i + 1)
            relative = f"{name}/{'sub/' if i == 4 else ''}{i}.exe"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(gzip.compress(content) if i == 3 else content)
            files[relative] = (content, label)
    return files


def test_binaries_class_folders_lazy_round_trip(tmp_path):
    files = write_binaries(tmp_path / "bin")
    data = load_task("binaries", tmp_path / "bin", max_len=300, val_fraction=0.2, test_fraction=0.2)
    assert data.class_names == ["benign", "malicious"] and data.test is not None
    paths = [p for split in (data.train, data.val, data.test) for p in split.sequences.paths]
    assert len(paths) == len(set(paths)) == 10  # disjoint, all files
    for split in (data.train, data.val, data.test):
        assert split.labels.count(0) == split.labels.count(1)
        for i, path in enumerate(split.sequences.paths):
            content, label = files[Path(path).relative_to(tmp_path / "bin").as_posix()]
            tokens, got = split[i]
            assert got == label and as_bytes(tokens.tolist()) == content[:300]  # gzip read transparently
    check_common(data)
    assert binaries.load(tmp_path / "bin").test is None


def test_binaries_csv_manifest_with_splits(tmp_path):
    write_binaries(tmp_path / "bin")
    absolute = (tmp_path / "bin" / "malicious" / "0.exe").resolve()
    (tmp_path / "bin" / "list.csv").write_text(
        f"path,label,split\nbenign/0.exe,clean,train\n{absolute},bad,train\nbenign/1.exe,clean,val\n"
        '"malicious/1.exe",bad,test\n'
    )
    data = binaries.load(tmp_path / "bin" / "list.csv")
    assert data.class_names == ["bad", "clean"] and data.train.labels in ([1, 0], [0, 1])
    assert len(data.val) == len(data.test) == 1 and data.test.labels == [0]
    (tmp_path / "bin" / "ints.csv").write_text("label,path\n0,benign/0.exe\n2,benign/1.exe\n1,malicious/0.exe\n")
    data = binaries.load(tmp_path / "bin" / "ints.csv", val_fraction=0.0)
    assert data.class_names is None and data.num_classes == 3 and sorted(data.train.labels) == [0, 1, 2]
    (tmp_path / "bin" / "super.csv").write_text("label,path\n²,benign/0.exe\n3,benign/1.exe\n")  # "²".isdigit()
    data = binaries.load(tmp_path / "bin" / "super.csv", val_fraction=0.0)
    assert data.class_names == ["3", "²"] and sorted(data.train.labels) == [0, 1]  # names, not int("²")


def test_binaries_bad_files(tmp_path, monkeypatch):
    write_binaries(tmp_path / "bin")
    (tmp_path / "bin" / "benign" / "empty.exe").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.exe: zero-length file"):
        binaries.load(tmp_path / "bin", val_fraction=0.0)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: "3.exe" not in str(p) and real_access(p, mode))
    data = binaries.load(tmp_path / "bin", skip_bad=True, val_fraction=0.0)
    assert data.skipped == {"empty file": 1, "unreadable file": 2} and len(data.train) == 8
    (tmp_path / "bin" / "list.csv").write_text("path,label\nbenign/0.exe,a\nbenign/gone.exe,a\nbenign/1.exe\n")
    with pytest.raises(DataError, match=r"list\.csv:4: expected 2 columns"):
        binaries.load(tmp_path / "bin" / "list.csv")
    data = binaries.load(tmp_path / "bin" / "list.csv", skip_bad=True, val_fraction=0.0)
    assert data.skipped == {"malformed row": 1, "missing file": 1} and len(data.train) == 1
    (tmp_path / "bin" / "bad.csv").write_text("file,class\nx,y\n")
    with pytest.raises(DataError, match=r"bad\.csv: header must name the columns path,label"):
        binaries.load(tmp_path / "bin" / "bad.csv")


def test_binaries_vanished_file_and_corrupt_gzip_at_read_time(tmp_path):
    write_binaries(tmp_path / "bin")
    data = binaries.load(tmp_path / "bin", val_fraction=0.0)
    gone = Path(data.train.sequences.paths[0])
    gone.unlink()
    with pytest.raises(DataError, match=rf"{gone.name}: cannot read"):
        data.train[0]
    corrupt = Path(data.train.sequences.paths[1])
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=rf"{corrupt.name}: cannot read"):
        data.train[1]


def test_gzip_bomb_stays_bounded(tmp_path):
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        block = b"\0" * (1 << 20)
        for _ in range(32):  # 32 MiB inflated, about 32 KiB on disk
            f.write(block)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    data = read_prefix(bomb, 4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(data) == 4096 and peak < 4 << 20  # bounded by the prefix, not the 32 MiB inflated


# --- shared pieces, registry, inspect --------------------------------------------------------


def test_iter_tree_ignores_unsafe_members(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.txt").write_text("ok")
    extra = [
        member("/etc/evil.txt", size=4),
        member("d/../../evil.txt", size=4),
        member("d/link.txt", tarfile.SYMTYPE, link="/etc/passwd"),
        member("d/hard.txt", tarfile.LNKTYPE, link="d/ok.txt"),
        member("d/dev.txt", tarfile.CHRTYPE),
        member("./d/dot.txt", size=2),
    ]
    archive = tar_folder(tmp_path / "d", tmp_path / "d.tar", extra=extra)
    names = [name for name, _ in iter_tree(archive, lambda n: True, expected="x")]
    assert sorted(names) == ["d/dot.txt", "d/ok.txt"]
    assert list(iter_tree(archive, lambda n: n.endswith("ok.txt"), expected="x", max_bytes=1)) == [("d/ok.txt", b"o")]


def test_split_indices_are_disjoint_stratified_and_seeded():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    train, val, test = split_indices(labels, seed=3, val_fraction=0.1, test_fraction=0.2)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert np.bincount(np.array(labels)[val]).tolist() == [5, 3, 2]
    assert np.bincount(np.array(labels)[test]).tolist() == [10, 6, 4]
    again = split_indices(labels, seed=3, val_fraction=0.1, test_fraction=0.2)
    assert all(np.array_equal(x, y) for x, y in zip((train, val, test), again))


def test_packed_items_are_long_and_shifted():
    packed = Packed.from_bytes([b"ab", b"", b"xyz"])
    assert len(packed) == 3 and packed[0].tolist() == [98, 99] and packed[-1].dtype == torch.long
    assert packed.lengths().tolist() == [2, 0, 3] and packed.flat.dtype == np.uint8
    with pytest.raises(IndexError):
        packed[3]


def test_registry_and_unknown_task(tmp_path):
    assert set(TASKS) == {"listops", "text", "retrieval", "imdb-pairs", "image", "pathfinder", "binaries", "mqar"}
    with pytest.raises(DataError, match="unknown task 'cifar'; valid tasks: listops, text, retrieval"):
        load_task("cifar", tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        load_task("listops", write_listops(tmp_path / "lo"), val_fraction=1.5)


def test_inspect_reports_counts_lengths_and_problems(tmp_path):
    folder = write_aclimdb(tmp_path / "aclImdb", test=True)
    (folder / "train" / "pos" / "500_8.txt").write_text("")
    (folder / "test" / "neg" / "500_2.txt").write_text("train movie 0 review 0 neg – é")  # a train review
    data = text.load(folder, skip_bad=True, val_fraction=0.25)
    report = inspect_task(data)
    train = report["splits"]["train"]
    assert train["count"] == 30 and train["labels"] == {"neg": 15, "pos": 15}
    assert train["lengths"]["max"] == max(len(t) for t in tokens_of(data.train))
    assert report["splits"]["test"]["overlap"] == 1  # the copy of a train (or val) review
    assert report["token_range"][0] >= 1 and report["vocab_seen"] > 20
    problems = "\n".join(report["problems"])
    assert "inputs skipped: 1 empty document" in problems and "also appear in an earlier split" in problems
    assert "test labels are imbalanced (21 vs 20" not in problems  # within the ratio
    assert "review" in report["sample"]
    text_report = format_report(report)
    assert "task text" in text_report and "train" in text_report and "problems:" in text_report
    lopsided = TaskData("x", data.train, data.val, None, 3, 2, 4000)
    lopsided.train.labels = [0] * 29 + [1]
    assert any("imbalanced" in p for p in inspect_task(lopsided)["problems"])


def test_inspect_flags_out_of_vocabulary_tokens(tmp_path):
    data = listops.load(write_listops(tmp_path / "lo"))
    data.vocab_size = 12
    assert any("outside the vocabulary" in p for p in inspect_task(data)["problems"])
    assert "[MAX 2 9 X" in format_report(inspect_task(data))


# --- optional dependencies: pillow and matplotlib -------------------------------------------


def test_the_layer_and_text_data_need_neither_pillow_nor_matplotlib(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nhello,a\nworld,b\n")
    code = f"""
import sys
import torch
import hrrformer
layer = hrrformer.HrrAttention(16, 2)
out = layer(torch.randn(2, 8, 16), torch.zeros(2, 8, dtype=torch.bool))
out.sum().backward()
from hrrformer.data import load_task
assert len(load_task("text", {str(tmp_path / "d.csv")!r}, val_fraction=0.0).train) == 2
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("PIL", "matplotlib"))
assert not loaded, loaded
"""
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_extra_names_what_to_install(monkeypatch, tmp_path, capsys):
    image_bytes = io.BytesIO()
    Image.new("L", (2, 2)).save(image_bytes, format="PNG")
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # as if pillow were not installed
    with pytest.raises(
        MissingExtra, match=r"reading and writing images needs pillow.*pip install 'hrrformer\[image\]'"
    ):
        decode_image(image_bytes.getvalue(), "x.png", mode="L")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra, match=r"drawing plots needs matplotlib.*pip install 'hrrformer\[plot\]'"):
        pyplot()
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "curves.png")]) == 1
    assert "pip install 'hrrformer[plot]'" in capsys.readouterr().out


def test_pillow_and_matplotlib_are_extras_and_in_dev():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = {req.split(">")[0].split("=")[0].strip().lower() for req in project["dependencies"]}
    assert not names & {"pillow", "matplotlib"}
    extras = project["optional-dependencies"]
    assert extras["image"] == ["pillow>=10"] and extras["plot"] == ["matplotlib>=3.7"]
    assert {"pillow>=10", "matplotlib>=3.7"} <= set(extras["dev"])


# --- the real data in ../shared/data ----------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "aclImdb_train.tar.gz").exists(), reason="no ../shared/data/aclImdb_train.tar.gz")
def test_shared_imdb_loads():
    path = SHARED / "aclImdb_train.tar.gz"
    data = text.load(path, limit=200)
    assert len(data.train) == len(data.val) == 200 and data.test is None
    assert 60 <= sum(data.train.labels) <= 140
    check_common(data)
    pairs = imdb_pairs.load(path, limit=100)
    assert len(pairs.train) == len(pairs.test) == 100 and sum(pairs.val.labels) == 50


@pytest.mark.shared_data
@pytest.mark.skipif(
    not (SHARED / "cifar10_train_images.tar.gz").exists(), reason="no ../shared/data/cifar10_train_images.tar.gz"
)
def test_shared_cifar_images_load():
    data = image.load(SHARED / "cifar10_train_images.tar.gz", limit=200)
    assert data.class_names == image.CIFAR10_CLASSES and data.test is None
    assert len(data.train) == len(data.val) == 200 and len(set(data.train.labels)) == 10
    check_common(data)
