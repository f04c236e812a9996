"""Regenerate tests/data/rocket_parity_reference.npz (CLIPRocket training).

The reference is one short `fit` per method of the improved CLIP recipe
(`clip-improved`, `siamlip`, `byolip`, `barlip`, `swalip`: a tiny
`CLIPRocket` with each add-on) on the torch backend, in float32:

    KERAS_BACKEND=torch python tests/make_rocket_parity_reference.py

Each run trains `CLIPRocket.tiny(addon=..., text_dropout=0.0)` (dropout
masks come from backend RNGs) for `EPOCHS` epochs of `NUM_PAIRS //
BATCH_SIZE` steps on 32-px drawn shapes, through
`training.epoch_shuffled_view_dataset` with the recipe's `"rocket"` views
(a weakly augmented global view and two strongly augmented views of each
modality, built in tf.data per `(seed, epoch, index)`) and its epoch
callback, so the augmentation is part of what is compared.

Initial weights: Keras' initializers draw from backend-specific RNGs, and
storing every initial weight would take 0.6 MB even in float16. Instead every variable
is set from a NumPy rule keyed on its path (`initial_value`): a variable
whose built value is constant (zeros, ones, the logit scales, BatchNorm
statistics, position ids) keeps it; any other float variable gets normal
values from `np.random.default_rng(crc32(path))`, scaled by `1/sqrt(fan_in)`
(`fan_in = prod(shape[:-1])`) for matrices and tensors, by `VECTOR_STD` for
vectors. BYOLIP's EMA target (`target_*` variables) starts as a copy of the
online weights, as `rocket_heads.frozen_copy` makes it: each takes the value
of the online path it copies. The reference stores a SHA-256 of each run's
initial weights and one of the data, so a changed rule, initializer,
architecture or `make_shapes` is reported as "regenerate the reference".

Stored per run (`<run>/...`): every value Keras' history logged, per epoch
(the loss, the CL2L terms and diagnostics, the add-on's loss and
diagnostics), the variable paths, and a fingerprint of each float
variable's change `d = final - initial`: its L2 norm and its dot product
with a fixed random unit vector keyed on the path (`unit_vector`). About
40 KB in all.

Regenerate only when the architecture, the objectives, the augmentation,
the batch order or the variable paths change on purpose, then run
`tests/test_rocket_parity.py` on all three backends.

The training code (`build_model`, `compile_model`, `train`) is shared with
the test, so both run exactly the same thing.
"""

import hashlib
import os
import warnings
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_towers  # noqa: E402
from keras_towers import recipes_rocket  # noqa: E402
from keras_towers import training  # noqa: E402
from keras_towers.models.rocket import CLIPRocket  # noqa: E402
from keras_towers.models.rocket_heads import ema_pairs  # noqa: E402
from keras_towers.optimizers import AdamW  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "data", "rocket_parity_reference.npz")

#: Run name (the `keras-towers train --method`, as in
#: `recipes_rocket.ROCKET_ADDONS`) -> `CLIPRocket` add-on.
RUNS = {
    "clip-improved": None,
    "siamlip": "siamlip",
    "byolip": "byolip",
    "barlip": "barlip",
    "swalip": "swalip",
}
IMAGE_SIZE = 32
NUM_PAIRS = 16
BATCH_SIZE = 8
EPOCHS = 2
#: Seeds the batch order and every augmented view.
SEED = 5
#: Explicit AdamW (not the `compile` defaults, which may change).
OPTIMIZER = {
    "learning_rate": 2e-3,
    "weight_decay": 0.1,
    "beta_1": 0.9,
    "beta_2": 0.98,
    "epsilon": 1e-6,
}
#: Eager train steps on every backend: for a tiny model and a few steps,
#: compiling (jax's jit, tf.function) costs far more than it saves, and
#: the math is the same (see `tests/test_rocket_parity.py`).
COMPILE = {"run_eagerly": True, "jit_compile": False}
#: Standard deviation of the rule's random vectors (`initial_value`).
VECTOR_STD = 0.02
#: The prefix `frozen_copy` gives BYOLIP's EMA target variables.
TARGET_PREFIX = "target_"
#: Keys the fingerprint's unit vectors apart from the initial values.
FINGERPRINT_SALT = 0x5EED


