"""Presets: named, versioned model directories, and loading them.

A preset is a directory in keras-hub's layout:

- `config.json`: the serialized model (towers, preprocessor, options);
- `model.weights.h5`: the weights (a safe format; no pickles), without the
  optimizer and without towers the model only *references* by name (their
  frozen weights come from their own source, see
  `ContrastiveModel.referenced_objects`);
- `assets/tokenizer/`: tokenizer vocabulary files, when the tokenizer has any;
- `metadata.json`: class, versions, parameter counts, description, metrics
  and `files_sha256`, the sha256 of every file above, checked on every load.

One format and one metadata schema for every method. Shipped presets live in
the package (`keras_towers/shipped_presets/<name>/`), so an installed wheel
resolves their names; users register their own directories with
`register_preset`.

This module imports no model and no converter. Directories in an external
checkpoint format (a `config.json` with a `model_type`, as transformers
writes) are handed to the loader registered for that type in
`FORMAT_LOADERS`; `keras_towers.converters` registers them.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import keras
import numpy as np

from keras_towers.utils.io import read_json
from keras_towers.utils.io import sha256_file
from keras_towers.utils.io import write_json
from keras_towers.utils.registry import Registry
from keras_towers.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
TOKENIZER_ASSETS = os.path.join("assets", "tokenizer")

#: `model_type` -> `loader(path, cls, load_weights, **kwargs) -> model`, for
#: checkpoint directories in external formats (filled by `converters`).
FORMAT_LOADERS = Registry(
    "checkpoint format (model_type)",
    hint="Register a loader with `keras_towers.presets.register_format`.",
)

_USER_PRESETS: dict[str, dict] = {}
_SHIPPED_CACHE: dict[str, dict] | None = None

__all__ = [
    "FORMAT_LOADERS",
    "all_presets",
    "list_presets",
    "load",
    "presets_dir",
    "register_format",
    "register_preset",
    "resolve",
    "save",
    "sha256_file",
]


def register_format(model_type: str):
    """Decorator registering a loader for external checkpoint directories.

    The loader is called as `loader(path, cls=cls, load_weights=..., **kwargs)`
    for a directory whose `config.json` has `"model_type": model_type` and
    no keras_towers `class_name`; `cls` is the class `from_preset` was
    called on (possibly `ContrastiveModel`).

    Example:

    ```python
    @keras_towers.presets.register_format("my_clip")
    def load_my_clip(path, cls, load_weights=True, **kwargs):
        ...
    ```
    """
    return FORMAT_LOADERS.register(model_type)


def presets_dir() -> Path:
    """Where shipped presets live (`$KERAS_TOWERS_PRESETS_DIR` overrides)."""
    env = os.environ.get("KERAS_TOWERS_PRESETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "shipped_presets"


def _shipped() -> dict[str, dict]:
    global _SHIPPED_CACHE
    if _SHIPPED_CACHE is None:
        found = {}
        root = presets_dir()
        if root.is_dir():
            for meta_path in sorted(root.glob(f"*/{METADATA_FILE}")):
                found[meta_path.parent.name] = {
                    "path": str(meta_path.parent),
                    "metadata": read_json(meta_path),
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
    _USER_PRESETS[name] = {"path": str(path), "metadata": read_json(metadata_path)}


def _all() -> dict[str, dict]:
    return {**_shipped(), **_USER_PRESETS}


def _registered_class(class_name: str):
    return keras.saving.get_registered_object(f"keras_towers>{class_name}")


def _class_matches(cls, class_name: str) -> bool:
    registered = _registered_class(class_name)
    return registered is not None and issubclass(registered, cls)


def list_presets(cls) -> dict[str, dict]:
    """Presets whose model class is `cls` or a subclass: name -> metadata."""
    return {
        name: entry["metadata"]
        for name, entry in sorted(_all().items())
        if _class_matches(cls, entry["metadata"].get("class_name", ""))
    }


def all_presets() -> dict[str, dict]:
    """Every shipped and registered preset: name -> metadata."""
    return {name: entry["metadata"] for name, entry in sorted(_all().items())}


def resolve(cls, preset: str) -> Path:
    """A preset name or directory -> the directory, or a clear error."""
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(
            "`preset` must be a preset name or a directory path. "
            f"Received: {type(preset).__name__}: {preset!r}"
        )
    preset = os.fspath(preset)
    presets = _all()
    if preset in presets:
        return Path(presets[preset]["path"])
    if os.path.isdir(preset):
        return Path(preset)
    known = sorted(list_presets(cls))
    raise ValueError(
        f"Unknown preset {preset!r} for {cls.__name__}: it is neither a shipped "
        f"preset nor a directory. Known presets: {known or 'none yet'}. "
        "Pass a directory written by `save_to_preset` or a checkpoint "
        f"directory in a supported format ({FORMAT_LOADERS.names()})."
    )


def _expected_digests(metadata: dict) -> dict[str, str]:
    """File -> sha256 from any schema this package has written."""
    expected = dict(metadata.get("files_sha256") or {})
    if metadata.get("weights_sha256"):  # written before files_sha256 existed
        expected.setdefault(WEIGHTS_FILE, metadata["weights_sha256"])
    return expected


def check_files(path: Path, preset: str, metadata: dict) -> None:
    """Raise if a file listed in `metadata` is missing or changed."""
    for filename, digest in sorted(_expected_digests(metadata).items()):
        file = path / filename
        if not file.is_file():
            raise ValueError(
                f"Preset {preset!r} ({path}) lacks {filename}, which its "
                f"{METADATA_FILE} lists: the directory is incomplete."
            )
        if sha256_file(file) != digest:
            raise ValueError(
                f"{filename} of preset {preset!r} ({file}) does not match the "
                f"sha256 in its {METADATA_FILE}: the file is corrupt or was "
                "changed after saving."
            )


def preset_class(cls, preset: str):
    """The registered class a keras_towers preset holds, checked against
    `cls`; `None` for a directory in an external format."""
    path = resolve(cls, preset)
    config = _read_config(path)
    if _is_external(config):
        return None
    return _target_class(cls, preset, config)


def _read_config(path: Path) -> dict:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"Preset directory {str(path)!r} has no {CONFIG_FILE}.")
    return read_json(config_path)


def _is_external(config: dict) -> bool:
    return "model_type" in config and "class_name" not in config


def _target_class(cls, preset: str, config: dict):
    registered = config.get("registered_name") or ""
    target = keras.saving.get_registered_object(registered)
    if target is None:
        raise ValueError(
            f"Preset {preset!r} holds a {registered or config.get('class_name')!r}, "
            "which is not a registered keras_towers class (import the module "
            "that defines it first)."
        )
    if not issubclass(target, cls):
        raise ValueError(
            f"Preset {preset!r} holds a {registered or config.get('class_name')!r}, "
            f"which is not a {cls.__name__}. Load it with its own class, or "
            "with `keras_towers.ContrastiveModel.from_preset`."
        )
    return target


def load(cls, preset: str, load_weights: bool = True, **kwargs):
    """Load a preset as `cls` (or the subclass recorded in it)."""
    path = resolve(cls, preset)
    config = _read_config(path)
    if _is_external(config):
        loader = FORMAT_LOADERS.get(config["model_type"])
        return loader(path, cls=cls, load_weights=load_weights, **kwargs)

    _target_class(cls, preset, config)
    metadata_path = path / METADATA_FILE
    metadata = read_json(metadata_path) if metadata_path.is_file() else {}
    if load_weights:
        check_files(path, preset, metadata)
    if kwargs:
        config = dict(config)
        config["config"] = {**config["config"], **kwargs}
    model = keras.saving.deserialize_keras_object(config)
    assets = path / TOKENIZER_ASSETS
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if assets.is_dir() and tokenizer is not None and hasattr(tokenizer, "load_assets"):
        tokenizer.load_assets(str(assets))
    if load_weights:
        weights = path / WEIGHTS_FILE
        legacy = getattr(model, "load_legacy_preset_files", None)
        if weights.is_file():
            model.load_weights(str(weights))
        elif legacy is not None:
            legacy(path)
        else:
            raise ValueError(
                f"Preset {preset!r} ({path}) has no {WEIGHTS_FILE}. Pass "
                "`load_weights=False` to build the architecture only."
            )
    return model


def _save_weights_without_optimizer(model, path, referenced=()) -> None:
    """Model weights only: a compiled model's optimizer state (2x the model
    for Adam) is training state, not part of a preset, and `referenced`
    layers' weights live in their own presets (frozen towers) or are
    training state too (`training_state_objects`)."""
    from keras.src.saving import saving_lib

    skip = list(referenced)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        skip.append(optimizer)
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip or None)


def _files_under(path: Path, root: Path) -> list[str]:
    if path.is_file():
        return [path.relative_to(root).as_posix()]
    return sorted(
        p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file()
    )


def save(model, preset_dir: str, description: str = "", **metadata) -> None:
    """Write `model` as a preset directory (see the module docstring)."""
    path = Path(preset_dir)
    path.mkdir(parents=True, exist_ok=True)
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    config.pop("build_config", None)
    write_json(path / CONFIG_FILE, config)
    referenced = []
    for hook in ("referenced_objects", "training_state_objects"):
        fn = getattr(model, hook, None)
        referenced += fn() if fn is not None else []
    weights = path / WEIGHTS_FILE
    _save_weights_without_optimizer(model, weights, referenced)
    files = [CONFIG_FILE, WEIGHTS_FILE]
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "save_assets"):
        assets = path / TOKENIZER_ASSETS
        assets.mkdir(parents=True, exist_ok=True)
        tokenizer.save_assets(str(assets))
        files += _files_under(assets, path)
    extra_fn = getattr(model, "preset_metadata", None)
    extra = extra_fn() if extra_fn is not None else {}
    meta = {
        "class_name": type(model).__name__,
        "description": description,
        "keras_towers_version": __version__,
        "keras_version": keras.__version__,
        "parameter_count": int(model.count_params()),
        "date": datetime.date.today().isoformat(),
        "files_sha256": {f: sha256_file(path / f) for f in files},
        **extra,
        **metadata,
    }
    if referenced:
        meta["stored_parameter_count"] = int(model.count_params()) - sum(
            int(np.prod(v.shape)) for layer in referenced for v in layer.weights
        )
    write_json(path / METADATA_FILE, meta)
