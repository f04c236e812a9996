"""ProtoCLIP's external teacher: MiniLM features cached once, PCA as faiss/sklearn."""

import glob
import os

import keras
import numpy as np
import pytest
from sklearn.decomposition import PCA

from keras_towers.datasets import make_shapes
from keras_towers.models import protoclip_teacher
from keras_towers.models.protoclip import ProtoCLIP
from keras_towers.models.protoclip_episodes import ProtoCLIPEpisodes
from keras_towers.models.protoclip_teacher import encoder_features
from keras_towers.models.protoclip_teacher import pca
from keras_towers.models.protoclip_teacher import teacher_features
from keras_towers.ops import l2_normalize_numpy
from keras_towers.utils.io import read_json
from tests.test_protoclip import batch_of
from tests.test_protoclip import check_state_is_built_from_features

DIM = 8


class ForwardRows:
    """Counts the captions the frozen encoder runs on (cache misses)."""

    def __init__(self, monkeypatch):
        self.rows = 0
        original = protoclip_teacher._forward

        def counting(runner, inputs):
            self.rows += len(inputs["token_ids"])
            return original(runner, inputs)

        monkeypatch.setattr(protoclip_teacher, "_forward", counting)


def cached_arrays(cache_dir):
    return glob.glob(os.path.join(cache_dir, "teacher-all_minilm_l6_v2-*.npy"))


@pytest.fixture
def forward_rows(monkeypatch):
    return ForwardRows(monkeypatch)


@pytest.fixture(scope="module")
def shapes():
    images, texts, _ = make_shapes(20, image_size=32)
    return images, list(texts)


@pytest.fixture(scope="module")
def first_run(shapes, tmp_path_factory):
    """Teacher features of 20 captions, computed (not cached) into a cache dir."""
    cache_dir = str(tmp_path_factory.mktemp("teacher_cache"))
    with pytest.MonkeyPatch.context() as mp:
        counter = ForwardRows(mp)
        features = teacher_features(shapes[1], pca_dim=DIM, cache_dir=cache_dir)
    return features, counter.rows, cache_dir


def test_shape_dtype_and_the_official_pipeline(shapes, first_run, forward_rows):
    features, encoded, cache_dir = first_run
    assert features.shape == (20, DIM) and features.dtype == np.float32
    assert encoded == 20
    # Encoder features (from the cache) -> L2 -> centred PCA, not re-normalised.
    raw = encoder_features(shapes[1], cache_dir=cache_dir)
    assert forward_rows.rows == 0
    assert raw.shape == (20, 384) and raw.dtype == np.float32
    np.testing.assert_array_equal(features, pca(l2_normalize_numpy(raw), DIM))
    np.testing.assert_allclose(features.mean(0), 0.0, atol=1e-6)
    variances = features.var(0)
    assert np.all(np.diff(variances) <= 1e-7)
    assert not np.allclose(np.linalg.norm(features, axis=1), 1.0)
    # Identical captions, identical teacher rows (rows 2 and 3 are duplicates).
    assert shapes[1][2] == shapes[1][3]
    np.testing.assert_array_equal(features[2], features[3])
    # pca_dim=None: the normalised encoder features themselves.
    full = teacher_features(shapes[1], pca_dim=None, cache_dir=cache_dir)
    assert forward_rows.rows == 0
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(full, l2_normalize_numpy(raw))


def test_a_disk_cache_hit_runs_no_encoder(shapes, first_run, forward_rows):
    features, _, cache_dir = first_run
    assert len(cached_arrays(cache_dir)) == 1
    # A fresh encoder (new dropout seed states) finds the same entry.
    again = teacher_features(shapes[1], pca_dim=DIM, cache_dir=cache_dir)
    assert forward_rows.rows == 0
    np.testing.assert_array_equal(again, features)
    meta = read_json(cached_arrays(cache_dir)[0][: -len(".npy")] + ".json")
    assert meta["source"] == "all_minilm_l6_v2" and meta["shape"] == [20, 384]
    # Without a cache directory it encodes again, to the same features.
    fresh = teacher_features(shapes[1], pca_dim=DIM)
    assert forward_rows.rows == 20
    np.testing.assert_allclose(fresh, features, atol=1e-5)


