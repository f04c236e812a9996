"""Held-out evaluation sets read from installed packages: 3D emoji, flags, digits.

Nothing here is in the training corpus; `keras_towers.datasets.classification`
serves them through `load_classification` / `describe_classification`.

- **fluent-3d**: Microsoft's Fluent Emoji 3D renders (npm
  `@lobehub/fluent-emoji-3d@1.1.0`, MIT; 256 px RGBA WebP files named by code
  point), extracted once into `<data_dir>/lobehub-fluent-emoji-3d-1.1.0/`.
  Each image is named by its emoji's CLDR English label from npm
  `emojibase-data@17.0.0` (MIT; `en/data.json`, read straight from its
  tarball). The two join on the corpus' normalised code point
  (`emojibase.normalise_codepoint`: lowercase hex, each code point at least
  4 digits, so `23` and `0023` are the same, joined by `-`, every `fe0f`
  removed). Fluent names its subdivision flags (England, Scotland,
  Wales) without the closing `e007f` cancel tag; they join with it. Only base
  emoji are kept: files with a skin-tone modifier (`1f3fb`..`1f3ff`) are
  skipped, as are files with no label (emojibase components and regional
  indicators are not classes) and second files of one emoji (Fluent ships
  e.g. `0023-fe0f-20e3` and `23-fe0f-20e3`; the one spelled like emojibase's
  `hexcode` is kept, else the first by name). One image per class, classes
  sorted by code point. The emoji concepts are in the training corpus in
  other art styles; this set tests transfer to an unseen, shaded 3D style.
- **flags**: Debian `iso-flags-png-320x240` (public domain; 320x240 RGBA PNGs
  named by ISO 3166-1 alpha-2 code) with English country names from Debian
  `iso-codes` (`iso_3166-1.json`, LGPL-2.1). Files whose name is no alpha-2
  code (`_basque.png`, `eu.png`, `zz.png`...) are skipped. A few territories
  share their sovereign's flag (France's tricolour for Saint Barthelemy,
  Mayotte..., Norway's for Svalbard and Bouvet Island, the US flag for the
  US Minor Outlying Islands), which caps the achievable accuracy at ~95%.
- **digits**: the 1,797 8x8 handwritten digits bundled with scikit-learn
  (`sklearn/datasets/data/digits.csv.gz`; scikit-learn is BSD-3-Clause, the
  data are the UCI "Optical Recognition of Handwritten Digits" test set,
  CC BY 4.0), read without importing scikit-learn.

Images composite transparency onto white (`decoding.composite_on_white`, via
`read_image`).
"""

from __future__ import annotations

import gzip
import json
import re
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from keras_towers.datasets import npm
from keras_towers.datasets import paths
from keras_towers.datasets.decoding import read_image
from keras_towers.datasets.emoji_sets import normalise_codepoint

FLUENT_3D_PACKAGE = "@lobehub/fluent-emoji-3d"
FLUENT_3D_VERSION = "1.1.0"
FLUENT_3D_LICENSE = "MIT"
EMOJIBASE_PACKAGE = "emojibase-data"
EMOJIBASE_VERSION = "17.0.0"
EMOJIBASE_LICENSE = "MIT"
#: Fluent's 256 px renders are returned at this size (a 2x2 box average).
FLUENT_3D_IMAGE_SIZE = 128

FLAGS_PACKAGE = "iso-flags-png-320x240"
FLAGS_LICENSE = "public domain"
ISO_CODES_PACKAGE = "iso-codes"
ISO_CODES_LICENSE = "LGPL-2.1"
ISO_3166_FILE = "iso_3166-1.json"

DIGITS_PACKAGE = "scikit-learn"
DIGITS_LICENSE = (
    "BSD-3-Clause (scikit-learn); data: UCI Optical Recognition of "
    "Handwritten Digits, CC BY 4.0"
)
DIGITS_FILE = "digits.csv.gz"
DIGIT_CLASSES = tuple("0123456789")

