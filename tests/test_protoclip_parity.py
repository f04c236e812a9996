"""Cross-backend parity of ProtoCLIP training: episodes, k-means and `fit`.

A tiny ProtoCLIP with an external teacher starts from stored weights and
trains for 3 episodes (3 steps each) through `fit` on the tf.data pipeline
of `ProtoCLIPEpisodes` (seeded episodes and k-means). Episode 0 is InfoNCE
only; episodes 1 and 2 add the prototype and external terms. The result is
compared with a float32 reference computed on the torch backend by
`tests/make_protoclip_parity_reference.py` (the training code is shared):

The deviations quoted below are the largest seen on jax, tensorflow, and
torch with another thread count than the reference's (float32 summation
order alone moves them as much as a change of backend):

- every logged loss and diagnostic of every episode, `atol=3e-4` (observed
  <= 9.4e-5, in the prototype target entropies, whose 0.01 temperature
  magnifies centroid differences; a state that is stale by one episode or
  never clustered moves the prototype losses by 4e-3 or more, see
  `test_reference_catches_broken_episodes`);
- the data-set rows, `proto_active` and the image, text and external
  cluster ids of every episode: exactly. The reference stores how far each
  label is from a tie (smallest gap between the nearest and second-nearest
  squared centroid distance, >= 9e-4); across backends these distances
  differ by at most 1.4e-5;
- the final weights, by how far each variable's change from its initial
  value is from the reference change: `|final - reference| / |reference -
  initial|` (Frobenius norms) <= 5e-2, and no element off by more than
  2e-3 (about one Adam step). 9 Adam steps of lr 2e-3 move the weights by
  about 1e-2 per element. Observed: <= 4e-4 on jax and tensorflow, but on
  torch on an Intel Xeon with AMX, where the reference (made on an AMD
  EPYC) is reproduced less closely, up to 2.0e-2 (the text prototype head's
  hidden kernel, an element off by 9e-4) and 3e-3 in the text tower (an
  element off by 2.1e-4, which failed the former element-wise `atol=2e-4`
  in CI). A loss term with a wrong weight or gradient changes the affected
  variables' updates by a relative amount of order 1. The final episode
  state (centroids, prototypes): `atol=3e-4` (observed <= 6.1e-5).

Two kinds of parameters have a gradient that is exactly zero in exact
arithmetic, so Adam turns float32 rounding noise in it into updates of up to
about `lr` per step: the attention key biases (a bias on the keys shifts
every logit of a query row equally, which softmax ignores) and the
prototype heads' hidden Dense biases (the BatchNorm that follows removes any
per-feature shift in training mode). They are not compared (observed
differences up to 2.2e-3, as large as their whole change). The heads'
BatchNorm moving means follow those biases and are compared with
`atol=2e-3` (observed <= 4.6e-4); through them the inference-mode features,
hence the centroids, pick up the 1e-5 to 1e-4 differences above.

TensorFlow: Keras' Adam mishandles sparse (`tf.IndexedSlices`) gradients
with repeated indices, which the token embedding gets. The parity runs
densify them there (`keras_towers.optimizers.AdamW`, `CLIP.compile`'s default);
`test_keras_adamw_on_tensorflow`
records, as a strict xfail, that Keras' own AdamW does not match.
"""

from typing import NamedTuple

import keras
import numpy as np
import pytest

from tests import make_protoclip_parity_reference as reference_run

HISTORY_ATOL = 3e-4
#: |final - reference| / |reference - initial| per variable (norms).
WEIGHT_UPDATE_RTOL = 5e-2
#: No weight element further than this from the reference (~ one Adam step).
WEIGHT_ATOL = 2e-3
MOVING_MEAN_ATOL = 2e-3
STATE_ATOL = 3e-4
#: Reference labels must be at least this far from a tie (squared distance).
MIN_MARGIN = 2e-4
#: Parameters with an exactly zero gradient (see the module docstring).
ZERO_GRADIENT_SUFFIXES = ("attention/key/bias", "_proto_head_hidden/bias")
ID_NAMES = ("image_cluster_ids", "text_cluster_ids", "external_cluster_ids")


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def reference():
    return reference_run.load_reference()


class Run(NamedTuple):
    model: keras.Model
    optimizer_start: list
    history: dict
    record: reference_run.RecordEpisodes
    weights: dict  # final values, `{path: array}` (the model is reused)


def train(reference, compile_options=None, **options) -> Run:
    """The reference run on this backend, from a new compiled model."""
    keras.config.set_floatx("float32")
    data = reference_run.make_data()
    assert reference_run.data_digest(data) == reference["data_sha256"], (
        "make_shapes (or the teacher features) changed: regenerate the reference"
    )
    model = reference_run.build_model(reference["initial"])
    optimizer_start = reference_run.compile_model(model, **(compile_options or {}))
    history, record = reference_run.run_episodes(model, data, **options)
    weights = {v.path: np_(v).copy() for v in model.variables}
    return Run(model, optimizer_start, history, record, weights)


def rerun(run, reference, **options):
    """`run_episodes` again from the start on the already compiled model
    (JAX and TensorFlow do not compile again): `(history, record)`."""
    model = run.model
    for v in model.variables:
        if reference_run.is_episode_state(model, v):
            v.assign(np.zeros(v.shape, v.dtype))
        else:
            v.assign(reference["initial"][v.path].astype(v.dtype))
    for v, value in zip(model.optimizer.variables, run.optimizer_start, strict=True):
        v.assign(value)
    return reference_run.run_episodes(model, reference_run.make_data(), **options)


@pytest.fixture(scope="module")
def run(reference):
    return train(reference)


