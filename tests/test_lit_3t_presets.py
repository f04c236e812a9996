"""The shipped LiT and 3T presets, the frozen-tower references and their recipes."""

import json

import h5py
import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import presets
from keras_towers import pretrained
from keras_towers import recipes
from keras_towers import training
from keras_towers.preprocessing import frame_images
from keras_towers.pretrained.efficientnet_lite import efficientnet_lite_image_converter
from keras_towers.pretrained.efficientnet_lite import load_efficientnet_lite

LIT = "lit_lite0_embedded"
THREE_TOWERS = "three_towers_lite0_embedded"


def _stored_arrays(path) -> dict:
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj.shape)
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return arrays


def _images(n=3, size=48):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_shipped_presets_are_listed_by_class():
    assert LIT in keras_towers.LiT.presets
    assert THREE_TOWERS in keras_towers.ThreeTowers.presets
    assert presets.all_presets()[LIT]["image_tower_source"] == (
        "efficientnet_lite0_imagenet"
    )
    assert presets.all_presets()[THREE_TOWERS]["third_tower_source"] == (
        "efficientnet_lite0_imagenet"
    )


@pytest.mark.one_backend
def test_lit_preset_loads_by_name_and_references_the_frozen_tower():
    model = keras_towers.LiT.from_preset(LIT)
    assert model.image_tower_source == "efficientnet_lite0_imagenet"
    assert not model.image_tower.trainable
    images = _images()
    image_embeddings = model.encode_images(images)
    text_embeddings = model.encode_texts(["a red apple", "a cat"])
    assert image_embeddings.shape == (3, 1280)
    assert text_embeddings.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(image_embeddings, axis=1), 1, atol=1e-4)
    # The image embedding is the packaged EfficientNet-Lite0's mean-pooled
    # feature: the preset did not replace the frozen weights with anything.
    # (Images framed by the model's own rule first, as training framed them.)
    backbone = load_efficientnet_lite("lite0")
    converter = efficientnet_lite_image_converter("lite0")
    framed = frame_images(images.astype("float32"), 224, model.preprocessor.framing)
    features = keras.ops.convert_to_numpy(
        keras.ops.mean(backbone(converter(framed)), axis=(1, 2))
    )
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(image_embeddings, features, atol=2e-3)


def test_lit_preset_weights_do_not_contain_the_frozen_tower():
    path = presets.resolve(keras_towers.LiT, LIT)
    stored = _stored_arrays(path / "model.weights.h5")
    model = keras_towers.LiT.from_preset(LIT)
    stored_count = sum(int(np.prod(shape)) for shape in stored.values())
    tower_count = model.image_tower.count_params()
    assert tower_count > 3_000_000  # EfficientNet-Lite0 without its classifier
    assert stored_count == model.count_params() - tower_count
    assert not any("efficientnet" in name for name in stored)
    # No stored array has the shape of the stem convolution or the final
    # 1x1 projection to 1280 channels.
    frozen_shapes = {tuple(w.shape) for w in model.image_tower.weights}
    text_shapes = {tuple(w.shape) for w in model.text_tower.weights}
    assert not (set(stored.values()) & (frozen_shapes - text_shapes))


@pytest.mark.one_backend
def test_three_towers_preset_loads_by_name_without_its_third_tower():
    model = keras_towers.ThreeTowers.from_preset(THREE_TOWERS)
    assert model.get_third_tower() is None
    assert model.third_tower_source == "efficientnet_lite0_imagenet"
    image_embeddings = model.encode_images(_images())
    text_embeddings = model.encode_texts(["a red apple", "a cat"])
    assert image_embeddings.shape == (3, 128)
    assert text_embeddings.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(text_embeddings, axis=1), 1, atol=1e-4)
    path = presets.resolve(keras_towers.ThreeTowers, THREE_TOWERS)
    stored = _stored_arrays(path / "model.weights.h5")
    stored_count = sum(int(np.prod(shape)) for shape in stored.values())
    assert stored_count == model.count_params()


