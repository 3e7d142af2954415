"""Tests of research/build_binaries.py on tiny fake ELF files (no dependency on the machine's own files)."""

from __future__ import annotations

import csv
import json
import struct
from collections import Counter
from pathlib import Path

import pytest


@pytest.fixture
def bb():
    from research import build_binaries

    return build_binaries


def make_elf(
    path: Path,
    *,
    comment: bytes | None = None,
    sections: dict[str, bytes] | None = None,
    e_type: int = 3,
    body: bytes = b"",
    size: int = 8192,
) -> Path:
    """A minimal little-endian ELF64 file: header, one PT_LOAD program header, ``body``, then the
    contents of .text / .comment / the extra ``sections`` / .shstrtab, then the section header table."""
    named = [(".text", 1, b"\x90" * 64)]
    if comment is not None:
        named.append((".comment", 1, comment))
    named += [(name, 7 if name.startswith(".note") else 1, data) for name, data in (sections or {}).items()]
    shstrtab = b"\0"
    name_at = {}
    for name in [n for n, _t, _d in named] + [".shstrtab"]:
        name_at[name] = len(shstrtab)
        shstrtab += name.encode() + b"\0"
    named.append((".shstrtab", 3, shstrtab))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, 0, 0, 0x1000)
    data = bytearray(64 + len(phdr)) + body
    data += bytes(max(0, size - len(data) - 4096))  # pad so the file ends up about ``size`` bytes
    headers = [bytes(64)]  # the null section
    for name, sh_type, content in named:
        headers.append(struct.pack("<IIQQQQIIQQ", name_at[name], sh_type, 0, 0, len(data), len(content), 0, 0, 1, 0))
        data += content
    while len(data) % 8:
        data += b"\0"
    shoff = len(data)
    data += b"".join(headers)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", e_type, 62, 1, 0x1040, 64, shoff, 0, 64, 56, 1, 64, len(headers), len(headers) - 1
    )
    data[:64] = header
    data[64 : 64 + len(phdr)] = phdr
    path.write_bytes(bytes(data))
    return path


GCC = b"GCC: (Debian 12.2.0-14) 12.2.0\0"
CLANG = b"GCC: (Debian 12.2.0-14) 12.2.0\0Debian clang version 14.0.6\0"
RUSTC = b"GCC: (GNU) 10.2.1\0rustc version 1.63.0\0"


def test_read_elf_and_labels(bb, tmp_path):
    gcc = bb.read_elf(make_elf(tmp_path / "gcc", comment=GCC))
    assert gcc.bits == 64 and gcc.e_type == 3 and gcc.machine == 62
    assert gcc.comment == GCC and ".text" in gcc.sections and gcc.phdr_types == (1,)
    assert bb.toolchain(gcc) == ("gcc", "comment")
    assert bb.toolchain(bb.read_elf(make_elf(tmp_path / "clang", comment=CLANG))) == ("clang", "comment")
    assert bb.toolchain(bb.read_elf(make_elf(tmp_path / "rust", comment=RUSTC))) == ("rust", "comment")
    go = bb.read_elf(make_elf(tmp_path / "go", sections={".note.go.buildid": b"\4\0\0\0" * 4}, e_type=2))
    assert bb.toolchain(go) == ("go", "section .note.go.buildid")
    assert go.kind == "exec"
    stripped_rust = bb.read_elf(
        make_elf(tmp_path / "rs", sections={".debug_gdb_scripts": b"\x01gdb_load_rust_pretty_printers.py\0"})
    )
    assert bb.toolchain(stripped_rust) == ("rust", "section .debug_gdb_scripts")
    mixed = bb.read_elf(make_elf(tmp_path / "lld", comment=GCC + b"Linker: LLD 15.0.0\0"))
    assert bb.toolchain(mixed) == ("other", "comment")
    stripped = bb.read_elf(make_elf(tmp_path / "stripped"))
    assert bb.toolchain(stripped) == (None, "none")
    # a detached debug file's .comment labels a stripped file
    assert bb.toolchain(stripped, debug_info=gcc) == ("gcc", "debug-file")


