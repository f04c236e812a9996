"""ProtoCLIP's external teacher: frozen text features of every caption, PCA-reduced.

The official code (`src/utils/RoBERTa.py`) runs a frozen RoBERTa-large over
every training caption once, offline: token states averaged over positions,
L2-normalised, then `faiss.PCAMatrix(1024, 64)` (centred, no whitening, no
random rotation) and saved; nothing is re-normalised after the PCA. Each
episode then clusters `features[episode rows]` (`ProtoCLIPEpisodes`).

`teacher_features` does the same with any registered frozen text encoder
(`keras_towers.pretrained.names("text")`; all-MiniLM-L6-v2 by default, the
offline stand-in for RoBERTa), pooled as the encoder is registered (masked
mean for MiniLM: its sentence embedding; RoBERTa.py's mean also counts the
zero padding, a RoBERTa-specific detail not copied here).

Caching. The raw pooled features (before normalisation and PCA, which are
cheap) are stored with `cache_dir` as `teacher-<source>-<key>.npy` plus a
`.json` saying what went into the key: a sha256 over the encoder's name,
`keras_towers.feature_cache.weights_digest` of its weights (every value), its
pooling, the tokenizer's config and vocabulary, the sequence length and every
caption in order. A hit still builds the encoder (a few seconds for MiniLM)
to hash its weights, but runs no forward pass.

Why not `keras_towers.cache_locked_features`: its key hashes
`tower.variables`, which in Keras 3 include the dropout layers' random
seed-generator states (auto-numbered paths, values drawn afresh each build
unless a global seed is set), so for any encoder with dropout, MiniLM
included, the key changes with every build and the disk cache never hits.
Hashing `tower.weights` (as here) is stable across builds and processes.

PCA convention (`pca`): centred, no whitening, components by decreasing
variance, each component's sign chosen so that its largest-magnitude entry
is positive (scikit-learn's `svd_flip` on `components_`), float32 output.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_towers import feature_cache
from keras_towers import pretrained
from keras_towers.feature_cache import weights_digest
from keras_towers.ops import l2_normalize_numpy
from keras_towers.preprocessing import TEXT_KEY

#: The recipe's teacher width (RoBERTa 1024 -> 64).
DEFAULT_PCA_DIM = 64
#: Rows per chunk when accumulating the covariance / projecting (bounds memory).
_CHUNK = 65536
#: Bump when the stored layout or the key's contents change.
CACHE_FORMAT_VERSION = 1
#: What the text tower reads from the preprocessor's output.
_TOKEN_KEYS = ("token_ids", "padding_mask")


class _Encoder(keras.Model):
    """The frozen tower as a model, so `predict_on_batch` compiles it."""

    def __init__(self, tower):
        super().__init__(name="teacher_encoder")
        self.tower = tower

    def call(self, inputs):
        return self.tower(inputs, training=False)


def _forward(encoder: _Encoder, inputs: dict) -> np.ndarray:
    """Pooled features of one batch (the single place the encoder runs)."""
    outputs = encoder.predict_on_batch(inputs)
    return np.asarray(keras.ops.convert_to_numpy(outputs), "float32")


def _check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "`texts` must be a sequence of captions (e.g. a list of str), not a "
            "single string."
        )
    try:
        texts = list(texts)
    except TypeError as e:
        raise TypeError(
            f"`texts` must be a sequence of str. Received: {type(texts).__name__}."
        ) from e
    if not texts:
        raise ValueError("`texts` is empty: there are no captions to encode.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"Every caption must be a str; {len(bad)} are not (first at index "
            f"{bad[0]}: {type(texts[bad[0]]).__name__} {texts[bad[0]]!r})."
        )
    return [str(t) for t in texts]


def _check_dim(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {value!r}")


def pca(x, dim: int) -> np.ndarray:
    """Project rows onto their top `dim` principal components (NumPy).

    As `faiss.PCAMatrix(d, dim)` with its defaults (what ProtoCLIP's
    RoBERTa.py uses): centred on the mean, no whitening, components by
    decreasing variance. The covariance is accumulated in float64 over row
    chunks and diagonalised with `np.linalg.eigh` (memory `O(d^2)` beyond the
    input, so millions of captions fit); the result equals the SVD of the
    centred data. Signs are fixed so the largest-magnitude entry of each
    component is positive (scikit-learn's convention), so results are
    reproducible.

    Centred data of `n` rows has rank at most `min(n - 1, d)`: directions past
    the rank carry zero variance, so their coordinates are exactly 0. If
    `dim` exceeds the rank those columns are returned as zeros (with a
    warning) instead of numerical noise, so the width is always `dim`.

    Args:
        x: float array `(n, d)`.
        dim: int. Output width, `1 <= dim <= d`.

    Returns:
        float32 array `(n, dim)`; column `k` has variance (ddof=1) equal to the
        `k`-th explained variance.

    Example:

    ```python
    from keras_towers.models.protoclip_teacher import pca
    z = pca(np.random.default_rng(0).normal(size=(100, 8)), 3)  # (100, 3)
    ```
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"`x` must be a non-empty 2-D array. Received shape {x.shape}."
        )
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"`x` must be numeric. Received dtype {x.dtype}.")
    n, d = x.shape
    _check_dim("dim", dim)
    if dim > d:
        raise ValueError(
            f"`dim`={dim} exceeds the feature width {d}: PCA cannot add dimensions."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("`x` contains NaN or infinite values.")
    mean = np.zeros(d)
    for start in range(0, n, _CHUNK):
        mean += x[start : start + _CHUNK].sum(axis=0, dtype=np.float64)
    mean /= n
    covariance = np.zeros((d, d))
    for start in range(0, n, _CHUNK):
        chunk = x[start : start + _CHUNK].astype(np.float64) - mean
        covariance += chunk.T @ chunk
    covariance /= max(n - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:dim]
    eigenvalues, components = eigenvalues[order], eigenvectors[:, order]
    # Deterministic signs: largest |entry| of each component positive.
    pivots = np.argmax(np.abs(components), axis=0)
    components = components * np.sign(components[pivots, np.arange(dim)])
    # Directions past the data's rank: zero variance up to rounding.
    top = max(float(eigenvalues[0]), 0.0)
    null = eigenvalues <= top * d * np.finfo(np.float64).eps
    if null.any():
        warnings.warn(
            f"The data have only {int((~null).sum())} directions of non-zero "
            f"variance ({n} rows, width {d}); the last {int(null.sum())} of the "
            f"{dim} PCA columns are zeros.",
            stacklevel=2,
        )
        components[:, null] = 0.0
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, _CHUNK):
        chunk = x[start : start + _CHUNK].astype(np.float64) - mean
        out[start : start + _CHUNK] = chunk @ components
    return out


