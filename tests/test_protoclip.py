"""ProtoCLIP: the model, its loss against NumPy, and episodes through `fit`."""

import keras
import numpy as np
import pytest

from keras_towers.datasets import make_shapes
from keras_towers.models.protoclip import ProtoCLIP
from keras_towers.models.protoclip_episodes import ProtoCLIPEpisodes
from tests.helpers import loss_and_grads
from tests.helpers import run_roundtrip
from tests.test_three_towers import numpy_infonce

TAU = 0.01


@pytest.fixture(scope="module")
def shapes():
    images, texts, _ = make_shapes(48, image_size=32)
    return images, list(texts)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def batch_of(model, images, texts, sample_index):
    batch = model.preprocessor({"images": images, "texts": texts})
    batch = {k: np_(v) for k, v in batch.items()}
    batch["sample_index"] = np.asarray(sample_index, "int32")
    return batch


def random_state(model, seed=0):
    rng = np.random.default_rng(seed)
    k, d, n = model.active_clusters, model.proto_dim, model.episode_size
    state = {}
    for name in model.episode_state_names:
        if name.endswith("_ids"):
            state[name] = rng.integers(0, k, n).astype("int32")
        else:
            state[name] = rng.normal(size=(k, d)).astype("float32")
    return state


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def numpy_protoclip_terms(model, y_pred, state, sample_index, active):
    """Every ProtoCLIP term and the total loss, from NumPy closed forms."""
    idx = np.asarray(sample_index)
    s = float(np.exp(np_(model.logit_scale_proto)))
    z_i, z_t = np_(y_pred["image_proto"]), np_(y_pred["text_proto"])

    def targets(ids, centroids):
        logits = centroids[ids[idx]] @ centroids.T / TAU
        return np.exp(log_softmax(logits))

    def soft_ce(z, prototypes, q):
        return -np.mean(np.sum(q * log_softmax(s * z @ prototypes.T), axis=1))

    if model.pbt:
        p_i, p_t = state["image_prototypes"], state["text_prototypes"]
    else:
        p_i, p_t = state["text_centroids"], state["image_centroids"]
    terms = {
        "clip_loss": numpy_infonce(
            np_(y_pred["image_embeddings"]),
            np_(y_pred["text_embeddings"]),
            float(np.exp(np_(model.logit_scale))),
        ),
        "proto_i2t_loss": soft_ce(
            z_i, p_i, targets(state["text_cluster_ids"], state["text_centroids"])
        ),
        "proto_t2i_loss": soft_ce(
            z_t, p_t, targets(state["image_cluster_ids"], state["image_centroids"])
        ),
    }
    loss = model.clip_weight * terms["clip_loss"] + active * model.proto_weight * (
        0.5 * (terms["proto_i2t_loss"] + terms["proto_t2i_loss"])
    )
    if model.external_teacher is not None:
        labels = state["external_cluster_ids"][idx]
        for kind, z in (("i2e", z_i), ("t2e", z_t)):
            prefix = "image" if kind == "i2e" else "text"
            logits = s * z @ state[f"{prefix}_external_prototypes"].T
            ce = -np.mean(log_softmax(logits)[np.arange(len(idx)), labels])
            terms[f"external_{kind}_loss"] = ce
        loss += (
            active
            * model.external_weight
            * 0.5
            * (terms["external_i2e_loss"] + terms["external_t2e_loss"])
        )
    terms["loss"] = loss
    return terms


@pytest.mark.parametrize(
    "options",
    [{}, {"pbt": False, "proto_weight": 0.5}, {"external_teacher": 6}],
    ids=["pbt", "no_pbt", "teacher"],
)
def test_loss_matches_numpy_closed_forms(shapes, options):
    model = ProtoCLIP.tiny(num_clusters=5, episode_size=12, **options)
    model.logit_scale_proto.assign(np.log(20.0))
    state = random_state(model)
    model.set_episode_state(proto_active=True, **state)
    images, texts = shapes
    sample_index = np.array([3, 0, 11, 7, 3, 5])
    batch = batch_of(model, images[:6], texts[:6], sample_index)
    y_pred = model(batch, training=False)
    loss = float(np_(model.compute_loss(x=batch, y_pred=y_pred)))
    expected = numpy_protoclip_terms(model, y_pred, state, sample_index, 1.0)
    np.testing.assert_allclose(loss, expected["loss"], rtol=1e-4)
    logged = {m.name: float(np_(m.result())) for m in model.diagnostic_trackers}
    for name, value in expected.items():
        if name != "loss":
            np.testing.assert_allclose(logged[name], value, rtol=1e-4, err_msg=name)
    # proto_active = 0 leaves only the CLIP term.
    model.set_episode_state(proto_active=False)
    loss = float(np_(model.compute_loss(x=batch, y_pred=y_pred)))
    np.testing.assert_allclose(loss, expected["clip_loss"], rtol=1e-4)


