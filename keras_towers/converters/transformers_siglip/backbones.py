"""keras-hub's SigLIP vision encoder with the config's post-LayerNorm epsilon."""

from __future__ import annotations

import keras
from keras_hub.models import SigLIPVisionEncoder


@keras.saving.register_keras_serializable(package="keras_towers")
class SigLIPImageEncoder(SigLIPVisionEncoder):
    """`keras_hub.models.SigLIPVisionEncoder` whose final LayerNorm uses
    `layer_norm_epsilon` like every other norm (transformers'
    `post_layernorm`); keras-hub's always uses 1e-6. Same weights and
    config otherwise.

    Example:

    ```python
    encoder = SigLIPImageEncoder(
        patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
        intermediate_dim=64, layer_norm_epsilon=1e-5, image_shape=(32, 32, 3),
    )
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # LayerNormalization reads `epsilon` when called, and this runs again
        # on `from_config`, so the value is kept across saving.
        self.post_layer_norm.epsilon = float(self.layer_norm_epsilon)
