"""transformers' (PIL) `CLIPImageProcessor` as a Keras image converter."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import keras
import numpy as np
import PIL
import tensorflow as tf
from keras_hub.layers import ImageConverter
from keras_hub.src.utils.tensor_utils import preprocessing_function

PREPROCESSOR_FILE = "preprocessor_config.json"
#: Pillow 13 changed the order of its two resampling passes for images whose
#: height shrinks much more than their width (see `_resample_passes`).
_PILLOW_VERTICAL_FIRST = int(PIL.__version__.split(".")[0]) >= 13

# CLIPImageProcessor defaults (OpenAI CLIP's mean/std, bicubic, 224).
_IMAGE_PROCESSOR_DEFAULTS = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# PIL resampling filter codes -> (tf.image.resize method, antialias).
_RESAMPLE = {
    0: ("nearest", False),
    1: ("lanczos3", True),
    2: ("bilinear", True),
    3: ("bicubic", True),
}


@keras.saving.register_keras_serializable(package="keras_towers")
class TransformersImageConverter(ImageConverter):
    """Resize, center-crop and normalise images like transformers' CLIP.

    With `shortest_edge` (or `resize_size`) set, this reproduces the PIL
    `CLIPImageProcessor`: resize the shortest edge to `shortest_edge` (the
    long edge to `int(shortest_edge * long / short)`), center-crop to
    `image_size` at offset `(size - crop) // 2`, then `x * scale + offset`.
    With neither set it is a plain `keras_hub.layers.ImageConverter`.

    Resizing follows PIL, which transformers uses: antialiased (the filter is
    widened when downscaling), separable in Pillow's pass order, and
    8-bit, rounding and clipping to `[0, 255]` after each pass
    (`round_to_uint8`). Measured against PIL bicubic, this gives identical
    pixels except rare off-by-one rounding ties (0-0.1% of values); without
    the rounding nearly every value is off by up to ~2 grey levels, and
    without antialiasing by up to ~140. A dimension that does not change is not resampled (PIL
    copies it). It runs with TensorFlow ops, eagerly or inside `tf.data`, on
    every backend.

    keras-hub's `ImageConverter(crop_to_aspect_ratio=True)` crops before
    resizing; even when `shortest_edge` equals the crop size, that shifts the
    sampling grid of non-square images (measured: up to 130 grey levels off
    transformers), so this layer handles that case too.

    Args:
        image_size: `(height, width)` of the output (the crop size).
        scale: float or per-channel floats multiplied after resizing.
        offset: float or per-channel floats added after scaling.
        shortest_edge: int or `None`. Resize the shortest edge to this size
            (aspect ratio kept) before the crop.
        resize_size: `(height, width)` or `None`. Resize to this fixed size
            before the crop (instead of `shortest_edge`).
        interpolation: `"bicubic"`, `"bilinear"`, `"lanczos3"` or
            `"nearest"`.
        antialias: bool. Widen the filter when downscaling, like PIL.
        round_to_uint8: bool. Round and clip after each resize pass, like
            PIL's 8-bit images.

    Example:

    ```python
    converter = TransformersImageConverter(
        image_size=(224, 224), shortest_edge=224, scale=1 / 255
    )
    converter(np.zeros((2, 300, 400, 3), "uint8"))  # (2, 224, 224, 3)
    ```
    """

    def __init__(
        self,
        image_size=None,
        scale=None,
        offset=None,
        shortest_edge: int | None = None,
        resize_size=None,
        interpolation: str = "bicubic",
        antialias: bool = True,
        round_to_uint8: bool = True,
        **kwargs,
    ):
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            interpolation=interpolation,
            antialias=antialias,
            **kwargs,
        )
        if shortest_edge is not None and resize_size is not None:
            raise ValueError("Pass only one of `shortest_edge` and `resize_size`.")
        if (shortest_edge is not None or resize_size is not None) and not image_size:
            raise ValueError("`shortest_edge`/`resize_size` need `image_size`.")
        self.shortest_edge = None if shortest_edge is None else int(shortest_edge)
        self.resize_size = None if resize_size is None else tuple(resize_size)
        self.round_to_uint8 = round_to_uint8

    @property
    def framing(self) -> str | None:
        """The framing rule this layer applies itself (see
        `keras_towers.preprocessing.FRAMINGS`): `"crop"` with
        `shortest_edge` (CLIP: shortest edge, then centre crop), `"squash"`
        with `resize_size`, `None` with neither. A `ContrastivePreprocessor`
        takes it as its default `framing` and then leaves the framing to this
        layer, so transformers' pixels are kept."""
        if self.shortest_edge is not None:
            return "crop"
        if self.resize_size is not None:
            return "squash"
        return None

    def call(self, inputs):
        if self.shortest_edge is None and self.resize_size is None:
            return super().call(inputs)
        if isinstance(inputs, dict):
            raise ValueError(
                "TransformersImageConverter takes image tensors, not dicts."
            )
        return self._resize_crop_normalize(inputs)

    def _resample_passes(self, images, height, width, new_height, new_width):
        """PIL's two separable passes from (height, width) to (new_height,
        new_width), each only along an axis that changes, in PIL's order:
        horizontal first, except that Pillow >= 13 runs the vertical pass
        first when the height shrinks by more than twice as many pixels as
        the width (the installed Pillow decides, as it does for
        transformers and open_clip)."""

        def horizontal(x, rows):
            return tf.cond(
                tf.equal(new_width, width),
                lambda: x,
                lambda: self._resample(x, rows, new_width),
            )

        def vertical(x, columns):
            return tf.cond(
                tf.equal(new_height, height),
                lambda: x,
                lambda: self._resample(x, new_height, columns),
            )

        if not _PILLOW_VERTICAL_FIRST:
            return vertical(horizontal(images, height), new_width)
        shrink = height - new_height
        vertical_first = (shrink > 0) & (shrink > 2 * (width - new_width))
        return tf.cond(
            vertical_first,
            lambda: horizontal(vertical(images, width), new_height),
            lambda: vertical(horizontal(images, height), new_width),
        )

    def _resample(self, images, height, width):
        """One PIL-style pass to (height, width) (one of them unchanged)."""
        resized = tf.image.resize(
            images,
            tf.stack([height, width]),
            method=self.interpolation,
            antialias=self.antialias,
        )
        if self.round_to_uint8:
            # PIL rounds half up (fixed point + 0.5) and clips to 8 bits.
            resized = tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0)
        return resized

    def _resized_size(self, height, width):
        """The size PIL resizes to: the shortest edge to `shortest_edge`
        (the long one to `int(size * long / short)`), or `resize_size`."""
        if self.shortest_edge is None:
            return (
                tf.constant(self.resize_size[0], "int32"),
                tf.constant(self.resize_size[1], "int32"),
            )
        short = tf.minimum(height, width)
        long = tf.maximum(height, width)
        # transformers: int(size * long / short), in float64 like Python.
        new_long = tf.cast(
            tf.cast(self.shortest_edge * long, "float64") / tf.cast(short, "float64"),
            "int32",
        )
        portrait = width <= height
        return (
            tf.where(portrait, new_long, self.shortest_edge),
            tf.where(portrait, self.shortest_edge, new_long),
        )

    def _frame(self, images, height, width):
        """The resized `(height, width)` images to `image_size`:
        transformers' centre crop at offset `(size - crop) // 2`."""
        crop_height, crop_width = self.image_size
        checks = [
            tf.debugging.assert_greater_equal(
                height,
                crop_height,
                message="The resized image is smaller than the crop size.",
            ),
            tf.debugging.assert_greater_equal(
                width,
                crop_width,
                message="The resized image is smaller than the crop size.",
            ),
        ]
        with tf.control_dependencies(checks):
            top = (height - crop_height) // 2
            left = (width - crop_width) // 2
        images = images[:, top : top + crop_height, left : left + crop_width, :]
        return tf.ensure_shape(images, [None, crop_height, crop_width, None])

    @preprocessing_function
    def _resize_crop_normalize(self, images):
        """Resize (`_resized_size`, PIL's passes), frame (`_frame`), then
        `x * scale + offset`; subclasses change the first two."""
        images = tf.cast(tf.convert_to_tensor(images), "float32")
        unbatched = images.shape.rank == 3
        if unbatched:
            images = images[None]
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        new_height, new_width = self._resized_size(height, width)
        images = self._resample_passes(images, height, width, new_height, new_width)
        images = self._frame(images, new_height, new_width)
        if self.scale is not None:
            images = images * tf.constant(self.scale, "float32")
        if self.offset is not None:
            images = images + tf.constant(self.offset, "float32")
        if unbatched:
            images = images[0]
        return images

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "shortest_edge": self.shortest_edge,
                "resize_size": self.resize_size,
                "round_to_uint8": self.round_to_uint8,
            }
        )
        return config