def test_every_trainable_variable_gets_a_gradient(shapes):
    model = ProtoCLIP.tiny(num_clusters=5, episode_size=12, external_teacher=6)
    model.set_episode_state(proto_active=True, **random_state(model))
    images, texts = shapes
    batch = batch_of(model, images[:6], texts[:6], [3, 0, 11, 7, 2, 5])
    loss, grads = loss_and_grads(model, batch)
    assert np.isfinite(loss)
    zero = [path for path, g in grads.items() if not np.any(g)]
    assert not zero, f"no gradient for {zero}"
    assert any("proto_head" in p for p in grads) and "protoclip/logit_scale_proto" in (
        grads
    )


class Snapshots(keras.callbacks.Callback):
    """What the train step should see: weights and state at each episode start."""

    def __init__(self, episodes):
        super().__init__()
        self.episodes = episodes
        self.weights, self.rows, self.active = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        self.weights.append([np_(v).copy() for v in model.weights])
        self.rows.append(self.episodes.episode_indices.copy())
        self.active.append(float(np_(model.proto_active)))


def check_state_is_built_from_features(model, state, batch):
    """Cluster ids are nearest centroids and prototypes are PBT means of the
    inference-mode features of the episode (in episode order)."""
    y_pred = model(batch, training=False)
    features = {k: np_(y_pred[f"{k}_proto"]) for k in ("image", "text")}
    for kind in ("image", "text"):
        x, ids = features[kind], state[f"{kind}_cluster_ids"]
        distances = ((x[:, None] - state[f"{kind}_centroids"][None]) ** 2).sum(-1)
        np.testing.assert_allclose(
            distances[np.arange(len(x)), ids], distances.min(1), atol=1e-5
        )

    def pbt(x, ids):
        out = np.zeros((model.active_clusters, x.shape[1]), "float32")
        for k in np.unique(ids):
            out[k] = x[ids == k].mean(0)
        return out

    other = {"image": "text", "text": "image"}
    for kind in ("image", "text"):
        expected = pbt(features[kind], state[f"{other[kind]}_cluster_ids"])
        np.testing.assert_allclose(
            state[f"{kind}_prototypes"], expected, atol=1e-5, err_msg=kind
        )
        if model.external_teacher is not None:
            expected = pbt(features[kind], state["external_cluster_ids"])
            np.testing.assert_allclose(
                state[f"{kind}_external_prototypes"], expected, atol=1e-5
            )


def test_episodes_through_fit_and_the_step_sees_each_episode(shapes):
    # One step per episode (batch = episode), so each episode's logged loss is
    # the loss of one batch computed from the weights and state at its start:
    # a step that read stale prototypes (JAX's threaded state) would not match.
    images, texts = shapes
    model = ProtoCLIP.tiny(num_clusters=5, episode_size=16, external_teacher=8)
    model.compile(learning_rate=1e-3)
    teacher = np.random.default_rng(0).normal(size=(48, 8)).astype("float32")
    episodes = ProtoCLIPEpisodes(
        model,
        {"images": images, "texts": texts},
        batch_size=16,
        teacher_features=teacher,
        kmeans_n_init=1,
    )
    snapshots = Snapshots(episodes)
    history = model.fit(
        episodes.dataset, epochs=3, callbacks=[episodes, snapshots], verbose=0
    ).history
    for key in ("loss", "clip_loss", "proto_i2t_loss", "external_t2e_accuracy"):
        assert len(history[key]) == 3 and np.all(np.isfinite(history[key])), key
    assert snapshots.active == [0.0, 1.0, 1.0]
    # Episode 0 is InfoNCE only.
    np.testing.assert_allclose(history["loss"][0], history["clip_loss"][0], rtol=1e-5)

    names = [v.path for v in model.weights]
    sample_index = np.arange(16)

    def state_at(episode):
        weights = dict(zip(names, snapshots.weights[episode], strict=True))
        return {n: weights[f"episode_state/{n}"] for n in model.episode_state_names}

    assert not np.allclose(
        state_at(1)["image_prototypes"], state_at(2)["image_prototypes"]
    )
    keys = ("loss", "clip_loss", "proto_i2t_loss", "proto_t2i_loss")
    keys += ("external_i2e_loss", "external_t2e_loss")
    for episode in range(3):
        model.set_weights(snapshots.weights[episode])
        rows = snapshots.rows[episode]
        batch = batch_of(model, images[rows], [texts[r] for r in rows], sample_index)
        check_state_is_built_from_features(model, state_at(episode), batch)
        y_pred = model(batch, training=True)
        terms = numpy_protoclip_terms(
            model, y_pred, state_at(episode), sample_index, snapshots.active[episode]
        )
        for key in keys:
            np.testing.assert_allclose(
                history[key][episode], terms[key], rtol=2e-4, err_msg=key
            )
        if episode:
            stale = numpy_protoclip_terms(
                model, y_pred, state_at(episode - 1), sample_index, 1.0
            )
            assert abs(stale["proto_i2t_loss"] - terms["proto_i2t_loss"]) > 1e-3


