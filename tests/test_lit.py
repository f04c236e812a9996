"""LiT: locks as a rule on CLIP, variants, frozen BatchNorm, gradients, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_towers
from keras_towers.models.lit import LiT
from keras_towers.models.lit import parse_variant
from keras_towers.models.three_towers import tiny_resnet
from tests.helpers import loss_and_grads
from tests.helpers import run_roundtrip

IMAGE_SIZE = 32
CAPTIONS = [
    f"a {c} {s}" for c in ("red", "blue") for s in ("dot", "ring", "bar", "star")
]


def raw_pairs(n=8, size=IMAGE_SIZE + 6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype="uint8")
    return images, [CAPTIONS[i % len(CAPTIONS)] + f" {i}" for i in range(n)]


def tiny_text_tower(projection_dim, name="text_tower"):
    return keras_towers.TextTower.transformer(
        vocabulary_size=258,
        sequence_length=16,
        width=16,
        num_layers=1,
        num_heads=2,
        projection_dim=projection_dim,
        name=name,
    )


def preprocessor():
    return keras_towers.ContrastivePreprocessor.default(
        image_size=IMAGE_SIZE, sequence_length=16
    )


def resnet_lit(head=None, **kwargs):
    """LiT over a random keras-hub ResNet (with BatchNorm) image tower."""
    image_tower = keras_towers.ImageTower(
        tiny_resnet(IMAGE_SIZE, name="image_backbone"),
        pooling="mean",
        head=head,
        projection_dim=16 if head else None,
    )
    text_tower = tiny_text_tower(image_tower.output_dim)
    return LiT(image_tower, text_tower, preprocessor(), **kwargs)


def values(variables):
    return {v.path: keras.ops.convert_to_numpy(v.value).copy() for v in variables}


def assert_unchanged(before, variables):
    after = values(variables)
    for path, value in before.items():
        np.testing.assert_array_equal(value, after[path], err_msg=path)


def assert_all_changed(before, variables):
    after = values(variables)
    same = [p for p, v in before.items() if np.array_equal(v, after[p])]
    assert not same, f"not trained: {same}"


def test_variant_notation():
    assert parse_variant("Lu") == (True, False, True, False)
    assert parse_variant("LU") == (True, False, True, True)
    assert parse_variant("Uu") == (False, False, True, False)
    assert parse_variant("uL") == (False, True, False, True)
    for bad in ("lu", "L", "LUU", 3):
        with pytest.raises(ValueError, match="two letters"):
            parse_variant(bad)
    model = LiT.tiny(variant="Lu")
    assert not model.image_tower.trainable and model.text_tower.trainable
    assert model.image_tower.projection is None  # LiT's default: no image head
    towers = (model.image_tower, model.text_tower, model.preprocessor)
    # LiT owns the towers' flags: the same towers, unlocked by another variant.
    unlocked = LiT(*towers, variant="UU")
    assert unlocked.image_tower.trainable and unlocked.text_tower.trainable
    assert unlocked.variant == "UU" and unlocked.lock_image is False
    with pytest.raises(ValueError, match="implies lock_image=True"):
        LiT(*towers, variant="Lu", lock_image=False)
    with pytest.raises(ValueError, match="'backbone'"):
        LiT(*towers, lock_image="head")


def test_bare_backbone_is_wrapped_without_head_and_text_projects_to_its_width():
    model = LiT(tiny_resnet(IMAGE_SIZE, name="image_backbone"))
    assert model.image_tower.projection is None
    assert model.embedding_dim == 64 == model.text_tower.output_dim


def test_locked_backbone_runs_in_inference_mode_even_when_training():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dropout(0.5, name="drop")(keras.layers.Flatten()(inputs))
    backbone = keras.Model(inputs, x, name="dropout_backbone")
    tower = keras_towers.ImageTower(
        backbone, pooling="none", head="linear", projection_dim=4
    )
    images = np.ones((2, 8, 8, 3), "float32")
    eval_out = keras.ops.convert_to_numpy(tower(images, training=False))
    train_out = keras.ops.convert_to_numpy(tower(images, training=True))
    assert not np.allclose(eval_out, train_out)  # dropout is live when unlocked
    tower.backbone.trainable = False
    assert tower.locked_part == "backbone" and tower.trainable
    train_out = keras.ops.convert_to_numpy(tower(images, training=True))
    np.testing.assert_allclose(train_out, eval_out, rtol=1e-6)


def test_fit_trains_text_tower_and_keeps_locked_tower_and_bn_statistics():
    images, texts = raw_pairs()
    model = resnet_lit(variant="Lu")
    bn_stats = [v for v in model.image_tower.variables if "moving" in v.path]
    assert bn_stats, "the test tower should have BatchNorm moving statistics"
    locked = values(model.image_tower.variables)
    trained = values(model.trainable_variables)
    assert {v.path for v in model.trainable_variables}.isdisjoint(locked)
    model.compile(learning_rate=1e-3)
    ds = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})
    history = model.fit(ds.batch(4), epochs=2, verbose=0)
    for key in ("loss", "i2t_accuracy", "t2i_accuracy"):
        assert np.all(np.isfinite(history.history[key]))
    assert_unchanged(locked, model.image_tower.variables)
    assert_all_changed(trained, model.trainable_variables)


def test_locked_backbone_with_trained_head():
    images, texts = raw_pairs()
    model = resnet_lit(head="linear", lock_image="backbone")
    tower = model.image_tower
    assert tower.locked_part == "backbone"
    backbone = values(tower.backbone.variables)
    head = values(tower.projection.variables)
    assert set(head) <= {v.path for v in model.trainable_variables}
    model.compile(learning_rate=1e-3)
    model.fit({"images": images, "texts": texts}, batch_size=4, epochs=1, verbose=0)
    assert_unchanged(backbone, tower.backbone.variables)
    assert_all_changed(head, tower.projection.variables)


@pytest.mark.parametrize("lock_image", [True, "backbone"])
def test_every_trainable_variable_gets_a_gradient(lock_image):
    model = resnet_lit(
        head="linear" if lock_image == "backbone" else None, lock_image=lock_image
    )
    images, texts = raw_pairs(4)
    batch = model.preprocessor({"images": images, "texts": texts})
    batch = {k: keras.ops.convert_to_numpy(v) for k, v in batch.items()}
    loss, grads = loss_and_grads(model, batch)
    assert np.isfinite(loss)
    zero = [p for p, g in grads.items() if not np.any(g)]
    assert not zero, f"no gradient for {zero}"
    locked = {v.path for v in model.image_tower.backbone.variables}
    assert locked.isdisjoint(grads)


def test_config_keras_and_preset_round_trips(tmp_path):
    images, texts = raw_pairs(4)
    model = resnet_lit(head="linear", lock_image="backbone", label_smoothing=0.1)
    raw = {"images": images, "texts": texts}
    batch = model.preprocessor(raw)
    batch = {k: keras.ops.convert_to_numpy(v) for k, v in batch.items()}
    for restored in run_roundtrip(model, batch, tmp_path, raw=raw).values():
        assert restored.lock_image == "backbone" and restored.lock_text is False
        assert restored.image_tower.locked_part == "backbone"
        assert restored.label_smoothing == 0.1
