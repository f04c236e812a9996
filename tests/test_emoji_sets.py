"""The emoji family of corpus sources (`keras_towers.datasets.emoji_sets`).

Every test but the last builds tiny npm tarballs (`package/...` members, as
`npm pack` writes them) in `tmp_path`; the last one reads the real packages
when they are installed and checks the counts measured on them.
"""

from pathlib import Path

import pytest

from keras_towers.datasets import emoji_sets
from keras_towers.datasets import emojibase
from keras_towers.datasets import paths
from keras_towers.datasets.emojibase import normalise_codepoint
from tests.corpus_fakes import datasource as _datasource
from tests.corpus_fakes import emojibase as _emojibase
from tests.corpus_fakes import npm_tarball as _tarball

pytestmark = pytest.mark.backend_independent

ITEM_KEYS = {"id", "caption", "tags", "codepoint", "category", "style"}


@pytest.fixture
def data_dir(tmp_path):
    _emojibase(tmp_path)
    return tmp_path


def _check_items(items, source):
    ids = [item["id"] for item in items]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for item in items:
        assert ITEM_KEYS <= set(item), item
        assert ("image" in item) != ("svg" in item), item
        assert item["id"].startswith(f"{source}:")
        assert item["caption"] and item["caption"] == item["caption"].strip()
        if item["codepoint"] is not None:
            assert normalise_codepoint(item["codepoint"]) == item["codepoint"]


# === Code points and names ===


@pytest.mark.parametrize(
    "given, expected",
    [
        ("1F44B-1F3FF", "1f44b-1f3ff"),
        ("1f44b_1f3ff", "1f44b-1f3ff"),
        ("U+1F44B", "1f44b"),
        ("U+1F44B U+1F3FF", "1f44b-1f3ff"),
        ("0x1f44b", "1f44b"),
        ("0023-FE0F-20E3", "0023-20e3"),
        ("23-20e3", "0023-20e3"),
        ("1F441-FE0F-200D-1F5E8-FE0F", "1f441-200d-1f5e8"),
        ("\U0001f44b\U0001f3ff", "1f44b-1f3ff"),
        ("  1F600 ", "1f600"),
    ],
)
def test_normalise_codepoint(given, expected):
    assert normalise_codepoint(given) == expected


@pytest.mark.parametrize("bad", ["", "  ", "FE0F", "waving-hand", "1F44G", None])
def test_normalise_codepoint_rejects(bad):
    with pytest.raises(ValueError, match="sequence"):
        normalise_codepoint(bad)


def test_name_helpers():
    assert emojibase.name_key("flag: Côte d’Ivoire") == "flag-cote-divoire"
    assert emojibase.name_key("Antigua & Barbuda") == "antigua-and-barbuda"
    assert emojibase.caption_from_name("smiling-face") == "smiling face"
    assert emojibase.is_skin_tone_variant("1f44b-1f3ff")
    assert not emojibase.is_skin_tone_variant("1f44b")
    assert not emojibase.is_skin_tone_variant(None)
    assert emojibase.is_text_glyph("0023-20e3")
    assert emojibase.is_text_glyph("1f1e6")  # regional indicator A
    assert not emojibase.is_text_glyph("1f1ef-1f1f5")  # a flag
    assert emojibase.is_text_glyph(None, "letter a")
    assert not emojibase.is_text_glyph("1f600", "grinning face")


def test_emojibase_index(data_dir):
    index = emojibase.load_emojibase(data_dir)
    assert index.get("1f44b").tags == ("hello", "wave")
    assert index.get("1f44b-1f3ff").label == "waving hand: dark skin tone"
    assert index.get("1f44b-1f3ff").base == "1f44b"
    assert index.get("0023-20e3").label == "keycap: #"
    assert index.join_name("grinning") == "1f600"  # shortcode
    assert index.join_name("waving-hand-dark-skin-tone") == "1f44b-1f3ff"
    assert index.join_name("wave-light-skin-tone") == "1f44b-1f3fb"
    assert index.join_name("cat-face-with-tears-of-joy") == "1f639"  # Unicode name
    assert index.join_name("flag-for-japan") == "1f1ef-1f1f5"
    assert index.join_name("japan") == "1f1ef-1f1f5"
    assert index.join_name("smiling-face-2") == "263a"
    assert index.join_name("amazed-face") is None
    # Only the files the reader needs are extracted.
    extracted = data_dir / "emojibase-data-17.0.0"
    assert (extracted / "en" / "data.json").is_file()
    assert not (extracted / "en" / "data.json.d.ts").exists()


