"""Reproducible training: epoch-seeded order, resume == uninterrupted."""

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


def test_resumed_run_ends_with_the_same_weights(pairs, tmp_path):
    straight = _build()
    training.train(straight, pairs, epochs=3, batch_size=16, seed=3, verbose=0)

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        training.train(
            _build(),
            pairs,
            epochs=3,
            batch_size=16,
            seed=3,
            backup_dir=backup,
            callbacks=[_Interrupt()],
            verbose=0,
        )
    resumed = _build()
    history = training.train(
        resumed, pairs, epochs=3, batch_size=16, seed=3, backup_dir=backup, verbose=0
    )
    assert len(history["loss"]) < 3  # it continued, not restarted
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )


def test_pair_arrays_validate_inputs():
    with pytest.raises(ValueError, match="uint8"):
        training.PairArrays(np.zeros((2, 8, 8, 3), "float32"), ["a", "b"])
    with pytest.raises(ValueError, match="same length"):
        training.PairArrays(np.zeros((2, 8, 8, 3), "uint8"), ["a"])


def test_too_few_pairs_for_the_batch_size(pairs):
    with pytest.raises(ValueError, match="Lower the batch size"):
        training.epoch_shuffled_dataset(pairs, batch_size=1000)
