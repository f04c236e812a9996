"""ASIF's `query_background`: light-on-dark query images inverted before
encoding, anchors untouched."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_towers.models.asif import ASIF
from keras_towers.models.asif import backgrounds


def stroke(size=28, channels=1, on_dark=True):
    image = np.zeros((size, size, channels), "uint8")
    image[size // 4 : 3 * size // 4, size // 3 : size // 2] = 255
    return image if on_dark else 255 - image


def test_dark_border_images_are_inverted_and_others_kept():
    dark, light = stroke(), stroke(on_dark=False)
    np.testing.assert_array_equal(backgrounds.on_light_background(dark), light)
    np.testing.assert_array_equal(backgrounds.on_light_background(light), light)
    # A batch, a list of different sizes, floats, RGB and RGBA.
    batch = backgrounds.on_light_background(np.stack([dark, light]))
    np.testing.assert_array_equal(batch, np.stack([light, light]))
    rgb = stroke(40, 3)
    out = backgrounds.on_light_background([rgb, stroke(20, 3, on_dark=False)])
    np.testing.assert_array_equal(out[0], 255 - rgb)
    np.testing.assert_array_equal(out[1], stroke(20, 3, on_dark=False))
    as_float = backgrounds.on_light_background(dark.astype("float32"))
    np.testing.assert_array_equal(as_float, light.astype("float32"))
    rgba = np.zeros((8, 8, 4), "uint8")  # transparent: composited on white later
    np.testing.assert_array_equal(backgrounds.on_light_background(rgba), rgba)
    # Only the border decides: a dark object filling the middle stays.
    framed = np.full((10, 10, 3), 255, "uint8")
    framed[2:8, 2:8] = 0
    np.testing.assert_array_equal(backgrounds.on_light_background(framed), framed)
    assert backgrounds.border_luminance(framed) == 255.0


def test_dataset_path_matches_the_array_path():
    images = np.stack([stroke(), stroke(on_dark=False), stroke()])
    expected = backgrounds.on_light_background(images)
    batched = tf.data.Dataset.from_tensor_slices(images).batch(2)
    out = np.concatenate(
        list(backgrounds.on_light_background(batched).as_numpy_iterator())
    )
    np.testing.assert_array_equal(out, expected)
    unbatched = tf.data.Dataset.from_tensor_slices({"images": images})
    out = [e["images"] for e in backgrounds.on_light_background(unbatched)]
    np.testing.assert_array_equal(np.stack(out), expected)


def test_asif_inverts_queries_only():
    model = ASIF.tiny(k=4, p=8.0)
    rng = np.random.default_rng(0)
    anchors = rng.integers(0, 256, (6, 32, 32, 3)).astype("uint8")
    anchors[:, 0] = 0  # dark borders: anchors are never inverted
    model.add_anchors(images=anchors, texts=[f"t {i}" for i in range(6)])
    plain = model.anchor_image_features.copy()
    light = ASIF.from_config({**model.get_config(), "query_background": "light"})
    assert light.query_background == "light"
    light.set_weights(model.get_weights())
    light.add_anchors(images=anchors, texts=[f"t {i}" for i in range(6)])
    np.testing.assert_allclose(light.anchor_image_features, plain, atol=1e-6)

    dark = stroke(32, 3)
    np.testing.assert_allclose(
        light.encode_images(dark[None]),
        light.represent(model.encode_image_features(255 - dark[None]), "image"),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        model.encode_images(dark[None]),
        model.represent(model.encode_image_features(dark[None]), "image"),
        atol=1e-5,
    )
    explained = light.explain(dark, "t 1", top_n=None)
    assert sum(item["contribution"] for item in explained) == pytest.approx(
        float((light.encode_images(dark[None]) @ light.encode_texts(["t 1"]).T)[0, 0]),
        abs=1e-5,
    )


def test_bad_query_background_is_rejected():
    with pytest.raises(ValueError, match="query_background"):
        ASIF(query_background="black")
    assert ASIF().get_config()["query_background"] == "as_is"
    assert (
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(ASIF(query_background="light"))
        ).query_background
        == "light"
    )
