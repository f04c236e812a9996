"""Frozen-feature cache: run a locked tower once per dataset, not once per epoch.

Without image augmentation, a locked tower maps each example to the same
vector in every epoch. `cache_locked_features` computes those vectors once
(the *locked part* of each locked tower: the whole tower's output when the
tower is locked, the pooled backbone feature when only its backbone is) and
returns an unbatched `tf.data.Dataset` in which they replace the raw inputs:

- LiT (locked image tower): `{"image_features", "texts"}`;
- Three Towers: `{"images", "texts", "third_features"}` (the trained image
  tower still needs the images).

Models accept `"image_features"` / `"text_features"` / `"third_features"`
in place of the inputs of those towers and apply only the trainable rest.

Cache key. Features are reused only when nothing they depend on changed: a
sha256 over the locked computation (the locked part's config and every value
of its weights; a locked tower without a head computes its pooled backbone
feature, like a locked backbone), the preprocessing of its inputs (image
converter and framing, or tokenizer, vocabulary and sequence length), and a
fingerprint of the dataset (every byte of every element, in order). Layer
names, the model's class and its trained parts are not in the key, so LiT,
ProtoCLIP and Three Towers models over one frozen encoder and one dataset
share its features. Entries live in memory (the last `MEMORY_CACHE_ENTRIES`
results) and, with `cache_dir`, on disk as `image_features-<key>.npy` (or
`text_features-`) plus a `.json` with the key and what went into it.

The input dataset is read once to fingerprint it and, on a cache miss, once
more to compute the features (the fingerprint is checked again, so a dataset
that changes between iterations, e.g. one reshuffled every epoch, is refused
instead of silently mismatching features and captions). Images may differ in
size: each element is preprocessed on its own (resized by the model's
preprocessor) before batching.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import warnings
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_towers.utils.io import atomic_write

#: Bump when the stored layout or the key's contents change.
#: 2: layer names' automatic `_<n>` suffixes are not part of the key.
#: 3: the key covers the locked computation and its inputs' preprocessing
#: only, so models sharing a frozen encoder share its features.
CACHE_FORMAT_VERSION = 3
#: How many feature arrays the in-memory cache keeps (least recently used out).
MEMORY_CACHE_ENTRIES = 8

_MEMORY: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()


class FeatureSource(NamedTuple):
    """A tower of a model whose locked part can be cached.

    Models list theirs in `model.feature_sources()`.

    Attributes:
        name: str. Short name (`"image"`, `"text"`, `"third"`); the cached
            features are stored under `f"{name}_features"`.
        tower: the `ImageTower` / `TextTower`, or `None` when the model was
            loaded without it.
        raw_key: str. The key of a raw example the tower reads (`"images"`,
            `"texts"`).
        input_keys: tuple of str. The preprocessor outputs the tower takes: one
            key means a tensor input, several a dict.
    """

    name: str
    tower: object
    raw_key: str
    input_keys: tuple

    @property
    def feature_key(self) -> str:
        return f"{self.name}_features"


def clear_feature_cache() -> None:
    """Forget every feature array held in memory (disk caches stay)."""
    _MEMORY.clear()


def cache_locked_features(
    model,
    dataset,
    batch_size: int = 32,
    cache_dir: str | None = None,
    towers: str | list[str] | None = None,
    keep_inputs: bool = True,
) -> tf.data.Dataset:
    """Precompute the outputs of a model's locked towers, once per dataset.

    Args:
        model: a keras_towers model with a preprocessor and at least one
            locked tower (e.g. `keras_towers.LiT`, `keras_towers.ThreeTowers`).
        dataset: an *unbatched* `tf.data.Dataset` of raw examples
            `{"images": uint8 (H, W, C), "texts": tf.string, ...}` (image
            sizes may differ), or a dict of equally long arrays / lists. It
            must yield the same elements in the same order every time it is
            iterated (shuffle the returned dataset, not this one).
        batch_size: int. Examples per forward pass of the locked towers.
        cache_dir: str or `None`. Also keep the features on disk here, so
            later processes reuse them.
        towers: which towers to cache (`"image"`, `"text"`, `"third"`), or
            `None` for every locked one.
        keep_inputs: bool. Pass the raw values the trained towers still read
            through (default). `False` returns the features alone and holds
            none of the raw values: for a caller that has the trained towers'
            inputs elsewhere (e.g. Three Towers' `f` at its own, smaller
            image size, where the frozen `h` reads 224 px images that would
            otherwise all be kept: 4 GB as uint8 for the 26,799-pair corpus,
            and a 16.8 GiB peak with the copies made while stacking them).

    Returns:
        An unbatched `tf.data.Dataset` with the same examples in the same
        order: each cached tower's raw input is replaced by
        `"<name>_features"` (float32) unless an unlocked tower still reads it;
        every other key passes through (none with `keep_inputs=False`).
        Shuffle, batch and pass it to `fit`. It is held in memory: the
        features plus every passed-through value (for Three Towers, the raw
        images that the trained image tower reads).

    Example:

    ```python
    model = keras_towers.LiT(image_tower, text_tower, preprocessor)
    cached = keras_towers.cache_locked_features(model, pairs, batch_size=64)
    model.compile()
    model.fit(cached.shuffle(10_000).batch(256), epochs=10)
    ```
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: {batch_size!r}"
        )
    if getattr(model, "preprocessor", None) is None:
        raise ValueError(
            f"{type(model).__name__} has no preprocessor; caching features "
            "needs one to turn raw examples into tower inputs."
        )
    sources = _select_sources(model, towers)
    dataset = _as_dataset(dataset)
    _check_element_spec(dataset.element_spec, sources)
    drop = _dropped_keys(model, sources)

    fingerprint, count, kept = _scan(
        dataset, keep=lambda key: keep_inputs and key not in drop
    )
    if count == 0:
        raise ValueError("`dataset` is empty: there is nothing to cache.")

    features = {}
    missing = []
    keys = {}
    for source in sources:
        key, description = _cache_key(model, source, fingerprint, count)
        keys[source.name] = (key, description)
        array = _MEMORY.get(key)
        if array is None and cache_dir is not None:
            array = load_features(cache_dir, _disk_name(source), key, count)
        if array is None:
            missing.append(source)
        else:
            _remember(key, array)
            features[source.feature_key] = array
    if missing:
        computed = _compute(model, dataset, missing, batch_size, fingerprint)
        for source in missing:
            key, description = keys[source.name]
            array = computed[source.feature_key]
            _remember(key, array)
            if cache_dir is not None:
                store_features(cache_dir, _disk_name(source), key, description, array)
            features[source.feature_key] = array
    return _to_dataset(kept, features, dataset.element_spec)


