"""Texts cut at the text context: counted, warned about once per call, and
zero-shot templates that lose their class are dropped (issue 17, item 5)."""

import json
import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import datasets
from keras_towers import evaluation
from keras_towers.datasets import classification
from keras_towers.evaluation.zero_shot import fitting_templates
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.preprocessing import TruncationWarning
from keras_towers.templates import fill_templates
from keras_towers.templates import get_templates

SHIPPED = Path(keras_towers.__file__).parent / "shipped_presets"
LONG = "a bad photo of a red circle."  # 28 bytes: cut to "a bad photo of"
NAMES = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return keras_towers.CLIP.tiny()  # a 16-byte context: 14 bytes of text


def _truncation_warnings(record):
    return [str(w.message) for w in record if w.category is TruncationWarning]


def test_token_counts_and_capacity():
    preprocessor = ContrastivePreprocessor.default(sequence_length=16)
    assert preprocessor.text_capacity == 14
    counts = preprocessor.text_token_counts(["a cat", "é", "ABC", LONG])
    np.testing.assert_array_equal(counts, [5, 2, 3, 28])
    assert preprocessor.text_token_counts([]).shape == (0,)


def test_encode_texts_warns_once_per_call(model):
    texts = ["a cat", LONG, LONG.upper(), LONG + " twice"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.encode_texts(texts, batch_size=2)  # two batches, one warning
    messages = _truncation_warnings(record)
    assert len(messages) == 1, messages
    assert "3 of 4 texts" in messages[0]
    assert "16 tokens" in messages[0]
    assert "'a bad photo of'" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        model.encode_texts(["a cat", "fourteen bytes"])  # fits exactly


def test_retrieval_counts_cut_captions_once(model):
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), "uint8")
    captions = [LONG, "a cat", LONG.replace("red", "blue")]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        evaluation.evaluate_retrieval(model, images, captions, verbose=0)
    messages = _truncation_warnings(record)
    assert len(messages) == 1 and "2 of 3" in messages[0], messages


def test_zero_shot_drops_templates_that_cut_the_class_name(model):
    templates = ["{}", "a bad photo of a {}.", "a {} in a video game."]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        weights = evaluation.zero_shot_classifier(model, NAMES, templates)
    messages = _truncation_warnings(record)
    assert len(messages) == 2, messages
    dropped, cut = messages
    assert "Dropped 1 of 3 templates" in dropped
    assert "'a bad photo of a {}.'" in dropped
    # Cut after the class name: kept, and counted once for all prompts.
    assert "2 of 4 prompts" in cut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        expected = evaluation.zero_shot_classifier(
            model, NAMES, ["{}", "a {} in a video game."]
        )
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_zero_shot_drops_templates_that_make_classes_identical(model):
    names = ["yellow square", "yellow squares"]  # "a {}" reads "a yellow squar"
    with pytest.warns(TruncationWarning, match="the same as for 'yellow square'"):
        kept = fitting_templates(model, names, ["{}", "a {}"])
    assert kept == ["{}"]


def test_zero_shot_error_when_every_template_loses_a_class(model):
    with pytest.raises(
        ValueError, match="All 2 templates lose a class.*longer context"
    ):
        evaluation.zero_shot_classifier(
            model, NAMES, ["a bad photo of a {}.", "a photo of the {}."]
        )
    images = np.zeros((2, 32, 32, 3), "uint8")
    with pytest.raises(ValueError, match="All 1 templates"):
        evaluation.classify(model, images, NAMES, templates=["a bad photo of a {}."])


def test_models_without_a_token_counter_keep_every_template():
    class Duck:
        def encode_texts(self, texts, batch_size=256):
            return np.ones((len(texts), 2), "float32")

        def encode_images(self, images, batch_size=32):
            return np.ones((len(images), 2), "float32")

    assert fitting_templates(Duck(), NAMES, "best7") == get_templates("best7")


def _preset_preprocessor(path: Path) -> ContrastivePreprocessor:
    config = json.loads((path / "config.json").read_text())
    preprocessor = keras.saving.deserialize_keras_object(
        config["config"]["preprocessor"]
    )
    assets = path / "assets" / "tokenizer"
    if assets.is_dir():
        preprocessor.tokenizer.load_assets(str(assets))
    return preprocessor


ZERO_SHOT_CLASSES = {
    "shapes": datasets.shape_class_names(),
    "animal-mnist": list(classification.ANIMAL_MNIST_CLASSES),
    "fashion-mnist": list(classification.FASHION_MNIST_CLASSES),
}


@pytest.mark.parametrize("preset", sorted(p.name for p in SHIPPED.iterdir()))
def test_shipped_presets_fit_their_default_templates(preset):
    """`keras-towers eval`'s default templates ("openai") and those the card
    reports, filled with every zero-shot set's class names, are never cut."""
    path = SHIPPED / preset
    metadata = json.loads((path / "metadata.json").read_text())
    template_sets = {"openai"} | {
        m.group(1)
        for key in metadata.get("metrics", {})
        if (m := re.search(r"--templates (\S+)", key))
    }
    preprocessor = _preset_preprocessor(path)
    for name in sorted(template_sets):
        templates = get_templates(name)
        for data, class_names in ZERO_SHOT_CLASSES.items():
            prompts = [p for c in class_names for p in fill_templates(templates, c)]
            counts = preprocessor.text_token_counts(prompts)
            worst = int(np.argmax(counts))
            assert counts[worst] <= preprocessor.text_capacity, (
                f"{preset}: {prompts[worst]!r} ({data}, templates {name!r}) has "
                f"{counts[worst]} tokens; the context holds "
                f"{preprocessor.text_capacity}"
            )
