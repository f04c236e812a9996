"""Reproducible training runs: in-memory pairs, epoch-seeded shuffling, resume.

`keras.callbacks.BackupAndRestore` restores weights and optimizer state after
an interruption, but a `tf.data` shuffle restarts its sequence of orders in a
new process, so a resumed run would see different batches than an
uninterrupted one. Here the order of epoch `e` is a pure function of
`(seed, e)`, so resuming gives the same result as never stopping.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from keras_towers.datasets import batch_pairs
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.utils.epochs import shuffled_index_batches


class PairArrays:
    """Image-text pairs held in memory at a fixed image size.

    Args:
        images: uint8 array `(N, S, S, 3)`.
        texts: sequence of `N` strings.
        refs: optional sequence of `N` image references (paths or ids).
    """

    def __init__(self, images: np.ndarray, texts, refs=None):
        images = np.asarray(images)
        texts = np.asarray(list(texts), dtype=object)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                "`images` must be a uint8 array (N, H, W, C). Received "
                f"dtype {images.dtype} and shape {images.shape}."
            )
        if len(images) != len(texts):
            raise ValueError(
                f"`images` and `texts` must have the same length. Received "
                f"{len(images)} images and {len(texts)} texts."
            )
        self.images = images
        self.texts = texts
        self.refs = None if refs is None else list(refs)

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_dataset(
        cls, dataset: tf.data.Dataset, image_size: int, resize: str = "pad"
    ) -> PairArrays:
        """Materialise an unbatched `{"images", "texts"}` pairs dataset.

        Images are resized to `image_size` (see
        `keras_towers.datasets.batch_pairs` for `resize`).
        """
        batched = batch_pairs(
            dataset, batch_size=256, image_size=image_size, resize=resize
        )
        images, texts = [], []
        for batch in batched.as_numpy_iterator():
            images.append(batch[IMAGE_KEY])
            texts.extend(t.decode("utf-8") for t in batch[TEXT_KEY])
        if not images:
            raise ValueError("The dataset is empty: no image-text pairs were read.")
        return cls(np.concatenate(images), texts)


class _EpochCounter(keras.callbacks.Callback):
    """Tells the input pipeline which epoch is starting."""

    def __init__(self, variable: tf.Variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


def epoch_shuffled_dataset(
    pairs: PairArrays | dict,
    batch_size: int,
    seed: int = 0,
    drop_remainder: bool = True,
):
    """A dataset whose epoch-`e` order depends only on `(seed, e)`.

    Args:
        pairs: `PairArrays` (batches are `{"images", "texts"}`), or a dict of
            equally long arrays (batches have the same keys, e.g. cached
            frozen-tower features next to captions). The order depends only
            on the length, so both forms give the same batches.
        batch_size: int.
        seed: int.
        drop_remainder: bool. Drop the last partial batch (training).

    Returns:
        `(dataset, callback)`: pass both to `fit` (the callback sets the
        epoch before Keras opens the epoch's iterator).
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size}")
    arrays = _as_arrays(pairs)
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(
            "`pairs` arrays must all have the same length. Received lengths "
            f"{ {k: len(v) for k, v in arrays.items()} }"
        )
    n = lengths.pop()
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"Only {n} training pairs for `batch_size={batch_size}`: every batch "
            "would be dropped. Lower the batch size."
        )
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    constants = {k: tf.constant(v) for k, v in arrays.items()}
    ds = shuffled_index_batches(n, batch_size, seed, epoch, drop_remainder)
    ds = ds.map(lambda idx: {k: tf.gather(c, idx) for k, c in constants.items()})
    return ds, _EpochCounter(epoch)


def _as_arrays(pairs: PairArrays | dict) -> dict:
    if isinstance(pairs, PairArrays):
        return {IMAGE_KEY: pairs.images, TEXT_KEY: pairs.texts.astype(str)}
    return dict(pairs)


def _num_examples(pairs: PairArrays | dict) -> int:
    if isinstance(pairs, PairArrays):
        return len(pairs)
    return len(next(iter(pairs.values()))) if pairs else 0


def ordered_dataset(pairs: PairArrays | dict, batch_size: int) -> tf.data.Dataset:
    """The pairs (or a dict of arrays) in order, batched (for validation)."""
    return tf.data.Dataset.from_tensor_slices(_as_arrays(pairs)).batch(batch_size)


def train(
    model,
    train_pairs: PairArrays | dict,
    epochs: int,
    batch_size: int = 128,
    validation_pairs: PairArrays | dict | None = None,
    seed: int = 0,
    backup_dir: str | None = None,
    callbacks=(),
    verbose="auto",
) -> dict:
    """Fit `model` reproducibly; resume from `backup_dir` if it holds a backup.

    The model must be compiled. With `backup_dir`, Keras'
    `BackupAndRestore` saves a backup every epoch and a rerun with the same
    arguments continues where the interrupted run stopped, with the same
    batches, so it ends with the same weights. `train_pairs` and
    `validation_pairs` may also be dicts of equally long arrays (e.g. cached
    frozen-tower features with their captions): the batch order is the same.

    Returns:
        The history dict (`History.history`) of the epochs run now, plus
        `"seconds"` (wall time of this call).
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
    ds, epoch_callback = epoch_shuffled_dataset(train_pairs, batch_size, seed=seed)
    callbacks = [epoch_callback, *callbacks]
    if backup_dir is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir))
    validation = None
    if validation_pairs is not None and _num_examples(validation_pairs):
        validation = ordered_dataset(validation_pairs, batch_size)
    start = time.perf_counter()
    history = model.fit(
        ds,
        epochs=epochs,
        validation_data=validation,
        callbacks=callbacks,
        verbose=verbose,
    )
    result = dict(history.history)
    result["seconds"] = time.perf_counter() - start
    return result
