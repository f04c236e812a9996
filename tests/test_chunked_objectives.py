"""Chunked InfoNCE / sigmoid equal the dense objectives (values, gradients,
diagnostics) and train a CLIP / SigLIP through `fit`."""

import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import objectives
from keras_towers import objectives_chunked
from tests.helpers import value_and_grads

N, D = 37, 16


def _pairs(seed=0):
    """Unit embeddings whose positives are mostly (not always) the nearest."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(N, D))
    v = u + 1.2 * rng.normal(size=(N, D))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return u.astype("float32"), v.astype("float32")


def _assert_close(actual, expected, what):
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(
        actual, expected, rtol=0, atol=2e-5 * scale, err_msg=what
    )


def _check(dense, chunked_at, args, chunk_sizes=(8, N, 64)):
    """`chunked_at(chunk_size)` equals `dense` for each chunk size."""
    expected, expected_grads = value_and_grads(lambda *a: dense(*a)[0], *args)
    expected_diag = dense(*args)[1]
    for chunk_size in chunk_sizes:
        chunked = chunked_at(chunk_size)
        value, grads = value_and_grads(lambda *a, f=chunked: f(*a)[0], *args)
        np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=chunk_size)
        for i, (g, e) in enumerate(zip(grads, expected_grads, strict=True)):
            _assert_close(g, e, f"chunk {chunk_size}: gradient of argument {i}")
        diag = chunked(*args)[1]
        assert set(diag) == set(expected_diag)
        for key, e in expected_diag.items():
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(diag[key]),
                keras.ops.convert_to_numpy(e),
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"chunk {chunk_size}: {key}",
            )


def test_infonce_matches_dense():
    u, v = _pairs()
    _check(
        objectives.infonce_loss,
        lambda c: (
            lambda a, b, s: objectives_chunked.chunked_infonce_loss(
                a, b, s, chunk_size=c
            )
        ),
        (u, v, np.float32(20.0)),
    )


def test_infonce_label_smoothing_matches_dense():
    u, v = _pairs()
    _check(
        lambda a, b, s: objectives.infonce_loss(a, b, s, label_smoothing=0.1),
        lambda c: (
            lambda a, b, s: objectives_chunked.chunked_infonce_loss(
                a, b, s, label_smoothing=0.1, chunk_size=c
            )
        ),
        (u, v, np.float32(20.0)),
        chunk_sizes=(8,),
    )


def test_sigmoid_matches_dense():
    u, v = _pairs(1)
    _check(
        objectives.sigmoid_loss,
        lambda c: (
            lambda a, b, s, t: objectives_chunked.chunked_sigmoid_loss(
                a, b, s, t, chunk_size=c
            )
        ),
        (u, v, np.float32(10.0), np.float32(-4.0)),
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="unknown batch size: tf only"
)
def test_unknown_batch_size_in_a_tf_function():
    """`fit` on a tf.data pipeline traces with batch size `None`."""
    import tensorflow as tf

    u, v = _pairs(2)
    spec = tf.TensorSpec((None, D), tf.float32)

    @tf.function(input_signature=[spec, spec])
    def both(a, b):
        return (
            objectives_chunked.chunked_infonce_loss(a, b, 20.0, chunk_size=8)[0],
            objectives_chunked.chunked_sigmoid_loss(a, b, 10.0, -4.0, chunk_size=8)[0],
        )

    infonce, sigmoid = both(u, v)
    np.testing.assert_allclose(
        infonce.numpy(), objectives.infonce_loss(u, v, 20.0)[0].numpy(), rtol=1e-5
    )
    np.testing.assert_allclose(
        sigmoid.numpy(),
        objectives.sigmoid_loss(u, v, 10.0, -4.0)[0].numpy(),
        rtol=1e-5,
    )


def test_registered_and_refuses_bad_options():
    assert {"infonce_chunked", "sigmoid_chunked"} <= set(objectives.names())
    u, v = _pairs()
    with pytest.raises(ValueError, match="chunk_size"):
        objectives_chunked.chunked_infonce_loss(u, v, 1.0, chunk_size=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        objectives_chunked.chunked_infonce_loss(u, v, 1.0, label_smoothing=1.0)


def test_fit_with_chunked_objective():
    # SigLIP's chunked loss needs the bias weight; InfoNCE's gets smoothing.
    assert keras_towers.SigLIP.tiny(loss="sigmoid_chunked").logit_bias is not None
    model = keras_towers.CLIP.tiny(loss="infonce_chunked", label_smoothing=0.1)
    assert model.logit_bias is None
    assert model.objective_kwargs()["label_smoothing"] == 0.1
    images, captions, _ = keras_towers.datasets.make_shapes(6, seed=0)
    batch = {
        k: keras.ops.convert_to_numpy(t)
        for k, t in model.preprocessor({"images": images, "texts": captions}).items()
    }
    model.compile(learning_rate=1e-3)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(batch, batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [
        not np.array_equal(b, keras.ops.convert_to_numpy(w))
        for b, w in zip(before, model.trainable_weights, strict=True)
    ]
    assert all(changed), sum(changed)
