"""`ContrastiveModel`: what every keras_towers method shares.

A method owns two towers (and maybe more), a preprocessor, and a
`compute_loss` built from pure objectives. This base class supplies the rest:
raw-data handling in `fit`/`evaluate`/`predict`, `encode_images` /
`encode_texts` for evaluation, metrics for objective diagnostics, and presets.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.python_utils import classproperty

from keras_towers import accumulation
from keras_towers import distributed
from keras_towers import presets as preset_lib
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY


def _without_autotune(dataset: tf.data.Dataset):
    """`dataset` with tf.data's autotuning off, unless its options already
    say whether to autotune.

    Keras deletes the pipeline's iterator when `fit`, `evaluate` or
    `predict` ends; with autotuning on, that deletion blocked after the last
    step (2026-12-01, 2 cores: the benchmark's CLIP through `fit`, 10 steps
    per call, returned in a median 1.06 s on tensorflow against 0.002 s with
    autotuning off; `CLIP.tiny` on torch 0.6 s with a fixed batch and up to
    4.8 s with images and texts preprocessed in the pipeline). The steps
    were as fast either way (benchmarks/README.md). `num_parallel_calls=
    AUTOTUNE` then runs one call per core, and `prefetch(AUTOTUNE)` still
    sizes its buffer as it goes.
    """
    if dataset.options().autotune.enabled is not None:
        return dataset
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class ContrastiveModel(keras.Model):
    """Base class of keras_towers methods (not used directly).

    Subclasses define towers, `call` and `compute_loss`, and list the
    diagnostics they log in `diagnostic_names`.
    """

    diagnostic_names: tuple = ()

    #: Whether `fit(accumulation_steps=M)` with `M > 1` is exact for this
    #: method (see `keras_towers.accumulation`); `False` refuses it.
    supports_accumulation: bool = True
    _accumulation_steps: int = 1

    def _init_diagnostics(self, names):
        self.diagnostic_names = tuple(names)
        self.diagnostic_trackers = [keras.metrics.Mean(name=n) for n in names]

    def with_layer_losses(self, loss):
        """`loss` plus the layers' own losses (regularisers), the latter as
        this replica's share under `tf.distribute`."""
        if not self.losses:
            return loss
        # A plain list: jax cannot convert Keras' tracked list of tracers.
        total = keras.ops.sum(list(self.losses))
        return loss + distributed.scale_to_replicas(total)

    def _update_diagnostics(self, diagnostics: dict, prefix: str = ""):
        by_name = {t.name: t for t in self.diagnostic_trackers}
        for key, value in diagnostics.items():
            by_name[prefix + key].update_state(value)

    # === Preprocessing around fit/evaluate/predict ===

    def _needs_preprocessing(self, element_spec) -> bool:
        if not isinstance(element_spec, dict):
            return False
        if TEXT_KEY in element_spec:
            return True
        images = element_spec.get(IMAGE_KEY)
        return images is not None and images.dtype == tf.uint8

    def preprocess_samples(self, x, y=None, sample_weight=None):
        """Preprocess one batch of raw samples inside tf.data.

        keras-hub's `PipelineModel` contract: `fit`, `evaluate` and `predict`
        map this over raw data, so a subclass that needs other inputs (more
        views, sample indices) overrides this one method. Default: the
        model's `preprocessor`.
        """
        return self.preprocessor(x, y, sample_weight)

    def _prepare(self, x, batch_size, shuffle=False):
        """Map `preprocess_samples` over raw data; leave preprocessed data
        alone. Arrays become a (shuffled) tf.data pipeline first."""
        self._build_preprocessor()
        if isinstance(x, dict) and self.preprocessor is not None:
            if any(k in x for k in (TEXT_KEY, IMAGE_KEY)):
                n = len(next(iter(x.values())))
                ds = tf.data.Dataset.from_tensor_slices(x)
                if shuffle:
                    ds = ds.shuffle(n, reshuffle_each_iteration=True)
                x = ds.batch(batch_size or 32)
        if isinstance(x, tf.data.Dataset) and self.preprocessor is not None:
            spec = x.element_spec
            features = spec[0] if isinstance(spec, tuple) else spec
            if self._needs_preprocessing(features):
                x = x.map(self.preprocess_samples, num_parallel_calls=tf.data.AUTOTUNE)
                x = x.prefetch(tf.data.AUTOTUNE)
        if isinstance(x, tf.data.Dataset):
            x = _without_autotune(x)
        return x

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        shuffle=True,
        *,
        accumulation_steps=1,
        **kwargs,
    ):
        """`keras.Model.fit`, accepting raw `{"images", "texts"}` data.

        A `tf.data.Dataset` of raw batches (or a dict of arrays and strings)
        is preprocessed with `self.preprocessor` inside the pipeline.

        Args:
            accumulation_steps: int >= 1. Split every batch into this many
                micro-batches and accumulate their gradients with full-batch
                negatives (GradCache, see `keras_towers.accumulation`): the
                step is the same as one step on the whole batch (exactly, for
                towers without dropout and without BatchNorm in training
                mode), with the activation memory of one micro-batch, at the
                cost of one extra forward pass. The setting stays on the
                model (`train_on_batch` uses it) until the next `fit`.
            **kwargs: passed to `keras.Model.fit`.
        """
        distributed.check_fit_supported(self)
        steps = self.check_accumulation_steps(accumulation_steps)
        if steps != self._accumulation_steps:
            self._accumulation_steps = steps
            # Keras caches the compiled step (on every backend, including
            # jax's jitted `train_step`, in `train_function`).
            self.train_function = None
        prepared = self._prepare(x, batch_size, shuffle=shuffle)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (dict, tf.data.Dataset)):
            kwargs["validation_data"] = self._prepare(validation, batch_size)
        if isinstance(prepared, tf.data.Dataset):
            # Shuffling is the dataset's own business (done above for arrays).
            return super().fit(prepared, y, shuffle=False, **kwargs)
        return super().fit(
            prepared, y, batch_size=batch_size, shuffle=shuffle, **kwargs
        )

    def _build_preprocessor(self) -> None:
        """Build the preprocessor and mark its weightless sublayers
        (tokenizer, resizing) built.

        Keras runs a symbolic pass over the whole model at the start of
        every `fit`, `evaluate` and `predict` while any tracked layer is
        unbuilt; the preprocessor runs inside tf.data, never through the
        model, so on data that come preprocessed it stayed unbuilt and each
        call paid that pass (0.26 s per `fit` for `CLIP.tiny` on torch,
        measured 2026-12-01). Called by `_prepare`, which all three use."""
        preprocessor = getattr(self, "preprocessor", None)
        if not isinstance(preprocessor, keras.layers.Layer):
            return
        if not preprocessor.built:
            try:
                preprocessor.build()
            except ValueError:
                # A tokenizer without start/end/pad ids: the error belongs
                # to tokenizing (`_tokens_tf` raises it), not to a fit on
                # data that come preprocessed.
                return
        for layer in preprocessor._flatten_layers(include_self=False):
            if not layer.built and not layer.weights:
                layer.built = True

    def check_accumulation_steps(self, accumulation_steps) -> int:
        """`accumulation_steps` as an int, or a `ValueError` (not an int
        >= 1) or a `NotImplementedError` (> 1 for a method without
        `supports_accumulation`)."""
        steps = accumulation.check_accumulation_steps(accumulation_steps)
        if steps > 1 and not self.supports_accumulation:
            raise NotImplementedError(
                f"{type(self).__name__} does not support `accumulation_steps` > 1 "
                f"(received accumulation_steps={steps}): its training uses "
                "statistics of the whole batch in its own layers (BatchNorm "
                "heads, several views per sample), which micro-batches would "
                "change. Train it with `accumulation_steps=1`."
            )
        return steps

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a tf.distribute strategy, Keras 3.15 reads the shapes of the
        # first batch by MEAN-reducing it across replicas, which fails on
        # boolean padding masks (AddN has no bool kernel). One replica's
        # shard has the same structure and dtypes: build from that instead.
        if iterator is not None and getattr(self, "_distribute_strategy", None):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    distributed.first_replica_value, next(batches)
                )
                break
            iterator = None
        elif (
            keras.backend.backend() == "tensorflow"
            and getattr(self, "_distribute_strategy", None) is None
        ):
            # Keras' tensorflow trainer skips the symbolic build without a
            # strategy and lets the first trace of the train function build
            # the optimizer; a tf.function that creates variables is traced
            # a second time, so the first `fit` traced `train_step` twice
            # (CLIP.tiny: 12.3 s -> 6.2 s without XLA, 2026-12-01). Build it
            # here, as the jax and torch trainers do, when the model is built
            # (an unbuilt one keeps Keras' deferred build).
            optimizer = getattr(self, "optimizer", None)
            if (
                optimizer is not None
                and not optimizer.built
                and all(layer.built for layer in self._flatten_layers())
            ):
                optimizer.build(self.trainable_variables)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, *args):
        """Keras' train step, or with `fit(accumulation_steps=M > 1)` the
        accumulated one of `keras_towers.accumulation` (`(state, data)` on
        jax, `(data,)` on the other backends)."""
        if self._accumulation_steps > 1:
            return accumulation.train_step(self, *args)
        return super().train_step(*args)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        prepared = self._prepare(x, batch_size)
        if prepared is not x:
            batch_size = None
        return super().evaluate(prepared, y, batch_size=batch_size, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """`keras.Model.predict`, accepting raw data: a `{"images", "texts"}`
        dict or dataset (as `fit`), a uint8 image batch `(N, H, W, C)` or
        one image, or a list of strings. Returns the dict of embeddings."""
        x = _raw_predict_inputs(x)
        self._build_preprocessing()
        prepared = self._prepare(x, batch_size)
        if prepared is not x:
            batch_size = None
        return super().predict(prepared, batch_size=batch_size, **kwargs)

    # === Encoding raw inputs ===

    def _require_preprocessor(self):
        if self.preprocessor is None:
            raise ValueError(
                f"{type(self).__name__} has no preprocessor; pass "
                "`preprocessor=` to use raw images and strings."
            )

    def _build_preprocessing(self) -> None:
        """Mark the preprocessor's weightless layers built.

        Keras' jax `predict_on_batch` and `predict` run an extra eager
        forward pass of the whole model on every call while any of its
        layers is unbuilt, and an image converter's `Resizing` is built only
        by the first image: encoding texts alone cost 69 ms per 1-text call
        of the small CLIP instead of 12 ms (`benchmarks/encode_texts_only.py`,
        2026-12-02, AMD EPYC).
        `encode_*` and `predict` call this first.
        """
        preprocessor = self.preprocessor
        if preprocessor is None:
            return
        if not preprocessor.built:
            preprocessor.build()
        for layer in preprocessor._flatten_layers():
            if not layer.built and not layer.weights:
                layer.built = True

    def _encode(self, batches, key, batch_size: int | None = None):
        """Run `predict_on_batch` over batches of preprocessed inputs.

        On jax and tensorflow a batch smaller than `batch_size` is padded
        (repeating its last row) to the next power of two, at least 8 and at
        most `batch_size`, so they compile a few functions per batch size
        instead of one per distinct remainder, and encoding one text with
        `batch_size=256` does not cost a forward pass over 256. Torch runs
        eagerly and compiles nothing: its batches run as they are (padding
        one image to 8 rows cost it about 3x the forward pass, 2026-12-01).
        """
        pads = keras.config.backend() != "torch"
        self._build_preprocessing()
        outputs = []
        for batch in batches:
            n = len(next(iter(batch.values())))
            target = _padded_size(n, batch_size) if pads else n
            if 0 < n < target:
                batch = {k: _pad_rows(np.asarray(v), target) for k, v in batch.items()}
            result = keras.ops.convert_to_numpy(self.predict_on_batch(batch)[key])
            outputs.append(result[:n])
        return outputs

    def encode_images(self, images, batch_size: int = 32) -> np.ndarray:
        """L2-normalised image embeddings for raw images.

        Args:
            images: one image `(H, W, C)`, a batch `(N, H, W, C)`, a list of
                images (sizes may differ), or a `tf.data.Dataset` yielding
                image batches. uint8 or float, values in `[0, 255]`.
            batch_size: int. Images per forward pass.

        Returns:
            float32 NumPy array `(N, D)` with unit-norm rows.
        """
        self._require_preprocessor()
        if isinstance(images, tf.data.Dataset):
            if isinstance(images.element_spec, dict):
                images = images.map(lambda b: b[IMAGE_KEY])
            ds = images.map(lambda b: self.preprocessor({IMAGE_KEY: b}))
            batches = _finite_batches(ds.prefetch(2))
            chunks = self._encode(batches, "image_embeddings", batch_size)
            return _concat(chunks, self.embedding_dim)
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if isinstance(images, (list, tuple)):
            images = [np.asarray(im) for im in images]
        elif not isinstance(images, np.ndarray):
            images = np.asarray(keras.ops.convert_to_numpy(images))
            if images.ndim == 3:
                images = images[None]
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise ValueError(
                "`images` must be one image (H, W, C), a batch (N, H, W, C) "
                f"or a list of images. Received shape {images.shape}."
            )
        _warn_if_unit_range(images)
        _check_finite_pixels(images)
        if isinstance(images, list) and len({im.shape for im in images}) > 1:
            return self._encode_image_list(images, batch_size)
        if isinstance(images, list):
            images = np.stack(images) if images else np.zeros((0, 1, 1, 3), "uint8")
        chunks = []
        for start in range(0, len(images), batch_size):
            pixels = self._preprocess_images(images[start : start + batch_size])
            chunks.extend(
                self._encode([{IMAGE_KEY: pixels}], "image_embeddings", batch_size)
            )
        return _concat(chunks, self.embedding_dim)

    def _encode_image_list(self, images: list, batch_size: int) -> np.ndarray:
        """Images of different sizes, resized inside tf.data.

        Eager preprocessing would compile the resize once per distinct image
        shape on jax (about 0.2 s each); a tf.data map is traced once.
        """
        groups: dict = {}
        for i, image in enumerate(images):
            if image.ndim != 3:
                raise ValueError(
                    f"`images[{i}]` must have shape (H, W, C). Received shape "
                    f"{image.shape}."
                )
            groups.setdefault((image.shape[-1], image.dtype.name), []).append(i)
        out = None
        for (channels, dtype), indices in groups.items():
            ds = tf.data.Dataset.from_generator(
                lambda indices=indices: (images[i] for i in indices),
                output_signature=tf.TensorSpec((None, None, channels), dtype),
            )
            ds = ds.map(
                lambda image: self.preprocessor({IMAGE_KEY: image})[IMAGE_KEY],
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            batches = ({IMAGE_KEY: b.numpy()} for b in ds.batch(batch_size).prefetch(2))
            embeddings = np.concatenate(
                self._encode(batches, "image_embeddings", batch_size)
            )
            if out is None:
                out = np.zeros((len(images), embeddings.shape[-1]), "float32")
            out[indices] = embeddings
        return out

    def _preprocess_images(self, images):
        if images.ndim != 4:
            raise ValueError(
                "Each image must have shape (H, W, C). "
                f"Received shape {images.shape[1:]}."
            )
        out = self.preprocessor({IMAGE_KEY: images})[IMAGE_KEY]
        return keras.ops.convert_to_numpy(out)

    def encode_texts(self, texts, batch_size: int = 256) -> np.ndarray:
        """L2-normalised text embeddings for raw strings.

        Texts longer than the preprocessor's context are cut to fit (as in
        CLIP); one `keras_towers.TruncationWarning` per call says how many.

        Args:
            texts: a string or a list of strings.
            batch_size: int. Texts per forward pass.

        Returns:
            float32 NumPy array `(N, D)` with unit-norm rows.
        """
        self._require_preprocessor()
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, (str, bytes)):
                raise TypeError(
                    f"`texts[{i}]` must be a string. Received "
                    f"{type(text).__name__}: {text!r}."
                )
        # One warning for the whole call, however many batches it takes.
        warn_if_truncated = getattr(self.preprocessor, "warn_if_truncated", None)
        if warn_if_truncated is not None:
            warn_if_truncated(texts, stacklevel=2)
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.preprocessor({TEXT_KEY: texts[start : start + batch_size]})
            tokens = {k: keras.ops.convert_to_numpy(v) for k, v in tokens.items()}
            chunks.extend(self._encode([tokens], "text_embeddings", batch_size))
        return _concat(chunks, self.embedding_dim)

    # === Config ===

    #: Constructor arguments that hold serialized Keras objects.
    nested_config_keys: tuple = ("image_tower", "text_tower", "preprocessor")

    @classmethod
    def from_config(cls, config):
        """Deserialize nested towers/preprocessor, then call the constructor
        (keras-hub `Task.from_config`)."""
        config = dict(config)
        for key in cls.nested_config_keys:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def check_unique_variable_paths(self) -> None:
        """Guard against keras-hub's shared-path trap: two sub-models built
        without distinct names share variable paths, and on the torch backend
        one of them is silently never trained."""
        seen = {}
        for variable in self.variables:
            if variable.path in seen and seen[variable.path] is not variable:
                raise ValueError(
                    f"Two variables share the path {variable.path!r}; on the torch "
                    "backend one of them would never be trained. Give every "
                    "backbone a distinct `name=`."
                )
            seen[variable.path] = variable

    # === Presets ===

    @classproperty
    def presets(cls) -> dict:
        """Shipped presets loadable by this class, name -> metadata."""
        return preset_lib.list_presets(cls)

    @classmethod
    def from_preset(
        cls,
        preset: str,
        load_weights: bool = True,
        verify_checksums: bool = True,
        verify_encoders: bool = True,
        **kwargs,
    ):
        """Load a model from a preset name or directory.

        Called on `ContrastiveModel` itself, it returns the class the preset
        records (as keras-hub's `Task.from_preset` does), loaded the way that
        class loads its presets.

        Loading is strict: the weights must be exactly those of the model the
        config builds (every stored weight used, every variable assigned,
        same shapes), or a `ValueError` names the differences.

        Args:
            preset: a shipped preset name (see `cls.presets`), a directory
                written by `save_to_preset`, or a directory in a supported
                external format (e.g. `transformers` CLIP:
                `config.json` with `model_type: clip` + `model.safetensors`).
            load_weights: bool. Load the weights, or only the architecture.
            verify_checksums: bool. Check every file of the preset against
                the sha256 in its `metadata.json`; a preset without them is
                refused. Pass `False` only for files you changed on purpose.
            verify_encoders: bool. Check that the frozen encoders the preset
                references (e.g. `"all_minilm_l6_v2"`) are installed with the
                weights it was saved with; `False` loads the installed ones.
            **kwargs: config overrides.

        Example:

        ```python
        model = keras_towers.ContrastiveModel.from_preset("lit_lite0_embedded")
        type(model).__name__  # "LiT"
        ```
        """
        checks = {
            "verify_checksums": verify_checksums,
            "verify_encoders": verify_encoders,
        }
        target = preset_lib.preset_class(cls, preset)
        if target is not None and target is not cls:
            return target.from_preset(
                preset, load_weights=load_weights, **checks, **kwargs
            )
        return preset_lib.load(
            cls, preset, load_weights=load_weights, **checks, **kwargs
        )

    def save_to_preset(
        self, preset_dir: str, description: str = "", **metadata
    ) -> None:
        """Write config, weights, preprocessor assets and metadata to a dir.

        Weights of `referenced_objects()` and `training_state_objects()` are
        left out of the weights file;
        `preset_metadata()` and `**metadata` go into `metadata.json`, with
        the sha256 of every file and of the weight file of every referenced
        pretrained encoder. The write is atomic: a failed or interrupted
        save leaves `preset_dir` as it was (see `keras_towers.presets.save`).
        """
        preset_lib.save(self, preset_dir, description=description, **metadata)

    def preset_metadata(self) -> dict:
        """Method-specific entries for `metadata.json` (none by default)."""
        return {}

    def referenced_objects(self) -> list:
        """Layers whose frozen weights come from their own source (named in
        this model's config) rather than from this model's weight files.

        `save_to_preset` leaves them out and `load_weights` skips them. None
        by default; `keras_towers.LiT` lists towers given by
        `image_tower_source` / `text_tower_source`.
        """
        return []

    def training_state_objects(self) -> list:
        """Layers holding training-only state (e.g. ProtoCLIP's episode
        clusters): kept by `.keras` files, left out of presets, and skipped
        by `load_weights` of a `.weights.h5` file (presets, `BackupAndRestore`
        checkpoints): the training loop recomputes it. None by default."""
        return []

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        referenced = self.referenced_objects() + self.training_state_objects()
        if referenced and str(filepath).endswith(".weights.h5"):
            skip = list(kwargs.get("objects_to_skip") or [])
            kwargs["objects_to_skip"] = skip + referenced
        return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)