# === Which towers ===


def _has_locked_part(source: FeatureSource) -> bool:
    return source.tower is not None and bool(source.tower.locked_part)


def locked_sources(model) -> list[FeatureSource]:
    """The model's towers with a locked part: what `cache_locked_features`
    caches when `towers` is `None`."""
    return [s for s in model.feature_sources() if _has_locked_part(s)]


def _select_sources(model, towers) -> list[FeatureSource]:
    if not hasattr(model, "feature_sources"):
        raise TypeError(
            f"{type(model).__name__} does not list its towers "
            "(`feature_sources()`); only keras_towers models can be cached."
        )
    sources = model.feature_sources()
    by_name = {s.name: s for s in sources}
    if towers is None:
        selected = [s for s in sources if _has_locked_part(s)]
        if not selected:
            status = ", ".join(
                f"{s.name}: {'not loaded' if s.tower is None else 'unlocked'}"
                for s in sources
            )
            raise ValueError(
                f"None of {type(model).__name__}'s towers is locked ({status}), "
                "so there is nothing to cache: the outputs of trained towers "
                "change every step. Lock a tower (e.g. `LiT(lock_image=True)`) "
                "or fit on the raw dataset."
            )
        return selected
    if isinstance(towers, str):
        towers = [towers]
    selected = []
    for name in towers:
        if name not in by_name:
            raise ValueError(
                f"Unknown tower {name!r} in `towers`. "
                f"{type(model).__name__} has: {sorted(by_name)}."
            )
        source = by_name[name]
        if source.tower is None:
            raise ValueError(
                f"The {name} tower of this {type(model).__name__} is not "
                "loaded, so its features cannot be computed."
            )
        if not source.tower.locked_part:
            raise ValueError(
                f"The {name} tower ({source.tower.name!r}) is not locked: its "
                "outputs change as it trains, so they cannot be cached. Lock "
                "it (`trainable = False`, or its backbone's) or leave it out of "
                "`towers`."
            )
        selected.append(source)
    return selected