def np_(x):
    return keras.ops.convert_to_numpy(x)


def make_pairs() -> dict:
    """`NUM_PAIRS` drawn shapes and their captions (NumPy only, so the same
    on every backend; `data_digest` guards that)."""
    images, texts, _ = keras_towers.datasets.make_shapes(
        NUM_PAIRS, image_size=IMAGE_SIZE
    )
    return {"images": images, "texts": np.asarray([str(t) for t in texts])}


def digest(arrays: dict) -> str:
    """SHA-256 of `{name: array}` (names, dtypes, shapes and bytes; signed
    integers as int64: position ids are int32 on torch, int64 on
    TensorFlow)."""
    sha = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        if value.dtype.kind == "i":
            value = value.astype("int64")
        sha.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        sha.update(value.tobytes())
    return sha.hexdigest()


def data_digest(pairs) -> str:
    return digest(pairs)


def path_seed(path: str, salt: int = 0) -> int:
    """A stable integer of a variable path (not Python's salted `hash`)."""
    return zlib.crc32(path.encode()) + (salt << 32)


def initial_value(path: str, built: np.ndarray) -> np.ndarray:
    """The rule's value of variable `path`, whose Keras-built value is
    `built` (see the module docstring)."""
    if built.dtype.kind != "f" or built.size == 0 or np.all(built == built.flat[0]):
        return built
    rng = np.random.default_rng(path_seed(path))
    if built.ndim >= 2:
        scale = 1.0 / np.sqrt(np.prod(built.shape[:-1]))
    else:
        scale = VECTOR_STD
    return (scale * rng.normal(size=built.shape)).astype(built.dtype)


def online_path(path: str, paths) -> str:
    """The online variable a BYOLIP target variable copies (else `path`)."""
    if path.startswith(TARGET_PREFIX) and path[len(TARGET_PREFIX) :] in paths:
        return path[len(TARGET_PREFIX) :]
    return path


def build_model(addon, **kwargs):
    """`CLIPRocket.tiny(addon=addon, text_dropout=0, **kwargs)` with the
    rule's initial weights."""
    model = CLIPRocket.tiny(
        image_size=IMAGE_SIZE, addon=addon, text_dropout=0.0, **kwargs
    )
    built = {v.path: np_(v) for v in model.variables}
    if len(built) != len(model.variables):
        raise ValueError("Two variables share a path: the rule needs unique ones.")
    values = {p: initial_value(p, b) for p, b in built.items()}
    for v in model.variables:
        v.assign(values[online_path(v.path, values)])
    # As the model intends: the EMA target starts equal to the online model.
    for kind in ("image", "text"):
        for part in ("tower", "projector"):
            target = getattr(model, f"target_{kind}_{part}")
            if target is None:
                continue
            for t, o in ema_pairs(target, getattr(model, f"{kind}_{part}")):
                if not np.array_equal(np_(t), np_(o)):
                    raise AssertionError(f"{t.path} does not start as {o.path}")
    return model


def initial_weights(model) -> dict:
    return {v.path: np_(v).copy() for v in model.variables}


def compile_model(model, **kwargs):
    """Compile with `OPTIMIZER` (`keras_towers.optimizers.AdamW`: Keras' own
    Adam mishandles TensorFlow's sparse embedding gradients) and
    `COMPILE` (and `kwargs`)."""
    model.compile(optimizer=AdamW(**OPTIMIZER), **{**COMPILE, **kwargs})


def make_dataset(pairs):
    """`training.epoch_shuffled_view_dataset` of `pairs` with the recipe's
    `"rocket"` views and seed `SEED`: `(dataset, epoch_callback)`. One
    dataset serves every run (each `fit` starts again at epoch 0)."""
    image_views, text_views = recipes_rocket.views("rocket", IMAGE_SIZE)
    return training.epoch_shuffled_view_dataset(
        pairs, BATCH_SIZE, SEED, image_views, text_views
    )


