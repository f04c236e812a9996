"""Reproducible training runs: in-memory pairs, epoch-seeded shuffling, resume.

`SafeBackupAndRestore` (Keras' `BackupAndRestore` with atomic, checksummed,
two-generation backups) restores weights and optimizer state after an
interruption, but a `tf.data` shuffle restarts its sequence of orders in a
new process, so a resumed run would see different batches than an
uninterrupted one. Here the order of epoch `e` is a pure function of
`(seed, e)`, so resuming gives the same result as never stopping.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from keras_towers import augment
from keras_towers.datasets import batch_pairs
from keras_towers.datasets import resize_image
from keras_towers.preprocessing import DEFAULT_FRAMING
from keras_towers.preprocessing import FRAMINGS
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.preprocessing import check_framing
from keras_towers.utils.backup import AtomicCSVLogger
from keras_towers.utils.backup import DamagedBackupError
from keras_towers.utils.backup import SafeBackupAndRestore
from keras_towers.utils.epochs import shuffled_index_batches

__all__ = [
    "AtomicCSVLogger",
    "DamagedBackupError",
    "PairArrays",
    "StreamedPairs",
    "SafeBackupAndRestore",
    "check_pairs_framing",
    "epoch_shuffled_dataset",
    "epoch_shuffled_view_dataset",
    "ordered_dataset",
    "train",
]


class PairArrays:
    """Image-text pairs held in memory at a fixed image size.

    Args:
        images: uint8 array `(N, S, S, 3)`.
        texts: sequence of `N` strings.
        refs: optional sequence of `N` image references (paths or ids).
        framing: optional str. The rule the images were framed by (see
            `keras_towers.preprocessing.FRAMINGS`); `check_model_framing`
            refuses a model that frames by another. `None`: unknown.
    """

    def __init__(self, images: np.ndarray, texts, refs=None, framing=None):
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
        self.framing = None if framing is None else check_framing(framing)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        """The side `S` of the square images."""
        return int(self.images.shape[1])

    def dataset(self) -> tf.data.Dataset:
        """The pairs as an unbatched `{"images", "texts"}` dataset, in order."""
        return tf.data.Dataset.from_tensor_slices(
            {IMAGE_KEY: self.images, TEXT_KEY: self.texts.astype(str)}
        )

    def check_model_framing(self, model, what: str = "training pairs") -> None:
        """Raise if `model` frames images by another rule than these pairs.

        A model trained on padded images but cropping them at inference
        (or the reverse) sees one image two ways; this refuses the mismatch.

        Args:
            model: a model with a `preprocessor` (or a preprocessor).
            what: str. What the pairs are, for the message.
        """
        preprocessor = getattr(model, "preprocessor", model)
        expected = getattr(preprocessor, "framing", None)
        if self.framing is None or expected is None or self.framing == expected:
            return
        raise ValueError(
            f"The {what} were framed with resize={self.framing!r} but the model "
            f"frames images with {expected!r} (its `preprocessor.framing`, used "
            "by `encode_images`, zero-shot and evaluation). Load the pairs with "
            f"resize={expected!r}, or build the model with framing="
            f"{self.framing!r}."
        )

    @classmethod
    def from_dataset(
        cls, dataset: tf.data.Dataset, image_size: int, resize=DEFAULT_FRAMING
    ) -> PairArrays:
        """Materialise an unbatched `{"images", "texts"}` pairs dataset.

        Images are framed to `image_size` (see
        `keras_towers.datasets.batch_pairs`) by `resize`: a framing name or
        the model to train (or its preprocessor), whose `framing` is read.
        The result records the rule (`framing`).

        Example:

        ```python
        model = keras_towers.CLIP.tiny(image_size=32)
        pairs = keras_towers.training.PairArrays.from_dataset(
            keras_towers.datasets.load_pairs("pairs.csv"), 32, resize=model
        )
        ```
        """
        if not isinstance(resize, str):
            preprocessor = getattr(resize, "preprocessor", resize)
            framing = getattr(preprocessor, "framing", None)
            if framing is None:
                raise TypeError(
                    "`resize` must be a framing name "
                    f"{FRAMINGS} or a model with a preprocessor. Received: "
                    f"{type(resize).__name__}."
                )
            resize = framing
        batched = batch_pairs(
            dataset, batch_size=256, image_size=image_size, resize=resize
        )
        images, texts = [], []
        for batch in batched.as_numpy_iterator():
            images.append(batch[IMAGE_KEY])
            texts.extend(t.decode("utf-8") for t in batch[TEXT_KEY])
        if not images:
            raise ValueError("The dataset is empty: no image-text pairs were read.")
        return cls(np.concatenate(images), texts, framing=resize)


class StreamedPairs(PairArrays):
    """Pairs whose images stay on disk until something reads them.

    `dataset()` decodes and frames the images as it is iterated, so a
    locked tower can encode 26,799 corpus images at 224 px (4 GB as one
    uint8 array) in constant memory (`keras_towers.recipes` does this);
    the first read of `images` materialises them, once, like `PairArrays`.

    Args:
        source: a function returning a fresh unbatched `{"images": uint8
            (H, W, 3), "texts": string}` dataset of the pairs, always in
            the same order (e.g. `lambda: datasets.from_records(records,
            on_error="raise")`).
        texts: the `N` captions, in that order (checked as images are read).
        image_size: int. The side `S` images are framed to.
        framing: str. The framing rule (`keras_towers.preprocessing.FRAMINGS`).
        refs: optional sequence of `N` image references.

    Example:

    ```python
    records = keras_towers.datasets.embedded_records("train")
    pairs = StreamedPairs(
        lambda: keras_towers.datasets.from_records(records, on_error="raise"),
        [r["caption"] for r in records],
        image_size=224,
        framing="pad",
    )
    ```
    """

    def __init__(self, source, texts, image_size: int, framing, refs=None):
        if not callable(source):
            raise TypeError(
                "`source` must be a function returning a pairs dataset. "
                f"Received: {type(source).__name__}."
            )
        if isinstance(image_size, bool) or not isinstance(image_size, int):
            raise TypeError(f"`image_size` must be an int. Received: {image_size!r}")
        if image_size < 1:
            raise ValueError(f"`image_size` must be >= 1. Received: {image_size}")
        self._source = source
        self._images = None
        self._image_size = image_size
        self.texts = np.asarray(list(texts), dtype=object)
        self.refs = None if refs is None else list(refs)
        self.framing = check_framing(framing)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            loaded = PairArrays.from_dataset(
                self._source(), self._image_size, resize=self.framing
            )
            self._check_texts(loaded.texts)
            self._images = loaded.images
        return self._images

    def _check_texts(self, texts) -> None:
        if len(texts) != len(self.texts) or list(texts) != list(self.texts):
            raise ValueError(
                f"The pairs' source yielded {len(texts)} pairs whose captions "
                f"differ from the {len(self.texts)} given: it must yield the "
                "same pairs, in the same order, on every pass."
            )

    def dataset(self) -> tf.data.Dataset:
        if self._images is not None:
            return super().dataset()
        size, framing = self._image_size, self.framing

        def frame(element):
            return {
                IMAGE_KEY: resize_image(element[IMAGE_KEY], size, framing),
                TEXT_KEY: element[TEXT_KEY],
            }

        expected = tf.constant(self.texts.astype(str))
        count = len(self.texts)

        def check(index, element):
            # A source that drops or reorders pairs would pair features with
            # the wrong captions: refuse it while streaming.
            ok = tf.logical_and(
                index < count,
                tf.equal(
                    element[TEXT_KEY], tf.gather(expected, tf.minimum(index, count - 1))
                ),
            )
            with tf.control_dependencies(
                [
                    tf.debugging.Assert(
                        ok,
                        ["The pairs' source yielded another caption at index", index],
                    )
                ]
            ):
                return {k: tf.identity(v) for k, v in element.items()}

        ds = self._source().map(frame, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.enumerate().map(check)


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


#: The key `epoch_shuffled_view_dataset` gives each example's index under.
INDEX_KEY = "index"


def epoch_shuffled_view_dataset(
    pairs: PairArrays | dict,
    batch_size: int,
    seed: int,
    image_views,
    text_views,
):
    """`epoch_shuffled_dataset`'s batches, each example mapped to its views.

    The examples come in the same order as `epoch_shuffled_dataset(pairs,
    batch_size, seed)` (last partial batch dropped); each gets its index in
    `pairs` and goes through `keras_towers.augment.views_map_fn` with the
    same epoch variable the returned callback sets, so every view is a pure
    function of `(seed, epoch, index)` and a resumed run sees the same
    augmented batches as an uninterrupted one.

    Args:
        pairs: `PairArrays` or a dict of equally long arrays with `"images"`
            (uint8) and `"texts"`.
        batch_size: int.
        seed: int. Seeds the order and the augmentation.
        image_views: `keras_towers.augment.ImageAugment`s, the first the
            global view, or `None` to augment the captions alone (`pairs`
            then needs no `"images"`: e.g. cached image features).
        text_views: `keras_towers.augment.TextAugment`s, the first the
            global view.

    Returns:
        `(dataset, callback)` as `epoch_shuffled_dataset`: batches of
        `{"images", "texts", "index"}` plus `"images_aug"` / `"texts_aug"`
        when there are augmented views.

    Example:

    ```python
    from keras_towers import augment
    ds, callback = keras_towers.training.epoch_shuffled_view_dataset(
        pairs, 8, seed=0,
        image_views=[augment.ImageAugment.from_preset("rocket-global", size=64)],
        text_views=[augment.TextAugment.from_preset("rocket-global")],
    )
    ```
    """
    arrays = _as_arrays(pairs)
    for key in (IMAGE_KEY, TEXT_KEY) if image_views is not None else (TEXT_KEY,):
        if key not in arrays:
            raise ValueError(
                f"`pairs` needs the key {key!r} for augmented views. Received "
                f"keys {sorted(arrays)}."
            )
    if INDEX_KEY in arrays:
        raise ValueError(f"`pairs` must not hold the key {INDEX_KEY!r}.")
    index_batches, callback = epoch_shuffled_dataset(
        {INDEX_KEY: np.arange(len(arrays[TEXT_KEY]), dtype="int64")},
        batch_size,
        seed=seed,
    )
    constants = {k: tf.constant(v) for k, v in arrays.items()}
    views = augment.views_map_fn(
        image_views, text_views, seed=int(seed), epoch=callback.variable
    )
    steps = index_batches.cardinality()
    ds = index_batches.unbatch().map(
        lambda e: {
            **{k: tf.gather(c, e[INDEX_KEY]) for k, c in constants.items()},
            INDEX_KEY: e[INDEX_KEY],
        }
    )
    # Deterministic (ordered) parallel map: the batches do not depend on timing.
    ds = ds.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE), callback


class EpochArrays:
    """Training arrays that differ from epoch to epoch: each value has a
    leading epoch axis `(E, N, ...)` and epoch `e` trains on `value[e]`.

    For features precomputed per epoch, e.g. a locked backbone's features of
    each epoch's augmented views (`keras_towers.recipes_rocket`): with
    `training.train` the batches come in `epoch_shuffled_dataset`'s order
    (a function of `(seed, epoch)`), so a resume is exact. Training past
    epoch `E - 1` is an error.

    Example:

    ```python
    arrays = keras_towers.training.EpochArrays(
        {"image_features": features})   # (epochs, N, F)
    keras_towers.training.train(model, arrays, epochs=features.shape[0])
    ```
    """

    def __init__(self, arrays: dict):
        if not arrays:
            raise ValueError("`EpochArrays` needs at least one array.")
        shapes = {k: np.shape(v)[:2] for k, v in arrays.items()}
        if (
            any(len(shape) < 2 for shape in shapes.values())
            or len(set(shapes.values())) != 1
        ):
            raise ValueError(
                "Every `EpochArrays` array must have the same leading (epochs, "
                f"examples) axes. Received shapes {shapes}."
            )
        self.arrays = dict(arrays)
        self.epochs, self.num_examples = next(iter(shapes.values()))

    def __len__(self) -> int:
        return self.num_examples


def epoch_arrays_dataset(arrays: EpochArrays, batch_size: int, seed: int = 0):
    """`epoch_shuffled_dataset`'s batches of `arrays` (an `EpochArrays`),
    epoch `e` reading `arrays.arrays[key][e]`. Returns `(dataset, callback)`."""
    order, callback = epoch_shuffled_dataset(
        {INDEX_KEY: np.arange(len(arrays), dtype="int64")}, batch_size, seed=seed
    )
    constants = {k: tf.constant(v) for k, v in arrays.arrays.items()}
    epoch = callback.variable
    message = (
        f"The EpochArrays hold {arrays.epochs} epochs of training data; "
        "training went past them."
    )

    def gather(batch):
        limit = tf.constant(arrays.epochs, epoch.dtype)
        checks = [tf.debugging.assert_less(epoch, limit, message=message)]
        with tf.control_dependencies(checks):
            e = tf.identity(epoch)
        return {k: tf.gather(c[e], batch[INDEX_KEY]) for k, c in constants.items()}

    return order.map(gather).prefetch(tf.data.AUTOTUNE), callback


def _as_arrays(pairs: PairArrays | dict) -> dict:
    if isinstance(pairs, PairArrays):
        return {IMAGE_KEY: pairs.images, TEXT_KEY: pairs.texts.astype(str)}
    return dict(pairs)


def _num_examples(pairs: PairArrays | dict) -> int:
    if isinstance(pairs, (PairArrays, EpochArrays)):
        return len(pairs)
    return len(next(iter(pairs.values()))) if pairs else 0


def ordered_dataset(pairs: PairArrays | dict, batch_size: int) -> tf.data.Dataset:
    """The pairs (or a dict of arrays) in order, batched (for validation)."""
    return tf.data.Dataset.from_tensor_slices(_as_arrays(pairs)).batch(batch_size)


def check_pairs_framing(model, train_pairs, validation_pairs=None) -> None:
    """Refuse training or validation pairs framed by another rule than
    `model` frames images (`PairArrays.check_model_framing`)."""
    for pairs, what in (
        (train_pairs, "training pairs"),
        (validation_pairs, "validation pairs"),
    ):
        if isinstance(pairs, PairArrays):
            pairs.check_model_framing(model, what)


def _warn_if_truncated(model, pairs, what: str) -> None:
    """Warn once (`TruncationWarning`) when captions are longer than the
    model's text context."""
    if isinstance(pairs, PairArrays):
        texts = pairs.texts
    else:
        texts = pairs.get("texts") if isinstance(pairs, dict) else None
    preprocessor = getattr(model, "preprocessor", None)
    if texts is not None and hasattr(preprocessor, "warn_if_truncated"):
        preprocessor.warn_if_truncated(
            [str(t) for t in texts], what=f"{what}' captions", stacklevel=3
        )


