"""Re-measure the metrics recorded in shipped presets' metadata.json.

A preset's `metrics` are measured when it is trained (`keras-towers train
--eval TASK`). When the library's inference path changes (e.g. the framing
rule of 2026-11-30: images are framed as the preset was trained, instead of
centre-cropped), the recorded numbers must follow. This script re-runs every
recorded task (`retrieval:tuxpaint`, `linear-probe:fashion-mnist`, ...) on the
current code, prints old and new values, and with `--write` stores the new
ones (metadata.json is not covered by the files' checksums) together with
when, how and from what they were measured.

    KERAS_BACKEND=tensorflow .venv/bin/python scripts/remeasure_shipped_metrics.py \
        lit_lite0_embedded protoclip_lite0_minilm_embedded --write
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import keras

import keras_towers
from keras_towers import presets
from keras_towers import tasks
from keras_towers.utils.io import read_json
from keras_towers.utils.io import write_json

HEADLINE = (
    "accuracy",
    "image_to_text_recall@1",
    "image_to_text_recall@10",
    "text_to_image_recall@1",
    "text_to_image_recall@10",
)


def _is_task(key: str) -> bool:
    try:
        tasks.parse(key)
    except ValueError:
        return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", help="shipped preset names (all)")
    parser.add_argument("--write", action="store_true", help="update metadata.json")
    parser.add_argument("--reason", default="", help="why, recorded with them")
    args = parser.parse_args(argv)
    names = args.presets or list(presets.all_presets())
    for name in names:
        path = presets.resolve(keras_towers.ContrastiveModel, name)
        metadata = read_json(path / presets.METADATA_FILE)
        recorded = metadata.get("metrics", {})
        task_keys = [k for k in recorded if _is_task(k)]
        if not task_keys:
            print(f"{name}: no task metrics recorded; skipped")
            continue
        model = keras_towers.ContrastiveModel.from_preset(name)
        for task in task_keys:
            start = time.perf_counter()
            measured = tasks.run(model, task, verbose=0)["metrics"]
            measured["seconds"] = round(time.perf_counter() - start, 2)
            shown = [
                f"{k} {100 * recorded[task].get(k, float('nan')):.2f} -> "
                f"{100 * measured[k]:.2f}"
                for k in HEADLINE
                if k in measured
            ]
            print(f"{name} {task}: " + "; ".join(shown), flush=True)
            recorded[task] = measured
        if args.write:
            metadata["metrics"] = recorded
            metadata["metrics_measured"] = {
                "date": datetime.date.today().isoformat(),
                "keras_towers_version": keras_towers.__version__,
                "backend": keras.config.backend(),
                "command": "python scripts/remeasure_shipped_metrics.py "
                + " ".join(sys.argv[1:]),
                **({"reason": args.reason} if args.reason else {}),
            }
            write_json(path / presets.METADATA_FILE, metadata)
            print(f"{name}: wrote {path / presets.METADATA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
