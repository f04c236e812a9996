"""Tiny fake packages for the evaluation sets of `keras_towers.datasets.eval_sets`.

`install_fake_eval_sets(tmp_path, data_dir, monkeypatch)` builds all three
(flags + iso-codes, the Fluent 3D and emojibase tarballs, digits) and points
keras_towers at them, so that `keras_towers.datasets.prepare()` and
`load_classification` find them without the real packages.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from keras_towers.datasets import eval_sets
from keras_towers.datasets import paths

# --- flags + iso-codes ---

ISO_3166 = [
    {"alpha_2": "FR", "name": "France", "official_name": "French Republic"},
    {"alpha_2": "NP", "name": "Nepal"},
    {
        "alpha_2": "BO",
        "name": "Bolivia, Plurinational State of",
        "common_name": "Bolivia",
    },
    {"alpha_2": "VG", "name": "Virgin Islands, British"},
    {"alpha_2": "CD", "name": "Congo, The Democratic Republic of the"},
    {"alpha_2": "VA", "name": "Holy See (Vatican City State)"},
    {"alpha_2": "SH", "name": "Saint Helena, Ascension and Tristan da Cunha"},
    {"alpha_2": "US", "name": "United States"},  # no flag file
]
#: Flag files: code -> RGB colour. Nepal's has a transparent corner.
FLAG_FILES = {
    "fr": (0, 0, 255),
    "np": (220, 20, 60),
    "bo": (0, 128, 0),
    "vg": (0, 0, 128),
    "cd": (0, 127, 255),
    "va": (255, 255, 0),
    "sh": (1, 2, 3),
}
FLAG_SKIPPED = ["_basque.png", "eu.png", "zz.png"]
#: Expected class names, sorted by ISO code.
FLAG_CLASSES = [
    "Bolivia",
    "Democratic Republic of the Congo",
    "France",
    "Nepal",
    "Saint Helena, Ascension and Tristan da Cunha",
    "Holy See",
    "British Virgin Islands",
]
FLAG_SIZE = (6, 8)  # (height, width): 4:3 like the real 240x320


def make_flags(flags: Path, iso_codes: Path) -> None:
    flags.mkdir(parents=True)
    iso_codes.mkdir(parents=True)
    for code, colour in FLAG_FILES.items():
        rgba = np.zeros((*FLAG_SIZE, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = colour, 255
        if code == "np":
            rgba[0, -1, 3] = 0  # transparent: must come out white
        Image.fromarray(rgba).save(flags / f"{code}.png")
    for name in FLAG_SKIPPED:
        Image.fromarray(np.zeros((*FLAG_SIZE, 3), np.uint8)).save(flags / name)
    (flags / "README.txt").write_text("not a flag")
    (iso_codes / eval_sets.ISO_3166_FILE).write_text(
        json.dumps({"3166-1": ISO_3166}), encoding="utf-8"
    )


# --- Fluent 3D + emojibase ---

EMOJIBASE = [
    {"label": "regional indicator A", "hexcode": "1F1E6", "type": 1},
    {
        "label": "grinning face",
        "hexcode": "1F600",
        "group": 0,
        "tags": ["face", "grin"],
    },
    {
        "label": "waving hand",
        "hexcode": "1F44B",
        "group": 1,
        "skins": [{"label": "waving hand: light skin tone", "hexcode": "1F44B-1F3FB"}],
    },
    {"label": "keycap: #", "hexcode": "0023-FE0F-20E3", "group": 8},
    {
        "label": "flag: England",
        "hexcode": "1F3F4-E0067-E0062-E0065-E006E-E0067-E007F",
        "group": 9,
    },
    {"label": "red  heart", "hexcode": "2764-FE0F", "group": 0},
    {"label": "light skin tone", "hexcode": "1F3FB", "group": 2},
    {"label": "ghost", "hexcode": "1F47B", "group": 0},  # no Fluent file
]
#: Fluent files: stem -> RGB colour (alpha 255 except one transparent pixel).
FLUENT_FILES = {
    "1f600": (255, 200, 0),
    "1f44b": (250, 180, 50),
    "1f44b-1f3fb": (240, 190, 160),  # skin-tone variant
    "0023-fe0f-20e3": (0, 100, 255),  # spelled like emojibase: kept
    "23-fe0f-20e3": (9, 9, 9),  # the same emoji again
    "1f3f4-e0067_e0062_e0065_e006e_e0067": (255, 0, 0),  # no cancel tag
    "2764-fe0f": (200, 0, 0),
    "1f1e6": (0, 0, 0),  # regional indicator: no class
}
#: Expected classes, sorted by code point, with their colours.
FLUENT_CLASSES = [
    ("keycap: #", (0, 100, 255)),
    ("red heart", (200, 0, 0)),
    ("flag: England", (255, 0, 0)),
    ("waving hand", (250, 180, 50)),
    ("grinning face", (255, 200, 0)),
]
FLUENT_SKIPPED = {
    "duplicate_file": ["23-fe0f-20e3.webp"],
    "no_label": ["1f1e6.webp"],
    "skin_tone_variant": ["1f44b-1f3fb.webp"],
}


def _add(archive, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _webp(colour, size=(16, 16)) -> bytes:
    rgba = np.zeros((*size, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = colour, 255
    rgba[0, 0, 3] = 0  # transparent corner
    out = io.BytesIO()
    Image.fromarray(rgba).save(out, format="WEBP", lossless=True)
    return out.getvalue()


def make_fluent_tarballs(data_dir: Path) -> tuple[Path, Path]:
    fluent, emojibase = eval_sets.fluent_3d_tarballs(data_dir)
    fluent.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fluent, "w:gz") as archive:
        meta = {"name": eval_sets.FLUENT_3D_PACKAGE, "version": "1.1.0"}
        _add(archive, "package/package.json", json.dumps(meta).encode())
        _add(archive, "package/README.md", b"readme")
        for stem, colour in FLUENT_FILES.items():
            # One 16x18 render, as the real package has a few 256x264 ones.
            size = (18, 16) if stem == "2764-fe0f" else (16, 16)
            _add(archive, f"package/assets/{stem}.webp", _webp(colour, size))
    with tarfile.open(emojibase, "w:gz") as archive:
        meta = {"name": eval_sets.EMOJIBASE_PACKAGE, "version": "17.0.0"}
        _add(archive, "package/package.json", json.dumps(meta).encode())
        _add(archive, "package/en/compact.json", b"[]")
        _add(archive, "package/en/data.json", json.dumps(EMOJIBASE).encode())
    return fluent, emojibase


# --- digits ---

DIGITS_PER_CLASS = 10


def make_digits(directory: Path) -> np.ndarray:
    """`digits.csv.gz` of 10 images per class; returns the 0..16 table."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), DIGITS_PER_CLASS)
    pixels = rng.integers(0, 17, (len(labels), 64))
    pixels[0, :3] = (0, 8, 16)  # exact values checked after scaling
    table = np.concatenate([pixels, labels[:, None]], axis=1)
    text = "\n".join(",".join(str(v) for v in row) for row in table) + "\n"
    with gzip.open(directory / eval_sets.DIGITS_FILE, "wt") as f:
        f.write(text)
    return table