def history_deviations(history, reference) -> dict:
    """`{name: per-episode absolute difference}` for every reference log."""
    out = {}
    for name, expected in reference["history"].items():
        assert name in history, f"{name!r} is no longer logged"
        episodes = len(history[name])
        out[name] = np.abs(np.asarray(history[name]) - expected[:episodes])
    return out


def test_reference_is_well_posed(reference):
    """The stored run itself: prototype terms on from episode 1, the logged
    total is their weighted sum, and no label is near a tie."""
    history = reference["history"]
    np.testing.assert_array_equal(reference["proto_active"], [0.0, 1.0, 1.0])
    np.testing.assert_allclose(history["loss"][0], history["clip_loss"][0], rtol=1e-6)
    total = history["clip_loss"] + 0.5 * (
        history["proto_i2t_loss"]
        + history["proto_t2i_loss"]
        + history["external_i2e_loss"]
        + history["external_t2e_loss"]
    )
    np.testing.assert_allclose(history["loss"][1:], total[1:], rtol=1e-5)
    # Untrained prototypes would give log(K) exactly (uniform logits).
    for name in ("proto_i2t_loss", "proto_t2i_loss", "external_t2e_loss"):
        assert np.all(np.abs(history[name][1:] - np.log(4)) > 5 * HISTORY_ATOL)
    assert np.all(reference["margins"] >= MIN_MARGIN), reference["margins"]
    for episode in reference["episodes"]:
        for name in ID_NAMES:
            assert len(np.unique(episode[name])) > 1, name


def test_logged_losses_match_reference(run, reference):
    history = run.history
    for name, deviation in history_deviations(history, reference).items():
        assert deviation.max() <= HISTORY_ATOL, (
            f"{name}: {history[name]} vs reference {reference['history'][name]}"
        )


def test_episodes_and_cluster_ids_match_reference(run, reference):
    record = run.record
    np.testing.assert_array_equal(record.active, reference["proto_active"])
    for episode, expected in enumerate(reference["episodes"]):
        np.testing.assert_array_equal(record.rows[episode], expected["rows"])
        for name in ID_NAMES:
            np.testing.assert_array_equal(
                record.state[episode][name],
                expected[name],
                err_msg=f"episode {episode}: {name}",
            )


def test_final_weights_match_reference(run, reference):
    model = run.model
    state = {p.split("/")[-1]: w for p, w in run.weights.items()}
    for name, expected in reference["final_state"].items():
        atol = 0 if expected.dtype.kind == "i" else STATE_ATOL
        np.testing.assert_allclose(state[name], expected, atol=atol, err_msg=name)
    skipped = []
    for v in model.variables:
        if reference_run.is_episode_state(model, v):
            continue
        if v.path.endswith(ZERO_GRADIENT_SUFFIXES):
            skipped.append(v.path)
            continue
        actual = run.weights[v.path]
        expected = reference["final"][v.path]
        if v.path.endswith("moving_mean"):
            np.testing.assert_allclose(
                actual, expected, rtol=0, atol=MOVING_MEAN_ATOL, err_msg=v.path
            )
            continue
        np.testing.assert_allclose(
            actual, expected, rtol=0, atol=WEIGHT_ATOL, err_msg=v.path
        )
        change = np.linalg.norm(expected - reference["initial"][v.path])
        off = np.linalg.norm(actual - expected)
        assert off <= WEIGHT_UPDATE_RTOL * change, (
            f"{v.path}: {off:.3g} from the reference, whose change is {change:.3g}"
        )
    # The ViT's and the text transformer's key biases, the two heads' biases.
    assert len(skipped) == 4, skipped


class TamperState(keras.callbacks.Callback):
    """Runs after `ProtoCLIPEpisodes`: replaces the episode's clusters and
    prototypes with the previous episode's (`"stale"`) or zeros
    (`"unclustered"`)."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.previous = None

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        variables = [
            v
            for v in model.variables
            if reference_run.is_episode_state(model, v)
            and not v.path.endswith("proto_active")
        ]
        current = [np_(v).copy() for v in variables]
        if self.mode == "stale" and self.previous is not None:
            replacement = self.previous
        elif self.mode == "unclustered":
            replacement = [np.zeros_like(x) for x in current]
        else:
            replacement = current
        for v, value in zip(variables, replacement, strict=True):
            v.assign(value)
        self.previous = current


@pytest.mark.parametrize("mode", ["stale", "unclustered"])
def test_reference_catches_broken_episodes(run, reference, mode):
    """A step that read the previous episode's state, or an episode that was
    not clustered, fails the comparison (episode 1 is enough)."""
    history, _ = rerun(run, reference, callbacks=[TamperState(mode)], num_episodes=2)
    deviations = history_deviations(history, reference)
    # Episode 0 trains InfoNCE only (its prototype diagnostics do change).
    assert deviations["loss"][0] <= HISTORY_ATOL
    assert deviations["clip_loss"][0] <= HISTORY_ATOL
    for name in ("proto_i2t_loss", "proto_t2i_loss", "loss"):
        assert deviations[name][1] > 5 * HISTORY_ATOL, (name, deviations[name])


@pytest.mark.xfail(
    keras.backend.backend() == "tensorflow",
    strict=True,
    reason=(
        "Keras' Adam squares tf.IndexedSlices gradients before summing "
        "repeated indices (token embeddings): second moment sum(g_i^2) instead "
        "of (sum g_i)^2; see keras_towers.optimizers.AdamW"
    ),
)
def test_keras_adamw_on_tensorflow(reference):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras' own AdamW is what the parity run uses here")
    # Eager: the same update rule without compiling a second train step.
    options = {"dense_gradients": False, "run_eagerly": True, "jit_compile": False}
    history = train(reference, options, num_episodes=1).history
    deviations = history_deviations(history, reference)
    assert max(d.max() for d in deviations.values()) <= HISTORY_ATOL
