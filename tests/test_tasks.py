"""Task strings and the caption-aware retrieval recall."""

import numpy as np
import pytest

from keras_towers import tasks


def test_parse():
    assert tasks.parse("zeroshot:animal-mnist") == ("zeroshot", "animal-mnist")
    assert tasks.parse("retrieval:/a/b:c.csv") == ("retrieval", "/a/b:c.csv")
    with pytest.raises(ValueError, match="KIND:DATA"):
        tasks.parse("zeroshot")
    with pytest.raises(ValueError, match="Unknown task kind"):
        tasks.parse("zero:shapes")
    with pytest.raises(ValueError, match="names no data set"):
        tasks.parse("retrieval:")


def test_identical_captions_count_as_the_same_caption():
    # 3 pairs; pairs 0 and 1 share the caption "a lion". Image 0 ranks text 1
    # first (its twin), image 1 ranks text 2 first, image 2 ranks text 2.
    captions = ["a lion", "a lion", "a cup"]
    result = {
        "image_to_text_rankings": np.array([[1, 0, 2], [2, 0, 1], [2, 0, 1]]),
        "text_to_image_rankings": np.array([[1, 0, 2], [2, 1, 0], [0, 1, 2]]),
    }
    recall = tasks._recall_by_caption(result, captions, ks=(1, 2))
    assert recall["image_to_text_recall@1"] == pytest.approx(2 / 3)
    assert recall["image_to_text_recall@2"] == pytest.approx(1.0)
    # text 2 ("a cup") retrieves image 0 (a lion) first, then image 1.
    assert recall["text_to_image_recall@1"] == pytest.approx(1 / 3)
    assert recall["text_to_image_recall@2"] == pytest.approx(2 / 3)


def test_subset_is_fixed_and_sorted():
    a = tasks._subset(100, 10, seed=0)
    assert np.array_equal(a, tasks._subset(100, 10, seed=0))
    assert np.all(np.diff(a) > 0) and len(a) == 10
    assert len(tasks._subset(5, None)) == 5
