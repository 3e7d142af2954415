#!/usr/bin/env python3
"""Build a real-file data set for the ``binaries`` task: C++ vs C, or the toolchain that built an ELF file.

Stdlib only (Python 3.11). Files are only ever read as bytes, never executed. From the repository root::

    nice -n 19 .venv/bin/python -m research.build_binaries --out data/binaries
    nice -n 19 .venv/bin/python -m research.build_binaries --label toolchain --out data/binaries-toolchain --download

``--label language`` (default; OUT data/binaries): among files labelled ``gcc`` below (no Go, Rust,
clang, no foreign-language strings) that have a PT_DYNAMIC segment, ``cxx`` when a DT_NEEDED entry
names ``libstdc++.so*``, ``c`` when none does and .dynstr holds no mangled ``_Z`` name (files with ``_Z``
names but no libstdc++ are skipped as ambiguous). The evidence lies in .dynstr, whose file offset varies
from file to file (about 1 KiB to megabytes), so how much of it a model sees depends on how many bytes T
it reads; the summary reports those offsets per file and per class, and trivial baselines. Classes are
balanced (the larger one capped at the size of the smaller).

``--label toolchain`` (OUT data/binaries-toolchain): the toolchain, read from places the model does not
see in its first kilobytes (but the ELF header gives it away, see docs/BINARIES.md):

* ``go``    — the file has a ``.go.buildinfo`` or ``.note.go.buildid`` section (Go's own linker);
* ``rust``  — its ``.comment`` section names ``rustc``, or its ``.debug_gdb_scripts`` section loads
              the Rust pretty printers (rustc emits it; Debian's ``strip`` keeps it, but drops ``.comment``);
* ``clang`` — its ``.comment`` names clang (and not rustc);
* ``gcc``   — its ``.comment`` holds only ``GCC:`` strings; or the detached debug file of a stripped
              file (``/usr/lib/debug/.build-id/xx/yyyy.debug``) does; or (evidence ``debian-default``)
              the file belongs to a package of the Debian archive, has a section table, no ``.comment``
              and none of the marker strings of other languages (Rust, Go, Haskell, OCaml, D, Pascal):
              Debian builds C and C++ with GCC unless a package says otherwise, and its ``dh_strip``
              removes ``.comment`` from every binary, so this is the only evidence a stripped Debian
              C/C++ file has. The ``evidence`` column of the manifest says which rule labelled a file.

All of this sits in the section header table (found through ``e_shoff``, usually at the very end of the
file) and in sections placed after the code, never in the ELF header or program headers.

Sources: the given roots (default: /usr/bin, /usr/sbin, /usr/lib, /usr/libexec and the project's
.venv/lib), plus with ``--download`` the Debian packages named in RUST_PACKAGES and GO_PACKAGES below,
and with ``--packages-file FILE`` those named in FILE (research/binaries_packages.txt: the larger
language split), fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` under OUT/debs/
(cached: a later run reuses them; never installed).

Groups and splits: a file's group is the Debian source package that owns it (the dpkg ``*.list`` files
and ``status``; for downloaded packages their control fields), else the Python distribution whose
``RECORD`` lists it, else its folder. Whole groups go to one split (train/val/test ≈ 80/10/10): groups
are taken largest first, ties in the order of a seeded hash of their name, and each goes to the split
furthest below its share of the group's classes, so related files never straddle splits.

Output: OUT/manifest.csv (``path,label,split,group,evidence,size``; absolute paths) and OUT/summary.json
(also printed): counts per class and split, size percentiles, how much the first bytes and the file size
alone give away, the Debian version, the command and the date.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOTS = ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec", str(REPO / ".venv" / "lib"))
EXCLUDE_DIRS = ("/usr/lib/debug",)  # detached debug files: evidence only, not programs
DEBUG_DIRS = ("/usr/lib/debug",)
DPKG_INFO = Path("/var/lib/dpkg/info")
DPKG_STATUS = Path("/var/lib/dpkg/status")
MIN_SIZE = 4096
MAX_LEN = 2**17  # the longest prefix the model reads
SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1, 0.1)
CLASSES = ("gcc", "clang", "rust", "go")
LANGUAGE_CLASSES = ("c", "cxx")
LABELS = ("language", "toolchain")
# GCC/Debian-built files for --label language (no .venv: only what Debian built)
LANGUAGE_ROOTS = ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/libexec")

ELF_MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
SHT_NOBITS = 8
PT_INTERP = 3
GO_SECTIONS = (".go.buildinfo", ".note.go.buildid")

# Strings that betray a language other than C/C++; a file without toolchain evidence that holds one is
# not labelled gcc by the debian-default rule.
FOREIGN_MARKERS = (
    b"/rustc/",
    b"RUST_BACKTRACE",
    b"rust_begin_unwind",
    b"rust_panic",
    b"Go build ID:",
    b"runtime.gopanic",
    b"GHC RTS",
    b"ghczmprim",
    b"caml_startup",
    b"OCAMLRUNPARAM",
    b"_D4core",
    b"FPC 3.",
)

# Debian bookworm packages built with rustc (Built-Using: rustc, plus the Rust toolchain and a few
# libraries), and with Go (Built-Using: golang-1.x; 158 of the smallest, 1.5–12 MB installed).
RUST_PACKAGES = (
    "alacritty", "b3sum", "bat", "bindgen", "cargo", "cargo-binutils", "cargo-c", "cargo-lichking", "cargo-lock",
    "cargo-outdated", "cbindgen", "cbindgen-web", "condure", "debcargo", "dfrs", "difference", "dotenv",
    "droid-juicer", "elfx86exts", "exa", "fd-find", "filespooler", "git-absorb", "grcov", "hexyl", "hyperfine",
    "ipfs-cid", "kmon", "lalrpop", "laurel", "librav1e0", "librsvg2-2", "librsvg2-bin", "libslirp-helper",
    "libstd-rust-1.63", "lscolors", "lsd", "mdevctl", "netr", "newsboat", "nitrocli", "pleaser", "precious",
    "process-viewer", "protobuf-codegen", "pulldown-cmark", "python3-cryptography", "rav1e", "resource-proof",
    "ripasso-cursive", "ripgrep", "rsass", "rust-clippy", "rust-coreutils", "rust-markdown", "rustc",
    "rustdoc-stripper", "rustfilt", "rustfmt", "rusty-tags", "safe-rm", "sccache", "sd", "sha1cdsum",
    "sniffglue", "sq", "sq-keyring-linter", "sq-wot", "sqop", "sqv", "systemd-zram-generator", "tealdeer",
    "tre-command", "ucd-generate", "vivid", "xml-rs", "zoxide",
)  # fmt: skip
GO_PACKAGES = (
    "ace", "age", "amazon-ecr-credential-helper", "amber", "apkverifier", "appc-spec", "arduino-builder",
    "bombadillo", "c2go", "canid", "certinfo", "clipman", "cobra-cli", "codesearch", "containers-storage",
    "dataurl", "debos", "direnv", "dmarc-cat", "dnss", "douceur", "duf", "easygen", "efm-langserver", "elvish",
    "emd", "enmime", "ethflux", "exip", "fakemachine", "fernet-go", "ffcvt", "ffuf", "fscrypt", "fzf", "g10k",
    "genny", "ggd-utils", "gifwrap", "ginkgo", "git-credential-oauth", "gobuster", "gocc", "gocryptfs",
    "gojay", "gokey", "golang-docker-credential-helpers", "golang-easyjson", "golang-github-containernetworking-plugin-dnsname",
    "golang-github-dcso-bloom-cli", "golang-github-dnstap-golang-dnstap-cli", "golang-github-mozillazg-go-pinyin-dev",
    "golang-github-pelletier-go-toml", "golang-github-rsc-devweb", "golang-github-ugorji-go-codec",
    "golang-github-xordataexchange-crypt", "golang-grpc-gateway", "golang-rice", "golang-statik", "google-wire",
    "gopass", "gosop", "gosu", "gotestsum", "gox", "goxkcdpwgen", "grab", "gron", "gsort", "gucumber",
    "hdfs-cli", "heartbleeder", "hellfire", "hey", "hjson-go", "hub", "hugo-mx-gateway", "influxdb-client",
    "ipp-usb", "irtt", "jid", "jp", "json2file-go", "jwt", "kappanhang", "kati", "kel-agent", "ksuid",
    "kubecolor", "kubernetes-split-yaml", "lf", "libpam-fscrypt", "libsecsipid-dev", "libsecsipid1", "lltsv",
    "lmdb-go-tools", "mahonia", "mender-connect", "minica", "mkcert", "mockgen", "molly-brown", "morty", "msgp",
    "obfs4proxy", "obs-cli", "oci-image-tool", "oci-seccomp-bpf-hook", "opensmtpd-filter-rspamd",
    "opensmtpd-filter-senderscore", "peco", "peg-go", "pollen", "prometheus-bird-exporter",
    "prometheus-mailexporter", "prometheus-squid-exporter", "prometheus-tplink-plug-exporter",
    "prometheus-varnish-exporter", "protoc-gen-go", "protoc-gen-go-1-3", "protoc-gen-go-1-5",
    "protoc-gen-go-grpc", "protoc-gen-yarpc", "pup", "ratt", "rawdns", "reflex", "robustirc-bridge", "runc",
    "secsipidx", "serf", "shfmt", "shoelaces", "siftool", "slinkwatch", "slt", "sql-migrate", "suffixfsm",
    "tar-split", "terminfo", "textql", "tmpl", "truststore", "tty-share", "umoci", "unikmer", "vcfanno",
    "vip-manager", "webext-browserpass", "webhook", "websocketd", "wireguard-go", "wormhole-william", "wuzz",
    "xmpp-dns", "xq", "ykls", "yubikey-agent",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- ELF


@dataclass
class ElfInfo:
    """What the labelling needs from one ELF file (all read from its header and section table)."""

    bits: int
    e_type: int
    machine: int
    sections: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (type, offset, size)
    comment: bytes | None = None
    gdb_scripts: bytes | None = None
    build_id: str | None = None
    phdr_types: tuple[int, ...] = ()

    @property
    def debug_only(self) -> bool:
        """A detached debug file: its code is a NOBITS placeholder."""
        text = self.sections.get(".text")
        return text is not None and text[0] == SHT_NOBITS

    @property
    def kind(self) -> str:
        """exec (ET_EXEC), pie (ET_DYN with an interpreter) or shared (ET_DYN without): visible in the header."""
        if self.e_type == ET_EXEC:
            return "exec"
        return "pie" if PT_INTERP in self.phdr_types else "shared"


def _read_at(f, offset: int, size: int, file_size: int, limit: int) -> bytes | None:
    """``size`` bytes (at most ``limit``) at ``offset``, or None when they lie outside the file."""
    if offset < 0 or size < 0 or offset + min(size, limit) > file_size:
        return None
    f.seek(offset)
    return f.read(min(size, limit))


def _build_id(note: bytes, end: str) -> str | None:
    """Hex build ID of a ``.note.gnu.build-id`` section (NT_GNU_BUILD_ID = 3, owner ``GNU``)."""
    pos = 0
    while pos + 12 <= len(note):
        namesz, descsz, ntype = struct.unpack_from(end + "III", note, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        if desc_at + descsz > len(note):
            return None
        if ntype == 3 and note[name_at : name_at + namesz].rstrip(b"\0") == b"GNU":
            return note[desc_at : desc_at + descsz].hex() or None
        pos = desc_at + (descsz + 3) // 4 * 4
    return None


@dataclass(frozen=True)
class _Header:
    """The ELF header fields both readers need; ``end`` is the struct byte-order prefix."""

    end: str
    bits: int
    e_type: int
    machine: int
    phoff: int
    shoff: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int

    @property
    def section_format(self) -> str:
        return self.end + ("IIQQQQIIQQ" if self.bits == 64 else "IIIIIIIIII")


def _read_header(f) -> _Header | None:
    """The ELF header at the start of open file ``f``, or None when it is not ELF."""
    head = f.read(64)
    if len(head) < 52 or head[:4] != ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    end = "<" if head[5] == 1 else ">"
    e_type, machine = struct.unpack_from(end + "HH", head, 16)
    if head[4] == 2:
        if len(head) < 64:
            return None
        phoff, shoff = struct.unpack_from(end + "QQ", head, 32)
        rest = struct.unpack_from(end + "HHHHH", head, 54)
        bits = 64
    else:
        phoff, shoff = struct.unpack_from(end + "II", head, 28)
        rest = struct.unpack_from(end + "HHHHH", head, 42)
        bits = 32
    return _Header(end, bits, e_type, machine, phoff, shoff, *rest)


def _section_table(f, header: _Header, file_size: int) -> list[tuple] | None:
    """Every section header as an unpacked tuple (name, type, flags, addr, offset, size, link, …),
    with extended numbering resolved; None when the table is absent or unreadable."""
    fmt = header.section_format
    entry = struct.calcsize(fmt)
    shnum = header.shnum
    if not header.shoff or header.shentsize < entry:
        return None
    if shnum == 0:  # extended numbering: the count is in section 0's sh_size
        first = _read_at(f, header.shoff, entry, file_size, entry)
        if first is None:
            return None
        shnum = struct.unpack(fmt, first)[5]
    if not 0 < shnum <= 65536:
        return None
    raw = _read_at(f, header.shoff, shnum * header.shentsize, file_size, 1 << 24)
    if raw is None or len(raw) < shnum * header.shentsize:
        return None
    return [struct.unpack_from(fmt, raw, i * header.shentsize) for i in range(shnum)]


def _c_string(buffer: bytes, at: int) -> str:
    """The NUL-terminated string at ``at`` of ``buffer`` (latin-1)."""
    stop = buffer.find(b"\0", at)
    return buffer[at : stop if stop >= 0 else len(buffer)].decode("latin-1")


def read_elf(path: str | os.PathLike) -> ElfInfo | None:
    """Parse the ELF header, program header types and section table of ``path``; None if not ELF.

    Only reads bytes (header, section table, ``.shstrtab``, and the small ``.comment``,
    ``.debug_gdb_scripts`` and ``.note.gnu.build-id`` sections). Malformed tables give an ElfInfo
    without sections rather than an error.
    """
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            header = _read_header(f)
            if header is None:
                return None
            end, phoff, phentsize, phnum = header.end, header.phoff, header.phentsize, header.phnum
            info = ElfInfo(bits=header.bits, e_type=header.e_type, machine=header.machine)
            if phoff and phentsize >= 4 and 0 < phnum <= 512:
                raw = _read_at(f, phoff, phnum * phentsize, file_size, 1 << 20)
                if raw is not None and len(raw) == phnum * phentsize:
                    info.phdr_types = tuple(struct.unpack_from(end + "I", raw, i * phentsize)[0] for i in range(phnum))
            table = _section_table(f, header, file_size)
            if table is None:
                return info
            shstrndx = header.shstrndx
            if shstrndx == 0xFFFF:  # SHN_XINDEX: the index is in section 0's sh_link
                shstrndx = table[0][6]
            if shstrndx >= len(table):
                return info
            names = _read_at(f, table[shstrndx][4], table[shstrndx][5], file_size, 1 << 20) or b""
            for sh_name, sh_type, _flags, _addr, offset, size, *_ in table:
                if sh_name >= len(names):
                    continue
                name = _c_string(names, sh_name)
                if name:
                    info.sections.setdefault(name, (sh_type, offset, size))
            for name, limit in ((".comment", 1 << 16), (".debug_gdb_scripts", 1 << 12), (".note.gnu.build-id", 256)):
                if name in info.sections and info.sections[name][0] != SHT_NOBITS:
                    _type, offset, size = info.sections[name]
                    data = _read_at(f, offset, size, file_size, limit)
                    if name == ".comment":
                        info.comment = data
                    elif name == ".debug_gdb_scripts":
                        info.gdb_scripts = data
                    elif data:
                        info.build_id = _build_id(data, end)
            return info
    except (OSError, struct.error):
        return None


PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
LIBSTDCXX = b"libstdc++"


@dataclass
class DynamicInfo:
    """What the ``language`` label needs from the dynamic section (found through PT_DYNAMIC)."""

    dynamic_offset: int  # file offset of the dynamic section
    dynstr_offset: int | None  # file offset of the dynamic string table (.dynstr), None if unreadable
    dynstr_size: int = 0
    needed: list[tuple[str, int]] = field(default_factory=list)  # DT_NEEDED: (name, file offset of the name)
    first_mangled: int | None = None  # file offset of the first ``_Z`` string in .dynstr

    @property
    def libstdcxx_offset(self) -> int | None:
        """File offset of the first DT_NEEDED name ``libstdc++.so*``, or None."""
        for name, offset in self.needed:
            if name.startswith("libstdc++.so"):
                return offset
        return None


def _dynstr_section(f, header: _Header, file_size: int) -> tuple[int, int] | None:
    """(offset, size) of the ``.dynstr`` section from the section table (fallback), or None."""
    table = _section_table(f, header, file_size) or []
    for _name, sh_type, _flags, _addr, _offset, _size, link, *_ in table:
        if sh_type == 6 and link < len(table) and table[link][1] == 3:  # SHT_DYNAMIC -> its SHT_STRTAB
            return table[link][4], table[link][5]
    return None


def read_dynamic(path: str | os.PathLike) -> DynamicInfo | None:
    """Parse PT_DYNAMIC and the dynamic string table of ``path``; None without PT_DYNAMIC (or not ELF).

    DT_STRTAB is a virtual address; it is turned into a file offset through the PT_LOAD segments (the
    section table's ``.dynstr``, linked from ``.dynamic``, is the fallback). Only reads bytes.
    """
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            header = _read_header(f)
            if header is None:
                return None
            end, bits, phoff, phentsize, phnum = header.end, header.bits, header.phoff, header.phentsize, header.phnum
            dyn_fmt = end + ("qQ" if bits == 64 else "iI")
            if not phoff or not 0 < phnum <= 512 or phentsize < (56 if bits == 64 else 32):
                return None
            raw = _read_at(f, phoff, phnum * phentsize, file_size, 1 << 20)
            if raw is None or len(raw) < phnum * phentsize:
                return None
            loads, dynamic = [], None
            for i in range(phnum):
                if bits == 64:
                    p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
                        end + "IIQQQQ", raw, i * phentsize
                    )
                else:
                    p_type, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIIII", raw, i * phentsize)
                if p_type == PT_LOAD:
                    loads.append((p_vaddr, p_offset, p_filesz))
                elif p_type == PT_DYNAMIC and dynamic is None:
                    dynamic = (p_offset, p_filesz)
            if dynamic is None:
                return None
            entry = struct.calcsize(dyn_fmt)
            table = _read_at(f, dynamic[0], dynamic[1], file_size, 1 << 20) or b""
            needed, strtab, strsz = [], None, None
            for i in range(len(table) // entry):
                tag, val = struct.unpack_from(dyn_fmt, table, i * entry)
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    needed.append(val)
                elif tag == DT_STRTAB:
                    strtab = val
                elif tag == DT_STRSZ:
                    strsz = val
            info = DynamicInfo(dynamic_offset=dynamic[0], dynstr_offset=None)
            if strtab is not None:
                for vaddr, offset, filesz in loads:
                    if vaddr <= strtab < vaddr + filesz:
                        info.dynstr_offset = offset + strtab - vaddr
                        break
            if info.dynstr_offset is None:
                section = _dynstr_section(f, header, file_size)
                if section is not None:
                    info.dynstr_offset, strsz = section[0], strsz or section[1]
            if info.dynstr_offset is None:
                return info
            info.dynstr_size = strsz or 0
            strings = _read_at(f, info.dynstr_offset, strsz or 0, file_size, 1 << 24) or b""
            for val in needed:
                if val < len(strings):
                    info.needed.append((_c_string(strings, val), info.dynstr_offset + val))
            mangled = strings.find(b"\0_Z")
            if mangled >= 0:
                info.first_mangled = info.dynstr_offset + mangled + 1
            return info
    except (OSError, struct.error):
        return None


def language(dyn: DynamicInfo | None) -> tuple[str | None, str]:
    """(cxx / c / None, evidence): cxx when DT_NEEDED names libstdc++.so*; c when it does not and .dynstr
    holds no mangled ``_Z`` name; None (skipped) without PT_DYNAMIC, or with ``_Z`` names but no libstdc++."""
    if dyn is None:
        return None, "no PT_DYNAMIC"
    if dyn.dynstr_offset is None:
        return None, "unreadable .dynstr"
    for name, _offset in dyn.needed:
        if name.startswith("libstdc++.so"):
            return "cxx", f"DT_NEEDED {name}"
    if dyn.first_mangled is not None:  # C++ code (e.g. a library that reaches libstdc++ only indirectly)
        return None, "mangled _Z names but no DT_NEEDED libstdc++"
    return "c", "no DT_NEEDED libstdc++" if dyn.needed else "no DT_NEEDED at all"


def comment_strings(comment: bytes | None) -> list[bytes]:
    """The non-empty NUL-separated strings of a ``.comment`` section."""
    return [s.strip() for s in (comment or b"").split(b"\0") if s.strip()]


def comment_toolchain(comment: bytes | None) -> str | None:
    """rust / clang / gcc / other from ``.comment`` strings; None when there are none."""
    strings = comment_strings(comment)
    if not strings:
        return None
    text = b"\n".join(strings).lower()
    if b"rustc" in text:
        return "rust"
    if b"clang" in text:
        return "clang"
    if all(s.startswith(b"GCC:") for s in strings):
        return "gcc"
    return "other"


def toolchain(info: ElfInfo, debug_info: ElfInfo | None = None) -> tuple[str | None, str]:
    """(label or None, evidence) from the sections of ``info`` (and its detached debug file)."""
    for name in GO_SECTIONS:
        if name in info.sections:
            return "go", f"section {name}"
    label = comment_toolchain(info.comment)
    if label == "rust":
        return "rust", "comment"
    if info.gdb_scripts and b"rust" in info.gdb_scripts.lower():
        return "rust", "section .debug_gdb_scripts"
    if label is not None:
        return label, "comment"
    if debug_info is not None:
        label = comment_toolchain(debug_info.comment)
        if label is not None:
            return label, "debug-file"
    return None, "none"


def debug_file(build_id: str | None, debug_dirs: Sequence[str] = DEBUG_DIRS) -> ElfInfo | None:
    """The detached debug file of a build ID, if one is installed."""
    if not build_id or len(build_id) < 3:
        return None
    for folder in debug_dirs:
        candidate = Path(folder) / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
        if candidate.is_file():
            return read_elf(candidate)
    return None


def hash_and_markers(path: str | os.PathLike, markers: Sequence[bytes] = FOREIGN_MARKERS) -> tuple[str, list[bytes]]:
    """(sha256 hex of the whole file, the markers found in it), in one pass of 1 MiB reads."""
    digest, found, tail = hashlib.sha256(), set(), b""
    overlap = max((len(m) for m in markers), default=1) - 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            window = tail + chunk
            found.update(m for m in markers if m not in found and m in window)
            tail = window[-overlap:] if overlap else b""
    return digest.hexdigest(), sorted(found)


# -------------------------------------------------------------------------------------- ownership


def _usrmerge(path: str) -> Iterable[str]:
    yield path
    for prefix in ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"):
        if path.startswith(prefix):
            yield "/usr" + path
            return


def dpkg_owners(info_dir: Path = DPKG_INFO) -> dict[str, str]:
    """Path -> binary package, from dpkg's ``*.list`` files (``/lib/...`` also as ``/usr/lib/...``)."""
    owners: dict[str, str] = {}
    if not info_dir.is_dir():
        return owners
    for listing in sorted(info_dir.glob("*.list")):
        package = listing.name[: -len(".list")].split(":")[0]
        try:
            lines = listing.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        except OSError:
            continue
        for line in lines:
            for path in _usrmerge(line.strip()):
                owners.setdefault(path, package)
    return owners


def dpkg_sources(status: Path = DPKG_STATUS) -> dict[str, str]:
    """Binary package -> source package, from dpkg's status file."""
    sources: dict[str, str] = {}
    try:
        text = status.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return sources
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, flags=re.M))
        if "Package" in fields:
            sources[fields["Package"]] = fields.get("Source", fields["Package"]).split()[0] or fields["Package"]
    return sources


