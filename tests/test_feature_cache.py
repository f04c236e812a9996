"""Frozen-feature cache: equal to the live tower, reused, invalidated, refused."""

import errno
import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import keras_towers
from keras_towers import feature_cache
from keras_towers.feature_cache import cache_locked_features
from keras_towers.feature_cache import clear_feature_cache
from tests.test_lit import raw_pairs
from tests.test_lit import resnet_lit


class LockedRuns:
    """Counts the batches and examples the cache runs its locked towers on."""

    def __init__(self, monkeypatch):
        self.rows = 0
        self.batches = 0
        original = feature_cache._locked_forward

        def counting_forward(runner, inputs):
            self.batches += 1
            self.rows += len(
                next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
            )
            return original(runner, inputs)

        monkeypatch.setattr(feature_cache, "_locked_forward", counting_forward)

    def rows_during(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` and how many examples the towers saw."""
        start = self.rows
        result = fn(*args, **kwargs)
        return result, self.rows - start


class BackboneCalls:
    """Counts Python calls of a backbone: each eager call or each trace."""

    def __init__(self, backbone):
        self.calls = 0
        original = backbone.call

        def counting_call(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        backbone.call = counting_call


def pairs_dataset(images, texts):
    return tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})


def embed(model, raw_or_features, key):
    """Embeddings from an eager forward pass (raw inputs are preprocessed)."""
    inputs = dict(raw_or_features)
    if "images" in inputs or "texts" in inputs:
        inputs = model.preprocessor(inputs)
    inputs = {k: keras.ops.convert_to_numpy(v) for k, v in inputs.items()}
    return keras.ops.convert_to_numpy(model(inputs, training=False)[key])


def live_features(model, images):
    pixels = model.preprocessor({"images": images})["images"]
    return keras.ops.convert_to_numpy(model.image_tower(pixels, training=False))


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    clear_feature_cache()
    yield
    clear_feature_cache()


def as_arrays(dataset):
    out = {}
    for element in dataset.as_numpy_iterator():
        for key, value in element.items():
            out.setdefault(key, []).append(value)
    return out


def test_features_equal_live_tower_and_are_computed_once_per_element(monkeypatch):
    images, texts = raw_pairs(10)
    model = resnet_lit()
    expected = live_features(model, images)
    counter = LockedRuns(monkeypatch)
    cached = cache_locked_features(model, pairs_dataset(images, texts), batch_size=4)
    assert (counter.rows, counter.batches) == (10, 3)  # batches of 4, 4, 2
    assert set(cached.element_spec) == {"image_features", "texts"}
    got = as_arrays(cached)
    np.testing.assert_allclose(np.stack(got["image_features"]), expected, atol=1e-5)
    assert [t.decode() for t in got["texts"]] == texts  # order kept
    # A second request for the same tower and data is served from memory.
    cache_locked_features(model, pairs_dataset(images, texts), batch_size=4)
    assert counter.rows == 10
    # Epochs of fit on the cached dataset never run the locked backbone.
    backbone = BackboneCalls(model.image_tower.backbone)
    model.compile(learning_rate=1e-3)
    before = keras.ops.convert_to_numpy(model.text_tower.projection.kernel).copy()
    history = model.fit(cached.shuffle(10).batch(5), epochs=2, verbose=0)
    assert backbone.calls == 0  # not even traced
    assert np.all(np.isfinite(history.history["loss"]))
    after = keras.ops.convert_to_numpy(model.text_tower.projection.kernel)
    assert not np.allclose(before, after)
    # The model gives the same embeddings from features as from images.
    features = np.stack(got["image_features"])[:3]
    np.testing.assert_allclose(
        embed(model, {"image_features": features}, "image_embeddings"),
        embed(model, {"images": images[:3]}, "image_embeddings"),
        atol=1e-5,
    )


def test_cache_is_invalidated_when_weights_or_data_change(monkeypatch):
    images, texts = raw_pairs(6)
    model = resnet_lit()
    counter = LockedRuns(monkeypatch)

    def cache(images, texts):
        return counter.rows_during(
            lambda: as_arrays(
                cache_locked_features(model, pairs_dataset(images, texts))
            )
        )

    first, rows = cache(images, texts)
    assert rows == 6
    assert cache(images, texts)[1] == 0
    # A locked BatchNorm statistic changes -> recomputed, equal to the live tower.
    stat = next(v for v in model.image_tower.variables if "moving_mean" in v.path)
    stat.assign(keras.ops.convert_to_numpy(stat.value) + 0.5)
    second, rows = cache(images, texts)
    assert rows == 6
    assert not np.allclose(first["image_features"], second["image_features"])
    np.testing.assert_allclose(
        np.stack(second["image_features"]), live_features(model, images), atol=1e-5
    )
    # One changed pixel -> recomputed.
    changed = images.copy()
    changed[5, 0, 0, 0] ^= 1
    assert cache(changed, texts)[1] == 6
    # One changed caption changes the data too.
    assert cache(images, texts[:-1] + ["other"])[1] == 6
    assert cache(images, texts)[1] == 0  # the original is still cached


def test_disk_cache_is_reused_and_checked(tmp_path, monkeypatch):
    images, texts = raw_pairs(5)
    model = resnet_lit()
    counter = LockedRuns(monkeypatch)
    cache_dir = str(tmp_path / "features")
    first = as_arrays(
        cache_locked_features(model, pairs_dataset(images, texts), cache_dir=cache_dir)
    )
    files = sorted(os.listdir(cache_dir))
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "npy"]
    meta = json.loads(open(os.path.join(cache_dir, files[0])).read())
    # A locked tower without a head computes its pooled backbone feature.
    assert meta["count"] == 5 and meta["computation"] == "pooled"
    assert files[0].startswith("image_features-")
    assert len(meta["key"]) == 64 and meta["key"] in files[1]
    clear_feature_cache()  # as in a new process
    second = as_arrays(
        cache_locked_features(model, pairs_dataset(images, texts), cache_dir=cache_dir)
    )
    assert counter.rows == 5
    np.testing.assert_array_equal(first["image_features"], second["image_features"])
    # A damaged file is ignored and recomputed.
    clear_feature_cache()
    np.save(os.path.join(cache_dir, files[1]), np.zeros((2, 64), "float32"))
    with pytest.warns(UserWarning, match="recomputing"):
        cache_locked_features(model, pairs_dataset(images, texts), cache_dir=cache_dir)
    assert counter.rows == 10


def test_cache_key_ignores_random_seed_state():
    # Dropout's seed-generator state is a variable but not a weight: it
    # differs between two builds of the same tower, so keying on it would
    # miss the disk cache in every new process.
    def build():
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50,
            num_layers=1,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
            max_sequence_length=8,
            dropout=0.1,
            name="t_backbone",
        )
        tower = keras_towers.TextTower(backbone, pooling="mean", head=None, name="t")
        tower.trainable = False
        return tower

    a, b = build(), build()
    b.set_weights(a.get_weights())
    assert len(a.variables) > len(a.weights)  # seed state exists
    digest = feature_cache.weights_digest
    assert digest(feature_cache._computation(a)[2], paths=False) == digest(
        feature_cache._computation(b)[2], paths=False
    )


def test_cache_key_ignores_automatic_layer_numbers():
    # A second identical model built in the same process gets
    # `image_converter_1`-style names: it must hit the first one's cache.
    first, second = resnet_lit(), resnet_lit()
    second.set_weights(first.get_weights())
    names = [m.preprocessor.image_converter.name for m in (first, second)]
    assert names[0] != names[1]
    (a,) = feature_cache.select_sources(first, "image")
    (b,) = feature_cache.select_sources(second, "image")
    assert (
        feature_cache._cache_key(first, a, "data", 3)[0]
        == feature_cache._cache_key(second, b, "data", 3)[0]
    )
    assert feature_cache._nameless(
        {"name": "dense_12", "dtype": "mixed_float16", "layers": [{"name": "a_3"}]}
    ) == {"dtype": "mixed_float16", "layers": [{}]}


def test_models_over_one_frozen_encoder_share_its_features():
    # A locked tower without a head and a locked backbone under a trained
    # head compute the same pooled features: one key, whatever the model's
    # text tower, heads or layer names.
    plain = resnet_lit()
    headed = resnet_lit(head="linear", lock_image="backbone")
    headed.image_tower.backbone.set_weights(plain.image_tower.backbone.get_weights())
    (a,) = feature_cache.select_sources(plain, "image")
    (b,) = feature_cache.select_sources(headed, "image")
    key = feature_cache._cache_key(plain, a, "data", 3)[0]
    assert feature_cache._cache_key(headed, b, "data", 3)[0] == key
    # Other weights, another preprocessing or a locked head: another key.
    other = resnet_lit()
    assert (
        feature_cache._cache_key(other, other.feature_sources()[0], "data", 3)[0] != key
    )
    tower_locked = resnet_lit(head="linear", lock_image=True)
    tower_locked.image_tower.backbone.set_weights(
        plain.image_tower.backbone.get_weights()
    )
    (c,) = feature_cache.select_sources(tower_locked, "image")
    assert feature_cache._cache_key(tower_locked, c, "data", 3)[0] != key
    plain.preprocessor.framing = "crop"
    assert feature_cache._cache_key(plain, a, "data", 3)[0] != key


def test_third_and_image_sources_key_their_converters_alike():
    # Three Towers' h reads `third_images` through its own converter; with
    # the same converter as a LiT's `images`, the features are the same.
    config = {"framing": "pad", "image_converter": {"scale": 1}}
    config["third_image_converter"] = dict(config["image_converter"])
    image = feature_cache.FeatureSource("image", None, "images", ("images",))
    third = feature_cache.FeatureSource("third", None, "images", ("third_images",))
    prepared = feature_cache._preprocessing_config
    assert prepared(config, image) == prepared(config, third)
    assert feature_cache._disk_name(third) == feature_cache._disk_name(image)
    config["third_image_converter"] = {"scale": 2}
    assert prepared(config, image) != prepared(config, third)


def test_locked_backbone_caches_pooled_features():
    images, texts = raw_pairs(6)
    model = resnet_lit(head="linear", lock_image="backbone")
    cached = cache_locked_features(model, {"images": images, "texts": texts})
    features = np.stack(as_arrays(cached)["image_features"])
    assert features.shape == (6, model.image_tower.feature_dim)
    # The trainable head is applied to the cached pooled features.
    np.testing.assert_allclose(
        embed(model, {"image_features": features}, "image_embeddings"),
        embed(model, {"images": images}, "image_embeddings"),
        atol=1e-5,
    )


def test_locked_text_tower_and_varied_image_sizes():
    rng = np.random.default_rng(0)
    sizes = [(30, 40), (41, 33), (32, 32)]
    images = [rng.integers(0, 256, (h, w, 3), dtype="uint8") for h, w in sizes]
    texts = ["one", "two", "three"]
    dataset = tf.data.Dataset.from_generator(
        lambda: (
            {"images": im, "texts": t} for im, t in zip(images, texts, strict=True)
        ),
        output_signature={
            "images": tf.TensorSpec((None, None, 3), tf.uint8),
            "texts": tf.TensorSpec((), tf.string),
        },
    )
    model = resnet_lit(variant="uL")  # text tower locked, image tower trained
    cached = cache_locked_features(model, dataset, batch_size=2)
    assert set(cached.element_spec) == {"images", "text_features"}
    got = as_arrays(cached)
    # Raw images of different sizes come back unchanged.
    assert [im.shape for im in got["images"]] == [im.shape for im in images]
    for a, b in zip(got["images"], images, strict=True):
        np.testing.assert_array_equal(a, b)
    features = np.stack(got["text_features"])
    np.testing.assert_allclose(
        embed(model, {"text_features": features}, "text_embeddings"),
        embed(model, {"texts": texts}, "text_embeddings"),
        atol=1e-5,
    )


def test_refusals_are_clear():
    images, texts = raw_pairs(4)
    with pytest.raises(ValueError, match="None of CLIP's towers is locked"):
        cache_locked_features(
            keras_towers.CLIP.tiny(), {"images": images, "texts": texts}
        )
    model = resnet_lit()
    with pytest.raises(ValueError, match="text tower .* is not locked"):
        cache_locked_features(model, {"images": images, "texts": texts}, towers="text")
    with pytest.raises(ValueError, match="Unknown tower 'audio'"):
        cache_locked_features(model, {"images": images, "texts": texts}, towers="audio")
    with pytest.raises(ValueError, match="unbatched.*unbatch"):
        cache_locked_features(model, pairs_dataset(images, texts).batch(2))
    with pytest.raises(ValueError, match="needs 'images'"):
        cache_locked_features(model, {"texts": texts})
    reshuffled = pairs_dataset(images, texts).shuffle(4, seed=1)
    with pytest.raises(ValueError, match="second iteration"):
        cache_locked_features(model, reshuffled)
    with pytest.raises(ValueError, match="(?i)precomputed features.*not locked"):
        # An unlocked tower cannot take features.
        keras_towers.CLIP.tiny()({"image_features": np.zeros((2, 32), "float32")})
    with pytest.raises(ValueError, match="width 64"):
        model({"image_features": np.zeros((2, 8), "float32")})


def test_a_full_disk_keeps_the_stored_array(tmp_path, monkeypatch):
    # Issue 17: the write fails part-way (ENOSPC); the stored entry is kept.
    cache_dir = tmp_path / "features"
    old = np.arange(6, dtype="float32").reshape(2, 3)
    feature_cache.store_keyed_array(cache_dir, "f", "k", {}, old)
    real_save = np.save

    def save_then_full(f, array, **kwargs):
        real_save(f, array[:1], **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", save_then_full)
    with pytest.raises(OSError, match=r"f-k\.npy: the disk .*is full.*untouched"):
        feature_cache.store_keyed_array(cache_dir, "f", "k", {}, old + 1)
    monkeypatch.undo()
    loaded = feature_cache.load_keyed_array(cache_dir, "f", "k", lambda a: True)
    np.testing.assert_array_equal(loaded, old)
    assert sorted(os.listdir(cache_dir)) == ["f-k.json", "f-k.npy"]


def test_keep_inputs_false_returns_the_features_alone(monkeypatch):
    # A caller with the trained towers' inputs elsewhere (Three Towers' `f`
    # at its own image size) keeps none of the raw values: the same
    # features, in the same order, and nothing passed through.
    images, texts = raw_pairs(6)
    model = resnet_lit()
    full = cache_locked_features(model, pairs_dataset(images, texts), batch_size=4)
    counter = LockedRuns(monkeypatch)
    alone = cache_locked_features(
        model, pairs_dataset(images, texts), batch_size=4, keep_inputs=False
    )
    assert counter.rows == 0  # the features come from the memory cache
    assert set(full.element_spec) == {"image_features", "texts"}
    assert set(alone.element_spec) == {"image_features"}
    np.testing.assert_array_equal(
        np.stack(as_arrays(alone)["image_features"]),
        np.stack(as_arrays(full)["image_features"]),
    )
