"""Emoji artwork in eight styles as corpus sources, captioned by emojibase.

Every source here pairs emoji artwork from one npm package with English
captions from one shared reader of `emojibase-data` (CLDR labels and
keywords), keyed by the normalised code point sequence
(`normalise_codepoint`), which is also the split key that keeps every style
of one emoji in one split.

| source | package | artwork | licence (images) |
|---|---|---|---|
| `emoji-google` | `emoji-datasource-google@16.0.0` | 64 px PNG | Apache-2.0 |
| `emoji-twitter` | `emoji-datasource-twitter@16.0.0` | 64 px PNG | CC-BY-4.0 |
| `openmoji-color` | `openmoji@17.0.0` | SVG | CC-BY-SA-4.0 |
| `openmoji-black` | `openmoji@17.0.0` | SVG (line art) | CC-BY-SA-4.0 |
| `emojione` | `@iconify-json/emojione@1.2.3` | SVG | CC-BY-4.0 |
| `emojione-v1` | `@iconify-json/emojione-v1@1.2.3` | SVG | CC-BY-SA-4.0 |
| `noto-v1` | `@iconify-json/noto-v1@1.2.5` | SVG ("blob" art) | Apache-2.0 |
| `streamline-emojis` | `@iconify-json/streamline-emojis@1.2.4` | SVG | CC-BY-4.0 |

Captions are MIT (`emojibase-data`, and `emoji-datasource`'s data). Fluent
styles are deliberately absent: they are held out for evaluation.

What becomes an item:

- emoji-datasource (`emoji-google`, `emoji-twitter`): every `emoji.json`
  entry with its image, and each skin-tone variation as its own item
  ("waving hand: dark skin tone"). The `Component` category (skin-tone
  swatches, hair pieces) is skipped (`component`), and so is an entry whose
  image is absent (`missing_image`).
- OpenMoji: every `data/openmoji.json` entry (Unicode emoji, their skin
  tones, and OpenMoji's own extras such as "goldfish" in the Private Use
  Area, whose code point only OpenMoji's two styles share); `component` and
  `missing_image` as above.
- iconify sets: every icon of `icons.json`, built into a standalone SVG
  (`iconify_svg`). Aliases are skipped (`alias`: the same artwork under
  another name) but their names join and tag their parent; hidden icons
  (`hidden`: kept by iconify only for old names) and icons with rotate/flip
  transforms (`transformed`; none in these sets) are skipped. Icons join
  emoji through `chars.json` when it maps them (empty in these four
  releases), else by matching the icon name against emojibase's labels,
  Unicode names and shortcodes (`EmojiIndex.join_name`). An icon that joins
  nowhere is kept with its name as caption ("amazed-face" -> "amazed face")
  and `codepoint` None; `listing()`'s `meta` counts joined and unjoined.

Captions: the CLDR label from emojibase (as CLDR writes it: lowercase apart
from proper nouns and letters, "flag: Japan", "OK hand"), else the set's own
name, lowercased. `tags` collects emojibase keywords and the set's own names
and keywords. Keycaps, regional indicators and signs such as "SOON arrow"
are kept: they show their caption's text, a shortcut a model can learn
(`is_text_glyph` marks them for the corpus to down-weight or drop).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from keras_towers.datasets.emojibase import EMOJIBASE
from keras_towers.datasets.emojibase import SKIN_TONES
from keras_towers.datasets.emojibase import EmojiIndex
from keras_towers.datasets.emojibase import caption_from_name
from keras_towers.datasets.emojibase import category_key
from keras_towers.datasets.emojibase import clean_text
from keras_towers.datasets.emojibase import emoji_fields
from keras_towers.datasets.emojibase import icon_words
from keras_towers.datasets.emojibase import is_skin_tone_variant
from keras_towers.datasets.emojibase import load_emojibase
from keras_towers.datasets.emojibase import normalise_codepoint
from keras_towers.datasets.emojibase import read_json
from keras_towers.datasets.emojibase import tags_of
from keras_towers.datasets.emojibase import try_normalise
from keras_towers.datasets.npm import tarball_name
from keras_towers.datasets.sources import CorpusSource
from keras_towers.datasets.sources import Package
from keras_towers.datasets.sources import items_from_listing

# === emoji-datasource (Google, Twitter) ===


@dataclasses.dataclass(frozen=True)
class _Datasource:
    style: str  # "google", "twitter": the `img/<style>/64` folder and flag

    @property
    def png_dir(self) -> str:
        return f"img/{self.style}/64"

    def select(self, path: str) -> bool:
        if path == "emoji.json":
            return True
        folder, _, name = path.rpartition("/")
        return folder == self.png_dir and name.endswith(".png")


def _datasource_listing(name, package, style: _Datasource, data_dir):
    index = load_emojibase(data_dir)
    directory = package.extract(data_dir, style.select)
    path = directory / "emoji.json"
    entries = read_json(path, None)
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of emoji entries.")
    skipped = {"component": [], "missing_image": [], "duplicate_codepoint": []}
    items: dict[str, dict] = {}
    png_dir = (directory / style.png_dir).absolute()
    present = {p.name for p in png_dir.iterdir()} if png_dir.is_dir() else set()

    def add(cp, image, has_image, caption, tags, category):
        item_id = f"{name}:{cp}"
        if item_id in items:
            skipped["duplicate_codepoint"].append(item_id)
        elif not has_image or image not in present:
            skipped["missing_image"].append(item_id)
        else:
            items[item_id] = {
                "id": item_id,
                "caption": caption,
                "tags": tags,
                "codepoint": cp,
                "category": category,
                "image": str(png_dir / image),
                "style": style.style,
            }

    for entry in entries:
        try:
            cp = normalise_codepoint(entry["unified"])
            own_name = caption_from_name(entry["name"] or entry["short_name"])
            category = category_key(entry["category"])
            image = str(entry["image"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: every entry needs `unified`, `name`, `image` and "
                f"`category`. Received: {str(entry)[:200]}"
            ) from e
        variations = entry.get("skin_variations") or {}
        if category == "component":
            skipped["component"].append(f"{name}:{cp}")
            for v in variations.values():
                skipped["component"].append(
                    f"{name}:{normalise_codepoint(v['unified'])}"
                )
            continue
        caption, tags, category = emoji_fields(index, cp, own_name, category)
        has_flag = f"has_img_{style.style}"
        add(
            cp,
            image,
            entry.get(has_flag, True),
            caption,
            tags_of(caption, [own_name], tags),
            category,
        )
        for tone_key, variation in variations.items():
            vcp = normalise_codepoint(variation["unified"])
            found = index.get(vcp)
            if found is not None:
                vcaption = found.label
            else:
                tones = [SKIN_TONES.get(t.lower(), t) for t in tone_key.split("-")]
                vcaption = f"{caption}: {', '.join(dict.fromkeys(tones))}"
            add(
                vcp,
                str(variation.get("image")),
                variation.get(has_flag, True),
                vcaption,
                tags_of(vcaption, [caption], tags),
                category,
            )
    meta = {
        "package": f"{package.name}@{package.version}",
        "extracted_to": str(directory),
        "entries": len(entries),
        "base": sum(not is_skin_tone_variant(i["codepoint"]) for i in items.values()),
        "skin_tone": sum(is_skin_tone_variant(i["codepoint"]) for i in items.values()),
        "captions_not_from_emojibase": _not_in(index, items),
    }
    return _finish(items, skipped, meta)


def _not_in(index: EmojiIndex, items: dict) -> int:
    """How many items' code points emojibase does not know."""
    return sum(index.get(item["codepoint"]) is None for item in items.values())


