"""Numerical helpers shared by every layer: one L2 normalisation for tensors
(any backend) and one for NumPy arrays."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def at_least_float32(x):
    """Cast half-precision (and integer) tensors to float32; keep float32 and
    float64 as they are.

    Logits, softmax and norms run in float32 also under mixed precision.
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float16", "bfloat16") or not dtype.startswith("float"):
        return ops.cast(x, "float32")
    return x


def l2_normalize(x, epsilon: float = 1e-8):
    """L2-normalise the last axis of a tensor (in float32 for half-precision
    inputs); rows of zeros stay zero.

    Example:

    ```python
    keras_towers.ops.l2_normalize(keras.ops.ones((2, 4)))  # rows of 0.5
    ```
    """
    x = at_least_float32(x)
    return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), epsilon**2))


def l2_normalize_numpy(x, epsilon: float = 1e-12) -> np.ndarray:
    """L2-normalise the last axis of a NumPy array, in float32; rows of zeros
    stay zero (their norm is clamped to `epsilon`).

    Example:

    ```python
    keras_towers.ops.l2_normalize_numpy(np.array([[3.0, 4.0]]))  # [[0.6, 0.8]]
    ```
    """
    x = np.asarray(x, dtype="float32")
    if x.ndim == 0:
        raise ValueError("Expected an array with at least one axis, got a scalar.")
    flat = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    norms = np.sqrt(np.einsum("ij,ij->i", flat, flat))
    out = flat / np.maximum(norms, epsilon)[:, None]
    return out.reshape(x.shape)
