"""transformers `SiglipConfig` -> keras_towers constructor kwargs."""

from __future__ import annotations

from keras_towers.converters.checks import square_size

# transformers `hidden_act` -> the activation keras-hub's SigLIP layers take
# ("gelu_approximate" is the tanh form, torch's gelu(approximate="tanh")).
ACTIVATIONS = {
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_new": "gelu_approximate",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

# SiglipTextConfig / SiglipVisionConfig defaults: `save_pretrained` leaves
# out values equal to them.
_TEXT_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 64,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "projection_size": None,
}
_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": True,
}


def _activation(name: str, field: str) -> str:
    if name not in ACTIVATIONS:
        raise NotImplementedError(
            f"{field}={name!r} is not supported by the SigLIP converter. "
            f"Supported: {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def convert_config(hf_config: dict) -> dict:
    """transformers `SiglipConfig` (a dict) -> keras_towers constructor kwargs.

    Returns `"image_backbone"` (`SigLIPImageEncoder` kwargs),
    `"text_backbone"` (`keras_hub.models.SigLIPTextEncoder` kwargs) and
    `"image_size"`. Raises `NotImplementedError` naming the field for
    variants the converter does not build (NaFlex SigLIP 2, no vision head,
    non-square images, other activations).

    Example:

    ```python
    kwargs = convert_config(json.load(open("siglip/config.json")))
    ```
    """
    model_type = hf_config.get("model_type")
    if model_type == "siglip2":
        raise NotImplementedError(
            "model_type='siglip2' (SigLIP 2 NaFlex: variable resolution and "
            "aspect ratio, patch inputs with `spatial_shapes`) is not "
            "supported; fixed-resolution SigLIP 2 checkpoints "
            "(model_type='siglip') are."
        )
    if model_type != "siglip":
        raise ValueError(
            "Expected a transformers SigLIP config (`model_type: siglip`). "
            f"Received model_type={model_type!r}."
        )
    text = {**_TEXT_DEFAULTS, **(hf_config.get("text_config") or {})}
    vision = {**_VISION_DEFAULTS, **(hf_config.get("vision_config") or {})}
    if not vision["vision_use_head"]:
        raise NotImplementedError(
            "vision_config.vision_use_head=False (no attention-pooling head: "
            "SiglipModel has no image features) is not supported."
        )
    if int(vision["num_channels"]) != 3:
        raise NotImplementedError(
            f"Only RGB vision towers are supported. Received "
            f"vision_config.num_channels={vision['num_channels']}."
        )
    image_size = square_size(vision["image_size"], "vision_config.image_size")
    patch_size = square_size(vision["patch_size"], "vision_config.patch_size")
    if image_size % patch_size:
        raise NotImplementedError(
            f"vision_config.image_size={image_size} is not a multiple of "
            f"vision_config.patch_size={patch_size}."
        )
    hidden = int(text["hidden_size"])
    projection = text["projection_size"]
    return {
        "image_backbone": {
            "patch_size": patch_size,
            "hidden_dim": int(vision["hidden_size"]),
            "num_layers": int(vision["num_hidden_layers"]),
            "num_heads": int(vision["num_attention_heads"]),
            "intermediate_dim": int(vision["intermediate_size"]),
            "intermediate_activation": _activation(
                vision["hidden_act"], "vision_config.hidden_act"
            ),
            "layer_norm_epsilon": float(vision["layer_norm_eps"]),
            "image_shape": (image_size, image_size, 3),
        },
        "text_backbone": {
            "vocabulary_size": int(text["vocab_size"]),
            "embedding_dim": hidden,
            "hidden_dim": hidden,
            "num_layers": int(text["num_hidden_layers"]),
            "num_heads": int(text["num_attention_heads"]),
            "intermediate_dim": int(text["intermediate_size"]),
            "intermediate_activation": _activation(
                text["hidden_act"], "text_config.hidden_act"
            ),
            "layer_norm_epsilon": float(text["layer_norm_eps"]),
            "max_sequence_length": int(text["max_position_embeddings"]),
            "projection_dim": int(projection or hidden),
        },
        "image_size": image_size,
    }
