"""One `fit` step under `keras.distribution` == the same step on one device.

Run by `tests/test_distributed_jax.py` in a subprocess with JAX and 4
simulated host devices (`XLA_FLAGS` must be set before jax is imported, so
this cannot run inside a pytest process that already imported Keras). By
hand, from the repository root (the default `XLA_FLAGS` below when unset):

    KERAS_BACKEND=jax python tests/distributed_jax_script.py [CASE ...]

(cases: the keys of `CASES`; default: all of them).

For each case a model is built from the same seed twice, once with no
distribution and once under a `keras.distribution` one, and trained for one
SGD step on the same global batch of 8. Under GSPMD the step is one program
over global arrays, so the loss (and every batch statistic: BatchNorm,
cross-correlations, Sinkhorn) sees the global batch and the weights should
agree to float32 round-off. The `"clip"` case also trains under
`ModelParallel` with `keras_towers.layout_maps.tower_layout_map` on a 2x2
(batch, model) mesh. The last line printed is `RESULT <json>`: per case, the
largest relative weight difference, the relative size of the step, the two
losses, and (ModelParallel) which variables were sharded.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
#: 4 simulated host devices; the cheaper LLVM passes halve XLA's compile
#: time, which is most of this script's run time (the same flags for the
#: single-device and the distributed step).
XLA_FLAGS = (
    "--xla_force_host_platform_device_count=4 "
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
os.environ.setdefault("XLA_FLAGS", XLA_FLAGS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_towers  # noqa: E402
from keras_towers import layout_maps  # noqa: E402
from keras_towers.datasets import make_shapes  # noqa: E402
from keras_towers.models.three_towers import ThreeTowers  # noqa: E402

B = 8
#: One-layer towers (as the other methods' `tiny()`): half the compile time.
CONFIG = "tiny_shallow"
#: Per variable, `||w_dist - w_single|| <= RTOL * ||w_single|| + ATOL * sqrt(size)`.
#: `ATOL` is float32 round-off on weights of order 1: it matters only for
#: variables whose gradient is zero in exact arithmetic (the attention key
#: biases, whose `q . b_k` adds the same logit to a whole softmax row, and the
#: biases of dense layers followed by BatchNorm, which subtracts them again),
#: whose value after the step is round-off (~1e-8) on both sides.
RTOL = 1e-5
ATOL = 1e-7
#: Below this update norm a variable counts as not moved by the step.
ZERO_UPDATE = 1e-6


def np_(x):
    return keras.ops.convert_to_numpy(x)


def raw_batch():
    images, texts, _ = make_shapes(B, image_size=32)
    return {"images": images, "texts": [str(t) for t in texts]}


def pairs_batch(model):
    return model.preprocessor(raw_batch())


def protoclip_batch(model):
    return {**model.preprocessor(raw_batch()), "sample_index": np.arange(B)}


def rocket_batch(model):
    raw = raw_batch()
    images, texts = raw["images"], raw["texts"]
    raw["images_aug"] = np.stack([images[:, ::-1], np.roll(images, 5, axis=2)], 1)
    raw["texts_aug"] = np.array([[t.replace("a ", ""), t + " here"] for t in texts])
    raw["texts"] = np.array(texts)
    return model.preprocess_samples(raw)


def unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def protoclip_model():
    """A ProtoCLIP in its prototype phase, with a fixed random episode state
    (unit-norm centroids and prototypes, as means of unit embeddings are)."""
    model = keras_towers.ProtoCLIP.tiny(num_clusters=4, episode_size=B)
    rng = np.random.default_rng(0)
    k, d = model.active_clusters, model.proto_dim
    state = {}
    for name in model.episode_state_names:
        if name.endswith("_ids"):
            state[name] = rng.integers(0, k, B).astype("int32")
        else:
            state[name] = unit_rows(rng.normal(size=(k, d))).astype("float32")
    model.set_episode_state(proto_active=True, **state)
    return model


def rocket_model(addon):
    return lambda: keras_towers.CLIPRocket.tiny(addon=addon)


#: case -> (model builder, preprocessed batch of the model). The batch is
#: preprocessed eagerly, so `fit` gets arrays (no tf.data map to trace).
CASES = {
    "clip": (lambda: keras_towers.CLIP.tiny(config=CONFIG), pairs_batch),
    "siglip": (lambda: keras_towers.SigLIP.tiny(config=CONFIG), pairs_batch),
    "three_towers": (ThreeTowers.tiny, pairs_batch),
    "protoclip": (protoclip_model, protoclip_batch),
    "rocket_barlip": (rocket_model("barlip"), rocket_batch),
    "rocket_siamlip": (rocket_model("siamlip"), rocket_batch),
    "rocket_byolip": (rocket_model("byolip"), rocket_batch),
    "rocket_swalip": (rocket_model("swalip"), rocket_batch),
}


def one_step(build, batch_of, distribution, accumulation_steps=1):
    """Weights before and after one SGD step, the logged loss and the model."""
    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(0)
        model = build()
        before = [np_(v) for v in model.trainable_variables]
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        batch = {k: np_(v) for k, v in batch_of(model).items()}
        history = model.fit(
            batch,
            batch_size=B,
            epochs=1,
            shuffle=False,
            verbose=0,
            accumulation_steps=accumulation_steps,
        )
        history = history.history
        after = [np_(v) for v in model.trainable_variables]
    finally:
        keras.distribution.set_distribution(None)
    return before, after, float(history["loss"][0]), model


def compare(single, distributed):
    """How far the distributed step's weights are from the single-device
    step's, per variable and relative to the step itself."""
    (w0, w1, loss1, model), (v0, v1, loss2, _) = single, distributed
    assert len(w1) == len(v1) == len(model.trainable_variables)
    init = max(
        float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(w0, v0, strict=True)
    )
    rel, tolerance, zero_update = {}, {}, []
    for variable, a0, a, b in zip(model.trainable_variables, w0, w1, v1, strict=True):
        diff = float(np.linalg.norm(a - b))
        norm = float(np.linalg.norm(a))
        tolerance[variable.path] = diff / (RTOL * norm + ATOL * np.sqrt(a.size))
        if np.linalg.norm(a - a0) < ZERO_UPDATE:
            zero_update.append(variable.path)
        else:
            rel[variable.path] = diff / norm

    def flat(ws):
        return np.concatenate([x.ravel() for x in ws])

    step = np.linalg.norm(flat(w1) - flat(w0))
    worst = max(rel, key=rel.get)
    return {
        "variables": len(w1),
        "init_max_abs_diff": init,
        # The largest `||w_dist - w_single|| / ||w_single||` over the
        # variables the step moved, and which variable it is.
        "max_rel_diff": rel[worst],
        "worst_variable": worst,
        # The largest difference as a fraction of its tolerance (<= 1 passes).
        "max_tolerance_fraction": max(tolerance.values()),
        "zero_update_variables": zero_update,
        # The step, relative to the weights, and the difference of the two
        # runs relative to the step: the check is not passed by a tiny step.
        "step_rel": float(step / np.linalg.norm(flat(w1))),
        "diff_over_step": float(np.linalg.norm(flat(w1) - flat(v1)) / step),
        "loss_single": loss1,
        "loss_distributed": loss2,
    }


