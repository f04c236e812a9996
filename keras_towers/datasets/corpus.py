"""The embedded image-caption corpus, built offline from package-manager data.

`prepare()` reads every registered source (`corpus_sources()`: Tux Paint
stamps, emoji in several art styles, OpenMoji, OpenClipart, game-icons, ...;
see each source module), renders SVG artwork once (`keras_towers.datasets.
render`, cached by content), assigns splits by *concept*, and writes

- `<data_dir>/corpus/{train,validation,test}.jsonl`: one JSON object per pair,

  ```
  {"image": "/abs/path.png", "caption": "a sea lion.", "tags": [...],
   "source": "tuxpaint", "style": "tuxpaint", "category": "animals",
   "license": "GPL-2.0", "id": "tuxpaint:animals/...", "codepoint": null,
   "concept": "c:sea lion"}
  ```

  which `keras_towers.datasets.pairs.from_jsonl(path)` reads;
- `<data_dir>/corpus/shards/<split>-NNNNN-of-MMMMM.tfrecord`: the same pairs
  with the image files' bytes (`image`, `caption`, `id`, `source`, `style`
  features), for training that streams (`embedded_dataset(split)`);
- `<data_dir>/corpus/manifest.json`: counts per source and split, every
  skipped item and render failure with its reason, package versions,
  licences and attributions.

**Splits by concept, not by source.** One emoji appears in up to ten art
styles and "hamburger" is both an emoji and an OpenClipart title, so items
that share a normalised emoji code point or a normalised caption
(`caption_key`) are one concept (connected components), and a concept has
one split: no concept straddles train and test. A concept's split is a
SHA-256 hash of its smallest key mapped onto the fractions of its source
(`DEFAULT_FRACTIONS`, 90/5/5), except that concepts holding Tux Paint PNG
stamps keep the Tux Paint rule of corpus version 1 (70/10/20 by each
stamp's own caption, a concept going to test if any of its stamps does), so
the 178-stamp `retrieval:tuxpaint` set stays what it was. The test split is
reserved for evaluation and must never be trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from keras_towers.datasets import paths
from keras_towers.datasets import render
from keras_towers.datasets.classification import classification_names
from keras_towers.datasets.classification import describe_classification
from keras_towers.datasets.sources import CorpusSource
from keras_towers.datasets.sources import Package
from keras_towers.datasets.tuxpaint import TUXPAINT_LICENSE
from keras_towers.datasets.tuxpaint import scan_tuxpaint

# Bump when the pairing, caption or split rules change: it invalidates every
# previously prepared corpus.
FORMAT_VERSION = 2
CORPUS_SPLITS = ("train", "validation", "test")
#: Split fractions of concepts with no Tux Paint PNG stamp.
DEFAULT_FRACTIONS = {"train": 0.9, "validation": 0.05, "test": 0.05}
#: Tux Paint's fractions (corpus version 1's, kept so its test set stays).
TUXPAINT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
#: Pairs per TFRecord shard.
SHARD_SIZE = 2048
RECORD_KEYS = (
    "image",
    "caption",
    "tags",
    "source",
    "style",
    "category",
    "license",
    "id",
    "codepoint",
    "concept",
)
_PREPARE_HINT = (
    "Run `keras-towers data prepare` (or `keras_towers.datasets.prepare()`) first."
)


def _tuxpaint_items(data_dir: Path):
    items, skipped = scan_tuxpaint(paths.tuxpaint_dir().absolute())
    for item in items:
        item.update(tags=[], codepoint=None, style="tuxpaint")
    # The SVG-only stamps are the `tuxpaint-svg` source.
    skipped.pop("svg_only", None)
    return items, skipped


TUXPAINT_SOURCE = CorpusSource(
    name="tuxpaint",
    packages=(
        Package(
            "debian",
            "tuxpaint-stamps-default",
            None,
            paths.DEFAULT_TUXPAINT_DIR,
            env=paths.TUXPAINT_DIR_ENV,
        ),
    ),
    license=TUXPAINT_LICENSE,
    attribution="Tux Paint stamps, New Breed Software and contributors (GPL-2.0)",
    items=_tuxpaint_items,
    fractions=TUXPAINT_FRACTIONS,
)


def corpus_sources() -> dict[str, CorpusSource]:
    """Every corpus source, by name, in build order.

    Example:

    ```python
    sorted(keras_towers.datasets.corpus.corpus_sources())
    ```
    """
    from keras_towers.datasets import clipart
    from keras_towers.datasets import emoji_sets

    out = {TUXPAINT_SOURCE.name: TUXPAINT_SOURCE}
    for module in (emoji_sets, clipart):
        for name, source in module.SOURCES.items():
            if name in out:
                raise ValueError(f"Two corpus sources are named {name!r}.")
            out[name] = source
    return out


def caption_key(caption: str) -> str:
    """The normalised caption that groups items and picks their split."""
    text = re.sub(r"[^0-9a-z]+", " ", caption.casefold()).strip()
    return re.sub(r"^(a|an|the) ", "", text)


def split_of(caption: str, fractions: dict[str, float]) -> str:
    """The split of a caption: a stable SHA-256 hash mapped onto `fractions`."""
    return _split_of_key(caption_key(caption), fractions)


def _split_of_key(key: str, fractions: dict[str, float]) -> str:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
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
    _check_split(split)
    return paths.resolve_data_dir(data_dir) / "corpus" / f"{split}.jsonl"


def _check_split(split) -> None:
    if split not in CORPUS_SPLITS:
        raise ValueError(
            f"`split` must be one of {CORPUS_SPLITS}. Received: split={split!r}"
        )


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _tree_signature(root: Path) -> str:
    """A hash of every file's relative path, size and mtime under `root`."""
    digest = hashlib.sha256()
    if root.is_file():
        stat = root.stat()
        digest.update(f"{root}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            full = os.path.join(directory, name)
            try:
                stat = os.lstat(full)
            except OSError:
                continue
            rel = os.path.relpath(full, root)
            digest.update(f"{rel}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _fingerprint(root: Path, sources: dict[str, CorpusSource]) -> str:
    blob = {
        "format_version": FORMAT_VERSION,
        "render": [render.RENDER_SIZE, render.RENDER_VERSION],
        "fractions": [DEFAULT_FRACTIONS, TUXPAINT_FRACTIONS],
        "data_dir": str(root),
        "sources": {
            name: [
                [str(p.path(root)), _tree_signature(p.path(root))]
                for p in source.packages
            ]
            for name, source in sources.items()
        },
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _is_current(corpus_dir: Path, fingerprint: str) -> dict | None:
    """The stored manifest if the corpus on disk is complete and up to date."""
    try:
        manifest = json.loads((corpus_dir / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    for split in CORPUS_SPLITS:
        try:
            records = _read_jsonl(corpus_dir / f"{split}.jsonl")
        except (OSError, ValueError):
            return None
        if len(records) != manifest["splits"][split]["total"]:
            return None
        if not all(os.path.isfile(r.get("image", "")) for r in records):
            return None
        for shard in manifest["shards"][split]:
            if not (corpus_dir / "shards" / shard).is_file():
                return None
    return manifest


class _Concepts:
    """Union-find over items linked by shared code points or caption keys."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _item_keys(item: dict) -> list[str]:
    keys = [f"c:{caption_key(item['caption'])}"]
    if item.get("codepoint"):
        keys.append(f"u:{item['codepoint']}")
    return keys


def assign_splits(items: list[dict], sources: dict[str, CorpusSource]) -> list[str]:
    """The split of every item (module docstring: concepts, fractions)."""
    concepts = _Concepts(len(items))
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        for key in _item_keys(item):
            if key in first:
                concepts.union(i, first[key])
            else:
                first[key] = i
    members: dict[int, list[int]] = {}
    for i in range(len(items)):
        members.setdefault(concepts.find(i), []).append(i)
    splits = [""] * len(items)
    for group in members.values():
        tux = [items[i] for i in group if items[i]["source"] == TUXPAINT_SOURCE.name]
        if tux:
            own = [split_of(t["caption"], TUXPAINT_FRACTIONS) for t in tux]
            split = "test" if "test" in own else own[0]
        else:
            key = min(k for i in group for k in _item_keys(items[i]))
            fractions = sources[items[group[0]]["source"]].fractions
            split = _split_of_key(key, fractions or DEFAULT_FRACTIONS)
        concept = min(k for i in group for k in _item_keys(items[i]))
        for i in group:
            splits[i] = split
            items[i]["concept"] = concept
    return splits


def check_concepts_disjoint(records: dict[str, list[dict]]) -> None:
    """Raise if a code point or caption key appears in two splits."""
    seen: dict[str, str] = {}
    for split, rows in records.items():
        for r in rows:
            for key in _item_keys(r):
                other = seen.setdefault(key, split)
                if other != split:
                    raise AssertionError(
                        f"Concept key {key!r} is in both {other!r} and {split!r} "
                        f"(item {r['id']})."
                    )


def _render_svgs(items, root: Path, failures: dict, workers=None) -> list[dict]:
    """Render every `svg` item (all sources in one pool of workers); return
    the items that have an image."""
    indices = [i for i, item in enumerate(items) if "svg" in item]
    caches = [root / "rendered" / items[i]["source"] for i in indices]
    results = render.render_many(
        [items[i]["svg"] for i in indices], caches, workers=workers
    )
    # Failures are cached as `<stem>.fail`, successes as `<stem>.png`: keep
    # both kinds of this build in each source's cache, drop every other file.
    stems: dict[Path, list[str]] = {cache: [] for cache in caches}
    for i, cache in zip(indices, caches, strict=True):
        try:
            stems[cache].append(render.cache_name(render.svg_bytes(items[i]["svg"])))
        except OSError:  # unreadable: counted as a failure already
            pass
    for cache, keep in stems.items():
        render.prune_cache(cache, keep)
    drop = set()
    for i, (png, reason) in zip(indices, results, strict=True):
        item = items[i]
        del item["svg"]
        if png is None:
            failures.setdefault(item["source"], {})[item["id"]] = reason
            drop.add(i)
        else:
            item["image"] = png
    return [item for i, item in enumerate(items) if i not in drop]


def _write_shards(corpus_dir: Path, records: dict[str, list[dict]]) -> dict:
    import tensorflow as tf

    shard_dir = corpus_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for old in shard_dir.glob("*.tfrecord"):
        old.unlink()
    names = {}

    def feature(value: str):
        return tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[value.encode("utf-8")])
        )

    for split, rows in records.items():
        count = max(1, -(-len(rows) // SHARD_SIZE))
        names[split] = []
        for k in range(count):
            name = f"{split}-{k:05d}-of-{count:05d}.tfrecord"
            partial = shard_dir / f"{name}.partial-{os.getpid()}"
            with tf.io.TFRecordWriter(str(partial)) as writer:
                for r in rows[k * SHARD_SIZE : (k + 1) * SHARD_SIZE]:
                    with open(r["image"], "rb") as f:
                        data = f.read()
                    example = tf.train.Example(
                        features=tf.train.Features(
                            feature={
                                "image": tf.train.Feature(
                                    bytes_list=tf.train.BytesList(value=[data])
                                ),
                                "caption": feature(r["caption"]),
                                "id": feature(r["id"]),
                                "source": feature(r["source"]),
                                "style": feature(r["style"]),
                            }
                        )
                    )
                    writer.write(example.SerializeToString())
            os.replace(partial, shard_dir / name)
            names[split].append(name)
    return names


def _summary(manifest: dict, rebuilt: bool, seconds: float) -> dict:
    return {
        "data_dir": manifest["data_dir"],
        "corpus_dir": str(Path(manifest["data_dir"]) / "corpus"),
        "rebuilt": rebuilt,
        "seconds": round(seconds, 3),
        "splits": manifest["splits"],
        "concepts": manifest["concepts"],
        "sources": list(manifest["sources"]),
        "skipped": {
            name: info["skipped"] for name, info in manifest["sources"].items()
        },
        "render_failures": {
            name: info["render_failures"] for name, info in manifest["sources"].items()
        },
        "evaluation": {
            name: info["counts"] for name, info in manifest["evaluation"].items()
        },
    }


def _print_summary(summary: dict) -> None:
    state = "built" if summary["rebuilt"] else "up to date"
    print(
        f"keras_towers corpus {state} in {summary['corpus_dir']} "
        f"({summary['seconds']:.1f} s)"
    )
    sources = summary["sources"]
    width = max(len(s) for s in sources + ["source"])
    print(f"  {'source':<{width}} {'train':>7} {'valid':>7} {'test':>7}  skipped")
    for source in sources:
        counts = [summary["splits"][s].get(source, 0) for s in CORPUS_SPLITS]
        skipped = dict(summary["skipped"][source])
        if summary["render_failures"][source]:
            skipped["render_failed"] = summary["render_failures"][source]
        text = ", ".join(f"{r} {n}" for r, n in skipped.items() if n) or "-"
        print(
            f"  {source:<{width}} {counts[0]:>7} {counts[1]:>7} {counts[2]:>7}  {text}"
        )
    totals = [summary["splits"][s]["total"] for s in CORPUS_SPLITS]
    concepts = [summary["concepts"][s] for s in CORPUS_SPLITS]
    print(f"  {'total':<{width}} {totals[0]:>7} {totals[1]:>7} {totals[2]:>7}")
    print(f"  {'concepts':<{width}} {concepts[0]:>7} {concepts[1]:>7} {concepts[2]:>7}")
    for name, counts in summary["evaluation"].items():
        print(f"  eval {name}: {', '.join(f'{k} {v}' for k, v in counts.items())}")


def _select_sources(sources) -> dict[str, CorpusSource]:
    available = corpus_sources()
    if sources is None:
        return available
    if isinstance(sources, str):
        sources = (sources,)
    unknown = [s for s in sources if s not in available]
    if unknown or not sources:
        raise ValueError(
            f"`sources` must be a non-empty subset of {list(available)}. "
            f"Received: sources={sources!r}"
        )
    return {name: available[name] for name in available if name in sources}


def prepare(
    data_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    sources=None,
    workers: int | None = None,
) -> dict:
    """Build (or verify) the embedded corpus and check the evaluation sets.

    Offline and idempotent: when the manifests are present, every image and
    shard they name exists and the inputs (packages, rules) are unchanged,
    nothing is rewritten. The first build renders the SVG sources (a few
    minutes on 2 cores); later builds reuse the render cache.

    Inputs, each installed by `bash scripts/setup.sh`: the packages of every
    source (`corpus_sources()`; npm tarballs in `<data_dir>/sources/`, Debian
    packages in `/usr/share`) and the evaluation sets
    (`keras_towers.datasets.classification_names()`, checked, not copied).

    Args:
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.
        verbose: bool. Print the summary.
        sources: None (every source) or a list of source names to build
            the corpus from (a smaller corpus, e.g. for tests).
        workers: int or None. Rendering processes (default: the CPU count,
            at most 8; 1 renders in this process).

    Returns:
        A summary dict: `splits` (pairs per split and source), `concepts`
        (per split), `skipped` and `render_failures` (counts per source),
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
    selected = _select_sources(sources)

    missing, hints, evaluation = {}, {}, {}
    for source in selected.values():
        for package in source.packages:
            where = package.path(root)
            if not where.exists():
                missing[package.name] = str(where)
                hints[package.name] = package.install_hint()
    for name in classification_names():
        try:
            evaluation[name] = describe_classification(name, data_dir=root)
        except paths.MissingDataError as e:
            missing.update(e.missing)
    if missing:
        raise paths.MissingDataError(missing, root, hints=hints)

    corpus_dir = root / "corpus"
    fingerprint = _fingerprint(root, selected)
    manifest = _is_current(corpus_dir, fingerprint)
    if manifest is not None:
        summary = _summary(manifest, rebuilt=False, seconds=time.perf_counter() - start)
        if verbose:
            _print_summary(summary)
        return summary

    items, skipped, failures = [], {}, {}
    for name, source in selected.items():
        found, why = source.items(root)
        for item in found:
            item["source"] = name
            item["license"] = source.license
            item.setdefault("tags", [])
            item.setdefault("codepoint", None)
        items.extend(found)
        skipped[name] = why
    items = _render_svgs(items, root, failures, workers)
    splits = assign_splits(items, selected)

    records = {split: [] for split in CORPUS_SPLITS}
    for item, split in zip(items, splits, strict=True):
        records[split].append({key: item.get(key) for key in RECORD_KEYS})
    for split in CORPUS_SPLITS:
        records[split].sort(key=lambda r: r["id"])
    check_concepts_disjoint(records)

    split_counts, concept_counts = {}, {}
    for split in CORPUS_SPLITS:
        rows = records[split]
        split_counts[split] = {
            name: sum(r["source"] == name for r in rows) for name in selected
        }
        split_counts[split]["total"] = len(rows)
        concept_counts[split] = len({r["concept"] for r in rows})

    corpus_dir.mkdir(parents=True, exist_ok=True)
    shards = _write_shards(corpus_dir, records)
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "data_dir": str(root),
        "record_keys": list(RECORD_KEYS),
        "splits": split_counts,
        "concepts": concept_counts,
        "shards": shards,
        "split_fractions": {
            "default": DEFAULT_FRACTIONS,
            "tuxpaint": TUXPAINT_FRACTIONS,
        },
        "split_rule": (
            "items sharing a normalised emoji code point or caption key are one "
            "concept (connected components); a concept's split is the sha256 of "
            "its smallest key ('c:<caption key>' or 'u:<code point>'), first 8 "
            "bytes / 2**64, mapped onto its source's fractions; concepts with "
            "Tux Paint PNG stamps use each stamp's caption hash on the Tux Paint "
            "fractions, test if any stamp is test"
        ),
        "render": {"size": render.RENDER_SIZE, "version": render.RENDER_VERSION},
        "sources": {
            name: {
                "packages": [
                    {
                        "manager": p.manager,
                        "name": p.name,
                        "version": p.version
                        or (
                            paths.debian_package_version(p.name)
                            if p.manager == "debian"
                            else None
                        ),
                        "path": str(p.path(root)),
                    }
                    for p in source.packages
                ],
                "license": source.license,
                "attribution": source.attribution,
                "pairs": sum(split_counts[s][name] for s in CORPUS_SPLITS),
                "skipped": {r: len(v) for r, v in skipped[name].items()},
                "render_failures": len(failures.get(name, {})),
            }
            for name, source in selected.items()
        },
        "skipped": skipped,
        "render_failures": failures,
        "evaluation": evaluation,
    }
    for split in CORPUS_SPLITS:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[split])
        _write_atomic(corpus_dir / f"{split}.jsonl", text)
    # Written last: its presence marks a complete corpus.
    _write_atomic(corpus_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    summary = _summary(manifest, rebuilt=True, seconds=time.perf_counter() - start)
    if verbose:
        _print_summary(summary)
    return summary


def _check_sources(sources) -> tuple[str, ...] | None:
    if sources is None:
        return None
    if isinstance(sources, str):
        sources = (sources,)
    sources = tuple(sources)
    known = corpus_sources()
    unknown = [s for s in sources if s not in known]
    if unknown or not sources:
        raise ValueError(
            f"`sources` must be None or a non-empty subset of {list(known)}. "
            f"Received: sources={sources!r}"
        )
    return sources


def embedded_records(
    split: str,
    sources=None,
    data_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """The prepared corpus records of one split.

    Args:
        split: str. `"train"`, `"validation"` or `"test"` (held-out concepts,
            reserved for evaluation: never train on it).
        sources: None (all), one source name or a list of them
            (`corpus_sources()`).
        data_dir: path or None. Defaults to `keras_towers.datasets.data_dir()`.

    Returns:
        A list of dicts with keys `RECORD_KEYS` (`image`: absolute PNG path),
        sorted by id.

    Example:

    ```python
    records = keras_towers.datasets.embedded_records("train")
    records[0]["caption"]
    ```
    """
    _check_split(split)
    sources = _check_sources(sources)
    path = corpus_file(split, data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"No prepared corpus at {path}. {_PREPARE_HINT}")
    records = _read_jsonl(path)
    if sources is None:
        return records
    return [r for r in records if r.get("source") in sources]


def shard_files(split: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The TFRecord shards of one prepared split (absolute paths, in order)."""
    _check_split(split)
    corpus_dir = paths.resolve_data_dir(data_dir) / "corpus"
    try:
        manifest = json.loads((corpus_dir / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"No prepared corpus in {corpus_dir}. {_PREPARE_HINT}"
        ) from e
    return [str(corpus_dir / "shards" / name) for name in manifest["shards"][split]]


def embedded_dataset(split: str, data_dir=None, **options):
    """The prepared split as a streaming pairs dataset from its TFRecord shards.

    Args:
        split: str. `"train"`, `"validation"` or `"test"`.
        data_dir: path or None.
        **options: passed to `keras_towers.datasets.from_tfrecord` (e.g.
            `shuffle_files=True, seed=0, cycle_length=4`).

    Example:

    ```python
    ds = keras_towers.datasets.embedded_dataset("train", shuffle_files=True, seed=0)
    ```
    """
    from keras_towers.datasets.pairs import from_tfrecord

    return from_tfrecord(shard_files(split, data_dir), **options)
