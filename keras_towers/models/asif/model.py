"""The `ASIF` model: frozen towers, an anchor set, relative representations."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_towers import from_scratch
from keras_towers import pretrained
from keras_towers import relative
from keras_towers.models.asif import backgrounds
from keras_towers.models.asif import legacy
from keras_towers.models.asif import saving
from keras_towers.models.asif import storage
from keras_towers.models.asif.anchors import ANCHOR_DTYPES
from keras_towers.models.asif.anchors import AnchorsMixin
from keras_towers.models.asif.anchors import AnchorStore
from keras_towers.models.asif.anchors import check_features
from keras_towers.models.asif.explain import ExplainMixin
from keras_towers.models.asif.sources import load_tower_source
from keras_towers.models.asif.sources import serialize_tower
from keras_towers.models.asif.zero_shot import ZeroShotMixin
from keras_towers.models.base import ContrastiveModel
from keras_towers.ops import l2_normalize
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained.pairing import DEFAULT_SEQUENCE_LENGTH

#: `encode_*(sparse=False)` refuses to build a dense result larger than this.
MAX_DENSE_BYTES = 4 << 30


@keras.saving.register_keras_serializable(package="keras_towers")
class ASIF(AnchorsMixin, ZeroShotMixin, ExplainMixin, ContrastiveModel):
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
    The anchors travel with Keras saving (`save_weights`, `save("x.keras")`,
    `save_to_preset`); towers given by a source are left out of presets.

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
        anchor_storage: `"exact"` (default), `"compact"` or a dict. How
            anchor features are written by saving: exactly in `anchor_dtype`,
            or projected on principal directions and/or int8-quantised
            (`{"quantize": "int8", "image_dims": 256, "text_dims": None}` is
            `"compact"`); see `keras_towers.models.asif.storage`. Identical
            rows are stored once either way. Lossy storage changes the
            anchors of the reloaded model, not of this one.
        anchor_chunk_size: int. Anchors per similarity chunk.
        query_background: `"as_is"` (default) or `"light"`. With `"light"`,
            `encode_images` (and `explain`) first invert each query image
            whose border is dark, so that light-on-dark drawings (MNIST-like
            sets) match anchors drawn dark on white; anchors are never
            changed. See `keras_towers.models.asif.backgrounds`.
        image_tower_source: str or `None`. Where `image_tower` comes from:
            a pretrained encoder name (`keras_towers.pretrained.names()`), a
            local keras-hub backbone preset directory, or
            `"<preset>#image_tower"`. Presets then store this reference
            instead of the tower's weights. If `image_tower` is `None`, the
            tower is loaded from the source.
        text_tower_source: str or `None`. The same for the text tower.
        image_pooling: str or `None`. Pooling of a backbone-directory image
            source (a registered encoder has its own).
        text_pooling: str or `None`. The same for the text source.

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
        anchor_storage: str | dict = "exact",
        anchor_chunk_size: int = relative.DEFAULT_ANCHOR_CHUNK_SIZE,
        query_background: str = "as_is",
        image_tower_source: str | None = None,
        text_tower_source: str | None = None,
        image_pooling: str | None = None,
        text_pooling: str | None = None,
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
        query_background = backgrounds.check_query_background(query_background)
        anchor_storage = storage.storage_name(storage.check_storage(anchor_storage))
        cache: dict = {}
        if image_tower is None and image_tower_source is not None:
            image_tower = load_tower_source(
                image_tower_source, "image", image_pooling, cache
            )
        if text_tower is None and text_tower_source is not None:
            text_tower = load_tower_source(
                text_tower_source, "text", text_pooling, cache
            )
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
        self.anchor_storage = anchor_storage
        self.anchor_chunk_size = anchor_chunk_size
        self.query_background = query_background
        self.image_tower_source = image_tower_source
        self.text_tower_source = text_tower_source
        self.image_pooling = image_pooling
        self.text_pooling = text_pooling

        # === State ===
        # A plain object, so Keras does not track (or copy) the anchor arrays;
        # `save_own_variables` hands them to Keras saving.
        self._anchors = AnchorStore(anchor_dtype)
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

    def compute_loss(self, *args, **kwargs):
        raise NotImplementedError("ASIF has no loss; see `add_anchors`.")

    @property
    def embedding_dim(self) -> int:
        """Width of the relative representations (= `num_anchors`)."""
        return self._anchors.size

    # === Encoding ===

    def encode_image_features(self, images, batch_size: int = 32) -> np.ndarray:
        """Unit-norm features of the frozen image encoder, `(Q, Di)`."""
        self._require_tower("image")
        features = ContrastiveModel.encode_images(self, images, batch_size)
        return self._with_unimodal_width(features, "image")

    def encode_text_features(self, texts, batch_size: int = 256) -> np.ndarray:
        """Unit-norm features of the frozen text encoder, `(Q, Dt)`."""
        self._require_tower("text")
        features = ContrastiveModel.encode_texts(self, texts, batch_size)
        return self._with_unimodal_width(features, "text")

    def _with_unimodal_width(self, features, modality):
        # The base class sizes an empty result by `embedding_dim`, which is
        # the anchor count here; an empty feature batch has the tower's width.
        width = self._unimodal_dim(modality)
        if len(features) == 0 and width is not None:
            return np.zeros((0, width), "float32")
        return features

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
        features = check_features(features, f"{modality} features")
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
            self.query_image_features(images, batch_size), "image", sparse
        )

    def query_image_features(self, images, batch_size: int = 32) -> np.ndarray:
        """`encode_image_features` of query images, after `query_background`
        (anchors are encoded without it)."""
        if self.query_background == "light":
            images = backgrounds.on_light_background(images)
        return self.encode_image_features(images, batch_size)

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

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_tower": serialize_tower(
                    self.image_tower, self.image_tower_source
                ),
                "text_tower": serialize_tower(self.text_tower, self.text_tower_source),
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "k": self.k,
                "p": self.p,
                "anchor_dtype": self.anchor_dtype,
                "anchor_storage": self.anchor_storage,
                "anchor_chunk_size": self.anchor_chunk_size,
                "query_background": self.query_background,
                "image_tower_source": self.image_tower_source,
                "text_tower_source": self.text_tower_source,
                "image_pooling": self.image_pooling,
                "text_pooling": self.text_pooling,
            }
        )
        return config

    #: Framing of preprocessor configs saved without one: ASIF encoded its
    #: anchors through the image converter, which centre-cropped.
    LEGACY_FRAMING = "crop"

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        preprocessor = config.get("preprocessor")
        if isinstance(preprocessor, dict) and isinstance(
            preprocessor.get("config"), dict
        ):
            inner = {"framing": cls.LEGACY_FRAMING, **preprocessor["config"]}
            config["preprocessor"] = {**preprocessor, "config": inner}
        return super().from_config(config)

    # === Saving: anchors through Keras, sourced towers left out ===

    def save_own_variables(self, store):
        """Keras saving hook: the model's own variables (none) and the
        anchor arrays (see `keras_towers.models.asif.saving`)."""
        super().save_own_variables(store)
        saving.save_anchors(
            self._anchors, store, storage.check_storage(self.anchor_storage)
        )

    def load_own_variables(self, store):
        anchors, others = saving.split_own_variables(store)
        super().load_own_variables(others)
        self._restore_anchors(**saving.anchors_from_arrays(anchors))

    def is_free_form_weight(self, path: str) -> bool:
        """Whether a `.weights.h5` dataset path is one of the anchor arrays,
        whose names depend on how the anchors are stored (presets' strict
        weight check leaves them to `load_own_variables`)."""
        return path.startswith("vars/") and saving.is_anchor_key(path[5:])

    def referenced_objects(self) -> list:
        """The towers given by `image_tower_source` / `text_tower_source`:
        rebuilt from their sources, never stored in presets."""
        return [
            tower
            for tower, source in (
                (self.image_tower, self.image_tower_source),
                (self.text_tower, self.text_tower_source),
            )
            if tower is not None and source is not None
        ]

    def preset_metadata(self) -> dict:
        return {
            "num_anchors": self.num_anchors,
            "k": self.k,
            "p": self.p,
            "anchor_dtype": self.anchor_dtype,
            "anchor_storage": self.anchor_storage,
            "query_background": self.query_background,
            "image_tower_source": self.image_tower_source,
            "text_tower_source": self.text_tower_source,
        }

    def load_legacy_preset_files(self, path) -> None:
        """Load towers and anchors of a preset in the format written before
        Keras saving (`anchors.safetensors`); see `legacy.py`."""
        legacy.load_legacy_preset_files(self, path)

    # === Constructors ===

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
    def from_encoders(
        cls,
        image_source: str,
        text_source: str,
        sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
        preprocessor: ContrastivePreprocessor | None = None,
        **kwargs,
    ) -> ASIF:
        """An ASIF over two pretrained encoders, with no anchors.

        Both towers are referenced by source, so `save_to_preset` writes only
        the anchors, the configuration and the tokenizer vocabulary.

        Args:
            image_source: str. A pretrained image encoder name
                (`keras_towers.pretrained.names("image")`) or a keras-hub
                backbone preset directory (then pass `image_pooling=` and
                `preprocessor=`).
            text_source: str. The same for the text encoder.
            sequence_length: int. Packed text length of the default
                preprocessor.
            preprocessor: `ContrastivePreprocessor`. Default: what the two
                registered encoders expect (`keras_towers.pretrained.
                preprocessor`).
            **kwargs: further `ASIF` arguments (`k`, `p`, `anchor_dtype`...).

        Example:

        ```python
        model = keras_towers.ASIF.from_encoders(
            "efficientnet_lite1_imagenet", "all_minilm_l6_v2", k=800, p=8.0
        )
        ```
        """
        if preprocessor is None:
            preprocessor = pretrained.preprocessor(
                image_source, text_source, sequence_length
            )
        return cls(
            preprocessor=preprocessor,
            image_tower_source=image_source,
            text_tower_source=text_source,
            **kwargs,
        )

    @classmethod
    def tiny(cls, image_size: int = 32, embedding_dim: int = 32, **kwargs) -> ASIF:
        """An ASIF with tiny random towers (no anchors), for tests and demos:
        the `"tiny_shallow"` config of `keras_towers.from_scratch`."""
        parts = from_scratch.build(
            "tiny_shallow",
            image_size,
            projection_dim=embedding_dim,
            name_prefix="asif_",
        )
        return cls(parts.image_tower, parts.text_tower, parts.preprocessor, **kwargs)


def _check_dense_size(shape):
    size = 4 * int(shape[0]) * int(shape[1])
    if size > MAX_DENSE_BYTES:
        raise ValueError(
            f"A dense {shape[0]} x {shape[1]} representation would take "
            f"{size / 2**30:.1f} GiB; pass `sparse=True` (a scipy CSR array "
            "with at most k entries per row)."
        )
