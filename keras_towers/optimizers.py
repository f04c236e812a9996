"""Optimizers: Keras' AdamW with TensorFlow's sparse gradients densified.

Keras 3.15's Adam squares a `tf.IndexedSlices` gradient slice by slice,
before the slices of a repeated index are summed, so on TensorFlow the second
moment of an embedding row gathered `n` times in a batch is `sum(g_i^2)`
instead of `(sum g_i)^2` and its update is up to `sqrt(n)` times too large
(JAX and torch produce dense gradients, so they are unaffected). Every text
tower gathers token embeddings, so a batch that repeats a token (all of them)
trained differently on TensorFlow. `AdamW` here densifies those gradients
first; it is `CLIP.compile()`'s default optimizer (measured in
`tests/test_optimizers.py`).
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_towers")
class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with TensorFlow's `tf.IndexedSlices`
    gradients made dense before the update (the same on the other backends).
    Takes `keras.optimizers.AdamW`'s arguments."""

    def apply(self, grads, trainable_variables=None):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            grads = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                for g in grads
            ]
        return super().apply(grads, trainable_variables)