def train(model, data, epochs=EPOCHS, callbacks=()) -> dict:
    """Fit the compiled `model` on `data` (`make_dataset`'s): Keras' history
    dict. `callbacks` run after the epoch callback that keys the
    augmentation.

    `fit` gets the dataset behind an identity `filter`, which hides its
    cardinality: with a known one, Keras opens each epoch's iterator twice
    (once more at the end of the previous epoch, then discards it), and
    opening one costs about 0.7 s here (instantiating the augmentation
    graph) plus the augmented batches its prefetch computes for nothing.
    The batches are the same; a run takes about a third less on
    tensorflow.
    """
    dataset, epoch_callback = data
    dataset = dataset.filter(_keep)
    with warnings.catch_warnings():
        # Keras learns the number of steps from the first epoch's end.
        warnings.filterwarnings("ignore", "Your input ran out of data")
        return model.fit(
            dataset,
            epochs=epochs,
            callbacks=[epoch_callback, *callbacks],
            verbose=0,
        ).history


@tf.autograph.experimental.do_not_convert
def _keep(_):
    return True


def unit_vector(path: str, shape) -> np.ndarray:
    rng = np.random.default_rng(path_seed(path, FINGERPRINT_SALT))
    u = rng.normal(size=shape)
    return u / np.linalg.norm(u)


def fingerprint(initial: dict, final: dict) -> dict:
    """`{"paths", "norm", "projection"}` of the change of every float
    variable (float64, sorted by path)."""
    paths = sorted(p for p, w in initial.items() if w.dtype.kind == "f")
    norm, projection = [], []
    for p in paths:
        delta = final[p].astype("float64") - initial[p].astype("float64")
        norm.append(np.linalg.norm(delta))
        projection.append(np.sum(delta * unit_vector(p, delta.shape)))
    return {
        "paths": np.asarray(paths),
        "norm": np.asarray(norm),
        "projection": np.asarray(projection),
    }


def run(name: str, data, **kwargs) -> dict:
    """Run `name` (a key of `RUNS`) from the start on `data`
    (`make_dataset`'s), `kwargs` going to `CLIPRocket.tiny`: `{"model",
    "initial_sha256", "history", "initial", "final"}`."""
    keras.config.set_floatx("float32")
    model = build_model(RUNS[name], **kwargs)
    initial = initial_weights(model)
    compile_model(model)
    history = train(model, data)
    return {
        "model": model,
        "initial_sha256": digest(initial),
        "history": {k: np.asarray(v, "float64") for k, v in history.items()},
        "initial": initial,
        "final": initial_weights(model),
    }


def load_reference(path=OUT) -> dict:
    """`{"data_sha256", "backend", "runs": {name: {"initial_sha256",
    "history", "paths", "norm", "projection"}}}`."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    runs = {}
    for name in RUNS:
        start = f"{name}/"
        group = {k[len(start) :]: v for k, v in arrays.items() if k.startswith(start)}
        runs[name] = {
            "initial_sha256": str(group.pop("initial_sha256")),
            "paths": [str(p) for p in group.pop("paths")],
            "norm": group.pop("norm"),
            "projection": group.pop("projection"),
            "history": {
                k[len("history/") :]: v
                for k, v in group.items()
                if k.startswith("history/")
            },
        }
    return {
        "data_sha256": str(arrays["data_sha256"]),
        "backend": str(arrays["backend"]),
        "runs": runs,
    }


def main():
    pairs = make_pairs()
    arrays = {
        "data_sha256": np.asarray(data_digest(pairs)),
        "backend": np.asarray(keras.backend.backend()),
    }
    data = make_dataset(pairs)
    for name in RUNS:
        result = run(name, data)
        arrays[f"{name}/initial_sha256"] = np.asarray(result["initial_sha256"])
        for key, value in result["history"].items():
            arrays[f"{name}/history/{key}"] = value
        prints = fingerprint(result["initial"], result["final"])
        arrays[f"{name}/paths"] = prints["paths"]
        arrays[f"{name}/norm"] = prints["norm"]
        arrays[f"{name}/projection"] = prints["projection"]
        print(name)
        for key in sorted(result["history"]):
            print(f"  {key:28s}", np.round(result["history"][key], 5))
    np.savez_compressed(OUT, **arrays)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
