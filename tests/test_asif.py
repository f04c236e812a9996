"""ASIF: relative-representation maths against NumPy, anchors, presets, towers."""

import json
import os
import runpy

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

import keras_towers
from keras_towers import relative
from keras_towers.models.asif import ASIF
from keras_towers.models.asif import load_tower_source
from keras_towers.models.asif import register_tower_source

# === NumPy reference (written from the paper's definition, no chunking) ===


def reference_representation(queries, anchors, k, p):
    """Dense (Q, N): cosine to each anchor, top-k, clip at 0, ^p, L2-normalise."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    sims = q.astype("float64") @ a.astype("float64").T
    k = min(k, a.shape[0])
    out = np.zeros_like(sims)
    for i, row in enumerate(sims):
        top = np.argsort(-row)[:k]
        out[i, top] = np.maximum(row[top], 0.0) ** p
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


def random_features(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype("float32")


def features_model(n=50, k=8, p=3.0, seed=0, **kwargs):
    model = ASIF(k=k, p=p, **kwargs)
    model.add_anchors(
        image_features=random_features(n, 12, seed),
        text_features=random_features(n, 10, seed + 1),
        captions=[f"caption {i}" for i in range(n)],
        image_refs=[f"img/{i}.png" for i in range(n)],
    )
    return model


# === Pure maths ===


@pytest.mark.parametrize("k,p", [(1, 1.0), (5, 8.0), (17, 2.5), (40, 8.0)])
def test_relative_representation_matches_numpy_reference(k, p):
    anchors = relative.l2_normalize_rows(random_features(40, 16, 0))
    queries = random_features(9, 16, 1)
    expected = reference_representation(queries, anchors, k, p)
    reps = relative.relative_representation(queries, anchors, k, p)
    assert sp.issparse(reps) and reps.shape == (9, 40)
    assert np.all(np.diff(reps.indptr) <= k)
    np.testing.assert_allclose(reps.toarray(), expected, atol=2e-6)
    # Sparse dot products equal the dense formula.
    np.testing.assert_allclose(
        relative.similarity(reps, reps[:4], chunk_size=3),
        expected @ expected[:4].T,
        atol=2e-6,
    )


def test_chunked_top_k_equals_unchunked_and_bounds_blocks():
    anchors = relative.l2_normalize_rows(random_features(103, 8, 2))
    queries = random_features(21, 8, 3)
    whole = relative.relative_representation(queries, anchors, 10, 4.0)

    class Recording:
        """Array-like anchors that record how many rows each read takes."""

        def __init__(self, x):
            self.x, self.shape, self.ndim, self.reads = x, x.shape, 2, []

        def __getitem__(self, key):
            part = self.x[key]
            self.reads.append(len(part))
            return part

    recording = Recording(anchors)
    chunked = relative.relative_representation(
        queries, recording, 10, 4.0, anchor_chunk_size=7, block_elements=35
    )
    # Same maths; BLAS may round differently for other block shapes.
    np.testing.assert_allclose(chunked.toarray(), whole.toarray(), atol=1e-6)
    assert max(recording.reads) == 7
    # 35 / 7 = 5 queries per block: 5 query chunks x 15 anchor chunks.
    assert len(recording.reads) == 5 * 15


def test_k_larger_than_anchors_keeps_all_and_equals_dense_formula():
    anchors = relative.l2_normalize_rows(random_features(12, 6, 4))
    queries = random_features(5, 6, 5)
    reps = relative.relative_representation(queries, anchors, 1000, 8.0)
    sims = relative.l2_normalize_rows(queries) @ anchors.T
    dense = np.maximum(sims, 0) ** 8
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(reps.toarray(), dense, atol=1e-6)
    # k == N is the same as k > N.
    np.testing.assert_allclose(
        relative.relative_representation(queries, anchors, 12, 8.0).toarray(),
        reps.toarray(),
    )


def test_ties_at_the_kth_value_keep_the_right_values():
    base = relative.l2_normalize_rows(random_features(6, 5, 6))
    anchors = np.concatenate([base, base, base])  # every similarity tied 3 times
    queries = random_features(4, 5, 7)
    sims = queries @ anchors.T
    for k in (2, 4):  # the k-th value is tied with anchors left out
        values, indices = relative.top_k_similarities(
            queries, anchors, k, anchor_chunk_size=5
        )
        # Which tied anchor is kept may vary; the kept values may not.
        np.testing.assert_allclose(
            values, np.sort(sims, axis=1)[:, ::-1][:, :k], rtol=1e-6
        )
        assert np.all(np.diff(values, axis=1) <= 0)
        assert all(len(set(row)) == k for row in indices.tolist())
        np.testing.assert_allclose(
            np.take_along_axis(sims, indices, 1), values, rtol=1e-6
        )


def test_sharpen_handles_tiny_and_negative_similarities():
    values = np.array([[1e-3, 5e-4, 2e-4], [-0.2, -0.3, -0.5], [0.4, -0.1, 0.2]])
    out = relative.sharpen(values, 8.0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out[0]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)  # nothing similar: zero vector
    assert out[2, 1] == 0.0  # negatives clipped, even for even powers
    expected = np.array([0.4, 0.0, 0.2]) ** 8
    np.testing.assert_allclose(out[2], expected / np.linalg.norm(expected), rtol=1e-5)


def test_group_mean_and_group_max_match_numpy():
    dense = np.abs(random_features(6, 9, 8)) * (random_features(6, 9, 9) > 0.5)
    dense = relative.l2_normalize_rows(dense)
    mean = relative.group_mean(sp.csr_array(dense), 3).toarray()
    expected = dense.reshape(2, 3, 9).mean(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    scores = random_features(4, 6, 10)
    np.testing.assert_array_equal(
        relative.group_max(scores, 3), scores.reshape(4, 2, 3).max(-1)
    )
    with pytest.raises(ValueError, match="groups of 4"):
        relative.group_max(scores, 4)


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "8"])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        ASIF(k=k)
    with pytest.raises(ValueError, match="`k`"):
        relative.top_k_similarities(np.ones((1, 2)), np.ones((3, 2)), k)


@pytest.mark.parametrize("p", [0, -1.0, float("nan"), float("inf")])
def test_bad_power_is_rejected(p):
    with pytest.raises(ValueError, match="`power` must be a positive"):
        ASIF(p=p)


def test_width_mismatch_and_empty_anchors_are_rejected():
    with pytest.raises(ValueError, match="same width"):
        relative.top_k_similarities(np.ones((1, 3)), np.ones((4, 2)), 2)
    with pytest.raises(ValueError, match="no anchors"):
        relative.top_k_similarities(np.ones((1, 3)), np.ones((0, 3)), 2)
    with pytest.raises(ValueError, match="same anchors"):
        relative.similarity(np.ones((2, 3)), np.ones((2, 4)))


# === ASIF on features ===


def test_asif_representations_match_reference_dense_and_sparse():
    model = features_model(n=60, k=9, p=8.0)
    queries = random_features(7, 12, 20)
    expected = reference_representation(
        queries, model.anchor_image_features, model.k, model.p
    )
    dense = model.represent(queries, "image")
    sparse = model.represent(queries, "image", sparse=True)
    assert dense.dtype == np.float32 and dense.shape == (7, 60)
    np.testing.assert_allclose(dense, expected, atol=2e-6)
    np.testing.assert_allclose(sparse.toarray(), dense)
    texts = model.represent(random_features(3, 10, 21), "text", sparse=True)
    np.testing.assert_allclose(
        model.similarity(sparse, texts), dense @ texts.toarray().T, atol=1e-6
    )
    np.testing.assert_allclose(
        model.similarity(dense, texts), dense @ texts.T.toarray()
    )


def test_float16_anchors_are_close_to_float32():
    full = features_model(n=40, k=40, p=2.0)
    half = features_model(n=40, k=40, p=2.0, anchor_dtype="float16")
    assert half.anchor_image_features.dtype == np.float16
    queries = random_features(5, 12, 22)
    np.testing.assert_allclose(
        half.represent(queries, "image"), full.represent(queries, "image"), atol=3e-3
    )


def test_add_and_remove_anchors_equal_building_from_scratch():
    image = random_features(90, 12, 30)
    text = random_features(90, 10, 31)
    captions = [f"c{i}" for i in range(90)]
    refs = [f"r{i}" for i in range(90)]
    live = ASIF(k=6, p=8.0)
    first = live.add_anchors(
        image_features=image[:50],
        text_features=text[:50],
        captions=captions[:50],
        image_refs=refs[:50],
    )
    second = live.add_anchors(
        image_features=image[50:],
        text_features=text[50:],
        captions=captions[50:],
        image_refs=refs[50:],
    )
    np.testing.assert_array_equal(np.concatenate([first, second]), np.arange(90))
    removed = live.remove_anchors(ids=[3, 60, 61])
    np.testing.assert_array_equal(removed, [3, 60, 61])
    live.remove_anchors([0, 1])  # positions: the anchors with ids 0 and 1
    live.remove_anchors(where=lambda a: a.caption.endswith("7"))
    keep = [
        i for i in range(90) if i not in (0, 1, 3, 60, 61) and not str(i).endswith("7")
    ]
    assert live.num_anchors == len(keep)
    np.testing.assert_array_equal(live.anchor_ids, keep)
    assert live.anchor_captions == [captions[i] for i in keep]
    assert live.anchor_image_refs == [refs[i] for i in keep]

    scratch = ASIF(k=6, p=8.0)
    scratch.add_anchors(image_features=image[keep], text_features=text[keep])
    queries = random_features(8, 12, 32)
    np.testing.assert_allclose(
        live.represent(queries, "image"), scratch.represent(queries, "image")
    )
    prompts = random_features(4, 10, 33)
    np.testing.assert_allclose(
        live.represent(prompts, "text"), scratch.represent(prompts, "text")
    )
    # New ids never reuse removed ones.
    assert live.add_anchors(
        image_features=image[:1], text_features=text[:1]
    ).tolist() == [90]


def test_explain_contributions_sum_to_the_similarity():
    model = features_model(n=80, k=20, p=4.0)
    image = random_features(1, 12, 40)[0]
    text = random_features(1, 10, 41)[0]
    score = model.similarity(
        model.represent(image[None], "image"), model.represent(text[None], "text")
    )[0, 0]
    everything = model.explain(image_features=image, text_features=text, top_n=None)
    assert everything, "random anchors should share some of their top-20"
    total = sum(item["contribution"] for item in everything)
    np.testing.assert_allclose(total, score, rtol=1e-5)
    contributions = [item["contribution"] for item in everything]
    assert contributions == sorted(contributions, reverse=True)
    top = model.explain(image_features=image, text_features=text, top_n=3)
    assert top == everything[:3]
    first = top[0]
    assert first["caption"] == f"caption {first['index']}"
    assert first["image_ref"] == f"img/{first['index']}.png"
    np.testing.assert_allclose(
        first["contribution"], first["image_weight"] * first["text_weight"]
    )


def test_features_only_preset_round_trip(tmp_path):
    model = features_model(n=30, k=5, p=8.0, anchor_dtype="float16")
    model.remove_anchors(ids=[29])  # next id stays 30 after loading
    model.save_to_preset(str(tmp_path / "asif"), description="test")
    loaded = ASIF.from_preset(str(tmp_path / "asif"))
    assert (loaded.k, loaded.p, loaded.anchor_dtype) == (5, 8.0, "float16")
    np.testing.assert_array_equal(
        loaded.anchor_image_features, model.anchor_image_features
    )
    np.testing.assert_array_equal(
        loaded.anchor_text_features, model.anchor_text_features
    )
    np.testing.assert_array_equal(loaded.anchor_ids, model.anchor_ids)
    assert loaded.anchor_captions == model.anchor_captions
    assert loaded.anchor_image_refs == model.anchor_image_refs
    queries = random_features(4, 12, 50)
    np.testing.assert_array_equal(
        loaded.represent(queries, "image"), model.represent(queries, "image")
    )
    new = loaded.add_anchors(
        image_features=random_features(1, 12, 51),
        text_features=random_features(1, 10, 52),
    )
    assert new.tolist() == [30]
    meta = json.loads((tmp_path / "asif" / "metadata.json").read_text())
    assert meta["class_name"] == "ASIF" and meta["num_anchors"] == 29
    # Overrides at load time.
    assert ASIF.from_preset(str(tmp_path / "asif"), k=3).k == 3


def test_corrupt_preset_is_rejected(tmp_path):
    model = features_model(n=10)
    model.save_to_preset(str(tmp_path / "asif"))
    anchors = tmp_path / "asif" / "anchors.safetensors"
    data = bytearray(anchors.read_bytes())
    data[-1] ^= 0xFF
    anchors.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        ASIF.from_preset(str(tmp_path / "asif"))
    with pytest.raises(ValueError, match="not a ASIF|not a CLIP"):
        keras_towers.CLIP.from_preset(str(tmp_path / "asif"))


def test_bad_anchor_inputs_raise_clear_errors():
    model = features_model(n=10)
    image, text = random_features(3, 12, 60), random_features(3, 10, 61)
    with pytest.raises(ValueError, match="one row per anchor pair"):
        model.add_anchors(image_features=image, text_features=text[:2])
    with pytest.raises(ValueError, match="width 12"):
        model.add_anchors(image_features=text, text_features=text)
    with pytest.raises(ValueError, match="expected 3, received 2"):
        model.add_anchors(image_features=image, text_features=text, captions=["a", "b"])
    with pytest.raises(ValueError, match="already in use"):
        model.add_anchors(image_features=image, text_features=text, ids=[1, 50, 51])
    with pytest.raises(ValueError, match="unique"):
        model.add_anchors(image_features=image, text_features=text, ids=[50, 50, 51])
    with pytest.raises(ValueError, match="NaN"):
        model.add_anchors(image_features=image * np.nan, text_features=text)
    with pytest.raises(ValueError, match="exactly one"):
        model.add_anchors()
    with pytest.raises(ValueError, match="Give both"):
        model.add_anchors(image_features=image)
    with pytest.raises(ValueError, match=r"Unknown anchor ids: \[99\]"):
        model.remove_anchors(ids=[2, 99])
    with pytest.raises(IndexError, match="out of range"):
        model.remove_anchors([10])
    with pytest.raises(ValueError, match="exactly one"):
        model.remove_anchors([1], ids=[1])
    assert model.num_anchors == 10  # failed calls changed nothing
    with pytest.raises(ValueError, match="no anchors yet"):
        ASIF().represent(image, "image")
    with pytest.raises(ValueError, match="no image tower"):
        model.encode_images(np.zeros((1, 8, 8, 3), "uint8"))
    with pytest.raises(NotImplementedError, match="add_anchors"):
        model.fit(None)
    with pytest.raises(ValueError, match="anchor_dtype"):
        ASIF(anchor_dtype="int8")


# === Raw inputs through tiny random towers (every backend) ===
# Encoder batches of 4 images (and 1 for `explain`) keep the number of
# distinct shapes, hence JAX/XLA compilations, small.

CAPTIONS = ["a red circle", "a blue square", "a green star", "two dots", "a cross"]


def raw_pairs(n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = [
        rng.integers(0, 256, (30 + 3 * i, 36 - 2 * i, 3), dtype="uint8")
        for i in range(n)
    ]
    return images, [f"{CAPTIONS[i % 5]} {i}" for i in range(n)]


@pytest.fixture(scope="module")
def tiny_asif():
    model = ASIF.tiny(k=4, p=8.0)
    images, texts = raw_pairs()
    model.add_anchors(
        images=images,
        texts=texts,
        image_refs=[f"im{i}" for i in range(8)],
        batch_size=4,
    )
    return model


def test_encode_raw_inputs_with_tiny_towers(tiny_asif):
    model = tiny_asif
    assert not model.image_tower.trainable and not model.text_tower.trainable
    assert model.anchor_captions[0] == "a red circle 0"
    images, _ = raw_pairs(4, seed=1)
    reps = model.encode_images(images)
    assert reps.shape == (4, 8) and reps.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reps, axis=1), 1.0, rtol=1e-5)
    assert np.all((reps > 0).sum(axis=1) <= 4)
    features = model.encode_image_features(images)
    np.testing.assert_allclose(reps, model.represent(features, "image"), atol=1e-6)
    texts = model.encode_texts(["a red circle", "two dots", "a", "b"], sparse=True)
    assert sp.issparse(texts) and texts.shape == (4, 8)
    np.testing.assert_allclose(
        model.similarity(reps, texts), reps @ texts.toarray().T, atol=1e-6
    )
    # One image (H, W, C) and an empty list.
    assert model.encode_images(images[0]).shape == (1, 8)
    assert model.encode_texts([]).shape == (0, 8)
    # Anchors reproduce themselves: an anchor image's top entry is itself.
    anchor_images, _ = raw_pairs()
    self_reps = model.encode_images(anchor_images[:4])
    np.testing.assert_array_equal(self_reps.argmax(axis=1), np.arange(4))


def test_zero_shot_best_single_and_average(tiny_asif):
    model = tiny_asif
    classes = ["circle", "square", "star", "dots"]
    templates = ["a {}", "a drawing of a {}", lambda c: f"{c}!"]
    images, _ = raw_pairs(4, seed=2)
    image_reps = model.encode_images(images)
    prompts = [t(c) if callable(t) else t.format(c) for c in classes for t in templates]
    prompt_reps = model.encode_texts(prompts, batch_size=4)
    sims = image_reps @ prompt_reps.T
    best = model.zero_shot_scores(
        images, classes, templates, mode="best_single", batch_size=4
    )
    np.testing.assert_allclose(best, sims.reshape(4, 4, 3).max(-1), atol=1e-6)
    mean = prompt_reps.reshape(4, 3, -1).mean(1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    average = model.zero_shot_scores(
        image_representations=image_reps,
        class_names=classes,
        templates=templates,
        mode="average",
    )
    np.testing.assert_allclose(average, image_reps @ mean.T, atol=1e-6)
    head = model.zero_shot_head(classes, templates)
    np.testing.assert_array_equal(head.predict(image_reps), best.argmax(1))
    with pytest.raises(ValueError, match="mode"):
        model.zero_shot_head(classes, mode="vote")
    with pytest.raises(ValueError, match="placeholder"):
        model.zero_shot_head(classes, ["a photo"])
    # Template sets by name, as in `keras_towers.evaluation`.
    from keras_towers.evaluation.templates import get_templates

    named = model.zero_shot_head(classes, "best7", mode="average")
    listed = model.zero_shot_head(classes, get_templates("best7"), mode="average")
    np.testing.assert_array_equal(named.predict(image_reps), listed.predict(image_reps))
    with pytest.raises(ValueError, match="Unknown template set"):
        model.zero_shot_head(classes, "a photo")


def test_common_zero_shot_evaluation_works_unchanged(tiny_asif):
    """`keras_towers.evaluation` only calls encode_*: its CLIP-style template
    average equals ASIF's own `mode="average"`."""
    evaluation = pytest.importorskip("keras_towers.evaluation")
    classes = ["circle", "square", "star", "dots"]
    templates = ["a {}", "a drawing of a {}"]
    images, _ = raw_pairs(4, seed=5)
    result = evaluation.evaluate_zero_shot(
        tiny_asif,
        images,
        np.arange(4),
        classes,
        templates=templates,
        batch_size=4,
        return_predictions=True,
        verbose=0,
    )
    scores = tiny_asif.zero_shot_scores(
        images, classes, templates, mode="average", batch_size=4
    )
    logits = 100.0 * scores
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-4)


