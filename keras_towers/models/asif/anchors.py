"""ASIF's anchor set: storage, validation, adding and removing anchors.

The anchors are plain NumPy arrays (features in `anchor_dtype`, int64 ids)
and two lists of strings (captions, image references). They are not Keras
variables: the set grows and shrinks in milliseconds, and a variable would
copy it on every change. Keras saving reaches them through the model's
`save_own_variables` (see `saving.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_towers.ops import l2_normalize_numpy
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

ANCHOR_DTYPES = ("float32", "float16")


class Anchor(NamedTuple):
    """One anchor pair, as seen by `remove_anchors(where=...)`."""

    index: int
    id: int
    caption: str
    image_ref: str


class AnchorStore:
    """Growable anchor arrays (capacity grows by half, so appends are
    amortised)."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.size = 0
        self.next_id = 0
        self._image = None
        self._text = None
        self._ids = np.zeros(0, "int64")
        self.captions: list[str] = []
        self.image_refs: list[str] = []

    @property
    def image(self):
        return None if self._image is None else self._image[: self.size]

    @property
    def text(self):
        return None if self._text is None else self._text[: self.size]

    @property
    def ids(self):
        return self._ids[: self.size]

    def _reserve(self, needed: int, image_dim: int, text_dim: int):
        capacity = 0 if self._image is None else len(self._image)
        if needed <= capacity:
            return
        capacity = max(needed, int(capacity * 1.5), 1024)
        for attr, dim in (("_image", image_dim), ("_text", text_dim)):
            grown = np.empty((capacity, dim), self.dtype)
            old = getattr(self, attr)
            if old is not None:
                grown[: self.size] = old[: self.size]
            setattr(self, attr, grown)
        ids = np.empty(capacity, "int64")
        ids[: self.size] = self._ids[: self.size]
        self._ids = ids

    def append(self, image, text, ids, captions, image_refs):
        n = len(image)
        self._reserve(self.size + n, image.shape[1], text.shape[1])
        end = self.size + n
        self._image[self.size : end] = image
        self._text[self.size : end] = text
        self._ids[self.size : end] = ids
        self.captions.extend(captions)
        self.image_refs.extend(image_refs)
        self.size = end
        if n:
            self.next_id = max(self.next_id, int(ids.max()) + 1)

    def keep(self, mask: np.ndarray):
        n = int(mask.sum())
        self._image[:n] = self.image[mask]
        self._text[:n] = self.text[mask]
        self._ids[:n] = self.ids[mask]
        kept = np.flatnonzero(mask)
        self.captions = [self.captions[i] for i in kept]
        self.image_refs = [self.image_refs[i] for i in kept]
        self.size = n


# === Validation ===


def read_only(x):
    if x is None:
        return None
    view = x.view()
    view.flags.writeable = False
    return view


def to_str(value, name: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a string. Received {type(value).__name__}: {value!r}."
        )
    return value


def num_items(images) -> int:
    if isinstance(images, (list, tuple)):
        return len(images)
    shape = np.shape(images)
    return 1 if len(shape) == 3 else (shape[0] if shape else 0)


