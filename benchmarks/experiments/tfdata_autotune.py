"""Experiment for `clip_train_step.py` (`--backends torch@THIS_FILE`): every
tf.data pipeline that `fit` reads keeps tf.data's autotuning on, as before
keras_towers turned it off (`keras_towers.models.base._without_autotune`).

Keras destroys the pipeline's iterator when `fit` ends; with autotune on,
that destruction waited up to seconds (measured 2026-12-01: a median 1.06 s
on tensorflow with the benchmark's preprocessed batch, up to 4.8 s on torch
with a raw, preprocessed pipeline). This variant times both sides of the
choice: the steps and the return with autotuning on.
"""

import tensorflow as tf

from keras_towers.models import base

_prepare = base.ContrastiveModel._prepare


def _prepare_with_autotune(self, x, batch_size, shuffle=False):
    x = _prepare(self, x, batch_size, shuffle=shuffle)
    if isinstance(x, tf.data.Dataset):
        options = tf.data.Options()
        options.autotune.enabled = True
        x = x.with_options(options)
    return x


base.ContrastiveModel._prepare = _prepare_with_autotune