def test_build_id_and_debug_only(bb, tmp_path):
    build_id = bytes(range(20))
    note = struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id
    info = bb.read_elf(make_elf(tmp_path / "f", sections={".note.gnu.build-id": note}))
    assert info.build_id == build_id.hex()
    folder = tmp_path / "debug" / ".build-id" / info.build_id[:2]
    folder.mkdir(parents=True)
    make_elf(folder / f"{info.build_id[2:]}.debug", comment=GCC)
    assert bb.debug_file(info.build_id, [str(tmp_path / "debug")]).comment == GCC
    assert bb.debug_file("00" * 20, [str(tmp_path / "debug")]) is None


def test_read_elf_rejects_and_survives_garbage(bb, tmp_path):
    (tmp_path / "text").write_bytes(b"hello" * 2000)
    assert bb.read_elf(tmp_path / "text") is None
    bad = bytearray(make_elf(tmp_path / "bad", comment=GCC).read_bytes())
    bad[40:48] = struct.pack("<Q", 10**12)  # e_shoff past the end of the file
    (tmp_path / "bad").write_bytes(bytes(bad))
    info = bb.read_elf(tmp_path / "bad")
    assert info is not None and info.sections == {} and bb.toolchain(info) == (None, "none")
    (tmp_path / "short").write_bytes(b"\x7fELF\2\1")
    assert bb.read_elf(tmp_path / "short") is None


