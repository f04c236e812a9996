"""Preprocessing: raw images and strings to tower inputs, one path for all.

`ContrastivePreprocessor` is a keras-hub `Preprocessor`: it runs inside
`tf.data` on every backend (and eagerly, for `encode_images` /
`encode_texts`), reusing a keras-hub image converter and tokenizer. The same
layer serves training pipelines and inference, so the two cannot drift.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras_hub.layers import ImageConverter
from keras_hub.layers import StartEndPacker
from keras_hub.models import Preprocessor
from keras_hub.src.utils.tensor_utils import preprocessing_function
from keras_hub.tokenizers import ByteTokenizer as _KerasHubByteTokenizer

#: Keys of a raw example.
IMAGE_KEY = "images"
TEXT_KEY = "texts"
#: Output of the optional second image converter (e.g. a 3T third tower's input).
THIRD_IMAGE_KEY = "third_images"
#: Precomputed third-tower features; when present, `third_images` is skipped.
THIRD_FEATURES_KEY = "third_features"


@keras.saving.register_keras_serializable(package="keras_towers")
class ByteTokenizer(_KerasHubByteTokenizer):
    """UTF-8 byte tokenizer with start, end and padding tokens.

    Needs no vocabulary file, so from-scratch models work fully offline.
    Bytes map to ids 0-255 (byte 0 never occurs in text and doubles as the
    padding id); start is 256 and end is 257, so the end token is the largest
    id, as CLIP's `argmax` pooling requires.

    Example:

    ```python
    tokenizer = keras_towers.ByteTokenizer()
    tokenizer("a cat")  # [97, 32, 99, 97, 116]
    ```
    """

    pad_token_id = 0
    start_token_id = 256
    end_token_id = 257

    def vocabulary_size(self):
        return 258


@keras.saving.register_keras_serializable(package="keras_towers")
class ContrastivePreprocessor(Preprocessor):
    """Turns raw `{"images", "texts"}` examples into tower inputs.

    Images are uint8 or float arrays with values in `[0, 255]`, `(H, W, C)` or
    batched, with 1 (grayscale), 3 (RGB) or 4 (RGBA, composited onto white) channels.
    Texts are strings. The output has `"images"` (resized, scaled floats),
    `"token_ids"` and `"padding_mask"`; any other keys pass through. With a
    `third_image_converter`, the same images are also converted a second way
    into `"third_images"` (the input of a frozen third tower with its own
    size and normalisation, as in `keras_towers.ThreeTowers`), unless the
    example already carries precomputed `"third_features"`.

    Args:
        image_converter: a `keras_hub.layers.ImageConverter` (resizing and
            scaling), or `None` for text-only use.
        tokenizer: a keras-hub tokenizer. Start, end and padding ids are taken
            from its `start_token_id`, `end_token_id` and `pad_token_id`
            unless given here.
        sequence_length: int. Length of the packed token sequences.
        lowercase: bool. Lower-case texts before tokenising.
        start_token_id, end_token_id, pad_token_id: optional ints overriding
            the tokenizer's.
        third_image_converter: an optional second
            `keras_hub.layers.ImageConverter` producing `"third_images"`.

    Example:

    ```python
    preprocessor = keras_towers.ContrastivePreprocessor.default(image_size=32)
    batch = preprocessor({
        "images": np.zeros((2, 48, 64, 3), "uint8"),
        "texts": ["a red square", "a blue circle"],
    })
    ```
    """

    def __init__(
        self,
        image_converter=None,
        tokenizer=None,
        sequence_length: int = 32,
        lowercase: bool = True,
        start_token_id: int | None = None,
        end_token_id: int | None = None,
        pad_token_id: int | None = None,
        third_image_converter=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_converter = image_converter
        self.third_image_converter = third_image_converter
        self.tokenizer = tokenizer
        self.sequence_length = int(sequence_length)
        self.lowercase = lowercase
        self.start_token_id = start_token_id
        self.end_token_id = end_token_id
        self.pad_token_id = pad_token_id
        self.packer = None

    def _token_id(self, name):
        value = getattr(self, name)
        if value is None:
            value = getattr(self.tokenizer, name, None)
        return value

    def build(self, input_shape=None):
        if self.tokenizer is not None:
            ids = {
                name: self._token_id(name)
                for name in ("start_token_id", "end_token_id", "pad_token_id")
            }
            missing = [name for name, value in ids.items() if value is None]
            if missing:
                raise ValueError(
                    f"The tokenizer {type(self.tokenizer).__name__} has no "
                    f"{missing}; pass them to ContrastivePreprocessor."
                )
            self.packer = StartEndPacker(
                start_value=ids["start_token_id"],
                end_value=ids["end_token_id"],
                pad_value=ids["pad_token_id"],
                sequence_length=self.sequence_length,
                return_padding_mask=True,
            )
        self.built = True

    # The `_tf` helpers run inside `preprocessing_function`: TensorFlow in,
    # TensorFlow out; the decorator converts at the boundary.
    def _rgb_tf(self, images):
        """Any accepted image layout to float32 RGB in [0, 255]."""
        images = tf.convert_to_tensor(images)
        if images.shape.rank not in (3, 4):
            raise ValueError(
                "`images` must be one image (H, W, C) or a batch "
                f"(B, H, W, C). Received shape {tuple(images.shape)}."
            )
        channels = images.shape[-1]
        if channels == 1:
            images = tf.repeat(images, 3, axis=-1)
        elif channels == 4:
            # Composite onto white (as transformers does): transparent pixels
            # of icons and stamps often store black RGB.
            images = tf.cast(images, "float32")
            alpha = images[..., 3:] / 255.0
            images = images[..., :3] * alpha + 255.0 * (1.0 - alpha)
        elif channels != 3:
            raise ValueError(
                "`images` must have 1, 3 or 4 channels (last axis). "
                f"Received shape {tuple(images.shape)}."
            )
        return tf.cast(images, "float32")

    def _texts_tf(self, texts):
        if self.tokenizer is None:
            raise ValueError("This preprocessor has no tokenizer.")
        if not self.built:
            self.build()
        texts = tf.convert_to_tensor(texts)
        if texts.dtype != tf.string:
            raise TypeError(
                f"`texts` must be strings. Received dtype {texts.dtype.name}."
            )
        if self.lowercase:
            texts = tf.strings.lower(texts, encoding="utf-8")
        token_ids, padding_mask = self.packer(self.tokenizer(texts))
        return token_ids, padding_mask

    @preprocessing_function
    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict):
            raise ValueError(
                "ContrastivePreprocessor expects a dict with 'images' and/or "
                f"'texts'. Received: {type(x).__name__}."
            )
        outputs = {k: v for k, v in x.items() if k not in (IMAGE_KEY, TEXT_KEY)}
        if IMAGE_KEY in x:
            rgb = self._rgb_tf(x[IMAGE_KEY])
            image_converter = self.image_converter
            outputs[IMAGE_KEY] = (
                rgb if image_converter is None else image_converter(rgb)
            )
            third = self.third_image_converter
            if third is not None and THIRD_FEATURES_KEY not in x:
                outputs[THIRD_IMAGE_KEY] = third(rgb)
        if TEXT_KEY in x:
            token_ids, padding_mask = self._texts_tf(x[TEXT_KEY])
            outputs["token_ids"] = token_ids
            outputs["padding_mask"] = padding_mask
        return keras.utils.pack_x_y_sample_weight(outputs, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "lowercase": self.lowercase,
                "start_token_id": self.start_token_id,
                "end_token_id": self.end_token_id,
                "pad_token_id": self.pad_token_id,
            }
        )
        if self.third_image_converter is not None:
            config["third_image_converter"] = keras.layers.serialize(
                self.third_image_converter
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("third_image_converter"), dict):
            config["third_image_converter"] = keras.layers.deserialize(
                config["third_image_converter"]
            )
        return super().from_config(config)

    @classmethod
    def default(
        cls,
        image_size: int = 64,
        sequence_length: int = 32,
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
    ) -> ContrastivePreprocessor:
        """Byte tokenizer + center-crop/bicubic resize with CLIP's mean/std."""
        scale = [1.0 / (255.0 * s) for s in std]
        offset = [-m / s for m, s in zip(mean, std, strict=True)]
        converter = ImageConverter(
            image_size=(image_size, image_size),
            scale=scale,
            offset=offset,
            crop_to_aspect_ratio=True,
            interpolation="bicubic",
            antialias=True,
        )
        return cls(
            image_converter=converter,
            tokenizer=ByteTokenizer(),
            sequence_length=sequence_length,
        )
