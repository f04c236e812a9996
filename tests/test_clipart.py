"""Clip art corpus sources: OpenClipart, game-icons, Tux Paint SVG stamps."""

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from keras_towers.datasets import clipart
from keras_towers.datasets import openclipart
from keras_towers.datasets import paths
from keras_towers.datasets import render
from keras_towers.datasets.tuxpaint import scan_tuxpaint
from keras_towers.datasets.tuxpaint import scan_tuxpaint_svg

pytestmark = pytest.mark.backend_independent

DRAWING = '<rect x="10" y="10" width="80" height="60" fill="#c33"/>'


def _svg(title, keywords=(), creator="Jane Doe", license="PublicDomain", extra=""):
    """An Inkscape-style OpenClipart SVG document."""
    items = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" '
        'xmlns:cc="http://web.resource.org/cc/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'width="100" height="100">\n'
        '<metadata><rdf:RDF><cc:Work rdf:about="">'
        f"<dc:title>{title}</dc:title>"
        f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
        "<dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title>"
        "</cc:Agent></dc:publisher>"
        f"<dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent>"
        "</dc:creator>"
        f'<cc:license rdf:resource="http://web.resource.org/cc/{license}"/>'
        "</cc:Work></rdf:RDF></metadata>\n"
        f"{extra}{DRAWING}</svg>\n"
    )


# === Metadata parsing ===


def test_title_is_the_works_not_an_agents():
    meta = openclipart.parse_metadata(_svg("Red Apple", ["fruit"], creator="Bob"))
    assert meta["title"] == "Red Apple"
    assert meta["keywords"] == ["fruit"]
    assert "Bob" in meta["agents"] and "Open Clip Art Library" in meta["agents"]
    assert meta["license"] == "http://web.resource.org/cc/PublicDomain"


def test_agent_before_title_is_not_taken_for_it():
    text = (
        "<cc:Work><dc:creator><cc:Agent><dc:title>Bob</dc:title></cc:Agent>"
        "</dc:creator><dc:title>Owl</dc:title></cc:Work>"
    )
    assert openclipart.parse_metadata(text)["title"] == "Owl"


def test_entities_cdata_and_comments():
    text = (
        "<cc:Work><dc:title>Fish &amp; <![CDATA[<chips> &amp;]]> "
        "caf&#233; <!-- no --> &amp;eacute;t&#xE9;</dc:title></cc:Work>"
    )
    # CDATA verbatim; a double escape (`&amp;eacute;`) decoded.
    assert openclipart.parse_metadata(text)["title"] == "Fish & <chips> &amp; café été"


def test_dtd_entities_are_never_expanded():
    text = (
        '<!DOCTYPE svg [<!ENTITY boom "EXPANDED"><!ENTITY ext SYSTEM '
        '"file:///etc/passwd">]><cc:Work><dc:title>&boom; &ext; owl'
        "</dc:title></cc:Work>"
    )
    title = openclipart.parse_metadata(text)["title"]
    assert "EXPANDED" not in title and "root" not in title
    assert title == "&boom; &ext; owl"


def test_rdf_alt_title_prefers_english():
    text = (
        '<cc:Work><dc:title><rdf:Alt><rdf:li xml:lang="fr">Hibou</rdf:li>'
        '<rdf:li xml:lang="en">Owl</rdf:li></rdf:Alt></dc:title></cc:Work>'
    )
    assert openclipart.parse_metadata(text)["title"] == "Owl"


def test_no_work_is_none():
    assert openclipart.parse_metadata("<svg><title>x</title></svg>") is None


def test_keywords_cleaned():
    meta = openclipart.parse_metadata(
        _svg(
            "Apple",
            [
                "hash(0x8a07724)",
                "0x881e2f8",
                "hash",
                "",
                "11",
                "Fruit",
                "fruit",
                "red_apple",
                "rome,italy",
                "jane doe",
                "apple",
                "magick",
            ],
        )
    )
    tags = openclipart.clean_keywords(meta["keywords"], "apple", meta["agents"])
    assert tags == ["fruit", "red apple", "rome", "italy"]


def test_metadata_past_16_kb_and_declared_encoding(tmp_path):
    late = tmp_path / "late.svg"
    padding = "<!--" + "x" * 20000 + "-->"
    late.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg">'
        + padding
        + "<metadata><cc:Work><dc:title>Late owl</dc:title></cc:Work></metadata>"
        + "</svg>"
    )
    assert openclipart.read_svg_metadata(late)["title"] == "Late owl"
    latin = tmp_path / "latin.svg"
    latin.write_bytes(
        _svg("Lézard vert").replace('"UTF-8"', '"ISO-8859-1"').encode("latin-1")
    )
    assert openclipart.read_svg_metadata(latin)["title"] == "Lézard vert"


