#!/usr/bin/env bash
# Create (or reuse) .venv and install hrrformer into it, then what research/ needs (its tests run
# with the package's). Idempotent. torch is pinned and installed first, so no unpinned torch
# requirement ever resolves.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r research/requirements.txt
