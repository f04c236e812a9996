"""Reproducible training: epoch-seeded order, resume == uninterrupted."""

import os

import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import training
from keras_towers.datasets import make_shapes


@pytest.fixture(scope="module")
def pairs():
    images, captions, _ = make_shapes(64, seed=1)
    return training.PairArrays(images, captions)


def _epoch_orders(pairs, seed, epochs=2):
    ds, counter = training.epoch_shuffled_dataset(pairs, batch_size=8, seed=seed)
    orders = []
    for epoch in range(epochs):
        counter.on_epoch_begin(epoch)
        texts = [t for b in ds.as_numpy_iterator() for t in b["texts"]]
        orders.append(texts)
    return orders


def test_epoch_order_is_a_function_of_seed_and_epoch(pairs):
    first = _epoch_orders(pairs, seed=3)
    again = _epoch_orders(pairs, seed=3)
    other = _epoch_orders(pairs, seed=4)
    assert first == again
    assert first[0] != first[1]  # reshuffled every epoch
    assert first[0] != other[0]
    # Every pair once per epoch (64 pairs, batches of 8: nothing dropped).
    assert sorted(first[0]) == sorted(t.encode() for t in pairs.texts)


def _build():
    keras.utils.set_random_seed(0)
    model = keras_towers.CLIP.tiny()
    model.compile(learning_rate=1e-3)
    return model


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def three_epochs(pairs):
    """Weights of an uninterrupted 3-epoch run (seed 3, batches of 16)."""
    model = _build()
    training.train(model, pairs, epochs=3, batch_size=16, seed=3, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def _assert_weights(expected, model):
    for a, b in zip(expected, model.weights, strict=True):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))


def _train_3(model, pairs, backup, callbacks=()):
    return training.train(
        model,
        pairs,
        epochs=3,
        batch_size=16,
        seed=3,
        backup_dir=str(backup),
        callbacks=list(callbacks),
        verbose=0,
    )


@pytest.mark.one_backend
def test_resumed_run_ends_with_the_same_weights(pairs, three_epochs, tmp_path):
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _train_3(_build(), pairs, backup, callbacks=[_Interrupt()])
    # Checksummed, atomic backups (tests/test_atomic_writes.py): the one of
    # epoch 0 (the interrupt comes before epoch 1's).
    assert sorted(os.listdir(backup)) == ["backup-0.json", "backup-0.weights.h5"]
    resumed = _build()
    history = _train_3(resumed, pairs, backup)
    assert len(history["loss"]) < 3  # it continued, not restarted
    _assert_weights(three_epochs, resumed)


def test_pair_arrays_validate_inputs():
    with pytest.raises(ValueError, match="uint8"):
        training.PairArrays(np.zeros((2, 8, 8, 3), "float32"), ["a", "b"])
    with pytest.raises(ValueError, match="same length"):
        training.PairArrays(np.zeros((2, 8, 8, 3), "uint8"), ["a"])


def test_too_few_pairs_for_the_batch_size(pairs):
    with pytest.raises(ValueError, match="Lower the batch size"):
        training.epoch_shuffled_dataset(pairs, batch_size=1000)
