"""open_clip's inference image transform as a Keras image converter.

`open_clip.image_transform(size, is_train=False, mean, std, interpolation,
resize_mode, fill_color)` on a PIL image:

- `resize_mode="shortest"` (default): `Resize(size)` (shorter side to
  `size`, longer to `int(size * long / short)`), then `CenterCrop(size)` at
  `int(round((new - size) / 2))` (Python rounds halves to even);
- `"squash"`: `Resize((size, size))`;
- `"longest"`: longer side to `size`, each side `round(side / ratio)`, then
  centred on a `size x size` canvas of `fill_color` (left/top padding
  `(size - new) // 2`);
- `interpolation`: `"bicubic"` (default; `"random"` is bicubic at inference)
  or `"bilinear"`; torchvision's `Resize` on a PIL image is PIL's `resize`;
- `ToTensor` (`/ 255`) and `Normalize(mean, std)` (OpenAI CLIP's by
  default; a scalar applies to the three channels).

`OpenCLIPImageConverter` reproduces it with `TransformersImageConverter`'s
PIL-exact resampling (antialiased separable passes in Pillow's order, 8-bit
rounding after each pass).
"""

from __future__ import annotations

import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_towers.converters.transformers_clip.image_converter import (
    TransformersImageConverter,
)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: open_clip `resize_mode` -> keras_towers framing rule (see
#: `keras_towers.preprocessing.FRAMINGS`).
RESIZE_MODES = {"shortest": "crop", "squash": "squash", "longest": "pad"}
#: open_clip `interpolation` -> resampling filter at inference.
INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "random": "bicubic"}
#: The fields of open_clip's `PreprocessCfg`.
PREPROCESS_KEYS = (
    "size",
    "mode",
    "mean",
    "std",
    "interpolation",
    "resize_mode",
    "fill_color",
)


def _round_half_even(x):
    """Python's `round` of a float64 tensor, as int32."""
    return tf.cast(tf.math.round(x), tf.int32)


@keras.saving.register_keras_serializable(package="keras_towers")
class OpenCLIPImageConverter(TransformersImageConverter):
    """Resize, crop or pad, and normalise images like open_clip's inference
    transform (see `keras_towers.converters.open_clip.image_converter`).

    Runs with TensorFlow ops, eagerly or inside `tf.data`, on every backend.
    Resampling is `TransformersImageConverter`'s PIL reproduction: identical
    pixels except rare off-by-one rounding ties.

    Args:
        image_size: `(height, width)` of the output (square).
        scale: float or per-channel floats multiplied after resizing
            (`1 / (255 * std)`).
        offset: float or per-channel floats added after scaling
            (`-mean / std`).
        resize_mode: `"shortest"`, `"squash"` or `"longest"`.
        interpolation: `"bicubic"` or `"bilinear"`.
        fill_value: float or 3 floats in `[0, 255]`. The padding of
            `"longest"` (open_clip's `fill_color`).
        antialias: bool. Widen the filter when downscaling, like PIL.
        round_to_uint8: bool. Round and clip after each resize pass, like
            PIL's 8-bit images.

    Example:

    ```python
    converter = OpenCLIPImageConverter(
        image_size=(224, 224), scale=1 / 255, resize_mode="longest"
    )
    converter(np.zeros((2, 300, 400, 3), "uint8"))  # (2, 224, 224, 3)
    ```
    """

    def __init__(
        self,
        image_size=None,
        scale=None,
        offset=None,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
        fill_value=0.0,
        antialias: bool = True,
        round_to_uint8: bool = True,
        **kwargs,
    ):
        kwargs.pop("shortest_edge", None)
        kwargs.pop("resize_size", None)
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            interpolation=interpolation,
            antialias=antialias,
            round_to_uint8=round_to_uint8,
            **kwargs,
        )
        if resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"`resize_mode` must be one of {tuple(RESIZE_MODES)}. "
                f"Received: {resize_mode!r}."
            )
        if not image_size:
            raise ValueError("OpenCLIPImageConverter needs `image_size`.")
        self.resize_mode = resize_mode
        fill = np.broadcast_to(np.asarray(fill_value, "float64"), (3,))
        self.fill_value = [float(v) for v in fill]

    @property
    def framing(self) -> str:
        """The framing rule this layer applies itself: `"crop"`
        (`shortest`), `"squash"` or `"pad"` (`longest`, padded with
        `fill_value` rather than keras_towers' white)."""
        return RESIZE_MODES[self.resize_mode]

    def call(self, inputs):
        if isinstance(inputs, dict):
            raise ValueError("OpenCLIPImageConverter takes image tensors, not dicts.")
        return self._resize_crop_normalize(inputs)

    def _resized_size(self, height, width):
        target_h, target_w = self.image_size
        h = tf.cast(height, "float64")
        w = tf.cast(width, "float64")
        if self.resize_mode == "squash":
            return tf.constant(target_h), tf.constant(target_w)
        if self.resize_mode == "shortest":
            # torchvision Resize(int): int(size * long / short), in float64.
            short = tf.minimum(h, w)
            long = tf.maximum(h, w)
            new_long = tf.cast(target_h * long / short, "int32")
            portrait = width <= height
            return (
                tf.where(portrait, new_long, target_h),
                tf.where(portrait, target_w, new_long),
            )
        # longest: ResizeKeepRatio(longest=1): round(side / max ratio).
        ratio = tf.maximum(h / target_h, w / target_w)
        return (
            tf.maximum(_round_half_even(h / ratio), 1),
            tf.maximum(_round_half_even(w / ratio), 1),
        )

    def _frame(self, images, height, width):
        """torchvision's centre crop (offset `int(round(diff / 2))`), after
        padding a side shorter than the target (`diff // 2` before)."""
        target_h, target_w = self.image_size
        pad_h = tf.maximum(target_h - height, 0)
        pad_w = tf.maximum(target_w - width, 0)
        fill = tf.constant(self.fill_value, "float32")
        images = images - fill
        images = tf.pad(
            images,
            [
                [0, 0],
                [pad_h // 2, pad_h - pad_h // 2],
                [pad_w // 2, pad_w - pad_w // 2],
                [0, 0],
            ],
        )
        images = images + fill
        height, width = height + pad_h, width + pad_w
        top = _round_half_even(tf.cast(height - target_h, "float64") / 2.0)
        left = _round_half_even(tf.cast(width - target_w, "float64") / 2.0)
        images = images[:, top : top + target_h, left : left + target_w, :]
        return tf.ensure_shape(images, [None, target_h, target_w, None])

    def get_config(self):
        config = super().get_config()
        for key in ("shortest_edge", "resize_size"):
            config.pop(key, None)
        config.update({"resize_mode": self.resize_mode, "fill_value": self.fill_value})
        return config


def _channels(value, default, key: str) -> list[float]:
    """open_clip's mean/std: falsy -> default, a scalar -> all channels."""
    if not value:
        value = default
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)] * 3
    if isinstance(value, (list, tuple)) and len(value) in (1, 3):
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            return [float(v) for v in np.broadcast_to(np.asarray(value, "float64"), 3)]
    raise ValueError(
        f"open_clip preprocess_cfg.{key} must be a number or 3 numbers. "
        f"Received: {value!r}."
    )


