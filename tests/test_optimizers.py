"""keras_towers.optimizers.AdamW: the same update on every backend."""

import keras
import numpy as np

from keras_towers.optimizers import AdamW


def _first_update(optimizer_cls):
    """Row 1 of an embedding after one step on a batch that uses token 1
    three times (loss = sum of the gathered values)."""
    embedding = keras.layers.Embedding(4, 2, embeddings_initializer="zeros")
    model = keras.Sequential([keras.Input((3,), dtype="int32"), embedding])
    model.compile(
        optimizer=optimizer_cls(learning_rate=0.1, weight_decay=0.0),
        loss=lambda y_true, y_pred: -keras.ops.sum(y_pred),
    )
    model.train_on_batch(np.array([[1, 1, 1]], "int32"), np.zeros((1, 3, 2)))
    return keras.ops.convert_to_numpy(embedding.embeddings)[1]


def test_repeated_tokens_get_one_learning_rate_step():
    # Adam's first step moves each coordinate by about the learning rate,
    # whatever the gradient's size; Keras' AdamW on TensorFlow moved it by
    # sqrt(3) x 0.1 here (sparse gradient squared slice by slice).
    np.testing.assert_allclose(_first_update(AdamW), [0.1, 0.1], rtol=1e-4)


def test_is_the_default_and_serializes():
    import keras_towers

    model = keras_towers.CLIP.tiny()
    model.compile()
    assert type(model.optimizer) is AdamW
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model.optimizer)
    )
    assert type(restored) is AdamW
    assert restored.get_config() == model.optimizer.get_config()
