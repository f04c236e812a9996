"""transformers' `CLIPTokenizer`, reproduced inside `tf.data` as well as eagerly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import preprocessing_function
from keras_hub.tokenizers import CLIPTokenizer

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def _nfc_and_whitespace_tf(texts):
    import tensorflow_text as tf_text

    texts = tf_text.normalize_utf8(texts, "NFC")
    # Unicode White_Space in RE2 terms (RE2's \s is ASCII-only); transformers'
    # normalizer collapses runs of it into one space.
    return tf.strings.regex_replace(texts, r"[\s\x{0b}\x{85}\p{Z}]+", " ")


# CLIP's pre-tokenisation pattern (transformers / tokenizers `CLIPTokenizer`).
CLIP_SPLIT_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
    r"|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"
)


@keras.saving.register_keras_serializable(package="keras_towers")
class TransformersCLIPTokenizer(CLIPTokenizer):
    """keras-hub's `CLIPTokenizer` with CLIP's exact splitting inside tf.data.

    keras-hub runs two implementations: eagerly it uses the `tokenizers`
    library with CLIP's normaliser and split pattern (identical to
    transformers), but in `tf.data` / `tf.function` it splits with GPT-2's
    pattern and skips the normaliser. Measured differences: digit runs
    ("123" is one BPE word instead of "1", "2", "3"), decomposed accents (no
    NFC) and non-ASCII spaces (U+00A0, U+3000) become tokens. This subclass
    replaces only the TensorFlow splitting: NFC, Unicode whitespace
    collapsing, lower-casing and CLIP's pattern; the BPE merges and the
    eager path are keras-hub's.

    Args:
        vocabulary: dict or path of `vocab.json`.
        merges: list or path of `merges.txt`.

    Example:

    ```python
    tokenizer = TransformersCLIPTokenizer(vocabulary=vocab, merges=merges)
    tokenizer(["a photo of 2 cats"])
    ```
    """

    #: transformers maps symbols missing from the vocabulary to its unk
    #: token, CLIP's end token (subclasses whose BPE covers every symbol may
    #: turn this off).
    unknown_to_end_token = True

    def _clean_tf(self, texts):
        """The texts as transformers' `CLIPTokenizer` sees them before
        splitting: NFC, Unicode whitespace collapsed, lower case."""
        return tf.strings.lower(_nfc_and_whitespace_tf(texts), encoding="utf-8")

    def _split_tf(self, texts):
        """Cleaned texts -> ragged BPE words (CLIP's pattern), blanks dropped."""
        import tensorflow_text as tf_text

        # Keep the matches; the pieces between them are whitespace only.
        words = tf_text.regex_split(texts, CLIP_SPLIT_PATTERN, CLIP_SPLIT_PATTERN)
        return tf.ragged.boolean_mask(words, tf.strings.strip(words) != "")

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        self._maybe_initialized_tf()
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = tf.expand_dims(inputs, 0)
        if inputs.shape.rank != 1:
            raise ValueError(
                "`tokenize()` inputs should be a string, list of strings, or "
                f"string tensor with rank < 2. Received: {inputs}"
            )
        words = self._split_tf(self._clean_tf(inputs))
        flat = words.flat_values

        cached = self.cache.lookup(flat)
        unseen = tf.equal(cached, "")

        def merge_unseen():
            self._bpe_merge_and_update_cache_tf(tf.boolean_mask(flat, unseen))
            return self.cache.lookup(flat)

        merged = tf.cond(tf.reduce_any(unseen), merge_unseen, lambda: cached)
        pieces = tf.strings.split(merged, sep=" ")
        values = pieces.flat_values
        if self.compute_dtype != tf.string:
            values = self.token_to_id_map.lookup(values)
            if self.unknown_to_end_token:
                values = tf.where(
                    values < 0, tf.cast(self.end_token_id, values.dtype), values
                )
            values = tf.cast(values, self.compute_dtype)
        tokens = tf.RaggedTensor.from_row_splits(
            values, tf.gather(pieces.row_splits, words.row_splits)
        )
        if self.sequence_length:
            shape = tokens.shape.as_list()
            shape[-1] = self.sequence_length
            tokens = tokens.to_tensor(shape=shape, default_value=self.pad_token_id)
        if unbatched:
            tokens = tf.squeeze(tokens, 0)
        return tokens


def _token_content(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token


def read_bpe(path: str | os.PathLike) -> tuple[dict, list]:
    """`(vocabulary, merges)` of a transformers CLIP tokenizer directory.

    `tokenizer.json` is preferred, as transformers itself loads it when
    present; otherwise `vocab.json` + `merges.txt`.
    """
    path = Path(path)
    tokenizer_json = path / TOKENIZER_FILE
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        model = data.get("model", {})
        if model.get("type", "BPE") != "BPE":
            raise ValueError(
                f"{tokenizer_json} holds a {model.get('type')!r} model; CLIP "
                "checkpoints use a byte-level BPE."
            )
        if model.get("end_of_word_suffix") not in (None, "</w>"):
            raise ValueError(
                f"{tokenizer_json} uses end_of_word_suffix="
                f"{model.get('end_of_word_suffix')!r}; CLIP's BPE uses '</w>'."
            )
        vocabulary = dict(model["vocab"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        for token in data.get("added_tokens", []):
            vocabulary.setdefault(token["content"], int(token["id"]))
    elif (path / VOCAB_FILE).is_file() and (path / MERGES_FILE).is_file():
        vocabulary = json.loads((path / VOCAB_FILE).read_text(encoding="utf-8"))
        lines = (path / MERGES_FILE).read_text(encoding="utf-8").split("\n")
        merges = [
            line.strip()
            for line in lines
            if line.strip() and not line.startswith("#version")
        ]
    else:
        raise FileNotFoundError(
            f"No tokenizer in {str(path)!r}: expected {TOKENIZER_FILE}, or "
            f"{VOCAB_FILE} and {MERGES_FILE}."
        )
    for token in (START_TOKEN, END_TOKEN):
        if token not in vocabulary:
            raise ValueError(
                f"The tokenizer vocabulary in {str(path)!r} has no {token!r}; "
                "not a CLIP tokenizer."
            )
    return vocabulary, merges


def _pad_token(path: Path) -> str:
    for name in (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE):
        file = path / name
        if file.is_file():
            content = _token_content(json.loads(file.read_text()).get("pad_token"))
            if content is not None:
                return content
    return END_TOKEN  # transformers' CLIPTokenizer default


def load_tokenizer(path: str | os.PathLike) -> tuple[TransformersCLIPTokenizer, int]:
    """The checkpoint's tokenizer and its padding id.

    Example:

    ```python
    tokenizer, pad_id = load_tokenizer("/path/to/clip")
    ```
    """
    path = Path(path)
    config_file = path / TOKENIZER_CONFIG_FILE
    if config_file.is_file():
        tokenizer_class = json.loads(config_file.read_text()).get("tokenizer_class")
        if tokenizer_class and not tokenizer_class.startswith("CLIPTokenizer"):
            raise NotImplementedError(
                f"{config_file} names tokenizer_class={tokenizer_class!r}; only "
                "CLIPTokenizer is supported."
            )
    vocabulary, merges = read_bpe(path)
    tokenizer = TransformersCLIPTokenizer(vocabulary=vocabulary, merges=merges)
    pad = _pad_token(path)
    if pad not in vocabulary:
        raise ValueError(
            f"The pad token {pad!r} of {str(path)!r} is not in its vocabulary."
        )
    return tokenizer, int(vocabulary[pad])
