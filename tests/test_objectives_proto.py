"""ProtoCLIP's objectives against NumPy float64 closed forms."""

import keras
import numpy as np
import pytest

from keras_towers import objectives
from keras_towers import objectives_proto as proto
from tests.helpers import value_and_grads


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def numpy_targets(ids, centroids, tau):
    c = centroids.astype("float64")
    return np.exp(_log_softmax(c[ids] @ c.T / tau))


def numpy_proto_loss(z, p, q, s):
    logits = s * z.astype("float64") @ p.astype("float64").T
    loss = -(q * _log_softmax(logits)).sum(1).mean()
    accuracy = np.mean(logits.argmax(1) == q.argmax(1))
    entropy = -(q * np.log(np.where(q > 0, q, 1.0))).sum(1).mean()
    return loss, accuracy, entropy


def numpy_external_loss(z, p, y, s):
    logits = s * z.astype("float64") @ p.astype("float64").T
    loss = -_log_softmax(logits)[np.arange(len(y)), y].mean()
    return loss, np.mean(logits.argmax(1) == y)


def numpy_pbt(x, ids, k):
    out = np.zeros((k, x.shape[1]))
    for j in range(k):
        if np.any(ids == j):
            out[j] = x[ids == j].astype("float64").mean(0)
    return out


@pytest.mark.parametrize(
    "n,k,d,tau", [(1, 3, 4, 0.01), (9, 6, 8, 0.01), (16, 20, 5, 0.5)]
)
def test_prototype_targets_match_numpy(n, k, d, tau):
    rng = np.random.default_rng(n + k)
    # Raw centroids: unequal norms below 1, like means of unit vectors.
    centroids = (_unit(rng, k, d) * rng.uniform(0.2, 0.6, (k, 1))).astype("float32")
    ids = rng.integers(0, k, n)
    q = _np(proto.prototype_targets(ids, centroids, tau))
    assert q.dtype == np.float32 and q.shape == (n, k)
    np.testing.assert_allclose(q, numpy_targets(ids, centroids, tau), atol=1e-5)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)


def test_prototype_targets_peak_at_own_cluster_for_small_temperature():
    rng = np.random.default_rng(0)
    centroids = _unit(rng, 6, 16)  # equal norms: own cluster is the peak
    ids = np.array([5, 0, 3, 3, 1, 2, 4])
    q = _np(proto.prototype_targets(ids, centroids, 0.01))
    np.testing.assert_array_equal(q.argmax(1), ids)
    assert np.all(q[np.arange(len(ids)), ids] > 0.99)
    # A large temperature flattens the targets towards uniform.
    flat = _np(proto.prototype_targets(ids, centroids, 1e4))
    np.testing.assert_allclose(flat, 1 / 6, atol=1e-3)


@pytest.mark.parametrize(
    "n,k,d,s", [(1, 2, 4, 1.0), (8, 5, 16, 14.3), (12, 30, 8, 100.0)]
)
def test_prototype_loss_matches_numpy(n, k, d, s):
    rng = np.random.default_rng(n)
    z = _unit(rng, n, d)
    p = (_unit(rng, k, d) * rng.uniform(0.0, 1.0, (k, 1))).astype("float32")
    q = np.exp(_log_softmax(rng.normal(size=(n, k)) * 3)).astype("float32")
    loss, diag = proto.prototype_loss(z, p, q, s)
    assert set(diag) == set(proto.PROTO_DIAGNOSTICS)
    expected, accuracy, entropy = numpy_proto_loss(z, p, q.astype("float64"), s)
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(diag["accuracy"]), accuracy, atol=1e-6)
    np.testing.assert_allclose(_np(diag["target_entropy"]), entropy, atol=1e-5)


def test_prototype_loss_with_one_hot_targets_is_cross_entropy():
    rng = np.random.default_rng(1)
    z, p = _unit(rng, 6, 8), _unit(rng, 4, 8)
    y = np.array([0, 3, 1, 1, 2, 0])
    q = np.eye(4, dtype="float32")[y]
    soft, diag = proto.prototype_loss(z, p, q, 10.0)
    hard, hard_diag = proto.external_prototype_loss(z, p, y, 10.0)
    np.testing.assert_allclose(_np(soft), _np(hard), rtol=1e-6)
    np.testing.assert_allclose(_np(diag["accuracy"]), _np(hard_diag["accuracy"]))
    assert abs(float(_np(diag["target_entropy"]))) < 1e-6


