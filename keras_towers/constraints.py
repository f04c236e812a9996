"""Weight constraints used by the methods."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_towers")
class ClampConstraint(keras.constraints.Constraint):
    """Clamp a variable into `[min_value, max_value]` after each update.

    Example:

    ```python
    scale = model.add_weight(shape=(), constraint=ClampConstraint(0.0, 4.6052))
    ```
    """

    def __init__(self, min_value: float | None = None, max_value: float | None = None):
        self.min_value = min_value
        self.max_value = max_value

    def __call__(self, w):
        lo = -math.inf if self.min_value is None else self.min_value
        hi = math.inf if self.max_value is None else self.max_value
        return ops.clip(w, lo, hi)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}