def test_clean_title():
    assert openclipart.clean_title("Aircraft1") == "aircraft"
    assert openclipart.clean_title("BlueMan#101") == "blue man"
    assert openclipart.clean_title("redRoundButton") == "red round button"
    assert openclipart.clean_title("Switch_Cisco_6500") == "switch cisco 6500"
    assert openclipart.clean_title("05_fullmoon_openclipart") == "fullmoon"
    assert openclipart.clean_title("large_braces.svg") == "large braces"
    assert openclipart.clean_title("LCD Monitor") == "LCD monitor"
    assert openclipart.clean_title("glace_01_bw").endswith("black and white")
    assert openclipart.clean_title("lÃ©zard") == "lézard"  # UTF-8 read as Latin-1


def test_caption_rules():
    caption = openclipart.openclipart_caption
    assert caption("Gramastar") is None
    assert caption("Clipart by Nicu Buculei - pear") is None
    assert caption("Part of the Flat Icon Collection (Wed Aug 25 2004)") is None
    assert (
        caption("Clipart by Steve Hall - United States - Ohio", (), "x/flags/ohio")
        == "flag: united states - ohio"
    )
    assert caption("Great Britain flag", (), "x/flags/gb") == "great britain flag"
    assert caption("Owl by Jane Doe", ["Jane Doe"]) == "owl"
    assert caption("farfalla - butterfly") == "butterfly"
    assert caption("Frying pan (padella in italian)") == "frying pan"


def test_looks_non_english():
    assert openclipart.looks_non_english("cigno di notte nella palude")
    assert openclipart.looks_non_english("Coniglio")
    assert openclipart.looks_non_english("danger général")
    assert not openclipart.looks_non_english("black cat")
    assert not openclipart.looks_non_english("aragón")


# === OpenClipart listing on a fake tree ===


@pytest.fixture
def clipart_tree(tmp_path, monkeypatch):
    root = tmp_path / "openclipart"
    files = {
        "animals/owl_01.svg": _svg("Owl", ["bird", "hash(0x1)"]),
        "animals/owl_02.svg": _svg("owl", ["bird"], extra='<circle r="9"/>'),
        "food/apple.svg": _svg("Red apple", ["fruit"]),
        # Same drawing filed twice: metadata differs only.
        "food/pear.svg": _svg("Pear", ["fruit", "food"]),
        "plants/pear.svg": _svg("Pear", ["food", "plant"]),
        "computer/g1.svg": _svg("gramastar"),
        "computer/nicu.svg": _svg("Clipart by Nicu Buculei - pear"),
        "computer/empty.svg": _svg(""),
        "computer/untitled.svg": _svg("Untitled"),
        "computer/digits.svg": _svg("70a001"),
        "animals/gatto.svg": _svg("Gatto nero"),
        "computer/gpl.svg": _svg("Firewall", license="GPL/2.0").replace(
            "web.resource.org/cc/GPL", "creativecommons.org/licenses/GPL"
        ),
        "signs/flags/rwanda.svg": _svg("Rwanda"),
        "special/nometa.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>",
        "README.txt": "not an svg",
    }
    for i in range(4):
        files[f"recreation/card_{i}.svg"] = _svg(
            "Lemon bucket", extra=f'<circle r="{i + 1}"/>'
        )
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    os.symlink("../food/apple.svg", root / "plants" / "apple_link.svg")
    monkeypatch.setenv(openclipart.OPENCLIPART_DIR_ENV, str(root))
    return root


