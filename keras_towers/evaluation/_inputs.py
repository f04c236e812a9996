"""Input handling shared by the evaluation functions.

Evaluation talks to a model only through `encode_images` / `encode_texts`,
and reads images from arrays, lists or `tf.data` datasets in fixed-size
batches so that a dataset never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

LABEL_KEY = "labels"


def check_model(model) -> None:
    """Raise unless `model` has callable `encode_images` and `encode_texts`."""
    for method in ("encode_images", "encode_texts"):
        if not callable(getattr(model, method, None)):
            raise TypeError(
                "`model` must have `encode_images(images, batch_size)` and "
                f"`encode_texts(texts, batch_size)` methods; {type(model).__name__} "
                f"has no callable `{method}`."
            )


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"`batch_size` must be an int. Received {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received {batch_size}.")
    return int(batch_size)


def _check_embeddings(out, n: int, what: str, model) -> np.ndarray:
    out = np.asarray(keras.ops.convert_to_numpy(out), dtype="float32")
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(
            f"{type(model).__name__}.{what} must return an array (N, D) with one "
            f"row per input; for {n} inputs it returned shape {out.shape}."
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(
            f"{type(model).__name__}.{what} returned non-finite values (NaN or "
            "inf); cannot score them."
        )
    return out


def encode_images(model, images, batch_size: int) -> np.ndarray:
    """`model.encode_images` with a shape and finiteness check."""
    out = model.encode_images(images, batch_size=batch_size)
    return _check_embeddings(out, len(images), "encode_images", model)


def encode_texts(model, texts: list[str], batch_size: int) -> np.ndarray:
    """`model.encode_texts` with a shape and finiteness check."""
    out = model.encode_texts(texts, batch_size=batch_size)
    return _check_embeddings(out, len(texts), "encode_texts", model)


def as_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return as_text(value.item())
    if isinstance(value, str):
        return value
    raise TypeError(f"Expected a string caption. Received {type(value).__name__}.")


def _stack_if_uniform(images: list) -> np.ndarray | list:
    """One array when all images share a shape (faster to encode), else list."""
    if images and len({im.shape for im in images}) == 1:
        return np.stack(images)
    return images


def as_image_collection(images, name: str = "images") -> np.ndarray | list:
    """An in-memory batch (N, H, W, C) array or a list of (H, W, C) arrays."""
    if isinstance(images, (list, tuple)):
        out = [np.asarray(im) for im in images]
        for i, im in enumerate(out):
            if im.ndim != 3:
                raise ValueError(
                    f"`{name}[{i}]` must be an image (H, W, C) (grayscale as "
                    f"(H, W, 1)). Received shape {im.shape}."
                )
        return out
    if not isinstance(images, np.ndarray):
        images = np.asarray(keras.ops.convert_to_numpy(images))
    if images.ndim != 4:
        raise ValueError(
            f"`{name}` must be a batch (N, H, W, C) (grayscale as (N, H, W, 1)), "
            f"a list of (H, W, C) images or a tf.data.Dataset. Received an array "
            f"of shape {images.shape}."
        )
    return images


def _check_labels(labels, n: int, name: str) -> np.ndarray:
    labels = np.asarray(keras.ops.convert_to_numpy(labels))
    if labels.ndim != 1:
        raise ValueError(
            f"`{name}` must be one label per image (shape (N,)). Received shape "
            f"{labels.shape}."
        )
    if len(labels) != n:
        raise ValueError(
            f"`{name}` has {len(labels)} entries but there are {n} images; they "
            "must match."
        )
    return labels


class Batches:
    """Fixed-size batches of `(images, extra)` from memory or a dataset.

    `images` in each batch is a (B, H, W, C) array or a list of (H, W, C)
    arrays; `extra` is a NumPy array of labels, a list of captions, or None.
    `total` is the number of examples when known (for progress bars).
    """

    def __init__(
        self,
        images,
        extra=None,
        *,
        batch_size: int,
        extra_key: str = LABEL_KEY,
        require_extra: bool = True,
        images_name: str = "images",
        extra_name: str = "labels",
    ):
        self.batch_size = check_batch_size(batch_size)
        self.extra_key = extra_key
        self.extra_name = extra_name
        self.images_name = images_name
        self.is_text = extra_key == TEXT_KEY
        if isinstance(images, tf.data.Dataset):
            if extra is not None:
                raise ValueError(
                    f"`{images_name}` is a tf.data.Dataset, which carries its own "
                    f"{extra_name}; pass `{extra_name}=None`."
                )
            self.dataset = self._select(images, require_extra)
            self.memory = None
            cardinality = int(images.cardinality())
            rank = self.dataset.element_spec[0].shape.rank
            # A batched dataset's cardinality counts batches, not examples.
            self.total = cardinality if cardinality >= 0 and rank == 3 else None
        else:
            self.dataset = None
            collection = as_image_collection(images, images_name)
            if extra is None:
                if require_extra:
                    raise ValueError(
                        f"`{extra_name}` is required when `{images_name}` is an "
                        "array or a list (only a tf.data.Dataset carries its own)."
                    )
            elif self.is_text:
                extra = [as_text(t) for t in extra]
                if len(extra) != len(collection):
                    raise ValueError(
                        f"`{extra_name}` has {len(extra)} entries but there are "
                        f"{len(collection)} images; they must match."
                    )
            else:
                extra = _check_labels(extra, len(collection), extra_name)
            self.memory = (collection, extra)
            self.total = len(collection)

    def _select(self, ds: tf.data.Dataset, require_extra: bool) -> tf.data.Dataset:
        """Map each element to `(image, extra)` (or `(image,)`), dropping the rest."""
        spec = ds.element_spec
        key = self.extra_key
        if isinstance(spec, dict):
            if IMAGE_KEY not in spec:
                raise ValueError(
                    f"`{self.images_name}` dataset elements must have an "
                    f'"{IMAGE_KEY}" key. Found keys {sorted(spec)}.'
                )
            if key in spec:
                return ds.map(lambda e: (e[IMAGE_KEY], e[key]))
            if require_extra:
                raise ValueError(
                    f"`{self.images_name}` dataset elements must have a "
                    f'"{key}" key. Found keys {sorted(spec)}.'
                )
            return ds.map(lambda e: (e[IMAGE_KEY],))
        if isinstance(spec, tuple):
            if len(spec) == 2:
                return ds
            if len(spec) == 1 and not require_extra:
                return ds
            raise ValueError(
                f"`{self.images_name}` dataset elements must be dicts "
                f'{{"{IMAGE_KEY}": ..., "{key}": ...}} or (image, {key[:-1]}) '
                f"tuples. Received tuples of length {len(spec)}."
            )
        if isinstance(spec, tf.TensorSpec) and not require_extra:
            return ds.map(lambda image: (image,))
        raise ValueError(
            f"`{self.images_name}` dataset elements must be dicts "
            f'{{"{IMAGE_KEY}": ..., "{key}": ...}} or (image, {key[:-1]}) tuples. '
            f"Received element_spec {spec}."
        )

    def __iter__(self) -> Iterator[tuple]:
        if self.memory is not None:
            images, extra = self.memory
            for start in range(0, len(images), self.batch_size):
                stop = start + self.batch_size
                yield images[start:stop], None if extra is None else extra[start:stop]
            return
        yield from self._iter_dataset()

    def _iter_dataset(self):
        images, extras = [], []
        for element in self.dataset.as_numpy_iterator():
            image = np.asarray(element[0])
            extra = element[1] if len(element) > 1 else None
            if image.ndim == 4:  # a batched dataset: split it
                images.extend(image)
                if extra is not None:
                    extras.extend(np.asarray(extra).reshape(-1))
            elif image.ndim == 3:
                images.append(image)
                if extra is not None:
                    extras.append(extra)
            else:
                raise ValueError(
                    f'`{self.images_name}` dataset "{IMAGE_KEY}" must be '
                    f"(H, W, C) images (grayscale as (H, W, 1)). Received shape "
                    f"{image.shape}."
                )
            while len(images) >= self.batch_size:
                yield self._emit(images[: self.batch_size], extras[: self.batch_size])
                images = images[self.batch_size :]
                extras = extras[self.batch_size :]
        if images:
            yield self._emit(images, extras)

    def _emit(self, images: list, extras: list):
        if not extras:
            return _stack_if_uniform(images), None
        if len(extras) != len(images):
            raise ValueError(
                f"`{self.images_name}` dataset yielded {len(images)} images but "
                f"{len(extras)} {self.extra_name}; expected one per image."
            )
        if self.is_text:
            return _stack_if_uniform(images), [as_text(t) for t in extras]
        labels = np.asarray(extras)
        if labels.ndim != 1:
            raise ValueError(
                f'`{self.images_name}` dataset "{self.extra_key}" must be one '
                f"scalar per image. Received shape {labels.shape[1:]} per image."
            )
        return _stack_if_uniform(images), labels


def split_pairs(pairs: Sequence) -> tuple[list, list[str]]:
    """`[(image, caption), ...]` -> `(images, captions)`."""
    images, texts = [], []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(
                f"`images[{i}]` must be an (image, caption) pair when `texts` is "
                f"None. Received {type(pair).__name__}."
            )
        images.append(np.asarray(pair[0]))
        texts.append(as_text(pair[1]))
    return images, texts


def looks_like_pairs(images) -> bool:
    """True for a list whose first item is `(image, caption)`."""
    if not isinstance(images, (list, tuple)) or not images:
        return False
    first = images[0]
    return (
        isinstance(first, (tuple, list))
        and len(first) == 2
        and isinstance(first[1], (str, bytes))
    )


def progbar(total: int | None, verbose: int):
    """A `keras.utils.Progbar`, or None when silenced."""
    if not verbose:
        return None
    return keras.utils.Progbar(total, verbose=verbose, unit_name="image")
