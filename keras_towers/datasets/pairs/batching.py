"""Resizing pairs to one image size and batching them for `fit`."""

from __future__ import annotations

import tensorflow as tf

from keras_towers.datasets.pairs._pipeline import _positive_int
from keras_towers.preprocessing import DEFAULT_FRAMING
from keras_towers.preprocessing import FRAMINGS
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.preprocessing import check_framing
from keras_towers.preprocessing import frame_images

#: `batch_pairs` resize modes: the framing rules of `ContrastivePreprocessor`.
RESIZE_MODES = FRAMINGS


def resize_image(image, image_size: int, resize: str = DEFAULT_FRAMING):
    """Resize one uint8 `(H, W, 3)` image to `(S, S, 3)` uint8 in TensorFlow.

    This is `keras_towers.preprocessing.frame_images`, the framing a
    `ContrastivePreprocessor` applies to raw images at inference: pass the
    model's `preprocessor.framing` as `resize` so that training images are
    framed as the model will frame images later. Resampling is bilinear with
    antialiasing (a triangle filter when shrinking), rounded to integers.

    Args:
        image: uint8 tensor `(H, W, 3)`.
        image_size: int. The side `S` of the output.
        resize: `"pad"` keeps the aspect ratio (longest side to `S`) and
            centres the image on white; `"crop"` scales the shortest side to
            `S` and crops the centre; `"squash"` resizes to `S x S` and
            distorts the aspect ratio.

    Returns:
        uint8 tensor `(S, S, 3)`.

    Example:

    ```python
    square = keras_towers.datasets.resize_image(image, 64, resize="crop")
    ```
    """
    check_framing(resize, "resize")
    size = _positive_int(image_size, "image_size")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8 or image.shape.rank != 3:
        raise ValueError(
            "`image` must be uint8 (H, W, 3). Received dtype "
            f"{image.dtype.name} and shape {image.shape}."
        )
    out = tf.cast(frame_images(image, size, resize), tf.uint8)
    return tf.ensure_shape(out, [size, size, 3])


def batch_pairs(
    dataset: tf.data.Dataset,
    batch_size: int,
    image_size: int,
    resize: str = DEFAULT_FRAMING,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    drop_remainder: bool = False,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Resize, optionally shuffle, and batch an unbatched pairs dataset.

    The result feeds `keras_towers.CLIP.fit` (and every `ContrastiveModel`)
    directly: the model maps its preprocessor over these raw batches.

    Args:
        dataset: unbatched `{"images": uint8 (H, W, 3), "texts": string}`
            dataset (any reader's output); other keys are kept.
        batch_size: int. Pairs per batch.
        image_size: int. Side `S` of the square uint8 images.
        resize: `"pad"`, `"crop"` or `"squash"`; see `resize_image`. Pass
            the model's `preprocessor.framing`: a model frames raw images
            by that rule at inference.
        shuffle_buffer: int. Shuffle buffer size (of resized pairs); 0 keeps
            the order.
        seed: optional int. Shuffle seed (reshuffled every pass).
        drop_remainder: bool. Drop a last, smaller batch.
        num_parallel_calls: int. Images resized in parallel.

    Returns:
        A `tf.data.Dataset` of `{"images": uint8 (B, S, S, 3), "texts":
        string (B,)}`, carrying the input's `decode_report`.

    Example:

    ```python
    ds = keras_towers.datasets.load_pairs("pairs.csv")
    ds = keras_towers.datasets.batch_pairs(ds, 32, 64, shuffle_buffer=1000, seed=0)
    model = keras_towers.CLIP.tiny(image_size=64)
    model.compile()
    model.fit(ds, epochs=1)
    ```
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"`dataset` must be a tf.data.Dataset. Received {type(dataset).__name__}."
        )
    spec = dataset.element_spec
    if (
        not isinstance(spec, dict)
        or IMAGE_KEY not in spec
        or TEXT_KEY not in spec
        or spec[IMAGE_KEY].dtype != tf.uint8
        or spec[IMAGE_KEY].shape.rank != 3
    ):
        raise ValueError(
            "`dataset` must yield unbatched {'images': uint8 (H, W, 3), "
            "'texts': string} pairs. Received element_spec " + f"{spec}."
        )
    batch_size = _positive_int(batch_size, "batch_size")
    size = _positive_int(image_size, "image_size")
    check_framing(resize, "resize")
    if (
        isinstance(shuffle_buffer, bool)
        or not isinstance(shuffle_buffer, int)
        or shuffle_buffer < 0
    ):
        raise ValueError(
            f"`shuffle_buffer` must be an int >= 0. Received: {shuffle_buffer!r}."
        )

    def resize_pair(element):
        element = dict(element)
        element[IMAGE_KEY] = resize_image(element[IMAGE_KEY], size, resize)
        return element

    ds = dataset.map(resize_pair, num_parallel_calls=num_parallel_calls)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    report = getattr(dataset, "decode_report", None)
    if report is not None:
        ds.decode_report = report
    return ds
