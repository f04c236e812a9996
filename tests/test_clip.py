"""CLIP/SigLIP: fit on tf.data with raw strings, clamping, saving, presets."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_towers
from tests.helpers import random_batch
from tests.helpers import run_roundtrip

CAPTIONS = [
    "a red circle",
    "a blue square",
    "a green triangle",
    "two yellow stars",
    "a small black dot",
    "a large white cross",
    "an orange ring",
    "a purple line",
]


def raw_data(n=8, size=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size + 8, 3), dtype="uint8")
    return images, [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]


def _value(v):
    return keras.ops.convert_to_numpy(v.value if hasattr(v, "value") else v)


@pytest.mark.parametrize("cls", [keras_towers.CLIP, keras_towers.SigLIP])
def test_fit_on_tf_data_with_raw_strings(cls):
    images, texts = raw_data()
    ds = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts}).batch(4)
    model = cls.tiny()
    model.compile(learning_rate=1e-3)
    before = {v.path: _value(v).copy() for v in model.trainable_variables}
    history = model.fit(ds, epochs=2, verbose=0)
    logs = history.history
    for key in (
        "loss",
        "i2t_accuracy",
        "t2i_accuracy",
        "positive_logit",
        "negative_logit",
    ):
        assert key in logs and len(logs[key]) == 2 and np.all(np.isfinite(logs[key]))
    changed = [
        p for p, w in before.items() if not np.allclose(w, _value(_var(model, p)))
    ]
    assert len(changed) == len(before), "every trainable variable should move"
    # evaluate accepts the same raw dataset.
    result = model.evaluate(ds, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"])


def _var(model, path):
    return next(v for v in model.variables if v.path == path)


# The step is checked on every backend against a stored reference
# (tests/test_backend_parity.py); 15 epochs cost 20 s on tensorflow.
@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="parity covers the step"
)
def test_training_reduces_loss_on_a_fixed_batch():
    images, texts = raw_data(8)
    model = keras_towers.CLIP.tiny()
    model.compile(learning_rate=3e-3, weight_decay=0.0)
    history = model.fit(
        {"images": images, "texts": texts}, batch_size=8, epochs=15, verbose=0
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses


def test_logit_scale_is_clamped_after_each_step():
    images, texts = raw_data(4)
    model = keras_towers.CLIP.tiny()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3))
    model.logit_scale.assign(5.0)  # above ln(100) = 4.605
    model.fit({"images": images, "texts": texts}, batch_size=4, epochs=1, verbose=0)
    assert float(_value(model.logit_scale)) <= math.log(100.0) + 1e-6
    model.logit_scale.assign(-3.0)
    model.fit({"images": images, "texts": texts}, batch_size=4, epochs=1, verbose=0)
    assert float(_value(model.logit_scale)) >= 0.0


def test_defaults():
    model = keras_towers.CLIP.tiny()
    np.testing.assert_allclose(
        float(_value(model.logit_scale)), math.log(1 / 0.07), rtol=1e-6
    )
    assert model.logit_bias is None
    siglip = keras_towers.SigLIP.tiny()
    np.testing.assert_allclose(
        float(_value(siglip.logit_scale)), math.log(10.0), rtol=1e-6
    )
    np.testing.assert_allclose(float(_value(siglip.logit_bias)), -10.0)


def test_default_optimizer_excludes_vectors_from_weight_decay():
    model = keras_towers.CLIP.tiny()
    model.compile()
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.AdamW)
    assert opt.weight_decay == pytest.approx(0.2)
    for v in model.trainable_variables:
        assert opt._use_weight_decay(v) == (len(v.shape) >= 2), v.path
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(loss="mse")


def test_embeddings_are_normalised_and_batch_independent():
    images, texts = raw_data(6)
    model = keras_towers.CLIP.tiny()
    e_all = model.encode_images(images, batch_size=6)
    e_split = model.encode_images(images, batch_size=4)
    np.testing.assert_allclose(np.linalg.norm(e_all, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e_all, e_split, atol=1e-5)
    t = model.encode_texts(texts)
    assert t.shape == (6, model.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    # predict over several batches gives the same per-example embeddings.
    out = model.predict({"images": images, "texts": texts}, batch_size=4, verbose=0)
    np.testing.assert_allclose(out["image_embeddings"], e_all, atol=1e-5)
    np.testing.assert_allclose(out["text_embeddings"], t, atol=1e-5)


def test_small_batches_pad_to_a_power_of_two_not_to_the_batch_size():
    from keras_towers.models.base import _padded_size

    assert [_padded_size(n, 256) for n in (1, 8, 9, 100, 200, 256)] == [
        8,
        8,
        16,
        128,
        256,
        256,
    ]
    assert _padded_size(5, 4) == 4 and _padded_size(3, None) == 3
    # Padding never changes the result: one text alone == the same text in
    # a full batch.
    model = keras_towers.CLIP.tiny()
    _, texts = raw_data(20)
    together = model.encode_texts(texts, batch_size=16)
    alone = model.encode_texts(texts[17:18], batch_size=16)
    np.testing.assert_allclose(alone, together[17:18], atol=1e-5)


def test_encode_accepts_varied_raw_inputs():
    model = keras_towers.CLIP.tiny()
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (37, 50, 3), dtype="uint8")
    gray = rng.integers(0, 256, (20, 30, 1), dtype="uint8")
    rgba = rng.integers(0, 256, (33, 33, 4), dtype="uint8")
    single = model.encode_images(rgb)
    assert single.shape == (1, model.embedding_dim)
    mixed = model.encode_images([rgb, gray, rgba, rgb.astype("float32")])
    assert mixed.shape == (4, model.embedding_dim)
    np.testing.assert_allclose(mixed[0], single[0], atol=1e-5)
    np.testing.assert_allclose(mixed[3], single[0], atol=1e-5)
    # RGBA is composited onto white; grayscale is replicated to RGB.
    alpha = rgba[..., 3:].astype("float32") / 255.0
    flat = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    np.testing.assert_allclose(
        model.encode_images(rgba)[0], model.encode_images(flat)[0], atol=1e-5
    )
    np.testing.assert_allclose(
        model.encode_images(gray)[0],
        model.encode_images(np.repeat(gray, 3, axis=-1))[0],
        atol=1e-5,
    )
    ds = tf.data.Dataset.from_tensor_slices(
        rng.integers(0, 256, (5, 32, 32, 3), dtype="uint8")
    ).batch(2)
    assert model.encode_images(ds).shape == (5, model.embedding_dim)
    assert model.encode_texts("one string").shape == (1, model.embedding_dim)
    assert model.encode_texts([]).shape == (0, model.embedding_dim)
    # Unicode and over-long captions are fine (truncated, end token kept).
    assert np.all(np.isfinite(model.encode_texts(["Ünïcödé ✓ 猫", "word " * 100])))


def test_encode_reads_the_current_weights():
    # `encode_*` see weights changed after a first call, and give what
    # `predict_on_batch` gives on the preprocessed batch.
    model = keras_towers.CLIP.tiny()
    images, texts = raw_data(3)
    before = model.encode_texts(list(texts))
    # Texts alone leave no layer unbuilt (on jax an unbuilt one costs every
    # `predict_on_batch` an extra eager forward pass).
    assert all(layer.built for layer in model._flatten_layers())
    model.encode_images(images)
    for v in model.text_tower.trainable_variables:
        v.assign(v * 1.5 + 0.01)
    after = model.encode_texts(list(texts))
    assert np.abs(after - before).max() > 1e-3
    tokens = model.preprocessor({"texts": list(texts)})
    tokens = {k: keras.ops.convert_to_numpy(v) for k, v in tokens.items()}
    expected = keras.ops.convert_to_numpy(
        model.predict_on_batch(tokens)["text_embeddings"]
    )
    np.testing.assert_allclose(after, expected, atol=1e-6)


def test_predict_takes_raw_images_and_strings():
    model = keras_towers.CLIP.tiny()
    images, texts = raw_data(5)
    out = model.predict(images, verbose=0)
    assert sorted(out) == ["image_embeddings"]
    np.testing.assert_allclose(
        out["image_embeddings"], model.encode_images(images), atol=1e-5
    )
    out = model.predict(list(texts), verbose=0)
    np.testing.assert_allclose(
        out["text_embeddings"], model.encode_texts(list(texts)), atol=1e-5
    )
    assert model.predict(images[0], verbose=0)["image_embeddings"].shape == (
        1,
        model.embedding_dim,
    )


def test_bad_inputs_raise_clear_errors():
    model = keras_towers.CLIP.tiny()
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        model.encode_texts(["fine", 3])
    with pytest.raises(ValueError, match="channels"):
        model.encode_images(np.zeros((2, 8, 8, 2), "uint8"))
    with pytest.raises(ValueError, match="shape"):
        model.encode_images(np.zeros((8, 8), "uint8"))
    with pytest.warns(UserWarning, match=r"\[0, 255\]"):
        model.encode_images(np.full((16, 16, 3), 0.5, "float32"))
    # NaN / inf pixels would give NaN embeddings: refused, naming the images.
    images = np.full((4, 16, 16, 3), 128.0, "float32")
    images[1, 3, 3, 0] = np.nan
    images[3, 0, 0, 2] = np.inf
    with pytest.raises(ValueError, match=r"2 image\(s\).*index 1, 3"):
        model.encode_images(images)
    with pytest.raises(ValueError, match="index 1"):
        model.encode_images([images[0], images[1, :8]])
    # A dataset stops at the first batch holding one.
    with pytest.raises(ValueError, match=r"dataset position 1\."):
        model.encode_images(tf.data.Dataset.from_tensor_slices(images).batch(2))
    with pytest.raises(ValueError, match="same width"):
        keras_towers.CLIP(
            keras_towers.ImageTower.vit(
                image_size=32, projection_dim=16, width=32, num_layers=1
            ),
            keras_towers.TextTower.transformer(
                258, projection_dim=8, width=32, num_layers=1
            ),
        )
    with pytest.raises(ValueError, match="Unknown objective 'triplet'. Known: "):
        keras_towers.CLIP.tiny(loss="triplet")


def test_unnamed_backbones_sharing_variable_paths_are_rejected():
    def backbone():
        return keras_towers.backbones.VisionTransformer(
            patch_size=8,
            hidden_dim=32,
            num_layers=1,
            num_heads=2,
            intermediate_dim=64,
            image_shape=(32, 32, 3),
        )

    image = keras_towers.ImageTower(backbone(), projection_dim=16, name="a")
    third = keras_towers.ImageTower(backbone(), projection_dim=16, name="b")

    class Two(keras_towers.ContrastiveModel):
        pass

    paths = [v.path for v in image.variables] + [v.path for v in third.variables]
    assert len(paths) != len(set(paths))  # the keras-hub trap is real
    holder = Two()
    holder.a, holder.b = image, third
    with pytest.raises(ValueError, match="distinct `name=`"):
        holder.check_unique_variable_paths()


def test_trained_siglip_round_trips(tmp_path):
    images, texts = raw_data(4)
    model = keras_towers.SigLIP.tiny()
    model.compile()  # compiled and trained: `.keras` keeps the optimizer
    model.fit({"images": images, "texts": texts}, batch_size=4, epochs=1, verbose=0)
    raw = {"images": images, "texts": texts}
    restored = run_roundtrip(model, random_batch(model), tmp_path, raw=raw)
    for route in ("keras", "preset", "base_preset"):
        np.testing.assert_array_equal(
            _value(model.logit_bias), _value(restored[route].logit_bias)
        )


def test_clip_round_trips_and_registered_presets(tmp_path):
    images, texts = raw_data(4)
    model = keras_towers.CLIP.tiny(label_smoothing=0.1)
    model.logit_scale.assign(3.0)
    raw = {"images": images, "texts": texts}
    restored = run_roundtrip(model, random_batch(model), tmp_path, raw=raw)
    assert all(m.label_smoothing == 0.1 for m in restored.values())
    for route in ("keras", "preset", "base_preset"):
        assert float(_value(restored[route].logit_scale)) == 3.0
    # Loading through an unrelated class fails.
    preset = str(tmp_path / "preset")
    with pytest.raises(ValueError, match="not a SigLIP"):
        keras_towers.SigLIP.from_preset(preset)
    # Registered names resolve and are listed.
    keras_towers.presets.register_preset("test_clip_tiny", preset)
    assert "test_clip_tiny" in keras_towers.CLIP.presets
    assert "test_clip_tiny" not in keras_towers.SigLIP.presets
    by_name = keras_towers.CLIP.from_preset("test_clip_tiny")
    np.testing.assert_array_equal(
        model.encode_texts(texts), by_name.encode_texts(texts)
    )


def test_corrupt_preset_weights_are_refused(tmp_path):
    model = keras_towers.CLIP.tiny()
    preset = str(tmp_path / "p")
    model.save_to_preset(preset)
    with open(os.path.join(preset, "model.weights.h5"), "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        keras_towers.CLIP.from_preset(preset)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="Known presets"):
        keras_towers.CLIP.from_preset("clip_does_not_exist")


def test_fit_on_preprocessed_data_leaves_every_layer_built():
    # An unbuilt layer (the preprocessor, which runs in tf.data and never
    # through the model) made Keras repeat a symbolic pass over the whole
    # model at the start of every `fit`.
    model = keras_towers.CLIP.tiny()
    model.compile()
    batch = {
        "images": np.zeros((4, 32, 32, 3), "float32"),
        "token_ids": np.ones((4, 16), "int32"),
        "padding_mask": np.ones((4, 16), bool),
    }
    model.fit(batch, batch_size=4, epochs=1, verbose=0)
    unbuilt = [layer.name for layer in model._flatten_layers() if not layer.built]
    assert unbuilt == []


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="Keras' tensorflow trainer builds the optimizer inside the trace",
)
def test_first_fit_traces_the_train_step_once(monkeypatch):
    # Keras' tensorflow trainer left the optimizer to be built inside the
    # first trace of the train function, and a tf.function that creates
    # variables is traced again: every first `fit` traced twice.
    model = keras_towers.CLIP.tiny()
    model.compile(jit_compile=False)
    traces = []
    original = keras_towers.CLIP.train_step

    def counted(self, *args):
        traces.append(self.optimizer.built)
        return original(self, *args)

    monkeypatch.setattr(keras_towers.CLIP, "train_step", counted)
    batch = {
        "images": np.zeros((4, 32, 32, 3), "float32"),
        "token_ids": np.ones((4, 16), "int32"),
        "padding_mask": np.ones((4, 16), bool),
    }
    model.fit(batch, batch_size=4, epochs=2, verbose=0)
    assert traces == [True]


def test_prepared_pipelines_leave_autotuning_off():
    # Deleting an autotuned iterator at the end of `fit` blocked for seconds.
    model = keras_towers.CLIP.tiny()
    raw = tf.data.Dataset.from_tensor_slices(
        {"images": np.zeros((4, 32, 32, 3), "uint8"), "texts": ["a"] * 4}
    ).batch(2)
    assert model._prepare(raw, 2).options().autotune.enabled is False
    # A pipeline that says whether to autotune keeps its choice.
    options = tf.data.Options()
    options.autotune.enabled = True
    chosen = model._prepare(raw.with_options(options), 2)
    assert chosen.options().autotune.enabled is True
