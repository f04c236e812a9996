"""Three Towers: the three-term loss, what trains, the cache, saving without h."""

import math
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_towers.feature_cache import cache_locked_features
from keras_towers.feature_cache import clear_feature_cache
from keras_towers.models.three_towers import PAIR_LOSSES
from keras_towers.models.three_towers import ThreeTowers
from keras_towers.models.three_towers import tiny_resnet
from tests.helpers import loss_and_grads
from tests.helpers import run_roundtrip
from tests.test_lit import assert_all_changed
from tests.test_lit import assert_unchanged
from tests.test_lit import raw_pairs
from tests.test_lit import values

THIRD_SIZE = 40
EMBEDDINGS = ("image_embeddings", "text_embeddings")


def numpy_infonce(u, v, scale):
    logits = scale * u @ v.T

    def cross_entropy(z):
        z = z - z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_softmax))

    return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_batch(model, images, texts, drop_third_images=False):
    batch = model.preprocessor({"images": images, "texts": texts})
    batch = {k: keras.ops.convert_to_numpy(v) for k, v in batch.items()}
    if drop_third_images:
        batch.pop("third_images")
    return batch


def test_loss_is_the_weighted_sum_of_three_infonce_terms():
    model = ThreeTowers.tiny(loss_weights=(0.5, 0.3, 0.2))
    model.image_third_logit_scale.assign(math.log(20.0))
    model.text_third_logit_scale.assign(math.log(5.0))
    images, texts = raw_pairs(4)
    batch = numpy_batch(model, images, texts, drop_third_images=True)
    rng = np.random.default_rng(3)
    batch["third_features"] = rng.normal(size=(4, model.third_feature_dim))
    batch["third_features"] = batch["third_features"].astype("float32")
    y_pred = model(batch, training=False)
    loss = float(keras.ops.convert_to_numpy(model.compute_loss(x=batch, y_pred=y_pred)))

    # NumPy: the heads applied to the towers' pooled features, then InfoNCE.
    def np_(x):
        return keras.ops.convert_to_numpy(x)

    f_pool = np_(model.image_tower.pool(batch["images"]))
    g_pool = np_(
        model.text_tower.pool(
            {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"]}
        )
    )
    f = normalize(f_pool @ np_(model.image_tower.projection.kernel))
    g = normalize(g_pool @ np_(model.text_tower.projection.kernel))
    f_h = normalize(f_pool @ np_(model.image_alignment_head.kernel))
    g_h = normalize(g_pool @ np_(model.text_alignment_head.kernel))
    h = normalize(batch["third_features"] @ np_(model.third_head.kernel))
    terms = [
        numpy_infonce(f, g, 1 / 0.07),
        numpy_infonce(f_h, h, 20.0),
        numpy_infonce(g_h, h, 5.0),
    ]
    expected = 0.5 * terms[0] + 0.3 * terms[1] + 0.2 * terms[2]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    logged = {m.name: float(np_(m.result())) for m in model.diagnostic_trackers}
    np.testing.assert_allclose([logged[n] for n in PAIR_LOSSES], terms, rtol=1e-5)
    np.testing.assert_allclose(np_(y_pred["image_embeddings"]), f, atol=1e-5)
    np.testing.assert_allclose(np_(y_pred["third_embeddings"]), h, atol=1e-5)


def test_fit_on_raw_images_trains_f_g_heads_and_leaves_h_frozen():
    model = ThreeTowers.tiny()
    h = model.get_third_tower()
    assert {v.path for v in model.variables}.isdisjoint(v.path for v in h.variables)
    frozen = values(h.variables)
    assert any("moving_mean" in p for p in frozen)
    trained = values(model.trainable_variables)
    images, texts = raw_pairs(8)
    dataset = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})
    model.compile(learning_rate=1e-3)
    history = model.fit(dataset.batch(4), epochs=2, verbose=0)
    logs = history.history
    for name in (
        "loss",
        *PAIR_LOSSES,
        "i2t_accuracy",
        "image_third_i2h_accuracy",
        "image_third_h2i_accuracy",
        "text_third_t2h_accuracy",
        "text_third_h2t_accuracy",
        "text_third_positive_logit",
    ):
        assert name in logs and np.all(np.isfinite(logs[name])), name
    assert_unchanged(frozen, h.variables)
    assert_all_changed(trained, model.trainable_variables)