def _finish(items: dict, skipped: dict, meta: dict):
    skipped = {reason: sorted(ids) for reason, ids in skipped.items()}
    meta["items"] = len(items)
    meta["skipped"] = {reason: len(ids) for reason, ids in skipped.items()}
    return [items[k] for k in sorted(items)], skipped, meta


# === OpenMoji ===

OPENMOJI = Package("npm", "openmoji", "17.0.0", tarball_name("openmoji", "17.0.0"))
_OPENMOJI_STYLES = {"openmoji-color": "color", "openmoji-black": "black"}


def _openmoji_file(path: str) -> bool:
    if path == "data/openmoji.json":
        return True
    folder, _, name = path.rpartition("/")
    return folder in ("color/svg", "black/svg") and name.endswith(".svg")


def _split_tags(text) -> list[str]:
    return [t for t in (clean_text(t) for t in str(text or "").split(",")) if t]


def _openmoji_listing(name, data_dir):
    folder = _OPENMOJI_STYLES[name]
    index = load_emojibase(data_dir)
    directory = OPENMOJI.extract(data_dir, _openmoji_file)
    path = directory / "data" / "openmoji.json"
    entries = read_json(path, None)
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of emoji entries.")
    svg_dir = (directory / folder / "svg").absolute()
    present = {p.name for p in svg_dir.iterdir()} if svg_dir.is_dir() else set()
    skipped = {"component": [], "missing_image": [], "duplicate_codepoint": []}
    items: dict[str, dict] = {}
    extras = 0
    for entry in entries:
        try:
            hexcode, annotation = str(entry["hexcode"]), clean_text(entry["annotation"])
            cp = normalise_codepoint(hexcode)
            group = str(entry.get("group") or "other")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: every entry needs `hexcode` and `annotation`. "
                f"Received: {str(entry)[:200]}"
            ) from e
        item_id = f"{name}:{cp}"
        if group == "component":
            skipped["component"].append(item_id)
            continue
        if item_id in items:
            skipped["duplicate_codepoint"].append(item_id)
            continue
        if f"{hexcode}.svg" not in present:
            skipped["missing_image"].append(item_id)
            continue
        if group.startswith("extras") and " " not in annotation:
            annotation = caption_from_name(annotation)  # "spouting-orca"
        caption, tags, category = emoji_fields(index, cp, annotation, group)
        if group.startswith("extras"):
            extras += 1
            category = group
        items[item_id] = {
            "id": item_id,
            "caption": caption or cp,
            "tags": tags_of(
                caption,
                [annotation],
                tags,
                _split_tags(entry.get("tags")),
                _split_tags(entry.get("openmoji_tags")),
            ),
            "codepoint": cp,
            "category": category,
            "svg": str(svg_dir / f"{hexcode}.svg"),
            "style": name,
        }
    meta = {
        "package": f"{OPENMOJI.name}@{OPENMOJI.version}",
        "extracted_to": str(directory),
        "entries": len(entries),
        "extras": extras,
        "skin_tone": sum(is_skin_tone_variant(i["codepoint"]) for i in items.values()),
        "captions_not_from_emojibase": _not_in(index, items),
    }
    return _finish(items, skipped, meta)


