"""SigLIP text packing: tokens, then the end token, padded; no start token."""

from __future__ import annotations

import keras
from keras_hub.layers import StartEndPacker

from keras_towers.preprocessing import ContrastivePreprocessor


@keras.saving.register_keras_serializable(package="keras_towers")
class SigLIPPreprocessor(ContrastivePreprocessor):
    """`ContrastivePreprocessor` packing texts like transformers' SigLIP.

    `SiglipTokenizer(..., padding="max_length", truncation=True)` gives the
    text's ids cut to `sequence_length - 1`, the end token, then pad ids up
    to `sequence_length`: no start token. SigLIP's text tower reads the last
    position, so texts are always padded to the full length. Other behaviour
    (images, framing, config) is `ContrastivePreprocessor`'s;
    `start_token_id` is ignored.

    Example:

    ```python
    preprocessor = SigLIPPreprocessor(
        image_converter=converter, tokenizer=tokenizer, sequence_length=64,
        lowercase=False,
    )
    ```
    """

    def build(self, input_shape=None):
        if self.tokenizer is not None:
            end = self._token_id("end_token_id")
            pad = self._token_id("pad_token_id")
            if end is None or pad is None:
                raise ValueError(
                    f"The tokenizer {type(self.tokenizer).__name__} has no end "
                    "or pad token id; pass them to SigLIPPreprocessor."
                )
            self.packer = StartEndPacker(
                start_value=None,
                end_value=end,
                pad_value=pad,
                sequence_length=self.sequence_length,
                return_padding_mask=True,
            )
        self.built = True

    @property
    def text_capacity(self) -> int:
        """Text tokens a packed sequence holds: `sequence_length` less the
        end token."""
        return self.sequence_length - 1