def debian_packages(packages: Iterable[str]) -> set[str]:
    """The packages that ``apt-cache policy`` knows from a debian.org archive (any version)."""
    names = sorted(set(packages))
    if not names or not shutil.which("apt-cache"):
        return set()
    found: set[str] = set()
    for start in range(0, len(names), 200):
        try:
            out = subprocess.run(
                ["apt-cache", "policy", *names[start : start + 200]],
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        current = None
        for line in out.splitlines():
            head = re.match(r"^(\S+):$", line)
            if head:
                current = head.group(1).split(":")[0]
            elif current and re.match(r"^\s+-?\d+ \S*debian\.org", line):
                found.add(current)
    return found


class Groups:
    """The group (origin) of a file: Debian source package, Python distribution, or folder."""

    def __init__(self, owners: dict[str, str] | None = None, sources: dict[str, str] | None = None):
        self.owners = owners or {}
        self.sources = sources or {}
        self.extracted: dict[str, tuple[str, str]] = {}  # unpacked .deb folder -> (package, source)
        self._records: dict[str, dict[str, str]] = {}

    def package(self, path: str, real: str) -> str | None:
        """The Debian binary package that ships ``path`` (installed or downloaded), if any."""
        for candidate in (path, real):
            if candidate in self.owners:
                return self.owners[candidate]
        for folder, (package, _source) in self.extracted.items():
            if real.startswith(folder + os.sep):
                return package
        return None

    def _record(self, site: str) -> dict[str, str]:
        """Relative path -> distribution name from the ``*.dist-info/RECORD`` files of a site-packages."""
        if site not in self._records:
            mapping: dict[str, str] = {}
            for record in sorted(Path(site).glob("*.dist-info/RECORD")):
                dist = record.parent.name.split("-")[0].lower().replace(".", "_")
                try:
                    with open(record, newline="", encoding="utf-8") as f:
                        for row in csv.reader(f):
                            if row:
                                mapping.setdefault(os.path.normpath(row[0]), dist)
                except (OSError, UnicodeDecodeError, csv.Error):
                    continue
            self._records[site] = mapping
        return self._records[site]

    def group(self, path: str, real: str) -> str:
        package = self.package(path, real)
        if package is not None:
            for folder, (pkg, source) in self.extracted.items():
                if pkg == package and real.startswith(folder + os.sep):
                    return f"deb:{source}"
            return f"deb:{self.sources.get(package, package)}"
        for marker in ("/site-packages/", "/dist-packages/"):
            if marker in real:
                site, rel = real.split(marker, 1)
                site += marker.rstrip("/")
                dist = self._record(site).get(os.path.normpath(rel))
                top = rel.split("/", 1)[0]
                if dist is None:
                    dist = re.sub(r"\.libs$", "", top).split(".")[0].lower()
                return f"pypi:{dist}"
        return f"dir:{os.path.dirname(real)}"


# -------------------------------------------------------------------------------------- collecting


@dataclass
class Candidate:
    path: str
    size: int
    sha256: str
    label: str | None
    evidence: str
    group: str
    package: str | None
    head: bytes  # first 1,024 bytes (for the header check)
    kind: str
    markers: list[bytes] = field(default_factory=list)
    dynamic: DynamicInfo | None = None  # PT_DYNAMIC and .dynstr (for the language label)
    toolchain: str | None = None  # the toolchain label, kept when the language label replaces it
    head_128k: bytes | None = None  # the first 2**17 bytes, read for the chosen files (string rule)


def walk_files(roots: Sequence[str], exclude: Sequence[str] = EXCLUDE_DIRS) -> Iterable[tuple[str, str]]:
    """(path, realpath) of the regular files under ``roots``, symlinks skipped, each real file once."""
    excluded = {os.path.realpath(e) for e in exclude}
    seen: set[str] = set()
    for root in roots:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(
                d
                for d in subfolders
                if os.path.realpath(os.path.join(folder, d)) not in excluded
                and not os.path.islink(os.path.join(folder, d))
            )
            for name in sorted(names):
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    continue
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                yield path, real


def collect(
    roots: Sequence[str],
    groups: Groups,
    *,
    exclude: Sequence[str] = EXCLUDE_DIRS,
    debug_dirs: Sequence[str] = DEBUG_DIRS,
    min_size: int = MIN_SIZE,
    skipped: Counter | None = None,
) -> list[Candidate]:
    """ELF executables and shared libraries under ``roots``, labelled, deduplicated by content."""
    skipped = Counter() if skipped is None else skipped
    found: list[Candidate] = []
    by_hash: set[str] = set()
    inodes: set[tuple[int, int]] = set()
    for path, real in walk_files(roots, exclude):
        try:
            st = os.stat(real)
        except OSError:
            skipped["unreadable"] += 1
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if (st.st_dev, st.st_ino) in inodes:
            skipped["hard link duplicate"] += 1
            continue
        inodes.add((st.st_dev, st.st_ino))
        if st.st_size < min_size:
            skipped["smaller than min size"] += 1
            continue
        try:
            with open(real, "rb") as f:
                head = f.read(1024)
        except OSError:
            skipped["unreadable"] += 1
            continue
        if head[:4] != ELF_MAGIC:
            skipped["not ELF"] += 1
            continue
        info = read_elf(real)
        if info is None:
            skipped["malformed ELF"] += 1
            continue
        if info.e_type not in (ET_EXEC, ET_DYN):
            skipped["not an executable or shared library"] += 1
            continue
        if info.debug_only:
            skipped["detached debug file"] += 1
            continue
        dbg = debug_file(info.build_id, debug_dirs) if info.comment is None else None
        label, evidence = toolchain(info, dbg)
        try:
            digest, markers = hash_and_markers(real)
        except OSError:
            skipped["unreadable"] += 1
            continue
        if digest in by_hash:
            skipped["duplicate content"] += 1
            continue
        by_hash.add(digest)
        found.append(
            Candidate(
                path=os.path.abspath(real),
                size=st.st_size,
                sha256=digest,
                label=label,
                evidence=evidence if label is not None or info.sections else "no section table",
                group=groups.group(path, real),
                package=groups.package(path, real),
                head=head,
                kind=info.kind,
                markers=markers,
                dynamic=read_dynamic(real),
            )
        )
    return found


def apply_debian_default(cands: list[Candidate], debian: set[str], skipped: Counter) -> None:
    """Label gcc the unlabelled files of Debian-archive packages that have no foreign-language marker."""
    for c in cands:
        if c.label is not None:
            continue
        if c.evidence != "none":
            skipped[f"unlabelled ({c.evidence})"] += 1
        elif c.package is None or c.package not in debian:
            skipped["unlabelled (no .comment, not from the Debian archive)"] += 1
        elif c.markers:
            skipped["unlabelled (no .comment, foreign-language strings)"] += 1
        else:
            c.label, c.evidence = "gcc", "debian-default"


def apply_language(cands: list[Candidate], skipped: Counter) -> None:
    """Relabel the candidates by language: ``cxx`` (DT_NEEDED libstdc++.so*) or ``c``, among files
    labelled ``gcc`` (any rule) that hold no foreign-language marker and have a PT_DYNAMIC segment.
    Everything else (Go, Rust, clang, unlabelled, static without PT_DYNAMIC, libstdc++ itself) loses its label."""
    for c in cands:
        c.toolchain = c.label
        if c.label != "gcc":
            if c.label is not None:
                skipped[f"language: toolchain {c.label}, not gcc"] += 1
            c.label = None
            continue
        c.label = None
        if c.markers:
            skipped["language: foreign-language strings"] += 1
            continue
        if os.path.basename(c.path).startswith("libstdc++.so"):
            skipped["language: libstdc++ itself (C++ that does not need libstdc++)"] += 1
            continue
        label, evidence = language(c.dynamic)
        if label is None:
            skipped[f"language: {evidence}"] += 1
            continue
        c.label, c.evidence = label, f"{evidence} ({c.evidence})"


# ------------------------------------------------------------------------------- selecting, splitting


def seeded_hash(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")


def select(
    cands: list[Candidate],
    *,
    seed: int,
    max_per_group: int | None,
    max_per_class: int | None,
    min_per_class: int,
    classes: Sequence[str] | None = None,
    skipped: Counter | None = None,
    balance: bool = False,
) -> list[Candidate]:
    """Labelled candidates capped per (group, class), then per class; classes under ``min_per_class`` dropped.
    With ``balance`` every class is also capped at the size of the smallest class kept."""
    skipped = Counter() if skipped is None else skipped
    labelled = [c for c in cands if c.label is not None]
    wanted = set(CLASSES if classes is None else classes)
    for c in labelled:
        if c.label not in wanted:
            skipped[f"class {c.label} not wanted"] += 1
    labelled = [c for c in labelled if c.label in wanted]
    by_group: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for c in labelled:
        by_group[c.group, c.label].append(c)
    kept: list[Candidate] = []
    for key in sorted(by_group):
        members = sorted(by_group[key], key=lambda c: seeded_hash(seed, c.sha256))
        if max_per_group is not None and len(members) > max_per_group:
            skipped["over --max-per-group"] += len(members) - max_per_group
            members = members[:max_per_group]
        kept += members
    by_class: dict[str, list[Candidate]] = defaultdict(list)
    for c in kept:
        by_class[c.label].append(c)
    result: list[Candidate] = []
    for label in sorted(by_class):
        if len(by_class[label]) < min_per_class:
            skipped[f"class {label} under --min-per-class"] += len(by_class[label])
            del by_class[label]
    cap = max_per_class
    if balance and by_class:
        smallest = min(len(members) for members in by_class.values())
        cap = smallest if cap is None else min(cap, smallest)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda c: seeded_hash(seed, c.sha256))
        if cap is not None and len(members) > cap:
            skipped["over --max-per-class" if cap == max_per_class else "over the smallest class (balance)"] += (
                len(members) - cap
            )
            members = members[:cap]
        result += members
    return sorted(result, key=lambda c: (c.label, c.group, c.path))


def assign_splits(
    items: Sequence[tuple[str, str]], *, seed: int, fractions: Sequence[float] = FRACTIONS
) -> dict[str, str]:
    """Group -> split for (group, label) items, so that each class is split ≈ ``fractions``.

    Groups are taken largest first (ties: seeded hash of the name); each goes whole to the split whose
    share of the group's classes is furthest below its target. Deterministic for a given seed.
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for group, label in items:
        counts[group][label] += 1
    totals = Counter(label for _group, label in items)
    current = {split: Counter() for split in SPLITS}
    order = sorted(counts, key=lambda g: (-sum(counts[g].values()), seeded_hash(seed, g), g))
    result: dict[str, str] = {}
    for group in order:

        def deficit(index: int, group: str = group) -> float:
            split = SPLITS[index]
            return sum(
                n * (fractions[index] * totals[label] - current[split][label]) / totals[label]
                for label, n in counts[group].items()
            )

        best = max(range(len(SPLITS)), key=lambda i: (deficit(i), -i))
        result[group] = SPLITS[best]
        current[SPLITS[best]].update(counts[group])
    return result


# ----------------------------------------------------------------------------------------- checks


def percentiles(values: Sequence[int], qs: Sequence[int] = (0, 10, 25, 50, 75, 90, 100)) -> dict[str, int]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {f"p{q}": ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] for q in qs}


def stump(train: Sequence[tuple[float, str]]) -> tuple[float, str, str]:
    """(threshold, label at or below, label above) of the best single-threshold classifier on ``train``."""
    ordered = sorted(train)
    labels = sorted({y for _x, y in ordered})
    right = Counter(y for _x, y in ordered)
    left: Counter = Counter()
    best = (right.most_common(1)[0][1], float("-inf"), labels[0], right.most_common(1)[0][0])
    for i, (x, y) in enumerate(ordered):
        left[y] += 1
        right[y] -= 1
        if i + 1 < len(ordered) and ordered[i + 1][0] == x:
            continue
        lo = max(labels, key=lambda k: (left[k], k))
        hi = max(labels, key=lambda k: (right[k], k))
        correct = left[lo] + right[hi]
        if correct > best[0]:
            best = (correct, x, lo, hi)
    return best[1], best[2], best[3]


def accuracy(rule, data: Sequence[tuple[float, str]]) -> float | None:
    return round(sum(rule(x) == y for x, y in data) / len(data), 4) if data else None


def size_baselines(rows: Sequence[tuple[Candidate, str]]) -> dict:
    """How well file size alone predicts the class: majority class, best single threshold, 16 size bins."""
    out = {}
    for name, feature in (
        ("min(size, 2**17)", lambda c: min(c.size, MAX_LEN)),
        ("size", lambda c: c.size),
    ):
        data = {s: [(feature(c), c.label) for c, split in rows if split == s] for s in SPLITS}
        fit = data["train"] or [x for s in SPLITS for x in data[s]]
        if not fit:
            return {}
        majority = Counter(y for _x, y in fit).most_common(1)[0][0]
        t, lo, hi = stump(fit)
        edges = sorted({x for x, _y in fit})
        cuts = [edges[round(i * (len(edges) - 1) / 16)] for i in range(1, 16)]
        bins: dict[int, Counter] = defaultdict(Counter)
        for x, y in fit:
            bins[bisect.bisect_left(cuts, x)][y] += 1

        def binned(x: float, bins: dict = bins, cuts: list = cuts, majority: str = majority) -> str:
            b = bins.get(bisect.bisect_left(cuts, x))
            return b.most_common(1)[0][0] if b else majority

        out[name] = {
            "majority class": {s: accuracy(lambda x, m=majority: m, data[s]) for s in SPLITS},
            "best single threshold": {
                "rule": f"<= {t:g} -> {lo}, else {hi}" if t != float("-inf") else "none beats the majority class",
                **{s: accuracy(lambda x, t=t, lo=lo, hi=hi: lo if x <= t else hi, data[s]) for s in SPLITS},
            },
            "16 quantile bins": {s: accuracy(binned, data[s]) for s in SPLITS},
        }
    return out


def masked_header(head: bytes) -> bytes:
    """The 64-byte ELF header with the per-file fields (e_entry, e_shoff, e_shnum, e_shstrndx) zeroed."""
    h = bytearray(head[:64].ljust(64, b"\0"))
    if h[4] == 2:
        h[24:32], h[40:48], h[60:64] = bytes(8), bytes(8), bytes(4)
    else:
        h[24:28], h[32:36], h[48:52] = bytes(4), bytes(4), bytes(4)
    return bytes(h)


def lookup_accuracy(rows: Sequence[tuple[Candidate, str]], key) -> dict:
    """Train a key -> majority class table, report its accuracy per split (unseen keys: majority class)."""
    train = [(key(c), c.label) for c, s in rows if s == "train"]
    if not train:
        return {}
    table: dict = defaultdict(Counter)
    for k, y in train:
        table[k][y] += 1
    majority = Counter(y for _k, y in train).most_common(1)[0][0]

    def predict(k):
        return table[k].most_common(1)[0][0] if k in table else majority

    return {s: accuracy(predict, [(key(c), c.label) for c, split in rows if split == s]) for s in SPLITS}


def header_check(rows: Sequence[tuple[Candidate, str]]) -> dict:
    """Can the label be read off the first bytes? Per class: distinct masked headers, the share of the
    commonest, the file kinds (exec/pie/shared, from the header and program headers); and the
    accuracy of lookup tables keyed on the masked header and on the program-header type sequence."""
    per_class = {}
    for label in sorted({c.label for c, _s in rows}):
        heads = Counter(masked_header(c.head) for c, _s in rows if c.label == label)
        n = sum(heads.values())
        per_class[label] = {
            "files": n,
            "distinct masked 64-byte headers": len(heads),
            "share of the commonest masked header": round(heads.most_common(1)[0][1] / n, 3),
            "kinds": dict(sorted(Counter(c.kind for c, _s in rows if c.label == label).items())),
            "commonest (e_type, e_phnum)": [
                [*key, n]
                for key, n in Counter(_type_phnum(c.head) for c, _s in rows if c.label == label).most_common(3)
            ],
        }
    shared = Counter(masked_header(c.head) for c, _s in rows)
    labels_per_header: dict[bytes, set] = defaultdict(set)
    for c, _s in rows:
        labels_per_header[masked_header(c.head)].add(c.label)
    return {
        "per class": per_class,
        "files whose masked header also occurs in another class": round(
            sum(n for h, n in shared.items() if len(labels_per_header[h]) > 1) / max(1, len(rows)), 3
        ),
        "lookup accuracy, masked 64-byte header": lookup_accuracy(rows, lambda c: masked_header(c.head)),
        "lookup accuracy, kind (exec/pie/shared)": lookup_accuracy(rows, lambda c: c.kind),
        "lookup accuracy, (e_type, e_phnum)": lookup_accuracy(rows, lambda c: _type_phnum(c.head)),
        "lookup accuracy, masked header + program header types": lookup_accuracy(
            rows, lambda c: (masked_header(c.head), _phdr_types(c.head))
        ),
    }


def _type_phnum(head: bytes) -> tuple[int, int]:
    """(e_type, e_phnum): two header fields that differ between toolchains' usual layouts."""
    end = "<" if head[5:6] != b"\2" else ">"
    return struct.unpack_from(end + "H", head, 16)[0], struct.unpack_from(end + "H", head, 56 if head[4] == 2 else 44)[
        0
    ]


def _phdr_types(head: bytes) -> tuple[int, ...]:
    """Program header types readable within the first 1,024 bytes (what a model could see)."""
    if len(head) < 64 or head[:4] != ELF_MAGIC:
        return ()
    end = "<" if head[5] == 1 else ">"
    if head[4] == 2:
        phoff = struct.unpack_from(end + "Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
    else:
        phoff = struct.unpack_from(end + "I", head, 28)[0]
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
    if phentsize < 4:
        return ()
    return tuple(
        struct.unpack_from(end + "I", head, phoff + i * phentsize)[0]
        for i in range(phnum)
        if phoff + i * phentsize + 4 <= len(head)
    )


OFFSET_LIMITS = (2**10, 2**12, 2**14, 2**16, 2**17)


def _share(values: Sequence[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def evidence_offsets(rows: Sequence[tuple[Candidate, str]]) -> dict:
    """Where the language evidence lies, per class: percentiles of the .dynstr offset (and of the
    libstdc++ string for cxx), and the share of files whose evidence starts (or ends) below each T."""
    out: dict = {}
    for label in sorted({c.label for c, _s in rows}):
        dyns = [c.dynamic for c, _s in rows if c.label == label and c.dynamic is not None]
        dynstr = [d.dynstr_offset for d in dyns if d.dynstr_offset is not None]
        entry: dict = {
            "files": len(dyns),
            ".dynstr offset percentiles": percentiles(dynstr),
            ".dynstr starts below T": {str(t): _share([o < t for o in dynstr]) for t in OFFSET_LIMITS},
            "first _Z name in .dynstr starts below T": {
                str(t): _share([d.first_mangled is not None and d.first_mangled < t for d in dyns])
                for t in OFFSET_LIMITS
            },
        }
        lib = [d.libstdcxx_offset for d in dyns if d.libstdcxx_offset is not None]
        if lib:
            entry['"libstdc++" string offset percentiles'] = percentiles(lib)
            entry['"libstdc++" string lies within the first T bytes'] = {
                str(t): _share([o + len(LIBSTDCXX) <= t for o in lib]) for t in OFFSET_LIMITS
            }
        out[label] = entry
    return out


def string_rule(rows: Sequence[tuple[Candidate, str]]) -> dict:
    """Accuracy per split of the rule "cxx iff the first T bytes contain ``libstdc++``" (nothing fitted):
    what a perfect reader of the evidence could reach at each T."""
    out = {}
    for t in OFFSET_LIMITS:
        out[str(t)] = {
            s: accuracy(
                lambda c, t=t: "cxx" if LIBSTDCXX in (c.head_128k or c.head)[:t] else "c",
                [(c, c.label) for c, split in rows if split == s],
            )
            for s in SPLITS
        }
    return out


def baselines(summary: dict) -> dict:
    """The trivial baselines (fitted on train) on val and test, gathered from the size and header checks."""
    size = summary["size-only baselines (fit on train)"].get("min(size, 2**17)", {})
    head = summary["first-bytes check"]
    pick = lambda d: {s: d.get(s) for s in ("val", "test")}  # noqa: E731
    out = {}
    if size:
        out["majority class"] = pick(size["majority class"])
        out["best single threshold on min(size, 2**17)"] = {
            "rule": size["best single threshold"]["rule"],
            **pick(size["best single threshold"]),
        }
    for name, key in (
        ("(e_type, e_phnum) lookup", "lookup accuracy, (e_type, e_phnum)"),
        ("masked 64-byte header lookup", "lookup accuracy, masked 64-byte header"),
        ("kind (exec/pie/shared) lookup", "lookup accuracy, kind (exec/pie/shared)"),
        (
            "masked header + program-header types in the first 1 KiB",
            "lookup accuracy, masked header + program header types",
        ),
    ):
        if head.get(key):
            out[name] = pick(head[key])
    return out


def file_records(rows: Sequence[tuple[Candidate, str]]) -> list[dict]:
    """One record per file: where its language evidence lies."""
    records = []
    for c, split in rows:
        d = c.dynamic
        records.append(
            {
                "path": c.path,
                "label": c.label,
                "split": split,
                "size": c.size,
                "dynstr_offset": d.dynstr_offset if d else None,
                "libstdcxx_offset": d.libstdcxx_offset if d else None,
                "first_mangled_offset": d.first_mangled if d else None,
            }
        )
    return records


# ---------------------------------------------------------------------------------------- download


def download(packages: Sequence[str], debs: Path, groups: Groups, log=print) -> Path:
    """Fetch ``packages`` with ``apt-get download`` into DEBS/_archives and unpack each into
    DEBS/<package>/ (cached); register the folders with ``groups``. Returns DEBS."""
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            sys.exit(f"--download needs {tool}")
    archives = debs / "_archives"
    archives.mkdir(parents=True, exist_ok=True)
    index_path = debs / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    missing = [p for p in packages if p not in index]
    apt = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download"]
    for start in range(0, len(missing), 25):
        batch = missing[start : start + 25]
        if subprocess.run([*apt, *batch], cwd=archives, capture_output=True, check=False).returncode != 0:
            for package in batch:  # one unavailable name fails the whole batch: retry one by one
                result = subprocess.run([*apt, package], cwd=archives, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    log(f"apt-get download {package} failed: {result.stderr.strip().splitlines()[-1:]}")
    for deb in sorted(archives.glob("*.deb")):
        fields = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Package", "Source", "Version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        meta = dict(re.findall(r"^(\w+): (.*)$", fields, flags=re.M))
        package = meta["Package"]
        if package in index or package not in packages:
            continue
        target = debs / package
        if target.exists():
            shutil.rmtree(target)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
        index[package] = {
            "source": meta.get("Source", package).split()[0],
            "version": meta.get("Version", ""),
            "deb": deb.name,
        }
        index_path.write_text(json.dumps(index, indent=1, sort_keys=True))
    register_downloads(debs, groups)
    return debs


def read_package_names(path: Path) -> list[str]:
    """The package names of a list file: whitespace-separated words, ``#`` to the end of a line a comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        sys.exit(f"--packages-file {path}: {error}")
    names = [word for line in text.splitlines() for word in line.split("#", 1)[0].split()]
    bad = [name for name in names if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", name)]
    if bad:
        sys.exit(f"--packages-file {path}: not Debian package names: {' '.join(bad[:5])}")
    return names


def register_downloads(debs: Path, groups: Groups) -> dict:
    """Tell ``groups`` which package (and source package) each unpacked folder under ``debs`` holds."""
    index_path = debs / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    for package, meta in index.items():
        groups.extracted[str((debs / package).resolve())] = (package, meta["source"])
    return index


# -------------------------------------------------------------------------------------------- main


def debian_version() -> str:
    try:
        fields = dict(re.findall(r'^(\w+)="?(.*?)"?$', Path("/etc/os-release").read_text(), flags=re.M))
    except OSError:
        fields = {}
    point = Path("/etc/debian_version")
    return f"{fields.get('PRETTY_NAME', 'unknown')}; /etc/debian_version {point.read_text().strip() if point.is_file() else '?'}"


def summarize(rows: list[tuple[Candidate, str]], args: argparse.Namespace, skipped: Counter, extra: dict) -> dict:
    classes = sorted({c.label for c, _s in rows})
    counts = {label: {s: sum(1 for c, sp in rows if c.label == label and sp == s) for s in SPLITS} for label in classes}
    for label in classes:
        counts[label]["total"] = sum(counts[label][s] for s in SPLITS)
    groups = {
        label: {s: len({c.group for c, sp in rows if c.label == label and sp == s}) for s in SPLITS}
        for label in classes
    }
    sizes = {label: [c.size for c, _s in rows if c.label == label] for label in classes}
    summary = {
        "label": args.label,
        "classes": classes,
        "counts": counts,
        "split totals": {s: sum(1 for _c, sp in rows if sp == s) for s in SPLITS},
        "groups per class and split": groups,
        "evidence per class": {
            label: dict(sorted(Counter(c.evidence for c, _s in rows if c.label == label).items())) for label in classes
        },
        "size percentiles (bytes)": {label: percentiles(sizes[label]) for label in classes},
        f"share of files of at least {MAX_LEN} bytes": {
            label: round(sum(s >= MAX_LEN for s in sizes[label]) / len(sizes[label]), 3) for label in classes
        },
        "size-only baselines (fit on train)": size_baselines(rows),
        "first-bytes check": header_check(rows),
    }
    summary["baselines (fit on train)"] = baselines(summary)
    if args.label == "language":
        summary["kinds per class (exec/pie/shared)"] = {
            label: dict(sorted(Counter(c.kind for c, _s in rows if c.label == label).items())) for label in classes
        }
        summary["evidence offsets"] = evidence_offsets(rows)
        summary['string rule: cxx iff "libstdc++" in the first T bytes (nothing fitted)'] = string_rule(rows)
    summary.update(
        {
            "skipped": dict(sorted(skipped.items())),
            **extra,
            "debian": debian_version(),
            "command": shlex.join([sys.executable, *sys.argv]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": args.seed,
        }
    )
    if args.label == "language":
        summary["files"] = file_records(rows)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--label",
        choices=LABELS,
        default="language",
        help="language: cxx vs c among GCC-built files (DT_NEEDED libstdc++; default); "
        "toolchain: gcc / go / rust (given away by the first 64 bytes, see docs/BINARIES.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output folder (default: data/binaries for --label language, data/binaries-toolchain for toolchain)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the group order and the capping (default 0)")
    p.add_argument(
        "--max-per-class",
        type=int,
        help="cap on files per class (default 200 for toolchain, 500 for language; 0: none)",
    )
    p.add_argument(
        "--no-balance",
        action="store_true",
        help="language: do not cap every class at the size of the smallest one",
    )
    p.add_argument(
        "--only-libraries",
        action="store_true",
        help="keep only shared libraries (ET_DYN without PT_INTERP), so the header's file kind gives nothing away",
    )
    p.add_argument(
        "--max-per-group", type=int, default=20, help="cap on files per group and class (default 20; 0: none)"
    )
    p.add_argument("--min-per-class", type=int, default=50, help="drop classes with fewer files (default 50)")
    p.add_argument(
        "--min-size",
        type=int,
        default=MIN_SIZE,
        help=f"skip smaller files (default {MIN_SIZE}; {MAX_LEN} leaves no padding, hence no size cue, at max_len 2**17)",
    )
    p.add_argument(
        "--classes",
        help=f"comma-separated classes to keep (default: all of {','.join(CLASSES)} that reach --min-per-class)",
    )
    p.add_argument(
        "--download", action="store_true", help="also fetch and unpack the Debian packages listed in this script"
    )
    p.add_argument(
        "--packages-file",
        type=Path,
        help="also fetch and unpack the Debian packages named in this file (whitespace-separated, # comments), "
        "e.g. research/binaries_packages.txt for the larger language split",
    )
    p.add_argument("--debs", type=Path, help="cache of downloaded packages (default: OUT/debs)")
    p.add_argument(
        "--roots",
        nargs="+",
        help=f"folders to search (default: {' '.join(LANGUAGE_ROOTS)} for language; "
        f"{' '.join(DEFAULT_ROOTS)} for toolchain)",
    )
    p.add_argument("--no-debian-default", action="store_true", help="do not label stripped Debian C/C++ files gcc")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = REPO / "data" / ("binaries" if args.label == "language" else "binaries-toolchain")
    if args.max_per_class is None:
        args.max_per_class = 500 if args.label == "language" else 200
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    debs = (args.debs or out / "debs").resolve()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    groups = Groups(dpkg_owners(DPKG_INFO), dpkg_sources(DPKG_STATUS))
    default_roots = LANGUAGE_ROOTS if args.label == "language" else DEFAULT_ROOTS
    roots = [os.path.abspath(r) for r in (args.roots or default_roots) if os.path.isdir(r)]
    extra: dict = {"roots": roots}
    packages = [*RUST_PACKAGES, *GO_PACKAGES] if args.download else []
    if args.packages_file is not None:
        packages += read_package_names(args.packages_file)
    if packages:
        debs = download(sorted(set(packages)), debs, groups, log)
        roots = [str(debs), *roots]
        extra["downloaded packages (see debs/index.json)"] = len(groups.extracted)
    else:  # earlier downloads still get their package groups if --roots names them
        register_downloads(debs, groups)
    skipped: Counter = Counter()
    log(f"scanning {' '.join(roots)}")
    cands = collect(
        roots,
        groups,
        exclude=[*EXCLUDE_DIRS, str(debs / "_archives")],
        debug_dirs=DEBUG_DIRS,
        min_size=args.min_size,
        skipped=skipped,
    )
    log(f"{len(cands)} distinct ELF executables and shared libraries")
    if not args.no_debian_default:
        debian = debian_packages(c.package for c in cands if c.label is None and c.package)
        debian |= {package for package, _source in groups.extracted.values()}
        apply_debian_default(cands, debian, skipped)
    if args.label == "language":
        extra["toolchain labels before relabelling"] = dict(sorted(Counter(str(c.label) for c in cands).items()))
        apply_language(cands, skipped)
    if args.only_libraries:
        for c in cands:
            if c.label is not None and c.kind != "shared":
                skipped[f"--only-libraries: {c.kind}"] += 1
                c.label = None
    extra["labels before capping"] = dict(sorted(Counter(str(c.label) for c in cands).items()))
    classes = args.classes.split(",") if args.classes else None
    if classes is None and args.label == "language":
        classes = list(LANGUAGE_CLASSES)
    chosen = select(
        cands,
        seed=args.seed,
        max_per_group=args.max_per_group or None,
        max_per_class=args.max_per_class or None,
        min_per_class=args.min_per_class,
        classes=classes,
        skipped=skipped,
        balance=args.label == "language" and not args.no_balance,
    )
    if not chosen:
        sys.exit("no class reached --min-per-class; nothing written")
    split_of = assign_splits([(c.group, c.label) for c in chosen], seed=args.seed)
    rows = [(c, split_of[c.group]) for c in chosen]
    language_mode = args.label == "language"
    if language_mode:  # the first 2**17 bytes, for the string rule
        for c, _split in rows:
            with open(c.path, "rb") as f:
                c.head_128k = f.read(MAX_LEN)
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        extra_columns = ["dynstr_offset", "libstdcxx_offset"] if language_mode else []
        writer.writerow(["path", "label", "split", "group", "evidence", "size", *extra_columns])
        for c, split in rows:
            cells = [c.path, c.label, split, c.group, c.evidence, c.size]
            if language_mode:
                d = c.dynamic
                cells += [d.dynstr_offset if d else "", d.libstdcxx_offset if d and d.libstdcxx_offset else ""]
            writer.writerow(cells)
    summary = summarize(rows, args, skipped, extra)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    printed = {k: v for k, v in summary.items() if k != "files"}
    if "files" in summary:
        printed["files"] = f"{len(summary['files'])} per-file evidence offsets: see summary.json"
    print(json.dumps(printed, indent=2))
    log(f"wrote {out / 'manifest.csv'} ({len(rows)} files) and {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