def _size_pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        raise NotImplementedError(f"Unsupported {what} {value!r}.")
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def convert_image_processor_config(processor_config: dict, image_size: int) -> dict:
    """transformers CLIP image-processor config -> converter kwargs.

    Example:

    ```python
    kwargs = convert_image_processor_config(
        json.load(open("clip/preprocessor_config.json")), image_size=224
    )
    converter = TransformersImageConverter(**kwargs)
    ```
    """
    cfg = {**_IMAGE_PROCESSOR_DEFAULTS, **processor_config}
    kwargs = {}
    resize_to = None
    if not cfg["do_resize"]:
        raise NotImplementedError(
            "Image processors with do_resize=False (crop only) are not supported."
        )
    size = cfg["size"]
    if isinstance(size, int):
        size = {"shortest_edge": size}  # CLIP: default_to_square=False
    if isinstance(size, dict) and "shortest_edge" in size:
        if size.get("longest_edge"):
            raise NotImplementedError(
                f"size={size}: a longest_edge limit is not supported."
            )
        kwargs["shortest_edge"] = int(size["shortest_edge"])
    else:
        resize_to = _size_pair(size, "size")
        kwargs["resize_size"] = resize_to
    resample = int(cfg["resample"])
    if resample not in _RESAMPLE:
        raise NotImplementedError(
            f"resample={resample} (PIL filter code) is not supported; "
            f"supported: {sorted(_RESAMPLE)}."
        )
    kwargs["interpolation"], kwargs["antialias"] = _RESAMPLE[resample]
    if cfg["do_center_crop"]:
        output = _size_pair(cfg["crop_size"], "crop_size")
    elif resize_to is not None:
        output = resize_to
    else:
        raise NotImplementedError(
            "Image processors that neither crop nor resize to a fixed size "
            "give variable-size images; a ViT needs a fixed size."
        )
    if output != (image_size, image_size):
        raise ValueError(
            f"The image processor outputs {output[0]}x{output[1]} images but the "
            f"vision model takes {image_size}x{image_size}."
        )
    if "shortest_edge" in kwargs and kwargs["shortest_edge"] < min(output):
        raise NotImplementedError(
            f"shortest_edge={kwargs['shortest_edge']} is smaller than the crop "
            f"{output}; transformers would pad, which is not supported."
        )
    factor = float(cfg["rescale_factor"]) if cfg["do_rescale"] else 1.0
    mean, std = [0.0] * 3, [1.0] * 3
    if cfg["do_normalize"]:
        mean = [float(m) for m in np.broadcast_to(cfg["image_mean"], (3,))]
        std = [float(s) for s in np.broadcast_to(cfg["image_std"], (3,))]
    kwargs["image_size"] = output
    kwargs["scale"] = [factor / s for s in std]
    kwargs["offset"] = [-m / s for m, s in zip(mean, std, strict=True)]
    return kwargs


def load_image_converter(
    path: str | os.PathLike, image_size: int
) -> TransformersImageConverter:
    """The image converter described by `preprocessor_config.json`."""
    file = Path(path) / PREPROCESSOR_FILE
    if file.is_file():
        processor_config = json.loads(file.read_text())
        kind = processor_config.get("image_processor_type", "CLIPImageProcessor")
        if not kind.startswith("CLIPImageProcessor"):
            warnings.warn(
                f"{file} is for a {kind}; reading it with CLIPImageProcessor's "
                "semantics and defaults.",
                stacklevel=2,
            )
    else:
        warnings.warn(
            f"No {PREPROCESSOR_FILE} in {str(path)!r}: using OpenAI CLIP's "
            f"preprocessing (bicubic shortest edge {image_size}, center crop, "
            "CLIP mean/std).",
            stacklevel=2,
        )
        processor_config = {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
        }
    return TransformersImageConverter(
        **convert_image_processor_config(processor_config, image_size)
    )
