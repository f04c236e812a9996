"""Cross-backend parity of CLIPRocket training: the improved CLIP recipe and
its four SSL add-ons through `fit`, augmentation included.

Each method (`clip-improved`, `siamlip`, `byolip`, `barlip`, `swalip`)
trains a tiny `CLIPRocket` (no text dropout: its masks come from backend
RNGs) for 2 epochs of 2 steps (batch 8) on the `"rocket"` views of 16
drawn shapes (`training.epoch_shuffled_view_dataset` and its epoch
callback: a weakly augmented global view and two strongly augmented views
per modality, pure functions of `(seed, epoch, index)` built in tf.data),
with `keras_towers.optimizers.AdamW`, from initial weights set by a NumPy
rule keyed on each variable's path (BYOLIP's EMA target starting as a copy
of the online weights). The result is compared with a float32 reference
computed on the torch backend by `tests/make_rocket_parity_reference.py`
(the training code is shared; the test first checks that the initial
weights and the data are the reference's, bit for bit).

The deviations quoted below are the largest seen on jax, tensorflow, and
torch with one thread (float32 summation order alone moves them as much as
a change of backend):

- every logged value of every epoch (the loss, the CL2L global and local
  terms, accuracies and logits, the add-on's loss and diagnostics),
  `HISTORY_ATOL = 3e-4` (observed <= 9.9e-5 on jax, in BarLIP's
  `positive_logit`, a mean logit, i.e. a cosine times ~14; elsewhere
  <= 3.2e-5; tensorflow <= 3.8e-5, torch <= 5.5e-6). Two bugs move them
  far more: epoch 0 read with epoch 1's batches (order and augmentation;
  `test_reference_catches_shifted_epoch`), and a BYOLIP that ignored its
  momentum, i.e. SiamLIP (>= 2.6e-3 in the add-on loss;
  `test_reference_is_well_posed`);
- the final weights, through a fingerprint of each variable's change `d`
  (its L2 norm and its dot product with a fixed random unit vector):
  `WEIGHT_ATOL = 5e-5` (observed <= 8.9e-6, in BarLIP, whose projector
  batch-normalises 8-sample batches with some features of small variance,
  2.1e-5 with jit; <= 3.7e-6 in the other runs; the norms of the changes
  are 7e-3 to 0.4), BYOLIP's EMA target included; BatchNorm moving
  statistics `MOVING_STATS_ATOL = 2e-4` (observed <= 3.4e-5, 6.4e-5 with
  jit): the moving means follow the excluded biases below.

Parameters whose gradient is exactly zero in exact arithmetic turn float32
rounding noise into Adam updates of up to about `lr` per step, so they are
not compared (observed differences up to 4.6e-4, as large as their whole
change): the attention key biases (a bias on the keys shifts every logit
of a query row equally, which softmax ignores; BYOLIP's target copies
average them), the biases of Dense layers followed by a BatchNorm in
training mode (the h heads' hidden layers, every BarLIP projector layer),
and BarLIP's last BatchNorm offset: the gradient of `beta_i` is
`sum_j dL/dC_ij beta'_j` (the other modality's batch-normalised output has
mean `beta'`), zero while both offsets are zero, as they start.
`test_final_weights_match_reference` counts them.

The train steps are eager (`run_eagerly=True`, no XLA) on every backend:
for a tiny model and 4 steps, compiling costs far more than it saves.
Measured on 2 busy CPU cores: the five runs take about 70 s eager and
100-120 s with jit on jax (the first eager run pays for compiling each
primitive, the next ones reuse them); three of them take 21 s eager,
54 s as a tf.function and 103 s with XLA on tensorflow. Compiled steps
give the same numbers within the tolerances (jax jit: history <= 3.3e-5,
weights <= 2.1e-5, moving statistics <= 6.4e-5). `fit` also gets the
dataset behind an identity filter, which spares Keras' discarded second
iterator per epoch (see `make_rocket_parity_reference.train`).
"""

import keras
import numpy as np
import pytest

from tests import make_rocket_parity_reference as reference_run