_SKIN_TONES = frozenset({"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"})
_CANCEL_TAG = "e007f"
_EMOJIBASE_DATA = "en/data.json"
_COMPONENT_GROUP = 2  # emojibase's "component" group: skin tones, hair parts


# === fluent-3d ===


def emoji_key(sequence: str) -> str | None:
    """`emojibase.normalise_codepoint` of a file name or hexcode, or None.

    Lowercase hex, each code point padded to at least 4 digits, joined by
    `-`, every `fe0f` (variation selector 16) removed; `_` separates like
    `-`. `None` when `sequence` is not a code point sequence.

    Example:

    ```python
    emoji_key("0023-FE0F-20E3")  # "0023-20e3"
    emoji_key("23-fe0f-20e3")  # "0023-20e3"
    ```
    """
    try:
        return normalise_codepoint(sequence)
    except ValueError:
        return None


def _code_point_order(key: str) -> tuple[int, ...]:
    return tuple(int(p, 16) for p in key.split("-"))


def fluent_3d_tarballs(data_dir=None) -> tuple[Path, Path]:
    """Where `scripts/setup.sh` keeps the Fluent 3D and emojibase tarballs."""
    sources = paths.resolve_data_dir(data_dir) / "sources"
    return (
        sources / npm.tarball_name(FLUENT_3D_PACKAGE, FLUENT_3D_VERSION),
        sources / npm.tarball_name(EMOJIBASE_PACKAGE, EMOJIBASE_VERSION),
    )


def _emojibase_labels(tarball: Path) -> dict[str, tuple[str, str]]:
    """normalised key -> (CLDR label, hexcode) of every base emoji.

    Reads `package/en/data.json` straight from the tarball (it comes early:
    well under a second), without writing anything.
    """
    wanted = f"package/{_EMOJIBASE_DATA}"
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if member.name == wanted and member.isreg():
                    with archive.extractfile(member) as f:
                        entries = json.load(f)
                    break
            else:
                raise ValueError(f"it has no {wanted}")
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise ValueError(
            f"Could not read the emojibase-data tarball {tarball}: {e}. Delete it "
            "and re-run `bash scripts/setup.sh`."
        ) from e
    if not isinstance(entries, list):
        raise ValueError(f"{tarball}: {wanted} should be a JSON list of emoji.")
    labels = {}
    for entry in entries:
        # Skin-tone variants sit under `skins`, never at the top level.
        group = entry.get("group")
        if group is None or group == _COMPONENT_GROUP:
            continue  # regional indicators and components
        key = emoji_key(str(entry.get("hexcode", "")))
        label = " ".join(str(entry.get("label", "")).split())
        if key and label:
            labels[key] = (label, str(entry["hexcode"]).lower())
    return labels