def test_collect_filters_and_deduplicates(bb, tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    make_elf(root / "a" / "gcc1", comment=GCC, body=b"one")
    make_elf(root / "a" / "clang1", comment=CLANG, body=b"two")
    make_elf(root / "b" / "rust1", comment=RUSTC, body=b"three")
    (root / "b" / "copy").write_bytes((root / "a" / "gcc1").read_bytes())  # same content elsewhere
    (root / "b" / "link").symlink_to(root / "a" / "gcc1")
    (root / "b" / "notes.txt").write_bytes(b"not an ELF file\n" * 1000)
    make_elf(root / "b" / "tiny", comment=GCC, size=0)  # under 4 KiB
    make_elf(root / "b" / "object.o", comment=GCC, e_type=1)  # relocatable: not a program
    skipped = Counter()
    found = bb.collect([str(root)], bb.Groups(), debug_dirs=[], skipped=skipped)
    labels = {Path(c.path).name: c.label for c in found}
    assert labels == {"clang1": "clang", "gcc1": "gcc", "rust1": "rust"}
    assert skipped["duplicate content"] == 1
    assert skipped["not ELF"] == 1
    assert skipped["smaller than min size"] == 1
    assert skipped["not an executable or shared library"] == 1
    assert all(Path(c.path).is_absolute() and c.size >= 4096 for c in found)
    assert {c.group for c in found} == {f"dir:{root / 'a'}", f"dir:{root / 'b'}"}


def test_markers_span_chunk_boundaries(bb, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes((1 << 20) - 5) + b"RUST_BACKTRACE" + bytes(100))
    digest, found = bb.hash_and_markers(path)
    assert found == [b"RUST_BACKTRACE"] and len(digest) == 64


def test_debian_default_needs_a_debian_package_and_no_markers(bb, tmp_path):
    def cand(name, package, markers=()):
        return bb.Candidate(name, 5000, name, None, "none", "g", package, b"", "pie", list(markers))

    cands = [cand("a", "coreutils"), cand("b", "thirdparty"), cand("c", "coreutils", [b"rust_panic"])]
    skipped = Counter()
    bb.apply_debian_default(cands, {"coreutils"}, skipped)
    assert [(c.label, c.evidence) for c in cands] == [("gcc", "debian-default"), (None, "none"), (None, "none")]
    assert sum(skipped.values()) == 2


def test_groups_from_dpkg_and_records(bb, tmp_path):
    info = tmp_path / "info"
    info.mkdir()
    (info / "libfoo1:amd64.list").write_text("/.\n/lib/x86_64-linux-gnu/libfoo.so.1\n")
    status = tmp_path / "status"
    status.write_text("Package: libfoo1\nSource: foo (1.0-1)\nVersion: 1.0-1+b1\n\nPackage: bar\nVersion: 2\n")
    site = tmp_path / "venv" / "site-packages"
    (site / "numpy-2.0.dist-info").mkdir(parents=True)
    (site / "numpy-2.0.dist-info" / "RECORD").write_text("numpy.libs/libx.so,sha256=abc,10\n")
    groups = bb.Groups(bb.dpkg_owners(info), bb.dpkg_sources(status))
    lib = "/usr/lib/x86_64-linux-gnu/libfoo.so.1"
    assert groups.package(lib, lib) == "libfoo1" and groups.group(lib, lib) == "deb:foo"
    wheel_lib = str(site / "numpy.libs" / "libx.so")
    assert groups.group(wheel_lib, wheel_lib) == "pypi:numpy"
    other = str(site / "PIL" / "_imaging.so")
    assert groups.group(other, other) == "pypi:pil"


def test_splits_keep_groups_whole_and_balanced(bb):
    items = [(f"g{g}", "gcc" if g % 2 else "go") for g in range(200) for _ in range(1 + g % 5)]
    split_of = bb.assign_splits(items, seed=3)
    assert split_of == bb.assign_splits(items, seed=3)  # deterministic
    assert set(split_of) == {g for g, _ in items} and set(split_of.values()) == set(bb.SPLITS)
    for label in ("gcc", "go"):
        per_split = Counter(split_of[g] for g, y in items if y == label)
        total = sum(per_split.values())
        assert abs(per_split["train"] / total - 0.8) < 0.03
        assert abs(per_split["test"] / total - 0.1) < 0.03
    assert bb.assign_splits(items, seed=4) != split_of  # the seed matters


def test_select_caps(bb):
    def cand(i, group, label):
        return bb.Candidate(f"/p{i}", 5000, f"h{i}", label, "comment", group, None, b"", "pie")

    cands = [cand(i, "big", "gcc") for i in range(30)] + [cand(100 + i, f"g{i}", "go") for i in range(5)]
    cands += [cand(200, "x", "other"), cand(201, "x", None)]
    skipped = Counter()
    chosen = bb.select(cands, seed=0, max_per_group=10, max_per_class=8, min_per_class=6, skipped=skipped)
    assert Counter(c.label for c in chosen) == {"gcc": 8}  # go (5 files) is under min_per_class
    assert skipped["over --max-per-group"] == 20 and skipped["over --max-per-class"] == 2
    assert skipped["class other not wanted"] == 1


def test_size_stump(bb):
    t, lo, hi = bb.stump([(1, "a"), (2, "a"), (3, "a"), (10, "b"), (11, "b"), (12, "a")])
    assert (t, lo, hi) == (3, "a", "b")


def test_main_end_to_end(bb, tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "DPKG_INFO", tmp_path / "no-dpkg")
    monkeypatch.setattr(bb, "DPKG_STATUS", tmp_path / "no-status")
    monkeypatch.setattr(bb, "DEBUG_DIRS", ())
    root = tmp_path / "root"
    for label, comment in (("gcc", GCC), ("clang", CLANG), ("rust", RUSTC)):
        for pkg in range(4):
            folder = root / f"{label}{pkg}"
            folder.mkdir(parents=True)
            for i in range(3):
                make_elf(folder / f"f{i}", comment=comment, body=f"{label}{pkg}{i}".encode())
    out = tmp_path / "out"
    summary = bb.main(
        ["--label", "toolchain", "--out", str(out), "--roots", str(root), "--min-per-class", "1", "--seed", "1"]
    )
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["path", "label", "split"]
    assert len(rows) == 36 and {r["label"] for r in rows} == {"gcc", "clang", "rust"}
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).parent.name.startswith(r["label"]) for r in rows)
    split_of_group = {}
    for r in rows:  # a group (here: a folder) never straddles splits
        assert split_of_group.setdefault(r["group"], r["split"]) == r["split"]
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["counts"]["gcc"]["total"] == 12
    assert "first-bytes check" in summary and "size-only baselines (fit on train)" in summary