def test_fit_on_cached_third_features():
    clear_feature_cache()
    model = ThreeTowers.tiny()
    images, texts = raw_pairs(8)
    pairs = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})
    cached = cache_locked_features(model, pairs, batch_size=8)
    assert set(cached.element_spec) == {"images", "texts", "third_features"}
    third = np.stack([e["third_features"] for e in cached.as_numpy_iterator()])
    pixels = model.preprocessor({"images": images})["third_images"]
    live = keras.ops.convert_to_numpy(model.get_third_tower()(pixels, training=False))
    np.testing.assert_allclose(third, live, atol=1e-5)
    # Without h (as loaded from a preset) training on the cache still works.
    model.set_third_tower(None)
    with pytest.raises(ValueError, match="not loaded"):
        cache_locked_features(model, pairs, towers="third")
    model.compile(learning_rate=1e-3)
    heads = values(model.third_head.variables)
    history = model.fit(cached.batch(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["text_third_loss"][0])
    assert_all_changed(heads, model.third_head.variables)


def test_every_trainable_variable_gets_a_gradient():
    model = ThreeTowers.tiny()
    images, texts = raw_pairs(4)
    batch = numpy_batch(model, images, texts)
    third = model.get_third_tower()(batch.pop("third_images"), training=False)
    batch["third_features"] = keras.ops.convert_to_numpy(third)
    loss, grads = loss_and_grads(model, batch)
    assert np.isfinite(loss)
    zero = [p for p, g in grads.items() if not np.any(g)]
    assert not zero, f"no gradient for {zero}"
    assert len(grads) == len(model.trainable_variables)


def test_preset_keeps_h_out_and_loads_without_it(tmp_path):
    h_dir = str(tmp_path / "h_backbone")
    tiny_resnet(THIRD_SIZE).save_to_preset(h_dir)
    model = ThreeTowers.tiny(third_tower_source=h_dir, alignment_dim=24)
    assert model.get_third_tower() is not None
    images, texts = raw_pairs(4)
    raw = {"images": images, "texts": texts}
    batch = numpy_batch(model, images, texts)
    # The config and the .keras file reload h from its source (all outputs
    # equal); the preset loads f and g without h (their embeddings equal).
    reloaded = run_roundtrip(model, batch, tmp_path, raw=raw, output_keys=EMBEDDINGS)
    assert reloaded["keras"].get_third_tower() is not None
    preset = str(tmp_path / "preset")
    with h5py.File(os.path.join(preset, "model.weights.h5")) as f:
        stored = []
        f.visititems(
            lambda name, obj: (
                stored.append(name) if isinstance(obj, h5py.Dataset) else None
            )
        )
    # Every variable of the model is stored, and nothing else (none of h's).
    stored = [name for name in stored if not name.startswith("optimizer/")]
    assert len(stored) == len(model.weights)
    assert not {v.path for v in model.weights} & {
        v.path for v in model.get_third_tower().variables
    }
    for restored in (reloaded["preset"], reloaded["base_preset"]):
        assert restored.get_third_tower() is None
        assert restored.third_tower_source == h_dir and restored.alignment_dim == 24
    # encode_* (compiled predict) of the model without h equal the original's
    # embeddings.
    y_pred = model(batch)
    restored = reloaded["preset"]
    for key, encoded in (
        ("image_embeddings", restored.encode_images(images)),
        ("text_embeddings", restored.encode_texts(texts)),
    ):
        np.testing.assert_allclose(
            encoded, keras.ops.convert_to_numpy(y_pred[key]), atol=1e-6
        )
    # Loading h too (to continue training) restores the same loss.
    full = ThreeTowers.from_preset(preset, load_third_tower=True)
    assert full.get_third_tower() is not None
    assert full.preprocessor.third_image_converter is not None
    losses = [
        float(keras.ops.convert_to_numpy(m.compute_loss(x=batch, y_pred=m(batch))))
        for m in (model, full)
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_in_memory_h_is_left_out_of_every_save(tmp_path):
    model = ThreeTowers.tiny()  # h: a random tiny ResNet, no source to reload
    images, texts = raw_pairs(4)
    batch = numpy_batch(model, images, texts)
    with pytest.warns(UserWarning, match="cannot reload it"):
        reloaded = run_roundtrip(model, batch, tmp_path, output_keys=EMBEDDINGS)
    for restored in reloaded.values():
        assert restored.get_third_tower() is None
        assert restored.third_feature_dim == model.third_feature_dim


def test_options_and_errors():
    shared = ThreeTowers.tiny(
        separate_logit_scales=False, alignment_heads=None, third_head="linear"
    )
    assert shared.image_third_logit_scale is None
    scales = [v for v in shared.trainable_variables if "logit_scale" in v.path]
    assert len(scales) == 1 and shared.image_alignment_head is None
    towers = (shared.image_tower, shared.text_tower, shared.preprocessor)
    with pytest.raises(ValueError, match="three finite non-negative"):
        ThreeTowers(*towers, third_feature_dim=8, loss_weights=(1, 1))
    with pytest.raises(ValueError, match="InfoNCE"):
        ThreeTowers(*towers, third_feature_dim=8, loss="sigmoid")
    with pytest.raises(ValueError, match="feature width"):
        ThreeTowers(*towers)
    with pytest.raises(ValueError, match="must be 8"):
        ThreeTowers(*towers, third_feature_dim=8, third_head=None, alignment_dim=16)
    with pytest.raises(ValueError, match="Unknown pretrained encoder"):
        ThreeTowers(*towers, third_tower_source="no_such_backbone")
    with pytest.raises(ValueError, match="is a text encoder"):
        ThreeTowers(*towers, third_tower_source="all_minilm_l6_v2")
    images, texts = raw_pairs(4)
    batch = numpy_batch(shared, images, texts, drop_third_images=True)
    with pytest.raises(ValueError, match="third_features"):
        shared.compute_loss(x=batch, y_pred=shared(batch))
    with pytest.raises(ValueError, match="width 64"):
        shared({**batch, "third_features": np.zeros((4, 5), "float32")})
    # Without h, raw third images are ignored at inference.
    no_h = ThreeTowers(*towers, third_feature_dim=64)
    out = no_h(numpy_batch(no_h, images, texts))
    assert set(out) == {"image_embeddings", "text_embeddings"}