def test_three_towers_preset_reloads_its_third_tower_by_reference():
    model = keras_towers.ThreeTowers.from_preset(THREE_TOWERS, load_third_tower=True)
    assert model.get_third_tower().output_dim == 1280
    assert not model.get_third_tower().trainable


def test_registered_frozen_backbone_loads_offline():
    backbone = pretrained.load_backbone("efficientnet_lite0_imagenet")
    assert backbone.count_params() > 3_000_000


def test_lit_image_tower_source_rejects_an_unlocked_tower():
    with pytest.raises(ValueError, match="must be locked"):
        keras_towers.LiT(
            image_tower_source="efficientnet_lite0_imagenet", lock_image=False
        )
    with pytest.raises(ValueError, match='`image_head`.*lock_image="backbone"'):
        keras_towers.LiT(
            image_tower_source="efficientnet_lite0_imagenet", image_head="linear"
        )
    with pytest.raises(ValueError, match="`image_tower` or `image_tower_source`"):
        keras_towers.LiT()
    with pytest.raises(ValueError, match="Unknown pretrained encoder 'no_such'"):
        keras_towers.LiT(image_tower_source="no_such")
    with pytest.raises(ValueError, match="is a text encoder"):
        keras_towers.LiT(image_tower_source="all_minilm_l6_v2")


def test_every_registered_image_encoder_serves_lit_and_three_towers():
    # One registry: the names ASIF accepts are the names LiT and 3T accept.
    image_encoders = pretrained.names("image")
    assert {
        "efficientnet_lite0_imagenet",
        "efficientnet_lite1_imagenet",
        "efficientnet_lite2_imagenet",
    } <= set(image_encoders)
    images = _images(2, size=40)
    for name in image_encoders:
        encoder = pretrained.get_encoder(name)
        lit = keras_towers.LiT(image_tower_source=name)
        # The default preprocessing is the encoder's own (size, normalisation).
        assert lit.preprocessor.image_converter.image_size == (
            encoder.image_size,
            encoder.image_size,
        )
        assert lit.image_tower.output_dim == encoder.output_dim
        # Encoding runs every encoder on torch and Lite0 on the others (the
        # same LiT code; compiling Lite1 and Lite2 costs ~35 s on jax, and
        # their forward passes are checked on every backend by the slow
        # parity tests in tests/test_efficientnet_lite.py).
        if keras.backend.backend() == "torch" or name == image_encoders[0]:
            assert lit.encode_images(images).shape == (2, encoder.output_dim)
            assert lit.encode_texts(["a cat"]).shape == (1, encoder.output_dim)
    # 3T takes the same names (Lite1 was LiT's "Unknown backbone preset" bug).
    parts = keras_towers.from_scratch.build("tiny", 32)
    three = keras_towers.ThreeTowers(
        parts.image_tower,
        parts.text_tower,
        parts.preprocessor,
        third_tower_source="efficientnet_lite1_imagenet",
    )
    assert three.get_third_tower().output_dim == 1280
    assert three.encode_images(images).shape == (2, 32)


def test_old_source_keywords_are_still_accepted():
    model = keras_towers.LiT(
        image_tower_preset="efficientnet_lite0_imagenet",
        text_backbone_preset="all_minilm_l6_v2",
        lock_text="backbone",
    )
    assert model.image_tower_source == "efficientnet_lite0_imagenet"
    assert model.text_tower_source == "all_minilm_l6_v2"
    config = model.get_config()
    assert "image_tower_preset" not in config and "text_backbone_preset" not in config
    with pytest.raises(ValueError, match="old name of `image_tower_source`"):
        keras_towers.LiT(
            image_tower_preset="efficientnet_lite0_imagenet",
            image_tower_source="efficientnet_lite1_imagenet",
        )