# ------------------------------------------------------------------------------ --label language


def make_dynamic_elf(
    path: Path,
    needed: list[bytes] | None,
    *,
    pad: int = 0,
    symbols: list[bytes] = (),
    comment: bytes | None = GCC,
    e_type: int = 3,
    body: bytes = b"",
) -> tuple[Path, int]:
    """A little-endian ELF64 file with PT_LOAD + PT_DYNAMIC (``needed`` None: no PT_DYNAMIC at all), a
    ``.dynstr`` (after ``pad`` bytes) holding the DT_NEEDED names and ``symbols``, a ``.dynamic`` section,
    a ``.comment`` and a section table. Virtual addresses are file offsets + 0x400000 (one PT_LOAD).
    Returns (path, file offset of .dynstr)."""
    base = 0x400000
    phnum = 2 if needed is not None else 1
    data = bytearray(64 + 56 * phnum) + body + bytes(pad)
    dynstr_off = len(data)
    dynstr = b"\0"
    name_at = []
    for name in needed or []:
        name_at.append(len(dynstr))
        dynstr += name + b"\0"
    for sym in symbols:
        dynstr += sym + b"\0"
    data += dynstr
    while len(data) % 8:
        data += b"\0"
    dynamic_off = len(data)
    entries = [(1, v) for v in name_at] + [(5, base + dynstr_off), (10, len(dynstr)), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", tag, val) for tag, val in entries)
    if needed is not None:
        data += dynamic
    text_off = len(data)
    data += b"\x90" * 64
    data += bytes(max(0, 8192 - len(data)))  # at least 4 KiB: the default --min-size
    named = [(".text", 1, text_off, 64, 0)]
    if needed is not None:
        named += [(".dynstr", 3, dynstr_off, len(dynstr), 0), (".dynamic", 6, dynamic_off, len(dynamic), 2)]
    if comment is not None:
        named.append((".comment", 1, len(data), len(comment), 0))
        data += comment
    shstrtab = b"\0"
    shname = {}
    for name in [n for n, *_ in named] + [".shstrtab"]:
        shname[name] = len(shstrtab)
        shstrtab += name.encode() + b"\0"
    named.append((".shstrtab", 3, len(data), len(shstrtab), 0))
    data += shstrtab
    while len(data) % 8:
        data += b"\0"
    shoff = len(data)
    data += bytes(64)
    for name, sh_type, offset, size, link in named:
        data += struct.pack("<IIQQQQIIQQ", shname[name], sh_type, 0, base + offset, offset, size, link, 0, 1, 0)
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, len(data), len(data), 0x1000)
    if needed is not None:
        phdrs += struct.pack("<IIQQQQQQ", 2, 6, dynamic_off, base + dynamic_off, 0, len(dynamic), len(dynamic), 8)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    data[:64] = ident + struct.pack(
        "<HHIQQQIHHHHHH", e_type, 62, 1, base + text_off, 64, shoff, 0, 64, 56, phnum, 64, len(named) + 1, len(named)
    )
    data[64 : 64 + len(phdrs)] = phdrs
    path.write_bytes(bytes(data))
    return path, dynstr_off