# === emoji-datasource (Google, Twitter) ===


@pytest.mark.parametrize("style", ["google", "twitter"])
def test_datasource_items_and_skin_tones(data_dir, style):
    _datasource(data_dir, style)
    source = f"emoji-{style}"
    items, skipped = emoji_sets.SOURCES[source].items(data_dir)
    _check_items(items, source)
    by_id = {item["id"][len(source) + 1 :]: item for item in items}
    assert sorted(by_id) == ["1f44b", "1f44b-1f3fb", "1f44b-1f3ff", "1f600", "1f9ff"]

    wave = by_id["1f44b"]
    assert wave["caption"] == "waving hand"  # CLDR, not "waving hand sign"
    assert wave["tags"] == ["waving hand sign", "hello", "wave"]
    assert wave["category"] == "people-body" and wave["style"] == style
    assert Path(wave["image"]).is_file() and Path(wave["image"]).is_absolute()
    dark = by_id["1f44b-1f3ff"]
    assert dark["caption"] == "waving hand: dark skin tone"
    assert dark["codepoint"] == "1f44b-1f3ff"
    assert "waving hand" in dark["tags"]
    assert by_id["1f9ff"]["caption"] == "nazar amulet"  # the set's own name
    assert by_id["1f9ff"]["category"] == "objects"

    assert skipped["component"] == [f"{source}:1f3fb"]
    assert skipped["missing_image"] == [f"{source}:0023-20e3", f"{source}:1f44b-1f3fd"]
    extracted = data_dir / f"emoji-datasource-{style}-16.0.0"
    assert not (extracted / "img" / "other").exists()

    _, _, meta = emoji_sets.listing(source, data_dir)
    assert (meta["base"], meta["skin_tone"]) == (3, 2)
    assert meta["captions_not_from_emojibase"] == 1


def test_skin_tone_caption_without_emojibase_entry(data_dir):
    entries = [
        {
            "name": "SANTA",
            "unified": "1F385",
            "image": "1f385.png",
            "category": "People & Body",
            "skin_variations": {"1F3FC": {"unified": "1F385-1F3FC", "image": "x.png"}},
        }
    ]
    files = {"emoji.json": entries}
    files |= {f"img/google/64/{n}": b"\x89PNG" for n in ("1f385.png", "x.png")}
    _tarball(data_dir, "emoji-datasource-google", "16.0.0", files)
    items, _ = emoji_sets.SOURCES["emoji-google"].items(data_dir)
    assert [i["caption"] for i in items] == ["santa", "santa: medium-light skin tone"]


def test_missing_package_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="npm pack emojibase-data@17.0.0"):
        emoji_sets.SOURCES["emoji-google"].items(tmp_path)
    assert set(emoji_sets.SOURCES["emoji-google"].missing(tmp_path)) == {
        "emoji-datasource-google",
        "emojibase-data",
    }


# === OpenMoji ===


def _openmoji(data_dir: Path) -> None:
    def entry(hexcode, group, annotation, tags="", openmoji_tags=""):
        return {
            "hexcode": hexcode,
            "group": group,
            "annotation": annotation,
            "tags": tags,
            "openmoji_tags": openmoji_tags,
        }

    entries = [
        entry(
            "1F600", "smileys-emotion", "grinning face", "face, grin", "smile, happy"
        ),
        entry("1F44B-1F3FF", "people-body", "waving hand: dark skin tone"),
        entry("E004", "extras-openmoji", "spouting-orca", "", "whale, orca"),
        entry("2BEB", "extras-unicode", "star with right half black", "", "half star"),
        entry("1F3FB", "component", "light skin tone"),
        entry("1F639", "smileys-emotion", "cat with tears of joy"),  # no SVG
    ]
    svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"/>'
    files = {"data/openmoji.json": entries, "data/openmoji.csv": "x"}
    for folder in ("color", "black"):
        for hexcode in ("1F600", "1F44B-1F3FF", "E004", "2BEB", "1F3FB"):
            files[f"{folder}/svg/{hexcode}.svg"] = svg
    files["src/smileys-emotion/1F600.svg"] = svg
    _tarball(data_dir, "openmoji", "17.0.0", files)