def main(names):
    devices = keras.distribution.list_devices()
    out = {"devices": len(devices), "cases": {}, "seconds": {}}
    data_parallel = keras.distribution.DataParallel(devices=devices)
    for name in names:
        start = time.time()
        build, batch_of = CASES[name]
        single = one_step(build, batch_of, None)
        out["cases"][name] = compare(single, one_step(build, batch_of, data_parallel))
        if name == "clip":
            mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices)
            layout_map = layout_maps.tower_layout_map(single[3], mesh)
            model_parallel = keras.distribution.ModelParallel(
                layout_map=layout_map, batch_dim_name="batch"
            )
            result = one_step(build, batch_of, model_parallel)
            case = compare(single, result)
            sharded = {
                v.path: str(v.value.sharding.spec)
                for v in result[3].variables
                if not v.value.sharding.is_fully_replicated
            }
            case["sharded"] = sharded
            case["layout_map_sharded"] = sorted(
                layout_maps.sharded_paths(layout_map, single[3])
            )
            out["cases"]["clip_model_parallel"] = case
            # Large effective batches on several devices: accumulation
            # (2 micro-batches, each split over the 4 devices) equals the
            # single-device step on the whole batch.
            out["cases"]["clip_data_parallel_accumulation"] = compare(
                single, one_step(build, batch_of, data_parallel, accumulation_steps=2)
            )
        out["seconds"][name] = round(time.time() - start, 1)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