def _dropped_keys(model, selected) -> set:
    """Raw keys no trained tower reads any more once `selected` are cached."""
    chosen = {s.name for s in selected}
    drop = set()
    for raw_key in {s.raw_key for s in selected}:
        readers = [s.name for s in model.feature_sources() if s.raw_key == raw_key]
        if all(name in chosen for name in readers):
            drop.add(raw_key)
    return drop


# === Reading the dataset ===


def _as_dataset(dataset) -> tf.data.Dataset:
    if isinstance(dataset, tf.data.Dataset):
        return dataset
    if isinstance(dataset, dict):
        try:
            return tf.data.Dataset.from_tensor_slices(dataset)
        except (ValueError, TypeError) as e:
            raise ValueError(
                "`dataset` as a dict must hold equally long arrays or lists "
                "(images of one size). For images of varying sizes pass an "
                f"unbatched tf.data.Dataset. ({e})"
            ) from e
    raise TypeError(
        "`dataset` must be an unbatched tf.data.Dataset of "
        "{'images', 'texts'} examples or a dict of arrays. "
        f"Received: {type(dataset).__name__}."
    )


_EXPECTED_RANK = {"images": 3, "texts": 0}


def _check_element_spec(spec, sources) -> None:
    if not isinstance(spec, dict):
        raise ValueError(
            "`dataset` must yield dicts like {'images': ..., 'texts': ...}. "
            f"Received elements of type {spec}."
        )
    for source in sources:
        key = source.raw_key
        if key not in spec:
            raise ValueError(
                f"Caching the {source.name} tower needs {key!r} in every "
                f"example. The dataset has keys {sorted(spec)}."
            )
        rank = spec[key].shape.rank
        expected = _EXPECTED_RANK.get(key)
        if expected is not None and rank is not None and rank != expected:
            hint = (
                " It looks batched: call `.unbatch()` first."
                if rank == expected + 1
                else ""
            )
            raise ValueError(
                f"`dataset` must be unbatched: each {key!r} must have rank "
                f"{expected}. Received shape {spec[key].shape}.{hint}"
            )


def _update_digest(digest, element: dict) -> None:
    for key in sorted(element):
        value = element[key]
        digest.update(key.encode())
        if isinstance(value, bytes):
            digest.update(b"s%d:" % len(value))
            digest.update(value)
            continue
        array = np.ascontiguousarray(value)
        if array.dtype == object:  # nested strings
            for item in array.reshape(-1):
                digest.update(b"s%d:" % len(item))
                digest.update(item)
            continue
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())


def _scan(dataset, keep):
    """Fingerprint every element (in order) and collect the kept values."""
    digest = hashlib.sha256()
    kept = collections.defaultdict(list)
    count = 0
    for element in dataset.as_numpy_iterator():
        _update_digest(digest, element)
        for key, value in element.items():
            if keep(key):
                kept[key].append(value)
        count += 1
    return digest.hexdigest(), count, dict(kept)


