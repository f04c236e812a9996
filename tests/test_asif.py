"""ASIF: relative-representation maths against NumPy, anchors, saving
(Keras saving, presets, the earlier preset format), towers."""

import json
import os
import runpy
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

import keras_towers
from keras_towers import evaluation
from keras_towers import pretrained
from keras_towers import relative
from keras_towers.models.asif import ASIF
from keras_towers.models.asif import lite_minilm_asif
from keras_towers.models.asif import load_tower_source
from keras_towers.ops import l2_normalize_numpy
from tests.helpers import random_batch
from tests.helpers import run_roundtrip

DATA = Path(__file__).resolve().parent / "data"

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
    anchors = l2_normalize_numpy(random_features(40, 16, 0))
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
    anchors = l2_normalize_numpy(random_features(103, 8, 2))
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
    anchors = l2_normalize_numpy(random_features(12, 6, 4))
    queries = random_features(5, 6, 5)
    reps = relative.relative_representation(queries, anchors, 1000, 8.0)
    sims = l2_normalize_numpy(queries) @ anchors.T
    dense = np.maximum(sims, 0) ** 8
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    np.testing.assert_allclose(reps.toarray(), dense, atol=1e-6)
    # k == N is the same as k > N.
    np.testing.assert_allclose(
        relative.relative_representation(queries, anchors, 12, 8.0).toarray(),
        reps.toarray(),
    )


def test_ties_at_the_kth_value_keep_the_right_values():
    base = l2_normalize_numpy(random_features(6, 5, 6))
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
    dense = l2_normalize_numpy(dense)
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


def assert_same_anchors(loaded, model):
    """Same anchors, bit for bit (float16 included), and the same next id."""
    assert loaded.num_anchors == model.num_anchors
    for name in ("anchor_image_features", "anchor_text_features"):
        expected, actual = getattr(model, name), getattr(loaded, name)
        if expected is None or not len(expected):
            assert actual is None or not len(actual)
            continue
        assert actual.dtype == expected.dtype, name
        np.testing.assert_array_equal(
            actual.view(f"uint{8 * actual.itemsize}"),
            expected.view(f"uint{8 * expected.itemsize}"),
            err_msg=name,
        )
    np.testing.assert_array_equal(loaded.anchor_ids, model.anchor_ids)
    assert loaded.anchor_captions == model.anchor_captions
    assert loaded.anchor_image_refs == model.anchor_image_refs
    assert loaded._anchors.next_id == model._anchors.next_id


def unicode_features_model(anchor_dtype="float16"):
    model = features_model(n=30, k=5, p=8.0, anchor_dtype=anchor_dtype)
    model.remove_anchors(ids=[29])  # next id stays 30 after loading
    model.remove_anchors(where=lambda a: a.index == 3)
    model.add_anchors(
        image_features=random_features(2, 12, 53),
        text_features=random_features(2, 10, 54),
        captions=["un château « ancien »", "日本の猫 🐱"],
        image_refs=["img/ü.png", ""],
    )
    return model


@pytest.mark.parametrize("anchor_dtype", ["float16", "float32"])
def test_features_only_preset_round_trip(tmp_path, anchor_dtype):
    model = unicode_features_model(anchor_dtype)
    model.save_to_preset(str(tmp_path / "asif"), description="test")
    files = {p.name for p in (tmp_path / "asif").iterdir()}
    assert files == {"config.json", "metadata.json", "model.weights.h5"}
    loaded = ASIF.from_preset(str(tmp_path / "asif"))
    assert (loaded.k, loaded.p, loaded.anchor_dtype) == (5, 8.0, anchor_dtype)
    assert_same_anchors(loaded, model)
    queries = random_features(4, 12, 50)
    np.testing.assert_array_equal(
        loaded.represent(queries, "image"), model.represent(queries, "image")
    )
    new = loaded.add_anchors(
        image_features=random_features(1, 12, 51),
        text_features=random_features(1, 10, 52),
    )
    assert new.tolist() == [32]
    meta = json.loads((tmp_path / "asif" / "metadata.json").read_text())
    assert meta["class_name"] == "ASIF" and meta["num_anchors"] == 30
    assert (meta["k"], meta["p"], meta["anchor_dtype"]) == (5, 8.0, anchor_dtype)
    assert meta["image_tower_source"] is None and meta["description"] == "test"
    # Overrides at load time; the base class finds ASIF by itself.
    assert ASIF.from_preset(str(tmp_path / "asif"), k=3).k == 3
    base = keras_towers.ContrastiveModel.from_preset(str(tmp_path / "asif"))
    assert isinstance(base, ASIF)
    assert_same_anchors(base, model)
    # The architecture only: no anchors.
    assert ASIF.from_preset(str(tmp_path / "asif"), load_weights=False).num_anchors == 0


