"""Preprocessing: raw images and strings to tower inputs, one path for all.

`ContrastivePreprocessor` is a keras-hub `Preprocessor`: it runs inside
`tf.data` on every backend (and eagerly, for `encode_images` /
`encode_texts`), reusing a keras-hub image converter and tokenizer. The same
layer serves training pipelines and inference, so the two cannot drift.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
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


class TruncationWarning(UserWarning):
    """Texts were longer than a model's text context and were cut to fit.

    `encode_texts` and the zero-shot classifier emit one per call, saying how
    many texts were cut and showing one. Silence it with
    `warnings.simplefilter("ignore", keras_towers.TruncationWarning)`.
    """


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


# === Framing: how an image of any shape becomes the size a tower takes ===

#: Framing rules. `"pad"` scales the longest side to the target and centres
#: the image on white; `"crop"` scales the shortest side to the target and
#: keeps the centre; `"squash"` scales each side to the target (the aspect
#: ratio is not kept).
FRAMINGS = ("pad", "crop", "squash")
#: The framing of a preprocessor that names none, as in configs saved before
#: the rule was recorded: keras_towers' training pipeline has always padded.
DEFAULT_FRAMING = "pad"
#: Value of padded pixels: white, as RGBA transparency is composited.
PAD_VALUE = 255.0


def check_framing(framing, name: str = "framing") -> str:
    """`framing` if it is one of `FRAMINGS`, else a `ValueError`."""
    if not isinstance(framing, str) or framing not in FRAMINGS:
        raise ValueError(
            f"`{name}` must be one of {FRAMINGS}. Received: {framing!r}. "
            "'pad' keeps the whole image on a white square, 'crop' keeps its "
            "centre, 'squash' distorts it."
        )
    return framing


def _target_size(size) -> tuple[int, int]:
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(pair) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair
    ):
        raise ValueError(
            "`size` must be a positive int or a (height, width) pair of them. "
            f"Received: {size!r}."
        )
    return pair


def _resample(images, height, width):
    resized = tf.image.resize(
        images, [height, width], method="bilinear", antialias=True
    )
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def converter_framing(converter) -> str | None:
    """The framing an image converter applies by itself, if any: its
    `framing` attribute (keras_towers' converters), `"crop"` for a keras-hub
    `ImageConverter(crop_to_aspect_ratio=True)`, else `None`."""
    framing = getattr(converter, "framing", None)
    if framing is None and getattr(converter, "crop_to_aspect_ratio", False):
        framing = "crop"
    return framing


def frame_images(images, size, framing: str = DEFAULT_FRAMING):
    """Frame images to `size` by a framing rule, in TensorFlow.

    The one framing path of keras_towers: training pipelines store their
    images with it (`keras_towers.datasets.resize_image`) and
    `ContrastivePreprocessor` applies it to raw images before its image
    converter, so a model sees the same pixels in training and at inference.
    Resampling is bilinear with antialiasing (a triangle filter when
    shrinking), rounded to integers as uint8 storage does. A uint8 image
    already at `size` comes back unchanged, whatever the rule.

    Args:
        images: one image `(H, W, C)` or a batch `(B, H, W, C)` with values
            in `[0, 255]`, any real dtype.
        size: int or `(height, width)`. The output size.
        framing: `"pad"`, `"crop"` or `"squash"` (see `FRAMINGS`).

    Returns:
        float32 tensor `(height, width, C)` or `(B, height, width, C)` of
        integer values in `[0, 255]`.

    Example:

    ```python
    square = keras_towers.preprocessing.frame_images(
        np.zeros((32, 96, 3), "uint8"), 64, framing="pad"
    )  # (64, 64, 3): the image in rows 21-42, white above and below
    ```
    """
    check_framing(framing)
    target_h, target_w = _target_size(size)
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    rank = images.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            "`images` must be one image (H, W, C) or a batch (B, H, W, C). "
            f"Received shape {tuple(images.shape)}."
        )
    shape = tf.shape(images)
    height = tf.cast(shape[-3], tf.float32)
    width = tf.cast(shape[-2], tf.float32)
    if framing == "squash":
        out = _resample(images, target_h, target_w)
    elif framing == "crop":
        scale = tf.maximum(target_h / height, target_w / width)
        h = tf.maximum(target_h, tf.cast(tf.round(height * scale), tf.int32))
        w = tf.maximum(target_w, tf.cast(tf.round(width * scale), tf.int32))
        out = _resample(images, h, w)
        top, left = (h - target_h) // 2, (w - target_w) // 2
        out = out[..., top : top + target_h, left : left + target_w, :]
    else:
        scale = tf.minimum(target_h / height, target_w / width)
        h = tf.clip_by_value(tf.cast(tf.round(height * scale), tf.int32), 1, target_h)
        w = tf.clip_by_value(tf.cast(tf.round(width * scale), tf.int32), 1, target_w)
        out = _resample(images, h, w)
        top, left = (target_h - h) // 2, (target_w - w) // 2
        paddings = [[0, 0]] * (rank - 3) + [
            [top, target_h - h - top],
            [left, target_w - w - left],
            [0, 0],
        ]
        out = tf.pad(out, paddings, constant_values=PAD_VALUE)
    static = [None] * (rank - 3) + [target_h, target_w, images.shape[-1]]
    return tf.ensure_shape(out, static)


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

    Before each converter, images are framed to its size by the model's one
    `framing` rule with `frame_images`, the function training pipelines
    store their images with, so a non-square image gives the same pixels in
    training and at inference. The rule is stored in the config, so it
    travels with presets. A converter that frames images itself by the same
    rule (e.g. transformers' CLIP, which crops; its `framing` attribute says
    so) is left to do it.

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
        framing: `"pad"`, `"crop"` or `"squash"` (see `FRAMINGS`): how
            images of any shape become the converters' size, in training
            (pass `preprocessor.framing` to `keras_towers.datasets.batch_pairs`
            or `keras_towers.training.PairArrays.from_dataset`) and at
            inference. Default: the image converter's own `framing` if it
            has one, else `"pad"` (what keras_towers training has always
            done, so configs saved without the key keep their meaning).

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
        framing: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_converter = image_converter
        self.third_image_converter = third_image_converter
        if framing is None:
            framing = getattr(image_converter, "framing", None) or DEFAULT_FRAMING
        self.framing = check_framing(framing)
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

    @property
    def framing(self) -> str:
        """The framing rule (`"pad"`, `"crop"` or `"squash"`), checked when set."""
        return self._framing

    @framing.setter
    def framing(self, value):
        self._framing = check_framing(value)

    def _convert_tf(self, rgb, converter):
        """Frame `rgb` to the converter's size by the model's rule, then
        convert; a converter that frames by the same rule itself does it
        (same geometry, its own resampling filter: keras-hub's bicubic crop,
        where training pipelines' `frame_images` resample bilinearly)."""
        size = getattr(converter, "image_size", None)
        if size is not None and converter_framing(converter) != self.framing:
            rgb = frame_images(rgb, size, self.framing)
        return converter(rgb)

    def _tokens_tf(self, texts):
        """Strings to unpacked token ids (ragged), lower-cased if asked."""
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
        return self.tokenizer(texts)

    def _texts_tf(self, texts):
        token_ids, padding_mask = self.packer(self._tokens_tf(texts))
        return token_ids, padding_mask

    # === Truncation ===

    @property
    def text_capacity(self) -> int:
        """Text tokens a packed sequence holds: `sequence_length` less the
        start and end tokens. Longer texts are cut to their first
        `text_capacity` tokens."""
        return self.sequence_length - 2

    def text_token_counts(self, texts) -> np.ndarray:
        """Tokens of each text before packing (start and end excluded).

        Texts with more than `text_capacity` tokens are cut when packed.

        Args:
            texts: a string or a list of strings.

        Returns:
            int64 NumPy array `(N,)`.

        Example:

        ```python
        preprocessor = keras_towers.ContrastivePreprocessor.default(
            sequence_length=16
        )
        preprocessor.text_token_counts(["a cat", "a bad photo of a red circle."])
        # [5, 28]; preprocessor.text_capacity is 14
        ```
        """
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        if not texts:
            return np.zeros((0,), "int64")
        tokens = self._tokens_tf(texts)
        # Eager keras-hub tokenizers return ragged results as lists of lists
        # outside TensorFlow; inside it, as a `tf.RaggedTensor`.
        if isinstance(tokens, tf.RaggedTensor):
            return tokens.row_lengths().numpy().astype("int64")
        if isinstance(tokens, (list, tuple)):
            return np.array([len(row) for row in tokens], "int64")
        tokens = np.asarray(keras.ops.convert_to_numpy(tokens))
        return np.full((len(texts),), tokens.shape[-1], "int64")

    def _kept_text(self, text) -> str:
        """What is left of `text` once cut to `text_capacity` tokens."""
        tokens = self._tokens_tf([text])[0][: self.text_capacity]
        kept = self.tokenizer.detokenize(tf.convert_to_tensor(tokens))
        if hasattr(kept, "numpy"):
            kept = kept.numpy()
        if isinstance(kept, np.ndarray):
            kept = kept.item()
        if isinstance(kept, bytes):
            kept = kept.decode("utf-8", errors="replace")
        return str(kept)

    def warn_if_truncated(self, texts, what: str = "texts", stacklevel: int = 1):
        """Warn once if any text is longer than the context; count them.

        Emits at most one `TruncationWarning` for the whole list, naming how
        many texts are cut, the context length and one example with what is
        left of it.

        Args:
            texts: a string or a list of strings.
            what: str. What the texts are, for the message (`"captions"`,
                `"prompts"`).
            stacklevel: int. 1 attributes the warning to the caller of this
                method, 2 to its caller, and so on.

        Returns:
            int: the number of texts that are cut.

        Example:

        ```python
        preprocessor = keras_towers.ContrastivePreprocessor.default(
            sequence_length=16
        )
        preprocessor.warn_if_truncated(["a bad photo of a red circle."])  # 1
        ```
        """
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        counts = self.text_token_counts(texts)
        cut = np.flatnonzero(counts > self.text_capacity)
        if cut.size:
            i = int(cut[0])
            text = texts[i]
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            warnings.warn(
                f"{cut.size} of {len(texts)} {what} are longer than the text "
                f"context of {self.sequence_length} tokens ({self.text_capacity} "
                f"for text, plus {self._special_tokens_wording()}) and were cut: e.g. "
                f"{text!r} ({counts[i]} tokens) is read as {self._kept_text(text)!r}. "
                "Use shorter texts, or a model with a longer context "
                "(`sequence_length`).",
                TruncationWarning,
                stacklevel=stacklevel + 1,
            )
        return int(cut.size)

    def _special_tokens_wording(self) -> str:
        """What the tokens of the context besides the text are, in words."""
        extra = self.sequence_length - self.text_capacity
        return {1: "the end token", 2: "start and end"}.get(
            extra, f"{extra} special tokens"
        )

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
                rgb
                if image_converter is None
                else self._convert_tf(rgb, image_converter)
            )
            third = self.third_image_converter
            if third is not None and THIRD_FEATURES_KEY not in x:
                outputs[THIRD_IMAGE_KEY] = self._convert_tf(rgb, third)
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
                "framing": self.framing,
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
        framing: str = DEFAULT_FRAMING,
    ) -> ContrastivePreprocessor:
        """Byte tokenizer + images framed by `framing` (default `"pad"`) to
        `image_size`, scaled with CLIP's mean/std."""
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
            framing=framing,
        )
