"""Ship a trained run as a preset: copy it into `keras_towers/shipped_presets/`
and record the metrics `keras-towers eval --json` measured on it.

    .venv/bin/keras-towers train --method lit-minilm ... --output runs/v2/lit-minilm
    KERAS_BACKEND=tensorflow .venv/bin/keras-towers eval --preset runs/v2/lit-minilm \\
        --task zeroshot:flags ... --limit 1000 --json runs/v2/lit-minilm.eval.json
    .venv/bin/python scripts/ship_preset.py runs/v2/lit-minilm lit_lite0_minilm_embedded \\
        --eval-json runs/v2/lit-minilm.eval.json --description "..."

The run's files are copied as they are (their checksums in `metadata.json`
still hold); `metadata.json` gets the description, the metrics under
`metrics` and how they were measured under `metrics_measured`. The preset's
card (`README.md`) is kept if the preset exists, and must be written by hand
for a new one: the script refuses to ship a preset without one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path

from keras_towers import presets
from keras_towers.utils.io import read_json
from keras_towers.utils.io import write_json

#: What a run directory holds that a preset ships.
SHIPPED = ("config.json", "model.weights.h5", "metadata.json", "assets")


def _eval_metrics(path: Path, run_dir: Path) -> dict:
    """`{task: metrics}` of `run_dir` from a `keras-towers eval --json` file
    (one preset: `{task: ...}`; several: `{"<preset>/<task>": ...}`)."""
    data = read_json(path)
    if data and all(":" in key and "/" not in key.split(":")[0] for key in data):
        return data
    metrics = {}
    for key, value in data.items():
        preset, _, task = key.rpartition("/")
        while task and ":" not in task:  # a task name such as retrieval:a/b.csv
            preset, _, head = preset.rpartition("/")
            task = f"{head}/{task}"
        if preset and Path(preset).resolve() == run_dir.resolve():
            metrics[task] = value
    if not metrics:
        raise SystemExit(f"{path} has no metrics of {run_dir} (keys: {sorted(data)})")
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a `keras-towers train --output`")
    parser.add_argument("name", help="the shipped preset's name")
    parser.add_argument("--eval-json", type=Path, required=True)
    parser.add_argument(
        "--eval-command", default="", help="the eval command (recorded)"
    )
    parser.add_argument("--description", required=True)
    args = parser.parse_args(argv)

    missing = [f for f in SHIPPED[:3] if not (args.run_dir / f).is_file()]
    if missing:
        raise SystemExit(f"{args.run_dir} is not a finished run: no {missing}")
    target = presets.presets_dir() / args.name
    card = target / "README.md"
    if not card.is_file():
        raise SystemExit(
            f"Write the card {card} first (data, licences, command, time, metrics)."
        )
    metrics = _eval_metrics(args.eval_json, args.run_dir)
    metadata = read_json(args.run_dir / "metadata.json")
    metadata["description"] = args.description
    metadata["metrics"] = metrics
    metadata["metrics_measured"] = {
        "date": datetime.date.today().isoformat(),
        "command": args.eval_command or f"keras-towers eval (--json {args.eval_json})",
    }
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / args.name
        staged.mkdir()
        shutil.copy2(card, staged / "README.md")
        for name in SHIPPED:
            source = args.run_dir / name
            if source.is_dir():
                shutil.copytree(source, staged / name)
            elif source.is_file():
                shutil.copy2(source, staged / name)
        write_json(staged / "metadata.json", metadata)
        old = Path(tmp) / "old"
        target.rename(old)
        staged.rename(target)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"shipped {args.run_dir} as {target} ({size / 2**20:.1f} MiB)")
    print(json.dumps({k: sorted(v) for k, v in metrics.items()}, indent=None)[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
