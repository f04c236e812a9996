"""`load_transformers_clip`: a transformers CLIP directory -> keras_towers CLIP,
registered in `keras_towers.presets.FORMAT_LOADERS` as `"clip"`."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from keras_towers import presets
from keras_towers.backbones import TextTransformer
from keras_towers.backbones import VisionTransformer
from keras_towers.converters.checks import target_class
from keras_towers.converters.transformers_clip.config import convert_config
from keras_towers.converters.transformers_clip.image_converter import (
    load_image_converter,
)
from keras_towers.converters.transformers_clip.tokenizer import END_TOKEN
from keras_towers.converters.transformers_clip.tokenizer import load_tokenizer
from keras_towers.converters.transformers_clip.weights import CheckpointReader
from keras_towers.converters.transformers_clip.weights import convert_weights
from keras_towers.models.clip import CLIP
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

CONFIG_FILE = "config.json"


def load_preprocessor(
    path: str | os.PathLike, hf_config: dict
) -> ContrastivePreprocessor:
    """Tokenizer + image converter of a transformers CLIP directory."""
    converted = convert_config(hf_config)
    image_size = converted["image_backbone"]["image_shape"][0]
    sequence_length = converted["text_backbone"]["max_sequence_length"]
    tokenizer, pad_token_id = load_tokenizer(path)
    eos = converted["text_tower"]["eos_token_id"]
    if eos is not None and eos != tokenizer.end_token_id:
        warnings.warn(
            f"config.json has eos_token_id={eos} but the tokenizer's end token "
            f"{END_TOKEN!r} has id {tokenizer.end_token_id}: text pooling will "
            "not find it (transformers behaves the same way).",
            stacklevel=2,
        )
    return ContrastivePreprocessor(
        image_converter=load_image_converter(path, image_size),
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        lowercase=True,
        start_token_id=int(tokenizer.start_token_id),
        end_token_id=int(tokenizer.end_token_id),
        pad_token_id=pad_token_id,
    )


@presets.register_format("clip")
def load_transformers_clip(
    path: str | os.PathLike, cls=None, load_weights: bool = True, **kwargs
):
    """Build a keras_towers CLIP from a transformers CLIP checkpoint directory.

    Args:
        path: directory with `config.json` (`model_type: clip`),
            `model.safetensors`, tokenizer files and
            `preprocessor_config.json`.
        cls: the class `from_preset` was called on: `keras_towers.CLIP`,
            a subclass (built instead), or a base class such as
            `keras_towers.ContrastiveModel` (a `CLIP` is built). `None`
            means `CLIP`.
        load_weights: bool. Load the weights, or keep the random init (the
            logit scale then starts at the config's `logit_scale_init_value`).
        **kwargs: passed to `cls` (e.g. `learn_logit_scale=False`).

    Example:

    ```python
    model = keras_towers.CLIP.from_preset("/path/to/clip-vit-base-patch32")
    ```
    """
    path = Path(path)
    cls = target_class(path, cls, CLIP, CLIP, "a transformers CLIP checkpoint")
    hf_config = json.loads((path / CONFIG_FILE).read_text())
    converted = convert_config(hf_config)
    reader = CheckpointReader(path) if load_weights else None
    logit_scale = converted["logit_scale_init"]
    if reader is not None and "logit_scale" in reader:
        logit_scale = math.exp(float(np.asarray(reader.get("logit_scale"))))
        reader.used.clear()

    preprocessor = load_preprocessor(path, hf_config)
    image_tower = ImageTower(
        VisionTransformer(**converted["image_backbone"], name="image_tower_backbone"),
        name="image_tower",
        **converted["image_tower"],
    )
    text_tower = TextTower(
        TextTransformer(**converted["text_backbone"], name="text_tower_backbone"),
        name="text_tower",
        **converted["text_tower"],
    )
    # Keep a pretrained scale above CLIP's default clamp of 100 reachable.
    kwargs.setdefault("max_logit_scale", max(100.0, logit_scale))
    kwargs.setdefault("logit_scale_init", logit_scale)
    model = cls(image_tower, text_tower, preprocessor, **kwargs)
    if reader is not None:
        convert_weights(model, reader)
    return model