def test_openclipart_listing(clipart_tree):
    items, skipped, meta = openclipart.openclipart_listing(max_title_repeats=3)
    ids = [i["id"] for i in items]
    assert ids == sorted(ids)
    assert ids == [
        "openclipart:animals/owl_01",
        "openclipart:animals/owl_02",
        "openclipart:food/apple",
        "openclipart:food/pear",
        "openclipart:signs/flags/rwanda",
    ]
    by_id = {i["id"]: i for i in items}
    owl = by_id["openclipart:animals/owl_01"]
    assert owl["caption"] == "owl" and owl["tags"] == ["bird"]
    assert owl["category"] == "animals" and owl["style"] == "openclipart"
    assert owl["codepoint"] is None
    assert owl["svg"] == str(clipart_tree / "animals/owl_01.svg")
    assert by_id["openclipart:signs/flags/rwanda"]["caption"] == "flag: rwanda"
    # The duplicate's keywords join the kept copy's tags.
    assert by_id["openclipart:food/pear"]["tags"] == ["fruit", "food", "plant"]
    assert skipped["symlink"] == ["openclipart:plants/apple_link"]
    assert skipped["duplicate_artwork"] == ["openclipart:plants/pear"]
    assert skipped["collection_title"] == [
        "openclipart:computer/g1",
        "openclipart:computer/nicu",
    ]
    assert skipped["untitled"] == [
        "openclipart:computer/digits",
        "openclipart:computer/empty",
        "openclipart:computer/untitled",
    ]
    assert skipped["bulk_title"] == [
        f"openclipart:recreation/card_{i}" for i in range(4)
    ]
    assert skipped["non_english"] == ["openclipart:animals/gatto"]
    assert skipped["not_public_domain"] == ["openclipart:computer/gpl"]
    assert skipped["no_metadata"] == ["openclipart:special/nometa"]
    assert meta["bulk_titles"] == {"lemon bucket": 4}
    assert meta["regular_files"] == 18  # README.txt is not an SVG


def test_openclipart_options(clipart_tree):
    items, skipped, _ = openclipart.openclipart_listing(
        english_only=False, max_title_repeats=4
    )
    ids = {i["id"] for i in items}
    assert "openclipart:animals/gatto" in ids and not skipped["non_english"]
    assert "openclipart:recreation/card_0" in ids and not skipped["bulk_title"]
    with pytest.raises(ValueError, match="max_title_repeats"):
        openclipart.openclipart_listing(max_title_repeats=0)


def test_openclipart_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(openclipart.OPENCLIPART_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="apt-get install openclipart-svg"):
        clipart.listing("openclipart")
    source = clipart.SOURCES["openclipart"]
    assert source.missing(tmp_path) == {"openclipart-svg": str(tmp_path / "nope")}


# === game-icons ===


def _tarball(path: Path, files: dict):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            blob = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))


@pytest.fixture
def game_icons_dir(tmp_path):
    data = tmp_path / "data"
    (data / "sources").mkdir(parents=True)
    icons = {
        "prefix": "game-icons",
        "width": 512,
        "height": 512,
        "icons": {
            "lantern-flame": {"body": '<path d="M100 100h300v300H100z"/>'},
            "person-in-blizzard": {"body": '<circle cx="256" cy="256" r="200"/>'},
            "tall-thing": {"body": '<path d="M0 0h10v40H0z"/>', "height": 40},
            "old-name": {"body": "<path d='M0 0h1v1z'/>", "hidden": True},
            "flipped": {"body": "<path d='M0 0h1v1z'/>", "hFlip": True},
        },
        "aliases": {"eskimo": {"parent": "person-in-blizzard"}},
    }
    _tarball(
        data / "sources" / clipart.GAME_ICONS.location,
        {
            "package.json": json.dumps(
                {"name": "@iconify-json/game-icons", "version": "1.2.4"}
            ),
            "icons.json": json.dumps(icons),
            "info.json": json.dumps({"license": {"spdx": "CC-BY-3.0"}}),
            "README.md": "not extracted",
        },
    )
    return data


def test_game_icons_listing(game_icons_dir):
    items, skipped, meta = clipart.game_icons_listing(game_icons_dir)
    assert [i["id"] for i in items] == [
        "game-icons:lantern-flame",
        "game-icons:person-in-blizzard",
        "game-icons:tall-thing",
    ]
    by_id = {i["id"]: i for i in items}
    lantern = by_id["game-icons:lantern-flame"]
    assert lantern["caption"] == "lantern flame" and lantern["tags"] == []
    assert lantern["category"] == "game-icons" and lantern["codepoint"] is None
    assert lantern["svg"].startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert 'viewBox="0 0 512 512"' in lantern["svg"]
    assert 'height="40" viewBox="0 0 512 40"' in by_id["game-icons:tall-thing"]["svg"]
    assert by_id["game-icons:person-in-blizzard"]["tags"] == ["eskimo"]
    assert skipped == {
        "alias": ["game-icons:eskimo"],
        "hidden": ["game-icons:old-name"],
        "transformed": ["game-icons:flipped"],
    }
    assert meta["license_in_package"] == "CC-BY-3.0"
    extracted = game_icons_dir / "iconify-json-game-icons-1.2.4"
    assert (extracted / "icons.json").is_file()
    assert not (extracted / "README.md").exists()


