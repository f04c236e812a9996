"""`fit(accumulation_steps=M)`: a GradCache step equals one full-batch step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_towers
from keras_towers import accumulation
from keras_towers import from_scratch

BATCH = 8
BACKEND = keras.config.backend()
# Every backend has its own accumulated step (keras_towers.accumulation), so
# each runs the CLIP and dropout-replay checks; the rest run where compiling
# is cheap (5 s per `fit` on jax, XLA on tensorflow): torch, plus the XLA
# SigLIP step on tensorflow and the regularisers on jax.
only_torch = pytest.mark.skipif(
    BACKEND != "torch", reason="the same step code as test_clip; runs on torch"
)
# Slack over float32 summation order; a step must move weights far more.
RTOL, ATOL = 1e-5, 1e-6


def raw_data(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype="uint8")
    words = ["red", "blue", "green", "tiny", "big", "odd", "round", "flat"]
    texts = [f"{words[i % len(words)]} shape {i}" for i in range(n)]
    return {"images": images, "texts": texts}


def clip(cls=keras_towers.CLIP):
    return lambda: cls.tiny(config="tiny_shallow")


def weights(model):
    """Every variable's value by position (seed generator paths differ
    between two builds in one process)."""
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


def train(build, steps, data, xla=False, **fit_kwargs):
    """The model, weights before and after one epoch of SGD (seeded build),
    and the logs. On tensorflow XLA only with `xla` (compiling is slow)."""
    keras.utils.set_random_seed(0)
    model = build()
    compile_kwargs = {}
    if keras.config.backend() == "tensorflow" and not xla:
        compile_kwargs["jit_compile"] = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
    before = weights(model)
    fit_kwargs.setdefault("batch_size", BATCH)
    history = model.fit(
        data, epochs=1, shuffle=False, verbose=0, accumulation_steps=steps, **fit_kwargs
    )
    return model, before, weights(model), history.history


_REFERENCES = {}


def reference(key, build, data, **kwargs):
    """`train(build, 1, data)`, once per key."""
    if key not in _REFERENCES:
        _REFERENCES[key] = train(build, 1, data, **kwargs)
    return _REFERENCES[key]


def assert_same_step(reference_run, run):
    model, before, expected, expected_logs = reference_run
    _, _, actual, logs = run
    trainable = {id(v) for v in model.trainable_variables}
    moved = {
        v.path: float(np.max(np.abs(expected[i] - before[i])))
        for i, v in enumerate(model.variables)
        if id(v) in trainable
    }
    # The step moved the weights far more than the tolerance, so the
    # comparison below cannot pass by both runs doing (almost) nothing. (An
    # attention key bias has no gradient: not every variable moves.)
    far = [path for path, value in moved.items() if value > 100 * ATOL]
    assert len(far) >= 0.8 * len(moved), moved
    assert max(moved.values()) > 1e-2, moved
    assert len(actual) == len(expected)
    for v, a, e in zip(model.variables, actual, expected, strict=True):
        # Non-trainable state (seeds, moving statistics) too.
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL, err_msg=v.path)
    assert logs.keys() == expected_logs.keys()
    for name, value in expected_logs.items():
        np.testing.assert_allclose(
            logs[name], value, rtol=RTOL, atol=ATOL, err_msg=name
        )


def test_clip():
    # 10 rows: batches of 8 and 2 rows; M = 4: micro-batches of 2 rows (on
    # jax interleaved: rows m, m + 4), then 1, 1 (on tensorflow, with the
    # batch size unknown while tracing, 1, 1 and two empty ones, run on a
    # copy of the last row and discarded).
    data = raw_data(10)
    assert_same_step(train(clip(), 1, data), train(clip(), 4, data))


@pytest.mark.parametrize("steps", [2, 3])
def test_siglip(steps):
    if BACKEND == "jax" or (BACKEND == "tensorflow" and steps == 3):
        pytest.skip("M = 2 runs on torch and tensorflow (XLA), M = 3 on torch")
    # M = 3: micro-batches of 3, 3, 2 rows. On tensorflow M = 2 runs under
    # XLA (`CLIP.compile`'s default there).
    data = raw_data()
    build = clip(keras_towers.SigLIP)
    xla = steps == 2 and keras.config.backend() == "tensorflow"
    expected = reference(("siglip", xla), build, data, xla=xla)
    assert_same_step(expected, train(build, steps, data, xla=xla))


@only_torch
def test_three_towers():
    data = raw_data()

    def build():
        return keras_towers.ThreeTowers.tiny()

    assert_same_step(train(build, 1, data), train(build, 2, data))


# === Regularisers, dropout ===


def custom_clip(dropout=0.0, regularise=False, cls=keras_towers.CLIP):
    """CLIP with a small conv image tower: optional dropout, optional L2
    kernel and L1 activity regularisers."""
    parts = from_scratch.build("tiny_shallow", 32, projection_dim=32)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 8, strides=8, name="conv_patches")(inputs)
    x = keras.layers.Flatten(name="conv_flatten")(x)
    if dropout:
        # Seeded: a SeedGenerator on every backend. Unseeded: on torch,
        # torch's global generator.
        x = keras.layers.Dropout(dropout, seed=7, name="conv_dropout")(x)
    x = keras.layers.Dense(
        16,
        activation="gelu",
        kernel_regularizer=keras.regularizers.L2(1e-2) if regularise else None,
        activity_regularizer=keras.regularizers.L1(1e-2) if regularise else None,
        name="conv_dense",
    )(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="conv_dropout_unseeded")(x)
    backbone = keras.Model(inputs, x, name="conv_backbone")
    image_tower = keras_towers.ImageTower(
        backbone, pooling="none", projection_dim=32, head="linear"
    )
    return cls(image_tower, parts.text_tower, parts.preprocessor)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="runs on torch and jax")
def test_regularisation_losses_are_exact():
    data = raw_data()

    def build():
        return custom_clip(regularise=True, cls=keras_towers.CLIP)

    expected = train(build, 1, data)
    model = expected[0]
    model(model.preprocessor(data), training=True)
    assert len(model.losses) == 2  # kernel and activity regulariser
    assert_same_step(expected, train(build, 2, data))


class MicroBatchedCLIP(keras_towers.CLIP):
    """Reference for dropout: a normal step whose forward pass runs the
    micro-batches one after the other, as accumulation's first pass does
    (so it draws the same dropout masks)."""

    steps = 2

    def call(self, inputs, training=None):
        rows = int(next(iter(inputs.values())).shape[0])
        interleave = keras.config.backend() == "jax" and rows % self.steps == 0
        bounds = accumulation._static_bounds(rows, self.steps)
        parts = []
        for m in range(len(bounds) - 1):
            if interleave:
                part = {k: v[m :: self.steps] for k, v in inputs.items()}
            else:
                part = {k: v[bounds[m] : bounds[m + 1]] for k, v in inputs.items()}
            parts.append(super().call(part, training=training))
        ops = keras.ops
        if interleave:
            return {
                k: ops.reshape(ops.stack([p[k] for p in parts], axis=1), (rows, -1))
                for k in parts[0]
            }
        return {k: ops.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_dropout_masks_are_replayed():
    # Static batch shapes (the reference splits by a known row count).
    data = tf.data.Dataset.from_tensor_slices(raw_data()).batch(
        BATCH, drop_remainder=True
    )

    def build():
        return custom_clip(dropout=0.5, cls=MicroBatchedCLIP)

    def build_plain():
        return custom_clip(dropout=0.5)

    expected = train(build, 1, data, batch_size=None)
    model, before, after, _ = expected
    seeds = [i for i, v in enumerate(model.variables) if "seed" in v.path]
    # Dropout is on (the seeded layer's generator advanced).
    assert any(np.any(before[i] != after[i]) for i in seeds)
    assert_same_step(expected, train(build_plain, 2, data, batch_size=None))


# === Arguments ===


def test_bad_accumulation_steps():
    model = keras_towers.CLIP.tiny(config="tiny_shallow")
    model.compile()
    for value in (0, -1, 2.5, "2", True, None):
        with pytest.raises(ValueError, match="accumulation_steps"):
            model.fit(raw_data(), batch_size=BATCH, accumulation_steps=value)


@pytest.mark.parametrize("cls", [keras_towers.ProtoCLIP, keras_towers.CLIPRocket])
def test_multiview_methods_refuse_accumulation(cls):
    assert cls.supports_accumulation is False
    model = cls.tiny()
    with pytest.raises(NotImplementedError, match=cls.__name__):
        model.fit(raw_data(), accumulation_steps=2, verbose=0)


def test_changing_the_setting_resets_the_train_function():
    data = raw_data()
    model = keras_towers.CLIP.tiny(config="tiny_shallow")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(data, batch_size=BATCH, epochs=0)  # makes the train function
    first = model.train_function
    assert first is not None
    model.fit(data, batch_size=BATCH, epochs=0, accumulation_steps=1)
    assert model.train_function is first  # unchanged setting: kept
    model.fit(data, batch_size=BATCH, epochs=0, accumulation_steps=2)
    assert model.train_function is not first
    assert model._accumulation_steps == 2
    second = model.train_function
    model.fit(data, batch_size=BATCH, epochs=0)  # back to 1
    assert model.train_function is not second
    assert model._accumulation_steps == 1