def install_fake_eval_sets(tmp_path: Path, data_dir: Path, monkeypatch) -> dict:
    """Build every fake evaluation package and point keras_towers at them.

    Sets `KERAS_TOWERS_FLAGS_DIR`, `KERAS_TOWERS_ISO_CODES_DIR` and
    `KERAS_TOWERS_DIGITS_DIR`, and writes the Fluent 3D and emojibase
    tarballs into `<data_dir>/sources/` (the caller sets
    `KERAS_TOWERS_DATA_DIR` or passes `data_dir`).
    """
    flags, iso_codes = tmp_path / "flags", tmp_path / "iso-codes"
    make_flags(flags, iso_codes)
    digits = tmp_path / "digits"
    table = make_digits(digits)
    tarballs = make_fluent_tarballs(data_dir)
    monkeypatch.setenv(paths.FLAGS_DIR_ENV, str(flags))
    monkeypatch.setenv(paths.ISO_CODES_DIR_ENV, str(iso_codes))
    monkeypatch.setenv(paths.DIGITS_DIR_ENV, str(digits))
    return {
        "flags": flags,
        "iso_codes": iso_codes,
        "digits": digits,
        "digits_table": table,
        "fluent_tarball": tarballs[0],
        "emojibase_tarball": tarballs[1],
    }
