"""CLIPRocket on locked backbones trained on precomputed view features:
`recipes_rocket.view_feature_arrays` (every epoch's views encoded once,
cached per view slot), `training.EpochArrays` and the `*_features_aug`
inputs, which must give exactly what the raw views give."""

import keras
import numpy as np
import pytest

from keras_towers import recipes
from keras_towers import recipes_rocket
from keras_towers import training
from keras_towers.datasets import make_shapes
from keras_towers.models.rocket import CLIPRocket

N, B = 16, 8


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def pairs():
    images, captions, _ = make_shapes(N, seed=4)
    return training.PairArrays(images, captions)


@pytest.fixture(scope="module")
def model():
    # Locked backbones, trained linear z heads and h heads: the `*-heads`
    # recipes' arrangement on tiny towers.
    return CLIPRocket.tiny(addon="siamlip", lock_image="backbone", lock_text="backbone")


@pytest.fixture(scope="module")
def cached(model, pairs, tmp_path_factory):
    image_views, text_views = recipes_rocket.views("rocket", 32)
    cache_dir = str(tmp_path_factory.mktemp("view_features"))
    arrays = recipes_rocket.view_feature_arrays(
        model, pairs, image_views, text_views, seed=5, epochs=2, cache_dir=cache_dir
    )
    return arrays, cache_dir, (image_views, text_views)


def test_shapes_and_the_cache_is_reused_per_view_slot(
    model, pairs, cached, monkeypatch
):
    arrays, cache_dir, (image_views, text_views) = cached
    width_i = model.image_tower.feature_dim
    width_t = model.text_tower.feature_dim
    assert arrays.epochs == 2 and len(arrays) == N
    assert arrays.arrays["image_features"].shape == (2, N, width_i)
    assert arrays.arrays["image_features_aug"].shape == (2, N, 2, width_i)
    assert arrays.arrays["text_features_aug"].shape == (2, N, 2, width_t)
    # Epochs differ (the views are augmented per epoch).
    assert not np.allclose(*arrays.arrays["image_features_aug"])

    calls = []
    original = recipes_rocket._locked_features

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(recipes_rocket, "_locked_features", counting)
    again = recipes_rocket.view_feature_arrays(
        model, pairs, image_views, text_views, seed=5, epochs=2, cache_dir=cache_dir
    )
    assert calls == []  # every slot of every epoch came from the cache
    for key, value in arrays.arrays.items():
        np.testing.assert_array_equal(again.arrays[key], value)
    # Unaugmented captions: the image slots are cached, the text ones are new.
    image_only = recipes_rocket.views("image", 32)
    recipes_rocket.view_feature_arrays(
        model, pairs, *image_only, seed=5, epochs=1, cache_dir=cache_dir
    )
    assert calls == ["text"]


def test_features_give_what_the_raw_views_give(model, pairs, cached):
    arrays, _, (image_views, text_views) = cached
    epoch = 1
    raw = recipes_rocket._epoch_views(pairs, image_views, text_views, 5, epoch)
    rows = np.arange(B)
    raw_batch = {
        k: raw[k][rows] for k in ("images", "texts", "images_aug", "texts_aug")
    }
    inputs = model.preprocess_samples(raw_batch)
    features = {k: v[epoch][rows] for k, v in arrays.arrays.items()}
    from_raw = model(inputs, training=True)
    from_features = model(features, training=True)
    for key in ("image_z", "text_z", "image_h_aug", "text_h_aug", "image_p_aug"):
        np.testing.assert_allclose(
            np_(from_features[key]), np_(from_raw[key]), atol=2e-5, err_msg=key
        )
    loss_raw, _ = model.loss_terms(from_raw)
    loss_features, _ = model.loss_terms(from_features)
    np.testing.assert_allclose(np_(loss_features), np_(loss_raw), rtol=1e-5)


def test_epoch_arrays_train_in_the_shuffled_order(model, cached):
    arrays, _, _ = cached
    ds, callback = training.epoch_arrays_dataset(arrays, B, seed=3)
    order, order_callback = training.epoch_shuffled_dataset(
        {"i": np.arange(N)}, B, seed=3
    )
    for epoch in (0, 1):
        callback.on_epoch_begin(epoch)
        order_callback.on_epoch_begin(epoch)
        got = np.concatenate([b["image_features"] for b in ds.as_numpy_iterator()])
        idx = np.concatenate([b["i"] for b in order.as_numpy_iterator()])
        np.testing.assert_array_equal(got, arrays.arrays["image_features"][epoch][idx])
    model.compile(learning_rate=1e-3, jit_compile=False)
    history = training.train(model, arrays, epochs=2, batch_size=B, verbose=0)
    assert np.all(np.isfinite(history["siamlip_loss"]))
    assert history["local_i2t_loss"][0] > 0
    with pytest.raises(ValueError, match="hold 2 epochs"):
        training.train(model, arrays, epochs=3, batch_size=B, verbose=0)


def test_bad_inputs_raise_clear_errors(pairs, cached):
    arrays, _, (image_views, text_views) = cached
    trained = CLIPRocket.tiny()
    with pytest.raises(ValueError, match="needs a locked image backbone"):
        recipes_rocket.view_feature_arrays(
            trained, pairs, image_views, text_views, seed=0, epochs=1
        )
    inputs = trained.preprocess_samples(
        {"images": pairs.images[:B], "texts": pairs.texts[:B].astype(str)}
    )
    inputs["image_features_aug"] = arrays.arrays["image_features_aug"][0][:B]
    with pytest.raises(ValueError, match="image tower is trained"):
        trained(inputs, training=True)
    with pytest.raises(ValueError, match="same leading"):
        training.EpochArrays({"a": np.zeros((2, 4)), "b": np.zeros((3, 4))})


def test_heads_recipes_are_registered():
    for method in recipes_rocket.ROCKET_ADDONS:
        recipe = recipes.get(f"{method}-heads")
        assert recipe.image_size == recipes.FROZEN_IMAGE_SIZE
        assert "augment" in recipe.options and "head_layers" in recipe.options
    with pytest.raises(ValueError, match="224 px"):
        recipes.get("clip-improved-heads").build(64)