# === iconify sets ===

_ICONIFY_FILES = ("icons.json", "chars.json", "info.json", "metadata.json")
_TRANSFORMS = ("rotate", "hFlip", "vFlip")


def iconify_svg(icon: dict, defaults: dict) -> str:
    """A standalone SVG document from one iconify icon.

    Args:
        icon: dict. The icon's entry in `icons.json` (`body`, optional
            `width`, `height`, `left`, `top`).
        defaults: dict. The set's top level of `icons.json` (its `width`,
            `height`, `left`, `top` defaults; iconify's own default is a
            16 x 16 box at 0, 0).

    Returns:
        `<svg xmlns=... width=W height=H viewBox="left top W H">body</svg>`.

    Example:

    ```python
    iconify_svg({"body": '<path d="M0 0h8v8z"/>'}, {"width": 16, "height": 16})
    ```
    """
    if not isinstance(icon, dict) or not isinstance(icon.get("body"), str):
        raise ValueError(f"An iconify icon needs a string `body`. Received: {icon!r}")

    def value(key, fallback):
        number = icon.get(key, defaults.get(key, fallback))
        return f"{number:g}" if isinstance(number, (int, float)) else str(number)

    width, height = value("width", 16), value("height", 16)
    left, top = value("left", 0), value("top", 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="{left} {top} {width} {height}">'
        f"{icon['body']}</svg>"
    )


