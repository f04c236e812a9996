"""Shipped presets read without Keras, and `keras-towers presets list`.

`keras_towers.presets` finds and reads the shipped presets through
`presets_dir` and `shipped_presets` here, so the library and the command
agree on what is shipped; `presets list` reads only `metadata.json` files and
so needs neither Keras nor `keras_towers`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from keras_towers_entry.parser import package_dir

METADATA_FILE = "metadata.json"


def presets_dir() -> Path:
    """Where shipped presets live (`$KERAS_TOWERS_PRESETS_DIR` overrides)."""
    env = os.environ.get("KERAS_TOWERS_PRESETS_DIR")
    if env:
        return Path(env)
    return package_dir("keras_towers").resolve() / "shipped_presets"


def shipped_presets(root: Path) -> dict[str, dict]:
    """Every `root/<name>/metadata.json`: name -> `{"path", "metadata"}`,
    in name order."""
    found = {}
    root = Path(root)
    if root.is_dir():
        for meta_path in sorted(root.glob(f"*/{METADATA_FILE}")):
            found[meta_path.parent.name] = {
                "path": str(meta_path.parent),
                "metadata": json.loads(meta_path.read_text()),
            }
    return found


def _listed_presets() -> dict[str, dict]:
    """name -> metadata. Called in a process that has imported
    `keras_towers.presets`, the presets registered there too
    (`register_preset`); from the command line, the shipped ones."""
    library = sys.modules.get("keras_towers.presets")
    if library is not None:
        return library.all_presets()
    return {
        name: entry["metadata"]
        for name, entry in sorted(shipped_presets(presets_dir()).items())
    }


def print_presets(entries: dict[str, dict]) -> None:
    if not entries:
        print("No shipped presets found.")
        return
    for name, metadata in entries.items():
        print(f"{name}  [{metadata.get('class_name', '?')}]")
        if metadata.get("description"):
            print(f"    {metadata['description']}")
        params = metadata.get("parameter_count")
        if params:
            print(f"    parameters: {params:,}")
        for task, metrics in sorted(metadata.get("metrics", {}).items()):
            if isinstance(metrics, dict):
                shown = ", ".join(
                    f"{k}={_fmt(v)}" for k, v in metrics.items() if _headline(k)
                )
                print(f"    {task}: {shown}")
            else:
                print(f"    {task}: {_fmt(metrics)}")


def cmd_presets_list(args=None) -> int:
    """`keras-towers presets list`."""
    print_presets(_listed_presets())
    return 0


def _headline(key: str) -> bool:
    return key == "accuracy" or key.endswith("recall@1") or key.endswith("recall@10")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
