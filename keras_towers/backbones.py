"""Transformer backbones for from-scratch towers.

Thin subclasses of keras-hub's CLIP encoders that fix two things measured in
keras-hub 0.32:

- a freshly built `CLIPVisionEncoder` has its `position_ids` stuck at zeros
  (only converted presets carry `arange`), so every patch got the same
  position embedding;
- layer-norm epsilons are hard-coded (1e-5, and 1e-6 for the text encoder's
  final norm) while checkpoints in the wild use their own; small-variance
  activations make this visible, so the epsilon is a config value here.

Both keep keras-hub's layer and weight names, so keras-hub CLIP weights load
into them unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
from keras_hub.models import CLIPTextEncoder
from keras_hub.models import CLIPVisionEncoder


def _set_layer_norm_epsilon(model: keras.Model, epsilon: float) -> None:
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.epsilon = float(epsilon)


@keras.saving.register_keras_serializable(package="keras_towers")
class VisionTransformer(CLIPVisionEncoder):
    """A CLIP-style ViT image backbone (pre-norm, class token).

    Args:
        patch_size: int. Size of the square patches.
        hidden_dim: int. Transformer width.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Width of the MLP in each block.
        intermediate_activation: str. `"quick_gelu"` (CLIP) or any Keras
            activation name.
        image_shape: tuple `(size, size, 3)`.
        layer_norm_epsilon: float. Epsilon of every layer norm.
        name: str. Name of the backbone. Give two backbones in one model
            distinct names: keras-hub derives variable paths from it.

    Example:

    ```python
    backbone = keras_towers.backbones.VisionTransformer(
        patch_size=8, hidden_dim=64, num_layers=2, num_heads=4,
        intermediate_dim=128, image_shape=(32, 32, 3), name="image_encoder",
    )
    ```
    """

    def __init__(self, *args, layer_norm_epsilon: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        _set_layer_norm_epsilon(self, self.layer_norm_epsilon)
        positions = self.embedding.position_ids
        positions.assign(
            np.arange(positions.shape[-1], dtype="int64").reshape(positions.shape)
        )

    def get_config(self):
        config = super().get_config()
        config["layer_norm_epsilon"] = self.layer_norm_epsilon
        return config


@keras.saving.register_keras_serializable(package="keras_towers")
class TextTransformer(CLIPTextEncoder):
    """A CLIP-style causal text transformer backbone.

    Args:
        vocabulary_size: int. Size of the token vocabulary.
        embedding_dim: int. Token embedding width (equal to `hidden_dim`).
        hidden_dim: int. Transformer width.
        num_layers: int. Number of transformer blocks.
        num_heads: int. Number of attention heads.
        intermediate_dim: int. Width of the MLP in each block.
        intermediate_activation: str. `"quick_gelu"` or a Keras activation.
        max_sequence_length: int. Context length.
        layer_norm_epsilon: float. Epsilon of every layer norm.
        name: str. Name of the backbone (keep it distinct from the image one).

    Example:

    ```python
    backbone = keras_towers.backbones.TextTransformer(
        vocabulary_size=258, embedding_dim=64, hidden_dim=64, num_layers=2,
        num_heads=4, intermediate_dim=128, max_sequence_length=32,
        name="text_encoder",
    )
    ```
    """

    def __init__(self, *args, layer_norm_epsilon: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        _set_layer_norm_epsilon(self, self.layer_norm_epsilon)

    def get_config(self):
        config = super().get_config()
        config["layer_norm_epsilon"] = self.layer_norm_epsilon
        return config
