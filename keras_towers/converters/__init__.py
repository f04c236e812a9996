"""Converters from external checkpoint formats, keyed by `model_type`.

`keras_towers.<Method>.from_preset(dir)` hands a directory whose `config.json`
carries a `model_type` (the transformers layout) to the converter registered
for that type. Register new ones with `register_converter`.
"""

from __future__ import annotations

from collections.abc import Callable

_CONVERTERS: dict[str, Callable] = {}


def register_converter(model_type: str):
    """Register `fn(path, cls, load_weights, **kwargs) -> model`."""

    def decorator(fn):
        _CONVERTERS[model_type] = fn
        return fn

    return decorator


def get(model_type: str) -> Callable:
    if model_type not in _CONVERTERS:
        raise ValueError(
            f"No converter for checkpoints of model_type {model_type!r}. "
            f"Supported: {sorted(_CONVERTERS)}."
        )
    return _CONVERTERS[model_type]


from keras_towers.converters import transformers_clip  # noqa: E402,F401
