"""Three Towers with f and g over referenced pretrained backbones (as LiT's)."""

import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_towers import pretrained
from keras_towers import recipes
from keras_towers.backbones import TextTransformer
from keras_towers.feature_cache import cache_locked_features
from keras_towers.feature_cache import clear_feature_cache
from keras_towers.models.three_towers import ThreeTowers
from keras_towers.models.three_towers import tiny_resnet
from keras_towers.preprocessing import ByteTokenizer
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained import registry
from keras_towers.towers import TextTower
from tests.helpers import loss_and_grads
from tests.helpers import run_roundtrip
from tests.test_lit import assert_all_changed
from tests.test_lit import assert_unchanged
from tests.test_lit import raw_pairs
from tests.test_lit import values

IMAGE = "test_3t_sources_resnet"
THIRD = "test_3t_sources_third"
TEXT = "test_3t_sources_text"
IMAGE_SIZE, THIRD_SIZE, SEQUENCE_LENGTH = 32, 40, 64
EMBEDDINGS = ("image_embeddings", "text_embeddings")

#: The "pretrained weights" of each fake encoder: drawn at its first build,
#: the same in every later one (as a real encoder's are loaded from a file).
_WEIGHTS = {}


def _pretrained(key, build):
    def build_backbone(name):
        backbone = build(name)
        if key in _WEIGHTS:
            backbone.set_weights(_WEIGHTS[key])
        else:
            _WEIGHTS[key] = backbone.get_weights()
        return backbone

    return build_backbone


def _image_converter(size):
    return ContrastivePreprocessor.default(image_size=size).image_converter


@pytest.fixture(scope="module", autouse=True)
def fake_encoders():
    """Two tiny image encoders (a ResNet with BatchNorm, for f and h) and a
    tiny text transformer, registered like the real ones."""
    encoders = [
        registry.Encoder(
            name=IMAGE,
            modality="image",
            build_backbone=_pretrained(
                IMAGE, lambda name: tiny_resnet(IMAGE_SIZE, name=name)
            ),
            pooling="mean",
            output_dim=64,
            short_name="test_resnet",
            image_size=IMAGE_SIZE,
            preprocessing=lambda: _image_converter(IMAGE_SIZE),
        ),
        registry.Encoder(
            name=THIRD,
            modality="image",
            build_backbone=_pretrained(
                THIRD, lambda name: tiny_resnet(THIRD_SIZE, name=name)
            ),
            pooling="mean",
            output_dim=64,
            short_name="test_third",
            image_size=THIRD_SIZE,
            preprocessing=lambda: _image_converter(THIRD_SIZE),
        ),
        registry.Encoder(
            name=TEXT,
            modality="text",
            build_backbone=_pretrained(
                TEXT,
                lambda name: TextTransformer(
                    vocabulary_size=258,
                    embedding_dim=16,
                    hidden_dim=16,
                    num_layers=1,
                    num_heads=2,
                    intermediate_dim=32,
                    max_sequence_length=SEQUENCE_LENGTH,
                    name=name,
                ),
            ),
            pooling="mean",
            output_dim=16,
            short_name="test_text",
            preprocessing=ByteTokenizer,
        ),
    ]
    for encoder in encoders:
        pretrained.register_encoder(encoder)
    yield
    for encoder in encoders:
        registry.ENCODERS.remove(encoder.name)


def sourced(lock_image="backbone", **kwargs):
    """3T with f, g and h all referenced (f with a head when its backbone
    alone is locked)."""
    if lock_image == "backbone":
        kwargs.setdefault("image_head", "linear")
        kwargs.setdefault("projection_dim", 24)
    return ThreeTowers(
        image_tower_source=IMAGE,
        lock_image=lock_image,
        text_tower_source=TEXT,
        third_tower_source=THIRD,
        **kwargs,
    )


def numpy_batch(model, images, texts):
    batch = model.preprocessor({"images": images, "texts": texts})
    return {k: keras.ops.convert_to_numpy(v) for k, v in batch.items()}


def cached_batch(model, n=8):
    images, texts = raw_pairs(n)
    pairs = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})
    cached = cache_locked_features(model, pairs, batch_size=4)
    return cached, images, texts


