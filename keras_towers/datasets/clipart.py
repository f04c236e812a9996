"""Clip art as corpus sources: OpenClipart, game-icons.net, Tux Paint SVGs.

| source | package | artwork | licence |
|---|---|---|---|
| `openclipart` | Debian `openclipart-svg` 1:0.18+dfsg-19 | SVG files | public domain |
| `game-icons` | npm `@iconify-json/game-icons@1.2.4` | SVG from `icons.json` | CC-BY-3.0 |
| `tuxpaint-svg` | Debian `tuxpaint-stamps-default` | SVG files | GPL-2.0 |

Every item's `svg` is the artwork (a file path, or SVG text for game-icons);
the corpus renders it. Nothing here renders.

OpenClipart: `keras_towers.datasets.openclipart` (its package, metadata
parsing, caption and keyword cleaning, non-English detection and
`openclipart_listing`). This module holds the `SOURCES` registry of the
three sources, `listing()`, and the game-icons and Tux Paint SVG listings.

game-icons (`game_icons_listing`): every icon of the iconify set, built into
a 512-unit SVG by `emoji_sets.iconify_svg`; the caption is the name
(`"lantern-flame"` -> `"lantern flame"`). Aliases are skipped (`alias`: the
same artwork under another name) and join their parent's tags; hidden icons
(`hidden`) and icons with rotate/flip transforms (`transformed`, none) are
skipped. The package names no authors: `GAME_ICONS_AUTHORS` is the list of
the upstream `license.txt`, whose credit line `GAME_ICONS_ATTRIBUTION` is.

Tux Paint SVG-only stamps (`tuxpaint-svg`):
`keras_towers.datasets.tuxpaint.scan_tuxpaint_svg`.
"""

from __future__ import annotations

import json
import os

from keras_towers.datasets import paths
from keras_towers.datasets.emoji_sets import iconify_svg
from keras_towers.datasets.emojibase import caption_from_name
from keras_towers.datasets.npm import tarball_name
from keras_towers.datasets.openclipart import OPENCLIPART
from keras_towers.datasets.openclipart import OPENCLIPART_ATTRIBUTION
from keras_towers.datasets.openclipart import OPENCLIPART_LICENSE
from keras_towers.datasets.openclipart import openclipart_listing
from keras_towers.datasets.sources import CorpusSource
from keras_towers.datasets.sources import Package
from keras_towers.datasets.sources import items_from_listing
from keras_towers.datasets.tuxpaint import TUXPAINT_LICENSE
from keras_towers.datasets.tuxpaint import scan_tuxpaint_svg

# === Packages ===

GAME_ICONS = Package(
    "npm",
    "@iconify-json/game-icons",
    "1.2.4",
    tarball_name("@iconify-json/game-icons", "1.2.4"),
)
GAME_ICONS_LICENSE = "CC-BY-3.0"
#: The contributors `https://github.com/game-icons/icons/blob/master/license.txt`
#: lists (as of 2025-05); it asks for "Icons made by {author}". Viscious Speed
#: and Zeromancer's icons are CC0.
GAME_ICONS_AUTHORS = (
    "Lorc",
    "Delapouite",
    "John Colburn",
    "Felbrigg",
    "John Redman",
    "Carl Olsen",
    "Sbed",
    "PriorBlue",
    "Willdabeast",
    "Viscious Speed",
    "Lord Berandas",
    "Irongamer",
    "HeavenlyDog",
    "Lucas",
    "Faithtoken",
    "Skoll",
    "Andy Meneely",
    "Cathelineau",
    "Kier Heyl",
    "Aussiesim",
    "Sparker",
    "Zeromancer",
    "Rihlsul",
    "Quoting",
    "Guard13007",
    "DarkZaitzev",
    "SpencerDub",
    "GeneralAce135",
    "Zajkonur",
    "Catsu",
    "Starseeker",
    "Pepijn Poolman",
    "Pierre Leducq",
    "Caro Asercion",
    "SeregaCthtuf",
)
GAME_ICONS_ATTRIBUTION = (
    f"Icons made by {', '.join(GAME_ICONS_AUTHORS)} (game-icons.net), "
    "CC BY 3.0, via Iconify"
)

TUXPAINT_STAMPS = Package(
    "debian",
    "tuxpaint-stamps-default",
    None,
    paths.DEFAULT_TUXPAINT_DIR,
    env=paths.TUXPAINT_DIR_ENV,
)
TUXPAINT_SVG_ATTRIBUTION = (
    "Tux Paint stamps, New Breed Software and contributors (GPL-2.0)"
)


# === game-icons ===

_TRANSFORMS = ("rotate", "hFlip", "vFlip")