# === Keys ===


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def weights_digest(variables, paths: bool = True) -> str:
    """sha256 over variables' shapes, dtypes and values, in order, and their
    paths unless `paths=False` (paths carry the model's and layers' names,
    which the frozen-feature keys leave out)."""
    digest = hashlib.sha256()
    for variable in variables:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable.value))
        path = f"{variable.path}|" if paths else ""
        digest.update(f"{path}{value.dtype.str}{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _vocabulary_digest(tokenizer) -> str | None:
    get_vocabulary = getattr(tokenizer, "get_vocabulary", None)
    if get_vocabulary is None:
        return None
    try:
        vocabulary = get_vocabulary()
    except (ValueError, AttributeError, NotImplementedError):
        return None
    if vocabulary is None:
        return None
    return hashlib.sha256(_json(list(vocabulary)).encode()).hexdigest()


#: Preprocessor config entries that shape a text source's inputs.
_TEXT_PREPROCESSING_KEYS = (
    "tokenizer",
    "sequence_length",
    "lowercase",
    "start_token_id",
    "end_token_id",
    "pad_token_id",
)
#: The preprocessor config entry of each image input key's converter.
_IMAGE_CONVERTER_KEYS = {
    "images": "image_converter",
    "third_images": "third_image_converter",
}


def _disk_name(source) -> str:
    """File name stem of a source's cached features: by modality, so the
    same features serve `image_features` and Three Towers' `third_features`."""
    return "text_features" if source.raw_key == "texts" else "image_features"


def _nameless(config):
    """`config` without its `name` and `trainable` entries (neither changes
    what a locked part computes in inference mode; Keras also numbers a
    second `ImageConverter` built in one process `image_converter_1`)."""
    if isinstance(config, dict):
        return {
            k: _nameless(v) for k, v in config.items() if k not in ("name", "trainable")
        }
    if isinstance(config, (list, tuple)):
        return [_nameless(v) for v in config]
    return config


def _preprocessing_config(config: dict, source) -> dict:
    """The part of a preprocessor's config that shapes `source`'s inputs: a
    text source's tokenizer and lengths, an image source's converter and
    framing. Models that prepare a tower's inputs alike (LiT with a byte or
    a WordPiece text tower, Three Towers' `h`) share its cached features."""
    if source.raw_key == "texts":
        return {k: config.get(k) for k in _TEXT_PREPROCESSING_KEYS}
    # By position, not by input key: Three Towers' `third_images` converter
    # prepares the same pixels as a LiT's `images` one.
    converters = [
        config.get(_IMAGE_CONVERTER_KEYS.get(key, key)) for key in source.input_keys
    ]
    return {"framing": config.get("framing"), "converters": converters}


def _computation(tower) -> tuple[str, dict, list]:
    """What a locked tower computes: `("pooled", config, variables)` when
    its features are the pooled backbone output (backbone locked, or the
    whole tower locked without a head: then both compute the same), else
    `("tower", config, variables)`. Configs leave out layer names."""
    config = tower.get_config()
    projection = getattr(tower, "projection", None)
    # `.weights`, not `.variables`: the latter also holds random-seed state
    # (dropout's SeedGenerator), which differs between two builds of the same
    # tower and would make every key new (a disk cache that never hits).
    if tower.locked_part == "tower" and projection is not None:
        return "tower", config, tower.weights
    head_keys = ("projection_dim", "head", "head_use_bias", "head_hidden_dim")
    pooled = {k: v for k, v in config.items() if k not in head_keys}
    skip = set() if projection is None else {id(w) for w in projection.weights}
    return "pooled", pooled, [w for w in tower.weights if id(w) not in skip]


def source_description(model, source) -> dict:
    """What identifies a locked source's computation, apart from the data:
    the locked computation (its config without names and its weights,
    hashed here, once) and the preprocessing of its inputs (and the
    vocabulary of a text source). Not the model's class, its other towers
    or its trained heads: every model that runs the same frozen encoder on
    the same inputs the same way shares one cache entry."""
    tower = source.tower
    computation, config, variables = _computation(tower)
    preprocessor = model.preprocessor
    description = {
        "format": CACHE_FORMAT_VERSION,
        "modality": "text" if source.raw_key == "texts" else "image",
        "computation": computation,
        "tower_class": type(tower).__name__,
        "tower_config": _json(_nameless(config)),
        "weights_sha256": weights_digest(variables, paths=False),
        "preprocessing_config": _json(
            _nameless(_preprocessing_config(preprocessor.get_config(), source))
        ),
    }
    if source.raw_key == "texts":
        description["vocabulary_sha256"] = _vocabulary_digest(
            getattr(preprocessor, "tokenizer", None)
        )
    return description


def data_key(source_desc: dict, fingerprint: str, count: int):
    """`(key, description)` of `source_desc`'s features of the `count`
    examples identified by `fingerprint`."""
    description = {**source_desc, "data_sha256": fingerprint, "count": count}
    key = hashlib.sha256(_json(description).encode()).hexdigest()
    return key, description


def _cache_key(model, source, fingerprint: str, count: int):
    return data_key(source_description(model, source), fingerprint, count)


def load_features(cache_dir, name: str, key: str, count: int):
    """`load_keyed_array` of a `(count, F)` feature array, or `None`."""
    return load_keyed_array(
        cache_dir, name, key, lambda a: a.ndim == 2 and a.shape[0] == count
    )


def store_features(cache_dir, name: str, key: str, description: dict, array) -> None:
    """`store_keyed_array` with the description's long `*_config` entries
    left out of the key file (the key already covers them)."""
    short = {k: v for k, v in description.items() if not k.endswith("_config")}
    store_keyed_array(cache_dir, name, key, short, array)


#: For caches keyed like this one (`keras_towers.recipes_rocket`'s view
#: features): the locked sources of `model`.
select_sources = _select_sources


# === Memory and disk ===


def _remember(key: str, array: np.ndarray) -> None:
    _MEMORY[key] = array
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > MEMORY_CACHE_ENTRIES:
        _MEMORY.popitem(last=False)


def _paths(cache_dir, name, key):
    stem = os.path.join(os.fspath(cache_dir), f"{name}-{key}")
    return stem + ".npy", stem + ".json"


def load_keyed_array(
    cache_dir, name: str, key: str, valid, what: str = "feature cache"
):
    """The array stored under `name`/`key` in `cache_dir`, or `None`.

    A missing entry returns `None`; an unreadable one, or one whose key file
    disagrees with `key` or whose array fails `valid(array)`, is ignored with
    a warning (the caller recomputes). Shared by every on-disk cache of
    computed features (frozen towers, ProtoCLIP's teacher).
    """
    array_path, meta_path = _paths(cache_dir, name, key)
    if not (os.path.isfile(array_path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        array = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        warnings.warn(
            f"Ignoring unreadable {what} {array_path} ({e}); recomputing.",
            stacklevel=3,
        )
        return None
    if meta.get("key") != key or not valid(array):
        warnings.warn(
            f"Ignoring {what} {array_path}: it does not match its key file or "
            "the data; recomputing.",
            stacklevel=3,
        )
        return None
    return array


def store_keyed_array(cache_dir, name: str, key: str, description: dict, array) -> None:
    """Store `array` under `name`/`key` with a JSON key file (`key`, shape and
    `description`), each written to a temporary name and renamed."""
    os.makedirs(cache_dir, exist_ok=True)
    array_path, meta_path = _paths(cache_dir, name, key)
    atomic_write(array_path, lambda f: np.save(f, array, allow_pickle=False))
    meta = {"key": key, "shape": list(array.shape), **description}
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=2).encode()))


