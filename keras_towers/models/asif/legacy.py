"""Reading ASIF presets written before ASIF used Keras saving.

Up to commit 73d115b an ASIF preset held, beside `config.json`,
`metadata.json` and the tokenizer assets:

- `anchors.safetensors`: `image_features`, `text_features` (absent for an
  empty set), `ids`, and captions / image references as UTF-8 blobs with
  int64 offsets; `next_id` in the safetensors metadata;
- `image_tower.safetensors` / `text_tower.safetensors` for towers without
  a `*_tower_source`: the tower's weights in `tower.weights` order, keyed
  `000000`, `000001`, ..., their variable paths in the metadata.

`keras_towers.presets.load` checks their sha256 (`files_sha256`) and, as
there is no `model.weights.h5`, calls `ASIF.load_legacy_preset_files`.
Rewrite such a preset in the current format with
`ASIF.from_preset(old).save_to_preset(new)`.
"""

from __future__ import annotations

import json
from pathlib import Path

from keras_towers.models.asif.saving import decode_strings

ANCHORS_FILE = "anchors.safetensors"
IMAGE_TOWER_FILE = "image_tower.safetensors"
TEXT_TOWER_FILE = "text_tower.safetensors"


def load_legacy_preset_files(model, path) -> None:
    """Load the tower weights and anchors of an old-format preset directory
    into `model` (an `ASIF` built from the preset's config)."""
    path = Path(path)
    if not (path / ANCHORS_FILE).is_file():
        raise ValueError(
            f"ASIF preset {str(path)!r} has neither model.weights.h5 nor the "
            f"{ANCHORS_FILE} of the earlier format."
        )
    for tower, filename in (
        (model.image_tower, IMAGE_TOWER_FILE),
        (model.text_tower, TEXT_TOWER_FILE),
    ):
        if (path / filename).is_file():
            _load_tower_weights(tower, path / filename)
    _load_anchors(model, path / ANCHORS_FILE)


def _read(filename: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(filename), framework="numpy") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        metadata = dict(f.metadata() or {})
    return tensors, metadata


def _load_anchors(model, filename: Path) -> None:
    tensors, metadata = _read(filename)
    next_id = int(metadata.get("next_id", 0))
    if "image_features" not in tensors:
        model._restore_anchors(None, None, [], [], [], next_id)
        return
    model._restore_anchors(
        tensors["image_features"],
        tensors["text_features"],
        decode_strings(tensors["captions"], tensors["caption_offsets"]),
        decode_strings(tensors["image_refs"], tensors["image_ref_offsets"]),
        tensors["ids"],
        next_id,
    )


def _load_tower_weights(tower, filename: Path) -> None:
    tensors, metadata = _read(filename)
    values = [tensors[key] for key in sorted(tensors)]
    paths = json.loads(metadata.get("paths", "[]"))
    weights = tower.weights
    if len(values) != len(weights):
        raise ValueError(
            f"{filename.name} holds {len(values)} weights but the tower "
            f"{tower.name!r} has {len(weights)}: the architecture changed."
        )
    for i, (variable, value) in enumerate(zip(weights, values, strict=True)):
        if tuple(variable.shape) != tuple(value.shape):
            saved = paths[i] if i < len(paths) else i
            raise ValueError(
                f"Weight {saved!r} in {filename.name} has shape {value.shape}, "
                f"but {variable.path!r} expects {tuple(variable.shape)}."
            )
        variable.assign(value)
