"""External checkpoint formats: how a directory is recognised, and its loader.

`FORMAT_LOADERS` maps a format's name to a `CheckpointFormat`; converters
fill it with `register_format` (re-exported by `keras_towers.presets`, where
`from_preset` and `keras-towers convert` ask `external_format(dir)` which
loader a directory goes to). This module imports no model and no converter.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from keras_towers.utils.io import read_json
from keras_towers.utils.registry import Registry

#: The file a keras_towers preset and a transformers checkpoint both hold.
CONFIG_FILE = "config.json"

__all__ = ["FORMAT_LOADERS", "CheckpointFormat", "external_format", "register_format"]

#: Format name -> `CheckpointFormat` (how to recognise a directory, and its
#: `loader(path, cls, load_weights, **kwargs) -> model`), for checkpoint
#: directories in external formats (filled by `converters`).
FORMAT_LOADERS = Registry(
    "checkpoint format",
    hint="Register a loader with `keras_towers.presets.register_format`.",
)


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """An external checkpoint format: a directory is in it when its
    `config.json` has `"model_type": model_type` (and no keras_towers
    `class_name`), or, for formats without a `config.json` of their own,
    when it holds `marker_file`."""

    name: str
    load: Callable
    model_type: str | None = None
    marker_file: str | None = None

    def matches(self, path: Path, config: dict | None) -> bool:
        if self.model_type is not None:
            return bool(config) and config.get("model_type") == self.model_type
        return (path / self.marker_file).is_file()


def register_format(
    model_type: str | None = None,
    *,
    marker_file: str | None = None,
    name: str | None = None,
):
    """Decorator registering a loader for external checkpoint directories.

    The loader is called as `loader(path, cls=cls, load_weights=..., **kwargs)`
    for a directory whose `config.json` has `"model_type": model_type` and
    no keras_towers `class_name` (transformers' layout), or, with
    `marker_file`, for a directory holding that file (e.g. open_clip's
    `open_clip_config.json`); `cls` is the class `from_preset` was called on
    (possibly `ContrastiveModel`). A directory a `model_type` format
    recognises goes to it before any marker-file format. `name` (default:
    the `model_type` or the marker file) is the format's name in
    `FORMAT_LOADERS` and in messages.

    Example:

    ```python
    @keras_towers.presets.register_format("my_clip")
    def load_my_clip(path, cls, load_weights=True, **kwargs):
        ...
    ```
    """
    if (model_type is None) == (marker_file is None):
        raise ValueError(
            "register_format needs exactly one of `model_type` (a config.json "
            "field value) and `marker_file`. Received: "
            f"model_type={model_type!r}, marker_file={marker_file!r}."
        )

    key = name or model_type or marker_file

    def decorator(loader):
        FORMAT_LOADERS.add(key, CheckpointFormat(key, loader, model_type, marker_file))
        return loader

    return decorator


def external_format(path: str | os.PathLike) -> CheckpointFormat | None:
    """The external format of a checkpoint directory, `None` for a
    keras_towers preset; a `ValueError` when it is neither."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    config = read_json(config_path) if config_path.is_file() else None
    if config is not None and "class_name" in config:
        return None
    formats = [FORMAT_LOADERS.get(name) for name in FORMAT_LOADERS.names()]
    ordered = [f for f in formats if f.model_type is not None] + [
        f for f in formats if f.model_type is None
    ]
    for checkpoint_format in ordered:
        if checkpoint_format.matches(path, config):
            return checkpoint_format
    if config is not None and "model_type" in config:
        known = sorted(f.model_type for f in formats if f.model_type is not None)
        raise ValueError(
            f"{str(path)!r} holds a checkpoint with model_type="
            f"{config['model_type']!r}, which keras_towers cannot load. "
            f"Supported model_types: {known}; other formats: "
            f"{sorted(f.marker_file for f in formats if f.marker_file)}."
        )
    raise ValueError(
        f"{str(path)!r} is neither a keras_towers preset (a {CONFIG_FILE} with "
        "a class_name) nor a checkpoint directory in a supported format "
        f"({FORMAT_LOADERS.names()})."
    )
