"""Epoch orders that depend only on `(seed, epoch)`, for exact resumes.

A `tf.data` shuffle restarts its sequence of orders in a new process, so a
run resumed by `keras.callbacks.BackupAndRestore` would see other batches
than an uninterrupted one. Here the order of epoch `e` is a stateless
shuffle seeded by `(seed, e)`, where `e` is read from a variable that a
callback sets in `on_epoch_begin` (Keras opens the epoch's iterator after
that).
"""

from __future__ import annotations

import tensorflow as tf


def shuffled_index_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: tf.Variable,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """Batches of the indices `0..n-1`, shuffled by `(seed, epoch)`.

    Args:
        n: int. Number of rows.
        batch_size: int.
        seed: int.
        epoch: int64 `tf.Variable` holding the current epoch.
        drop_remainder: bool. Drop the last partial batch.

    Returns:
        A dataset of int64 index vectors with a known cardinality.
    """
    seed = int(seed)

    def one_epoch(_):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64),
            seed=tf.stack([tf.constant(seed, tf.int64), epoch.read_value()]),
        )
        return tf.data.Dataset.from_tensor_slices(order)

    ds = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    steps = n // batch_size if drop_remainder else -(-n // batch_size)
    # flat_map hides the length; Keras warns about running out of data without it.
    return ds.apply(tf.data.experimental.assert_cardinality(steps))