# === Computing ===


class _LockedPart(keras.Model):
    """A tower's locked part as a model, so `predict_on_batch` compiles it
    (jax.jit / tf.function): eager JAX runs a ResNet ~2.5x slower."""

    def __init__(self, tower):
        super().__init__(name=f"{tower.name}_locked_part")
        self.tower = tower

    def call(self, inputs):
        return self.tower.locked_features(inputs)


def _locked_forward(runner: _LockedPart, inputs) -> np.ndarray:
    """Features of one batch (the single place the locked towers run)."""
    outputs = runner.predict_on_batch(inputs)
    return np.asarray(keras.ops.convert_to_numpy(outputs), "float32")


def _compute(model, dataset, sources, batch_size, fingerprint) -> dict:
    preprocessor = model.preprocessor
    raw_keys = sorted({s.raw_key for s in sources})
    input_keys = sorted({k for s in sources for k in s.input_keys})

    def prepare(element):
        # One example at a time, so images of different sizes are resized
        # before they are batched.
        outputs = preprocessor({k: element[k] for k in raw_keys})
        absent = [k for k in input_keys if k not in outputs]
        if absent:
            raise ValueError(
                f"The preprocessor of {type(model).__name__} does not produce "
                f"{absent}, which the locked tower needs (e.g. 'third_images' "
                "needs `ContrastivePreprocessor(third_image_converter=...)`)."
            )
        return element, {k: outputs[k] for k in input_keys}

    pairs = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    digest = hashlib.sha256()
    chunks = {s.feature_key: [] for s in sources}
    runners = {s.name: _LockedPart(s.tower) for s in sources}
    buffer = []

    def flush():
        batch = {k: np.stack([b[k] for b in buffer]) for k in input_keys}
        for source in sources:
            if len(source.input_keys) == 1:
                inputs = batch[source.input_keys[0]]
            else:
                inputs = {k: batch[k] for k in source.input_keys}
            chunks[source.feature_key].append(
                _locked_forward(runners[source.name], inputs)
            )
        buffer.clear()

    for element, inputs in pairs.prefetch(2 * batch_size).as_numpy_iterator():
        _update_digest(digest, element)
        buffer.append(inputs)
        if len(buffer) == batch_size:
            flush()
    if buffer:
        flush()
    if digest.hexdigest() != fingerprint:
        raise ValueError(
            "`dataset` yielded different elements on its second iteration, so "
            "features cannot be matched to examples. Pass a deterministic "
            "dataset (no `shuffle(..., reshuffle_each_iteration=True)` or "
            "random augmentation before caching) and shuffle the result."
        )
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