def test_defaults_follow_lit():
    model = sourced()
    image, text = model.image_tower, model.text_tower
    assert (model.lock_image, model.lock_text) == ("backbone", "backbone")
    assert image.locked_part == "backbone" and text.locked_part == "backbone"
    assert image.output_dim == text.output_dim == model.embedding_dim == 24
    # Without a preprocessor: the encoders' own, plus h's image converter.
    preprocessor = model.preprocessor
    assert preprocessor.image_converter.image_size == (IMAGE_SIZE, IMAGE_SIZE)
    assert preprocessor.third_image_converter.image_size == (THIRD_SIZE, THIRD_SIZE)
    assert isinstance(preprocessor.tokenizer, ByteTokenizer)
    trainable = {v.path for v in model.trainable_variables}
    heads = [
        image.projection,
        text.projection,
        model.image_alignment_head,
        model.text_alignment_head,
        model.third_head,
    ]
    scales = [
        model.logit_scale,
        model.image_third_logit_scale,
        model.text_third_logit_scale,
    ]
    expected = {v.path for h in heads for v in h.trainable_variables}
    assert trainable == expected | {v.path for v in scales}
    assert model.referenced_objects() == [image.backbone, text.backbone]
    assert model.preset_metadata() == {
        "third_tower_source": THIRD,
        "image_tower_source": IMAGE,
        "text_tower_source": TEXT,
    }
    # A whole locked f has no head: the default lock without `image_head`.
    whole = ThreeTowers(image_tower_source=IMAGE, third_tower_source=THIRD)
    assert whole.lock_image is True and whole.image_tower.locked_part == "tower"
    assert whole.referenced_objects() == [whole.image_tower]
    # g is the preprocessor's byte transformer, projecting to f's width.
    assert whole.text_tower.output_dim == whole.image_tower.output_dim == 64
    assert whole.text_tower.trainable


def test_constructor_errors():
    with pytest.raises(ValueError, match="lock_image=True or 'backbone'.*False"):
        ThreeTowers(image_tower_source=IMAGE, lock_image=False, third_feature_dim=8)
    with pytest.raises(ValueError, match="lock_text=True or 'backbone'.*False"):
        ThreeTowers(text_tower_source=TEXT, lock_text=False, third_feature_dim=8)
    with pytest.raises(ValueError, match="`lock_image` must be True"):
        ThreeTowers(image_tower_source=IMAGE, lock_image="head", third_feature_dim=8)
    with pytest.raises(ValueError, match='`image_head`.*lock_image="backbone"'):
        ThreeTowers(
            image_tower_source=IMAGE,
            lock_image=True,
            image_head="linear",
            projection_dim=8,
            third_feature_dim=8,
        )
    with pytest.raises(ValueError, match="`image_head`.*image_tower_source=None"):
        ThreeTowers(image_head="linear", third_feature_dim=8)
    with pytest.raises(ValueError, match="lock_text=True the text tower.*head"):
        ThreeTowers(text_tower_source=TEXT, lock_text=True, third_feature_dim=8)
    with pytest.raises(ValueError, match="not both"):
        ThreeTowers(
            text_tower=TextTower.transformer(vocabulary_size=258, projection_dim=8),
            text_tower_source=TEXT,
            third_feature_dim=8,
        )
    with pytest.raises(ValueError, match="is a text encoder"):
        ThreeTowers(image_tower_source=TEXT, third_feature_dim=8)
    with pytest.raises(ValueError, match="needs a positive `projection_dim`"):
        ThreeTowers(
            image_tower_source=IMAGE,
            lock_image="backbone",
            image_head="linear",
            third_feature_dim=8,
        )


def test_config_round_trip_and_referenced_weights_left_out(tmp_path):
    model = sourced(label_smoothing=0.1)
    config = model.get_config()
    assert config["image_tower"] is None and config["text_tower"] is None
    images, texts = raw_pairs(4)
    raw = {"images": images, "texts": texts}
    batch = numpy_batch(model, images, texts)
    reloaded = run_roundtrip(model, batch, tmp_path, raw=raw, output_keys=EMBEDDINGS)
    for route, restored in reloaded.items():
        assert restored.lock_image == "backbone", route
        assert restored.image_tower.locked_part == "backbone", route
        assert restored.text_tower.locked_part == "backbone", route
        assert restored.label_smoothing == 0.1
    preset = tmp_path / "preset"
    with h5py.File(os.path.join(preset, "model.weights.h5")) as f:
        stored = []
        f.visititems(
            lambda name, obj: (
                stored.append(name) if isinstance(obj, h5py.Dataset) else None
            )
        )
    referenced = [w for part in model.referenced_objects() for w in part.weights]
    assert referenced and len(stored) == len(model.weights) - len(referenced)
    metadata = json.loads((preset / "metadata.json").read_text())
    assert metadata["image_tower_source"] == IMAGE
    assert metadata["stored_parameter_count"] == model.count_params() - sum(
        int(np.prod(w.shape)) for w in referenced
    )
    # Configs saved before the sources existed still load.
    old = ThreeTowers.tiny(third_feature_dim=64, third_tower=None)
    old_config = old.get_config()
    for key in (
        "image_tower_source",
        "text_tower_source",
        "lock_image",
        "lock_text",
        "image_pooling",
        "text_pooling",
        "image_head",
        "text_head",
        "projection_dim",
    ):
        assert old_config.pop(key) is None or key == "text_head"
    restored = ThreeTowers.from_config(old_config)
    assert restored.image_tower.trainable and restored.referenced_objects() == []
    assert restored.get_config() == old.get_config()