def test_read_dynamic_and_language(bb, tmp_path):
    path, dynstr = make_dynamic_elf(
        tmp_path / "cxx", [b"libm.so.6", b"libstdc++.so.6", b"libc.so.6"], pad=3000, symbols=[b"_ZNSt6vectorIiE"]
    )
    dyn = bb.read_dynamic(path)
    assert dyn.dynstr_offset == dynstr > 3000
    assert [name for name, _ in dyn.needed] == ["libm.so.6", "libstdc++.so.6", "libc.so.6"]
    raw = path.read_bytes()
    assert dyn.libstdcxx_offset == dynstr + len(b"\0libm.so.6\0") == raw.find(b"libstdc++")
    assert dyn.first_mangled == raw.find(b"_ZNSt6vector")
    assert all(raw[offset : offset + len(name)] == name.encode() for name, offset in dyn.needed)
    assert bb.language(dyn) == ("cxx", "DT_NEEDED libstdc++.so.6")

    c_path, c_dynstr = make_dynamic_elf(tmp_path / "c", [b"libc.so.6"], pad=100)
    c_dyn = bb.read_dynamic(c_path)
    assert c_dyn.dynstr_offset == c_dynstr and c_dyn.libstdcxx_offset is None and c_dyn.first_mangled is None
    assert bb.language(c_dyn) == ("c", "no DT_NEEDED libstdc++")
    # a dynamic section without DT_NEEDED (static-pie) is c; no PT_DYNAMIC at all is skipped
    assert bb.language(bb.read_dynamic(make_dynamic_elf(tmp_path / "spie", [])[0]))[0] == "c"
    static, _ = make_dynamic_elf(tmp_path / "static", None)
    assert bb.read_dynamic(static) is None and bb.language(None) == (None, "no PT_DYNAMIC")
    # C++ that does not need libstdc++ itself (mangled names, no DT_NEEDED libstdc++): ambiguous, skipped
    mixed = bb.read_dynamic(make_dynamic_elf(tmp_path / "mixed", [b"libc.so.6"], symbols=[b"_ZN4absl3Foo"])[0])
    assert bb.language(mixed) == (None, "mangled _Z names but no DT_NEEDED libstdc++")
    assert bb.read_dynamic(make_elf(tmp_path / "plain", comment=GCC)) is None  # PT_LOAD only
    (tmp_path / "text").write_bytes(b"hello" * 2000)
    assert bb.read_dynamic(tmp_path / "text") is None


def test_read_dynamic_falls_back_to_the_section_table(bb, tmp_path):
    path, dynstr = make_dynamic_elf(tmp_path / "f", [b"libstdc++.so.6"], pad=500)
    raw = bytearray(path.read_bytes())
    # point DT_STRTAB outside every PT_LOAD: the .dynstr section (linked from .dynamic) is used instead
    at = raw.find(struct.pack("<qQ", 5, 0x400000 + dynstr))
    raw[at + 8 : at + 16] = struct.pack("<Q", 0x7FFF0000)
    path.write_bytes(bytes(raw))
    dyn = bb.read_dynamic(path)
    assert dyn.dynstr_offset == dynstr and bb.language(dyn)[0] == "cxx"


def test_apply_language(bb, tmp_path):
    def cand(name, toolchain, dynamic, markers=()):
        return bb.Candidate(
            str(tmp_path / name), 9000, name, toolchain, "comment", "g", None, b"", "pie", list(markers), dynamic
        )

    cxx = bb.read_dynamic(make_dynamic_elf(tmp_path / "a", [b"libstdc++.so.6"])[0])
    c = bb.read_dynamic(make_dynamic_elf(tmp_path / "b", [b"libc.so.6"])[0])
    cands = [
        cand("cxx", "gcc", cxx),
        cand("c", "gcc", c),
        cand("static", "gcc", None),
        cand("go", "go", c),
        cand("rusty", "gcc", cxx, [b"rust_panic"]),
        cand("libstdc++.so.6.0.30", "gcc", c),
        cand("unknown", None, c),
    ]
    skipped = Counter()
    bb.apply_language(cands, skipped)
    assert [x.label for x in cands] == ["cxx", "c", None, None, None, None, None]
    assert cands[0].evidence == "DT_NEEDED libstdc++.so.6 (comment)" and cands[0].toolchain == "gcc"
    assert skipped["language: no PT_DYNAMIC"] == 1 and skipped["language: toolchain go, not gcc"] == 1
    assert skipped["language: foreign-language strings"] == 1