@pytest.mark.parametrize(
    "n,k,d,s", [(1, 3, 4, 1.0), (10, 7, 8, 14.3), (16, 40, 6, 100.0)]
)
def test_external_prototype_loss_matches_numpy(n, k, d, s):
    rng = np.random.default_rng(n + 100)
    z = _unit(rng, n, d)
    y = rng.integers(0, k, n)
    p = proto.pbt_prototypes(z, y, k)
    loss, diag = proto.external_prototype_loss(z, p, y, s)
    assert set(diag) == set(proto.EXTERNAL_DIAGNOSTICS)
    expected, accuracy = numpy_external_loss(z, numpy_pbt(z, y, k), y, s)
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(diag["accuracy"]), accuracy, atol=1e-6)


def test_losses_are_stable_for_large_logits_and_half_precision():
    rng = np.random.default_rng(2)
    z, p = _unit(rng, 5, 8), _unit(rng, 3, 8)
    q = np.full((5, 3), 1 / 3, "float32")
    y = np.array([0, 1, 2, 0, 1])
    for loss, _ in (
        proto.prototype_loss(z, p, q, 1e4),
        proto.external_prototype_loss(z, p, y, 1e4),
    ):
        assert np.isfinite(_np(loss))
    half = keras.ops.cast(z, "float16")
    loss16, diag16 = proto.prototype_loss(half, keras.ops.cast(p, "bfloat16"), q, 14.0)
    assert keras.backend.standardize_dtype(loss16.dtype) == "float32"
    assert keras.backend.standardize_dtype(diag16["accuracy"].dtype) == "float32"
    targets16 = proto.prototype_targets(y, keras.ops.cast(p, "bfloat16"))
    assert keras.backend.standardize_dtype(targets16.dtype) == "float32"


def test_pbt_hand_computed_with_an_empty_cluster():
    x = np.array(
        [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [3.0, -1.0], [-1.0, 4.0]], "float32"
    )
    ids = np.array([0, 2, 0, 2, 2])  # cluster 1 is empty
    expected = [[1.5, 1.0], [0.0, 0.0], [2.0 / 3.0, 4.0 / 3.0]]
    out = proto.pbt_prototypes(x, ids, 3)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(_np(out), expected, atol=1e-6)
    # Backend tensors in, the same answer out.
    tensors = proto.pbt_prototypes(
        keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(ids), 3
    )
    np.testing.assert_allclose(_np(tensors), expected, atol=1e-6)


def test_pbt_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 8)).astype("float32")
    ids = rng.integers(0, 9, 50)
    ids[ids == 4] = 5  # one empty cluster
    out = _np(proto.pbt_prototypes(x, ids, 9))
    np.testing.assert_allclose(out, numpy_pbt(x, ids, 9), atol=1e-5)
    assert np.all(out[4] == 0.0)


def test_gradients_flow_to_features_and_logit_scale():
    rng = np.random.default_rng(4)
    z, p = _unit(rng, 6, 8), _unit(rng, 4, 8)
    y = np.array([0, 1, 2, 3, 1, 0])
    q = _np(proto.prototype_targets(y, p * 0.5, 0.1))

    def soft(z, s):
        return proto.prototype_loss(z, p, q, s)[0]

    def hard(z, s):
        return proto.external_prototype_loss(z, p, y, s)[0]

    for fn in (soft, hard):
        value, (dz, ds) = value_and_grads(fn, z, np.float32(5.0))
        assert np.isfinite(value)
        assert np.all(np.isfinite(dz)) and np.abs(dz).max() > 0
        assert np.isfinite(ds) and abs(float(ds)) > 0
    # Against central finite differences in float64 (the closed form).
    _, (dz, ds) = value_and_grads(soft, z, np.float32(5.0))
    eps = 1e-4
    num_ds = (
        numpy_proto_loss(z, p, q.astype("float64"), 5.0 + eps)[0]
        - numpy_proto_loss(z, p, q.astype("float64"), 5.0 - eps)[0]
    ) / (2 * eps)
    np.testing.assert_allclose(ds, num_ds, rtol=1e-3, atol=1e-5)


