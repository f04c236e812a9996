"""The embedded image-caption corpus: Tux Paint stamps and Google emoji.

`prepare()` builds it offline from installed packages and writes one JSON
object per line to `<data_dir>/corpus/{train,validation,test}.jsonl`:

```
{"image": "/abs/path.png", "caption": "A sea lion.", "source": "tuxpaint",
 "category": "animals", "license": "GPL-2.0", "id": "tuxpaint:animals/..."}
```

which `keras_towers.datasets.pairs.from_jsonl(path)` reads for training.

Splits are fixed by a SHA-256 hash of each item's normalised caption
(casefolded, punctuation and a leading "a"/"an"/"the" removed), so they never
change between machines or runs, and items that share a caption (the filled
and outlined "The letter A.") always land in the same split. Tux Paint is cut
70/10/20 into train/validation/test; the test split is reserved for retrieval
evaluation and must never be trained on. Emoji are cut 90/10 into
train/validation; an emoji whose normalised caption equals that of a Tux Paint
test stamp goes to validation, so no training caption repeats a test caption.
See `keras_towers.datasets.tuxpaint` and `keras_towers.datasets.emoji` for
which files become pairs and which are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from keras_towers.datasets import paths
from keras_towers.datasets.classification import classification_names
from keras_towers.datasets.classification import describe_classification
from keras_towers.datasets.emoji import EMOJI_LICENSE
from keras_towers.datasets.emoji import emoji_items
from keras_towers.datasets.emoji import extract_emoji
from keras_towers.datasets.tuxpaint import TUXPAINT_LICENSE
from keras_towers.datasets.tuxpaint import scan_tuxpaint
from keras_towers.datasets.tuxpaint import tuxpaint_fingerprint

# Bump when the pairing, caption or split rules change: it invalidates every
# previously prepared corpus.
FORMAT_VERSION = 1
CORPUS_SPLITS = ("train", "validation", "test")
CORPUS_SOURCES = ("tuxpaint", "emoji")
SPLIT_FRACTIONS = {
    "tuxpaint": {"train": 0.7, "validation": 0.1, "test": 0.2},
    "emoji": {"train": 0.9, "validation": 0.1},
}
LICENSES = {"tuxpaint": TUXPAINT_LICENSE, "emoji": EMOJI_LICENSE}
RECORD_KEYS = ("image", "caption", "source", "category", "license", "id")
_PREPARE_HINT = (
    "Run `keras-towers data prepare` (or `keras_towers.datasets.prepare()`) first."
)


def caption_key(caption: str) -> str:
    """The normalised caption that groups items and picks their split."""
    text = re.sub(r"[^0-9a-z]+", " ", caption.casefold()).strip()
    return re.sub(r"^(a|an|the) ", "", text)


def split_of(caption: str, fractions: dict[str, float]) -> str:
    """The split of a caption: a stable SHA-256 hash mapped onto `fractions`."""
    digest = hashlib.sha256(caption_key(caption).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    total = 0.0
    for split, fraction in fractions.items():
        total += fraction
        if u < total:
            return split
    return split  # `u` within rounding of 1.0: the last split.


def corpus_file(split: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The JSONL manifest of one corpus split.

    Args:
        split: str. `"train"`, `"validation"` or `"test"`.
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.

    Example:

    ```python
    path = keras_towers.datasets.corpus_file("train")
    ```
    """
    if split not in CORPUS_SPLITS:
        raise ValueError(
            f"`split` must be one of {CORPUS_SPLITS}. Received: split={split!r}"
        )
    return paths.resolve_data_dir(data_dir) / "corpus" / f"{split}.jsonl"


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _fingerprint(root: Path, tux_root: Path, tarball: Path) -> tuple[str, list]:
    tux_signature = tuxpaint_fingerprint(tux_root)
    stat = tarball.stat()
    blob = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "fractions": SPLIT_FRACTIONS,
            "data_dir": str(root),
            "tuxpaint": [str(tux_root.absolute()), tux_signature],
            "emoji": [str(tarball), stat.st_size, stat.st_mtime_ns],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest(), tux_signature