def encoder_features(
    texts,
    source: str = "all_minilm_l6_v2",
    batch_size: int = 256,
    cache_dir: str | None = None,
    sequence_length: int = 64,
) -> np.ndarray:
    """Raw pooled features of a frozen registered text encoder, cached.

    The frozen tower is `pretrained.load_tower(source)` (no head). With
    `cache_dir`, the features are stored there under a key over the
    encoder's weights, pooling, tokenizer, sequence length and every caption
    (module docstring), so a later call with the same captions, in any
    process, runs no forward pass.

    Args:
        texts: sequence of str, in data-set order.
        source: str. A registered text encoder (`pretrained.names("text")`).
        batch_size: int. Captions per forward pass.
        cache_dir: str or `None`. Read and write the features here; `None`
            always encodes.
        sequence_length: int. Tokens per caption (longer ones are truncated).

    Returns:
        float32 array `(len(texts), encoder width)`, not normalised.
    """
    texts = _check_texts(texts)
    _check_dim("batch_size", batch_size)
    _check_dim("sequence_length", sequence_length)
    _text_encoder(source)
    tower = pretrained.load_tower(source, name="teacher_text_tower", lock=True)
    preprocessor = pretrained.preprocessor(
        text_source=source,
        sequence_length=sequence_length,
        name="teacher_preprocessor",
    )
    key, description = _cache_key(source, tower, preprocessor, texts)
    if cache_dir is not None:
        shape = (len(texts), tower.output_dim)
        cached = feature_cache.load_keyed_array(
            cache_dir,
            f"teacher-{source}",
            key,
            lambda a: a.shape == shape and a.dtype == np.float32,
            what="teacher cache",
        )
        if cached is not None:
            return cached
    features = _encode(tower, preprocessor, texts, batch_size)
    if cache_dir is not None:
        feature_cache.store_keyed_array(
            cache_dir, f"teacher-{source}", key, description, features
        )
    return features


