"""Reading input files safely: folders and tar archives alike, bounded gzip reads, TSV rows, images.

Tar archives are read member by member in one streaming pass, in memory: nothing is ever
extracted to disk, and only regular members with relative, ``..``-free names are seen (links,
devices and absolute or escaping names are ignored). Hidden files (a name starting with ``.``,
such as macOS ``._*`` companions) are ignored in folders and archives alike. In folders, symbolic
links to regular files are followed (the folder is the user's own), but only regular files are
ever opened: FIFOs, sockets and devices are skipped (a FIFO would block a reader forever), and
opening never blocks. TSV lines longer than ``max_line_bytes`` (64 MiB) are reported as malformed
rows without being held in memory.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from .base import DataError
from .common import BadInputs
from .optional import pil_image

__all__ = [
    "GRAY_WEIGHTS",
    "MAX_LINE_BYTES",
    "NotRegularFile",
    "decode_image",
    "iter_rows",
    "iter_tree",
    "open_regular",
    "read_prefix",
    "require_path",
    "rgb_to_gray",
    "single_root",
]

#: LRA's grayscale (``tf.image.rgb_to_grayscale``): 0.2989 R + 0.5870 G + 0.1140 B.
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])

_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)
#: Longest TSV line read (bytes); a longer one is a malformed row, skipped without being kept.
MAX_LINE_BYTES = 64 * 2**20


class NotRegularFile(OSError):
    """The path is a directory, FIFO, socket or device, not a regular file."""


def open_regular(path: str | Path):
    """Open a regular file for reading in binary mode, following symbolic links.

    Never blocks (a FIFO is refused, not waited on): raises :class:`NotRegularFile` for anything
    but a regular file, and OSError as ``open`` does (missing, permission denied, …).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise NotRegularFile(errno.EISDIR, "Is a directory", str(path))
            raise NotRegularFile(errno.EINVAL, "Not a regular file (a FIFO, socket or device)", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def require_path(path: str | Path, expected: str) -> Path:
    """``path`` as a Path, or DataError naming it and what was expected there."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: not found (expected {expected})")
    return path


def _safe_name(name: str) -> str | None:
    """A member name relative to the archive root, or None for absolute, escaping or hidden names."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or parts[-1].startswith("."):
        return None
    parts = tuple(p for p in parts if p != ".")
    return "/".join(parts) or None


MaxBytes = int | None | Callable[[str], int | None]


def iter_tree(
    path: str | Path,
    select: Callable[[str], bool],
    *,
    expected: str,
    max_bytes: MaxBytes = None,
    bad: BadInputs | None = None,
) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each regular file in a folder or tar archive whose name passes ``select``.

    Names are POSIX paths relative to the folder or archive root. Content is cut at
    ``max_bytes`` (a number, or a function of the name; None = whole file). A corrupt or
    unreadable archive raises DataError naming it. A file of a folder that cannot be read (it
    vanished or changed since the listing) is reported to ``bad`` as "unreadable file" (a
    DataError naming it unless skipping), or without ``bad`` raises DataError naming it.
    """
    path = require_path(path, expected)
    cap = max_bytes if callable(max_bytes) else lambda _name: max_bytes
    if path.is_dir():
        yield from _iter_folder(path, select, cap, bad)
    else:
        yield from _iter_tar(path, select, cap)


def _read(stream, max_bytes: int | None) -> bytes:
    return stream.read() if max_bytes is None else stream.read(max_bytes)


def _iter_folder(
    root: Path, select: Callable[[str], bool], cap: Callable[[str], int | None], bad: BadInputs | None
) -> Iterator[tuple[str, bytes]]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        relative = Path(folder).relative_to(root).as_posix()
        for file in sorted(files):
            name = file if relative == "." else f"{relative}/{file}"
            if file.startswith(".") or not select(name):
                continue
            path = Path(folder) / file
            try:
                with open_regular(path) as f:
                    content = _read(f, cap(name))
            except OSError as e:
                if isinstance(e, NotRegularFile) and e.errno != errno.EISDIR:
                    continue  # a FIFO, socket or device: as in archives, only regular files are data
                # vanished, unreadable, a dangling link, or a folder now (os.walk listed a file)
                message = f"{path}: cannot read ({e.strerror or e})"
                if bad is None:
                    raise DataError(message) from e
                bad("unreadable file", message)
                continue
            yield name, content


def _iter_tar(
    archive: Path, select: Callable[[str], bool], cap: Callable[[str], int | None]
) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = _safe_name(member.name)
                if not member.isreg() or name is None or not select(name):
                    continue
                yield name, _read(tar.extractfile(member), cap(name))
    except _ARCHIVE_ERRORS as e:
        raise DataError(f"{archive}: not a folder or a readable tar archive ({type(e).__name__}: {e})") from e


def single_root(roots: set[str], path: str | Path, what: str) -> str:
    """The one folder prefix under which a data set was found in ``path`` ("" = at its top)."""
    if len(roots) > 1:
        listed = ", ".join(sorted(r or "./" for r in roots))
        raise DataError(f"{path}: holds several {what} trees ({listed}); point to one of them")
    return next(iter(roots), "")


def read_prefix(path: str | Path, max_bytes: int) -> np.ndarray:
    """The first ``max_bytes`` bytes of a file as uint8, decompressing gzip files (magic 1f 8b) on the fly.

    Decompression stops after ``max_bytes`` output bytes, so a gzip bomb costs no more than a
    plain file. The file is only ever read, and only a regular file is opened (never blocks).
    Every failure is an OSError: :class:`NotRegularFile`, the errors of ``open``, and
    ``gzip.BadGzipFile`` for corrupt or truncated gzip data.
    """
    with open_regular(path) as f:
        magic = f.read(2)
        f.seek(0)
        if magic != b"\x1f\x8b":
            return np.frombuffer(f.read(max_bytes), dtype=np.uint8)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                data = g.read(max_bytes)
        except (EOFError, zlib.error) as e:  # not OSErrors: a truncated or corrupt stream
            raise gzip.BadGzipFile(f"truncated or corrupt gzip data ({type(e).__name__}: {e})") from e
    return np.frombuffer(data, dtype=np.uint8)


def _lines(f, max_line_bytes: int) -> Iterator[bytes | None]:
    """The lines of a binary file, each without its line end, or None for one longer than
    ``max_line_bytes`` (its rest is read and dropped, never held whole)."""
    while line := f.readline(max_line_bytes + 2):
        content = line.rstrip(b"\r\n")
        if len(content) <= max_line_bytes:
            yield content
            continue
        while line and not line.endswith(b"\n"):
            line = f.readline(1 << 20)
        yield None


def iter_rows(
    path: Path,
    columns: int,
    bad: BadInputs,
    *,
    header: tuple[bytes, ...] | None = None,
    limit: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[int, list[bytes]]]:
    """(line number, fields) of a tab-separated file without quoting, read as bytes line by line.

    A first line equal to ``header`` is skipped, blank lines are ignored, a row with the wrong
    number of columns or longer than ``max_line_bytes`` is reported to ``bad``. Fields are raw
    bytes: NUL bytes and any encoding pass through to the task's parser. Stops after ``limit``
    good rows.
    """
    yielded = 0
    try:
        with open_regular(path) as f:
            for lineno, content in enumerate(_lines(f, max_line_bytes), start=1):
                if content is None:
                    bad("malformed row", f"{path}:{lineno}: line longer than {max_line_bytes:,} bytes")
                    continue
                fields = content.split(b"\t")
                if lineno == 1 and header is not None and tuple(x.strip() for x in fields) == header:
                    continue
                if fields == [b""]:
                    continue
                if len(fields) != columns:
                    bad(
                        "malformed row", f"{path}:{lineno}: expected {columns} tab-separated columns, got {len(fields)}"
                    )
                    continue
                yield lineno, fields
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e


def decode_image(data: bytes | Path, name: str, *, mode: str, size: int | None = None) -> np.ndarray:
    """Decode an image file (bytes or a path) with Pillow into an array in ``mode`` ("RGB" or "L").

    Raises DataError naming the image when it cannot be decoded or is not ``size``×``size``;
    the size is checked from the header, before any pixel is decoded. Needs Pillow (``hrrformer[image]``).
    """
    Image = pil_image()
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else open_regular(data)  # never a FIFO
        with source, Image.open(source) as image:
            if size is not None and image.size != (size, size):
                raise DataError(f"{name}: image is {image.size[0]}×{image.size[1]}, expected {size}×{size}")
            return np.asarray(image if image.mode == mode else image.convert(mode))
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from e


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(…, 3) uint8 RGB → (…) uint8 gray, ``round(0.2989 R + 0.5870 G + 0.1140 B)`` as LRA."""
    return np.rint(rgb.astype(np.float64) @ GRAY_WEIGHTS).astype(np.uint8)