def test_explain_raw_image_and_text(tiny_asif):
    images, _ = raw_pairs(1, seed=3)
    items = tiny_asif.explain(images[0], "a red circle", top_n=None)
    score = tiny_asif.similarity(
        tiny_asif.encode_images(images[0]), tiny_asif.encode_texts("a red circle")
    )[0, 0]
    np.testing.assert_allclose(sum(i["contribution"] for i in items), score, rtol=1e-5)
    assert all(i["image_ref"] == f"im{i['index']}" for i in items)
    with pytest.raises(ValueError, match="exactly one of `image`"):
        tiny_asif.explain(text="a")


def test_from_dataset_unbatched_ragged_and_batched(tiny_asif):
    images, texts = raw_pairs()
    towers = (tiny_asif.image_tower, tiny_asif.text_tower, tiny_asif.preprocessor)
    refs = [f"im{i}" for i in range(8)]

    def generate():
        yield from (
            {"images": im, "texts": t, "image_refs": r}
            for im, t, r in zip(images, texts, refs, strict=True)
        )

    spec = {
        "images": tf.TensorSpec((None, None, 3), tf.uint8),
        "texts": tf.TensorSpec((), tf.string),
        "image_refs": tf.TensorSpec((), tf.string),
    }
    unbatched = tf.data.Dataset.from_generator(generate, output_signature=spec)
    model = ASIF.from_dataset(*towers, unbatched, k=4, p=8.0, batch_size=4)
    for pairs in (None, unbatched.ragged_batch(4)):
        if pairs is not None:  # the same model, emptied and refilled
            model.remove_anchors(where=lambda anchor: True)
            assert model.num_anchors == 0
            model.add_anchors(pairs=pairs, batch_size=4)
        assert model.anchor_captions == texts
        assert model.anchor_image_refs == refs
        np.testing.assert_allclose(
            model.anchor_image_features, tiny_asif.anchor_image_features, atol=1e-5
        )
        np.testing.assert_allclose(
            model.anchor_text_features, tiny_asif.anchor_text_features, atol=1e-5
        )
    # A dense batched dataset (same-size images) is preprocessed per batch.
    same = np.stack([np.resize(im, (32, 32, 3)) for im in images])
    batched = tf.data.Dataset.from_tensor_slices({"images": same, "texts": texts})
    model.remove_anchors(where=lambda anchor: True)
    model.add_anchors(pairs=batched.batch(4))
    expected = tiny_asif.encode_image_features(same, batch_size=4)
    np.testing.assert_allclose(model.anchor_image_features, expected, atol=1e-5)
    assert model.anchor_image_refs == [str(i) for i in range(16, 24)]


