"""Backend-generic test helpers: gradients, reference batches, tiny data."""

from __future__ import annotations

import keras
import numpy as np


def loss_and_grads(model, batch):
    """Loss and gradients of `model.compute_loss` w.r.t. trainable variables.

    Uses each backend's own autodiff, the way its trainer does.
    """
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "jax":
        import jax

        if not model.compiled:
            model.compile()  # the jax trainer's loss function reads the optimizer
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

        def fn(trainable):
            loss, _ = model.compute_loss_and_updates(
                trainable,
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables],
                batch,
                None,
                None,
                training=True,
                optimizer_variables=[v.value for v in model.optimizer.variables],
            )
            return loss

        # Jitted: eager jax dispatches op by op (2-3x slower on these models).
        loss, grads = jax.jit(jax.value_and_grad(fn))([v.value for v in variables])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = model(batch, training=True)
            loss = model.compute_loss(x=batch, y_pred=y_pred)
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "torch":
        import torch

        for v in variables:
            v.value.grad = None
        y_pred = model(batch, training=True)
        loss = model.compute_loss(x=batch, y_pred=y_pred)
        loss.backward()
        grads = [v.value.grad for v in variables]
        _ = torch  # imported for clarity of the backend branch
    else:
        raise NotImplementedError(backend)
    grads = [
        np.zeros(v.shape, "float32") if g is None else keras.ops.convert_to_numpy(g)
        for v, g in zip(variables, grads, strict=True)
    ]
    return float(keras.ops.convert_to_numpy(loss)), {
        v.path: g for v, g in zip(variables, grads, strict=True)
    }


def random_batch(model, batch_size=4, seed=0):
    """A preprocessed batch for `model`: distinct images and captions."""
    rng = np.random.default_rng(seed)
    size = model.image_tower.image_shape[0]
    images = rng.integers(0, 256, (batch_size, size + 5, size, 3), dtype="uint8")
    texts = [
        f"{w} shape {i}"
        for i, w in enumerate(["red", "blue", "green", "tiny", "big", "odd"] * 4)
    ]
    raw = {"images": images, "texts": texts[:batch_size]}
    out = model.preprocessor(raw)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
