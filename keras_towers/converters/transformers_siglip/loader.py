"""`load_transformers_siglip`: a transformers SigLIP directory -> keras_towers
SigLIP, registered in `keras_towers.presets.FORMAT_LOADERS` as `"siglip"`
(and `"siglip2"`, refused with the reason)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from keras_hub.models import SigLIPTextEncoder

from keras_towers import presets
from keras_towers.converters.checks import target_class
from keras_towers.converters.transformers_siglip.backbones import SigLIPImageEncoder
from keras_towers.converters.transformers_siglip.config import convert_config
from keras_towers.converters.transformers_siglip.image_converter import (
    load_image_converter,
)
from keras_towers.converters.transformers_siglip.preprocessor import SigLIPPreprocessor
from keras_towers.converters.transformers_siglip.tokenizer import load_tokenizer
from keras_towers.converters.transformers_siglip.weights import CheckpointReader
from keras_towers.converters.transformers_siglip.weights import convert_weights
from keras_towers.models.clip import SigLIP
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

CONFIG_FILE = "config.json"

# SiglipModel's `logit_scale` / `logit_bias` when a checkpoint is built
# without weights: the SigLIP paper's init (scale 10, bias -10).
_DEFAULT_LOGIT_SCALE = 10.0
_DEFAULT_LOGIT_BIAS = -10.0


def load_preprocessor(path: str | os.PathLike, hf_config: dict) -> SigLIPPreprocessor:
    """Tokenizer + image converter of a transformers SigLIP directory."""
    converted = convert_config(hf_config)
    tokenizer = load_tokenizer(path)
    return SigLIPPreprocessor(
        image_converter=load_image_converter(path, converted["image_size"]),
        tokenizer=tokenizer,
        sequence_length=converted["text_backbone"]["max_sequence_length"],
        # The tokenizer canonicalises (lower-cases) itself, as transformers.
        lowercase=False,
        end_token_id=int(tokenizer.end_token_id),
        pad_token_id=int(tokenizer.pad_token_id),
    )


def _scalar(reader, key: str, default: float) -> float:
    if reader is None or key not in reader:
        return default
    value = float(np.asarray(reader.get(key)).reshape(-1)[0])
    reader.used.discard(key)
    return value


@presets.register_format("siglip")
def load_transformers_siglip(
    path: str | os.PathLike, cls=None, load_weights: bool = True, **kwargs
):
    """Build a keras_towers SigLIP from a transformers SigLIP directory.

    The towers wrap keras-hub's SigLIP encoders, which pool themselves (the
    vision MAP head; the text tower's last position and its linear head):
    `ImageTower(SigLIPImageEncoder, pooling="none", head=None)` and
    `TextTower(SigLIPTextEncoder, pooling="none", head=None)`. The logit
    scale (`exp(logit_scale)`) and bias come from the checkpoint, and the
    scale clamp is raised to keep it reachable.

    Args:
        path: directory with `config.json` (`model_type: siglip`),
            `model.safetensors` (or `pytorch_model.bin`), `spiece.model`,
            `tokenizer_config.json` and `preprocessor_config.json`.
        cls: the class `from_preset` was called on: `SigLIP`, a subclass, or
            a base class (`CLIP`, `ContrastiveModel`: a `SigLIP` is built).
        load_weights: bool. Load the weights, or keep the random init.
        **kwargs: passed to `cls`.

    Example:

    ```python
    model = keras_towers.SigLIP.from_preset("/path/to/siglip-base-patch16-224")
    ```
    """
    path = Path(path)
    cls = target_class(path, cls, SigLIP, SigLIP, "a transformers SigLIP checkpoint")
    hf_config = json.loads((path / CONFIG_FILE).read_text())
    converted = convert_config(hf_config)
    reader = CheckpointReader(path) if load_weights else None
    logit_scale = math.exp(
        _scalar(reader, "logit_scale", math.log(_DEFAULT_LOGIT_SCALE))
    )
    logit_bias = _scalar(reader, "logit_bias", _DEFAULT_LOGIT_BIAS)

    preprocessor = load_preprocessor(path, hf_config)
    image_tower = ImageTower(
        SigLIPImageEncoder(**converted["image_backbone"], name="image_tower_backbone"),
        pooling="none",
        head=None,
        name="image_tower",
    )
    text_tower = TextTower(
        SigLIPTextEncoder(**converted["text_backbone"], name="text_tower_backbone"),
        pooling="none",
        head=None,
        name="text_tower",
    )
    kwargs.setdefault("max_logit_scale", max(100.0, logit_scale))
    kwargs.setdefault("logit_scale_init", logit_scale)
    kwargs.setdefault("logit_bias_init", logit_bias)
    model = cls(image_tower, text_tower, preprocessor, **kwargs)
    if reader is not None:
        convert_weights(model, reader)
    return model


@presets.register_format("siglip2")
def load_transformers_siglip2(path: str | os.PathLike, cls=None, **kwargs):
    """Refuse SigLIP 2 NaFlex checkpoints (`model_type: siglip2`), naming
    the field."""
    convert_config(json.loads((Path(path) / CONFIG_FILE).read_text()))
    raise AssertionError("unreachable: convert_config refuses siglip2")