def test_preset_round_trip_with_towers_inside(tiny_asif, tmp_path):
    tiny_asif.save_to_preset(str(tmp_path / "asif"))
    assert (tmp_path / "asif" / "image_tower.safetensors").is_file()
    loaded = ASIF.from_preset(str(tmp_path / "asif"))
    images, _ = raw_pairs(4, seed=4)
    np.testing.assert_allclose(
        loaded.encode_images(images), tiny_asif.encode_images(images), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.encode_texts(["a blue square"]),
        tiny_asif.encode_texts(["a blue square"]),
        atol=1e-6,
    )
    assert loaded.anchor_captions == tiny_asif.anchor_captions


def test_preset_references_towers_of_a_shipped_preset(tmp_path):
    clip = keras_towers.CLIP.from_preset("shapes_clip_tiny")
    model = ASIF(
        clip.image_tower,
        clip.text_tower,
        clip.preprocessor,
        k=3,
        image_tower_source="shapes_clip_tiny#image_tower",
        text_tower_source="shapes_clip_tiny#text_tower",
    )
    images, _, _ = keras_towers.datasets.make_shapes(8, seed=0)
    texts = [f"shape {i}" for i in range(8)]
    model.add_anchors(images=images, texts=texts, batch_size=4)
    model.save_to_preset(str(tmp_path / "asif"))
    files = {p.name for p in (tmp_path / "asif").iterdir()}
    assert "image_tower.safetensors" not in files  # referenced, not duplicated
    assert "text_tower.safetensors" not in files
    loaded = ASIF.from_preset(str(tmp_path / "asif"))
    np.testing.assert_allclose(
        loaded.encode_images(images[:4]), model.encode_images(images[:4]), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.encode_texts(texts[:4]), model.encode_texts(texts[:4]), atol=1e-6
    )


