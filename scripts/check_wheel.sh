#!/usr/bin/env bash
# Check that an installed wheel (not only the source checkout) resolves every
# shipped preset: build the wheel of this checkout, install it (--no-deps)
# into a fresh venv whose dependencies come from the project's .venv, and,
# from outside the repository, list the presets and load `shapes_clip_tiny`,
# and check the other package data (open_clip's BPE file) is installed and the
# installed `keras-towers` script answers `--version` and `presets list`
# without importing Keras.
#
# The fresh venv sees .venv's site-packages through a `.pth` line, which puts
# the directory on sys.path without running its own `.pth` files, so the
# editable install of keras_towers in .venv does not leak in; the check
# asserts that keras_towers is imported from the fresh venv.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"

fail() {
  echo "check_wheel: FAILED: $*" >&2
  exit 1
}

[ -x "$PY" ] || fail "no $PY (run scripts/setup.sh first)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kt_check_wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS

# 1. A copy of the checkout (tracked and untracked, not ignored, files), so
# building leaves no build/ in the checkout and no stale build/ output of an
# earlier build can end up in the wheel.
"$PY" - "$ROOT" "$TMP/src" <<'EOF' || fail "could not copy the checkout"
import os
import shutil
import subprocess
import sys

root, dest = sys.argv[1:3]
try:
    listed = subprocess.run(
        ["git", "-C", root, "ls-files", "-z", "-co", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.decode().split("\0")
except (OSError, subprocess.CalledProcessError):
    listed = None
if listed is None:  # not a git checkout: everything but local state
    skip = {".git", ".venv", "build", "dist", "data", "runs"}
    shutil.copytree(
        root, dest, ignore=lambda d, names: [
            n for n in names
            if (d == root and n in skip) or n == "__pycache__"
            or n.endswith((".pyc", ".egg-info"))
        ],
    )
else:
    for name in listed:
        if name and os.path.isfile(os.path.join(root, name)):
            target = os.path.join(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(root, name), target)
EOF

# 2. The wheel: with .venv's build backend when it satisfies pyproject's
# [build-system] requires (no download), else in pip's isolated environment.
isolation=()
if "$PY" - "$ROOT/pyproject.toml" <<'EOF' 2>/dev/null; then
import sys
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement

with open(sys.argv[1], "rb") as f:
    requires = tomllib.load(f)["build-system"]["requires"]
for requirement in map(Requirement, requires):
    if not requirement.specifier.contains(version(requirement.name), True):
        sys.exit(1)
EOF
  isolation=(--no-build-isolation)
fi
if ! (cd "$TMP" && "$PY" -m pip wheel -q --disable-pip-version-check --no-deps \
  "${isolation[@]}" -w "$TMP/dist" "$TMP/src") >"$TMP/build.log" 2>&1; then
  cat "$TMP/build.log" >&2
  fail "building the wheel"
fi
wheels=("$TMP"/dist/keras_towers-*.whl)
[ -f "${wheels[0]}" ] || fail "no keras_towers wheel in $TMP/dist"
wheel="${wheels[0]}"
echo "check_wheel: built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"

# 3. A fresh venv: no pip of its own, dependencies from .venv via a `.pth`.
"$PY" -m venv --without-pip "$TMP/venv" || fail "creating the venv"
VPY="$TMP/venv/bin/python"
purelib() { "$1" -I -c "import sysconfig; print(sysconfig.get_path('purelib'))"; }
deps_site="$(purelib "$PY")"
venv_site="$(purelib "$VPY")"
echo "$deps_site" >"$venv_site/_keras_towers_check_deps.pth"
# --ignore-installed: .venv's editable keras-towers is visible on sys.path;
# pip must neither count it as installed nor try to uninstall it.
if ! (cd "$TMP" && "$VPY" -I -m pip install -q --disable-pip-version-check \
  --no-deps --no-index --ignore-installed "$wheel") >"$TMP/install.log" 2>&1; then
  cat "$TMP/install.log" >&2
  fail "installing the wheel into the fresh venv"
fi

# 4. From outside the repository, with the installed copy only.
cd "$TMP"
env -u KERAS_TOWERS_PRESETS_DIR -u PYTHONPATH KERAS_BACKEND=jax \
  TF_CPP_MIN_LOG_LEVEL=3 \
  "$VPY" -I - "$TMP/venv" "$ROOT/keras_towers/shipped_presets" <<'EOF' \
  || fail "the installed wheel does not resolve or load the shipped presets"
import sys
from pathlib import Path

venv = Path(sys.argv[1]).resolve()
source = Path(sys.argv[2])


def check(condition, message):
    if not condition:
        sys.exit(f"check_wheel: {message}")


import numpy as np  # noqa: E402

import keras_towers  # noqa: E402
from keras_towers import presets  # noqa: E402

where = Path(keras_towers.__file__).resolve()
check(venv in where.parents, f"keras_towers imported from {where}, not {venv}")
root = presets.presets_dir().resolve()
check(venv in root.parents, f"presets_dir() is {root}, not in the venv")

expected = sorted(
    p.name for p in source.iterdir() if p.is_dir() and p.name != "__pycache__"
)
check(expected, f"no shipped preset directory in {source}")
names = sorted(presets.all_presets())
print("check_wheel: presets:", " ".join(names))
missing = sorted(set(expected) - set(names))
check(not missing, f"shipped presets missing from the installed wheel: {missing}")

# Every file of every shipped preset, byte for byte the same size.
for path in sorted(source.rglob("*")):
    relative = path.relative_to(source)
    if not path.is_file() or "__pycache__" in relative.parts:
        continue
    if any(part.startswith(".") for part in relative.parts):
        continue
    installed = root / relative
    check(installed.is_file(), f"{relative} is not in the installed wheel")
    check(
        installed.stat().st_size == path.stat().st_size,
        f"{relative} differs in size between the checkout and the wheel",
    )

resolved = presets.resolve(keras_towers.CLIP, "shapes_clip_tiny").resolve()
check(venv in resolved.parents, f"shapes_clip_tiny resolved to {resolved}")
model = keras_towers.CLIP.from_preset("shapes_clip_tiny")
embedding = np.asarray(model.encode_texts(["a red circle"]))
check(
    embedding.ndim == 2 and embedding.shape[0] == 1 and embedding.shape[1] > 0,
    f"encode_texts returned shape {embedding.shape}, expected (1, D)",
)
check(np.isfinite(embedding).all(), "encode_texts returned non-finite values")
print(f"check_wheel: shapes_clip_tiny loaded, text embedding {embedding.shape}")

# Package data outside the presets: open_clip's bundled BPE and its licence.
from keras_towers.converters.open_clip import tokenizer as oc_tokenizer  # noqa: E402

bpe = Path(oc_tokenizer.BPE_FILE).resolve()
check(venv in bpe.parents and bpe.is_file(), f"the open_clip BPE file {bpe} is missing")
check((bpe.parent / "BPE_LICENSE").is_file(), "converters/open_clip/BPE_LICENSE is missing")
merges = oc_tokenizer.read_bpe_file(bpe)
check(len(merges) == oc_tokenizer.NUM_MERGES, f"{len(merges)} BPE merges read")
print(f"check_wheel: open_clip BPE shipped ({len(merges)} merges)")
EOF
# 5. The installed script: `--version` and `presets list` answer from the
# wheel's files without importing Keras or keras_towers.
[ -x "$TMP/venv/bin/keras-towers" ] || fail "the wheel installed no keras-towers script"
env -u KERAS_TOWERS_PRESETS_DIR -u PYTHONPATH KERAS_BACKEND=jax \
  "$VPY" -I - "$TMP/venv" "$ROOT/keras_towers/version.py" <<'EOF' \
  || fail "the installed keras-towers script does not start without Keras"
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

venv = Path(sys.argv[1]).resolve()
version = re.search(r'__version__ = "([^"]+)"', Path(sys.argv[2]).read_text())[1]


def check(condition, message):
    if not condition:
        sys.exit(f"check_wheel: {message}")


from keras_towers_entry import main  # noqa: E402
from keras_towers_entry.presets import presets_dir  # noqa: E402

root = presets_dir().resolve()
check(venv in root.parents, f"the script's presets_dir() is {root}, not in the venv")
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    code = main(["presets", "list"])
check(code == 0 and "shapes_clip_tiny  [CLIP]" in listing.getvalue(), "presets list")
shown = io.StringIO()
with contextlib.redirect_stdout(shown), contextlib.suppress(SystemExit):
    main(["--version"])
check(
    shown.getvalue().startswith(f"keras-towers {version} (keras ")
    and shown.getvalue().endswith("backend jax)\n"),
    f"--version printed {shown.getvalue()!r}",
)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"keras", "keras_towers"})
check(not heavy, f"presets list / --version imported {heavy}")
script = subprocess.run(
    [str(venv / "bin" / "keras-towers"), "--version"], capture_output=True, text=True
)
check(script.returncode == 0 and version in script.stdout, f"script: {script}")
print(f"check_wheel: keras-towers {version}: --version, presets list without Keras")
EOF
echo "check_wheel: OK ($((SECONDS - start)) s)"