def test_game_icons_svg_renders(game_icons_dir):
    pytest.importorskip("pyvips")
    items, _, _ = clipart.game_icons_listing(game_icons_dir)
    image = render.render_svg(items[0]["svg"].encode(), size=64)
    assert image.mode == "RGBA" and max(image.size) == 64
    assert image.getchannel("A").getextrema()[1] == 255  # the drawn square is opaque


def test_game_icons_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="npm pack @iconify-json/game-icons"):
        clipart.listing("game-icons", tmp_path)


# === Tux Paint SVG-only stamps ===


@pytest.fixture
def stamps(tmp_path, monkeypatch):
    root = tmp_path / "stamps"
    files = {
        "animals/cat.png": b"png",
        "animals/cat.svg": DRAWING,
        "animals/cat.txt": "A cat.\nfr.utf8=Un chat.\n",
        "animals/fox.svg": DRAWING,
        "animals/fox.txt": "A  red\tfox.\n",
        "animals/fox_mirror.svg": DRAWING,
        "animals/fox_mirror.txt": "A red fox.\n",
        "vehicles/car.svg": DRAWING,
        "vehicles/car.txt": "\ufeffA car.\n",
        "vehicles/blank.svg": DRAWING,
        "vehicles/blank.txt": "\n",
        "vehicles/nocap.svg": DRAWING,
        "star.svg": DRAWING,
        "star.txt": "A star.",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    monkeypatch.setenv(paths.TUXPAINT_DIR_ENV, str(root))
    return root


def test_tuxpaint_svg_pairing(stamps):
    items, skipped = scan_tuxpaint_svg(stamps)
    assert [(i["id"], i["caption"], i["category"]) for i in items] == [
        ("tuxpaint-svg:animals/fox", "A red fox.", "animals"),
        ("tuxpaint-svg:star", "A star.", ""),
        ("tuxpaint-svg:vehicles/car", "A car.", "vehicles"),
    ]
    assert items[0]["svg"] == str(stamps / "animals/fox.svg")
    assert skipped == {
        "mirror_variant": ["tuxpaint-svg:animals/fox_mirror"],
        "no_caption": ["tuxpaint-svg:vehicles/nocap"],
        "empty_caption": ["tuxpaint-svg:vehicles/blank"],
    }
    # The PNG scan is unchanged: it skips exactly these SVG-only stamps.
    _, png_skipped = scan_tuxpaint(stamps)
    assert "animals/cat.svg" not in png_skipped["svg_only"]
    assert "animals/fox.svg" in png_skipped["svg_only"]


def test_tuxpaint_svg_source(stamps):
    items, _ = clipart.SOURCES["tuxpaint-svg"].items(Path("."))
    assert all(i["style"] == "tuxpaint" and i["tags"] == [] for i in items)
    assert all(i["codepoint"] is None for i in items)


def test_sources_registry():
    assert set(clipart.SOURCES) == {"openclipart", "game-icons", "tuxpaint-svg"}
    for name, source in clipart.SOURCES.items():
        assert source.name == name and source.attribution and source.license
    assert clipart.SOURCES["game-icons"].license == "CC-BY-3.0"
    assert "Lorc" in clipart.SOURCES["game-icons"].attribution
    with pytest.raises(ValueError, match="must be one of"):
        clipart.listing("clip-art")


# === The real packages, when installed ===


def test_real_packages_counts(monkeypatch):
    for env in (openclipart.OPENCLIPART_DIR_ENV, paths.TUXPAINT_DIR_ENV):
        monkeypatch.delenv(env, raising=False)
    data = paths.data_dir()
    checked = 0
    if Path(openclipart.DEFAULT_OPENCLIPART_DIR).is_dir():
        items, skipped, meta = clipart.listing("openclipart", data)
        assert 2000 <= len(items) <= 3200
        assert len(skipped["symlink"]) == 663
        assert len(skipped["collection_title"]) + len(skipped["bulk_title"]) > 3500
        assert 1800 <= meta["distinct_captions"] <= 2800
        assert all(i["caption"] and os.path.isfile(i["svg"]) for i in items)
        checked += 1
    if (data / "sources" / clipart.GAME_ICONS.location).is_file():
        items, skipped, _ = clipart.listing("game-icons", data)
        assert 4000 <= len(items) <= 4300
        assert len(skipped["alias"]) < 20
        checked += 1
    if Path(paths.DEFAULT_TUXPAINT_DIR).is_dir():
        items, _, _ = clipart.listing("tuxpaint-svg", data)
        assert 150 <= len(items) <= 200
        checked += 1
    if not checked:
        pytest.skip("none of the clip art packages is installed")