def test_other_captions_are_another_cache_entry(shapes, first_run, forward_rows):
    _, _, cache_dir = first_run
    texts = list(shapes[1])
    texts[0] = "a tiny purple hexagon"
    raw = encoder_features(texts, cache_dir=cache_dir)
    assert forward_rows.rows == 20
    assert len(cached_arrays(cache_dir)) == 2
    same = encoder_features(shapes[1], cache_dir=cache_dir)
    assert forward_rows.rows == 20
    assert not np.allclose(raw[0], same[0])
    np.testing.assert_allclose(raw[1:], same[1:], atol=1e-5)


def anisotropic(n, d, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.1, d)
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return ((rng.normal(size=(n, d)) * scales) @ rotation + 3.0).astype("float32")


def test_pca_matches_scikit_learn():
    x = anisotropic(200, 16)
    z = pca(x, 5)
    assert z.shape == (200, 5) and z.dtype == np.float32
    reference = PCA(n_components=5, svd_solver="full").fit(x)
    np.testing.assert_allclose(
        z.var(0, ddof=1), reference.explained_variance_, rtol=1e-4
    )
    expected = reference.transform(x)
    signs = np.sign(np.sum(z * expected, axis=0))
    np.testing.assert_allclose(z, expected * signs, atol=1e-4)
    # Sign convention: the largest-magnitude entry of each component is positive,
    # so z's columns are the data's coordinates along those components.
    components = reference.components_ * signs[:, None]
    pivots = np.abs(components).argmax(1)
    assert np.all(components[np.arange(5), pivots] > 0)
    # Deterministic: a permutation of the rows permutes the output.
    order = np.random.default_rng(1).permutation(200)
    np.testing.assert_allclose(pca(x[order], 5), z[order], atol=1e-5)


def test_pca_past_the_rank_gives_zero_columns():
    x = anisotropic(5, 16)  # centred rank 4
    with pytest.warns(UserWarning, match="only 4 directions"):
        z = pca(x, 8)
    assert z.shape == (5, 8)
    np.testing.assert_array_equal(z[:, 4:], 0.0)
    expected = PCA(n_components=4, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(np.abs(z[:, :4]), np.abs(expected), atol=1e-4)


def test_pca_errors():
    x = anisotropic(10, 4)
    with pytest.raises(ValueError, match="exceeds the feature width 4"):
        pca(x, 5)
    with pytest.raises(ValueError, match="positive int"):
        pca(x, 0)
    with pytest.raises(ValueError, match="2-D"):
        pca(x[0], 2)
    with pytest.raises(ValueError, match="NaN"):
        pca(np.full((3, 2), np.nan), 1)


def test_features_drive_the_episodes_external_clusters(shapes, first_run):
    images, texts = shapes
    features = first_run[0]
    model = ProtoCLIP.tiny(num_clusters=4, episode_size=16, external_teacher=DIM)
    episodes = ProtoCLIPEpisodes(
        model,
        {"images": images, "texts": texts},
        batch_size=8,
        teacher_features=features,
        kmeans_n_init=1,
    )
    episodes.on_epoch_begin(1)
    state = {
        n: keras.ops.convert_to_numpy(getattr(model.episode_state, n))
        for n in model.episode_state_names
    }
    rows = episodes.episode_indices
    ids = state["external_cluster_ids"]
    assert ids.shape == (16,) and len(np.unique(ids)) > 1
    # Rows with the same teacher feature fall in the same external cluster.
    teacher = features[rows]
    for i in range(16):
        same = np.all(teacher == teacher[i], axis=1)
        assert np.all(ids[same] == ids[i])
    batch = batch_of(model, images[rows], [texts[r] for r in rows], np.arange(16))
    check_state_is_built_from_features(model, state, batch)


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "empty"),
        (["a cat", 3], {}, TypeError, "index 1: int"),
        ([b"a cat"], {}, TypeError, "must be a str"),
        ("a cat", {}, TypeError, "single string"),
        (None, {}, TypeError, "sequence of str"),
        (["a cat"], {"pca_dim": 0}, ValueError, "positive int"),
        (["a cat"], {"pca_dim": 512}, ValueError, "width 384"),
        (["a cat"], {"source": "nope"}, ValueError, "registered text encoder"),
        (
            ["a cat"],
            {"source": "efficientnet_lite0_imagenet"},
            ValueError,
            "image encoder",
        ),
    ],
)
def test_bad_inputs_fail_before_loading(texts, kwargs, error, match, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the encoder was loaded before the inputs were checked")

    monkeypatch.setattr(
        "keras_towers.models.protoclip_teacher.pretrained.load_tower", no_loading
    )
    with pytest.raises(error, match=match):
        teacher_features(texts, **kwargs)