def test_keras_file_and_weights_carry_the_anchors(tmp_path):
    model = unicode_features_model()
    model.save(str(tmp_path / "asif.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "asif.keras"))
    assert isinstance(loaded, ASIF) and loaded.anchor_dtype == "float16"
    assert_same_anchors(loaded, model)

    model.save_weights(str(tmp_path / "asif.weights.h5"))
    other = ASIF(k=5, p=8.0, anchor_dtype="float16")
    other.add_anchors(  # replaced by the loaded anchors
        image_features=random_features(3, 12, 55),
        text_features=random_features(3, 10, 56),
    )
    version = other.anchor_version
    other.load_weights(str(tmp_path / "asif.weights.h5"))
    assert_same_anchors(other, model)
    assert other.anchor_version > version  # representations are stale
    queries = random_features(4, 10, 57)
    np.testing.assert_array_equal(
        other.represent(queries, "text"), model.represent(queries, "text")
    )
    # Loading float16 anchors into a float32 model converts them exactly.
    wide = ASIF(k=5, p=8.0)
    wide.load_weights(str(tmp_path / "asif.weights.h5"))
    assert wide.anchor_image_features.dtype == np.float32
    np.testing.assert_array_equal(
        wide.anchor_image_features, model.anchor_image_features.astype("float32")
    )


@pytest.mark.parametrize("emptied", [False, True])
def test_empty_anchor_set_round_trips(tmp_path, emptied):
    model = features_model(n=5) if emptied else ASIF(k=5)
    if emptied:
        model.remove_anchors(where=lambda anchor: True)
    assert model.num_anchors == 0
    model.save_to_preset(str(tmp_path / "preset"))
    model.save(str(tmp_path / "asif.keras"))
    model.save_weights(str(tmp_path / "asif.weights.h5"))
    refilled = features_model(n=3)
    refilled.load_weights(str(tmp_path / "asif.weights.h5"))
    for loaded in (
        ASIF.from_preset(str(tmp_path / "preset")),
        keras.saving.load_model(str(tmp_path / "asif.keras")),
        refilled,
    ):
        assert loaded.num_anchors == 0
        assert loaded._anchors.next_id == (5 if emptied else 0)
        assert loaded.anchor_ids.shape == (0,) and loaded.anchor_captions == []
        with pytest.raises(ValueError, match="no anchors yet"):
            loaded.represent(random_features(1, 12, 0), "image")
        # New anchors never reuse removed ids.
        first = loaded.add_anchors(
            image_features=random_features(2, 12, 1),
            text_features=random_features(2, 10, 2),
        )
        assert first.tolist() == ([5, 6] if emptied else [0, 1])


def test_corrupt_preset_is_rejected(tmp_path):
    model = features_model(n=10)
    model.save_to_preset(str(tmp_path / "asif"))
    weights = tmp_path / "asif" / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.weights.h5.*sha256"):
        ASIF.from_preset(str(tmp_path / "asif"))
    with pytest.raises(ValueError, match="not a CLIP"):
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
    with pytest.raises(NotImplementedError, match="no loss"):
        model.compute_loss()
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
    classes = ["circle", "square", "star", "dots"]
    # Both fit the tiny text context (evaluation drops templates whose
    # prompts lose the class name; ASIF's own head keeps what it is given).
    templates = ["a {}", "the {}"]
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


def test_saving_round_trips_with_towers_inside(tiny_asif, tmp_path):
    images, _ = raw_pairs(4, seed=4)
    batch = random_batch(tiny_asif)
    raw = {"images": np.stack([np.resize(im, (32, 32, 3)) for im in images])}
    raw["texts"] = ["a blue square", "tux", "a", "b"]
    restored = run_roundtrip(tiny_asif, batch, tmp_path, raw=raw)
    # Towers without a source are stored in the preset's weights file.
    metadata = json.loads((tmp_path / "preset" / "metadata.json").read_text())
    assert "stored_parameter_count" not in metadata
    for route in ("keras", "preset", "base_preset"):
        loaded = restored[route]
        assert_same_anchors(loaded, tiny_asif)
        np.testing.assert_array_equal(
            loaded.encode_images(images), tiny_asif.encode_images(images)
        )
        np.testing.assert_array_equal(
            loaded.encode_texts(["a blue square"]),
            tiny_asif.encode_texts(["a blue square"]),
        )
    assert restored["config"].num_anchors == 0  # a config has no anchors


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
    assert model.referenced_objects() == [model.image_tower, model.text_tower]
    images, _, _ = keras_towers.datasets.make_shapes(8, seed=0)
    texts = [f"shape {i}" for i in range(8)]
    model.add_anchors(images=images, texts=texts, batch_size=4)
    model.save_to_preset(str(tmp_path / "asif"))
    metadata = json.loads((tmp_path / "asif" / "metadata.json").read_text())
    assert metadata["stored_parameter_count"] == 0  # referenced, not duplicated
    assert metadata["image_tower_source"] == "shapes_clip_tiny#image_tower"
    loaded = ASIF.from_preset(str(tmp_path / "asif"))
    np.testing.assert_allclose(
        loaded.encode_images(images[:4]), model.encode_images(images[:4]), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.encode_texts(texts[:4]), model.encode_texts(texts[:4]), atol=1e-6
    )


def test_tower_sources():
    with pytest.raises(ValueError, match="Unknown tower source") as error:
        load_tower_source("no_such_tower")
    # The message lists the pretrained encoders (one registry for all methods).
    assert "all_minilm_l6_v2" in str(error.value)
    assert "efficientnet_lite0_imagenet" in str(error.value)
    with pytest.raises(ValueError, match="no tower named"):
        load_tower_source("shapes_clip_tiny#preprocessor_x")


def test_backbone_preset_directory_as_a_tower_source(tmp_path):
    """A keras-hub backbone preset directory, pooled as `image_pooling` says;
    presets store the directory, not the tower."""
    backbone = ASIF.tiny().image_tower.backbone
    backbone.save_to_preset(str(tmp_path / "vit"))
    source = str(tmp_path / "vit")
    with pytest.raises(ValueError, match="pooling"):
        ASIF(image_tower_source=source)
    model = ASIF(image_tower_source=source, image_pooling="cls", k=3)
    assert model.image_tower.name == "asif_image_tower"
    assert model.image_tower.pooling == "cls" and not model.image_tower.trainable
    features = model.image_tower(np.zeros((2, 32, 32, 3), "float32"))
    model.add_anchors(
        image_features=keras.ops.convert_to_numpy(features),
        text_features=random_features(2, 10, 0),
    )
    model.save_to_preset(str(tmp_path / "asif"))
    model.save(str(tmp_path / "asif.keras"))  # holds the tower's weights too
    images = np.ones((1, 32, 32, 3))
    for loaded in (
        ASIF.from_preset(str(tmp_path / "asif")),
        keras.saving.load_model(str(tmp_path / "asif.keras")),
    ):
        assert loaded.image_pooling == "cls" and loaded.image_tower_source == source
        assert_same_anchors(loaded, model)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded.image_tower(images)),
            keras.ops.convert_to_numpy(model.image_tower(images)),
        )


