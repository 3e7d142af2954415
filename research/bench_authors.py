"""``hrrformer bench`` with the authors' formulation of HRR attention as the method ``hrr-reference``.

The same command, workers and measurements as ``hrrformer bench`` (a fresh interpreter per
configuration, warm-up then timed runs, peak memory over the worker's baseline, timeouts and
``oom``): :func:`research.authors_attention.authors_hrr_attention` is added through
``--attention-function hrr-reference=research.authors_attention:authors_hrr_attention``, and without
``--attention`` every method runs, in BENCHMARKS.md's order: hrr, hrr-reference, softmax, linear,
elementwise. Every other flag is ``hrrformer bench``'s. From the repository root::

    .venv/bin/python -m research.bench_authors --seq-lens 1024,4096,16384,65536 --mode fwd+bwd --out runs/bench
    .venv/bin/python -m research.bench_authors --seq-lens 16384,131072 --mode fwd --attention hrr,hrr-reference,linear,elementwise
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hrrformer import cli
from hrrformer.bench_methods import METHODS

#: the method name BENCHMARKS.md's tables use for the authors' formulation.
NAME = "hrr-reference"
FUNCTION = "research.authors_attention:authors_hrr_attention"
ROOT = Path(__file__).resolve().parents[1]


def default_methods() -> list[str]:
    """Every method, the authors' formulation right after ``hrr``."""
    methods = list(METHODS)
    methods.insert(methods.index("hrr") + 1, NAME)
    return methods


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
    if not any(a == "--attention" or a.startswith("--attention=") for a in argv):
        argv += ["--attention", ",".join(default_methods())]
    # the workers import research.authors_attention: the repository root on their PYTHONPATH
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), before) if p)
    try:
        return cli.main(["bench", "--attention-function", f"{NAME}={FUNCTION}", *argv])
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


if __name__ == "__main__":
    raise SystemExit(main())
