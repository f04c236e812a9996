"""Regenerate tests/data/protoclip_parity_reference.npz (ProtoCLIP training).

The reference is one short episodic `fit` of a tiny ProtoCLIP (with an
external teacher) on the torch backend, in float32:

    KERAS_BACKEND=torch python tests/make_protoclip_parity_reference.py

It stores the initial weights (every variable but the episode state, keyed
by `v.path`, rounded to float16 so that they take half the room: the run
starts from exactly these values), a SHA-256 of the data (48 drawn shapes,
their captions and fixed random "teacher" features, all NumPy-generated),
and what the run produced: the per-episode logged losses and diagnostics,
the data-set rows, cluster ids and nearest-centroid margins of every
episode, the final weights (as the change from the initial ones) and the
final episode state. `tests/test_protoclip_parity.py` repeats the run on
each backend and compares. Regenerate only when the architecture, the
objective, the clustering, the episodes (their sampling or batch order) or
the variable paths change on purpose, then run that test on all three
backends. About 200 KB.

The training code (`build_model`, `compile_model`, `run_episodes`) is
shared with the test, so both run exactly the same thing. The test refuses
a reference whose k-means labels are near a tie (the stored `margins`).
"""

import hashlib
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_towers  # noqa: E402
from keras_towers.optimizers import AdamW  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "data", "protoclip_parity_reference.npz")

#: `ProtoCLIP.tiny` arguments: K = 4 clusters over 24-sample episodes, with
#: an external teacher (a third, data-only k-means per episode).
MODEL = {"num_clusters": 4, "episode_size": 24, "external_teacher": 8}
#: Explicit AdamW (not the `compile` defaults, which may change).
OPTIMIZER = {
    "learning_rate": 2e-3,
    "weight_decay": 0.1,
    "beta_1": 0.9,
    "beta_2": 0.98,
    "epsilon": 1e-6,
}
#: `ProtoCLIPEpisodes` arguments: 3 steps per episode, seeded k-means.
EPISODES = {"batch_size": 8, "seed": 3, "kmeans_n_init": 2, "kmeans_max_iter": 10}
#: Episode 0 is InfoNCE only; episodes 1 and 2 add the prototype terms.
NUM_EPISODES = 3
NUM_PAIRS = 48
TEACHER_SEED = 11
#: Final weights are stored as float16 changes when that loses at most this.
DELTA_ROUNDING = 1e-5


def is_episode_state(model, variable) -> bool:
    """Episode state is written by the callback, not trained. Selected by
    name: its path may carry a sub-layer prefix."""
    name = variable.path.split("/")[-1]
    return name in model.episode_state_names or name == "proto_active"


def np_(x):
    return keras.ops.convert_to_numpy(x)


def episode_state(model) -> dict:
    """The model's episode state, `{name: array}`."""
    return {
        v.path.split("/")[-1]: np_(v).copy()
        for v in model.variables
        if is_episode_state(model, v)
    }


