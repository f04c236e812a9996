"""Evaluation (zero-shot, retrieval, linear probe, figures) against hand-computed cases.

Most tests use `FakeModel`, whose embeddings are looked up from tables the
test controls: an image carries its row index in two pixels, a text is
embedded by a function of the string.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_towers
from keras_towers import evaluation
from keras_towers.evaluation.linear_probe import stratified_split
from keras_towers.evaluation.templates import BEST7_TEMPLATES
from keras_towers.evaluation.templates import OPENAI_IMAGENET_TEMPLATES


def make_image(index, height=4, width=4, channels=1):
    """A uint8 image whose first two pixels spell `index` (base 256)."""
    image = np.zeros((height, width, channels), "uint8")
    image[0, 0, 0], image[0, 1, 0] = divmod(index, 256)
    return image


def image_index(image):
    image = np.asarray(image)
    return int(image[0, 0, 0]) * 256 + int(image[0, 1, 0])


def make_images(n, variable=False):
    if variable:  # sizes differ: must travel as a list
        return [make_image(i, 4 + i % 3, 5 + i % 2) for i in range(n)]
    return np.stack([make_image(i) for i in range(n)])


class FakeModel:
    """Embeddings from tables: image -> `image_table[index]`, text -> `text_fn`."""

    def __init__(self, image_table, text_fn):
        self.image_table = np.asarray(image_table, "float32")
        self.text_fn = text_fn
        self.image_calls = []  # number of images per encode_images call
        self.text_calls = []

    def encode_images(self, images, batch_size=32):
        self.image_calls.append(len(images))
        return self.image_table[[image_index(im) for im in images]]

    def encode_texts(self, texts, batch_size=256):
        self.text_calls.append(len(texts))
        return np.stack([np.asarray(self.text_fn(t), "float32") for t in texts])


def caption_model(image_table, text_table):
    """Text "caption j" -> `text_table[j]`."""
    text_table = np.asarray(text_table, "float32")
    return FakeModel(image_table, lambda t: text_table[int(t.split()[-1])])


def captions(n):
    return [f"caption {j}" for j in range(n)]


def class_model(image_table, class_vectors, class_names):
    """Prompts containing class name c embed to `class_vectors[c]`."""

    def text_fn(prompt):
        # The longest matching name wins ("red circle" before "circle").
        matches = [c for c, name in enumerate(class_names) if name in prompt]
        best = max(matches, key=lambda c: len(class_names[c]))
        return class_vectors[best]

    return FakeModel(image_table, text_fn)


def hashed_text_fn(dim):
    """Deterministic pseudo-random, unnormalised embedding per string."""

    def text_fn(text):
        seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(text))
        rng = np.random.default_rng(seed)
        return rng.normal(size=dim) * rng.uniform(0.5, 3.0)

    return text_fn


# === Templates ===


def test_template_sets():
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert set(BEST7_TEMPLATES) <= set(OPENAI_IMAGENET_TEMPLATES)
    assert evaluation.get_templates("best7") == list(BEST7_TEMPLATES)
    assert evaluation.get_templates("simple") == ["a photo of a {}."]
    assert evaluation.get_templates("none") == ["{}"]
    for name in ("openai", "best7", "simple", "none"):
        assert all(t.count("{}") == 1 for t in evaluation.get_templates(name))
    assert evaluation.get_templates(("art of {}",)) == ["art of {}"]
    assert evaluation.fill_templates(["a {}", "{}!"], "x{}") == [
        "a x{}",
        "x{}!",
    ]


@pytest.mark.parametrize(
    "templates, error",
    [
        (["a photo of a cat"], 'exactly one "{}"'),
        (["a {} and a {}"], 'exactly one "{}"'),
        ([], "at least one template"),
        ("imagenet", "Unknown template set"),
    ],
)
def test_bad_templates(templates, error):
    with pytest.raises(ValueError, match=error):
        evaluation.get_templates(templates)
    with pytest.raises(TypeError, match=r"templates\[0\]"):
        evaluation.get_templates([3])


# === Zero-shot ===


def test_classifier_is_mean_of_normalised_prompts():
    names = ["cat", "dog", "red fish"]
    templates = ["a photo of a {}.", "art of the {}", "{}"]
    text_fn = hashed_text_fn(6)
    model = FakeModel(np.zeros((1, 6)), text_fn)
    weights = evaluation.zero_shot_classifier(model, names, templates, batch_size=4)

    expected = []
    for name in names:
        prompts = np.stack([text_fn(t.replace("{}", name)) for t in templates])
        prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
        mean = prompts.mean(axis=0)
        expected.append(mean / np.linalg.norm(mean))
    np.testing.assert_allclose(weights, np.stack(expected), rtol=1e-5, atol=1e-6)
    # Whole classes per call: 4 // 3 templates -> one class (3 prompts) a call.
    assert model.text_calls == [3, 3, 3]
    same = evaluation.zero_shot_classifier(model, names, templates, batch_size=1000)
    np.testing.assert_allclose(same, weights, rtol=1e-6)


def test_zero_shot_perfect_embeddings():
    num_classes, n = 6, 30
    labels = np.arange(n) % num_classes
    names = [f"class{c}" for c in range(num_classes)]
    # Unnormalised image embeddings along their class axis: cosine still 1.
    image_table = np.eye(num_classes)[labels] * np.linspace(0.5, 5, n)[:, None]
    model = class_model(image_table, np.eye(num_classes), names)
    results = evaluation.evaluate_zero_shot(
        model, make_images(n), labels, names, templates="best7", verbose=0
    )
    assert results["accuracy"] == 1.0
    assert results["top5_accuracy"] == 1.0
    np.testing.assert_array_equal(results["per_class_accuracy"], np.ones(6))
    np.testing.assert_array_equal(results["confusion_matrix"], 5 * np.eye(6))
    assert results["num_examples"] == n
    assert results["chance"] == pytest.approx(1 / 6)
    assert "top5_accuracy" not in evaluation.evaluate_zero_shot(
        class_model(np.eye(3), np.eye(3), names[:3]),
        make_images(3),
        [0, 1, 2],
        names[:3],
        verbose=0,
    )


def test_zero_shot_hand_computed():
    names = ["cat", "dog", "bird"]
    # Cosine with each class = the image embedding (class vectors are e_c).
    image_table = np.array(
        [
            [0.9, 0.3, 0.1],  # true 0, predicted 0
            [0.6, 0.5, 0.1],  # true 1, predicted 0; class 1 second
            [0.1, 0.2, 0.9],  # true 2, predicted 2
            [0.2, 0.1, 0.7],  # true 0, predicted 2; class 0 second
            [0.5, 0.1, 0.3],  # true 1, predicted 0; class 1 third
        ]
    )
    image_table /= np.linalg.norm(image_table, axis=1, keepdims=True)
    labels = np.array([0, 1, 2, 0, 1])
    model = class_model(image_table, np.eye(3), names)
    results = evaluation.evaluate_zero_shot(
        model,
        make_images(5),
        labels,
        names,
        templates="simple",
        top_k=(1, 2, 5),
        return_predictions=True,
        logit_scale=10.0,
        verbose=0,
    )
    assert results["accuracy"] == pytest.approx(2 / 5)
    assert results["top2_accuracy"] == pytest.approx(4 / 5)
    assert "top5_accuracy" not in results  # 3 classes
    np.testing.assert_array_equal(
        results["confusion_matrix"], [[1, 0, 1], [2, 0, 0], [0, 0, 1]]
    )
    np.testing.assert_allclose(results["per_class_accuracy"], [0.5, 0.0, 1.0])
    assert results["mean_per_class_accuracy"] == pytest.approx(0.5)
    np.testing.assert_array_equal(results["predictions"], [0, 0, 2, 2, 0])
    np.testing.assert_array_equal(results["labels"], labels)
    logits = 10.0 * image_table
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(results["probabilities"], probs, rtol=1e-5)


def test_zero_shot_random_embeddings_near_chance():
    rng = np.random.default_rng(1)
    num_classes, n = 10, 3000
    names = [f"c{c}" for c in range(num_classes)]
    model = class_model(
        rng.normal(size=(n, 16)), rng.normal(size=(num_classes, 16)), names
    )
    labels = rng.integers(0, num_classes, n)
    results = evaluation.evaluate_zero_shot(
        model, make_images(n), labels, names, templates="none", verbose=0
    )
    # Binomial std: sqrt(0.1 * 0.9 / 3000) = 0.0055 and 0.0091; 4 sigma.
    assert abs(results["accuracy"] - 0.1) < 0.022
    assert abs(results["top5_accuracy"] - 0.5) < 0.037


def test_zero_shot_streams_datasets_like_arrays():
    n, num_classes = 23, 4
    rng = np.random.default_rng(2)
    names = ["w", "x", "y", "z"]
    table = rng.normal(size=(n, 5))
    classes = rng.normal(size=(num_classes, 5))
    labels = rng.integers(0, num_classes, n)
    images = make_images(n, variable=True)

    reference = evaluation.evaluate_zero_shot(
        class_model(table, classes, names),
        images,
        labels,
        names,
        templates="simple",
        batch_size=5,
        return_predictions=True,
        verbose=0,
    )
    dicts = tf.data.Dataset.from_generator(
        lambda: (
            {"images": im, "labels": lab}
            for im, lab in zip(images, labels, strict=True)
        ),
        output_signature={
            "images": tf.TensorSpec((None, None, 1), tf.uint8),
            "labels": tf.TensorSpec((), tf.int64),
        },
    )
    tuples = dicts.map(lambda e: (e["images"], e["labels"]))
    for dataset in (dicts, tuples):
        model = class_model(table, classes, names)
        streamed = evaluation.evaluate_zero_shot(
            model,
            dataset,
            None,
            names,
            templates="simple",
            batch_size=5,
            return_predictions=True,
            verbose=1,
        )
        # Never more than one batch of images in the model at once.
        assert model.image_calls == [5, 5, 5, 5, 3]
        for key in ("accuracy", "top5_accuracy", "num_examples"):
            assert streamed.get(key) == reference.get(key)
        for key in ("confusion_matrix", "predictions", "labels", "probabilities"):
            np.testing.assert_array_equal(streamed[key], reference[key])


def test_batched_datasets_are_split_into_examples():
    # A batched dataset is accepted too: its batches are re-cut to batch_size.
    names = ["a", "b", "c"]
    labels = np.array([0, 1, 2, 2, 1, 0, 0])
    model = class_model(np.eye(3)[labels], np.eye(3), names)
    dataset = tf.data.Dataset.from_tensor_slices(
        {"images": make_images(7), "labels": labels}
    ).batch(3)
    results = evaluation.evaluate_zero_shot(
        model, dataset, None, names, "none", batch_size=2, verbose=0
    )
    assert results["accuracy"] == 1.0 and results["num_examples"] == 7
    assert model.image_calls == [2, 2, 2, 1]
    pairs = tf.data.Dataset.from_tensor_slices((make_images(4), captions(4))).batch(3)
    retrieval = evaluation.evaluate_retrieval(
        caption_model(np.eye(4), np.eye(4)), pairs, ks=(1,), verbose=0
    )
    assert retrieval["text_to_image_recall@1"] == 1.0


def test_classify_ranks_classes():
    names = ["cat", "dog", "bird"]
    table = np.array([[0.1, 0.9, 0.3], [0.8, 0.0, 0.5]])
    model = class_model(table, np.eye(3), names)
    ranked = evaluation.classify(
        model, make_images(2), names, "simple", top_k=2, logit_scale=100
    )
    assert [[label for label, _ in row] for row in ranked] == [
        ["dog", "bird"],
        ["cat", "bird"],
    ]
    cos = table[0] / np.linalg.norm(table[0])
    probs = np.exp(100 * cos) / np.exp(100 * cos).sum()
    assert ranked[0][0][1] == pytest.approx(probs[1], rel=1e-5)
    # Without a learned temperature (and no logit_scale): the cosine itself.
    assert evaluation.score_rule(model).kind == "cosine"
    raw = evaluation.classify(model, make_images(2), names, "simple", top_k=1)
    assert raw[0][0][1] == pytest.approx(cos[1], rel=1e-5)
    single = evaluation.classify(
        model, make_image(1), names, "simple", top_k=10, logit_scale=100
    )
    assert [label for label, _ in single[0]] == ["cat", "bird", "dog"]
    assert sum(p for _, p in single[0]) == pytest.approx(1.0, rel=1e-5)


def test_zero_shot_bad_inputs():
    names = ["a", "b"]
    model = class_model(np.eye(2), np.eye(2), names)
    images = make_images(2)
    with pytest.raises(ValueError, match="`labels` has 3 entries but there are 2"):
        evaluation.evaluate_zero_shot(model, images, [0, 1, 1], names, verbose=0)
    with pytest.raises(ValueError, match="at least one class name"):
        evaluation.evaluate_zero_shot(model, images, [0, 1], [], verbose=0)
    with pytest.raises(ValueError, match=r"in \[0, 2\).*Example 1 has label 2"):
        evaluation.evaluate_zero_shot(model, images, [0, 2], names, verbose=0)
    with pytest.raises(ValueError, match='exactly one "{}"'):
        evaluation.zero_shot_classifier(model, names, ["a photo"])
    with pytest.raises(ValueError, match="`labels` is required"):
        evaluation.evaluate_zero_shot(model, images, None, names, verbose=0)
    with pytest.raises(ValueError, match=r"batch \(N, H, W, C\)"):
        evaluation.evaluate_zero_shot(model, images[:, :, :, 0], [0, 1], names)
    with pytest.raises(TypeError, match="has no callable `encode_images`"):
        evaluation.evaluate_zero_shot(object(), images, [0, 1], names)
    dataset = tf.data.Dataset.from_tensor_slices({"images": images, "labels": [0, 1]})
    with pytest.raises(ValueError, match="pass `labels=None`"):
        evaluation.evaluate_zero_shot(model, dataset, [0, 1], names, verbose=0)
    unlabelled = tf.data.Dataset.from_tensor_slices({"images": images})
    with pytest.raises(ValueError, match='must have a "labels" key'):
        evaluation.evaluate_zero_shot(model, unlabelled, None, names, verbose=0)


# === Retrieval ===


def test_retrieval_perfect_embeddings():
    n = 12
    table = np.eye(n) * np.linspace(1, 3, n)[:, None]
    results = evaluation.evaluate_retrieval(
        caption_model(table, np.eye(n)), make_images(n), captions(n), verbose=0
    )
    for name in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            assert results[f"{name}_recall@{k}"] == 1.0
        assert results[f"{name}_mean_rank"] == 1.0
        assert results[f"{name}_median_rank"] == 1.0
    assert (results["num_images"], results["num_texts"]) == (n, n)


def test_retrieval_shifted_scores_give_exact_rank():
    # Image i scores text i+1 at 1.0, text i+2 at 0.9, its own text i at 0.7:
    # the correct item is third in both directions.
    n = 10
    table = np.zeros((n, n))
    for i in range(n):
        table[i, (i + 1) % n], table[i, (i + 2) % n], table[i, i] = 1.0, 0.9, 0.7
    results = evaluation.evaluate_retrieval(
        caption_model(table, np.eye(n)),
        make_images(n),
        captions(n),
        ks=(1, 2, 3),
        return_rankings=True,
        verbose=0,
    )
    for name in ("image_to_text", "text_to_image"):
        assert results[f"{name}_recall@1"] == 0.0
        assert results[f"{name}_recall@2"] == 0.0
        assert results[f"{name}_recall@3"] == 1.0
        assert results[f"{name}_mean_rank"] == 3.0
    np.testing.assert_array_equal(
        results["image_to_text_rankings"][4], [5, 6, 4]
    )  # text i+1, i+2, i
    np.testing.assert_array_equal(results["text_to_image_rankings"][4], [3, 2, 4])


def test_retrieval_hand_computed_3x3():
    # scores[i, j] = image i . text j (texts are one-hot).
    scores = np.array([[0.9, 0.5, 0.1], [0.95, 0.2, 0.3], [0.1, 0.4, 0.7]])
    results = evaluation.evaluate_retrieval(
        caption_model(scores, np.eye(3)),
        make_images(3),
        captions(3),
        ks=(1, 2),
        return_rankings=True,
        verbose=0,
    )
    assert results["image_to_text_recall@1"] == pytest.approx(2 / 3)
    assert results["image_to_text_recall@2"] == pytest.approx(2 / 3)
    assert results["image_to_text_mean_rank"] == pytest.approx(5 / 3)
    assert results["image_to_text_median_rank"] == 1.0
    assert results["text_to_image_recall@1"] == pytest.approx(1 / 3)
    assert results["text_to_image_recall@2"] == pytest.approx(2 / 3)
    assert results["text_to_image_mean_rank"] == pytest.approx(2.0)
    assert results["text_to_image_median_rank"] == 2.0
    np.testing.assert_array_equal(results["image_to_text_ranks"], [1, 3, 1])
    np.testing.assert_array_equal(results["text_to_image_ranks"], [2, 3, 1])
    np.testing.assert_array_equal(
        results["image_to_text_rankings"], [[0, 1], [0, 2], [2, 1]]
    )
    np.testing.assert_array_equal(
        results["text_to_image_rankings"], [[1, 0], [0, 2], [2, 1]]
    )
    assert results["texts"] == captions(3)


def test_retrieval_random_embeddings_near_chance():
    rng = np.random.default_rng(3)
    n = 1000
    results = evaluation.evaluate_retrieval(
        caption_model(rng.normal(size=(n, 32)), rng.normal(size=(n, 32))),
        make_images(n),
        captions(n),
        ks=(10, 100, 500),
        batch_size=256,
        chunk_size=300,
        verbose=0,
    )
    for name in ("image_to_text", "text_to_image"):
        # recall@k ~ k / N; 4 binomial standard deviations.
        for k in (10, 100, 500):
            p = k / n
            tolerance = 4 * np.sqrt(p * (1 - p) / n)
            assert abs(results[f"{name}_recall@{k}"] - p) < tolerance
        # Mean of N uniform ranks on 1..N: (N + 1) / 2, std ~ N / sqrt(12 N).
        assert abs(results[f"{name}_mean_rank"] - (n + 1) / 2) < 4 * n / np.sqrt(12 * n)


def test_retrieval_ties_go_to_lower_index():
    # All scores tie: query i's correct item is ranked i + 1, recall@k = k / N.
    n = 8
    results = evaluation.evaluate_retrieval(
        caption_model(np.ones((n, 3)), np.ones((n, 3))),
        make_images(n),
        captions(n),
        ks=(1, 4),
        verbose=0,
    )
    assert results["image_to_text_recall@1"] == pytest.approx(1 / 8)
    assert results["text_to_image_recall@4"] == pytest.approx(4 / 8)
    assert results["image_to_text_mean_rank"] == pytest.approx(4.5)


def test_retrieval_several_captions_per_image():
    # scores[i, j] = image i . text j; texts 0, 1 describe image 0, texts 2, 3
    # image 1, text 4 (id 7) an image that is only a distractor.
    scores = np.array(
        [
            [0.1, 0.8, 0.9, 0.2, 0.0],
            [0.3, 0.1, 0.5, 0.6, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    model = caption_model(scores, np.eye(5))
    results = evaluation.evaluate_retrieval(
        model,
        make_images(3),
        captions(4),
        ks=(1, 2),
        image_ids=[0, 1, 7],
        text_ids=[0, 0, 1, 1],
        verbose=0,
    )
    # Image 0: its best caption (text 1, 0.8) is behind text 2 -> rank 2.
    # Image 1: text 3 (0.6) is first -> rank 1. Image 7 has no caption.
    assert results["image_to_text_recall@1"] == 0.5
    assert results["image_to_text_recall@2"] == 1.0
    assert results["image_to_text_mean_rank"] == 1.5
    # Text 0: [0.1, 0.3, 0.0] -> 2; text 1 -> 1; text 2: [0.9, 0.5, 0] -> 2;
    # text 3 -> 1.
    assert results["text_to_image_recall@1"] == 0.5
    assert results["text_to_image_mean_rank"] == 1.5
    assert results["num_images"] == 3
    assert results["num_image_queries"] == 2

    # The same as (image, caption) pairs repeating each image, with string ids:
    # each distinct image is embedded once.
    pairs = [(make_image(i), f"caption {j}") for j, i in enumerate([0, 0, 1, 1])]
    model = caption_model(scores, np.eye(5))
    paired = evaluation.evaluate_retrieval(
        model,
        pairs,
        ks=(1, 2),
        image_ids=["a", "a", "b", "b"],
        return_rankings=True,
        verbose=0,
    )
    assert sum(model.image_calls) == 2
    assert paired["image_to_text_recall@1"] == 0.5
    assert paired["text_to_image_recall@1"] == 0.5
    np.testing.assert_array_equal(paired["image_query_indices"], [0, 2])
    # Rankings point at input positions: text 2 ranks image "a" (position 0) first.
    assert paired["text_to_image_rankings"][2, 0] == 0

    with pytest.raises(ValueError, match="text 1 has id 5"):
        evaluation.evaluate_retrieval(
            model, make_images(2), captions(2), text_ids=[0, 5], verbose=0
        )


def test_retrieval_chunked_equals_unchunked():
    rng = np.random.default_rng(4)
    n = 53
    table, texts = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    outs = [
        evaluation.evaluate_retrieval(
            caption_model(table, texts),
            make_images(n),
            captions(n),
            chunk_size=chunk,
            return_rankings=True,
            verbose=0,
        )
        for chunk in (7, 1, 10_000)
    ]
    for out in outs[1:]:
        for key, value in outs[0].items():
            np.testing.assert_array_equal(out[key], value, err_msg=key)


def test_retrieval_streams_datasets_like_arrays():
    rng = np.random.default_rng(5)
    n = 17
    table, text_table = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    images = make_images(n, variable=True)
    texts = captions(n)
    reference = evaluation.evaluate_retrieval(
        caption_model(table, text_table),
        images,
        texts,
        batch_size=4,
        return_rankings=True,
        verbose=0,
    )
    dataset = tf.data.Dataset.from_generator(
        lambda: (
            {"images": im, "texts": t} for im, t in zip(images, texts, strict=True)
        ),
        output_signature={
            "images": tf.TensorSpec((None, None, 1), tf.uint8),
            "texts": tf.TensorSpec((), tf.string),
        },
    )
    model = caption_model(table, text_table)
    streamed = evaluation.evaluate_retrieval(
        model, dataset, batch_size=4, return_rankings=True, verbose=1
    )
    assert max(model.image_calls) == 4
    for key, value in reference.items():
        np.testing.assert_array_equal(streamed[key], value, err_msg=key)
    pairs = list(zip(images, texts, strict=True))
    from_pairs = evaluation.evaluate_retrieval(
        caption_model(table, text_table), pairs, return_rankings=True, verbose=0
    )
    for key, value in reference.items():
        np.testing.assert_array_equal(from_pairs[key], value, err_msg=key)


def test_retrieval_normalize_option():
    # Text 1 is long: it wins on dot product, text 0 on cosine. Two distinct
    # images share one embedding; image 0's caption is text 0.
    model = caption_model(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [3.0, 3.0]]))
    images = np.stack([make_image(0), make_image(0)])
    texts = ["caption 0", "caption 1"]
    ranks = {
        normalize: evaluation.evaluate_retrieval(
            model,
            images,
            texts,
            ks=(1,),
            image_ids=[0, 1],
            normalize=normalize,
            return_rankings=True,
            verbose=0,
        )["image_to_text_ranks"].tolist()
        for normalize in (False, True)
    }
    assert ranks == {False: [2, 1], True: [1, 2]}


def test_retrieval_bad_inputs():
    model = caption_model(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="3 images and 2 texts"):
        evaluation.evaluate_retrieval(model, make_images(3), captions(2), verbose=0)
    with pytest.raises(ValueError, match="`texts` is required"):
        evaluation.evaluate_retrieval(model, make_images(3), verbose=0)
    with pytest.raises(ValueError, match="`ks` must be ints >= 1"):
        evaluation.evaluate_retrieval(model, make_images(3), captions(3), ks=(0,))
    with pytest.raises(ValueError, match="`image_ids` has 2 entries"):
        evaluation.evaluate_retrieval(
            model, make_images(3), captions(3), image_ids=[0, 1], verbose=0
        )
    with pytest.raises(ValueError, match="`chunk_size` must be an int >= 1"):
        evaluation.evaluate_retrieval(
            model, make_images(3), captions(3), chunk_size=0, verbose=0
        )
    pairs = [(make_image(0), "caption 0")]
    with pytest.raises(ValueError, match="`texts` must be None"):
        evaluation.evaluate_retrieval(model, pairs, captions(1), verbose=0)
    nan_model = caption_model(np.full((3, 3), np.nan), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        evaluation.evaluate_retrieval(nan_model, make_images(3), captions(3))


# === Linear probe ===


def blobs(n, num_classes, dim, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(num_classes, dim)) * 3
    labels = np.arange(n) % num_classes
    return centres[labels] + spread * rng.normal(size=(n, dim)), labels


def test_linear_probe_separable_features():
    train_x, train_y = blobs(120, 4, 8, seed=1)
    test_x, test_y = blobs(40, 4, 8, seed=2)
    model = FakeModel(np.concatenate([train_x, test_x]), str)
    images = make_images(160)
    Cs = (0.01, 1.0, 100.0)
    results = evaluation.linear_probe(
        model, images[:120], train_y, images[120:], test_y, Cs=Cs
    )
    assert results["accuracy"] >= 0.95
    assert results["best_C"] in Cs
    assert sorted(results["val_accuracy"]) == sorted(Cs)
    assert (
        max(results["val_accuracy"].values())
        == results["val_accuracy"][results["best_C"]]
    )
    assert (results["num_train"], results["num_val"], results["num_test"]) == (
        96,
        24,
        40,
    )

    dataset = tf.data.Dataset.from_tensor_slices(
        {"images": images[120:], "labels": test_y}
    )
    streamed = evaluation.linear_probe(
        model, images[:120], train_y, dataset, None, Cs=Cs, batch_size=16
    )
    assert streamed["accuracy"] == results["accuracy"]
    assert streamed["val_accuracy"] == results["val_accuracy"]

    given_val = evaluation.linear_probe(
        model,
        images[:80],
        train_y[:80],
        images[120:],
        test_y,
        val_images=images[80:120],
        val_labels=train_y[80:120],
        Cs=Cs,
    )
    assert (given_val["num_train"], given_val["num_val"]) == (80, 40)
    assert given_val["accuracy"] >= 0.95


def test_linear_probe_chooses_regularisation_on_validation():
    # Noisy 40-d features, 48 fitting examples: validation accuracy depends on
    # C; the choice is the best score, ties going to the smaller C.
    train_x, train_y = blobs(60, 3, 40, seed=3, spread=10.0)
    test_x, test_y = blobs(150, 3, 40, seed=4, spread=10.0)
    model = FakeModel(np.concatenate([train_x, test_x]), str)
    images = make_images(210)
    results = evaluation.linear_probe(
        model, images[:60], train_y, images[60:], test_y, seed=0
    )
    scores = results["val_accuracy"]
    assert len(set(scores.values())) > 1
    best = max(scores.values())
    assert results["best_C"] == min(c for c, acc in scores.items() if acc == best)
    assert results["accuracy"] > 0.5  # chance is 1/3


def test_stratified_split_is_deterministic_and_covers_every_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, val = stratified_split(labels, 0.2, seed=0)
    again = stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]


def test_linear_probe_bad_inputs():
    model = FakeModel(np.eye(4), str)
    images = make_images(4)
    with pytest.raises(ValueError, match="`train_labels` has 3 entries"):
        evaluation.linear_probe(model, images, [0, 1, 0], images, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="`Cs` must be"):
        evaluation.linear_probe(
            model, images, [0, 1, 0, 1], images, [0, 1, 0, 1], Cs=[-1]
        )
    with pytest.raises(ValueError, match="`val_fraction` must be in"):
        evaluation.linear_probe(
            model, images, [0, 1, 0, 1], images, [0, 1, 0, 1], val_fraction=1.5
        )
    with pytest.raises(ValueError, match="given together"):
        evaluation.linear_probe(
            model, images, [0, 1, 0, 1], images, [0, 1, 0, 1], val_images=images
        )


# === Figures ===


def assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 2000


def test_plots_write_pngs(tmp_path):
    images, caps, _ = keras_towers.datasets.make_shapes(6, seed=1)
    names = keras_towers.datasets.shape_class_names()
    cm = np.random.default_rng(0).integers(0, 20, (len(names), len(names)))
    assert_png(
        evaluation.plot_confusion_matrix(cm, names, tmp_path / "cm.png", "shapes")
    )
    history = {
        "loss": [3.0, 2.0, 1.5],
        "val_loss": [3.2, 2.4, 2.0],
        "i2t_accuracy": [0.1, 0.3, 0.5],
        "val_i2t_accuracy": [0.1, 0.2, 0.4],
        "logit_scale": [14.3, 15.0, 16.1],
    }
    assert_png(evaluation.plot_history(history, tmp_path / "sub" / "history.png"))
    ranked = [caps[i:] + caps[:i] for i in range(3)]
    assert_png(
        evaluation.plot_retrieval_grid(
            images[:3],
            [r[:5] for r in ranked],
            tmp_path / "i2t.png",
            correct=[caps[0], 4, None],
        )
    )
    assert_png(
        evaluation.plot_text_to_image_grid(
            caps[:2],
            [images[:5], images[1:6]],
            tmp_path / "t2i.png",
            correct=[0, [2]],
        )
    )
    with pytest.raises(ValueError, match="`class_names` has 2 names"):
        evaluation.plot_confusion_matrix(cm, names[:2], tmp_path / "x.png")


# === Integration with a real model ===


def test_clip_tiny_integration():
    # Batches of 8 images throughout, so each backend traces few shapes.
    model = keras_towers.CLIP.tiny()
    images, caps, labels = keras_towers.datasets.make_shapes(16, seed=3)
    names = keras_towers.datasets.shape_class_names()
    # "none": `tiny()` reads 14 bytes of text, and "a photo of a red circle."
    # would be "a photo of a r" for every red class (tests/test_truncation.py).
    weights = evaluation.zero_shot_classifier(model, names, "none")
    assert weights.shape == (12, model.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(weights, axis=1), 1.0, rtol=1e-5)
    zs = evaluation.evaluate_zero_shot(
        model, images, labels, names, batch_size=8, classifier=weights, verbose=0
    )
    assert 0.0 <= zs["accuracy"] <= zs["top5_accuracy"] <= 1.0
    assert zs["confusion_matrix"].shape == (12, 12)
    assert zs["confusion_matrix"].sum() == 16

    rt = evaluation.evaluate_retrieval(
        model,
        list(images),
        caps,
        ks=(1, 5),
        batch_size=8,
        return_rankings=True,
        verbose=0,
    )
    assert rt["image_to_text_rankings"].shape == (16, 5)
    assert 1 <= rt["text_to_image_mean_rank"] <= 16

    ranked = evaluation.classify(
        model, images[:8], names, top_k=3, batch_size=8, classifier=weights
    )
    assert len(ranked) == 8 and all(len(row) == 3 for row in ranked)
    assert all(name in names for name, _ in ranked[0])


def test_classify_uses_the_models_own_temperature():
    import keras

    import keras_towers

    images, _, _ = keras_towers.datasets.make_shapes(2, seed=3)
    names = ["red circle", "blue square", "green triangle"]
    for model in (keras_towers.CLIP.tiny(), keras_towers.SigLIP.tiny()):
        model.logit_scale.assign(np.log(7.0))
        rule = evaluation.score_rule(model)
        text = model.encode_texts(names)
        cos = model.encode_images(images) @ text.T
        scores = evaluation.classify(model, images, names, "none", top_k=3)
        if model.logit_bias is None:
            assert rule.kind == "softmax" and rule.scale == pytest.approx(7.0)
            expected = np.exp(7 * cos) / np.exp(7 * cos).sum(1, keepdims=True)
        else:
            bias = float(keras.ops.convert_to_numpy(model.logit_bias))
            assert rule.kind == "sigmoid" and "SigLIP" in rule.description
            expected = 1 / (1 + np.exp(-(7 * cos + bias)))
        for row, probs in zip(scores, expected, strict=True):
            got = dict(row)
            for name, p in zip(names, probs, strict=True):
                assert got[name] == pytest.approx(p, rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match="logit_scale"):
        evaluation.score_rule(model, logit_scale=0)
