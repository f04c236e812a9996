"""transformers `CLIPConfig` -> keras_towers constructor kwargs."""

from __future__ import annotations

import math

from keras_towers.converters.checks import square_size

# transformers `hidden_act` -> Keras activation (keras-hub's CLIP layers
# accept "quick_gelu"; Keras' "gelu" is the exact erf form, like torch's).
ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

# transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults:
# `save_pretrained` leaves out values equal to them.
_TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}
_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_CLIP_DEFAULTS = {"projection_dim": 512, "logit_scale_init_value": 2.6592}


def _sub_config(hf_config: dict, name: str, defaults: dict) -> dict:
    # Very old configs carry `<name>_dict`; transformers lets it override.
    return {
        **defaults,
        **(hf_config.get(name) or {}),
        **(hf_config.get(f"{name}_dict") or {}),
    }


def _activation(name: str, tower: str) -> str:
    if name not in ACTIVATIONS:
        raise NotImplementedError(
            f"The {tower} config has hidden_act={name!r}, which keras_towers "
            f"does not map yet. Supported: {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def convert_config(hf_config: dict) -> dict:
    """transformers `CLIPConfig` (a dict) -> keras_towers constructor kwargs.

    Returns a dict with keys `"image_backbone"` and `"text_backbone"`
    (`VisionTransformer` / `TextTransformer` kwargs), `"image_tower"` and
    `"text_tower"` (`ImageTower` / `TextTower` kwargs without the backbone)
    and `"logit_scale_init"` (the scale `exp(logit_scale_init_value)`).

    Example:

    ```python
    kwargs = keras_towers.converters.transformers_clip.convert_config(
        json.load(open("clip/config.json"))
    )
    ```
    """
    if hf_config.get("model_type") != "clip":
        raise ValueError(
            "Expected a transformers CLIP config (`model_type: clip`). "
            f"Received model_type={hf_config.get('model_type')!r}."
        )
    text = _sub_config(hf_config, "text_config", _TEXT_DEFAULTS)
    vision = _sub_config(hf_config, "vision_config", _VISION_DEFAULTS)
    top = {**_CLIP_DEFAULTS, **hf_config}
    if int(vision["num_channels"]) != 3:
        raise NotImplementedError(
            f"Only RGB vision towers are supported. Received "
            f"num_channels={vision['num_channels']}."
        )
    image_size = square_size(vision["image_size"], "vision_config.image_size")
    patch_size = square_size(vision["patch_size"], "vision_config.patch_size")
    eos_token_id = text["eos_token_id"]
    if isinstance(eos_token_id, (list, tuple)):
        raise NotImplementedError(
            f"A list of eos_token_id ({eos_token_id}) is not supported."
        )
    # transformers' CLIPTextTransformer: configs from before PR #24773 carry
    # eos_token_id=2 and pool at argmax(input_ids) (the end token has the
    # largest id); newer ones pool at the first eos_token_id.
    if eos_token_id == 2:
        text_pooling = {"pooling": "argmax", "eos_token_id": None}
    else:
        text_pooling = {"pooling": "eos", "eos_token_id": int(eos_token_id)}
    projection_dim = int(top["projection_dim"])
    return {
        "image_backbone": {
            "patch_size": patch_size,
            "hidden_dim": int(vision["hidden_size"]),
            "num_layers": int(vision["num_hidden_layers"]),
            "num_heads": int(vision["num_attention_heads"]),
            "intermediate_dim": int(vision["intermediate_size"]),
            "intermediate_activation": _activation(vision["hidden_act"], "vision"),
            "image_shape": (image_size, image_size, 3),
            "layer_norm_epsilon": float(vision["layer_norm_eps"]),
        },
        "text_backbone": {
            "vocabulary_size": int(text["vocab_size"]),
            "embedding_dim": int(text["hidden_size"]),
            "hidden_dim": int(text["hidden_size"]),
            "num_layers": int(text["num_hidden_layers"]),
            "num_heads": int(text["num_attention_heads"]),
            "intermediate_dim": int(text["intermediate_size"]),
            "intermediate_activation": _activation(text["hidden_act"], "text"),
            "max_sequence_length": int(text["max_position_embeddings"]),
            "layer_norm_epsilon": float(text["layer_norm_eps"]),
        },
        "image_tower": {
            "pooling": "cls",
            "projection_dim": projection_dim,
            "head": "linear",
            "head_use_bias": False,
        },
        "text_tower": {
            **text_pooling,
            "projection_dim": projection_dim,
            "head": "linear",
            "head_use_bias": False,
        },
        "logit_scale_init": math.exp(float(top["logit_scale_init_value"])),
    }