def _is_current(corpus_dir: Path, fingerprint: str) -> dict | None:
    """The stored manifest if the corpus on disk is complete and up to date."""
    try:
        manifest = json.loads((corpus_dir / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    for split in CORPUS_SPLITS:
        path = corpus_dir / f"{split}.jsonl"
        try:
            records = _read_jsonl(path)
        except (OSError, ValueError):
            return None
        if len(records) != manifest["splits"][split]["total"]:
            return None
        if not all(os.path.isfile(r.get("image", "")) for r in records):
            return None
    return manifest


def _summary(manifest: dict, rebuilt: bool, seconds: float) -> dict:
    return {
        "data_dir": manifest["data_dir"],
        "corpus_dir": str(Path(manifest["data_dir"]) / "corpus"),
        "rebuilt": rebuilt,
        "seconds": round(seconds, 3),
        "splits": manifest["splits"],
        "tuxpaint_files": manifest["sources"]["tuxpaint"]["files"],
        "skipped": {
            source: manifest["sources"][source]["skipped"] for source in CORPUS_SOURCES
        },
        "evaluation": {
            name: info["counts"] for name, info in manifest["evaluation"].items()
        },
    }


def _print_summary(summary: dict) -> None:
    state = "built" if summary["rebuilt"] else "up to date"
    print(f"keras_towers corpus {state} in {summary['corpus_dir']}")
    for split in CORPUS_SPLITS:
        counts = summary["splits"][split]
        per_source = ", ".join(f"{s} {counts[s]}" for s in CORPUS_SOURCES)
        print(f"  {split:<10} {counts['total']:>5} pairs ({per_source})")
    files = summary["tuxpaint_files"]
    print(f"  tuxpaint files: {files['png']} PNG, {files['svg']} SVG")
    for source in CORPUS_SOURCES:
        skipped = ", ".join(f"{r} {n}" for r, n in summary["skipped"][source].items())
        print(f"  skipped {source}: {skipped}")
    for name, counts in summary["evaluation"].items():
        print(f"  eval {name}: {', '.join(f'{k} {v}' for k, v in counts.items())}")


def prepare(data_dir: str | os.PathLike | None = None, verbose: bool = True) -> dict:
    """Build (or verify) the embedded corpus and check the evaluation sets.

    Offline and idempotent: when the manifests are present, every image they
    name exists and the inputs (stamps tree, emoji tarball, rules) are
    unchanged, nothing is rewritten and it returns in well under a second.

    Inputs, each installed by `bash scripts/setup.sh`:
    Tux Paint stamps (`$KERAS_TOWERS_TUXPAINT_DIR`, default
    `/usr/share/tuxpaint/stamps`; PNG stamps only, SVG-only stamps are skipped
    and counted), the emoji npm tarball
    `<data_dir>/sources/emoji-datasource-google-16.0.0.tgz` (its `emoji.json`
    and 64 px PNGs are extracted to
    `<data_dir>/emoji-datasource-google-16.0.0/`), and the evaluation sets
    Animal-MNIST and Fashion-MNIST (checked, not copied).

    Writes `<data_dir>/corpus/{train,validation,test}.jsonl` (keys `image`,
    `caption`, `source`, `category`, `license`, `id`) and
    `<data_dir>/corpus/manifest.json` (counts per source and split, every
    skipped item with its reason, package versions and licences).

    Args:
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.
        verbose: bool. Print the summary.

    Returns:
        A summary dict: `splits` (pairs per split and source), `skipped`
        (counts per source and reason), `tuxpaint_files` (PNG/SVG counts),
        `evaluation` (images per set and split), `rebuilt` and `seconds`.

    Raises:
        MissingDataError: a package is not installed; the message lists each
            missing one with its install command.

    Example:

    ```python
    summary = keras_towers.datasets.prepare()
    summary["splits"]["train"]["total"]
    ```
    """
    start = time.perf_counter()
    root = paths.resolve_data_dir(data_dir)
    tux_root = paths.tuxpaint_dir().absolute()
    tarball = paths.emoji_tarball(root)

    missing, evaluation = {}, {}
    if not tux_root.is_dir():
        missing["tuxpaint-stamps-default"] = str(tux_root)
    if not tarball.is_file():
        missing[paths.EMOJI_PACKAGE] = str(tarball)
    for name in classification_names():
        try:
            evaluation[name] = describe_classification(name)
        except paths.MissingDataError as e:
            missing.update(e.missing)
    if missing:
        raise paths.MissingDataError(missing, root)

    corpus_dir = root / "corpus"
    fingerprint, tux_signature = _fingerprint(root, tux_root, tarball)
    manifest = _is_current(corpus_dir, fingerprint)
    if manifest is not None:
        summary = _summary(manifest, rebuilt=False, seconds=time.perf_counter() - start)
        if verbose:
            _print_summary(summary)
        return summary

    emoji_dir = root / f"{paths.EMOJI_PACKAGE}-{paths.EMOJI_VERSION}"
    emoji_info = extract_emoji(tarball, emoji_dir)
    items = {}
    items["tuxpaint"], tux_skipped = scan_tuxpaint(tux_root)
    items["emoji"], emoji_skipped = emoji_items(emoji_dir)

    records = {split: [] for split in CORPUS_SPLITS}
    assigned = {}
    for item in items["tuxpaint"]:
        assigned[item["id"]] = split_of(item["caption"], SPLIT_FRACTIONS["tuxpaint"])
    test_keys = {
        caption_key(item["caption"])
        for item in items["tuxpaint"]
        if assigned[item["id"]] == "test"
    }
    moved = []
    for item in items["emoji"]:
        split = split_of(item["caption"], SPLIT_FRACTIONS["emoji"])
        if split == "train" and caption_key(item["caption"]) in test_keys:
            split = "validation"
            moved.append(item["id"])
        assigned[item["id"]] = split
    for source in CORPUS_SOURCES:
        for item in items[source]:
            record = {
                "image": item["image"],
                "caption": item["caption"],
                "source": source,
                "category": item["category"],
                "license": LICENSES[source],
                "id": item["id"],
            }
            records[assigned[item["id"]]].append(record)

    split_counts = {}
    for split in CORPUS_SPLITS:
        rows = sorted(records[split], key=lambda r: r["id"])
        split_counts[split] = {
            source: sum(r["source"] == source for r in rows)
            for source in CORPUS_SOURCES
        }
        split_counts[split]["total"] = len(rows)
    extensions = [os.path.splitext(rel)[1].lower() for rel, _, _ in tux_signature]
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "data_dir": str(root),
        "record_keys": list(RECORD_KEYS),
        "splits": split_counts,
        "split_fractions": SPLIT_FRACTIONS,
        "split_rule": (
            "sha256 of the normalised caption (casefolded, non-alphanumerics "
            "removed, leading a/an/the dropped); first 8 bytes / 2**64 mapped "
            "onto split_fractions in order; emoji whose caption matches a "
            "Tux Paint test caption go to validation"
        ),
        "sources": {
            "tuxpaint": {
                "path": str(tux_root),
                "package": "tuxpaint-stamps-default",
                "version": paths.debian_package_version("tuxpaint-stamps-default"),
                "license": TUXPAINT_LICENSE,
                "pairs": len(items["tuxpaint"]),
                "files": {
                    "png": extensions.count(".png"),
                    "svg": extensions.count(".svg"),
                    "txt": extensions.count(".txt"),
                },
                "skipped": {reason: len(v) for reason, v in tux_skipped.items()},
            },
            "emoji": {
                "path": str(tarball),
                "extracted_to": str(emoji_dir),
                "package": paths.EMOJI_PACKAGE,
                "version": emoji_info.get("version"),
                "license": EMOJI_LICENSE,
                "pairs": len(items["emoji"]),
                "files": {"png": emoji_info.get("pngs")},
                "skipped": {reason: len(v) for reason, v in emoji_skipped.items()},
                "validation_because_caption_in_tuxpaint_test": sorted(moved),
            },
        },
        "skipped": {"tuxpaint": tux_skipped, "emoji": emoji_skipped},
        "evaluation": evaluation,
    }

    corpus_dir.mkdir(parents=True, exist_ok=True)
    for split in CORPUS_SPLITS:
        rows = sorted(records[split], key=lambda r: r["id"])
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        _write_atomic(corpus_dir / f"{split}.jsonl", text)
    # Written last: its presence marks a complete corpus.
    _write_atomic(corpus_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    summary = _summary(manifest, rebuilt=True, seconds=time.perf_counter() - start)
    if verbose:
        _print_summary(summary)
    return summary


def embedded_records(
    split: str,
    sources: tuple[str, ...] | list[str] | str = CORPUS_SOURCES,
    data_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """The prepared corpus records of one split.

    Args:
        split: str. `"train"`, `"validation"` or `"test"` (Tux Paint only;
            reserved for retrieval evaluation, never train on it).
        sources: tuple of str, or one str. Any of `"tuxpaint"`, `"emoji"`.
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.

    Returns:
        A list of dicts with keys `image` (absolute PNG path), `caption`,
        `source`, `category`, `license` and `id`, sorted by id.

    Example:

    ```python
    records = keras_towers.datasets.embedded_records("train")
    records[0]["caption"]
    ```
    """
    if isinstance(sources, str):
        sources = (sources,)
    unknown = [s for s in sources if s not in CORPUS_SOURCES]
    if unknown or not sources:
        raise ValueError(
            f"`sources` must be a non-empty subset of {CORPUS_SOURCES}. "
            f"Received: sources={sources!r}"
        )
    path = corpus_file(split, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"No prepared corpus at {path}. {_PREPARE_HINT}")
    return [r for r in _read_jsonl(path) if r.get("source") in sources]
