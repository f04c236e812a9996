"""Run by `tests/test_distributed.py` in a fresh process: TensorFlow must be
split into logical CPU devices before its runtime starts.

Trains each model for one step on a batch of 7 pairs (which splits 4 + 3
over the replicas) on one device and under a
`MirroredStrategy` over 2 logical CPUs, from the same initial weights, and
prints one JSON line per check.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_towers  # noqa: E402

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (7, 32, 32, 3)).astype("uint8")
TEXTS = [f"caption number {i}" for i in range(7)]
# One strategy per process: a second MirroredStrategy reuses collective keys.
MIRRORED = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
BUILDERS = {
    "clip": lambda: keras_towers.CLIP.tiny(),
    "siglip": lambda: keras_towers.SigLIP.tiny(),
    "clip_chunked": lambda: keras_towers.CLIP.tiny(loss="infonce_chunked"),
    "three_towers": lambda: keras_towers.ThreeTowers.tiny(),
}


def numpy_values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def train(name, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = BUILDERS[name]()
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    before = numpy_values(model.trainable_variables)
    history = model.fit(
        {"images": IMAGES, "texts": TEXTS},
        batch_size=8,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    after = numpy_values(model.trainable_variables)
    paths = [v.path for v in model.trainable_variables]
    return paths, before, after, history.history["loss"][-1], model


def compare(name):
    paths, before, single, single_loss, _ = train(name, tf.distribute.get_strategy())
    _, before_m, mirrored, mirrored_loss, model = train(name, MIRRORED)
    assert all(np.array_equal(a, b) for a, b in zip(before, before_m, strict=True))
    differences = {
        path: float(np.linalg.norm(m - s) / max(np.linalg.norm(s), 1e-30))
        for path, b, s, m in zip(paths, before, single, mirrored, strict=True)
        # Zero-gradient variables (attention key biases) move by noise only.
        if np.linalg.norm(s - b) > 1e-6
    }
    moved = {
        path: float(np.linalg.norm(s - b) / max(np.linalg.norm(b), 1e-30))
        for path, s, b in zip(paths, single, before, strict=True)
    }
    return {
        "check": name,
        "replicas": model.distribute_strategy.num_replicas_in_sync,
        "jit_compile": bool(model.jit_compile),
        "max_relative_difference": max(differences.values()),
        "worst": max(differences, key=differences.get),
        "compared": len(differences),
        "variables": len(paths),
        "median_relative_move": float(np.median(list(moved.values()))),
        "loss_single": float(single_loss),
        "loss_mirrored": float(mirrored_loss),
    }


def refused():
    with MIRRORED.scope():
        model = keras_towers.ProtoCLIP.tiny(num_clusters=2, episode_size=8)
        model.compile()
    try:
        model.fit({"images": IMAGES, "texts": TEXTS}, batch_size=8, verbose=0)
    except NotImplementedError as error:
        return {"check": "protoclip_refused", "message": str(error)}
    return {"check": "protoclip_refused", "message": None}


if __name__ == "__main__":
    for check in sys.argv[1:]:
        result = refused() if check == "protoclip_refused" else compare(check)
        print(json.dumps(result), flush=True)