def test_tower_source_registry():
    register_tower_source("asif_test_vit", lambda: ASIF.tiny().image_tower)
    assert isinstance(load_tower_source("asif_test_vit"), keras_towers.ImageTower)
    with pytest.raises(ValueError, match="Unknown tower source"):
        load_tower_source("no_such_tower")
    with pytest.raises(ValueError, match="no tower named"):
        load_tower_source("shapes_clip_tiny#preprocessor_x")


# === Real encoders and the shipped preset ===

SHIPPED = "asif_lite0_minilm_embedded"
GUIDE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides", "asif.py")


def test_installed_encoders_are_registered_on_first_use():
    # An unknown name imports the built-in sources before failing, so the
    # error lists them (and a preset naming them loads without any import).
    with pytest.raises(ValueError, match="all_minilm_l6_v2") as error:
        load_tower_source("no_such_encoder")
    assert "efficientnet_lite0_imagenet" in str(error.value)
    from keras_towers.converters import asif_sources

    assert asif_sources.efficientnet_lite_source("lite2") == (
        "efficientnet_lite2_imagenet"
    )
    with pytest.raises(ValueError, match="lite9"):
        asif_sources.efficientnet_lite_source("lite9")


def test_shipped_preset_loads_by_name_and_matches_its_recorded_check():
    metadata = keras_towers.ASIF.presets[SHIPPED]
    model = keras_towers.presets.load_any(SHIPPED)  # what `keras-towers eval` does
    assert isinstance(model, ASIF)
    assert model.num_anchors == metadata["num_anchors"]
    assert (model.k, model.p) == (metadata["k"], metadata["p"])
    assert model.anchor_image_features.dtype == np.float16
    assert model.anchor_image_features.shape[1] == 1280  # EfficientNet-Lite0
    assert model.anchor_text_features.shape[1] == 384  # MiniLM-L6
    # The anchors are train + validation pairs, never the Tux Paint test split.
    test_ids = {r["id"] for r in keras_towers.datasets.embedded_records("test")}
    assert test_ids.isdisjoint(model.anchor_image_refs)
    expected = {
        r["id"]
        for split in ("train", "validation")
        for r in keras_towers.datasets.embedded_records(split)
    }
    assert set(model.anchor_image_refs) == expected

    check = metadata["check"]
    result = keras_towers.tasks.run(
        model,
        check["task"],
        templates=check["templates"],
        limit=check["limit"],
        verbose=0,
    )
    # Same anchors and encoders on every backend: only float rounding in the
    # encoders may flip a prediction or two.
    assert result["metrics"]["accuracy"] == pytest.approx(check["accuracy"], abs=0.03)
    assert result["metrics"]["accuracy"] > 0.2  # well above chance (10%)


def test_asif_guide_runs(monkeypatch, capsys):
    monkeypatch.setenv("GUIDE_ANCHORS", "48")
    monkeypatch.setenv("GUIDE_QUERIES", "24")
    runpy.run_path(GUIDE, run_name="__main__")
    out = capsys.readouterr().out
    assert "encoded 48 anchors" in out
    assert "zero-shot accuracy on 24 images" in out
    assert "reloaded representations identical: True" in out