def take_legacy_keys(kwargs: dict, legacy: dict) -> dict:
    """Move old spellings of constructor arguments (`legacy`: old -> new) in
    `kwargs` to the new names, so configs saved by older versions load."""
    for old, new in legacy.items():
        if old in kwargs:
            value = kwargs.pop(old)
            current = kwargs.get(new)
            if current is not None and value is not None and current != value:
                raise ValueError(
                    f"`{old}` is the old name of `{new}`; pass only `{new}`. "
                    f"Received: {old}={value!r}, {new}={current!r}"
                )
            if current is None:
                kwargs[new] = value
    return kwargs


def _raw_predict_inputs(x):
    """Bare images or strings given to `predict`, as the `{"images"}` or
    `{"texts"}` dict the preprocessing expects; anything else unchanged."""
    if isinstance(x, str):
        return {TEXT_KEY: np.asarray([x])}
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, str) for t in x):
        return {TEXT_KEY: np.asarray(list(x))}
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (3, 4):
        return {IMAGE_KEY: x[None] if x.ndim == 3 else x}
    return x


def _padded_size(n: int, batch_size: int | None) -> int:
    """Rows to pad a batch of `n` to: a power of two >= 8, capped at
    `batch_size` (`n` itself without a batch size)."""
    if not batch_size:
        return n
    size = 8
    while size < n:
        size *= 2
    return min(size, batch_size)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    extra = np.repeat(array[-1:], rows - len(array), axis=0)
    return np.concatenate([array, extra])