def test_frozen_recipes_check_the_image_size():
    with pytest.raises(ValueError, match="224 px"):
        recipes.get("lit").build(image_size=64)
    assert recipes.trainer("clip-tiny") is training.train
    with pytest.raises(ValueError, match="Unknown method"):
        recipes.trainer("nope")


def test_cached_feature_order_matches_the_training_order():
    n, batch = 40, 8
    texts = [f"caption {i}" for i in range(n)]
    pairs = training.PairArrays(np.zeros((n, 4, 4, 3), np.uint8), texts)
    features = np.arange(n, dtype="float32")[:, None]
    reference, reference_epoch = training.epoch_shuffled_dataset(pairs, batch, seed=3)
    ours, our_epoch = training.epoch_shuffled_dataset(
        {"texts": pairs.texts.astype(str), "image_features": features}, batch, seed=3
    )
    for epoch in (0, 1):
        reference_epoch.on_epoch_begin(epoch)
        our_epoch.on_epoch_begin(epoch)
        expected = [t for b in reference.as_numpy_iterator() for t in b["texts"]]
        got = list(ours.as_numpy_iterator())
        assert [t for b in got for t in b["texts"]] == expected
        # Features travel with their captions.
        for b in got:
            index = [int(t.decode().split()[1]) for t in b["texts"]]
            np.testing.assert_array_equal(b["image_features"][:, 0], index)


@pytest.mark.one_backend
def test_cached_feature_trainer_trains_lit_without_touching_the_locked_tower(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_TOWERS_DATA_DIR", str(tmp_path))
    images, captions, _ = keras_towers.datasets.make_shapes(64, seed=0)
    pairs = training.PairArrays(images, captions)
    model = keras_towers.LiT.tiny()
    locked = [keras.ops.convert_to_numpy(w) for w in model.image_tower.weights]
    text_before = [keras.ops.convert_to_numpy(w) for w in model.text_tower.weights]
    model.compile(learning_rate=1e-3)
    train = recipes.trainer("lit")
    history = train(model, pairs, epochs=2, batch_size=16, validation_pairs=pairs)
    assert len(history["loss"]) == 2 and "val_loss" in history
    for before, after in zip(locked, model.image_tower.weights, strict=True):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert any(
        not np.array_equal(b, keras.ops.convert_to_numpy(a))
        for b, a in zip(text_before, model.text_tower.weights, strict=True)
    )
    assert list((tmp_path / "features").glob("image_features-*.npy"))


@pytest.mark.one_backend
def test_augmented_captions_run_through_a_locked_text_backbone(tmp_path, monkeypatch):
    # `lit-minilm --augment captions`: the phrasings change every epoch, so
    # only the image features are cached; the captions go through the locked
    # text backbone each step and its head trains.
    monkeypatch.setenv("KERAS_TOWERS_DATA_DIR", str(tmp_path))
    assert "augment" in recipes.get("lit-minilm").options
    images, captions, _ = keras_towers.datasets.make_shapes(32, seed=0)
    pairs = training.PairArrays(images, captions)
    model = keras_towers.LiT.tiny(lock_text="backbone")
    backbone = model.text_tower.backbone
    head = model.text_tower.projection
    before = [keras.ops.convert_to_numpy(w) for w in backbone.weights]
    head_before = [keras.ops.convert_to_numpy(w) for w in head.weights]
    model.compile(learning_rate=1e-2)
    train = recipes.trainer("lit-minilm")
    history = train(model, pairs, epochs=1, batch_size=16, augment="captions")
    assert np.isfinite(history["loss"]).all()
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "features").glob("*.npy"))
    assert cached == ["image_features"]
    for b, a in zip(before, backbone.weights, strict=True):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(a))
    assert any(
        not np.array_equal(b, keras.ops.convert_to_numpy(a))
        for b, a in zip(head_before, head.weights, strict=True)
    )
    # Without `--augment` both locked towers are cached, as before.
    train(model, pairs, epochs=1, batch_size=16)
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "features").glob("*.npy"))
    assert cached == ["image_features", "text_features"]


