"""Global negatives across replicas (`keras_towers.distributed`).

- Rows forms: the shares of any split of the batch into shards sum to the
  dense objective, with the same gradients (every backend; pure functions).
- TensorFlow: one step under a `MirroredStrategy` over 2 logical CPUs equals
  one step on one device with the same global batch, for CLIP, SigLIP and
  Three Towers (a fresh process: logical devices must be set before
  TensorFlow starts), and ProtoCLIP is refused there.
- torch: `fit` in a multi-process `torch.distributed` job is refused.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from keras_towers import distributed
from keras_towers import objectives
from tests.helpers import value_and_grads

#: Uneven shards, as on a last partial batch.
SHARDS = (3, 1, 4)


def embeddings(seed, n=8, dim=6):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def shares(rows_form, u, v, *scalars):
    """Sum over `SHARDS` of the rows form's shares, and the row-weighted
    mean of its diagnostics."""
    total, diagnostics, start = 0.0, {}, 0
    n = ops.shape(u)[0]
    for size in SHARDS:
        share, diag = rows_form(
            u[start : start + size],
            v[start : start + size],
            u,
            v,
            start,
            *scalars,
        )
        total = total + share
        for key, value in diag.items():
            diagnostics[key] = diagnostics.get(key, 0.0) + value * size / n
        start += size
    return total, diagnostics


CASES = {
    "infonce": (objectives.infonce_loss, (3.0,)),
    "infonce_smoothed": (objectives.infonce_loss, (3.0, 0.1)),
    "sigmoid": (objectives.sigmoid_loss, (3.0, -2.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shares_sum_to_the_dense_objective_with_its_gradients(case):
    objective, scalars = CASES[case]
    u, v = embeddings(0), embeddings(1)
    # A near-duplicate caption makes argmax diagnostics non-trivial.
    v[5] = v[2] + 1e-3

    def dense(u, v):
        return objective(u, v, *scalars)[0]

    def sharded(u, v):
        return shares(objective.rows_form, u, v, *scalars)[0]

    expected, expected_grads = value_and_grads(dense, u, v)
    value, grads = value_and_grads(sharded, u, v)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    _, want_diag = objective(u, v, *scalars)
    _, got_diag = shares(objective.rows_form, u, v, *scalars)
    assert sorted(got_diag) == sorted(want_diag) == sorted(objective.diagnostics)
    for key in want_diag:
        np.testing.assert_allclose(
            ops.convert_to_numpy(got_diag[key]),
            ops.convert_to_numpy(want_diag[key]),
            rtol=1e-5,
            atol=1e-6,
            err_msg=key,
        )


def test_one_shard_is_the_dense_objective_and_pair_loss_outside_replicas():
    u, v = embeddings(2), embeddings(3)
    dense, _ = objectives.infonce_loss(u, v, 5.0)
    whole, _ = objectives.infonce_rows(u, v, u, v, 0, 5.0)
    np.testing.assert_allclose(ops.convert_to_numpy(whole), ops.convert_to_numpy(dense))
    loss, _ = distributed.pair_loss(objectives.infonce_loss, u, v, logit_scale=5.0)
    np.testing.assert_allclose(ops.convert_to_numpy(loss), ops.convert_to_numpy(dense))
    assert distributed.num_replicas() == 1
    assert distributed.all_gather(u) is u
    assert distributed.scale_to_replicas(loss) is loss


def test_chunked_objectives_have_no_rows_form():
    # Under tf.distribute they are computed whole on the gathered batch.
    for name in ("infonce_chunked", "sigmoid_chunked"):
        assert getattr(objectives.get(name), "rows_form", None) is None


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torch.distributed refusal"
)
def test_torch_fit_in_a_multi_process_job_is_refused(monkeypatch):
    import torch.distributed as dist

    import keras_towers

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    model = keras_towers.CLIP.tiny()
    with pytest.raises(RuntimeError, match="4 processes.*KERAS_BACKEND=jax"):
        model.fit({"images": np.zeros((2, 32, 32, 3)), "texts": ["a", "b"]})


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute engine"
)
def test_mirrored_strategy_step_equals_the_single_device_step():
    script = os.path.join(os.path.dirname(__file__), "distributed_tf_script.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    root = os.path.dirname(os.path.dirname(__file__))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    checks = ["clip", "siglip", "three_towers", "protoclip_refused"]
    run = subprocess.run(
        [sys.executable, script, *checks],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = {
        r["check"]: r
        for r in map(json.loads, (x for x in run.stdout.splitlines() if x[:1] == "{"))
    }
    assert sorted(results) == sorted(checks)
    message = results.pop("protoclip_refused")["message"]
    assert message and "ProtoCLIP" in message and "KERAS_BACKEND=jax" in message
    for name, result in results.items():
        assert result["replicas"] == 2, name
        # Nearly every variable moved, and far more than the tolerance.
        assert result["compared"] >= result["variables"] - 4, name
        assert result["median_relative_move"] > 1e-3, name
        assert result["max_relative_difference"] <= 1e-5, result
        np.testing.assert_allclose(
            result["loss_mirrored"], result["loss_single"], rtol=1e-6, err_msg=name
        )
