#!/usr/bin/env bash
# Set up keras_towers on a fresh machine: a virtualenv with the pinned stack
# (CPU torch 2.13.0, jax[cpu], tensorflow 2.21, keras 3.15, keras-hub 0.32)
# and the test dependencies. Idempotent: re-running only checks the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[all]"
.venv/bin/python -c "import keras, keras_hub, jax, torch, tensorflow as tf; print(f'keras {keras.__version__}, keras-hub {keras_hub.__version__}, jax {jax.__version__}, torch {torch.__version__}, tensorflow {tf.__version__}')"
