"""Screen HRR attention variants: `hrrformer train` with model-config overrides given as JSON.

    python scripts/screen_variants.py OUT_DIR '{"score_scale": 8.0}' -- --task image --preset cpu ...

Everything after ``--`` is passed to ``hrrformer train``'s parser; the JSON object is merged into
the run's model config (any :class:`hrrformer.model.HrrformerConfig` field), so variants that have
no command-line flag yet can be screened with the same budget, seed and data as the others.
"""

from __future__ import annotations

import argparse
import json
import sys

from hrrformer.model import HrrformerConfig
from hrrformer.train import add_arguments, config_from_args, train


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    out, overrides = argv[0], json.loads(argv[1])
    parser = argparse.ArgumentParser(prog="screen_variants")
    add_arguments(parser)
    args = parser.parse_args([*argv[split + 1 :], "--out", out])
    config = config_from_args(args)
    config.model.update(overrides)
    HrrformerConfig(**config.model)  # validate the overrides before any data is read
    summary = train(config, out, overwrite=args.overwrite)
    print(json.dumps({k: summary.get(k) for k in ("val_accuracy", "test_accuracy", "examples_per_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
