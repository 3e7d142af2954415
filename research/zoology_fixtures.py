"""Make ``tests/fixtures/zoology/mqar.npz`` by running Zoology's own MQAR generator.

Zoology (HazyResearch/zoology) generates its multi-query associative recall data with
``multiquery_ar`` in ``zoology/data/multiquery_ar.py``. That function needs numpy and torch only,
so it runs with the project's venv; but the module's two imports pull in the rest of Zoology
(``zoology.config`` needs pydantic, and ``zoology.utils``, which it imports, wandb and pandas). So,
as :mod:`research.authors_fixtures` does with the Hrrformer authors' data loading, only those two
imports are stubbed (a base class for their ``MQARConfig`` and a holder for the ``DataSegment`` the
function returns) and the file is imported unchanged from a checkout of HazyResearch/zoology::

    OMP_NUM_THREADS=1 .venv/bin/python -m research.zoology_fixtures --zoology /tmp/zoology  # the checkout

Nothing of Zoology enters the package or the tests: only the fixture, which
``tests/test_mqar.py`` compares our generator (:mod:`hrrformer.data.mqar`) with, on statistics.
Their function seeds numpy's global state with ``seed`` and draws the noise tokens from torch's
global generator, which it leaves unseeded; here ``torch.manual_seed(seed)`` fixes it first.

The fixture holds, per setting NAME of :data:`SETTINGS`: ``NAME/inputs`` and ``NAME/labels``
(int16, (N, T), −100 where nothing is asked: their ``DataSegment``'s tensors), and ``meta``, a JSON
string (no pickle) with each setting's arguments, Zoology's commit and the versions used.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

#: name → the arguments of Zoology's ``multiquery_ar`` (their defaults: power_a 0.01, random_non_queries True).
SETTINGS: dict[str, dict[str, Any]] = {
    # Zoology's first setting (the Figure 2 sweep's V = 8,192, T = 64, 4 pairs)
    "v8192_t64_kv4": dict(vocab_size=8192, input_seq_len=64, num_kv_pairs=4, num_examples=2000, seed=0),
    # a longer one, with many pairs: the gap distribution over 112 places, 16 queries each
    "v8192_t256_kv16": dict(vocab_size=8192, input_seq_len=256, num_kv_pairs=16, num_examples=250, seed=1),
}
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "zoology" / "mqar.npz"


def load_generator(zoology: Path) -> types.ModuleType:
    """``<zoology>/zoology/data/multiquery_ar.py`` imported unchanged, its two Zoology imports stubbed."""

    class DataSegmentConfig:  # the base class of their MQARConfig (a pydantic model there)
        pass

    class DataSegment:  # what multiquery_ar returns (a dataclass there)
        def __init__(self, inputs: Any, labels: Any, slices: dict | None = None) -> None:
            self.inputs, self.labels, self.slices = inputs, labels, slices

    stubs = {
        "zoology": {},
        "zoology.config": {"DataSegmentConfig": DataSegmentConfig},
        "zoology.data": {},
        "zoology.data.utils": {"DataSegment": DataSegment},
    }
    for name, attributes in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    path = zoology / "zoology" / "data" / "multiquery_ar.py"
    spec = importlib.util.spec_from_file_location("zoology_multiquery_ar", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commit_of(zoology: Path) -> str | None:
    """The checkout's commit, where it is a git work tree."""
    try:
        result = subprocess.run(["git", "-C", str(zoology), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return result.stdout.strip() or None


def make_fixture(zoology: Path, commit: str | None) -> dict[str, np.ndarray]:
    """Run their generator for every setting; the arrays to save."""
    import torch

    generator = load_generator(zoology)
    arrays: dict[str, np.ndarray] = {}
    for name, setting in SETTINGS.items():
        torch.manual_seed(setting["seed"])  # their noise tokens come from torch's global generator
        segment = generator.multiquery_ar(**setting)
        arrays[f"{name}/inputs"] = segment.inputs.numpy().astype(np.int16)
        arrays[f"{name}/labels"] = segment.labels.numpy().astype(np.int16)
    meta = {
        "zoology_repo": "HazyResearch/zoology",
        "zoology_commit": commit,
        "zoology_file": "zoology/data/multiquery_ar.py",
        "settings": SETTINGS,
        "defaults": {"power_a": 0.01, "random_non_queries": True, "num_passes": 1},
        "noise_seed": "torch.manual_seed(seed) before each call",
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoology", type=Path, required=True, help="a checkout of HazyResearch/zoology")
    parser.add_argument("--commit", help="Zoology's commit, recorded in meta (default: the checkout's HEAD)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    arrays = make_fixture(args.zoology.resolve(), args.commit or commit_of(args.zoology))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes): {', '.join(SETTINGS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