def _encode(tower, preprocessor, texts, batch_size) -> np.ndarray:
    encoder = _Encoder(tower)
    batches = (
        tf.data.Dataset.from_tensor_slices(texts)
        .batch(batch_size)
        .map(lambda t: preprocessor({TEXT_KEY: t}), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    out = np.empty((len(texts), tower.output_dim), np.float32)
    row = 0
    for inputs in batches.as_numpy_iterator():
        features = _forward(encoder, {k: inputs[k] for k in _TOKEN_KEYS})
        out[row : row + len(features)] = features
        row += len(features)
    return out


def _texts_digest(texts) -> str:
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()


def _vocabulary_digest(tokenizer) -> str | None:
    vocabulary = tokenizer.get_vocabulary() if tokenizer is not None else None
    if vocabulary is None:
        return None
    return hashlib.sha256(json.dumps(list(vocabulary)).encode()).hexdigest()


def _cache_key(source, tower, preprocessor, texts):
    tokenizer = preprocessor.tokenizer
    tokenizer_config = {
        k: v for k, v in tokenizer.get_config().items() if k not in ("name", "dtype")
    }
    description = {
        "format": CACHE_FORMAT_VERSION,
        "source": source,
        "weights_sha256": weights_digest(tower.weights),
        "pooling": tower.pooling,
        "tokenizer_class": type(tokenizer).__name__,
        "tokenizer_config": json.dumps(tokenizer_config, sort_keys=True, default=repr),
        "vocabulary_sha256": _vocabulary_digest(tokenizer),
        "sequence_length": preprocessor.sequence_length,
        "texts_sha256": _texts_digest(texts),
        "count": len(texts),
    }
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    return key, description


def _text_encoder(source):
    if not pretrained.is_registered(source):
        raise ValueError(
            f"Unknown teacher encoder {source!r}: pass a registered text encoder "
            f"({pretrained.names('text')})."
        )
    encoder = pretrained.get_encoder(source)
    if encoder.modality != "text":
        raise ValueError(
            f"The teacher must be a text encoder; {source!r} is a "
            f"{encoder.modality} encoder. Text encoders: {pretrained.names('text')}."
        )
    return encoder


def teacher_features(
    texts,
    source: str = "all_minilm_l6_v2",
    pca_dim: int | None = DEFAULT_PCA_DIM,
    batch_size: int = 256,
    cache_dir: str | None = None,
    sequence_length: int = 64,
) -> np.ndarray:
    """ProtoCLIP's external-teacher features of every caption.

    As the official RoBERTa.py: frozen encoder features of each caption,
    L2-normalised, then PCA to `pca_dim` fitted on these captions (`pca`:
    centred, no whitening), not re-normalised afterwards. The raw features are
    cached on disk with `cache_dir` (see `encoder_features`); normalisation
    and PCA are recomputed on each call (seconds, deterministic).

    Args:
        texts: sequence of str: every pair's caption, in the order of the
            `pairs` given to `ProtoCLIPEpisodes` (row `i` is pair `i`'s).
        source: str. A registered frozen text encoder (default
            all-MiniLM-L6-v2, 384-d).
        pca_dim: int or `None`. Output width (64, the recipe's); `None` keeps
            the normalised encoder features. Must not exceed the encoder's
            width (a `ValueError`); above the data's rank (fewer than
            `pca_dim + 1` captions) the extra columns are zeros, with a
            warning, so the width still matches `external_teacher`.
        batch_size: int. Captions per encoder forward pass.
        cache_dir: str or `None`. Keep the raw features on disk here too.
        sequence_length: int. Tokens per caption.

    Returns:
        float32 array `(len(texts), pca_dim)` (or the encoder's width).

    Example:

    ```python
    from keras_towers.models.protoclip_teacher import teacher_features
    teacher = teacher_features(texts, cache_dir="cache/teacher")  # (N, 64)
    model = keras_towers.ProtoCLIP.tiny(external_teacher=teacher.shape[1])
    episodes = keras_towers.ProtoCLIPEpisodes(
        model, {"images": images, "texts": texts}, batch_size=8,
        teacher_features=teacher,
    )
    ```
    """
    texts = _check_texts(texts)
    _check_dim("pca_dim", pca_dim, allow_none=True)
    width = _text_encoder(source).output_dim
    if pca_dim is not None and pca_dim > width:
        raise ValueError(
            f"`pca_dim`={pca_dim} exceeds the width {width} of {source!r}'s "
            "features: PCA only reduces. Pass at most that, or `None`."
        )
    raw = encoder_features(
        texts,
        source=source,
        batch_size=batch_size,
        cache_dir=cache_dir,
        sequence_length=sequence_length,
    )
    features = l2_normalize_numpy(raw)
    if pca_dim is None:
        return features
    return pca(features, pca_dim)
