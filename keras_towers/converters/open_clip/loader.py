"""`load_open_clip`: an open_clip directory -> keras_towers CLIP (or SigLIP),
registered in `keras_towers.presets.FORMAT_LOADERS` for directories holding
`open_clip_config.json`."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

from keras_towers import presets
from keras_towers.backbones import TextTransformer
from keras_towers.backbones import VisionTransformer
from keras_towers.converters.checks import target_class
from keras_towers.converters.open_clip.config import convert_config
from keras_towers.converters.open_clip.image_converter import load_image_converter
from keras_towers.converters.open_clip.tokenizer import load_tokenizer
from keras_towers.converters.open_clip.weights import convert_weights
from keras_towers.converters.open_clip.weights import open_checkpoint
from keras_towers.models.clip import CLIP
from keras_towers.models.clip import SigLIP
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

CONFIG_FILE = "open_clip_config.json"


def read_config(path: str | os.PathLike) -> dict:
    """`open_clip_config.json` of a directory, checked to hold `model_cfg`."""
    config_path = Path(path) / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}.") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ValueError(
            f"{config_path} has no `model_cfg` object; open_clip writes "
            '`{"model_cfg": {...}, "preprocess_cfg": {...}}`.'
        )
    return config


def load_preprocessor(path: str | os.PathLike, config: dict) -> ContrastivePreprocessor:
    """Tokenizer + image converter of an open_clip directory."""
    converted = convert_config(config["model_cfg"])
    image_size = converted["image_backbone"]["image_shape"][0]
    sequence_length = converted["text_backbone"]["max_sequence_length"]
    tokenizer, pad_token_id = load_tokenizer(path, sequence_length)
    if pad_token_id != converted["pad_id"]:
        raise ValueError(
            f"open_clip text_cfg.pad_id={converted['pad_id']} but the tokenizer "
            f"of {str(path)!r} pads with {pad_token_id}."
        )
    return ContrastivePreprocessor(
        image_converter=load_image_converter(
            config.get("preprocess_cfg") or {}, image_size
        ),
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        # The tokenizer lower-cases after open_clip's cleaning (ftfy, HTML
        # unescaping), which needs the original case ("CAFÃ‰", "&DownArrow;").
        lowercase=False,
        start_token_id=int(tokenizer.start_token_id),
        end_token_id=int(tokenizer.end_token_id),
        pad_token_id=pad_token_id,
    )


@presets.register_format(marker_file=CONFIG_FILE, name="open_clip")
def load_open_clip(
    path: str | os.PathLike, cls=None, load_weights: bool = True, **kwargs
):
    """Build a keras_towers CLIP from an open_clip checkpoint directory.

    The directory is what open_clip writes for model hubs:
    `open_clip_config.json` (`model_cfg` + `preprocess_cfg`) and
    `open_clip_model.safetensors` (or `open_clip_pytorch_model.bin`, read
    with `torch.load(weights_only=True)`); the tokenizer is open_clip's
    default CLIP BPE (`vocab.json` + `merges.txt` in the directory when
    present, else the copy shipped with keras_towers).

    Args:
        path: the directory.
        cls: the class `from_preset` was called on. A checkpoint trained with
            a logit bias (`init_logit_bias`, SigLIP-style) becomes a
            `SigLIP` when `cls` is `CLIP` or a base class; otherwise `cls`
            (a subclass of `CLIP`) is built.
        load_weights: bool. Load the weights, or keep the random init.
        **kwargs: passed to the model class (e.g. `learn_logit_scale=False`).

    Example:

    ```python
    model = keras_towers.CLIP.from_preset("/path/to/open_clip_vit_b32")
    model.encode_texts(["a photo of a cat"])
    ```
    """
    path = Path(path)
    config = read_config(path)
    converted = convert_config(config["model_cfg"])
    reader = open_checkpoint(path) if load_weights else None
    has_bias = converted["logit_bias_init"] is not None
    if reader is not None:
        has_bias = "logit_bias" in reader
    # A checkpoint trained with a logit bias becomes a SigLIP.
    default = SigLIP if has_bias else CLIP
    cls = target_class(path, cls, default, CLIP, "an open_clip checkpoint")
    if converted["patch_dropout"]:
        warnings.warn(
            f"open_clip vision_cfg.patch_dropout={converted['patch_dropout']} is "
            "a training-time option keras_towers does not apply: inference is "
            "unchanged, fine-tuning runs without patch dropout.",
            stacklevel=2,
        )
    logit_scale = converted["logit_scale_init"]
    if reader is not None:
        logit_scale = math.exp(float(reader.get("logit_scale").reshape(())))
        reader.used.clear()
    preprocessor = load_preprocessor(path, config)
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
    if has_bias and converted["logit_bias_init"] is not None:
        kwargs.setdefault("logit_bias_init", converted["logit_bias_init"])
    model = cls(image_tower, text_tower, preprocessor, **kwargs)
    if reader is not None:
        convert_weights(model, reader, converted)
    return model