def test_select_balance(bb):
    def cand(i, label):
        return bb.Candidate(f"/p{i}", 5000, f"h{i}", label, "x", f"g{i}", None, b"", "pie")

    cands = [cand(i, "c") for i in range(30)] + [cand(100 + i, "cxx") for i in range(12)]
    caps = {"seed": 0, "max_per_group": None, "max_per_class": 20, "min_per_class": 1, "classes": ["c", "cxx"]}
    chosen = bb.select(cands, **caps, balance=True)
    assert Counter(c.label for c in chosen) == {"c": 12, "cxx": 12}
    chosen = bb.select(cands, **caps)
    assert Counter(c.label for c in chosen) == {"c": 20, "cxx": 12}


def test_main_language_end_to_end(bb, tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "DPKG_INFO", tmp_path / "no-dpkg")
    monkeypatch.setattr(bb, "DPKG_STATUS", tmp_path / "no-status")
    monkeypatch.setattr(bb, "DEBUG_DIRS", ())
    root = tmp_path / "root"
    offsets = {}
    for label, needed in (("cxx", [b"libstdc++.so.6", b"libc.so.6"]), ("c", [b"libc.so.6"])):
        for pkg in range(5):
            folder = root / f"{label}{pkg}"
            folder.mkdir(parents=True)
            for i in range(3):
                path, dynstr = make_dynamic_elf(
                    folder / f"f{i}", needed, pad=700 * pkg + 10 * i, body=f"{label}{pkg}{i}".encode()
                )
                offsets[str(path)] = dynstr
    folder = root / "c9"
    folder.mkdir()
    path, dynstr = make_dynamic_elf(folder / "extra", [b"libc.so.6"], body=b"extra")  # balance drops one c
    offsets[str(path)] = dynstr
    make_dynamic_elf(folder / "static", None, body=b"static")  # skipped: no PT_DYNAMIC
    make_dynamic_elf(folder / "clang", [b"libc.so.6"], comment=b"clang version 14\0", body=b"clang")  # not gcc
    out = tmp_path / "out"
    summary = bb.main(["--out", str(out), "--roots", str(root), "--min-per-class", "1"])
    assert summary["label"] == "language" and summary["classes"] == ["c", "cxx"]
    assert summary["counts"]["c"]["total"] == summary["counts"]["cxx"]["total"] == 15
    assert summary["skipped"]["language: no PT_DYNAMIC"] == 1
    assert summary["skipped"]["language: toolchain clang, not gcc"] == 1
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["path", "label", "split"]
    for r in rows:
        assert Path(r["path"]).parent.name.rstrip("0123456789") == r["label"]
        assert int(r["dynstr_offset"]) == offsets[r["path"]]
    records = {r["path"]: r for r in summary["files"]}
    assert len(records) == 30
    for path, r in records.items():
        raw = Path(path).read_bytes()
        assert r["dynstr_offset"] == offsets[path]
        if r["label"] == "cxx":
            assert r["libstdcxx_offset"] == raw.find(b"libstdc++") == offsets[path] + 1
        else:
            assert r["libstdcxx_offset"] is None and b"libstdc++" not in raw
    table = summary["evidence offsets"]
    # pads 0, 700, 1400, 2100, 2800 (+ up to 20 and the 184-byte headers): 2 of 5 packages start below 1 KiB
    assert table["cxx"][".dynstr starts below T"]["1024"] == 0.4 and table["cxx"][".dynstr starts below T"]["4096"] == 1
    c_offsets = [offsets[r["path"]] for r in rows if r["label"] == "c"]
    assert table["c"][".dynstr starts below T"]["1024"] == round(sum(o < 1024 for o in c_offsets) / 15, 3)
    assert table["cxx"]['"libstdc++" string lies within the first T bytes']["1024"] == 0.4
    rule = summary['string rule: cxx iff "libstdc++" in the first T bytes (nothing fitted)']
    assert rule["4096"]["train"] == 1.0
    assert set(summary["baselines (fit on train)"]) >= {
        "majority class",
        "best single threshold on min(size, 2**17)",
        "(e_type, e_phnum) lookup",
        "masked 64-byte header lookup",
    }
    assert summary == json.loads((out / "summary.json").read_text())
