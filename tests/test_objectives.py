"""Objectives against NumPy closed forms."""

import keras
import numpy as np
import pytest

from keras_towers import objectives


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")


def _log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def numpy_infonce(u, v, s, eps=0.0):
    logits = s * u.astype("float64") @ v.astype("float64").T
    n = len(u)
    target = np.eye(n) * (1 - eps) + eps / n
    rows = -(target * _log_softmax(logits, 1)).sum(1).mean()
    cols = -(target * _log_softmax(logits, 0)).sum(0).mean()
    return 0.5 * (rows + cols), logits


def numpy_sigmoid(u, v, t, b):
    logits = t * u.astype("float64") @ v.astype("float64").T + b
    z = 2 * np.eye(len(u)) - 1
    return -np.log(1 / (1 + np.exp(-z * logits))).sum() / len(u), logits


def _np(x):
    return float(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize(
    "n,d,s,eps",
    [(1, 4, 1.0, 0.0), (5, 8, 14.3, 0.0), (16, 32, 100.0, 0.1), (7, 3, 2.5, 0.5)],
)
def test_infonce_matches_numpy(n, d, s, eps):
    rng = np.random.default_rng(n)
    u, v = _unit(rng, n, d), _unit(rng, n, d)
    loss, diag = objectives.infonce_loss(u, v, s, label_smoothing=eps)
    expected, logits = numpy_infonce(u, v, s, eps)
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _np(diag["i2t_accuracy"]), np.mean(logits.argmax(1) == np.arange(n)), atol=1e-6
    )
    np.testing.assert_allclose(
        _np(diag["t2i_accuracy"]), np.mean(logits.argmax(0) == np.arange(n)), atol=1e-6
    )
    np.testing.assert_allclose(
        _np(diag["positive_logit"]), np.diag(logits).mean(), rtol=1e-5, atol=1e-5
    )
    off = logits[~np.eye(n, dtype=bool)]
    np.testing.assert_allclose(
        _np(diag["negative_logit"]),
        off.mean() if off.size else 0.0,
        rtol=1e-5,
        atol=1e-5,
    )


def test_infonce_perfect_alignment_has_low_loss_and_full_accuracy():
    u = np.eye(8, dtype="float32")
    loss, diag = objectives.infonce_loss(u, u, 100.0)
    assert _np(loss) < 1e-6
    assert _np(diag["i2t_accuracy"]) == 1.0 and _np(diag["t2i_accuracy"]) == 1.0


def test_infonce_is_symmetric_in_modalities():
    rng = np.random.default_rng(3)
    u, v = _unit(rng, 6, 5), _unit(rng, 6, 5)
    a, _ = objectives.infonce_loss(u, v, 10.0)
    b, _ = objectives.infonce_loss(v, u, 10.0)
    np.testing.assert_allclose(_np(a), _np(b), rtol=1e-6)


@pytest.mark.parametrize(
    "n,d,t,b",
    [
        (1, 4, 10.0, -10.0),
        (6, 8, 10.0, -10.0),
        (12, 16, 3.0, 0.5),
        (4, 4, 100.0, -2.71),
    ],
)
def test_sigmoid_matches_numpy(n, d, t, b):
    rng = np.random.default_rng(n + 1)
    u, v = _unit(rng, n, d), _unit(rng, n, d)
    loss, diag = objectives.sigmoid_loss(u, v, t, b)
    expected, logits = numpy_sigmoid(u, v, t, b)
    np.testing.assert_allclose(_np(loss), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _np(diag["positive_logit"]), np.diag(logits).mean(), rtol=1e-5, atol=1e-4
    )


def test_sigmoid_is_stable_for_extreme_logits():
    u = np.eye(4, dtype="float32")
    loss, _ = objectives.sigmoid_loss(u, -u, 1e4, 0.0)
    assert np.isfinite(_np(loss))


def test_half_precision_inputs_compute_in_float32():
    rng = np.random.default_rng(0)
    u, v = _unit(rng, 4, 8), _unit(rng, 4, 8)
    loss16, _ = objectives.infonce_loss(
        keras.ops.cast(u, "float16"), keras.ops.cast(v, "float16"), 14.0
    )
    assert keras.backend.standardize_dtype(loss16.dtype) == "float32"


def test_registry():
    assert objectives.get("infonce") is objectives.infonce_loss
    assert objectives.get("sigmoid") is objectives.sigmoid_loss
    with pytest.raises(ValueError, match="Unknown objective .*Known: "):
        objectives.get("nope")
    with pytest.raises(ValueError, match="label_smoothing"):
        objectives.infonce_loss(
            np.eye(2, dtype="float32"),
            np.eye(2, dtype="float32"),
            1.0,
            label_smoothing=1.0,
        )
