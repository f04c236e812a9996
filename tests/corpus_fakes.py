"""Tiny fake npm data packages shared by the corpus tests."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from keras_towers.datasets import npm


def npm_tarball(data_dir: Path, name: str, version: str, files: dict) -> None:
    """Write `<data_dir>/sources/<npm pack name>` holding `files`."""
    path = data_dir / "sources" / npm.tarball_name(name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {"package.json": {"name": name, "version": version}, **files}
    with tarfile.open(path, "w:gz") as archive:
        for inner, content in files.items():
            if not isinstance(content, (bytes, str)):
                content = json.dumps(content)
            if isinstance(content, str):
                content = content.encode("utf-8")
            info = tarfile.TarInfo(f"package/{inner}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def emojibase(data_dir: Path) -> None:
    def skin(hexcode, label, tone):
        return {"label": label, "hexcode": hexcode, "group": 1, "tone": tone}

    data = [
        {
            "label": "waving hand",
            "hexcode": "1F44B",
            "tags": ["hello", "wave"],
            "group": 1,
            "skins": [
                skin("1F44B-1F3FB", "waving hand: light skin tone", 1),
                skin("1F44B-1F3FF", "waving hand: dark skin tone", 5),
            ],
        },
        {"label": "grinning face", "hexcode": "1F600", "tags": ["grin"], "group": 0},
        {"label": "smiling face", "hexcode": "263A", "tags": ["relaxed"], "group": 0},
        {"label": "cat with tears of joy", "hexcode": "1F639", "group": 0},
        {"label": "keycap: #", "hexcode": "0023-FE0F-20E3", "group": 8},
        {"label": "flag: Japan", "hexcode": "1F1EF-1F1F5", "tags": ["JP"], "group": 9},
        {"label": "light skin tone", "hexcode": "1F3FB", "group": 2},
    ]
    npm_tarball(
        data_dir,
        "emojibase-data",
        "17.0.0",
        {
            "en/data.json": data,
            "meta/groups.json": {
                "groups": {"0": "smileys-emotion", "1": "people-body"}
                | {"2": "component", "8": "symbols", "9": "flags"}
            },
            "meta/unicode-names.json": {"1F639": "CAT FACE WITH TEARS OF JOY"},
            "en/shortcodes/github.json": {"1F600": "grinning", "1F44B": ["wave"]},
            "en/data.json.d.ts": "not extracted",
        },
    )


def tiny_png(value: int = 0) -> bytes:
    """A valid 4x4 RGBA PNG of one grey level."""
    out = io.BytesIO()
    Image.fromarray(np.full((4, 4, 4), value, "uint8")).save(out, format="PNG")
    return out.getvalue()


def datasource(data_dir: Path, style: str, extra_name: str | None = None) -> None:
    """A fake `emoji-datasource-<style>@16.0.0`; `extra_name` adds one more
    emoji (U+1F9F0) with that name."""

    def variation(unified, has=True):
        return {
            "unified": unified,
            "image": f"{unified.lower()}.png",
            f"has_img_{style}": has,
        }

    entries = [
        {
            "name": "WAVING HAND SIGN",
            "unified": "1F44B",
            "image": "1f44b.png",
            "category": "People & Body",
            "short_names": ["wave"],
            "skin_variations": {
                "1F3FB": variation("1F44B-1F3FB"),
                "1F3FF": variation("1F44B-1F3FF"),
                "1F3FD": variation("1F44B-1F3FD"),  # its PNG is absent
            },
        },
        {
            "name": "GRINNING FACE",
            "unified": "1F600",
            "image": "1f600.png",
            "category": "Smileys & Emotion",
        },
        {
            "name": "NAZAR AMULET",  # not in the fake emojibase
            "unified": "1F9FF",
            "image": "1f9ff.png",
            "category": "Objects",
        },
        {
            "name": "HASH KEY",
            "unified": "0023-FE0F-20E3",
            "image": "0023-fe0f-20e3.png",
            "category": "Symbols",
            f"has_img_{style}": False,
        },
        {
            "name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2",
            "unified": "1F3FB",
            "image": "1f3fb.png",
            "category": "Component",
        },
    ]
    pngs = ["1f44b", "1f44b-1f3fb", "1f44b-1f3ff", "1f600", "1f9ff", "1f3fb"]
    if extra_name is not None:
        entries.append(
            {
                "name": extra_name.upper(),
                "unified": "1F9F0",
                "image": "1f9f0.png",
                "category": "Objects",
            }
        )
        pngs.append("1f9f0")
    files = {f"img/{style}/64/{p}.png": tiny_png(i) for i, p in enumerate(pngs)}
    files["img/other/64/1f600.png"] = tiny_png(0)
    files["emoji.json"] = entries
    npm_tarball(data_dir, f"emoji-datasource-{style}", "16.0.0", files)