HISTORY_ATOL = 3e-4
WEIGHT_ATOL = 5e-5
MOVING_STATS_ATOL = 2e-4
#: Parameters with an exactly zero gradient (see the module docstring).
ZERO_GRADIENT_SUFFIXES = (
    "attention/key/bias",
    "h_head_dense_0/bias",
    "h_head_dense_1/bias",
)
BARLIP_ZERO_GRADIENT_SUFFIXES = (
    "projector_dense_0/bias",
    "projector_dense_1/bias",
    "projector_dense_2/bias",
    "projector_bn_2/beta",
)
#: Per run: image and text key biases (and BYOLIP's target copies), the h
#: heads' two hidden biases per modality, BarLIP's 4 per modality.
EXCLUDED = {
    "clip-improved": 6,
    "siamlip": 6,
    "byolip": 8,
    "barlip": 14,
    "swalip": 6,
}
#: The recipe's add-on weights (`objectives_ssl.ADDONS`).
ADDON_WEIGHTS = {"siamlip": 1.0, "byolip": 1.0, "barlip": 1.0, "swalip": 0.2}


@pytest.fixture(scope="module")
def reference():
    return reference_run.load_reference()


@pytest.fixture(scope="module")
def data(reference):
    """The view dataset and its epoch callback, shared by every run."""
    pairs = reference_run.make_pairs()
    assert reference_run.data_digest(pairs) == reference["data_sha256"], (
        "make_shapes changed: regenerate the reference "
        "(tests/make_rocket_parity_reference.py)"
    )
    return reference_run.make_dataset(pairs)


@pytest.fixture(scope="module", params=list(reference_run.RUNS))
def run(request, reference, data):
    """One method's run on this backend (`reference_run.run`)."""
    name = request.param
    result = reference_run.run(name, data)
    assert result["initial_sha256"] == reference["runs"][name]["initial_sha256"], (
        f"{name}: the initial weights differ from the reference's (a changed "
        "architecture, initializer or variable path, or a changed rule): "
        "regenerate the reference (tests/make_rocket_parity_reference.py)"
    )
    del result["model"]
    return {"name": name, **result}


def history_deviations(history, expected) -> dict:
    """`{name: per-epoch absolute difference}` for every reference log."""
    out = {}
    for name, values in expected.items():
        assert name in history, f"{name!r} is no longer logged"
        epochs = len(history[name])
        out[name] = np.abs(np.asarray(history[name]) - values[:epochs])
    return out


def is_zero_gradient(name, path) -> bool:
    suffixes = ZERO_GRADIENT_SUFFIXES
    if name == "barlip":
        suffixes += BARLIP_ZERO_GRADIENT_SUFFIXES
    return path.endswith(suffixes)


