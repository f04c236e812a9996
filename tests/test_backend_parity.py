"""Cross-backend parity: loss and gradients against a stored float64 reference.

The reference (tests/data/parity_reference.npz) was computed in float64 on the
torch backend by tests/make_parity_reference.py; each backend recomputes the
same loss and gradients in float32 from the same weights and batch.
"""

import os

import keras
import numpy as np
import pytest

import keras_towers
from tests.helpers import loss_and_grads

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "parity_reference.npz")


def _load(loss):
    data = np.load(REFERENCE)
    prefix = f"{loss}/"

    def pick(kind):
        start = f"{prefix}{kind}/"
        return {k[len(start) :]: data[k] for k in data.files if k.startswith(start)}

    return float(data[f"{prefix}loss"]), pick("weight"), pick("grad"), pick("batch")


def _reference_model(loss):
    """The tiny CLIP with the reference weights, its float32 batch and targets."""
    ref_loss, weights, ref_grads, batch = _load(loss)
    model = keras_towers.CLIP.tiny(loss=loss)
    assert sorted(v.path for v in model.variables) == sorted(weights)
    for v in model.variables:
        v.assign(weights[v.path].astype(v.dtype))
    batch = {
        k: (x.astype("float32") if x.dtype == np.float64 else x)
        for k, x in batch.items()
    }
    return model, batch, ref_loss, ref_grads


@pytest.mark.parametrize("loss", ["infonce", "sigmoid"])
def test_loss_and_gradients_match_reference(loss):
    model, batch, ref_loss, ref_grads = _reference_model(loss)
    value, grads = loss_and_grads(model, batch)
    np.testing.assert_allclose(value, ref_loss, atol=1e-5, rtol=0)
    assert sorted(grads) == sorted(ref_grads)
    # 1e-5 absolute, relative to the tensor's scale where that exceeds 1:
    # embedding-table gradients reach ~20 here and float32 itself resolves
    # them only to ~1e-6.
    for path, grad in grads.items():
        scale = max(1.0, float(np.max(np.abs(ref_grads[path]))))
        diff = float(np.max(np.abs(grad - ref_grads[path])))
        assert diff <= 1e-5 * scale, (
            f"{path}: max abs diff {diff:.3g} (scale {scale:.3g})"
        )


@pytest.mark.parametrize("loss", ["infonce", "sigmoid"])
def test_every_trainable_variable_gets_a_gradient(loss):
    """Guards keras-hub's shared-path trap (half the params untrained on torch)."""
    model, batch, _, _ = _reference_model(loss)
    _, grads = loss_and_grads(model, batch)
    assert len(grads) == len(model.trainable_variables)
    zero = [p for p, g in grads.items() if not np.any(g != 0)]
    assert not zero, f"no gradient reaches {zero}"
    paths = [v.path for v in model.variables]
    assert len(paths) == len(set(paths))


def test_every_variable_registered_with_torch():
    if keras.backend.backend() != "torch":
        pytest.skip("torch parameter registration")
    model = keras_towers.CLIP.tiny()
    registered = {id(p) for p in model.parameters()}
    missing = [
        v.path for v in model.trainable_variables if id(v.value) not in registered
    ]
    assert not missing, f"not registered as torch parameters: {missing}"
