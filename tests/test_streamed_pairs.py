"""`training.StreamedPairs`: pairs whose images are decoded only when read,
and the recipes' locked-feature path that streams them."""

import numpy as np
import pytest
from PIL import Image

import keras_towers
from keras_towers import recipes
from keras_towers import training

pytestmark = pytest.mark.backend_independent


def _records(tmp_path, n=12):
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        # Images of several shapes, so framing (pad to a square) matters.
        h, w = 20 + 3 * (i % 4), 30 - 2 * (i % 3)
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        records.append({"image": str(path), "caption": f"caption {i}", "id": str(i)})
    return records


def _streamed(records, size=16, framing="pad"):
    return training.StreamedPairs(
        lambda: keras_towers.datasets.from_records(records, on_error="raise"),
        [r["caption"] for r in records],
        image_size=size,
        framing=framing,
    )


def test_streamed_pairs_frame_like_loaded_pairs(tmp_path):
    records = _records(tmp_path)
    loaded = training.PairArrays.from_dataset(
        keras_towers.datasets.from_records(records), 16, resize="crop"
    )
    streamed = _streamed(records, framing="crop")
    assert len(streamed) == len(records) and streamed.image_size == 16
    assert streamed._images is None  # nothing decoded yet
    got = list(streamed.dataset().as_numpy_iterator())
    assert streamed._images is None  # streaming does not keep the images
    np.testing.assert_array_equal(np.stack([g["images"] for g in got]), loaded.images)
    assert [g["texts"].decode() for g in got] == list(loaded.texts)
    # Reading `images` loads them once, like PairArrays.
    np.testing.assert_array_equal(streamed.images, loaded.images)
    assert streamed.images is streamed.images
    assert streamed.framing == "crop"


def test_streamed_pairs_refuse_a_source_that_changes_the_pairs(tmp_path):
    records = _records(tmp_path, n=4)
    wrong = training.StreamedPairs(
        lambda: keras_towers.datasets.from_records(records[::-1]),
        [r["caption"] for r in records],
        image_size=8,
        framing="pad",
    )
    with pytest.raises(Exception, match="another caption at index"):
        list(wrong.dataset().as_numpy_iterator())
    with pytest.raises(ValueError, match="captions differ"):
        wrong.images  # noqa: B018


def test_streamed_pairs_check_their_arguments():
    with pytest.raises(TypeError, match="`source` must be a function"):
        training.StreamedPairs([], [], image_size=8, framing="pad")
    with pytest.raises(ValueError, match="`image_size` must be >= 1"):
        training.StreamedPairs(lambda: None, [], image_size=0, framing="pad")
    with pytest.raises(ValueError, match="framing"):
        training.StreamedPairs(lambda: None, [], image_size=8, framing="zoom")


def test_locked_features_of_streamed_pairs_equal_those_of_loaded_pairs(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_TOWERS_DATA_DIR", str(tmp_path / "data"))
    records = _records(tmp_path)
    model = keras_towers.LiT.tiny()
    size = model.image_tower.image_shape[0]
    loaded = training.PairArrays.from_dataset(
        keras_towers.datasets.from_records(records), size, resize="pad"
    )
    streamed = _streamed(records, size=size)
    from_loaded = recipes.locked_feature_arrays(model, loaded)
    keras_towers.clear_feature_cache()
    from_streamed = recipes.locked_feature_arrays(model, streamed)
    assert streamed._images is None  # the images were never all in memory
    np.testing.assert_allclose(
        from_streamed["image_features"], from_loaded["image_features"], rtol=1e-5
    )
    assert list(from_streamed["texts"]) == list(loaded.texts)
    # Same pairs, same key: the second call was served from the disk cache.
    cached = sorted((tmp_path / "data" / "features").glob("image_features-*.npy"))
    assert len(cached) == 1
