"""k-means (`keras_towers.clustering`) against scikit-learn and by construction."""

import keras
import numpy as np
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from keras_towers import clustering


def _blobs(seed, n=600, d=16, k=12, spread=3.0, noise=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (k, d))
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.normal(0.0, noise, (n, d))
    return x.astype("float32"), labels


def _small(seed):
    """200 x 8 points in 6 blobs: most tests share this shape, so JAX compiles
    each kernel once."""
    return _blobs(seed, n=200, d=8, k=6)


def _sklearn(x, **kwargs):
    # One thread: OpenMP's spinning threads crawl on a busy 2-core machine.
    with threadpool_limits(1):
        return KMeans(**kwargs).fit(x)


def _numpy_inertia(x, centroids, labels):
    diff = x.astype("float64") - centroids.astype("float64")[labels]
    return float((diff * diff).sum())


@pytest.mark.parametrize(
    "seed,noise", [(0, 1.5), (1, 1.5), (2, 3.0), (3, 2.0)], ids=str
)
def test_inertia_within_one_percent_of_sklearn(seed, noise):
    x, _ = _blobs(seed, noise=noise)
    ours = clustering.kmeans(x, 12, n_init=3, seed=seed)
    reference = _sklearn(
        x, n_clusters=12, n_init=3, init="k-means++", random_state=seed
    )
    assert ours.inertia <= 1.01 * reference.inertia_
    assert ours.labels.shape == (600,) and ours.labels.dtype == np.int32
    assert ours.centroids.shape == (12, 16) and ours.centroids.dtype == np.float32
    assert 1 <= ours.n_iter <= 20
    # The reported inertia is exact, and labels are the nearest centroids.
    np.testing.assert_allclose(
        ours.inertia, _numpy_inertia(x, ours.centroids, ours.labels), rtol=1e-5
    )
    d2 = ((x[:, None, :] - ours.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(d2[np.arange(len(x)), ours.labels], d2.min(axis=1))


def test_no_worse_than_sklearn_on_average_on_overlapping_blobs():
    # With heavy overlap every restart ends in some local minimum, and which
    # one depends on the random stream (ours is not scikit-learn's): single
    # datasets land a few percent either side, so compare totals.
    ours = theirs = 0.0
    for seed in range(3, 9):
        x, _ = _blobs(seed, noise=6.0)
        ours += clustering.kmeans(x, 12, n_init=3, seed=seed).inertia
        theirs += _sklearn(
            x, n_clusters=12, n_init=3, init="k-means++", random_state=seed
        ).inertia_
    assert ours <= 1.01 * theirs


@pytest.mark.parametrize("seed", [0, 2])
def test_same_init_gives_sklearns_lloyd_iterations(seed):
    x, _ = _blobs(seed, noise=6.0)
    init = x[:12]
    ours = clustering.kmeans(x, 12, init=init, max_iter=300, tol=1e-4)
    reference = _sklearn(x, n_clusters=12, n_init=1, init=init, tol=1e-4)
    np.testing.assert_array_equal(ours.labels, reference.labels_)
    np.testing.assert_allclose(ours.centroids, reference.cluster_centers_, atol=1e-4)
    np.testing.assert_allclose(ours.inertia, reference.inertia_, rtol=1e-5)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_recovers_well_separated_blobs(init):
    rng = np.random.default_rng(7)
    centres = np.eye(6, 8) * 50.0
    truth = np.arange(200) % 6
    x = (centres[truth] + rng.normal(0.0, 1.0, (200, 8))).astype("float32")
    result = clustering.kmeans(x, 6, n_init=5, init=init, seed=3)
    # Labels agree up to a permutation: a bijection between the partitions.
    pairs = set(zip(truth.tolist(), result.labels.tolist(), strict=True))
    assert len(pairs) == 6
    assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 6
    cluster_of = {a: b for a, b in pairs}
    recovered = result.centroids[[cluster_of[a] for a in range(6)]]
    means = np.stack([x[truth == a].mean(axis=0) for a in range(6)])
    np.testing.assert_allclose(recovered, means, atol=1e-4)


def test_chunking_gives_the_same_result():
    x, _ = _small(4)
    whole = clustering.kmeans(x, 6, n_init=2, seed=1)
    # chunk_size=45: assignment chunks and segment-sum pieces of 45 rows (the
    # last one 20), k-means++ candidates against 45 * 6 // 3 = 90 rows at once.
    chunked = clustering.kmeans(x, 6, n_init=2, seed=1, chunk_size=45)
    np.testing.assert_array_equal(whole.labels, chunked.labels)
    np.testing.assert_allclose(whole.centroids, chunked.centroids, atol=1e-5)
    np.testing.assert_allclose(whole.inertia, chunked.inertia, rtol=1e-5)


def test_deterministic_for_a_seed():
    x, _ = _small(5)
    a = clustering.kmeans(x, 6, seed=11)
    b = clustering.kmeans(x, 6, seed=11)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia and a.n_iter == b.n_iter


def test_empty_cluster_is_reseeded_with_the_farthest_point():
    x, _ = _small(0)
    x[17] += 100.0  # the farthest point from every initial centroid
    init = x[:6].copy()
    init[3] = 1000.0  # no point is nearest to it: empty after one assignment
    result = clustering.kmeans(x, 6, init=init, max_iter=1, tol=0.0)
    assert result.empty_clusters_fixed == 1
    np.testing.assert_allclose(result.centroids[3], x[17], atol=1e-5)
    assert result.labels[17] == 3
    # Running on, every cluster keeps at least one point.
    result = clustering.kmeans(x, 6, init=init, tol=0.0)
    assert result.empty_clusters_fixed >= 1
    assert np.bincount(result.labels, minlength=6).min() >= 1


def test_fewer_distinct_points_than_clusters():
    x = np.eye(3, 8, dtype="float32")[np.arange(200) % 3]
    result = clustering.kmeans(x, 6, seed=0)
    assert result.centroids.shape == (6, 8)
    assert np.isfinite(result.centroids).all()
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_fewer_points_than_k():
    x, _ = _blobs(6, n=5, d=4, k=2)
    with pytest.raises(ValueError, match=r"K=10.*N=5.*k_policy=\"clip\""):
        clustering.kmeans(x, 10)
    result = clustering.kmeans(x, 10, k_policy="clip")
    assert result.centroids.shape == (5, 4)
    assert sorted(result.labels.tolist()) == [0, 1, 2, 3, 4]
    assert result.inertia == pytest.approx(0.0, abs=1e-5)
    # An explicit init keeps its first N rows under "clip".
    init = np.zeros((10, 4), "float32")
    init[:5] = x
    result = clustering.kmeans(x, 10, init=init, k_policy="clip")
    np.testing.assert_allclose(result.centroids, x, atol=1e-5)


def test_accepts_backend_tensors_and_other_dtypes():
    x, _ = _small(8)
    from_numpy = clustering.kmeans(x, 6, seed=2)
    from_tensor = clustering.kmeans(keras.ops.convert_to_tensor(x), 6, seed=2)
    from_float64 = clustering.kmeans(x.astype("float64"), 6, seed=2)
    for other in (from_tensor, from_float64):
        np.testing.assert_array_equal(from_numpy.labels, other.labels)
        np.testing.assert_array_equal(from_numpy.centroids, other.centroids)


@pytest.mark.parametrize(
    "x,kwargs,error,match",
    [
        (np.zeros(10), {}, ValueError, "must be 2-D.*shape=\\(10,\\)"),
        (np.zeros((2, 3, 4)), {}, ValueError, "must be 2-D"),
        (np.zeros((0, 3)), {}, ValueError, "at least one point"),
        (np.array([["a", "b"]]), {}, TypeError, "real numbers"),
        ("nan", {}, ValueError, "NaN in 1 row\\(s\\) \\(first: 3\\)"),
        ("inf", {}, ValueError, "infinite values"),
        (None, {"k": 0}, ValueError, "`k` must be an integer >= 1"),
        (None, {"k": 2.5}, ValueError, "`k` must be an integer"),
        (None, {"max_iter": 0}, ValueError, "max_iter"),
        (None, {"n_init": 0}, ValueError, "n_init"),
        (None, {"seed": -1}, ValueError, "seed"),
        (None, {"chunk_size": 0}, ValueError, "chunk_size"),
        (None, {"tol": -1.0}, ValueError, "tol"),
        (None, {"init": "kmeans++"}, ValueError, "`init` must be one of"),
        (None, {"init": np.zeros((2, 3))}, ValueError, "shape \\(k, dim\\)"),
        (None, {"k_policy": "adapt"}, ValueError, "k_policy"),
    ],
)
def test_bad_input_raises_a_clear_error(x, kwargs, error, match):
    if x is None or isinstance(x, str):
        points = np.zeros((8, 2), "float32")
        if x == "nan":
            points[3, 1] = np.nan
        if x == "inf":
            points[5, 0] = np.inf
        x = points
    kwargs = {"k": 2, **kwargs}
    with pytest.raises(error, match=match):
        clustering.kmeans(x, **kwargs)