# === The result ===


def _stack(key, values, spec):
    """Values of one key as slicable tensors (flattened when sizes differ)."""
    first = values[0]
    if isinstance(first, bytes) or (
        isinstance(first, np.ndarray) and first.dtype == object
    ):
        return {key: np.array(values, dtype=object)}, None
    shapes = {np.shape(v) for v in values}
    if len(shapes) == 1:
        return {key: np.stack(values)}, None
    flat = tf.RaggedTensor.from_row_lengths(
        np.concatenate([np.reshape(v, [-1]) for v in values]),
        [int(np.size(v)) for v in values],
    )
    shapes = np.array([np.shape(v) for v in values], "int64")
    return {f"{key}/flat": flat, f"{key}/shape": shapes}, spec.shape


def _to_dataset(kept, features, spec) -> tf.data.Dataset:
    tensors = {}
    varying = {}
    for key, values in kept.items():
        stacked, static_shape = _stack(key, values, spec[key])
        tensors.update(stacked)
        if static_shape is not None:
            varying[key] = static_shape
    tensors.update(features)
    dataset = tf.data.Dataset.from_tensor_slices(tensors)
    if varying:

        def restore(element):
            element = dict(element)
            for key, static_shape in varying.items():
                value = tf.reshape(
                    element.pop(f"{key}/flat"), element.pop(f"{key}/shape")
                )
                value.set_shape(static_shape)
                element[key] = value
            return element

        dataset = dataset.map(restore)
    return dataset