@pytest.mark.parametrize("source", ["openmoji-color", "openmoji-black"])
def test_openmoji_captions(data_dir, source):
    _openmoji(data_dir)
    items, skipped = emoji_sets.SOURCES[source].items(data_dir)
    _check_items(items, source)
    by_cp = {item["codepoint"]: item for item in items}
    assert sorted(by_cp) == ["1f44b-1f3ff", "1f600", "2beb", "e004"]
    grin = by_cp["1f600"]
    assert grin["caption"] == "grinning face"
    assert grin["tags"] == ["grin", "face", "smile", "happy"]
    assert grin["style"] == source and grin["category"] == "smileys-emotion"
    folder = source.split("-")[1]
    assert grin["svg"].endswith(f"openmoji-17.0.0/{folder}/svg/1F600.svg")
    assert Path(grin["svg"]).is_file()
    orca = by_cp["e004"]
    assert orca["caption"] == "spouting orca"
    assert orca["tags"] == ["whale", "orca"]
    assert orca["category"] == "extras-openmoji"
    assert by_cp["2beb"]["tags"] == ["half star"]
    assert by_cp["1f44b-1f3ff"]["caption"] == "waving hand: dark skin tone"
    assert skipped["component"] == [f"{source}:1f3fb"]
    assert skipped["missing_image"] == [f"{source}:1f639"]
    assert not (data_dir / "openmoji-17.0.0" / "src").exists()


# === iconify sets ===

SQUARE = '<path fill="#e03" d="M2 2h8v8H2z"/>'


def test_iconify_svg_builds_and_renders():
    defaults = {"width": 16, "height": 16}
    svg = emoji_sets.iconify_svg({"body": SQUARE}, defaults)
    assert svg == (
        '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" '
        f'viewBox="0 0 16 16">{SQUARE}</svg>'
    )
    tall = emoji_sets.iconify_svg(
        {"body": SQUARE, "height": 24, "left": -2, "top": 1.5}, defaults
    )
    assert 'width="16" height="24" viewBox="-2 1.5 16 24"' in tall
    assert 'viewBox="0 0 16 16"' in emoji_sets.iconify_svg({"body": SQUARE}, {})
    with pytest.raises(ValueError, match="body"):
        emoji_sets.iconify_svg({"width": 3}, defaults)

    pytest.importorskip("pyvips")
    from keras_towers.datasets import render

    image = render.render_svg(svg.encode("utf-8"), size=32)
    assert image.mode == "RGBA" and max(image.size) == 32
    assert image.getchannel("A").getextrema()[1] == 255  # the square is opaque


def _iconify(data_dir: Path, package: str, version: str, icons, aliases, chars):
    files = {
        "icons.json": {
            "prefix": "x",
            "width": 64,
            "height": 64,
            "icons": icons,
            "aliases": aliases,
        },
        "chars.json": chars,
        "info.json": {"license": {"spdx": "CC-BY-4.0"}},
        "metadata.json": {"categories": {"Smileys": ["amazed-face"]}},
        "index.js": "module.exports = {}",
    }
    _tarball(data_dir, package, version, files)


