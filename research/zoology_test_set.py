"""Write one setting of the Zoology fixture as a test set that ``hrrformer eval --data`` reads.

``tests/fixtures/zoology/mqar.npz`` holds sequences made by Zoology's own ``multiquery_ar``
(:mod:`research.zoology_fixtures`, their code at the commit its ``meta`` names). This writes the
setting's ``inputs`` and ``labels`` as ``DIR/test.npz`` (int64, −100 where nothing is asked), so a
trained MQAR run is scored on Zoology's data rather than on our generator's::

    .venv/bin/python -m research.zoology_test_set v8192_t64_kv4 data/mqar/zoology-T64-P4
    .venv/bin/hrrformer eval runs/mqar/RUN --data data/mqar/zoology-T64-P4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "zoology" / "mqar.npz"


def write_test_set(setting: str, out_dir: Path, fixture: Path = FIXTURE) -> Path:
    """``out_dir/test.npz`` with the fixture's ``setting``; returns its path."""
    with np.load(fixture) as data:
        settings = json.loads(str(data["meta"]))["settings"]
        if setting not in settings:
            raise ValueError(f"{fixture}: no setting {setting!r}; it has {', '.join(sorted(settings))}")
        inputs, labels = (data[f"{setting}/{name}"].astype(np.int64) for name in ("inputs", "labels"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "test.npz"
    np.savez(path, inputs=inputs, labels=labels)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", help="a setting of the fixture, e.g. v8192_t64_kv4")
    parser.add_argument("out", type=Path, help="the data directory to write test.npz into")
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    path = write_test_set(args.setting, args.out, args.fixture)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