def _concat(chunks, dim):
    if not chunks:
        return np.zeros((0, dim), "float32")
    return np.concatenate(chunks).astype("float32")


def _finite_batches(ds):
    """Preprocessed image batches of a dataset; NaN or inf pixels (which
    survive resizing and normalisation) raise, naming the positions."""
    seen = 0
    for batch in ds:
        pixels = batch[IMAGE_KEY].numpy()
        finite = np.isfinite(pixels).reshape(len(pixels), -1).all(axis=1)
        if not finite.all():
            _raise_non_finite(seen + np.flatnonzero(~finite), "dataset position")
        seen += len(pixels)
        yield {IMAGE_KEY: pixels}


def _raise_non_finite(bad, what: str = "index") -> None:
    shown = ", ".join(str(int(i)) for i in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    raise ValueError(
        f"{len(bad)} image(s) contain NaN or infinite pixel values: {what} "
        f"{shown}{more}. Pixels must be finite, in [0, 255]; nothing was encoded."
    )


def _check_finite_pixels(images) -> None:
    """Refuse float images holding NaN or inf, naming them (they would give
    NaN embeddings without any error)."""
    if isinstance(images, np.ndarray):
        if images.dtype.kind != "f" or np.all(np.isfinite(images)):
            return
        bad = np.flatnonzero(~np.isfinite(images).reshape(len(images), -1).all(1))
    else:
        bad = [
            i
            for i, im in enumerate(images)
            if im.dtype.kind == "f" and not np.all(np.isfinite(im))
        ]
        if not bad:
            return
    _raise_non_finite(bad)


def _warn_if_unit_range(images):
    sample = images[0] if isinstance(images, list) and images else images
    if isinstance(sample, np.ndarray) and sample.size and sample.dtype.kind == "f":
        if float(np.max(sample)) <= 1.0 and float(np.min(sample)) >= 0.0:
            warnings.warn(
                "Float images with values in [0, 1] were given; keras_towers "
                "expects pixel values in [0, 255] (like uint8). Multiply by "
                "255 if these are unit-range images.",
                stacklevel=3,
            )