def test_protoclip_loss_combines_terms():
    rng = np.random.default_rng(5)
    u, v = _unit(rng, 6, 8), _unit(rng, 6, 8)
    y_t, y_i, y_e = rng.integers(0, 4, 6), rng.integers(0, 4, 6), rng.integers(0, 3, 6)
    clip = objectives.infonce_loss(u, v, 14.0)
    i2t = proto.prototype_loss(
        u, proto.pbt_prototypes(u, y_t, 4), proto.prototype_targets(y_t, v[:4]), 10.0
    )
    t2i = proto.prototype_loss(
        v, proto.pbt_prototypes(v, y_i, 4), proto.prototype_targets(y_i, u[:4]), 10.0
    )
    i2e = proto.external_prototype_loss(u, proto.pbt_prototypes(u, y_e, 3), y_e, 10.0)
    t2e = proto.external_prototype_loss(v, proto.pbt_prototypes(v, y_e, 3), y_e, 10.0)
    loss, diag = proto.protoclip_loss(
        clip, i2t, t2i, i2e, t2e, clip_weight=1.0, proto_weight=0.5, external_weight=2
    )
    parts = {
        k: float(_np(t[0]))
        for k, t in zip("ctiae", (clip, i2t, t2i, i2e, t2e), strict=True)
    }
    expected = (
        parts["c"]
        + 0.5 * 0.5 * (parts["t"] + parts["i"])
        + 2 * 0.5 * (parts["a"] + parts["e"])
    )
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-6)
    assert tuple(diag) == proto.protoclip_diagnostics(external=True)
    np.testing.assert_allclose(_np(diag["proto_i2t_loss"]), parts["t"])
    np.testing.assert_allclose(
        _np(diag["external_t2e_accuracy"]), _np(t2e[1]["accuracy"])
    )
    # Without the external teacher; a weight may be a tensor (a schedule).
    loss2, diag2 = proto.protoclip_loss(
        clip, i2t, t2i, proto_weight=keras.ops.convert_to_tensor(0.0)
    )
    np.testing.assert_allclose(_np(loss2), parts["c"], rtol=1e-6)
    assert tuple(diag2) == proto.protoclip_diagnostics()
    assert "proto_t2i_accuracy" in diag2 and "external_i2e_loss" not in diag2


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(6)
    z, p = _unit(rng, 4, 8), _unit(rng, 3, 8)
    q = np.full((4, 3), 1 / 3, "float32")
    y = np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="Feature widths"):
        proto.prototype_loss(z, _unit(rng, 3, 5), q, 1.0)
    with pytest.raises(ValueError, match="Clusters of `prototypes` and `targets`"):
        proto.prototype_loss(z, p, q[:, :2], 1.0)
    with pytest.raises(ValueError, match="Rows of `features` and `targets`"):
        proto.prototype_loss(z, p, q[:3], 1.0)
    with pytest.raises(ValueError, match="`features` must have rank 2"):
        proto.prototype_loss(z[0], p, q, 1.0)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 3\)"):
        proto.external_prototype_loss(z, p, np.array([0, 1, 3, 0]), 1.0)
    with pytest.raises(ValueError, match="Rows of `features` and `labels`"):
        proto.external_prototype_loss(z, p, y[:3], 1.0)
    with pytest.raises(ValueError, match="`labels` must hold integers"):
        proto.external_prototype_loss(z, p, y.astype("float32"), 1.0)
    with pytest.raises(ValueError, match=r"`cluster_ids` must lie in \[0, 3\)"):
        proto.prototype_targets(np.array([0, -1]), p)
    with pytest.raises(ValueError, match="target_temperature"):
        proto.prototype_targets(y, p, 0.0)
    with pytest.raises(ValueError, match=r"`cluster_ids` must lie in \[0, 2\)"):
        proto.pbt_prototypes(z, y, 2)
    with pytest.raises(ValueError, match="Rows of `features_other` and `cluster_ids`"):
        proto.pbt_prototypes(z, y[:3], 3)
    with pytest.raises(ValueError, match="num_clusters"):
        proto.pbt_prototypes(z, y, 0)
    clip = objectives.infonce_loss(z, z, 1.0)
    term = proto.prototype_loss(z, p, q, 1.0)
    with pytest.raises(ValueError, match="both external terms"):
        proto.protoclip_loss(clip, term, term, external_i2e=term)
