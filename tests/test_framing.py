"""One framing rule per model, used by training pipelines and inference alike.

Issue 17, item 6: training padded non-square images on white while
`encode_images` centre-cropped them (cosine 0.116 between the two views of
one 96x32 image).
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_towers import ASIF
from keras_towers import CLIP
from keras_towers import ContrastivePreprocessor
from keras_towers import datasets
from keras_towers.converters.transformers_clip import TransformersImageConverter
from keras_towers.preprocessing import FRAMINGS
from keras_towers.preprocessing import frame_images
from keras_towers.training import PairArrays

SIZE = 32


def wide_image(seed=0):
    """One 32x96 RGB image: three different thirds, so framings differ."""
    rng = np.random.default_rng(seed)
    thirds = [rng.integers(lo, lo + 80, (SIZE, SIZE, 3)) for lo in (0, 90, 170)]
    return np.concatenate(thirds, axis=1).astype("uint8")


def one_pair(image):
    return tf.data.Dataset.from_tensors({"images": image, "texts": "a picture"})


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_default_training_framing_is_the_inference_framing():
    # Defaults only (the API before framing existed): the training pipeline
    # padded, `encode_images` cropped.
    model = CLIP.tiny(image_size=SIZE)
    image = wide_image()
    pairs = PairArrays.from_dataset(one_pair(image), SIZE)
    trained_on = model.encode_images(pairs.images)[0]
    at_inference = model.encode_images(image[None])[0]
    assert cosine(trained_on, at_inference) > 0.9999


@pytest.mark.parametrize("framing", FRAMINGS)
def test_training_pairs_and_encode_images_see_the_same_pixels(framing):
    model = CLIP.tiny(image_size=SIZE)
    model.preprocessor.framing = framing
    image = wide_image()
    # The training pipeline reads the rule from the model it feeds.
    pairs = PairArrays.from_dataset(one_pair(image), SIZE, resize=model)
    assert pairs.framing == framing
    seen_in_training = model.preprocessor({"images": pairs.images})["images"]
    seen_at_inference = model.preprocessor({"images": image[None]})["images"]
    np.testing.assert_array_equal(
        np.asarray(seen_at_inference), np.asarray(seen_in_training)
    )
    a = model.encode_images(pairs.images)[0]
    b = model.encode_images(image[None])[0]
    assert cosine(a, b) > 0.9999


def test_framings_differ_on_a_wide_image():
    # The rule matters: each framing gives other pixels (the test above
    # would pass trivially otherwise).
    image = wide_image()
    framed = {f: frame_images(image, SIZE, f).numpy() for f in FRAMINGS}
    assert framed["pad"][0, 0].tolist() == [255.0] * 3  # white band on top
    assert not np.array_equal(framed["pad"], framed["crop"])
    assert not np.array_equal(framed["crop"], framed["squash"])
    # The crop is the middle third.
    np.testing.assert_array_equal(framed["crop"], image[:, SIZE : 2 * SIZE])


def test_frame_images_batches_and_keeps_framed_images():
    image = wide_image()
    batch = frame_images(np.stack([image, image[:, ::-1]]), SIZE, "pad").numpy()
    np.testing.assert_array_equal(batch[0], frame_images(image, SIZE, "pad"))
    square = datasets.resize_image(image, SIZE, "pad").numpy()
    for framing in FRAMINGS:  # training images are framed once, not twice
        np.testing.assert_array_equal(frame_images(square, SIZE, framing), square)
    with pytest.raises(ValueError, match="framing.*'pad', 'crop', 'squash'"):
        frame_images(image, SIZE, "fit")


def test_preset_round_trip_keeps_the_rule(tmp_path):
    model = CLIP.tiny(image_size=SIZE)
    model.preprocessor.framing = "crop"
    model.save_to_preset(str(tmp_path / "preset"))
    restored = CLIP.from_preset(str(tmp_path / "preset"))
    assert restored.preprocessor.framing == "crop"
    image = wide_image()[None]
    np.testing.assert_allclose(
        restored.encode_images(image), model.encode_images(image), atol=1e-6
    )


def test_configs_without_the_key_keep_their_meaning():
    config = ContrastivePreprocessor.default(image_size=SIZE).get_config()
    assert config.pop("framing") == "pad"
    # keras_towers models were trained on padded pairs.
    assert ContrastivePreprocessor.from_config(config).framing == "pad"
    # ASIF encoded its anchors through the converter, which cropped.
    asif = ASIF(k=4, p=3.0, preprocessor=ContrastivePreprocessor.default(SIZE))
    asif_config = asif.get_config()
    del asif_config["preprocessor"]["config"]["framing"]
    assert ASIF.from_config(asif_config).preprocessor.framing == "crop"
    assert ASIF.from_config(asif.get_config()).preprocessor.framing == "pad"


def test_transformers_clip_keeps_its_own_crop():
    converter = TransformersImageConverter(
        image_size=(SIZE, SIZE), shortest_edge=SIZE, scale=1 / 255
    )
    preprocessor = ContrastivePreprocessor(image_converter=converter)
    assert preprocessor.framing == "crop"
    image = wide_image()[None]
    # Left to the converter: transformers' pixels, not re-framed.
    np.testing.assert_array_equal(
        np.asarray(preprocessor({"images": image})["images"]),
        np.asarray(converter(image)),
    )


def test_pairs_framed_by_another_rule_are_refused():
    model = CLIP.tiny(image_size=SIZE)
    pairs = PairArrays.from_dataset(one_pair(wide_image()), SIZE, resize="crop")
    with pytest.raises(ValueError, match="resize='crop'.*frames images with 'pad'"):
        pairs.check_model_framing(model)
    PairArrays.from_dataset(one_pair(wide_image()), SIZE).check_model_framing(model)
