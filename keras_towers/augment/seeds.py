"""Per-example stateless seeds derived from `(seed, epoch, index, stream)`.

Everything random in `keras_towers.augment` is a pure function of such a
seed, never of global or layer RNG state: a run resumed after `kill -9`, a
parallel `Dataset.map`, and every Keras backend see the same augmented
pixels and captions for the same example in the same epoch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Streams keep image and text views (and view slots) independent.
IMAGE_STREAM = 1
TEXT_STREAM = 2
#: The stateless algorithm, pinned so the numbers never depend on the device.
ALG = "philox"


def example_seed(seed, epoch, index, stream: int = 0, view: int = 0) -> tf.Tensor:
    """The stateless seed of one example's view: int64 `[2]`.

    Args:
        seed: int or int scalar tensor. The run's seed.
        epoch: int, int scalar tensor or `tf.Variable` (read when called, so
            a `Dataset.map` function sees the current epoch; see
            `keras_towers.utils.epochs`).
        index: int or int scalar tensor. The example's index in the dataset.
        stream: int. `IMAGE_STREAM`, `TEXT_STREAM` or any other constant.
        view: int. The view slot (0 = global view).

    Returns:
        int64 tensor `[2]` for `tf.random.stateless_*` ops.

    Example:

    ```python
    s = keras_towers.augment.example_seed(0, epoch=3, index=17)
    ```
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x6B74, tf.int64)])
    out = base
    for data in (epoch, index, stream, view):
        out = tf.random.experimental.stateless_fold_in(
            out, tf.cast(data, tf.int64), alg=ALG
        )
    return out


def split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
    """`num` independent `[2]` seeds from one, as an int64 `[num, 2]` tensor."""
    return tf.random.experimental.stateless_split(seed, num=num, alg=ALG)


def numpy_generator(seed) -> np.random.Generator:
    """A NumPy `Generator` determined by a `[2]` integer seed (NumPy or bytes)."""
    words = [int(v) & 0xFFFFFFFFFFFFFFFF for v in np.asarray(seed).reshape(-1)]
    return np.random.Generator(np.random.PCG64(words))