def test_small_data_clips_k_or_errors(shapes):
    # 48 pairs, K = 32 > episode size 24: K becomes 24 with k_policy="clip".
    images, texts = shapes
    with pytest.raises(ValueError, match="k_policy"):
        ProtoCLIP.tiny(num_clusters=32, episode_size=24)
    model = ProtoCLIP.tiny(num_clusters=32, episode_size=24, k_policy="clip")
    assert model.active_clusters == 24
    assert model.episode_state.image_prototypes.shape == (24, 16)
    pairs = {"images": images, "texts": texts}
    with pytest.raises(ValueError, match="teacher_features"):
        ProtoCLIPEpisodes(model, pairs, batch_size=12, teacher_features=np.ones(48))
    episodes = ProtoCLIPEpisodes(model, pairs, batch_size=12, kmeans_n_init=1)
    episodes.on_epoch_begin(1)
    assert float(np_(model.proto_active)) == 1.0
    ids = np_(model.episode_state.image_cluster_ids)
    assert ids.shape == (24,) and ids.max() < 24 and len(np.unique(ids)) > 1
    rows = episodes.episode_indices
    batch = batch_of(model, images[rows], [texts[r] for r in rows], np.arange(24))
    state = {n: np_(getattr(model.episode_state, n)) for n in model.episode_state_names}
    check_state_is_built_from_features(model, state, batch)
    teacher = ProtoCLIP.tiny(num_clusters=4, episode_size=16, external_teacher=8)
    with pytest.raises(ValueError, match="teacher_features"):
        ProtoCLIPEpisodes(teacher, pairs, batch_size=8)
    with pytest.raises(ValueError, match=r"\(48, 8\)"):
        ProtoCLIPEpisodes(
            teacher, pairs, batch_size=8, teacher_features=np.ones((48, 4))
        )


def test_option_errors():
    with pytest.raises(ValueError, match="pbt=True"):
        ProtoCLIP.tiny(external_teacher=8, pbt=False)
    with pytest.raises(ValueError, match="external_teacher"):
        ProtoCLIP.tiny(external_weight=1.0)
    with pytest.raises(ValueError, match="InfoNCE"):
        ProtoCLIP.tiny(loss="sigmoid")
    assert ProtoCLIP.tiny(external_teacher=8).external_weight == 1.0
    model = ProtoCLIP.tiny()
    # As the official code: no weight decay on the prototype heads.
    model.compile()
    decayed = {
        v.path
        for v in model.trainable_variables
        if model.optimizer._use_weight_decay(v)
    }
    assert not any("proto_head" in p for p in decayed)
    assert any("image_tower" in p for p in decayed)
    with pytest.raises(ValueError, match="shape"):
        model.set_episode_state(image_cluster_ids=np.zeros(3, "int32"))
    with pytest.raises(ValueError, match="sample_index"):
        batch = batch_of(model, *make_shapes(2, image_size=32)[:2], [0, 1])
        batch.pop("sample_index")
        model.compute_loss(x=batch, y_pred=model(batch))


def test_roundtrip_keeps_the_episode_state_in_keras_files_not_presets(shapes, tmp_path):
    model = ProtoCLIP.tiny(num_clusters=5, episode_size=12, external_teacher=6)
    state = random_state(model, seed=1)
    model.set_episode_state(proto_active=True, **state)
    images, texts = shapes
    raw = {"images": images[:4], "texts": texts[:4]}
    batch = batch_of(model, images[:4], texts[:4], [0, 1, 2, 3])
    restored = run_roundtrip(model, batch, tmp_path, raw=raw)
    for name, value in state.items():
        np.testing.assert_array_equal(
            np_(getattr(restored["keras"].episode_state, name)), value, err_msg=name
        )
        # Training state: presets leave it out (the next episode re-clusters).
        assert not np.any(np_(getattr(restored["preset"].episode_state, name)))
    assert float(np_(restored["keras"].proto_active)) == 1.0