def test_old_format_preset_still_loads():
    """A preset written by commit 73d115b (`anchors.safetensors` and tower
    safetensors files): `ASIF.tiny(k=5, anchor_dtype="float16")`, 13 anchors
    from raw images with non-ASCII captions and image refs, one removed."""
    expected = np.load(DATA / "asif_preset_73d115b_expected.npz")
    path = str(DATA / "asif_preset_73d115b")
    for load in (ASIF.from_preset, keras_towers.ContrastiveModel.from_preset):
        model = load(path)
        assert isinstance(model, ASIF)
        assert (model.k, model.p, model.anchor_dtype) == (5, 8.0, "float16")
        assert model.num_anchors == 12 and model._anchors.next_id == 13
        for name in ("anchor_image_features", "anchor_text_features"):
            assert getattr(model, name).dtype == np.float16
            np.testing.assert_array_equal(
                getattr(model, name).view("uint16"), expected[name].view("uint16")
            )
        np.testing.assert_array_equal(model.anchor_ids, expected["anchor_ids"])
        assert model.anchor_captions == expected["anchor_captions"].tolist()
        assert model.anchor_image_refs == expected["anchor_image_refs"].tolist()
        assert "日本の猫 2 — «ok»" in model.anchor_captions
        texts = expected["query_texts"].tolist()
        # The towers' weights: the same features as the old code computed
        # (on jax; other backends round differently in the last bits).
        np.testing.assert_allclose(
            model.encode_image_features(expected["query_images"]),
            expected["image_features"],
            atol=1e-5,
        )
        np.testing.assert_allclose(
            model.encode_text_features(texts), expected["text_features"], atol=1e-5
        )
        np.testing.assert_allclose(
            model.encode_images(expected["query_images"]),
            expected["image_reps"],
            atol=1e-4,
        )
        np.testing.assert_allclose(
            model.encode_texts(texts), expected["text_reps"], atol=1e-4
        )


