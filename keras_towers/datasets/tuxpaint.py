"""Tux Paint stamps as image-caption pairs.

A Tux Paint stamp is an image `<dir>/<stem>.png` or `<dir>/<stem>.svg` next to
`<dir>/<stem>.txt`, whose first line is an English description ("A US 25
cent piece ($.25) called a quarter.") and whose other lines are translations
(`fr.utf8=...`). How files pair up in `tuxpaint-stamps-default` (checked on
the Debian package: 802 PNG, 248 SVG, 952 TXT files):

- `<stem>.png` + `<stem>.txt`: one pair, caption = first line (stripped,
  whitespace collapsed). When `<stem>.svg` also exists it is the same stamp in
  vector form; the PNG is used and the SVG is not counted as skipped.
- `<stem>.svg` with no PNG twin: skipped here (reason `svg_only`); these
  are `scan_tuxpaint_svg`'s stamps, which the corpus renders (165 in the
  Debian package, all with a `.txt`).
- `<stem>_mirror.png` next to `<stem>.png`/`.svg`: the picture Tux Paint shows
  when the stamp is mirrored, a near copy of the stamp; skipped
  (`mirror_variant`), horizontal flips belong in augmentation.
- a PNG without a `.txt` (e.g. `cartoon/tux/tux-*.png`): skipped
  (`no_caption`); a `.txt` whose first line is blank: skipped
  (`empty_caption`); a `.txt` with no image is ignored (counted as
  `caption_without_image`).

The category is the first path component below the stamps root ("animals",
"vehicles", ...). Licence: GPL-2.0 (Debian copyright file of the package).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TUXPAINT_LICENSE = "GPL-2.0"
MIRROR_SUFFIX = "_mirror"


def read_caption(path: Path) -> str:
    """The English caption of a stamp: the first line of its `.txt` file."""
    with open(path, "rb") as f:
        first = f.readline()
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff")
    return re.sub(r"\s+", " ", text).strip()


def _stamp_files(root: Path) -> dict[str, set[str]]:
    """Stem (relative path without extension) -> extensions present."""
    files: dict[str, set[str]] = {}
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        rel_dir = os.path.relpath(directory, root)
        for name in names:
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext in (".png", ".svg", ".txt"):
                rel = stem if rel_dir == "." else f"{rel_dir}/{stem}"
                files.setdefault(rel.replace(os.sep, "/"), set()).add(ext)
    return files


def scan_tuxpaint(root: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Pair every PNG stamp under `root` with its caption.

    Args:
        root: Path. The stamps directory (e.g. `/usr/share/tuxpaint/stamps`).

    Returns:
        `(items, skipped)`: items are dicts with `id` (`"tuxpaint:<relative
        path without extension>"`), `image` (absolute path), `caption` and
        `category`, sorted by id; `skipped` maps a reason to the sorted
        relative paths it applies to.
    """
    root = Path(root).absolute()
    files = _stamp_files(root)
    items: list[dict] = []
    skipped: dict[str, list[str]] = {
        "svg_only": [],
        "mirror_variant": [],
        "no_caption": [],
        "empty_caption": [],
        "caption_without_image": [],
    }
    for rel in sorted(files):
        exts = files[rel]
        if ".png" not in exts:
            if ".svg" in exts:
                skipped["svg_only"].append(rel + ".svg")
            elif ".txt" in exts:
                skipped["caption_without_image"].append(rel + ".txt")
            continue
        if rel.endswith(MIRROR_SUFFIX):
            base = files.get(rel[: -len(MIRROR_SUFFIX)], set())
            if ".png" in base or ".svg" in base:
                skipped["mirror_variant"].append(rel + ".png")
                continue
        if ".txt" not in exts:
            skipped["no_caption"].append(rel + ".png")
            continue
        caption = read_caption(root / (rel + ".txt"))
        if not caption:
            skipped["empty_caption"].append(rel + ".png")
            continue
        # A stamp lying directly in the root has no category folder.
        category = rel.split("/", 1)[0] if "/" in rel else ""
        items.append(
            {
                "id": f"tuxpaint:{rel}",
                "image": str(root / (rel + ".png")),
                "caption": caption,
                "category": category,
            }
        )
    return items, skipped


def scan_tuxpaint_svg(root: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Pair every SVG-only stamp under `root` with its caption.

    The stamps `scan_tuxpaint` skips as `svg_only`: `<stem>.svg` with no
    `<stem>.png`, captioned by the first line of `<stem>.txt`. An SVG with a
    PNG twin is the PNG stamp's and is neither an item nor skipped here.

    Args:
        root: Path. The stamps directory (e.g. `/usr/share/tuxpaint/stamps`).

    Returns:
        `(items, skipped)`: items are dicts with `id` (`"tuxpaint-svg:<relative
        path without extension>"`), `svg` (absolute path of the file),
        `caption` and `category`, sorted by id; `skipped` maps `mirror_variant`
        (`<stem>_mirror.svg` next to `<stem>.svg`), `no_caption` and
        `empty_caption` to sorted ids.

    Example:

    ```python
    items, skipped = scan_tuxpaint_svg(Path("/usr/share/tuxpaint/stamps"))
    ```
    """
    root = Path(root).absolute()
    files = _stamp_files(root)
    items: list[dict] = []
    skipped: dict[str, list[str]] = {
        "mirror_variant": [],
        "no_caption": [],
        "empty_caption": [],
    }
    for rel in sorted(files):
        exts = files[rel]
        if ".svg" not in exts or ".png" in exts:
            continue
        item_id = f"tuxpaint-svg:{rel}"
        if rel.endswith(MIRROR_SUFFIX):
            base = files.get(rel[: -len(MIRROR_SUFFIX)], set())
            if ".png" in base or ".svg" in base:
                skipped["mirror_variant"].append(item_id)
                continue
        if ".txt" not in exts:
            skipped["no_caption"].append(item_id)
            continue
        caption = read_caption(root / (rel + ".txt"))
        if not caption:
            skipped["empty_caption"].append(item_id)
            continue
        items.append(
            {
                "id": item_id,
                "svg": str(root / (rel + ".svg")),
                "caption": caption,
                "category": rel.split("/", 1)[0] if "/" in rel else "",
            }
        )
    return items, skipped


def tuxpaint_fingerprint(root: Path) -> list:
    """What the stamps tree looks like (names, sizes, mtimes) for idempotence."""
    signature = []
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() in (".png", ".svg", ".txt"):
                stat = os.stat(os.path.join(directory, name))
                rel = os.path.relpath(os.path.join(directory, name), root)
                signature.append([rel, stat.st_size, stat.st_mtime_ns])
    return signature