def _size(value, image_size: int) -> int:
    if isinstance(value, (list, tuple)) and len(value) in (1, 2):
        if len(set(value)) != 1:
            raise ValueError(
                f"open_clip preprocess_cfg.size={list(value)}: only square sizes "
                "are supported."
            )
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"open_clip preprocess_cfg.size must be a positive int. Received: "
            f"{value!r}."
        )
    if int(value) != image_size:
        warnings.warn(
            f"open_clip preprocess_cfg.size={value} differs from the vision "
            f"model's image size {image_size}; open_clip uses the model's, and "
            "so does keras_towers.",
            stacklevel=3,
        )
    return image_size


def convert_preprocess_config(preprocess_cfg: dict, image_size: int) -> dict:
    """open_clip `preprocess_cfg` -> `OpenCLIPImageConverter` kwargs.

    Missing or `None` fields take open_clip's defaults (OpenAI mean/std,
    bicubic, shortest). Unknown fields or values raise a `ValueError`
    naming the field.

    Example:

    ```python
    kwargs = convert_preprocess_config({"resize_mode": "squash"}, 224)
    converter = OpenCLIPImageConverter(**kwargs)
    ```
    """
    if preprocess_cfg is None:
        preprocess_cfg = {}
    if not isinstance(preprocess_cfg, dict):
        raise ValueError(
            f"open_clip preprocess_cfg must be a dict. Received: {preprocess_cfg!r}."
        )
    unknown = sorted(set(preprocess_cfg) - set(PREPROCESS_KEYS))
    if unknown:
        raise ValueError(
            f"open_clip preprocess_cfg has unknown field(s) {unknown}; known: "
            f"{list(PREPROCESS_KEYS)}."
        )
    cfg = {k: v for k, v in preprocess_cfg.items() if v is not None}
    if cfg.get("size") is not None:
        _size(cfg["size"], image_size)
    mode = cfg.get("mode", "RGB")
    if mode != "RGB":
        raise ValueError(
            f"open_clip preprocess_cfg.mode={mode!r} is not supported; open_clip "
            "supports 'RGB' only."
        )
    resize_mode = cfg.get("resize_mode") or "shortest"
    if resize_mode not in RESIZE_MODES:
        raise ValueError(
            f"open_clip preprocess_cfg.resize_mode={resize_mode!r} is not "
            f"supported; supported: {list(RESIZE_MODES)}."
        )
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"open_clip preprocess_cfg.interpolation={interpolation!r} is not "
            f"supported; supported: {list(INTERPOLATIONS)}."
        )
    fill = cfg.get("fill_color", 0)
    values = fill if isinstance(fill, (list, tuple)) else [fill]
    if len(values) not in (1, 3) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 255
        for v in values
    ):
        raise ValueError(
            "open_clip preprocess_cfg.fill_color must be an int in [0, 255] (or "
            f"3 of them). Received: {fill!r}."
        )
    mean = _channels(cfg.get("mean"), OPENAI_MEAN, "mean")
    std = _channels(cfg.get("std"), OPENAI_STD, "std")
    if any(s <= 0 for s in std):
        raise ValueError(f"open_clip preprocess_cfg.std must be positive: {std}.")
    return {
        "image_size": (image_size, image_size),
        "scale": [1.0 / (255.0 * s) for s in std],
        "offset": [-m / s for m, s in zip(mean, std, strict=True)],
        "resize_mode": resize_mode,
        "interpolation": INTERPOLATIONS[interpolation],
        "fill_value": [float(v) for v in np.broadcast_to(values, 3)],
    }


def load_image_converter(
    preprocess_cfg: dict, image_size: int
) -> OpenCLIPImageConverter:
    """The image converter for open_clip's `preprocess_cfg` and the vision
    model's `image_size` (which open_clip uses as the transform's size).

    Example:

    ```python
    converter = load_image_converter(
        {"resize_mode": "longest", "interpolation": "bilinear"}, 224
    )
    ```
    """
    return OpenCLIPImageConverter(
        **convert_preprocess_config(preprocess_cfg, image_size)
    )