class _EpochEndWeights(keras.callbacks.Callback):
    """Image and text tower weights at the end of each episode."""

    def __init__(self):
        super().__init__()
        self.image, self.text = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.image[epoch] = [np_(w) for w in self.model.image_tower.weights]
        self.text[epoch] = [np_(w) for w in self.model.text_tower.weights]


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, episode):
        super().__init__()
        self.episode, self.current = episode, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.episode:
            raise RuntimeError("interrupted")


def _lit_phase_run(pairs, backup_dir=None, interrupt=None):
    keras.utils.set_random_seed(0)
    model = ProtoCLIP.tiny(num_clusters=4, episode_size=16)
    model.compile(learning_rate=1e-2, weight_decay=0.01)
    episodes = ProtoCLIPEpisodes(
        model, pairs, batch_size=8, lit_start_episode=2, kmeans_n_init=1
    )
    weights = _EpochEndWeights()
    callbacks = [weights] + ([_Interrupt(interrupt)] if interrupt else [])
    history = episodes.fit(4, callbacks=callbacks, backup_dir=backup_dir, verbose=0)
    return model, history, weights


# Episode bookkeeping and backup/resume are backend-independent Python, and
# ProtoCLIP's step is checked on every backend by tests/test_protoclip_parity.py;
# four episodes twice cost 40-70 s on jax and tensorflow.
@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="backend-independent; runs on torch"
)
def test_lit_phase_freezes_the_image_tower_and_resumes_exactly(shapes, tmp_path):
    images, texts = shapes
    pairs = {"images": images, "texts": texts}
    model, history, weights = _lit_phase_run(pairs)
    # Episode 0 (warm-up) and the LiT phase (2, 3) train InfoNCE only.
    with_proto = [
        a != b for a, b in zip(history["loss"], history["clip_loss"], strict=True)
    ]
    assert with_proto == [False, True, False, False]
    for a, b in zip(weights.image[1], weights.image[3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(weights.text[1], weights.text[3], strict=True)
    )
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(weights.image[0], weights.image[1], strict=True)
    )
    # The optimizer state carried over: 4 episodes x 2 steps.
    assert int(np_(model.optimizer.iterations)) == 8

    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="interrupted"):
        _lit_phase_run(pairs, backup_dir=str(backup), interrupt=3)
    assert backup.is_dir()
    resumed, resumed_history, _ = _lit_phase_run(pairs, backup_dir=str(backup))
    assert not backup.exists()
    assert len(resumed_history["loss"]) == 1  # only episode 3 ran again
    np.testing.assert_allclose(resumed_history["loss"][0], history["loss"][3])
    for a, b in zip(model.trainable_weights, resumed.trainable_weights, strict=True):
        np.testing.assert_allclose(np_(a), np_(b), rtol=0, atol=1e-6, err_msg=a.path)


@pytest.mark.one_backend
def test_episodes_on_cached_features_of_locked_backbones(shapes):
    from keras_towers import cache_locked_features

    images, texts = shapes
    model = ProtoCLIP.tiny(num_clusters=4, episode_size=16, lock_image="backbone")
    assert model.image_tower.locked_part == "backbone"
    cached = cache_locked_features(model, {"images": images, "texts": texts})
    arrays = {k: [] for k in cached.element_spec}
    for row in cached.as_numpy_iterator():
        for k, v in row.items():
            arrays[k].append(v)
    arrays = {k: np.stack(v) for k, v in arrays.items()}
    assert sorted(arrays) == ["image_features", "texts"]
    backbone = [np_(w) for w in model.image_tower.backbone.weights]
    head = [np_(w) for w in model.image_tower.projection.weights]
    model.compile(learning_rate=1e-2)
    episodes = ProtoCLIPEpisodes(model, arrays, batch_size=8, kmeans_n_init=1)
    history = model.fit(episodes.dataset, epochs=2, callbacks=[episodes], verbose=0)
    assert history.history["loss"][1] != history.history["clip_loss"][1]
    for a, b in zip(backbone, model.image_tower.backbone.weights, strict=True):
        np.testing.assert_array_equal(a, np_(b))
    assert any(
        not np.array_equal(a, np_(b))
        for a, b in zip(head, model.image_tower.projection.weights, strict=True)
    )
    with pytest.raises(ValueError, match="image input"):
        ProtoCLIPEpisodes(model, {"texts": texts}, batch_size=8)