def test_lit_minilm_recipe_trains_only_the_text_head_and_temperature():
    model = recipes.get("lit-minilm").build()
    assert model.lock_text == "backbone"
    assert not model.image_tower.trainable
    assert not model.text_tower.backbone.trainable
    trainable = {v.path for v in model.trainable_variables}
    head = {v.path for v in model.text_tower.projection.trainable_variables}
    assert head and head < trainable
    assert trainable - head == {model.logit_scale.path}
    # Both locked towers are cacheable, so training never runs them per epoch.
    assert {s.name for s in model.feature_sources()} == {"image", "text"}
    assert model.encode_texts(["a cat"]).shape == (1, 1280)


def test_referenced_text_backbone_is_left_out_of_the_preset(tmp_path):
    model = recipes.get("lit-minilm").build()
    assert model.text_tower_source == "all_minilm_l6_v2"
    # Give the trained head recognisable weights, then round-trip.
    kernel = model.text_tower.projection.kernel
    kernel.assign(np.full(kernel.shape, 0.01, "float32"))
    model.save_to_preset(str(tmp_path / "lit_minilm"), description="test")
    stored = _stored_arrays(tmp_path / "lit_minilm" / "model.weights.h5")
    # Only the head (384 x 1280) and the temperature are stored.
    assert sorted(int(np.prod(s)) for s in stored.values()) == [1, 384 * 1280]
    restored = keras_towers.LiT.from_preset(str(tmp_path / "lit_minilm"))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.text_tower.projection.kernel),
        np.float32(0.01),
    )
    texts = ["a red apple", "a cat"]
    np.testing.assert_allclose(
        restored.encode_texts(texts), model.encode_texts(texts), atol=1e-6
    )


def test_text_tower_source_needs_a_locked_backbone_and_no_text_tower():
    with pytest.raises(ValueError, match="must be locked"):
        keras_towers.LiT(
            image_tower_source="efficientnet_lite0_imagenet",
            text_tower_source="all_minilm_l6_v2",
            lock_text=False,
        )
    with pytest.raises(ValueError, match="not both"):
        keras_towers.LiT(
            image_tower_source="efficientnet_lite0_imagenet",
            text_tower=keras_towers.TextTower.transformer(
                vocabulary_size=260, sequence_length=8, projection_dim=8
            ),
            text_tower_source="all_minilm_l6_v2",
            lock_text=True,
        )


def test_shipped_lit_minilm_preset_loads_by_name_and_stores_only_its_head():
    name = "lit_lite0_minilm_embedded"
    assert name in keras_towers.LiT.presets
    model = keras_towers.LiT.from_preset(name)
    assert model.text_tower_source == "all_minilm_l6_v2"
    assert not model.text_tower.backbone.trainable
    stored = _stored_arrays(
        presets.resolve(keras_towers.LiT, name) / "model.weights.h5"
    )
    assert sorted(int(np.prod(s)) for s in stored.values()) == [1, 384 * 1280]
    text = model.encode_texts(["a photo of a sneaker", "a photo of a bag"])
    assert text.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-4)
    # The trained head is loaded, not left at its random initialisation:
    # it is what the checksummed file holds.
    with h5py.File(presets.resolve(keras_towers.LiT, name) / "model.weights.h5") as f:
        kernels = []
        f.visititems(
            lambda n, o: (
                kernels.append(o[()])
                if isinstance(o, h5py.Dataset) and o.shape == (384, 1280)
                else None
            )
        )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.text_tower.projection.kernel), kernels[0]
    )