@dataclasses.dataclass(frozen=True)
class _Iconify:
    package: Package
    license: str
    attribution: str


def _iconify_listing(name, spec: _Iconify, data_dir):
    index = load_emojibase(data_dir)
    directory = spec.package.extract(data_dir, lambda p: p in _ICONIFY_FILES)
    path = directory / "icons.json"
    data = read_json(path, None)
    if not isinstance(data, dict) or not isinstance(data.get("icons"), dict):
        raise ValueError(f"{path} must be an iconify JSON set with `icons`.")
    icons, aliases = data["icons"], data.get("aliases") or {}
    chars = read_json(directory / "chars.json", {})
    metadata = read_json(directory / "metadata.json", {})
    categories = {}
    for category, names in (metadata.get("categories") or {}).items():
        for icon_name in names:
            categories.setdefault(icon_name, category_key(category))

    # Aliases: the same artwork under another name; their names help joining.
    alias_names: dict[str, list[str]] = {}
    for alias in sorted(aliases):
        parent, seen = alias, set()
        while parent in aliases and parent not in seen:
            seen.add(parent)
            parent = aliases[parent].get("parent")
        if parent in icons:
            alias_names.setdefault(parent, []).append(alias)
    by_chars: dict[str, str] = {}
    for hexcode, icon_name in sorted(chars.items()):
        cp = try_normalise(hexcode)
        if cp is not None and (icon_name not in by_chars or cp in index.emoji):
            if by_chars.get(icon_name) not in index.emoji:
                by_chars[icon_name] = cp

    skipped = {
        "alias": [f"{name}:{a}" for a in aliases],
        "hidden": [],
        "transformed": [],
        "component": [],
    }
    items: dict[str, dict] = {}
    joined = {"chars": 0, "name": 0}
    unjoined = []
    for icon_name, icon in icons.items():
        item_id = f"{name}:{icon_name}"
        if icon.get("hidden"):
            skipped["hidden"].append(item_id)
            continue
        if any(icon.get(t) for t in _TRANSFORMS):
            skipped["transformed"].append(item_id)
            continue
        cp, how = by_chars.get(icon_name), "chars"
        for candidate in [icon_name, *alias_names.get(icon_name, ())]:
            if cp is None:
                cp, how = index.join_name(candidate), "name"
        own_name = icon_words(icon_name)
        own_category = categories.get(icon_name, "other")
        caption, tags, category = emoji_fields(index, cp, own_name, own_category)
        if category == "component":  # skin-tone swatches, hair pieces
            skipped["component"].append(item_id)
            continue
        if cp is None:
            unjoined.append(icon_name)
        else:
            joined[how] += 1
        items[item_id] = {
            "id": item_id,
            "caption": caption,
            "tags": tags_of(
                caption,
                [own_name],
                [icon_words(a) for a in alias_names.get(icon_name, ())],
                tags,
            ),
            "codepoint": cp,
            "category": category,
            "svg": iconify_svg(icon, data),
            "style": name,
        }
    info = read_json(directory / "info.json", {})
    meta = {
        "package": f"{spec.package.name}@{spec.package.version}",
        "extracted_to": str(directory),
        "icons": len(icons),
        "aliases": len(aliases),
        "license_in_package": (info.get("license") or {}).get("spdx"),
        "joined_chars": joined["chars"],
        "joined_name": joined["name"],
        "unjoined": len(unjoined),
        "unjoined_names": sorted(unjoined),
    }
    return _finish(items, skipped, meta)


# === Registry ===

_DATASOURCE = {
    "emoji-google": (
        Package(
            "npm",
            "emoji-datasource-google",
            "16.0.0",
            tarball_name("emoji-datasource-google", "16.0.0"),
        ),
        _Datasource("google"),
        "Apache-2.0 (images), MIT (data)",
        "Noto Emoji by Google (Apache-2.0), via emoji-datasource by iamcal (MIT)",
    ),
    "emoji-twitter": (
        Package(
            "npm",
            "emoji-datasource-twitter",
            "16.0.0",
            tarball_name("emoji-datasource-twitter", "16.0.0"),
        ),
        _Datasource("twitter"),
        "CC-BY-4.0 (images), MIT (data)",
        "Twemoji by Twitter, Inc. and other contributors, CC BY 4.0 "
        "(https://github.com/twitter/twemoji), via emoji-datasource by iamcal (MIT)",
    ),
}