def check_features(x, name: str) -> np.ndarray:
    x = np.asarray(keras.ops.convert_to_numpy(x))
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise ValueError(
            f"`{name}` must be a 2-D numeric array (rows are vectors). "
            f"Received shape {x.shape}, dtype {x.dtype}."
        )
    if x.shape[1] == 0:
        raise ValueError(f"`{name}` has zero width.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def check_strings(values, n: int, name: str, default):
    if values is None:
        return None if default is None else [default] * n
    if isinstance(values, (str, bytes)):
        raise TypeError(f"`{name}` must be a list of {n} strings, not one string.")
    values = [to_str(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if len(values) != n:
        raise ValueError(
            f"`{name}` must have one string per anchor: expected {n}, "
            f"received {len(values)}."
        )
    return values


def check_ids(ids, n: int, store: AnchorStore) -> np.ndarray:
    """`n` new unique int64 ids (consecutive new ones if `ids` is None)."""
    if ids is None:
        ids = np.arange(store.next_id, store.next_id + n)
    ids = np.asarray(ids)
    if ids.shape != (n,) or (n and ids.dtype.kind not in "iu"):
        raise ValueError(
            f"`ids` must be {n} integers, one per anchor. Received "
            f"shape {ids.shape}, dtype {ids.dtype}."
        )
    ids = ids.astype("int64")
    if len(np.unique(ids)) != n:
        raise ValueError("`ids` must be unique.")
    clash = ids[np.isin(ids, store.ids)]
    if len(clash):
        raise ValueError(
            f"Anchor ids already in use: {clash[:5].tolist()}"
            f"{' ...' if len(clash) > 5 else ''}."
        )
    return ids


def removal_mask(store: AnchorStore, indices=None, ids=None, where=None):
    """Boolean mask of the anchors to remove, by position, id or predicate."""
    if sum(x is not None for x in (indices, ids, where)) != 1:
        raise ValueError("Give exactly one of `indices`, `ids` or `where`.")
    remove = np.zeros(store.size, bool)
    if indices is not None:
        indices = np.asarray(indices).reshape(-1)
        if indices.size and indices.dtype.kind not in "iu":
            raise ValueError(
                f"`indices` must be integers. Received dtype {indices.dtype}."
            )
        bad = indices[(indices < 0) | (indices >= store.size)]
        if len(bad):
            raise IndexError(
                f"Anchor indices out of range [0, {store.size}): {bad[:5].tolist()}."
            )
        remove[indices.astype("int64")] = True
    elif ids is not None:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and ids.dtype.kind not in "iu":
            raise ValueError(f"`ids` must be integers. Received dtype {ids.dtype}.")
        unknown = ids[~np.isin(ids, store.ids)]
        if len(unknown):
            raise ValueError(
                f"Unknown anchor ids: {unknown[:5].tolist()}"
                f"{' ...' if len(unknown) > 5 else ''}."
            )
        remove = np.isin(store.ids, ids)
    else:
        if not callable(where):
            raise TypeError(f"`where` must be callable. Received: {where!r}")
        for i, (anchor_id, caption, ref) in enumerate(
            zip(store.ids.tolist(), store.captions, store.image_refs, strict=True)
        ):
            remove[i] = bool(where(Anchor(i, anchor_id, caption, ref)))
    return remove


def _dense(x):
    return x.to_tensor() if isinstance(x, tf.RaggedTensor) else x


class AnchorsMixin:
    """ASIF's anchor-set API: reading, adding and removing anchors.

    Expects `self._anchors` (an `AnchorStore`), the towers, a preprocessor
    and `encode_image_features` / `encode_text_features`.
    """

    @property
    def num_anchors(self) -> int:
        """Number of anchor pairs."""
        return self._anchors.size

    @property
    def anchor_ids(self) -> np.ndarray:
        """Stable int64 id of each anchor (read-only view)."""
        return read_only(self._anchors.ids)

    @property
    def anchor_captions(self) -> list[str]:
        """Caption of each anchor (a copy)."""
        return list(self._anchors.captions)

    @property
    def anchor_image_refs(self) -> list[str]:
        """Image reference (path or id string) of each anchor (a copy)."""
        return list(self._anchors.image_refs)

    @property
    def anchor_image_features(self) -> np.ndarray:
        """Unit-norm anchor image features `(N, Di)` (read-only view)."""
        return read_only(self._anchors.image)

    @property
    def anchor_text_features(self) -> np.ndarray:
        """Unit-norm anchor caption features `(N, Dt)` (read-only view)."""
        return read_only(self._anchors.text)

    def add_anchors(
        self,
        images=None,
        texts=None,
        *,
        image_features=None,
        text_features=None,
        captions: Sequence[str] | None = None,
        image_refs: Sequence[str] | None = None,
        ids=None,
        pairs: tf.data.Dataset | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Add anchor pairs, from raw data, from features or from a dataset.

        Give exactly one of: `images` and `texts` (encoded with the frozen
        towers; `texts` are also the captions), `image_features` and
        `text_features` (already encoded; normalised here), or `pairs`, a
        `tf.data.Dataset` of `{"images", "texts"}` examples, batched or not
        (images uint8 of any size; an optional `"image_refs"` string key is
        used as the image references).

        Args:
            images: raw images (a batch, or a list of images of any size).
            texts: list of captions, one per image.
            image_features: array `(n, Di)`.
            text_features: array `(n, Dt)`.
            captions: list of `n` strings (default: `texts`, else `""`).
            image_refs: list of `n` strings naming each anchor image (a path
                or an id; default: the anchor id).
            ids: optional `n` unique integers (default: consecutive new ids).
            pairs: a `tf.data.Dataset` of raw pairs.
            batch_size: int. Batch size for encoding.

        Returns:
            int64 array of the new anchors' ids.
        """
        given = {
            "raw": images is not None or texts is not None,
            "features": image_features is not None or text_features is not None,
            "pairs": pairs is not None,
        }
        if sum(given.values()) != 1:
            raise ValueError(
                "Give exactly one of: `images` + `texts`, `image_features` + "
                "`text_features`, or `pairs` (a tf.data.Dataset)."
            )
        if given["pairs"]:
            if captions is not None:
                raise ValueError("With `pairs`, captions are the dataset's texts.")
            image_features, text_features, captions, refs = self._encode_pairs(
                pairs, batch_size
            )
            image_refs = image_refs if image_refs is not None else refs
        elif given["raw"]:
            if images is None or texts is None:
                raise ValueError("Give both `images` and `texts`.")
            if isinstance(texts, (str, bytes)):
                texts = [texts]
            texts = [to_str(t, f"texts[{i}]") for i, t in enumerate(texts)]
            num_images = num_items(images)
            if num_images != len(texts):
                raise ValueError(
                    f"`images` and `texts` must pair up: received {num_images} "
                    f"images and {len(texts)} texts."
                )
            image_features = self.encode_image_features(images, batch_size)
            text_features = self.encode_text_features(texts, batch_size)
            if captions is None:
                captions = texts
        elif image_features is None or text_features is None:
            raise ValueError("Give both `image_features` and `text_features`.")
        return self._append(image_features, text_features, captions, image_refs, ids)

    def _append(
        self, image_features, text_features, captions, image_refs, ids, normalize=True
    ):
        image_features = check_features(image_features, "image_features")
        text_features = check_features(text_features, "text_features")
        n = len(image_features)
        if len(text_features) != n:
            raise ValueError(
                "`image_features` and `text_features` must have one row per "
                f"anchor pair. Received {n} and {len(text_features)} rows."
            )
        for name, features in (("image", image_features), ("text", text_features)):
            expected = self._unimodal_dim(name)
            if expected is not None and features.shape[1] != expected:
                raise ValueError(
                    f"`{name}_features` must have width {expected} (the "
                    f"{name} anchors / tower). Received {features.shape[1]}."
                )
        captions = check_strings(captions, n, "captions", default="")
        ids = check_ids(ids, n, self._anchors)
        image_refs = check_strings(image_refs, n, "image_refs", default=None)
        if image_refs is None:
            image_refs = [str(i) for i in ids.tolist()]
        if normalize:
            # Stored unit-norm, so inner products with anchors are cosines.
            image_features = l2_normalize_numpy(image_features)
            text_features = l2_normalize_numpy(text_features)
        self._anchors.append(image_features, text_features, ids, captions, image_refs)
        self.anchor_version += 1
        return ids

    def _unimodal_dim(self, modality: str) -> int | None:
        """Width of one modality's features: the stored anchors', else the
        tower's `output_dim`."""
        stored = self._anchors.image if modality == "image" else self._anchors.text
        if stored is not None:
            return stored.shape[1]
        tower = getattr(self, f"{modality}_tower")
        return getattr(tower, "output_dim", None)

    def _restore_anchors(
        self, image_features, text_features, captions, image_refs, ids, next_id
    ):
        """Replace the anchor set with saved, already unit-norm anchors
        (float16 values stay bit-exact)."""
        self._anchors = AnchorStore(self.anchor_dtype)
        if len(ids):
            self._append(
                image_features, text_features, captions, image_refs, ids, False
            )
        self._anchors.next_id = max(self._anchors.next_id, int(next_id))
        self.anchor_version += 1

    def remove_anchors(
        self,
        indices=None,
        *,
        ids=None,
        where: Callable[[Anchor], bool] | None = None,
    ) -> np.ndarray:
        """Remove anchors by position, by id, or by a predicate.

        Args:
            indices: positions in the current anchor set (`0 <= i < N`).
            ids: anchor ids (as returned by `add_anchors`); unknown ids raise.
            where: a function of an `Anchor` (`index`, `id`, `caption`,
                `image_ref`) returning True for anchors to remove.

        Returns:
            int64 array of the removed anchors' ids.
        """
        store = self._anchors
        remove = removal_mask(store, indices=indices, ids=ids, where=where)
        removed = store.ids[remove].copy()
        if len(removed):
            store.keep(~remove)
            self.anchor_version += 1
        return removed

    def _encode_pairs(self, pairs, batch_size):
        if not isinstance(pairs, tf.data.Dataset):
            raise TypeError(
                f"`pairs` must be a tf.data.Dataset. Received {type(pairs).__name__}."
            )
        spec = pairs.element_spec
        if not isinstance(spec, dict) or not {IMAGE_KEY, TEXT_KEY} <= set(spec):
            raise ValueError(
                "`pairs` must yield dicts with 'images' and 'texts' (and "
                f"optionally 'image_refs'). Received element_spec {spec}."
            )
        for arg in ("image", "text"):
            self._require_tower(arg)
        self._require_preprocessor()
        keys = [key for key in (IMAGE_KEY, TEXT_KEY, "image_refs") if key in spec]
        pairs = pairs.map(lambda e: {key: e[key] for key in keys})
        rank = spec[TEXT_KEY].shape.rank
        if rank not in (0, 1):
            raise ValueError(
                "'texts' must be one string per example (rank 0) or a batch of "
                f"strings (rank 1). Received rank {rank}."
            )
        batched = rank == 1
        if batched and isinstance(spec[IMAGE_KEY], tf.RaggedTensorSpec):
            # Variable-size images in one batch: resize them one by one.
            pairs, batched = pairs.unbatch(), False
            pairs = pairs.map(lambda e: {k: _dense(v) for k, v in e.items()})

        def preprocess(example):
            return self.preprocessor(dict(example)), example[TEXT_KEY]

        pairs = pairs.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        if not batched:
            pairs = pairs.batch(batch_size)
        image_chunks, text_chunks, captions, refs = [], [], [], []
        for inputs, texts in pairs.prefetch(2).as_numpy_iterator():
            model_inputs = {
                k: inputs[k]
                for k in (IMAGE_KEY, "token_ids", "padding_mask")
                if k in inputs
            }
            outputs = self.predict_on_batch(model_inputs)
            image_chunks.append(keras.ops.convert_to_numpy(outputs["image_embeddings"]))
            text_chunks.append(keras.ops.convert_to_numpy(outputs["text_embeddings"]))
            captions.extend(t.decode("utf-8") for t in np.atleast_1d(texts))
            if "image_refs" in inputs:
                refs.extend(
                    r.decode("utf-8") for r in np.atleast_1d(inputs["image_refs"])
                )
        if not image_chunks:
            raise ValueError("`pairs` is empty.")
        return (
            np.concatenate(image_chunks),
            np.concatenate(text_chunks),
            captions,
            refs if refs else None,
        )