def fluent_3d_index(data_dir=None) -> dict:
    """Join the Fluent 3D files to their CLDR labels (no image is decoded).

    Extracts the Fluent 3D tarball's WebP files once (idempotent) into
    `<data_dir>/lobehub-fluent-emoji-3d-1.1.0/`.

    Args:
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.

    Returns:
        A dict with `entries` (list of `(key, label, path)` sorted by code
        point), `skipped` (reason -> sorted file names: `skin_tone_variant`,
        `no_label`, `duplicate_file`), `labels_without_image` (number of base
        emoji with no Fluent file), `path` and `version`.

    Raises:
        MissingDataError: a tarball is missing.
    """
    root = paths.resolve_data_dir(data_dir)
    fluent, emojibase = fluent_3d_tarballs(root)
    missing = {}
    if not fluent.is_file():
        missing[FLUENT_3D_PACKAGE] = str(fluent)
    if not emojibase.is_file():
        missing[EMOJIBASE_PACKAGE] = str(emojibase)
    if missing:
        raise paths.MissingDataError(missing, root)
    labels = _emojibase_labels(emojibase)
    dest = root / fluent.name[: -len(".tgz")]
    info = npm.extract_package(
        fluent, dest, lambda p: p.startswith("assets/") and p.endswith(".webp")
    )
    files = sorted((dest / "assets").glob("*.webp"))

    skipped: dict[str, list[str]] = {}
    candidates: dict[str, list[Path]] = {}
    for path in files:
        key = emoji_key(path.stem)
        if key is not None and _SKIN_TONES.intersection(key.split("-")):
            skipped.setdefault("skin_tone_variant", []).append(path.name)
            continue
        if key is not None and key not in labels and f"{key}-{_CANCEL_TAG}" in labels:
            key = f"{key}-{_CANCEL_TAG}"  # Fluent drops the tag sequence's end
        if key is None or key not in labels:
            skipped.setdefault("no_label", []).append(path.name)
            continue
        candidates.setdefault(key, []).append(path)

    entries = []
    for key in sorted(candidates, key=_code_point_order):
        label, hexcode = labels[key]
        found = candidates[key]
        exact = [p for p in found if p.stem.lower().replace("_", "-") == hexcode]
        chosen = (exact or found)[0]
        for other in found:
            if other != chosen:
                skipped.setdefault("duplicate_file", []).append(other.name)
        entries.append((key, label, chosen))
    return {
        "entries": entries,
        "skipped": {reason: sorted(names) for reason, names in sorted(skipped.items())},
        "labels_without_image": len(set(labels) - set(candidates)),
        "path": str(dest),
        "version": info.get("version"),
    }


def _square_on_white(rgb: np.ndarray) -> np.ndarray:
    """Pad an `(H, W, 3)` image with white to a centred square."""
    h, w = rgb.shape[:2]
    if h == w:
        return rgb
    side = max(h, w)
    out = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = rgb
    return out


def load_fluent_3d(data_dir=None, image_size: int = FLUENT_3D_IMAGE_SIZE):
    """Fluent 3D emoji on white, one per class, and their CLDR labels.

    Each render is composited onto white, padded to a square (4 files are
    256x264) and resized to `image_size` with a box filter.

    Args:
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.
        image_size: int. Side of the returned images.

    Returns:
        `(images, class_names)`: uint8 `(N, image_size, image_size, 3)` with
        image `i` of class `i`, and the N labels sorted by code point.
    """
    index = fluent_3d_index(data_dir)
    images = np.empty((len(index["entries"]), image_size, image_size, 3), np.uint8)
    for i, (_, _, path) in enumerate(index["entries"]):
        rgb = _square_on_white(read_image(path))
        if rgb.shape[0] != image_size:
            resized = Image.fromarray(rgb).resize(
                (image_size, image_size), Image.Resampling.BOX
            )
            rgb = np.asarray(resized)
        images[i] = rgb
    return images, [label for _, label, _ in index["entries"]]


# === flags ===


def country_name(entry: dict) -> str:
    """A short English name for an `iso_3166-1.json` entry.

    `common_name` when there is one ("Bolivia", "South Korea"), else `name`
    without parentheses ("Holy See (Vatican City State)" -> "Holy See") and
    with an inverted tail put back in front ("Virgin Islands, British" ->
    "British Virgin Islands"; "Congo, The Democratic Republic of the" ->
    "Democratic Republic of the Congo"). A tail listing places ("Saint
    Helena, Ascension and Tristan da Cunha") is kept as it is.
    """
    name = entry.get("common_name") or entry.get("name") or ""
    name = " ".join(re.sub(r"\s*\([^)]*\)", "", name).split())
    head, sep, tail = name.partition(", ")
    if sep and " and " not in tail:
        name = f"{tail} {head}"
    if name.startswith("The "):
        name = name[4:]
    return name


