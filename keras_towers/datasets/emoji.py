"""Google Noto emoji (npm `emoji-datasource-google`) as image-caption pairs.

The npm tarball holds `package/emoji.json` (names, categories, skin-tone
variations) and 64 px PNGs in `package/img/google/64/`. Only those are
extracted, with Python's `tarfile` and no trust in member names: regular files
only, fixed destinations, no links, no absolute or `..` paths.

What becomes a pair (checked on 16.0.0: 1,911 entries, 3,786 PNGs):

- one pair per `emoji.json` entry, with its default (yellow) image; caption =
  the Unicode name, lowercased ("GRINNING FACE" -> "grinning face",
  "Vatican City Flag" -> "vatican city flag");
- skin-tone variations are skipped (`skin_tone_variant`): they repeat their
  base emoji's caption with a recoloured picture, and 1,875 of them would make
  people a third of the corpus;
- the `Component` category (skin-tone swatches, hair pieces) is skipped
  (`component`): they depict no object;
- entries whose Google image is missing are skipped (`missing_image`);
- entries whose caption repeats an earlier one (two "man in tuxedo") keep the
  lowest `sort_order` and skip the others (`duplicate_caption`): identical
  captions are false negatives for a contrastive loss.

Licences: images Apache-2.0 (Noto Emoji), data MIT (emoji-data).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from pathlib import PurePosixPath

EMOJI_LICENSE = "Apache-2.0 (images), MIT (data)"
PNG_DIR = "img/google/64"
_PNG_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]*\.png$")
_MARKER = ".extracted.json"


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...] | None:
    """The path parts of a safe member, or None for anything to leave alone."""
    if not member.isreg():
        return None
    path = PurePosixPath(member.name)
    if path.is_absolute() or any(p in ("..", "") for p in path.parts):
        return None
    return path.parts


def extract_emoji(tarball: Path, dest: Path) -> dict:
    """Extract `emoji.json` and the 64 px Google PNGs from the npm tarball.

    Idempotent: when `dest` already holds a complete extraction of this
    tarball (same size and modification time, every PNG still there) nothing
    is read.

    Args:
        tarball: Path. `emoji-datasource-google-<version>.tgz` from `npm pack`.
        dest: Path. Directory to create, e.g.
            `<data_dir>/emoji-datasource-google-16.0.0`; it receives
            `emoji.json` and `img/google/64/*.png`.

    Returns:
        A dict with `version` (from the tarball's `package.json`), `pngs` (the
        number of PNGs extracted) and the tarball's `size` and `mtime_ns`.
    """
    tarball, dest = Path(tarball), Path(dest)
    stat = tarball.stat()
    marker = dest / _MARKER
    if marker.is_file() and (dest / "emoji.json").is_file():
        try:
            info = json.loads(marker.read_text())
        except ValueError:
            info = {}
        same_tarball = (
            info.get("size") == stat.st_size
            and info.get("mtime_ns") == stat.st_mtime_ns
        )
        # A PNG deleted since extraction means extracting again.
        png_dir = dest / PNG_DIR
        if same_tarball and png_dir.is_dir():
            if len(os.listdir(png_dir)) == info.get("pngs"):
                return info

    partial = dest.parent / f"{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / PNG_DIR).mkdir(parents=True)
    version, pngs, found_json = None, 0, False
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                parts = _member_parts(member)
                if parts is None or parts[0] != "package":
                    continue
                inner = "/".join(parts[1:])
                if inner == "package.json":
                    with archive.extractfile(member) as f:
                        version = json.load(io.TextIOWrapper(f, "utf-8")).get("version")
                    continue
                if inner == "emoji.json":
                    target = partial / "emoji.json"
                    found_json = True
                elif "/".join(parts[1:-1]) == PNG_DIR and _PNG_NAME.match(parts[-1]):
                    target = partial / PNG_DIR / parts[-1]
                    pngs += 1
                else:
                    continue
                with archive.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(
            f"Could not read the emoji tarball {tarball}: {e}. Delete it and "
            "re-run `bash scripts/setup.sh` (it runs `npm pack "
            "emoji-datasource-google@16.0.0` into <data_dir>/sources)."
        ) from e
    if not found_json:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(
            f"The emoji tarball {tarball} has no `package/emoji.json`; expected "
            "the npm package emoji-datasource-google."
        )
    info = {
        "tarball": str(tarball),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "version": version,
        "pngs": pngs,
    }
    (partial / _MARKER).write_text(json.dumps(info, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    return info


def readable_name(name: str) -> str:
    """An emoji's Unicode name as a lowercase caption."""
    text = name.replace("\u2019", "'").lower()
    return re.sub(r"\s+", " ", text).strip()


def emoji_items(directory: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Caption every emoji extracted by `extract_emoji`.

    Args:
        directory: Path. The extraction directory (holds `emoji.json`).

    Returns:
        `(items, skipped)`: items are dicts with `id` (`"emoji:<unified code
        points, lowercase>"`), `image` (absolute path), `caption` and
        `category`, sorted by id; `skipped` maps a reason to the ids (or
        variation code points) it applies to.
    """
    directory = Path(directory).absolute()
    path = directory / "emoji.json"
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of emoji entries.")

    skipped: dict[str, list[str]] = {
        "skin_tone_variant": [],
        "component": [],
        "missing_image": [],
        "duplicate_caption": [],
    }
    candidates = []
    for entry in entries:
        try:
            unified, name = entry["unified"], entry["name"]
            image, category = entry["image"], entry["category"]
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"{path}: every entry needs `unified`, `name`, `image` and "
                f"`category`. Received: {str(entry)[:200]}"
            ) from e
        item_id = f"emoji:{unified.lower()}"
        for variation in (entry.get("skin_variations") or {}).values():
            skipped["skin_tone_variant"].append(
                f"emoji:{variation.get('unified', '?').lower()}"
            )
        if category == "Component":
            skipped["component"].append(item_id)
            continue
        png = directory / PNG_DIR / str(image)
        if not entry.get("has_img_google", True) or not png.is_file():
            skipped["missing_image"].append(item_id)
            continue
        candidates.append(
            (
                entry.get("sort_order", 0),
                item_id,
                {
                    "id": item_id,
                    "image": str(png),
                    "caption": readable_name(name),
                    "category": category,
                },
            )
        )

    kept: dict[str, dict] = {}
    for _, item_id, item in sorted(candidates, key=lambda c: (c[0], c[1])):
        if item["caption"] in kept:
            skipped["duplicate_caption"].append(item_id)
        else:
            kept[item["caption"]] = item
    for ids in skipped.values():
        ids.sort()
    return sorted(kept.values(), key=lambda item: item["id"]), skipped