def _iconify(package: str, version: str, license: str, attribution: str):
    return _Iconify(
        Package("npm", package, version, tarball_name(package, version)),
        license,
        attribution,
    )


_ICONIFY = {
    "emojione": _iconify(
        "@iconify-json/emojione",
        "1.2.3",
        "CC-BY-4.0",
        "Emoji One (Colored) by Emoji One, CC BY 4.0 "
        "(https://github.com/EmojiTwo/emojitwo), via Iconify",
    ),
    "emojione-v1": _iconify(
        "@iconify-json/emojione-v1",
        "1.2.3",
        "CC-BY-SA-4.0",
        "Emoji One (v1) by Emoji One, CC BY-SA 4.0 "
        "(https://github.com/joypixels/emojione-legacy), via Iconify",
    ),
    "noto-v1": _iconify(
        "@iconify-json/noto-v1",
        "1.2.5",
        "Apache-2.0",
        "Noto Emoji (v1) by Google Inc., Apache-2.0 "
        "(https://github.com/googlefonts/noto-emoji), via Iconify",
    ),
    "streamline-emojis": _iconify(
        "@iconify-json/streamline-emojis",
        "1.2.4",
        "CC-BY-4.0",
        "Streamline Emojis by Streamline, CC BY 4.0 "
        "(https://github.com/webalys-hq/streamline-vectors), via Iconify",
    ),
}
OPENMOJI_LICENSE = "CC-BY-SA-4.0"
OPENMOJI_ATTRIBUTION = (
    "OpenMoji, the open-source emoji and icon project, CC BY-SA 4.0 "
    "(https://openmoji.org)"
)


def listing(name: str, data_dir: str | Path) -> tuple[list[dict], dict, dict]:
    """One emoji source's items, skipped ids and counts.

    Args:
        name: str. A key of `SOURCES` (`"emoji-google"`, `"openmoji-color"`,
            `"emojione"`, ...).
        data_dir: path. The data directory (`keras_towers.datasets.data_dir()`).

    Returns:
        `(items, skipped, meta)`: `items` and `skipped` as a
        `CorpusSource.items` returns them; `meta` counts what was read (for an
        iconify set `joined_chars`, `joined_name`, `unjoined` and the
        unjoined names; for the others base and skin-tone items and captions
        not found in emojibase).

    Example:

    ```python
    items, skipped, meta = listing("noto-v1", keras_towers.datasets.data_dir())
    ```
    """
    data_dir = Path(data_dir).expanduser().absolute()
    if name in _DATASOURCE:
        package, style = _DATASOURCE[name][:2]
        return _datasource_listing(name, package, style, data_dir)
    if name in _OPENMOJI_STYLES:
        return _openmoji_listing(name, data_dir)
    if name in _ICONIFY:
        return _iconify_listing(name, _ICONIFY[name], data_dir)
    raise ValueError(
        f"`name` must be one of {sorted(SOURCES)}. Received: name={name!r}"
    )


def _items_of(name: str):
    return items_from_listing(listing, name)


def _sources() -> dict[str, CorpusSource]:
    out = {}
    for name, (package, _, license, attribution) in _DATASOURCE.items():
        out[name] = CorpusSource(
            name, (package, EMOJIBASE), license, attribution, _items_of(name)
        )
    for name in _OPENMOJI_STYLES:
        out[name] = CorpusSource(
            name,
            (OPENMOJI, EMOJIBASE),
            OPENMOJI_LICENSE,
            OPENMOJI_ATTRIBUTION,
            _items_of(name),
        )
    for name, spec in _ICONIFY.items():
        out[name] = CorpusSource(
            name,
            (spec.package, EMOJIBASE),
            spec.license,
            spec.attribution,
            _items_of(name),
        )
    return out


#: The emoji family of corpus sources, by name.
SOURCES: dict[str, CorpusSource] = _sources()
