#!/usr/bin/env bash
# Create (or reuse) .venv-authors: a JAX environment for running the Hrrformer authors' code
# (python -m research.authors_fixtures, and research.authors_side_by_side's jax side).
# Never used by the package: jax/flax are not hrrformer dependencies.
# Versions are pinned to the set the committed fixtures were generated with (see docs/AUTHORS.md).
# hrr 1.2.3 (2023-02) is the HRR library the authors' code imports as `HRR.with_flax`; it is the
# version current when their model files were last changed (2023-05).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv-authors/bin/python ] || "$python" -m venv .venv-authors
.venv-authors/bin/python -m pip install --quiet --disable-pip-version-check \
    jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 optax==0.2.8 hrr==1.2.3 numpy==2.4.6 ruff
.venv-authors/bin/python -c "import jax, flax, optax, HRR; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
