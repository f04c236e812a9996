"""transformers' `SiglipTokenizer` (SentencePiece), inside `tf.data` as well as eagerly."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import keras
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import preprocessing_function
from keras_hub.tokenizers import SigLIPTokenizer

SPIECE_FILE = "spiece.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
END_TOKEN = "</s>"

# Python's `str.translate` table of `string.punctuation`, as an RE2 class.
_PUNCTUATION = "[" + "".join(f"\\x{ord(c):02x}" for c in string.punctuation) + "]"
# Python's `\s` / `str.strip()` whitespace (RE2's `\s` is ASCII-only).
_WHITESPACE = r"[\t\n\x0b\x0c\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"


def canonicalize_text_tf(texts, lowercase: bool = True):
    """big_vision's / transformers' SigLIP text canonicalisation in TF ops:
    lower-case, drop ASCII punctuation, collapse whitespace runs, strip."""
    if lowercase:
        # Python lower-cases U+0130 to "i" + U+0307; ICU's simple mapping
        # gives "i" alone.
        texts = tf.strings.regex_replace(texts, "\u0130", "i\u0307")
        texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, _PUNCTUATION, "")
    texts = tf.strings.regex_replace(texts, _WHITESPACE + "+", " ")
    return tf.strings.regex_replace(texts, "^ | $", "")


@keras.saving.register_keras_serializable(package="keras_towers")
class TransformersSigLIPTokenizer(SigLIPTokenizer):
    """keras-hub's `SigLIPTokenizer` with transformers' text canonicalisation.

    transformers' `SiglipTokenizer` lower-cases (`do_lower_case`), removes
    ASCII punctuation, collapses whitespace and strips before SentencePiece;
    keras-hub does this in its `SigLIPPreprocessor`, not in the tokenizer.
    This tokenizer does it itself, in TensorFlow ops, so `tokenize` gives
    transformers' ids (without the end token, which the packer appends).
    Known difference: transformers splits the literal strings `"</s>"` and
    `"<unk>"` out of the text as special tokens; here they are text.

    Args:
        proto: SentencePiece model (path or bytes).
        lowercase: bool. transformers' `do_lower_case`.

    Example:

    ```python
    tokenizer = TransformersSigLIPTokenizer(proto="siglip/spiece.model")
    tokenizer(["A photo of a cat."])
    ```
    """

    def __init__(self, proto=None, lowercase: bool = True, **kwargs):
        super().__init__(proto=proto, **kwargs)
        self.lowercase = bool(lowercase)

    def _maybe_initialized_tf(self):
        # keras-hub makes one TF SentencePiece resource and keeps it; it goes
        # missing when TF clears its kernel caches (`tf.random.set_seed`,
        # `keras.utils.set_random_seed`), and `tf.data` maps then fail with
        # "Resource ... SentencepieceOp ... does not exist". Each graph trace
        # makes its own resource instead; eager calls keep an eager one.
        eager = tf.executing_eagerly()
        if eager and getattr(self, "_sentence_piece_is_eager", False):
            return
        self._set_proto_tf(self.proto)
        self._sentence_piece_is_eager = eager

    @preprocessing_function
    def _canonicalize(self, inputs):
        return canonicalize_text_tf(tf.convert_to_tensor(inputs), self.lowercase)

    def tokenize(self, inputs):
        return super().tokenize(self._canonicalize(inputs))

    def get_config(self):
        config = super().get_config()
        config["lowercase"] = self.lowercase
        return config


def load_tokenizer(path: str | os.PathLike) -> TransformersSigLIPTokenizer:
    """The SentencePiece tokenizer of a transformers SigLIP directory.

    Example:

    ```python
    tokenizer = load_tokenizer("/path/to/siglip-base-patch16-224")
    ```
    """
    path = Path(path)
    options = {}
    config_file = path / TOKENIZER_CONFIG_FILE
    if config_file.is_file():
        options = json.loads(config_file.read_text())
    tokenizer_class = options.get("tokenizer_class")
    if tokenizer_class and not tokenizer_class.startswith("SiglipTokenizer"):
        raise NotImplementedError(
            f"{config_file} names tokenizer_class={tokenizer_class!r}; only "
            "SiglipTokenizer (SentencePiece) is supported."
        )
    for field, expected in (("eos_token", END_TOKEN), ("pad_token", END_TOKEN)):
        value = options.get(field, expected)
        if isinstance(value, dict):
            value = value.get("content")
        if value != expected:
            raise NotImplementedError(
                f"{config_file} has {field}={value!r}; only SiglipTokenizer's "
                f"{expected!r} is supported."
            )
    proto = path / SPIECE_FILE
    if not proto.is_file():
        raise FileNotFoundError(
            f"No tokenizer in {str(path)!r}: expected {SPIECE_FILE} "
            "(SiglipTokenizer's SentencePiece model)."
        )
    return TransformersSigLIPTokenizer(
        proto=str(proto), lowercase=bool(options.get("do_lower_case", True))
    )