def test_iconify_joins_by_chars_and_by_name(data_dir):
    icons = {
        "hello-there": {"body": SQUARE},  # joined through chars.json only
        "grinning": {"body": SQUARE},  # shortcode
        "smiling-face-2": {"body": SQUARE, "width": 48},  # numbered variant
        "waving-hand-dark-skin-tone": {"body": SQUARE},
        "cat-face-with-tears-of-joy": {"body": SQUARE},  # Unicode name
        "flag-for-japan": {"body": SQUARE},
        "amazed-face": {"body": SQUARE},  # joins nowhere
        "letter-q": {"body": SQUARE},
        "light-skin-tone": {"body": SQUARE},  # a component
        "old-name": {"body": SQUARE, "hidden": True},
        "mirrored": {"body": SQUARE, "hFlip": True},
    }
    aliases = {"happy": {"parent": "amazed-face"}, "hi": {"parent": "hello-there"}}
    chars = {"1f44b": "hello-there", "263a-fe0f": "smiling-face-2"}
    _iconify(data_dir, "@iconify-json/emojione", "1.2.3", icons, aliases, chars)

    items, skipped, meta = emoji_sets.listing("emojione", data_dir)
    _check_items(items, "emojione")
    by_name = {item["id"].split(":", 1)[1]: item for item in items}
    assert {n: i["codepoint"] for n, i in by_name.items()} == {
        "hello-there": "1f44b",
        "grinning": "1f600",
        "smiling-face-2": "263a",
        "waving-hand-dark-skin-tone": "1f44b-1f3ff",
        "cat-face-with-tears-of-joy": "1f639",
        "flag-for-japan": "1f1ef-1f1f5",
        "amazed-face": None,
        "letter-q": None,
    }
    assert by_name["hello-there"]["caption"] == "waving hand"
    assert by_name["hello-there"]["tags"] == ["hello there", "hi", "hello", "wave"]
    assert by_name["waving-hand-dark-skin-tone"]["caption"] == (
        "waving hand: dark skin tone"
    )
    assert by_name["flag-for-japan"]["caption"] == "flag: Japan"
    assert by_name["flag-for-japan"]["category"] == "flags"
    amazed = by_name["amazed-face"]
    assert amazed["caption"] == "amazed face"
    assert amazed["tags"] == ["happy"]
    assert amazed["category"] == "smileys"
    assert emojibase.is_text_glyph(None, by_name["letter-q"]["caption"])
    assert by_name["smiling-face-2"]["svg"].startswith(
        '<svg xmlns="http://www.w3.org/2000/svg" width="48" height="64" '
        'viewBox="0 0 48 64">'
    )
    assert all(i["style"] == "emojione" for i in items)

    assert skipped == {
        "alias": ["emojione:happy", "emojione:hi"],
        "hidden": ["emojione:old-name"],
        "transformed": ["emojione:mirrored"],
        "component": ["emojione:light-skin-tone"],
    }
    assert (meta["joined_chars"], meta["joined_name"], meta["unjoined"]) == (2, 4, 2)
    assert meta["unjoined_names"] == ["amazed-face", "letter-q"]
    assert not (data_dir / "iconify-json-emojione-1.2.3" / "index.js").exists()


def test_no_fluent_and_licences():
    names = set(emoji_sets.SOURCES)
    assert names == {
        "emoji-google",
        "emoji-twitter",
        "openmoji-color",
        "openmoji-black",
        "emojione",
        "emojione-v1",
        "noto-v1",
        "streamline-emojis",
    }
    assert not any(
        "fluent" in p.name for s in emoji_sets.SOURCES.values() for p in s.packages
    )
    licences = {name: s.license for name, s in emoji_sets.SOURCES.items()}
    assert licences["openmoji-black"] == licences["emojione-v1"] == "CC-BY-SA-4.0"
    assert licences["noto-v1"] == "Apache-2.0"
    assert licences["streamline-emojis"] == licences["emojione"] == "CC-BY-4.0"
    for source in emoji_sets.SOURCES.values():
        assert source.attribution and emojibase.EMOJIBASE in source.packages


# === The real packages ===

# source: (items, lower, upper) measured on the pinned packages.
EXPECTED = {
    "emoji-google": (3700, 3900),
    "emoji-twitter": (3700, 3900),
    "openmoji-color": (4400, 4600),
    "openmoji-black": (4400, 4600),
    "emojione": (1750, 1900),
    "emojione-v1": (1200, 1300),
    "noto-v1": (2100, 2200),
    "streamline-emojis": (750, 800),
}


def test_real_packages_counts():
    data_dir = paths.data_dir()
    absent = {
        name: source.missing(data_dir)
        for name, source in emoji_sets.SOURCES.items()
        if source.missing(data_dir)
    }
    if absent:
        pytest.skip(f"emoji packages not installed: {absent}")
    for name, (lower, upper) in EXPECTED.items():
        items, skipped, meta = emoji_sets.listing(name, data_dir)
        assert lower <= len(items) <= upper, (name, len(items))
        _check_items(items, name)
        if name.startswith("emoji-"):
            assert 1890 <= meta["base"] <= 1930, meta
            assert meta["skin_tone"] == 1875, meta
            assert meta["captions_not_from_emojibase"] == 0, meta
            assert len(skipped["component"]) == 5
        elif name.startswith("openmoji"):
            assert meta["extras"] == 542 and meta["skin_tone"] == 2030, meta
        else:
            joined = meta["joined_chars"] + meta["joined_name"]
            assert joined >= 0.9 * len(items), meta
    items, _, _ = emoji_sets.listing("emoji-google", data_dir)
    by_id = {item["id"]: item for item in items}
    assert by_id["emoji-google:1f44b-1f3ff"]["caption"] == "waving hand: dark skin tone"
    assert by_id["emoji-google:1f1ef-1f1f5"]["caption"] == "flag: Japan"
