"""Regenerate tests/data/parity_reference.npz (the cross-backend reference).

The reference is computed in float64 on the torch backend:

    KERAS_BACKEND=torch python tests/make_parity_reference.py

Every backend's float32 loss and gradients are then compared to it in
`tests/test_backend_parity.py`. Regenerate only when the architecture or the
objective changes on purpose.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_towers  # noqa: E402
from tests.helpers import loss_and_grads  # noqa: E402
from tests.helpers import random_batch  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "data", "parity_reference.npz")


def build(loss):
    keras.utils.set_random_seed(1234)
    return keras_towers.CLIP.tiny(loss=loss)


def main():
    keras.config.set_floatx("float64")
    arrays = {}
    for loss in ("infonce", "sigmoid"):
        model = build(loss)
        # Non-trivial scale/bias so that they matter in the gradients.
        rng = np.random.default_rng(7)
        for v in model.variables:
            if v.dtype.startswith("float") and "logit" not in v.path:
                v.assign(v.numpy() + rng.normal(0, 0.02, v.shape))
        batch = random_batch(model, batch_size=4)
        batch["images"] = batch["images"].astype("float64")
        value, grads = loss_and_grads(model, batch)
        arrays[f"{loss}/loss"] = np.array(value)
        for v in model.variables:
            arrays[f"{loss}/weight/{v.path}"] = keras.ops.convert_to_numpy(v.value)
        for path, g in grads.items():
            arrays[f"{loss}/grad/{path}"] = g
        for k, x in batch.items():
            arrays[f"{loss}/batch/{k}"] = x
        print(loss, value, len(grads), "gradients")
    np.savez_compressed(OUT, **arrays)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
