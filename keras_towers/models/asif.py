"""ASIF: a multimodal model from two frozen encoders and an anchor set.

No training at all: an image is represented by its similarity to every anchor
image, a text by its similarity to every anchor caption (the maths lives in
`keras_towers.relative`). Updating the model means adding or removing anchors,
which takes milliseconds when their features are given.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from keras_towers import presets as preset_lib
from keras_towers import relative
from keras_towers.models.base import ContrastiveModel
from keras_towers.models.base import l2_normalize
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import from_scratch_towers

ANCHORS_FILE = "anchors.safetensors"
IMAGE_TOWER_FILE = "image_tower.safetensors"
TEXT_TOWER_FILE = "text_tower.safetensors"
ANCHOR_DTYPES = ("float32", "float16")
ZERO_SHOT_MODES = ("best_single", "average")
#: `encode_*(sparse=False)` refuses to build a dense result larger than this.
MAX_DENSE_BYTES = 4 << 30

_TOWER_SOURCES: dict[str, Callable[[], keras.layers.Layer]] = {}


def register_tower_source(name: str, loader: Callable[[], keras.layers.Layer]):
    """Register a frozen encoder under a name, for ASIF presets.

    An ASIF preset stores only the name of a registered tower (not its
    weights): the tower is rebuilt by calling `loader()` at load time.

    Args:
        name: str. The reference written into presets.
        loader: a function of no arguments returning the tower.

    Example:

    ```python
    keras_towers.models.asif.register_tower_source(
        "my_vit", lambda: keras_towers.ImageTower.vit(image_size=32)
    )
    ```
    """
    if not isinstance(name, str) or not name or "#" in name:
        raise ValueError(
            f"A tower source name must be a non-empty string without '#'. "
            f"Received: {name!r}"
        )
    if not callable(loader):
        raise TypeError(f"`loader` must be callable. Received: {loader!r}")
    _TOWER_SOURCES[name] = loader


def load_tower_source(source: str, _cache: dict | None = None) -> keras.layers.Layer:
    """Build the tower a source reference points to.

    Args:
        source: a name given to `register_tower_source`, or
            `"<preset>#<attribute>"`: a tower of a keras_towers model preset
            (shipped name or directory), e.g. `"shapes_clip_tiny#image_tower"`.

    Returns:
        The tower (a `keras.layers.Layer`).
    """
    if source not in _TOWER_SOURCES and isinstance(source, str) and "#" not in source:
        # The installed pretrained encoders register themselves when their
        # module is imported (it imports this one, so not at module level).
        from keras_towers.converters import asif_sources  # noqa: F401
    if source in _TOWER_SOURCES:
        return _TOWER_SOURCES[source]()
    if isinstance(source, str) and "#" in source:
        preset, attribute = source.rsplit("#", 1)
        cache = {} if _cache is None else _cache
        if preset not in cache:
            cache[preset] = ContrastiveModel.from_preset(preset)
        tower = getattr(cache[preset], attribute, None)
        if not isinstance(tower, keras.layers.Layer):
            raise ValueError(
                f"Preset {preset!r} has no tower named {attribute!r} (from "
                f"source {source!r}); use 'image_tower' or 'text_tower'."
            )
        return tower
    raise ValueError(
        f"Unknown tower source {source!r}. Registered: {sorted(_TOWER_SOURCES)}; "
        "or use '<preset name or dir>#image_tower' / '#text_tower'."
    )


class Anchor(NamedTuple):
    """One anchor pair, as seen by `remove_anchors(where=...)`."""

    index: int
    id: int
    caption: str
    image_ref: str


class _AnchorStore:
    """Growable anchor arrays (capacity doubles, so appends are amortised)."""

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


@dataclasses.dataclass
class ZeroShotHead:
    """Zero-shot class vectors over one anchor set.

    Attributes:
        weights: `scipy.sparse.csr_array`. `(C, N)` averaged class vectors
            (`mode="average"`) or `(C * T, N)` prompt vectors laid out
            class-major (`mode="best_single"`).
        mode: `"best_single"` or `"average"`.
        num_classes: int.
        num_templates: int.
    """

    weights: sp.csr_array
    mode: str
    num_classes: int
    num_templates: int

    def scores(self, image_representations) -> np.ndarray:
        """`(Q, C)` class scores for `(Q, N)` image representations."""
        sims = relative.similarity(image_representations, self.weights)
        if self.mode == "best_single":
            return relative.group_max(sims, self.num_templates)
        return sims

    def predict(self, image_representations) -> np.ndarray:
        """Predicted class index per image."""
        return np.argmax(self.scores(image_representations), axis=1)


@keras.saving.register_keras_serializable(package="keras_towers")
class ASIF(ContrastiveModel):
    """ASIF: frozen image and text encoders plus an anchor set, no training.

    An image `x` is represented by its cosine similarities to the `N` anchor
    images, a text `y` by its similarities to the `N` anchor captions. Each
    vector keeps its top `k` entries (clamped to `N`), which are clipped at 0,
    raised to the power `p` and L2-normalised; `sim(x, y)` is the sparse dot
    product of the two vectors (anchor `n` is the same pair in both).
    Unimodal features are L2-normalised (anchors when stored, queries when
    encoded), as in the official code; there is no centring.

    `encode_images` / `encode_texts` return these representations: by
    default a dense float32 `(Q, N)` array (zeros outside the top-k, unit-norm
    rows), so dot-product evaluation (zero-shot, retrieval) works unchanged;
    with `sparse=True` a `scipy.sparse.csr_array` of the same matrix, which
    stays small for huge anchor sets. Representations depend on the anchors:
    recompute them after `add_anchors` / `remove_anchors`.

    Anchor features are stored L2-normalised, in float32 or float16
    (`anchor_dtype`; half the memory, similarities still accumulate in
    float32). Similarities are computed one `(query chunk, anchor chunk)`
    block at a time with a running top-k merge, so no `Q x N` (or `N x N`)
    matrix is ever dense for the sparse outputs.

    `call` (and `predict`) return the encoders' unit-norm *unimodal*
    features, `{"image_embeddings", "text_embeddings"}`; `fit` is refused.

    Args:
        image_tower: a frozen image encoder (`keras_towers.ImageTower` or any
            layer mapping preprocessed images to vectors), or `None` to work
            from precomputed features only.
        text_tower: a frozen text encoder (`keras_towers.TextTower`, taking
            `{"token_ids", "padding_mask"}`), or `None`.
        preprocessor: `keras_towers.ContrastivePreprocessor` for raw images
            and strings, or `None`.
        k: int. Non-zeros kept per representation (default 800, the
            official code's default).
        p: float. Exponent applied to the kept similarities (default 8).
        anchor_dtype: `"float32"` or `"float16"`. Storage of anchor features.
        anchor_chunk_size: int. Anchors per similarity chunk.
        image_tower_source: str or `None`. Where `image_tower` comes from
            (a name given to `register_tower_source`, or
            `"<preset>#image_tower"`). Presets then store this reference
            instead of the tower's weights. If `image_tower` is `None`, the
            tower is loaded from the source.
        text_tower_source: str or `None`. The same for the text tower.

    Example:

    ```python
    model = keras_towers.ASIF(image_tower, text_tower, preprocessor, k=800, p=8)
    model.add_anchors(images=anchor_images, texts=anchor_captions)
    image_reps = model.encode_images(images)  # (Q, N), unit-norm rows
    text_reps = model.encode_texts(["a photo of a cat", "a photo of a dog"])
    scores = image_reps @ text_reps.T
    model.explain(images[0], "a photo of a cat", top_n=5)
    model.save_to_preset("my_asif")
    model = keras_towers.ASIF.from_preset("my_asif")
    ```

    References:
        - [Norelli et al., 2023](https://arxiv.org/abs/2210.01738)
    """

    def __init__(
        self,
        image_tower: keras.layers.Layer | None = None,
        text_tower: keras.layers.Layer | None = None,
        preprocessor: ContrastivePreprocessor | None = None,
        k: int = 800,
        p: float = 8.0,
        anchor_dtype: str = "float32",
        anchor_chunk_size: int = relative.DEFAULT_ANCHOR_CHUNK_SIZE,
        image_tower_source: str | None = None,
        text_tower_source: str | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", "asif")
        k = relative.check_k(k)
        p = relative.check_power(p)
        if anchor_dtype not in ANCHOR_DTYPES:
            raise ValueError(
                f"`anchor_dtype` must be one of {ANCHOR_DTYPES}. "
                f"Received: anchor_dtype={anchor_dtype!r}"
            )
        anchor_chunk_size = relative.check_k(anchor_chunk_size)
        cache: dict = {}
        if image_tower is None and image_tower_source is not None:
            image_tower = load_tower_source(image_tower_source, cache)
        if text_tower is None and text_tower_source is not None:
            text_tower = load_tower_source(text_tower_source, cache)
        for arg, tower in (("image_tower", image_tower), ("text_tower", text_tower)):
            if tower is not None and not isinstance(tower, keras.layers.Layer):
                raise TypeError(
                    f"`{arg}` must be a keras layer (e.g. keras_towers."
                    f"{'ImageTower' if arg == 'image_tower' else 'TextTower'}) "
                    f"or None. Received: {type(tower).__name__}."
                )

        # === Layers ===
        super().__init__(**kwargs)
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.preprocessor = preprocessor
        for tower in (image_tower, text_tower):
            if tower is not None:
                tower.trainable = False  # ASIF never trains its encoders
        self.built = True

        # === Config ===
        self.k = k
        self.p = p
        self.anchor_dtype = anchor_dtype
        self.anchor_chunk_size = anchor_chunk_size
        self.image_tower_source = image_tower_source
        self.text_tower_source = text_tower_source

        # === State ===
        # A plain object, so Keras does not track (or copy) the anchor arrays.
        self._anchors = _AnchorStore(anchor_dtype)
        self._encoding_dim = None
        # Incremented by every anchor change (to spot stale representations).
        self.anchor_version = 0

    # === Forward pass: unimodal features ===

    def call(self, inputs, training=None):
        # Frozen encoders: always inference mode (batch-norm statistics stay).
        outputs = {}
        if IMAGE_KEY in inputs:
            self._require_tower("image")
            features = self.image_tower(inputs[IMAGE_KEY], training=False)
            outputs["image_embeddings"] = l2_normalize(features)
        if "token_ids" in inputs:
            self._require_tower("text")
            text = {k: inputs[k] for k in ("token_ids", "padding_mask") if k in inputs}
            features = self.text_tower(text, training=False)
            outputs["text_embeddings"] = l2_normalize(features)
        if not outputs:
            raise ValueError(
                "ASIF inputs must contain 'images' and/or 'token_ids' "
                f"(preprocessed). Received keys: {sorted(inputs)}."
            )
        return outputs

    def _require_tower(self, modality: str):
        if getattr(self, f"{modality}_tower") is None:
            raise ValueError(
                f"This ASIF has no {modality} tower, so it cannot encode raw "
                f"{modality}s. Pass `{modality}_tower=` or use "
                f"`represent({modality}_features, '{modality}')`."
            )

    def fit(self, *args, **kwargs):
        raise NotImplementedError(
            "ASIF has no training step: its encoders are frozen and it learns "
            "by changing anchors. Use `add_anchors(...)` / `remove_anchors(...)`."
        )

    def save(self, *args, **kwargs):
        raise NotImplementedError(
            "A `.keras` file would hold ASIF's encoders but not its anchors; "
            "use `save_to_preset(dir)` and `ASIF.from_preset(dir)`."
        )

    def compute_loss(self, *args, **kwargs):
        raise NotImplementedError("ASIF has no loss; see `add_anchors`.")

    # === Anchors ===

    @property
    def num_anchors(self) -> int:
        """Number of anchor pairs."""
        return self._anchors.size

    @property
    def embedding_dim(self) -> int:
        """Width of the relative representations (= `num_anchors`)."""
        # While the base class encodes unimodal features, it sizes its
        # outputs with `embedding_dim`: report that tower's width then.
        encoding = getattr(self, "_encoding_dim", None)
        return self._anchors.size if encoding is None else encoding

    def _unimodal_dim(self, modality: str) -> int | None:
        tower = getattr(self, f"{modality}_tower")
        width = getattr(tower, "output_dim", None)
        stored = self._anchors.image if modality == "image" else self._anchors.text
        if width is None and stored is not None:
            width = stored.shape[1]
        return width

    @property
    def anchor_ids(self) -> np.ndarray:
        """Stable int64 id of each anchor (read-only view)."""
        return _read_only(self._anchors.ids)

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
        return _read_only(self._anchors.image)

    @property
    def anchor_text_features(self) -> np.ndarray:
        """Unit-norm anchor caption features `(N, Dt)` (read-only view)."""
        return _read_only(self._anchors.text)

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
            texts = [_to_str(t, f"texts[{i}]") for i, t in enumerate(texts)]
            num_images = _num_items(images)
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
        image_features = _check_features(image_features, "image_features")
        text_features = _check_features(text_features, "text_features")
        n = len(image_features)
        if len(text_features) != n:
            raise ValueError(
                "`image_features` and `text_features` must have one row per "
                f"anchor pair. Received {n} and {len(text_features)} rows."
            )
        for name, features, tower, stored in (
            ("image", image_features, self.image_tower, self._anchors.image),
            ("text", text_features, self.text_tower, self._anchors.text),
        ):
            expected = None
            if stored is not None:
                expected = stored.shape[1]
            elif tower is not None and hasattr(tower, "output_dim"):
                expected = tower.output_dim
            if expected is not None and features.shape[1] != expected:
                raise ValueError(
                    f"`{name}_features` must have width {expected} (the "
                    f"{name} anchors / tower). Received {features.shape[1]}."
                )
        captions = _check_strings(captions, n, "captions", default="")
        if ids is None:
            ids = np.arange(self._anchors.next_id, self._anchors.next_id + n)
        ids = np.asarray(ids)
        if ids.shape != (n,) or (n and ids.dtype.kind not in "iu"):
            raise ValueError(
                f"`ids` must be {n} integers, one per anchor. Received "
                f"shape {ids.shape}, dtype {ids.dtype}."
            )
        ids = ids.astype("int64")
        if len(np.unique(ids)) != n:
            raise ValueError("`ids` must be unique.")
        clash = ids[np.isin(ids, self._anchors.ids)]
        if len(clash):
            raise ValueError(
                f"Anchor ids already in use: {clash[:5].tolist()}"
                f"{' ...' if len(clash) > 5 else ''}."
            )
        image_refs = _check_strings(image_refs, n, "image_refs", default=None)
        if image_refs is None:
            image_refs = [str(i) for i in ids.tolist()]
        if normalize:
            # Stored unit-norm, so inner products with anchors are cosines.
            image_features = relative.l2_normalize_rows(image_features)
            text_features = relative.l2_normalize_rows(text_features)
        self._anchors.append(
            image_features,
            text_features,
            ids,
            captions,
            image_refs,
        )
        self.anchor_version += 1
        return ids

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
        if sum(x is not None for x in (indices, ids, where)) != 1:
            raise ValueError("Give exactly one of `indices`, `ids` or `where`.")
        store = self._anchors
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
                    f"Anchor indices out of range [0, {store.size}): "
                    f"{bad[:5].tolist()}."
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
            outputs = self.predict_on_batch(
                {
                    k: inputs[k]
                    for k in (IMAGE_KEY, "token_ids", "padding_mask")
                    if k in inputs
                }
            )
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

    # === Encoding ===

    def encode_image_features(self, images, batch_size: int = 32) -> np.ndarray:
        """Unit-norm features of the frozen image encoder, `(Q, Di)`."""
        self._require_tower("image")
        self._encoding_dim = self._unimodal_dim("image")
        try:
            return ContrastiveModel.encode_images(self, images, batch_size)
        finally:
            self._encoding_dim = None

    def encode_text_features(self, texts, batch_size: int = 256) -> np.ndarray:
        """Unit-norm features of the frozen text encoder, `(Q, Dt)`."""
        self._require_tower("text")
        self._encoding_dim = self._unimodal_dim("text")
        try:
            return ContrastiveModel.encode_texts(self, texts, batch_size)
        finally:
            self._encoding_dim = None

    def represent(self, features, modality: str, sparse: bool = False):
        """Relative representations of unimodal features.

        Args:
            features: array `(Q, D)` of image features (`modality="image"`,
                compared with anchor images) or text features (`"text"`,
                compared with anchor captions). Need not be normalised.
            modality: `"image"` or `"text"`.
            sparse: bool. Return a `scipy.sparse.csr_array` instead of a
                dense float32 array.

        Returns:
            `(Q, N)` representations: top-`k` entries, clipped at 0, to the
            power `p`, unit-norm rows.
        """
        if modality not in ("image", "text"):
            raise ValueError(
                f"`modality` must be 'image' or 'text'. Received: {modality!r}"
            )
        if self.num_anchors == 0:
            raise ValueError(
                "This ASIF has no anchors yet; add some with `add_anchors(...)`."
            )
        anchors = self._anchors.image if modality == "image" else self._anchors.text
        features = _check_features(features, f"{modality} features")
        if features.shape[1] != anchors.shape[1]:
            raise ValueError(
                f"{modality} features must have width {anchors.shape[1]} (the "
                f"anchor {modality} features). Received {features.shape[1]}."
            )
        reps = relative.relative_representation(
            features, anchors, self.k, self.p, self.anchor_chunk_size
        )
        if sparse:
            return reps
        _check_dense_size(reps.shape)
        return reps.toarray()

    def encode_images(self, images, batch_size: int = 32, sparse: bool = False):
        """ASIF representations of raw images.

        Args:
            images: as for `ContrastiveModel.encode_images` (one image, a
                batch, a list of images of any size, or a `tf.data.Dataset`).
            batch_size: int. Images per forward pass.
            sparse: bool. Return a `scipy.sparse.csr_array`.

        Returns:
            `(Q, N)` float32 relative representations with unit-norm rows
            (dense array, or CSR with at most `k` entries per row).
        """
        return self.represent(
            self.encode_image_features(images, batch_size), "image", sparse
        )

    def encode_texts(self, texts, batch_size: int = 256, sparse: bool = False):
        """ASIF representations of strings (see `encode_images`)."""
        return self.represent(
            self.encode_text_features(texts, batch_size), "text", sparse
        )

    def similarity(self, a, b) -> np.ndarray:
        """Dense `(Qa, Qb)` scores of two sets of representations.

        Runs on the sparse form, chunk by chunk; dense inputs also work.
        """
        for name, x in (("a", a), ("b", b)):
            if np.ndim(x) != 2 or x.shape[1] != self.num_anchors:
                raise ValueError(
                    f"`{name}` must be representations over the current "
                    f"{self.num_anchors} anchors, shape (Q, {self.num_anchors}). "
                    f"Received shape {getattr(x, 'shape', None)}."
                )
        return relative.similarity(a, b)

    # === Zero-shot classification ===

    def zero_shot_head(
        self,
        class_names: Sequence[str],
        templates: Sequence[str | Callable[[str], str]] = ("{}",),
        mode: str = "best_single",
        batch_size: int = 256,
        *,
        prompt_features=None,
    ) -> ZeroShotHead:
        """Class vectors for zero-shot classification.

        One prompt per (class, template) pair, laid out class-major.

        - `mode="best_single"` (the official ASIF rule): an image's class is
          the class of its most similar prompt, i.e. each class scores as its
          best template. Prompt vectors are not averaged.
        - `mode="average"` (CLIP's rule): a class vector is the mean of its
          unit-norm prompt representations, renormalised.

        Args:
            class_names: list of class names.
            templates: a template-set name of
                `keras_towers.evaluation.get_templates` (`"openai"`,
                `"best7"`, `"simple"`, `"none"`), or strings with one `{}`
                (e.g. `"a photo of a {}."`) or functions of the class name.
            mode: `"best_single"` or `"average"`.
            batch_size: int. Texts per encoder call.
            prompt_features: optional array `(C * T, Dt)` of precomputed
                text features of the prompts, class-major (then no text
                tower is needed).

        Returns:
            a `ZeroShotHead` with `.scores(image_reps)` and `.predict(...)`.
        """
        if mode not in ZERO_SHOT_MODES:
            raise ValueError(
                f"`mode` must be one of {ZERO_SHOT_MODES}. Received: {mode!r}"
            )
        class_names = [
            _to_str(c, f"class_names[{i}]") for i, c in enumerate(class_names)
        ]
        if not class_names:
            raise ValueError("`class_names` is empty.")
        if isinstance(templates, str) and "{}" not in templates:
            from keras_towers.evaluation.templates import get_templates

            templates = get_templates(templates)
        if isinstance(templates, str) or callable(templates):
            templates = [templates]
        templates = list(templates)
        if not templates:
            raise ValueError("`templates` is empty.")
        prompts = [_fill(t, c) for c in class_names for t in templates]
        if prompt_features is None:
            reps = self.encode_texts(prompts, batch_size=batch_size, sparse=True)
        else:
            prompt_features = _check_features(prompt_features, "prompt_features")
            if len(prompt_features) != len(prompts):
                raise ValueError(
                    f"`prompt_features` must have one row per prompt: "
                    f"{len(class_names)} classes x {len(templates)} templates = "
                    f"{len(prompts)}. Received {len(prompt_features)} rows."
                )
            reps = self.represent(prompt_features, "text", sparse=True)
        if mode == "average":
            reps = relative.group_mean(reps, len(templates))
        return ZeroShotHead(reps, mode, len(class_names), len(templates))

    def zero_shot_scores(
        self,
        images=None,
        class_names: Sequence[str] = (),
        templates: Sequence[str | Callable[[str], str]] = ("{}",),
        mode: str = "best_single",
        batch_size: int = 32,
        image_representations=None,
    ) -> np.ndarray:
        """`(Q, C)` zero-shot class scores of raw images.

        Args:
            images: raw images (as for `encode_images`), or `None` when
                `image_representations` are given.
            class_names, templates, mode: see `zero_shot_head`.
            batch_size: int. Images per forward pass.
            image_representations: precomputed `encode_images(...)` output
                (dense or sparse) over the current anchors.
        """
        if (images is None) == (image_representations is None):
            raise ValueError("Give exactly one of `images` or `image_representations`.")
        head = self.zero_shot_head(class_names, templates, mode)
        if image_representations is None:
            image_representations = self.encode_images(images, batch_size, sparse=True)
        return head.scores(image_representations)

    # === Explanations ===

    def explain(
        self,
        image=None,
        text: str | None = None,
        top_n: int | None = 10,
        *,
        image_features=None,
        text_features=None,
    ) -> list[dict]:
        """The anchor pairs that contribute most to `sim(image, text)`.

        `sim = sum_n r_image[n] * r_text[n]` over anchors in both top-k
        sets; each term is one anchor's contribution, so the contributions of
        all shared anchors (`top_n=None`) sum to the similarity.

        Args:
            image: one raw image `(H, W, C)` (or give `image_features`).
            text: one string (or give `text_features`).
            top_n: int or `None`. How many anchors to return (all shared
                anchors if `None`).
            image_features: array `(Di,)`: a precomputed image feature.
            text_features: array `(Dt,)`: a precomputed text feature.

        Returns:
            list of dicts, by decreasing contribution, with `index` (position
            in the anchor set), `id`, `caption`, `image_ref`,
            `contribution`, `image_weight` and `text_weight` (the two
            representations' entries for that anchor).
        """
        if (image is None) == (image_features is None):
            raise ValueError("Give exactly one of `image` or `image_features`.")
        if (text is None) == (text_features is None):
            raise ValueError("Give exactly one of `text` or `text_features`.")
        if top_n is not None and (not isinstance(top_n, int) or top_n <= 0):
            raise ValueError(
                f"`top_n` must be a positive int or None. Received {top_n!r}"
            )
        if image_features is None:
            if np.ndim(image) != 3:
                raise ValueError(
                    "`image` must be one image (H, W, C). Received shape "
                    f"{np.shape(image)}."
                )
            image_features = self.encode_image_features(np.asarray(image)[None])
        if text_features is None:
            text_features = self.encode_text_features([_to_str(text, "text")])
        image_rep = self.represent(np.reshape(image_features, (1, -1)), "image", True)
        text_rep = self.represent(np.reshape(text_features, (1, -1)), "text", True)
        shared, in_image, in_text = np.intersect1d(
            image_rep.indices, text_rep.indices, assume_unique=True, return_indices=True
        )
        image_weight = image_rep.data[in_image]
        text_weight = text_rep.data[in_text]
        contribution = image_weight * text_weight
        order = np.argsort(-contribution, kind="stable")[:top_n]
        store = self._anchors
        return [
            {
                "index": int(shared[i]),
                "id": int(store.ids[shared[i]]),
                "caption": store.captions[shared[i]],
                "image_ref": store.image_refs[shared[i]],
                "contribution": float(contribution[i]),
                "image_weight": float(image_weight[i]),
                "text_weight": float(text_weight[i]),
            }
            for i in order
        ]

    # === Config and presets ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_tower": _serialize_tower(
                    self.image_tower, self.image_tower_source
                ),
                "text_tower": _serialize_tower(self.text_tower, self.text_tower_source),
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "k": self.k,
                "p": self.p,
                "anchor_dtype": self.anchor_dtype,
                "anchor_chunk_size": self.anchor_chunk_size,
                "image_tower_source": self.image_tower_source,
                "text_tower_source": self.text_tower_source,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("image_tower", "text_tower", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def save_to_preset(self, preset_dir: str, description: str = "", **metadata):
        """Write the anchors, the config and the unreferenced towers to a dir.

        The directory holds `config.json` (k, p, preprocessor, and each tower's
        architecture or its source reference), `anchors.safetensors`
        (features in `anchor_dtype`, ids, captions and image references as
        UTF-8), `image_tower.safetensors` / `text_tower.safetensors` for
        towers without a `*_tower_source` (sourced towers are not
        duplicated), tokenizer assets, and `metadata.json` with the sha256 of
        every file (checked by `from_preset`).

        Args:
            preset_dir: str. Directory to write (created if needed).
            description: str. Free text for `metadata.json`.
            **metadata: more JSON-serialisable entries for `metadata.json`.
        """
        from keras_towers.version import __version__

        path = Path(preset_dir)
        path.mkdir(parents=True, exist_ok=True)
        config = keras.saving.serialize_keras_object(self)
        config.pop("compile_config", None)
        config.pop("build_config", None)
        (path / preset_lib.CONFIG_FILE).write_text(
            json.dumps(config, indent=2, sort_keys=True)
        )
        files = [ANCHORS_FILE]
        _save_anchors(self._anchors, path / ANCHORS_FILE)
        for tower, source, filename in (
            (self.image_tower, self.image_tower_source, IMAGE_TOWER_FILE),
            (self.text_tower, self.text_tower_source, TEXT_TOWER_FILE),
        ):
            if tower is not None and source is None:
                _save_tower_weights(tower, path / filename)
                files.append(filename)
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "save_assets"):
            assets = path / preset_lib.TOKENIZER_ASSETS
            assets.mkdir(parents=True, exist_ok=True)
            tokenizer.save_assets(str(assets))
        meta = {
            "class_name": type(self).__name__,
            "description": description,
            "keras_towers_version": __version__,
            "keras_version": keras.__version__,
            "date": datetime.date.today().isoformat(),
            "num_anchors": self.num_anchors,
            "k": self.k,
            "p": self.p,
            "anchor_dtype": self.anchor_dtype,
            "image_tower_source": self.image_tower_source,
            "text_tower_source": self.text_tower_source,
            "files_sha256": {f: preset_lib.sha256_file(path / f) for f in files},
            **metadata,
        }
        (path / preset_lib.METADATA_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True)
        )

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs) -> ASIF:
        """Load an ASIF preset (a shipped name or a `save_to_preset` dir).

        Args:
            preset: str. Preset name or directory.
            load_weights: bool. Load tower weights and anchors (else only the
                architecture, with no anchors).
            **kwargs: config overrides, e.g. `k=` or `p=`.
        """
        path = preset_lib.resolve(cls, preset)
        config_path = path / preset_lib.CONFIG_FILE
        if not config_path.is_file():
            raise ValueError(
                f"Preset directory {str(path)!r} has no {preset_lib.CONFIG_FILE}."
            )
        config = json.loads(config_path.read_text())
        registered = config.get("registered_name", "")
        target = keras.saving.get_registered_object(registered)
        if target is None or not issubclass(target, cls):
            raise ValueError(
                f"Preset {preset!r} holds a {registered or config.get('class_name')!r}, "
                f"which is not a {cls.__name__}. Load it with its own class."
            )
        meta_path = path / preset_lib.METADATA_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        expected = meta.get("files_sha256", {})
        if load_weights:
            for filename, digest in expected.items():
                if preset_lib.sha256_file(path / filename) != digest:
                    raise ValueError(
                        f"{filename} of preset {preset!r} does not match the "
                        "sha256 in its metadata.json: the file is corrupt or "
                        "was changed after saving."
                    )
        if kwargs:
            config = dict(config)
            config["config"] = {**config["config"], **kwargs}
        model = keras.saving.deserialize_keras_object(config)
        tokenizer = getattr(model.preprocessor, "tokenizer", None)
        assets = path / preset_lib.TOKENIZER_ASSETS
        if (
            assets.is_dir()
            and tokenizer is not None
            and hasattr(tokenizer, "load_assets")
        ):
            tokenizer.load_assets(str(assets))
        if load_weights:
            for tower, filename in (
                (model.image_tower, IMAGE_TOWER_FILE),
                (model.text_tower, TEXT_TOWER_FILE),
            ):
                if (path / filename).is_file():
                    _load_tower_weights(tower, path / filename)
            _load_anchors(model, path / ANCHORS_FILE)
        return model

    @classmethod
    def from_dataset(
        cls,
        image_tower: keras.layers.Layer,
        text_tower: keras.layers.Layer,
        preprocessor: ContrastivePreprocessor,
        pairs: tf.data.Dataset,
        k: int = 800,
        p: float = 8.0,
        batch_size: int = 32,
        **kwargs,
    ) -> ASIF:
        """Build an ASIF whose anchors are the pairs of a dataset.

        Args:
            image_tower, text_tower, preprocessor: the frozen encoders and
                their preprocessing (see `ASIF`).
            pairs: `tf.data.Dataset` of `{"images", "texts"}` (optionally
                `"image_refs"`), batched or unbatched; images uint8 of any
                size (a ragged batch is resized image by image).
            k, p: see `ASIF`.
            batch_size: int. Encoder batch size for unbatched datasets.
            **kwargs: other `ASIF` arguments.

        Example:

        ```python
        pairs = tf.data.Dataset.from_tensor_slices(
            {"images": images, "texts": captions}
        )
        model = keras_towers.ASIF.from_dataset(
            image_tower, text_tower, preprocessor, pairs, k=800, p=8
        )
        ```
        """
        model = cls(image_tower, text_tower, preprocessor, k=k, p=p, **kwargs)
        model.add_anchors(pairs=pairs, batch_size=batch_size)
        return model

    @classmethod
    def tiny(cls, image_size: int = 32, embedding_dim: int = 32, **kwargs) -> ASIF:
        """An ASIF with tiny random towers (no anchors), for tests and demos."""
        preprocessor = ContrastivePreprocessor.default(
            image_size=image_size, sequence_length=16
        )
        image_tower, text_tower = from_scratch_towers(
            image_size,
            preprocessor.tokenizer.vocabulary_size(),
            sequence_length=16,
            width=32,
            num_layers=1,
            num_heads=2,
            projection_dim=embedding_dim,
            name_prefix="asif_",
        )
        return cls(image_tower, text_tower, preprocessor, **kwargs)


# === Helpers ===


def _read_only(x):
    if x is None:
        return None
    view = x.view()
    view.flags.writeable = False
    return view


def _to_str(value, name: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a string. Received {type(value).__name__}: {value!r}."
        )
    return value


def _fill(template, class_name: str) -> str:
    if callable(template):
        return _to_str(template(class_name), "template(class_name)")
    template = _to_str(template, "templates[i]")
    if "{}" not in template:
        raise ValueError(
            f"Template {template!r} has no '{{}}' placeholder for the class name."
        )
    return template.format(class_name)


def _num_items(images) -> int:
    if isinstance(images, (list, tuple)):
        return len(images)
    shape = np.shape(images)
    return 1 if len(shape) == 3 else (shape[0] if shape else 0)


def _check_features(x, name: str) -> np.ndarray:
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


def _check_strings(values, n: int, name: str, default):
    if values is None:
        return None if default is None else [default] * n
    if isinstance(values, (str, bytes)):
        raise TypeError(f"`{name}` must be a list of {n} strings, not one string.")
    values = [_to_str(v, f"{name}[{i}]") for i, v in enumerate(values)]
    if len(values) != n:
        raise ValueError(
            f"`{name}` must have one string per anchor: expected {n}, "
            f"received {len(values)}."
        )
    return values


def _check_dense_size(shape):
    size = 4 * int(shape[0]) * int(shape[1])
    if size > MAX_DENSE_BYTES:
        raise ValueError(
            f"A dense {shape[0]} x {shape[1]} representation would take "
            f"{size / 2**30:.1f} GiB; pass `sparse=True` (a scipy CSR array "
            "with at most k entries per row)."
        )


def _dense(x):
    return x.to_tensor() if isinstance(x, tf.RaggedTensor) else x


def _serialize_tower(tower, source):
    if tower is None or source is not None:
        return None  # absent, or rebuilt from its source at load time
    return keras.saving.serialize_keras_object(tower)


def _encode_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte blob plus offsets (safetensors has no str)."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, "int64")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype="uint8")
    return blob, offsets


def _decode_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = blob.tobytes()
    return [
        data[a:b].decode("utf-8")
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    ]


def _write_safetensors(tensors: dict, filename: Path, metadata: dict):
    # `safetensors.numpy.save_file` creates files readable by the owner only
    # (mode 0600); a preset is meant to be shared, so write with the umask.
    from safetensors.numpy import save

    filename.write_bytes(save(tensors, metadata=metadata))


def _save_anchors(store: _AnchorStore, filename: Path):
    captions, caption_offsets = _encode_strings(store.captions)
    refs, ref_offsets = _encode_strings(store.image_refs)
    tensors = {
        "ids": np.ascontiguousarray(store.ids),
        "captions": captions,
        "caption_offsets": caption_offsets,
        "image_refs": refs,
        "image_ref_offsets": ref_offsets,
    }
    if store.size:
        tensors["image_features"] = np.ascontiguousarray(store.image)
        tensors["text_features"] = np.ascontiguousarray(store.text)
    _write_safetensors(tensors, filename, {"next_id": str(store.next_id)})


def _load_anchors(model: ASIF, filename: Path):
    from safetensors import safe_open

    with safe_open(str(filename), framework="numpy") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        next_id = int(f.metadata().get("next_id", 0))
    if "image_features" not in tensors:
        model._anchors.next_id = next_id
        return
    model._append(
        tensors["image_features"],
        tensors["text_features"],
        _decode_strings(tensors["captions"], tensors["caption_offsets"]),
        _decode_strings(tensors["image_refs"], tensors["image_ref_offsets"]),
        tensors["ids"],
        normalize=False,  # stored normalised; keep float16 values bit-exact
    )
    model._anchors.next_id = max(model._anchors.next_id, next_id)


def _save_tower_weights(tower, filename: Path):
    weights = tower.weights
    tensors = {
        f"{i:06d}": np.ascontiguousarray(keras.ops.convert_to_numpy(v.value))
        for i, v in enumerate(weights)
    }
    paths = json.dumps([v.path for v in weights])
    _write_safetensors(tensors, filename, {"paths": paths})


def _load_tower_weights(tower, filename: Path):
    from safetensors import safe_open

    with safe_open(str(filename), framework="numpy") as f:
        keys = sorted(f.keys())
        paths = json.loads(f.metadata().get("paths", "[]"))
        values = [f.get_tensor(key) for key in keys]
    weights = tower.weights
    if len(values) != len(weights):
        raise ValueError(
            f"{filename.name} holds {len(values)} weights but the tower "
            f"{tower.name!r} has {len(weights)}: the architecture changed."
        )
    for i, (variable, value) in enumerate(zip(weights, values, strict=True)):
        if tuple(variable.shape) != tuple(value.shape):
            saved = paths[i] if i < len(paths) else i
            raise ValueError(
                f"Weight {saved!r} in {filename.name} has shape {value.shape}, "
                f"but {variable.path!r} expects {tuple(variable.shape)}."
            )
        variable.assign(value)