def game_icons_listing(
    data_dir: str | os.PathLike | None = None,
) -> tuple[list[dict], dict[str, list[str]], dict]:
    """game-icons.net's items, skipped ids and counts.

    Extracts `icons.json` and `info.json` of the npm tarball into
    `<data_dir>/iconify-json-game-icons-1.2.4/` (once) and builds each icon
    into a standalone SVG.

    Args:
        data_dir: path or None. The data directory (default
            `keras_towers.datasets.data_dir()`).

    Returns:
        `(items, skipped, meta)` as `openclipart_listing`; ids are
        `"game-icons:<name>"`, `svg` is SVG text.

    Example:

    ```python
    items, skipped, meta = game_icons_listing()
    items[0]["caption"]  # "3d glasses"
    ```
    """
    data_dir = paths.resolve_data_dir(data_dir)
    dest = GAME_ICONS.extract(data_dir, lambda p: p in ("icons.json", "info.json"))
    path = dest / "icons.json"
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not read {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("icons"), dict):
        raise ValueError(f"{path} must be an iconify JSON set with `icons`.")
    icons, aliases = data["icons"], data.get("aliases") or {}

    alias_names: dict[str, list[str]] = {}
    for alias in sorted(aliases):
        parent, seen = alias, set()
        while parent in aliases and parent not in seen:
            seen.add(parent)
            parent = (aliases[parent] or {}).get("parent")
        if parent in icons:
            alias_names.setdefault(parent, []).append(alias)
    skipped = {
        "alias": sorted(f"game-icons:{a}" for a in aliases),
        "hidden": [],
        "transformed": [],
    }
    items = []
    for name in sorted(icons):
        icon, item_id = icons[name], f"game-icons:{name}"
        if icon.get("hidden"):
            skipped["hidden"].append(item_id)
            continue
        if any(icon.get(t) for t in _TRANSFORMS):
            skipped["transformed"].append(item_id)
            continue
        caption = caption_from_name(name)
        tags = []
        for alias in alias_names.get(name, ()):
            tag = caption_from_name(alias)
            if tag != caption and tag not in tags:
                tags.append(tag)
        items.append(
            {
                "id": item_id,
                "caption": caption,
                "tags": tags,
                "codepoint": None,
                "category": "game-icons",
                "style": "game-icons",
                "svg": iconify_svg(icon, data),
            }
        )
    try:
        info = json.loads((dest / "info.json").read_text("utf-8"))
    except (OSError, ValueError):
        info = {}
    meta = {
        "package": f"{GAME_ICONS.name}@{GAME_ICONS.version}",
        "extracted_to": str(dest),
        "icons": len(icons),
        "aliases": len(aliases),
        "items": len(items),
        "license_in_package": (info.get("license") or {}).get("spdx"),
        "author_in_package": (info.get("author") or {}).get("name"),
    }
    return items, skipped, meta


# === Tux Paint SVG-only stamps ===


def tuxpaint_svg_listing(
    data_dir: str | os.PathLike | None = None,
) -> tuple[list[dict], dict[str, list[str]], dict]:
    """Tux Paint's SVG-only stamps (`scan_tuxpaint_svg` under
    `keras_towers.datasets.paths.tuxpaint_dir()`), with the corpus fields.

    Example:

    ```python
    items, skipped, meta = tuxpaint_svg_listing()
    ```
    """
    root = paths.tuxpaint_dir().absolute()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Tux Paint stamps are not installed: no directory {root}. Install "
            f"them with `{TUXPAINT_STAMPS.install_hint()}` or set "
            f"${paths.TUXPAINT_DIR_ENV}."
        )
    items, skipped = scan_tuxpaint_svg(root)
    for item in items:
        item.update(tags=[], codepoint=None, style="tuxpaint")
    meta = {"root": str(root), "items": len(items)}
    return items, skipped, meta


# === Registry ===

_LISTINGS = {
    "openclipart": openclipart_listing,
    "game-icons": game_icons_listing,
    "tuxpaint-svg": tuxpaint_svg_listing,
}


def listing(name: str, data_dir: str | os.PathLike | None = None):
    """One clip art source's `(items, skipped, meta)`.

    Args:
        name: str. `"openclipart"`, `"game-icons"` or `"tuxpaint-svg"`.
        data_dir: path or None. The data directory (default
            `keras_towers.datasets.data_dir()`).

    Example:

    ```python
    items, skipped, meta = listing("game-icons")
    ```
    """
    if name not in _LISTINGS:
        raise ValueError(
            f"`name` must be one of {sorted(_LISTINGS)}. Received: name={name!r}"
        )
    return _LISTINGS[name](data_dir)


def _items_of(name: str):
    return items_from_listing(listing, name)


#: The clip art family of corpus sources, by name.
SOURCES: dict[str, CorpusSource] = {
    "openclipart": CorpusSource(
        "openclipart",
        (OPENCLIPART,),
        OPENCLIPART_LICENSE,
        OPENCLIPART_ATTRIBUTION,
        _items_of("openclipart"),
    ),
    "game-icons": CorpusSource(
        "game-icons",
        (GAME_ICONS,),
        GAME_ICONS_LICENSE,
        GAME_ICONS_ATTRIBUTION,
        _items_of("game-icons"),
    ),
    "tuxpaint-svg": CorpusSource(
        "tuxpaint-svg",
        (TUXPAINT_STAMPS,),
        TUXPAINT_LICENSE,
        TUXPAINT_SVG_ATTRIBUTION,
        _items_of("tuxpaint-svg"),
    ),
}