@pytest.mark.parametrize("lock_image", [True, "backbone"])
def test_cached_features_give_the_raw_inputs_outputs(lock_image):
    clear_feature_cache()
    model = sourced(lock_image=lock_image)
    cached, images, texts = cached_batch(model)
    assert set(cached.element_spec) == {
        "image_features",
        "text_features",
        "third_features",
    }
    assert cached.element_spec["image_features"].shape == (64,)  # f.pool
    from_cache = model(next(iter(cached.batch(8))), training=False)
    from_raw = model(numpy_batch(model, images, texts), training=False)
    assert (
        set(from_cache)
        == set(from_raw)
        == {
            "image_embeddings",
            "text_embeddings",
            "image_alignment_embeddings",
            "text_alignment_embeddings",
            "third_embeddings",
        }
    )
    for key, value in from_raw.items():
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(from_cache[key]),
            keras.ops.convert_to_numpy(value),
            atol=1e-5,
            err_msg=key,
        )


def test_fit_on_cached_features_changes_only_trainable_weights():
    clear_feature_cache()
    model = sourced()
    cached, _, _ = cached_batch(model)
    batch = {k: v.numpy() for k, v in next(iter(cached.batch(4))).items()}
    loss, grads = loss_and_grads(model, batch)
    assert np.isfinite(loss) and len(grads) == len(model.trainable_variables)
    zero = [p for p, g in grads.items() if not np.any(g)]
    assert not zero, f"no gradient for {zero}"
    frozen = values(model.non_trainable_variables)
    assert any("moving_mean" in p for p in frozen)  # f's BatchNorm statistics
    third = model.get_third_tower()
    frozen_third = values(third.variables)
    trained = values(model.trainable_variables)
    model.compile(learning_rate=1e-3)
    history = model.fit(cached.batch(4), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert_unchanged(frozen, model.non_trainable_variables)
    assert_unchanged(frozen_third, third.variables)
    assert_all_changed(trained, model.trainable_variables)


def test_three_towers_heads_recipe(tmp_path):
    # The real encoders (EfficientNet-Lite0, MiniLM) on torch only: what this
    # checks (which variables train, what the preset stores) does not depend
    # on the backend, the tiny-encoder tests above run everywhere, and the
    # encoders' own parity is tested per backend (test_efficientnet_lite.py,
    # test_minilm.py). On jax it costs ~40 s.
    if keras.backend.backend() != "torch":
        pytest.skip("structure of the real recipe: checked on torch")
    model = recipes.get("three-towers-heads").build()
    with pytest.raises(ValueError, match="224 px"):
        recipes.get("three-towers-heads").build(image_size=64)
    assert recipes.trainer("three-towers-heads") is not None
    assert model.image_tower.locked_part == "backbone"
    assert model.text_tower.locked_part == "backbone"
    assert model.preprocessor.third_image_converter is not None
    heads = [
        model.image_tower.projection,
        model.text_tower.projection,
        model.image_alignment_head,
        model.text_alignment_head,
        model.third_head,
    ]
    scales = [
        model.logit_scale,
        model.image_third_logit_scale,
        model.text_third_logit_scale,
    ]
    assert {v.path for v in model.trainable_variables} == {
        v.path for h in heads for v in h.trainable_variables
    } | {v.path for v in scales}
    # Give the heads recognisable weights, then round-trip through a preset
    # that stores only them (and the temperatures).
    for i, head in enumerate(heads):
        head.kernel.assign(np.full(head.kernel.shape, 0.01 * (i + 1), "float32"))
    preset = tmp_path / "three_towers_heads"
    model.save_to_preset(str(preset))
    with h5py.File(preset / "model.weights.h5") as f:
        sizes = []
        f.visititems(
            lambda name, obj: (
                sizes.append(int(np.prod(obj.shape)))
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    dim = recipes.HEADS_DIM
    assert sorted(sizes) == sorted(
        [1, 1, 1, 1280 * dim, 384 * dim, 1280 * dim, 384 * dim, 1280 * dim]
    )
    assert os.path.getsize(preset / "model.weights.h5") < 6_000_000
    restored = ThreeTowers.from_preset(str(preset))
    assert restored.get_third_tower() is None
    for head, restored_head in zip(
        heads,
        [
            restored.image_tower.projection,
            restored.text_tower.projection,
            restored.image_alignment_head,
            restored.text_alignment_head,
            restored.third_head,
        ],
        strict=True,
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored_head.kernel),
            keras.ops.convert_to_numpy(head.kernel),
        )
    images, texts = raw_pairs(2, size=64)
    np.testing.assert_allclose(
        restored.encode_images(images), model.encode_images(images), atol=1e-5
    )
    np.testing.assert_allclose(
        restored.encode_texts(texts), model.encode_texts(texts), atol=1e-5
    )