def train(
    model,
    train_pairs: PairArrays | EpochArrays | dict,
    epochs: int,
    batch_size: int = 128,
    validation_pairs: PairArrays | dict | None = None,
    seed: int = 0,
    backup_dir: str | None = None,
    callbacks=(),
    verbose="auto",
    image_views=None,
    text_views=None,
    accumulation_steps: int = 1,
) -> dict:
    """Fit `model` reproducibly; resume from `backup_dir` if it holds a backup.

    The model must be compiled. With `backup_dir`, `SafeBackupAndRestore`
    saves a backup every epoch and a rerun with the same arguments continues
    where the interrupted run stopped, with the same batches, so it ends
    with the same weights; a backup damaged by a full disk or a killed
    process is skipped for the previous one. `train_pairs` and
    `validation_pairs` may also be dicts of equally long arrays (e.g. cached
    frozen-tower features with their captions): the batch order is the same.

    With `image_views` and `text_views` (`keras_towers.augment` views, the
    first of each the global one; `text_views` alone augments the captions
    only) the training batches are
    `epoch_shuffled_view_dataset`'s, augmented per `(seed, epoch, index)`,
    so a resume is still exact; validation stays on the plain pairs.
    `train_pairs` may also be `EpochArrays` (data precomputed per epoch, e.g.
    locked-backbone features of each epoch's augmented views).
    `accumulation_steps` is `ContrastiveModel.fit`'s.

    Returns:
        The history dict (`History.history`) of the epochs run now, plus
        `"seconds"` (wall time of this call).
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
    check_pairs_framing(model, train_pairs, validation_pairs)
    _warn_if_truncated(model, train_pairs, "training pairs")
    if validation_pairs is not None:
        _warn_if_truncated(model, validation_pairs, "validation pairs")
    if image_views is not None and text_views is None:
        raise ValueError(
            "`image_views` need `text_views` (the first of each is the global "
            f"view). Received image_views={image_views!r}, text_views=None."
        )
    if isinstance(train_pairs, EpochArrays):
        if text_views is not None:
            raise ValueError(
                "`EpochArrays` are precomputed per epoch: pass no `image_views` "
                "/ `text_views` with them."
            )
        if epochs > train_pairs.epochs:
            raise ValueError(
                f"`epochs={epochs}` but the EpochArrays hold "
                f"{train_pairs.epochs} epochs of training data."
            )
        ds, epoch_callback = epoch_arrays_dataset(train_pairs, batch_size, seed=seed)
    elif text_views is None:
        ds, epoch_callback = epoch_shuffled_dataset(train_pairs, batch_size, seed=seed)
    else:
        ds, epoch_callback = epoch_shuffled_view_dataset(
            train_pairs, batch_size, seed, image_views, text_views
        )
    callbacks = [epoch_callback, *callbacks]
    if backup_dir is not None:
        callbacks.append(SafeBackupAndRestore(backup_dir))
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
        accumulation_steps=accumulation_steps,
    )
    result = dict(history.history)
    result["seconds"] = time.perf_counter() - start
    return result
