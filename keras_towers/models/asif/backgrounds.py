"""Bringing query images to the anchors' background before encoding.

ASIF compares an image with the anchor *images* only, so the image encoder
must see queries drawn like the anchors. The corpus anchors are stamps,
emoji and clip art whose transparent pixels the library composites on white:
dark-on-light drawings. Sketch datasets (MNIST digits, Animal-MNIST,
Fashion-MNIST) are the opposite, light strokes on black, and the nearest
anchors of such an image are whatever in the corpus is bright on dark, not
its class.

`query_background="light"` inverts (`255 - x`) each query image whose
one-pixel border is darker than mid-grey on average (luminance < 128) before
encoding, so that a white-on-black silhouette becomes a black-on-white one.
Images with a light border, and RGBA images (the preprocessor composites
them on white), are left as they are. The anchors are untouched; only the
queries' appearance is matched to them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: `ASIF(query_background=...)` values: `"as_is"` (default) or `"light"`.
QUERY_BACKGROUNDS = ("as_is", "light")
#: A border darker than this mean luminance (0-255) counts as dark.
DARK_BORDER = 128.0


def check_query_background(value: str) -> str:
    if value not in QUERY_BACKGROUNDS:
        raise ValueError(
            f"`query_background` must be one of {QUERY_BACKGROUNDS}. "
            f"Received: query_background={value!r}"
        )
    return value


def border_luminance(image) -> float:
    """Mean of the one-pixel border of an `(H, W, C)` image, averaged over
    its channels (values 0-255)."""
    image = np.asarray(image, "float32")
    gray = image.mean(axis=-1) if image.ndim == 3 else image
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return float(border.mean())


def _light_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        return image
    if border_luminance(image) >= DARK_BORDER:
        return image
    return 255 - image


def on_light_background(images):
    """`images` (one `(H, W, C)` image, a batch, or a list) with every image
    whose border is dark inverted; other inputs are returned unchanged.

    Example:

    ```python
    digit = np.zeros((28, 28, 1), "uint8")
    digit[8:20, 12:16] = 255  # a white stroke on black
    on_light_background(digit)[0, 0, 0]  # 255: now black on white
    ```
    """
    if isinstance(images, tf.data.Dataset):
        return images.map(_tf_on_light_background)
    if isinstance(images, (list, tuple)):
        return [_light_image(np.asarray(image)) for image in images]
    array = np.asarray(images)
    if array.ndim == 3:
        return _light_image(array)
    if array.ndim == 4:
        return (
            np.stack([_light_image(image) for image in array]) if len(array) else array
        )
    return images


def _tf_light(image):
    channels = image.shape[-1]
    if channels not in (1, 3):
        return image
    gray = tf.reduce_mean(tf.cast(image, tf.float32), axis=-1)
    border = tf.concat([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]], 0)
    dark = tf.reduce_mean(border) < DARK_BORDER
    inverted = tf.cast(255.0 - tf.cast(image, tf.float32), image.dtype)
    return tf.cond(dark, lambda: inverted, lambda: image)


def _tf_on_light_background(element):
    """A dataset element (image batch, one image, or a dict with `"images"`)."""
    if isinstance(element, dict):
        return {**element, "images": _tf_on_light_background(element["images"])}
    if element.shape.rank == 4:
        return tf.map_fn(_tf_light, element)
    return _tf_light(element)
