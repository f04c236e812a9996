"""Emoji code points, names and captions: the shared emojibase reader.

`normalise_codepoint` is the one spelling of an emoji's code point sequence
(the split key that keeps every art style of one emoji in one split), and
`load_emojibase` reads `emojibase-data@17.0.0` (MIT; CLDR labels, keywords,
skin tones, shortcodes) for every emoji source (`emoji_sets`) and evaluation
set (`eval_sets`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import unicodedata
from pathlib import Path

from keras_towers.datasets.npm import tarball_name
from keras_towers.datasets.sources import Package

# === Packages ===

EMOJIBASE = Package(
    "npm", "emojibase-data", "17.0.0", tarball_name("emojibase-data", "17.0.0")
)
DATA_LICENSE = "MIT"
EMOJIBASE_ATTRIBUTION = "Emoji captions from emojibase-data (MIT), CLDR annotations"

SKIN_TONES = {
    "1f3fb": "light skin tone",
    "1f3fc": "medium-light skin tone",
    "1f3fd": "medium skin tone",
    "1f3fe": "medium-dark skin tone",
    "1f3ff": "dark skin tone",
}
_TONE_NUMBER = {name: i + 1 for i, name in enumerate(SKIN_TONES.values())}
_HEX = re.compile(r"^[0-9a-f]{1,6}$")
_SHORTCODE_FILES = ("cldr", "emojibase", "github", "iamcal", "joypixels")


# === Code points and names ===


def normalise_codepoint(sequence: str) -> str:
    """The canonical code point sequence of an emoji: the split key.

    Lowercase hex, at least four digits per code point, joined by `"-"`,
    with every variation selector 16 (`fe0f`) removed, so the same emoji
    written by any package gives the same key.

    Args:
        sequence: str. Hex code points separated by `-`, `_`, spaces or
            commas, each optionally prefixed `U+`/`0x` (`"1F44B-1F3FF"`,
            `"1f44b_1f3ff"`, `"U+1F44B U+1F3FF"`), or the emoji itself
            (`"👋🏿"`).

    Returns:
        The key, e.g. `"1f44b-1f3ff"`, `"0023-20e3"` (keycap #).

    Raises:
        ValueError: `sequence` is empty or not a code point sequence.

    Example:

    ```python
    normalise_codepoint("0023-FE0F-20E3")  # "0023-20e3"
    normalise_codepoint("U+1F44B")  # "1f44b"
    ```
    """
    if not isinstance(sequence, str) or not sequence.strip():
        raise ValueError(
            "`sequence` must be a non-empty code point sequence such as "
            f"'1F44B-1F3FF'. Received: sequence={sequence!r}"
        )
    text = sequence.strip()
    if all(ord(c) > 0x7F for c in text):  # the emoji itself
        points = [ord(c) for c in text]
    else:
        parts = [p for p in re.split(r"[-_\s,]+", text.lower()) if p]
        points = []
        for part in parts:
            part = part.removeprefix("u+").removeprefix("0x")
            if not _HEX.match(part):
                raise ValueError(
                    "`sequence` must be hex code points joined by '-' (e.g. "
                    f"'1F44B-1F3FF'). Received: sequence={sequence!r}"
                )
            points.append(int(part, 16))
    key = "-".join(f"{p:04x}" for p in points if p != 0xFE0F)
    if not key:
        raise ValueError(f"`sequence` holds only FE0F. Received: sequence={sequence!r}")
    return key


def is_skin_tone_variant(codepoint: str | None) -> bool:
    """Whether a normalised code point sequence carries a skin-tone modifier."""
    return bool(codepoint) and any(p in SKIN_TONES for p in codepoint.split("-"))


def is_text_glyph(codepoint: str | None, caption: str | None = None) -> bool:
    """Whether an emoji mostly shows text: a keycap, letter or digit.

    True for keycaps (`20e3`), single regional indicators ("regional
    indicator A"), ASCII letters/digits/`#`/`*` on their own, and (by
    `caption`) unjoined iconify glyphs such as "letter a" or "digit one".
    Their captions can be read off the picture: a shortcut a model can
    learn (`more-data.md` trap 4); the corpus may drop or down-weight them.

    Example:

    ```python
    is_text_glyph("0031-20e3")  # True (keycap: 1)
    is_text_glyph(None, "letter q")  # True
    ```
    """
    if codepoint:
        points = codepoint.split("-")
        if "20e3" in points:
            return True
        if len(points) == 1:
            value = int(points[0], 16)
            if 0x1F1E6 <= value <= 0x1F1FF or value < 0x80:
                return True
    if caption:
        words = caption_from_name(caption)
        return bool(re.match(r"^(letter [a-z]|digit [a-z]+|keycap\b)", words))
    return False


def name_key(name: str) -> str:
    """A name reduced for joining: ASCII lowercase words joined by `-`.

    `"Piñata"` -> `"pinata"`, `"flag: Côte d’Ivoire"` ->
    `"flag-cote-divoire"`, `"Antigua & Barbuda"` -> `"antigua-and-barbuda"`.
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['\u2019\u2018.]", "", text).replace("&", " and ")
    return re.sub(r"[^0-9a-z]+", "-", text).strip("-")


def caption_from_name(name: str) -> str:
    """A caption from a slug or Unicode name: `"smiling-face"` -> `"smiling face"`."""
    text = re.sub(r"[-_\s]+", " ", name.replace("\u2019", "'")).strip()
    return text.lower()


def clean_text(text) -> str:
    return re.sub(r"\s+", " ", str(text)).strip() if text is not None else ""


def category_key(name: str) -> str:
    """`"People & Body"` -> `"people-body"` (emojibase's group keys)."""
    return re.sub(r"[^0-9a-z]+", "-", str(name).lower()).strip("-") or "other"


def tags_of(caption: str, *groups) -> list[str]:
    """Cleaned tags, deduplicated by `name_key`, the caption's own left out."""

    def key(text):
        return name_key(text) or text.casefold()

    seen, out = {key(caption)}, []
    for group in groups:
        for tag in group or ():
            tag = clean_text(tag)
            if tag and key(tag) not in seen:
                seen.add(key(tag))
                out.append(tag)
    return out


def icon_words(name: str) -> str:
    """An icon name as words, numbered variants and "flag for" tidied."""
    name = re.sub(r"-\d+$", "", name)
    name = re.sub(r"^flag-for-(flag-)?", "flag-", name)
    return caption_from_name(name)


# === emojibase ===


@dataclasses.dataclass(frozen=True)
class Emoji:
    """One emojibase entry (a base emoji or one of its skin tones)."""

    codepoint: str
    label: str
    tags: tuple[str, ...]
    group: str | None
    base: str | None  # the base emoji's codepoint, for a skin tone
    tone: tuple[int, ...]  # 1 (light) .. 5 (dark), empty for a base emoji


class EmojiIndex:
    """emojibase captions by normalised code point, and a name index.

    Build it with `load_emojibase(data_dir)` (or `from_directory` on an
    extracted `emojibase-data` package).

    Attributes:
        emoji: dict. normalised code point -> `Emoji`.
    """

    def __init__(self, emoji: dict, names: dict):
        self.emoji = emoji
        self._names = names
        self._skins = {(e.base, e.tone): cp for cp, e in emoji.items() if e.base}

    @classmethod
    def from_directory(cls, directory: Path) -> EmojiIndex:
        """Read `en/data.json`, `meta/groups.json`, `meta/unicode-names.json`
        and `en/shortcodes/*.json` from an extracted `emojibase-data`."""
        directory = Path(directory)
        path = directory / "en" / "data.json"
        try:
            entries = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"Could not read emojibase data {path}: {e}") from e
        if not isinstance(entries, list):
            raise ValueError(f"{path} must hold a JSON list of emoji entries.")
        groups = read_json(directory / "meta" / "groups.json", {}).get("groups", {})

        emoji: dict[str, Emoji] = {}
        for entry in entries:
            try:
                cp = normalise_codepoint(entry["hexcode"])
                label = clean_text(entry["label"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{path}: every entry needs `hexcode` and `label`. "
                    f"Received: {str(entry)[:200]}"
                ) from e
            group = groups.get(str(entry.get("group")))
            tags = tuple(clean_text(t) for t in entry.get("tags") or ())
            emoji[cp] = Emoji(cp, label, tags, group, None, ())
            for skin in entry.get("skins") or ():
                scp = normalise_codepoint(skin["hexcode"])
                tone = skin.get("tone")
                tone = tuple(tone) if isinstance(tone, list) else (tone,)
                skin_group = groups.get(str(skin.get("group")), group)
                emoji[scp] = Emoji(
                    scp, clean_text(skin["label"]), tags, skin_group, cp, tone
                )

        # Name -> code point, most trusted names first (setdefault keeps them).
        names: dict[str, str] = {}
        for item in emoji.values():
            names.setdefault(name_key(item.label), item.codepoint)
        for item in emoji.values():  # "A button (blood type)" -> "a-button"
            bare = re.sub(r"\s*\([^)]*\)", "", item.label)
            if bare != item.label:
                names.setdefault(name_key(bare), item.codepoint)
        unicode_names = read_json(directory / "meta" / "unicode-names.json", {})
        for hexcode, name in unicode_names.items():
            cp = try_normalise(hexcode)
            if cp in emoji:
                names.setdefault(name_key(name), cp)
        for file in _SHORTCODE_FILES:
            codes = read_json(directory / "en" / "shortcodes" / f"{file}.json", {})
            for hexcode, value in codes.items():
                cp = try_normalise(hexcode)
                if cp in emoji:
                    for code in [value] if isinstance(value, str) else value:
                        names.setdefault(name_key(code), cp)
        names.pop("", None)
        return cls(emoji, names)

    def get(self, codepoint: str | None) -> Emoji | None:
        """The entry of a normalised code point, or None."""
        return self.emoji.get(codepoint) if codepoint else None

    def skin(self, base: str, tone: tuple[int, ...]) -> str | None:
        """The code point of `base` in skin tone(s) `tone`, or None."""
        return self._skins.get((base, tuple(tone)))

    def _lookup(self, key: str) -> str | None:
        return self._names.get(key) if key else None

    def join_name(self, name: str) -> str | None:
        """The code point an icon name stands for, or None.

        Tries, in order: the name itself against CLDR labels, Unicode names
        and shortcodes; without a numbered-variant suffix (`"baby-2"`);
        `"flag-for-X"`/`"flag-for-flag-X"` as `"flag-X"`; a trailing
        `"-<tone>-skin-tone"` on a joined base; `"face"` dropped (`"cat face
        with tears of joy"` is CLDR's "cat with tears of joy"); and last
        `"flag-" + name` (`"japan"`).
        """
        key = name_key(name)
        candidates = [key]
        numbered = re.sub(r"-\d+$", "", key)
        if numbered != key:
            candidates.append(numbered)
        for k in list(candidates):
            flag = re.sub(r"^flag-for-(flag-)?", "flag-", k)
            if flag != k:  # "flag-for-japan"
                candidates.append(flag)
            if flag != k and re.search(r"-flags?$", k):  # "flag-for-white-flag"
                candidates.append(k.removeprefix("flag-for-"))
        for k in candidates:
            if (cp := self._lookup(k)) is not None:
                return cp
        for k in candidates:
            match = re.match(
                r"^(.+?)-((?:medium-)?(?:light|dark)|medium)-skin-tone$", k
            )
            if match:
                base = self.join_name(match.group(1))
                tone = _TONE_NUMBER[f"{match.group(2)} skin tone"]
                if base is not None:
                    base = self.emoji[base].base or base
                    if (cp := self.skin(base, (tone,))) is not None:
                        return cp
        for k in candidates:
            faceless = re.sub(r"(^|-)face(?=-|$)", "", k).strip("-")
            if faceless != k and (cp := self._lookup(faceless)) is not None:
                return cp
        return self._lookup(f"flag-{candidates[-1]}")


def read_json(path: Path, default):
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not read {path}: {e}") from e


def try_normalise(sequence) -> str | None:
    try:
        return normalise_codepoint(sequence)
    except ValueError:
        return None


def _emojibase_file(path: str) -> bool:
    shortcodes = {f"en/shortcodes/{f}.json" for f in _SHORTCODE_FILES}
    return path in shortcodes or path in (
        "en/data.json",
        "meta/groups.json",
        "meta/unicode-names.json",
    )


@functools.lru_cache(maxsize=4)
def _load_emojibase(directory: Path, stamp) -> EmojiIndex:
    del stamp  # part of the cache key only
    return EmojiIndex.from_directory(directory)


def load_emojibase(data_dir: str | Path) -> EmojiIndex:
    """The shared emojibase caption index (extracted once, then cached).

    Args:
        data_dir: path. The data directory; reads
            `<data_dir>/sources/emojibase-data-17.0.0.tgz`.

    Example:

    ```python
    index = load_emojibase(keras_towers.datasets.data_dir())
    index.get("1f44b-1f3ff").label  # "waving hand: dark skin tone"
    ```
    """
    data_dir = Path(data_dir)
    directory = EMOJIBASE.extract(data_dir, _emojibase_file)
    stat = (directory / "en" / "data.json").stat()
    return _load_emojibase(directory, (stat.st_size, stat.st_mtime_ns))


def emoji_fields(
    index: EmojiIndex, codepoint: str | None, own_name: str, own_category: str
):
    """`(caption, emojibase tags, category)` of an emoji, own name as fallback."""
    found = index.get(codepoint)
    if found is not None:
        return found.label, list(found.tags), found.group or own_category
    return own_name, [], own_category
