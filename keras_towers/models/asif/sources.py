"""Where ASIF's frozen towers come from.

A tower source is what `image_tower_source` / `text_tower_source` name: a
pretrained encoder of `keras_towers.pretrained` (a registered name or a
local keras-hub backbone preset directory), or a tower of a keras_towers
model preset, `"<preset>#image_tower"`. Configs and presets store the source
instead of the tower's weights.
"""

from __future__ import annotations

import os

import keras

from keras_towers import pretrained
from keras_towers.models.base import ContrastiveModel


def load_tower_source(
    source: str,
    modality: str | None = None,
    pooling: str | None = None,
    _cache: dict | None = None,
) -> keras.layers.Layer:
    """Build the locked tower a source reference points to.

    Args:
        source: str. A pretrained encoder name (`keras_towers.pretrained.
            names()`, e.g. `"efficientnet_lite0_imagenet"`; the tower is named
            `"asif_<short name>_tower"`), a local keras-hub backbone preset
            directory (give `modality` and `pooling`), or
            `"<preset>#<attribute>"`: a tower of a keras_towers model preset
            (shipped name or directory), e.g. `"shapes_clip_tiny#image_tower"`.
        modality: `"image"` or `"text"`: which tower this is (required for a
            backbone directory, checked for a registered encoder).
        pooling: str. Pooling of a backbone directory's output (`"mean"`,
            `"cls"`); a registered encoder has its own.

    Returns:
        The tower (a `keras.layers.Layer`).

    Example:

    ```python
    from keras_towers.models.asif import load_tower_source
    tower = load_tower_source("all_minilm_l6_v2")  # named "asif_minilm_tower"
    ```
    """
    if isinstance(source, str) and "#" in source:
        preset, attribute = source.rsplit("#", 1)
        cache = {} if _cache is None else _cache
        if preset not in cache:
            cache[preset] = ContrastiveModel.from_preset(preset)
        tower = getattr(cache[preset], attribute, None)
        if not isinstance(tower, keras.layers.Layer):
            raise ValueError(
                f"Preset {preset!r} has no tower named {attribute!r} (from "
                f"source {source!r}); use 'image_tower' or 'text_tower'."
            )
        return tower
    if pretrained.is_registered(source):
        encoder = pretrained.get_encoder(source)
        name = f"asif_{encoder.short_name}_tower"
    elif isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        name = f"asif_{modality}_tower"
    else:
        raise ValueError(
            f"Unknown tower source {source!r}. Pretrained encoders: "
            f"{pretrained.names()}; or a local keras-hub backbone preset "
            "directory; or '<preset name or dir>#image_tower' / '#text_tower'."
        )
    return pretrained.load_tower(source, modality=modality, pooling=pooling, name=name)


def serialize_tower(tower, source):
    """A tower's config entry: `None` when absent or rebuilt from its source."""
    if tower is None or source is not None:
        return None
    return keras.saving.serialize_keras_object(tower)