def test_reference_is_well_posed(reference):
    """The stored runs: the logged total is CL2L plus the weighted add-on,
    CL2L mixes real global and augmented terms, the add-ons see augmented
    views, and BYOLIP is SiamLIP until its target moves."""
    assert reference["backend"] == "torch"
    runs = reference["runs"]
    assert sorted(runs) == sorted(reference_run.RUNS)
    for name, stored in runs.items():
        history = stored["history"]
        for values in history.values():
            assert values.shape == (reference_run.EPOCHS,)
        weight = ADDON_WEIGHTS.get(name, 0.0)
        addon = history[f"{name}_loss"] if weight else 0.0
        np.testing.assert_allclose(
            history["loss"], history["clip_loss"] + weight * addon, rtol=1e-5
        )
        # Per direction (L_glob + w L_loc) / (1 + w) with w = 2 views.
        for direction in ("i2t", "t2i"):
            np.testing.assert_allclose(
                history[f"{direction}_loss"],
                (
                    history[f"global_{direction}_loss"]
                    + 2 * history[f"local_{direction}_loss"]
                )
                / 3,
                rtol=1e-5,
            )
            local = history[f"local_{direction}_loss"]
            assert np.all(local > 0)
            assert np.all(np.abs(local - history[f"global_{direction}_loss"]) > 0.05)
        np.testing.assert_allclose(
            history["clip_loss"],
            (history["i2t_loss"] + history["t2i_loss"]) / 2,
            rtol=1e-5,
        )
        if name in ("siamlip", "byolip", "barlip"):
            assert np.all(history[f"{name}_local_loss"] > 0)
            assert np.all(history[f"{name}_global_loss"] > 0)
        if name == "swalip":
            assert np.all(history["swalip_i2t_loss"] > 0)
            assert np.all(history["swalip_t2i_loss"] > 0)
        # Every compared trained parameter moved far more than the
        # tolerance (the smallest change, the logit scale's, is 6.8e-3).
        for path, norm in zip(stored["paths"], stored["norm"], strict=True):
            if not (
                is_zero_gradient(name, path)
                or path.startswith(reference_run.TARGET_PREFIX)
                or path.endswith(("moving_mean", "moving_variance"))
            ):
                assert norm > 100 * WEIGHT_ATOL, (name, path, norm)
    # SiamLIP is BYOLIP with momentum 0 (the target is the online model).
    # Step 1 is the same for both (the target starts as the online model,
    # and gets no gradient), so epoch 0's CL2L terms agree; the add-on loss
    # does not once the target lags: a BYOLIP that ignored its momentum
    # would fail the comparison.
    siamlip, byolip = runs["siamlip"]["history"], runs["byolip"]["history"]
    np.testing.assert_allclose(byolip["clip_loss"][0], siamlip["clip_loss"][0], 1e-5)
    addon_gap = np.abs(byolip["byolip_loss"] - siamlip["siamlip_loss"])
    assert np.all(addon_gap > 5 * HISTORY_ATOL), addon_gap
    # SwALIP trains CL2L without label smoothing, the others with 0.1.
    assert not np.allclose(
        runs["swalip"]["history"]["local_i2t_loss"][0],
        runs["clip-improved"]["history"]["local_i2t_loss"][0],
        atol=1e-3,
    )


def test_history_matches_reference(run, reference):
    expected = reference["runs"][run["name"]]["history"]
    assert sorted(run["history"]) == sorted(expected), "the logged names changed"
    for name, deviation in history_deviations(run["history"], expected).items():
        assert deviation.max() <= HISTORY_ATOL, (
            f"{run['name']} {name}: {run['history'][name]} vs reference "
            f"{expected[name]}"
        )


def test_final_weights_match_reference(run, reference):
    name = run["name"]
    expected = reference["runs"][name]
    prints = reference_run.fingerprint(run["initial"], run["final"])
    assert list(prints["paths"]) == expected["paths"], "the variable paths changed"
    skipped = []
    for i, path in enumerate(expected["paths"]):
        if is_zero_gradient(name, path):
            skipped.append(path)
            continue
        moving = path.endswith(("moving_mean", "moving_variance"))
        atol = MOVING_STATS_ATOL if moving else WEIGHT_ATOL
        for key in ("norm", "projection"):
            assert abs(prints[key][i] - expected[key][i]) <= atol, (
                f"{name} {path}: {key} of the change {prints[key][i]} vs "
                f"reference {expected[key][i]}"
            )
    assert len(skipped) == EXCLUDED[name], skipped


class ShiftEpoch(keras.callbacks.Callback):
    """Runs after the epoch callback: epoch `e` reads epoch `e + 1`'s
    batches (their order and augmentation), as a pipeline keyed on the
    wrong epoch would."""

    def __init__(self, epoch_callback):
        super().__init__()
        self.epoch_callback = epoch_callback

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_callback.variable.assign(epoch + 1)


def test_reference_catches_shifted_epoch(reference, data):
    """One epoch of clip-improved on epoch 1's batches instead of epoch 0's
    fails the comparison (the reference pins the augmented data)."""
    model = reference_run.build_model(None)
    reference_run.compile_model(model)
    history = reference_run.train(
        model, data, epochs=1, callbacks=[ShiftEpoch(data[1])]
    )
    expected = reference["runs"]["clip-improved"]["history"]
    deviations = history_deviations(history, expected)
    for name in ("loss", "local_i2t_loss", "local_t2i_loss"):
        assert deviations[name][0] > 5 * HISTORY_ATOL, (name, deviations[name])
