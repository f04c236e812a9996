"""Presets: named, versioned model directories, and loading them.

A preset is a directory in keras-hub's layout:

- `config.json`: the serialized model (towers, preprocessor, options);
- `model.weights.h5`: the weights (a safe format; no pickles);
- `assets/tokenizer/`: tokenizer vocabulary files, when the tokenizer has any;
- `metadata.json`: class, versions, parameter count, description, metrics
  and the sha256 of the weights file, checked on every load.

Shipped presets live in the repository's `presets/` directory (one
sub-directory per name) and are discovered once; users can register their own
directories with `register_preset`. Directories in an external format (a
`transformers` `config.json` with `model_type`) are handed to the converter
registered for that type.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
TOKENIZER_ASSETS = os.path.join("assets", "tokenizer")

_USER_PRESETS: dict[str, dict] = {}
_SHIPPED_CACHE: dict[str, dict] | None = None


def presets_dir() -> Path:
    """Where shipped presets live (`$KERAS_TOWERS_PRESETS_DIR` overrides)."""
    env = os.environ.get("KERAS_TOWERS_PRESETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "presets"


def _shipped() -> dict[str, dict]:
    global _SHIPPED_CACHE
    if _SHIPPED_CACHE is None:
        found = {}
        root = presets_dir()
        if root.is_dir():
            for meta_path in sorted(root.glob(f"*/{METADATA_FILE}")):
                metadata = json.loads(meta_path.read_text())
                found[meta_path.parent.name] = {
                    "path": str(meta_path.parent),
                    "metadata": metadata,
                }
        _SHIPPED_CACHE = found
    return _SHIPPED_CACHE


def register_preset(name: str, path: str) -> None:
    """Register a preset directory under a name, for `from_preset(name)`."""
    metadata_path = Path(path) / METADATA_FILE
    if not metadata_path.is_file():
        raise ValueError(
            f"{path!r} is not a keras_towers preset directory (no "
            f"{METADATA_FILE}). Write one with `model.save_to_preset(path)`."
        )
    _USER_PRESETS[name] = {
        "path": str(path),
        "metadata": json.loads(metadata_path.read_text()),
    }


def _all() -> dict[str, dict]:
    return {**_shipped(), **_USER_PRESETS}


def _class_matches(cls, class_name: str) -> bool:
    registered = keras.saving.get_registered_object(f"keras_towers>{class_name}")
    if registered is None:
        return False
    return issubclass(registered, cls)


def list_presets(cls) -> dict[str, dict]:
    """Presets whose model class is `cls` or a subclass: name -> metadata."""
    return {
        name: entry["metadata"]
        for name, entry in sorted(_all().items())
        if _class_matches(cls, entry["metadata"].get("class_name", ""))
    }


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(cls, preset: str) -> Path:
    """A preset name or directory -> the directory, or a clear error."""
    presets = _all()
    if preset in presets:
        return Path(presets[preset]["path"])
    if os.path.isdir(preset):
        return Path(preset)
    known = sorted(list_presets(cls))
    raise ValueError(
        f"Unknown preset {preset!r} for {cls.__name__}: it is neither a shipped "
        f"preset nor a directory. Known presets: {known or 'none yet'}. "
        "Pass a directory written by `save_to_preset` or a transformers "
        "checkpoint directory."
    )


def load(cls, preset: str, load_weights: bool = True, **kwargs):
    path = resolve(cls, preset)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"Preset directory {str(path)!r} has no {CONFIG_FILE}.")
    config = json.loads(config_path.read_text())
    if "model_type" in config and "class_name" not in config:
        from keras_towers import converters

        converter = converters.get(config["model_type"])
        return converter(path, cls=cls, load_weights=load_weights, **kwargs)

    registered = config.get("registered_name", "")
    target = keras.saving.get_registered_object(registered)
    if target is None or not issubclass(target, cls):
        raise ValueError(
            f"Preset {preset!r} holds a {registered or config.get('class_name')!r}, "
            f"which is not a {cls.__name__}. Load it with its own class."
        )
    if kwargs:
        config = dict(config)
        config["config"] = {**config["config"], **kwargs}
    model = keras.saving.deserialize_keras_object(config)
    assets = path / TOKENIZER_ASSETS
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if assets.is_dir() and tokenizer is not None:
        tokenizer.load_assets(str(assets))
    if load_weights:
        weights = path / WEIGHTS_FILE
        metadata_path = path / METADATA_FILE
        if metadata_path.is_file():
            expected = json.loads(metadata_path.read_text()).get("weights_sha256")
            if expected and sha256_file(weights) != expected:
                raise ValueError(
                    f"The weights of preset {preset!r} ({weights}) do not match "
                    "the sha256 in its metadata.json: the file is corrupt or was "
                    "changed after saving."
                )
        model.load_weights(str(weights))
    return model


def _save_weights_without_optimizer(model, path, referenced=()) -> None:
    """Model weights only: a compiled model's optimizer state (2x the model
    for Adam) is training state, not part of a preset, and `referenced`
    layers' frozen weights live in their own presets."""
    from keras.src.saving import saving_lib

    skip = list(referenced)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        skip.append(optimizer)
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip or None)


def save(model, preset_dir: str, description: str = "", **metadata) -> None:
    from keras_towers.version import __version__

    path = Path(preset_dir)
    path.mkdir(parents=True, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    config.pop("build_config", None)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    weights = path / WEIGHTS_FILE
    referenced_fn = getattr(model, "referenced_objects", None)
    referenced = referenced_fn() if referenced_fn is not None else []
    _save_weights_without_optimizer(model, weights, referenced)
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "save_assets"):
        assets = path / TOKENIZER_ASSETS
        assets.mkdir(parents=True, exist_ok=True)
        tokenizer.save_assets(str(assets))
    meta = {
        "class_name": type(model).__name__,
        "description": description,
        "keras_towers_version": __version__,
        "keras_version": keras.__version__,
        "parameter_count": int(model.count_params()),
        "date": datetime.date.today().isoformat(),
        "weights_sha256": sha256_file(weights),
        **metadata,
    }
    if referenced:
        meta["stored_parameter_count"] = int(model.count_params()) - sum(
            int(np.prod(v.shape)) for layer in referenced for v in layer.weights
        )
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def all_presets() -> dict[str, dict]:
    """Every shipped and registered preset: name -> metadata."""
    return {name: entry["metadata"] for name, entry in sorted(_all().items())}


def load_any(preset: str, **kwargs):
    """Load a preset with the class recorded in it (any keras_towers model)."""
    import keras_towers  # noqa: F401  (registers every model class)

    path = resolve(keras.Model, preset)
    class_name = None
    metadata_path = path / METADATA_FILE
    if metadata_path.is_file():
        class_name = json.loads(metadata_path.read_text()).get("class_name")
    target = None
    if class_name:
        target = keras.saving.get_registered_object(f"keras_towers>{class_name}")
    if target is None:
        from keras_towers.models import CLIP

        target = CLIP  # external formats (transformers CLIP) load as CLIP
    return target.from_preset(str(path), **kwargs)