def test_old_format_preset_is_sha256_checked(tmp_path):
    import shutil

    path = tmp_path / "old"
    shutil.copytree(DATA / "asif_preset_73d115b", path)
    anchors = path / "anchors.safetensors"
    data = bytearray(anchors.read_bytes())
    data[-1] ^= 0xFF
    anchors.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="anchors.safetensors.*sha256"):
        ASIF.from_preset(str(path))


# === Real encoders and the shipped preset ===

SHIPPED = "asif_lite0_minilm_embedded"
GUIDE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides", "asif.py")


def test_lite_minilm_asif_references_the_pretrained_encoders():
    with pytest.raises(ValueError, match="lite9"):
        lite_minilm_asif("lite9")
    model = lite_minilm_asif("lite0", k=10, sequence_length=32)
    assert (model.k, model.anchor_dtype) == (10, "float16")
    assert model.image_tower.name == "asif_lite0_tower"
    assert model.text_tower.name == "asif_minilm_tower"
    assert model.image_tower_source == "efficientnet_lite0_imagenet"
    assert model.text_tower_source == "all_minilm_l6_v2"
    assert model.referenced_objects() == [model.image_tower, model.text_tower]
    expected = pretrained.preprocessor(
        "efficientnet_lite0_imagenet", "all_minilm_l6_v2", 32
    )

    def unnamed(config):  # layer names are numbered per process
        if isinstance(config, dict):
            return {k: unnamed(v) for k, v in config.items() if k != "name"}
        if isinstance(config, (list, tuple)):
            return [unnamed(v) for v in config]
        return config

    assert unnamed(model.preprocessor.get_config()) == unnamed(expected.get_config())
    config = model.get_config()
    assert config["image_tower"] is None and config["text_tower"] is None


@pytest.mark.one_backend
def test_shipped_preset_loads_by_name_and_matches_its_recorded_check():
    metadata = keras_towers.ASIF.presets[SHIPPED]
    # What `keras-towers eval` does.
    model = keras_towers.ContrastiveModel.from_preset(SHIPPED)
    assert isinstance(model, ASIF)
    files = {
        p.name for p in Path(keras_towers.presets.resolve(ASIF, SHIPPED)).iterdir()
    }
    assert "model.weights.h5" in files and "anchors.safetensors" not in files
    # Every shipped preset stays under 15 MB: ~28k anchors stored compactly.
    preset_dir = Path(keras_towers.presets.resolve(ASIF, SHIPPED))
    size = sum(p.stat().st_size for p in preset_dir.rglob("*") if p.is_file())
    assert size < 15e6
    assert metadata["anchor_storage"] == model.anchor_storage
    assert model.anchor_storage["quantize"] == "int8"
    assert model.num_anchors == metadata["num_anchors"]
    assert (model.k, model.p) == (metadata["k"], metadata["p"])
    assert model.anchor_image_features.dtype == np.float16
    assert model.anchor_image_features.shape[1] == 1280  # EfficientNet-Lite0
    assert model.anchor_text_features.shape[1] == 384  # MiniLM-L6
    # The anchors are every train + validation pair, never a test pair.
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


@pytest.mark.one_backend
def test_asif_guide_runs(monkeypatch, capsys):
    # Like most guides (tests/test_guides.py BACKENDS), on torch only: the
    # encoders' numerics are checked on every backend against references.
    monkeypatch.setenv("GUIDE_ANCHORS", "48")
    monkeypatch.setenv("GUIDE_QUERIES", "24")
    runpy.run_path(GUIDE, run_name="__main__")
    out = capsys.readouterr().out
    assert "encoded 48 anchors" in out
    assert "zero-shot accuracy on 24 images" in out
    assert "reloaded representations identical: True" in out
