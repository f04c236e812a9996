"""Experiment for `clip_train_step.py` (`--backends torch@THIS_FILE`): every
tf.data pipeline that `fit` reads gets `autotune.enabled = False`.

On jax and torch, Keras iterates the tf.data pipeline inside a generator and
destroys the iterator when `fit` ends; with autotune on, that destruction
waited up to seconds (measured 2026-12-01: up to 4.8 s on torch with a raw,
preprocessed pipeline). This times what turning autotune off costs the steps.
"""

import tensorflow as tf

from keras_towers.models import base

_prepare = base.ContrastiveModel._prepare


def _prepare_without_autotune(self, x, batch_size, shuffle=False):
    x = _prepare(self, x, batch_size, shuffle=shuffle)
    if isinstance(x, tf.data.Dataset):
        options = tf.data.Options()
        options.autotune.enabled = False
        x = x.with_options(options)
    return x


base.ContrastiveModel._prepare = _prepare_without_autotune