def test_shipped_protoclip_preset_loads_by_name_and_matches_its_card():
    name = "protoclip_lite0_minilm_embedded"
    assert name in keras_towers.ProtoCLIP.presets
    model = keras_towers.ContrastiveModel.from_preset(name)
    assert type(model) is keras_towers.ProtoCLIP
    assert model.image_tower_source == "efficientnet_lite0_imagenet"
    assert model.text_tower_source == "all_minilm_l6_v2"
    assert not model.image_tower.backbone.trainable
    assert not model.text_tower.backbone.trainable
    # Stored: the heads, prototype heads and scales; not the backbones
    # (referenced) nor the episode state (training state).
    path = presets.resolve(keras_towers.ProtoCLIP, name)
    stored = _stored_arrays(path / "model.weights.h5")
    assert max(int(np.prod(s)) for s in stored.values()) == 1280 * recipes.HEADS_DIM
    assert not any("episode_state" in key for key in stored)
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["stored_parameter_count"] < 1_000_000
    _check_card_retrieval(model, metadata, "image_to_text_recall@10")


def test_shipped_improved_recipe_preset_loads_by_name_and_matches_its_card():
    name = "clip_improved_lite0_minilm_embedded"
    assert name in keras_towers.CLIPRocket.presets
    model = keras_towers.ContrastiveModel.from_preset(name)
    assert type(model) is keras_towers.CLIPRocket
    assert (model.zero_shot_head, model.ensemble_weight) == ("ensemble", 0.5)
    assert model.image_tower_source == "efficientnet_lite0_imagenet"
    assert model.text_tower_source == "all_minilm_l6_v2"
    assert not model.image_tower.backbone.trainable
    assert not model.text_tower.backbone.trainable
    # Stored: the z and h heads and the scales, not the referenced backbones.
    path = presets.resolve(keras_towers.CLIPRocket, name)
    stored = _stored_arrays(path / "model.weights.h5")
    assert max(int(np.prod(s)) for s in stored.values()) == 1280 * 512
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["stored_parameter_count"] < 2_100_000
    # The card's retrieval numbers (ensemble head).
    _check_card_retrieval(model, metadata, "text_to_image_recall@10")


def test_shipped_three_towers_preset_with_pretrained_towers_matches_its_card():
    name = "three_towers_lite0_minilm_embedded"
    assert name in keras_towers.ThreeTowers.presets
    model = keras_towers.ContrastiveModel.from_preset(name)
    assert type(model) is keras_towers.ThreeTowers
    assert model.image_tower_source == "efficientnet_lite0_imagenet"
    assert model.text_tower_source == "all_minilm_l6_v2"
    assert not model.image_tower.backbone.trainable
    assert not model.text_tower.backbone.trainable
    # Stored: the f, g, alignment and third heads and the scales; not the
    # three referenced backbones.
    path = presets.resolve(keras_towers.ThreeTowers, name)
    stored = _stored_arrays(path / "model.weights.h5")
    assert max(int(np.prod(s)) for s in stored.values()) == 1280 * recipes.HEADS_DIM
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["stored_parameter_count"] < 1_500_000
    # Trained on the 12-source corpus, with the card's zero-shot sets.
    assert metadata["training"]["data"]["train_pairs"] == recipes.EMBEDDED_TRAIN_PAIRS
    assert metadata["metrics"]["zeroshot:flags"]["accuracy"] > 0.1
    _check_card_retrieval(model, metadata, "image_to_text_recall@10")


def _check_card_retrieval(model, metadata, above_chance):
    """The card's Tux Paint retrieval R@10, measured again (one stamp of
    slack: EfficientNet's convolutions round differently across backends).
    On torch only: encoding 178 stamps with EfficientNet-Lite0 takes up to a
    minute on jax, and the towers' backend parity is tested directly
    (tests/test_efficientnet_lite.py, tests/test_minilm.py); the other
    backends check what the preset loads."""
    if keras.backend.backend() != "torch":
        return
    from keras_towers import tasks

    measured = tasks.run(model, "retrieval:tuxpaint", verbose=0)["metrics"]
    card = metadata["metrics"]["retrieval:tuxpaint"]
    for key in ("image_to_text_recall@10", "text_to_image_recall@10"):
        assert abs(measured[key] - card[key]) <= 1.5 / 178, key
    assert measured[above_chance] > 0.3  # chance: 5.6%