def flags_index() -> dict:
    """Match the flag files to ISO 3166-1 codes (no image is decoded).

    Returns:
        A dict with `entries` (list of `(alpha_2, name, path)` sorted by
        code), `skipped` (`{"no_iso_code": [file names]}` when any), `path`
        and `iso_codes_path`.

    Raises:
        MissingDataError: `iso-flags-png-320x240` or `iso-codes` is missing.
    """
    flags, codes_file = paths.flags_dir(), paths.iso_codes_dir() / ISO_3166_FILE
    missing = {}
    if not flags.is_dir():
        missing[FLAGS_PACKAGE] = str(flags)
    if not codes_file.is_file():
        missing[ISO_CODES_PACKAGE] = str(codes_file)
    if missing:
        raise paths.MissingDataError(missing, None)
    try:
        countries = json.loads(codes_file.read_text("utf-8"))["3166-1"]
        names = {c["alpha_2"].lower(): country_name(c) for c in countries}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{codes_file} is not iso-codes' ISO 3166-1 JSON (a '3166-1' list of "
            f"entries with 'alpha_2' and 'name'): {e!r}"
        ) from None
    entries, skipped = [], []
    for path in sorted(flags.glob("*.png")):
        code = path.stem.lower()
        if names.get(code):
            entries.append((code, names[code], path))
        else:
            skipped.append(path.name)
    seen: dict[str, str] = {}
    for code, name, _ in entries:
        if name in seen:
            raise ValueError(
                f"Two flags would share the class name {name!r} ({seen[name]} "
                f"and {code}) in {codes_file}."
            )
        seen[name] = code
    return {
        "entries": entries,
        "skipped": {"no_iso_code": skipped} if skipped else {},
        "path": str(flags),
        "iso_codes_path": str(codes_file),
    }


def load_flags():
    """The flags on white and their country names.

    Returns:
        `(images, class_names)`: uint8 `(N, 240, 320, 3)` (the package's own
        size, left for the model's framing rule), image `i` of class `i`,
        sorted by ISO 3166-1 alpha-2 code.
    """
    index = flags_index()
    images = [read_image(path) for _, _, path in index["entries"]]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"The flags in {index['path']} should all have one size; found "
            f"{sorted(shapes)}."
        )
    if not images:
        raise ValueError(f"No flag in {index['path']} has an ISO 3166-1 code.")
    return np.stack(images), [name for _, name, _ in index["entries"]]


# === digits ===


def digits_file() -> Path:
    """scikit-learn's `digits.csv.gz` (`MissingDataError` when absent)."""
    directory = paths.digits_dir()
    path = directory / DIGITS_FILE if directory is not None else None
    if path is None or not path.is_file():
        where = str(path) if path is not None else "the Python environment"
        raise paths.MissingDataError({DIGITS_PACKAGE: where}, None)
    return path


def load_digits():
    """scikit-learn's 8x8 digits scaled to uint8, in the file's order.

    The 0..16 counts of ink pixels per 4x4 block become `round(v * 255 / 16)`:
    bright strokes on a black background, like MNIST.

    Returns:
        `(images, labels)`: uint8 `(1797, 8, 8)` and int32 `(1797,)`.
    """
    path = digits_file()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", ndmin=2)
    if table.shape[1] != 65 or not len(table):
        raise ValueError(
            f"{path}: expected rows of 64 pixels and a label (65 columns), got "
            f"shape {table.shape}."
        )
    pixels, labels = table[:, :64], table[:, 64]
    valid = np.all(table == np.round(table)) and (
        0 <= pixels.min() <= pixels.max() <= 16
        and 0 <= labels.min() <= labels.max() <= 9
    )
    if not valid:
        raise ValueError(f"{path}: pixels must be integers 0..16 and labels 0..9.")
    counts = pixels.astype(np.int32)
    images = ((counts * 255 + 8) // 16).astype(np.uint8).reshape(-1, 8, 8)
    return images, labels.astype(np.int32)
