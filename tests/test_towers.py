"""Towers over other keras-hub backbones, and pooling rules."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_towers


def test_clip_trains_with_keras_hub_vit_and_bert_backbones():
    image_backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        name="vit_backbone",
    )
    text_backbone = keras_hub.models.BertBackbone(
        vocabulary_size=258,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
        name="bert_backbone",
    )
    model = keras_towers.CLIP(
        keras_towers.ImageTower(image_backbone, pooling="cls", projection_dim=16),
        keras_towers.TextTower(text_backbone, pooling="mean", projection_dim=16),
        keras_towers.ContrastivePreprocessor.default(image_size=32, sequence_length=16),
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype="uint8")
    texts = [f"caption {c}" for c in "abcdefgh"]
    model.compile()
    history = model.fit(
        {"images": images, "texts": texts}, batch_size=4, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    assert model.encode_texts(texts).shape == (8, 16)


def _tower_with_constant_sequence(pooling, **kwargs):
    """A text tower whose backbone returns position indices as features."""
    inputs = keras.Input((None,), dtype="int32", name="token_ids")
    positions = keras.layers.Lambda(
        lambda t: keras.ops.cast(
            keras.ops.broadcast_to(
                keras.ops.arange(keras.ops.shape(t)[1])[None, :, None],
                (keras.ops.shape(t)[0], keras.ops.shape(t)[1], 2),
            ),
            "float32",
        )
    )(inputs)
    backbone = keras.Model({"token_ids": inputs}, positions, name="positions")
    return keras_towers.TextTower(backbone, pooling=pooling, head=None, **kwargs)


@pytest.mark.parametrize(
    "pooling,kwargs,expected",
    [
        ("argmax", {}, [3.0, 1.0]),  # position of the largest id
        ("eos", {"eos_token_id": 9}, [3.0, 1.0]),  # first end token
        ("last", {}, [4.0, 2.0]),  # last non-padding position
        ("first", {}, [0.0, 0.0]),
        ("mean", {}, [2.0, 1.0]),  # mean of unmasked positions
    ],
)
def test_text_pooling_positions(pooling, kwargs, expected):
    tower = _tower_with_constant_sequence(pooling, **kwargs)
    token_ids = np.array([[5, 1, 2, 9, 9, 0], [5, 9, 9, 0, 0, 0]], "int32")
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool)
    pooled = keras.ops.convert_to_numpy(
        tower({"token_ids": token_ids, "padding_mask": mask})
    )
    np.testing.assert_allclose(pooled[:, 0], expected)


def test_tower_argument_errors():
    backbone = keras_towers.ImageTower.vit(image_size=32, num_layers=1).backbone
    with pytest.raises(ValueError, match="pooling"):
        keras_towers.ImageTower(backbone, pooling="max", projection_dim=8, name="x1")
    with pytest.raises(ValueError, match="projection_dim"):
        keras_towers.ImageTower(backbone, head="linear", projection_dim=None, name="x2")
    with pytest.raises(ValueError, match="eos_token_id"):
        keras_towers.TextTower(
            keras_towers.TextTower.transformer(258, num_layers=1).backbone,
            pooling="eos",
            projection_dim=8,
        )
