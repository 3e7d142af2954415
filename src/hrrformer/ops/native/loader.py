"""Build ``parts.c`` with the system C compiler at first use and load it through :mod:`ctypes`.

The library is compiled once per source, compiler and CPU, ``-O3 -march=native -fopenmp``, into
``<cache>/native/<key>/parts.so`` (:func:`hrrformer.cache.default_cache_dir`), written under a
temporary name and renamed, so processes that build at once (the ranks of a DDP job) never load a
half-written file. ``HRRFORMER_NATIVE=0`` turns the kernels off; where no compiler is found or
the build fails, :func:`library` returns None once with a warning, and the layer parts run their
eager PyTorch code, which computes the same functions.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from ...cache import default_cache_dir

__all__ = ["FLAGS", "build", "enabled", "find_compiler", "library"]

SOURCE = Path(__file__).with_name("parts.c")
#: The compiler flags. No -ffast-math: it would let the compiler drop NaN checks and, in a shared
#: library, can set flush-to-zero for the whole process. The exponential is written out in parts.c.
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-std=c11")
_OPENMP = "-fopenmp"

_i64, _int, _float, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {  # name → argument types (every function returns void)
    "conv_silu_forward": [_ptr, _ptr, _int, _ptr, _ptr, _int, _ptr, *[_i64] * 3, *[_i64] * 5, _int],
    "conv_silu_backward": [_ptr, _int, _ptr, *[_i64] * 3, _ptr, _ptr, _int, _ptr, _ptr, _ptr, _ptr, *[_i64] * 5, _int],
    "gate_forward": [_ptr, *[_i64] * 3, _ptr, _int, _ptr, _ptr, _int, _ptr, *[_i64] * 4, _float, _int],
    "gate_backward": [_ptr, _int, _ptr, *[_i64] * 3, _ptr, _int, _ptr, _ptr, _ptr, _ptr, _ptr, *[_i64] * 4, _int],
}


def enabled() -> bool:
    """False where ``HRRFORMER_NATIVE=0`` turns the native kernels off."""
    return os.environ.get("HRRFORMER_NATIVE", "1") != "0"


def find_compiler() -> str | None:
    """The C compiler: ``$CC`` where it is set (None if it is not found), else cc, gcc or clang."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def _cpu_identity() -> str:
    """The model and flags lines of /proc/cpuinfo (-march=native code is only valid on that CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def build(compiler: str, directory: Path) -> Path:
    """Compile ``parts.c`` into ``directory``/parts.so (with OpenMP where the compiler has it, else
    without: one thread) and return its path. RuntimeError with the compiler's message on failure."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "parts.so"
    errors = []
    for extra in ((_OPENMP,), ()):
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".so", delete=False) as tmp:
            partial = Path(tmp.name)
        command = [compiler, *FLAGS, *extra, "-o", str(partial), str(SOURCE)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            os.replace(partial, target)
            return target
        partial.unlink(missing_ok=True)
        errors.append(f"$ {' '.join(command)}\n{result.stderr.strip()}")
    raise RuntimeError("building the native layer-part kernels failed:\n" + "\n".join(errors))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; None where they are off or cannot be built."""
    if not enabled() or platform.system() != "Linux":
        return None
    compiler = find_compiler()
    if compiler is None:
        warnings.warn("no C compiler found ($CC, cc, gcc or clang): the layer parts run in eager PyTorch", stacklevel=2)
        return None
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, *FLAGS, _cpu_identity()]).encode()).hexdigest()[:16]
    path = default_cache_dir() / "native" / key / "parts.so"
    try:
        if not path.exists():
            build(compiler, path.parent)
        lib = ctypes.CDLL(str(path))
    except (OSError, RuntimeError) as error:
        warnings.warn(f"{error}\nthe layer parts run in eager PyTorch", stacklevel=2)
        return None
    for name, argtypes in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, None
    return lib