def nearest_margin(x, centroids) -> float:
    """Smallest gap between the nearest and second-nearest centroid (squared
    distances) over the rows of `x`: how far each label is from a tie."""
    distances = np.sort(((x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((distances[:, 1] - distances[:, 0]).min())


class RecordEpisodes(keras.callbacks.Callback):
    """Records, after `ProtoCLIPEpisodes.on_epoch_begin`, each episode's rows
    and state (as the train step will read them); with `margins=True` also
    how close its k-means labels are to a tie (one more feature pass)."""

    def __init__(self, episodes, margins=False):
        super().__init__()
        self.episodes = episodes
        self.margins = margins
        self.rows, self.state, self.active, self.margin = [], [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.rows.append(np.asarray(self.episodes.episode_indices).copy())
        state = episode_state(self.model)
        self.state.append(state)
        self.active.append(float(state["proto_active"]))
        if self.margins:
            # The external teacher's k-means sees the same data on every
            # backend; the image and text ones see this backend's features.
            features = self.episodes.episode_features()
            self.margin.append(
                min(
                    nearest_margin(
                        features[f"{kind}_proto"], state[f"{kind}_centroids"]
                    )
                    for kind in ("image", "text")
                )
            )


def make_data() -> dict:
    """48 drawn shapes, their captions and random "teacher" features (NumPy
    only, so the same on every backend; `data_digest` guards that)."""
    images, texts, _ = keras_towers.datasets.make_shapes(NUM_PAIRS, image_size=32)
    rng = np.random.default_rng(TEACHER_SEED)
    teacher = rng.normal(size=(NUM_PAIRS, MODEL["external_teacher"]))
    return {
        "images": images,
        "texts": np.asarray(texts),
        "teacher": teacher.astype("float32"),
    }


def data_digest(data) -> str:
    """SHA-256 of the data (stored instead of the noisy images themselves)."""
    digest = hashlib.sha256()
    for key in sorted(data):
        value = np.ascontiguousarray(data[key])
        digest.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def build_model(weights=None):
    """The tiny ProtoCLIP, with `weights` (`{path: array}`) if given."""
    model = keras_towers.ProtoCLIP.tiny(**MODEL)
    if weights is not None:
        trained = [v for v in model.variables if not is_episode_state(model, v)]
        paths = sorted(v.path for v in trained)
        if paths != sorted(weights):
            raise ValueError(
                "The stored weights do not match the model's variables; "
                "regenerate the reference. Only in the model: "
                f"{sorted(set(paths) - set(weights))}; only stored: "
                f"{sorted(set(weights) - set(paths))}"
            )
        for v in trained:
            v.assign(np.asarray(weights[v.path]).astype(v.dtype))
    return model


def compile_model(model, dense_gradients=True, **kwargs) -> list:
    """Compile with `OPTIMIZER` (and `kwargs`) and build the optimizer.

    `dense_gradients=False` uses Keras' own AdamW (differs on TensorFlow
    only: Keras' Adam mishandles sparse embedding gradients there; see
    `keras_towers.optimizers.AdamW`, which densifies them). Returns the optimizer's initial variable
    values (to rerun the compiled model from the start).
    """
    optimizer = AdamW if dense_gradients else keras.optimizers.AdamW
    model.compile(optimizer=optimizer(**OPTIMIZER), **kwargs)
    model.optimizer.build(model.trainable_variables)
    return [np_(v).copy() for v in model.optimizer.variables]


def run_episodes(model, data, callbacks=(), margins=False, num_episodes=NUM_EPISODES):
    """Fit the compiled `model` for `num_episodes` episodes of `data`.

    Returns `(history, record)`: Keras' history dict and the
    `RecordEpisodes` callback. `callbacks` run after the episode callback
    (tests use them to tamper with the state).
    """
    episodes = keras_towers.ProtoCLIPEpisodes(
        model,
        {"images": data["images"], "texts": list(data["texts"])},
        teacher_features=data["teacher"],
        **EPISODES,
    )
    record = RecordEpisodes(episodes, margins=margins)
    history = model.fit(
        episodes.dataset,
        epochs=num_episodes,
        callbacks=[episodes, *callbacks, record],
        verbose=0,
    ).history
    return history, record


def load_reference(path=OUT) -> dict:
    """The stored reference as `{"data_sha256", "initial", "final",
    "final_state", "history", "episodes", "margins", "backend"}`; `final` is
    rebuilt from the initial weights and the stored changes."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}

    def group(prefix):
        start = f"{prefix}/"
        return {k[len(start) :]: v for k, v in arrays.items() if k.startswith(start)}

    initial = group("initial")
    final = {
        p: initial[p].astype("float32") + delta.astype("float32")
        for p, delta in group("final_delta").items()
    }
    episodes = [group(f"episodes/{e}") for e in range(NUM_EPISODES)]
    return {
        "data_sha256": str(arrays["data_sha256"]),
        "initial": initial,
        "final": final,
        "final_state": group("final_state"),
        "history": group("history"),
        "episodes": episodes,
        "proto_active": arrays["proto_active"],
        "margins": arrays["margins"],
        "backend": str(arrays["backend"]),
    }


def compact_delta(delta):
    """`delta` as float16 when that rounds it by at most `DELTA_ROUNDING`."""
    small = delta.astype("float16")
    error = np.max(np.abs(small.astype("float32") - delta), initial=0.0)
    return small if error <= DELTA_ROUNDING else delta


def main():
    keras.utils.set_random_seed(1234)
    fresh = build_model()
    initial = {
        v.path: np_(v).astype("float16")
        for v in fresh.variables
        if not is_episode_state(fresh, v)
    }
    model = build_model(initial)
    compile_model(model)
    data = make_data()
    history, record = run_episodes(model, data, margins=True)
    arrays = {
        "data_sha256": np.asarray(data_digest(data)),
        "backend": np.asarray(keras.backend.backend()),
        "proto_active": np.asarray(record.active),
        "margins": np.asarray(record.margin),
    }
    arrays.update({f"initial/{p}": w for p, w in initial.items()})
    arrays.update({f"history/{k}": np.asarray(v) for k, v in history.items()})
    for episode, (rows, state) in enumerate(
        zip(record.rows, record.state, strict=True)
    ):
        arrays[f"episodes/{episode}/rows"] = rows
        for name, value in state.items():
            if name.endswith("_ids"):
                arrays[f"episodes/{episode}/{name}"] = value
    for name, value in episode_state(model).items():
        arrays[f"final_state/{name}"] = value
    for v in model.variables:
        if not is_episode_state(model, v):
            delta = np_(v) - initial[v.path].astype("float32")
            arrays[f"final_delta/{v.path}"] = compact_delta(delta)
    np.savez_compressed(OUT, **arrays)
    for key in sorted(history):
        print(f"{key:28s}", np.round(history[key], 5))
    print("nearest-centroid margins per episode:", np.round(record.margin, 5))
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
