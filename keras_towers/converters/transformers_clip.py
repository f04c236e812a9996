"""Load `transformers` CLIP checkpoints (`model_type: clip`) as keras_towers CLIP.

A checkpoint directory written by `transformers.CLIPModel.save_pretrained`
(plus its tokenizer and image-processor files) becomes a
`keras_towers.CLIP` built from keras_towers parts:

- `VisionTransformer` + `ImageTower(pooling="cls", head="linear")`;
- `TextTransformer` + `TextTower(pooling="argmax" | "eos", head="linear")`,
  pooling exactly where transformers pools: at `argmax(input_ids)` for legacy
  configs with `eos_token_id == 2`, else at the first `eos_token_id`;
- a `ContrastivePreprocessor` whose tokenizer and image converter reproduce
  transformers' `CLIPTokenizer` and (PIL) `CLIPImageProcessor`, inside
  `tf.data` as well as eagerly.

Weights are read from `model.safetensors` (or its sharded index) with the
`safetensors` package; `pytorch_model.bin` is read with
`torch.load(weights_only=True)` only when no safetensors file exists and
torch is installed. Every tensor is shape-checked, every checkpoint tensor
must be used and every Keras variable set.

Example:

```python
model = keras_towers.CLIP.from_preset("/path/to/clip-vit-base-patch32")
model.encode_texts(["a photo of a cat"])
```
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras_hub.layers import ImageConverter
from keras_hub.src.utils.tensor_utils import preprocessing_function
from keras_hub.tokenizers import CLIPTokenizer

from keras_towers.backbones import TextTransformer
from keras_towers.backbones import VisionTransformer
from keras_towers.converters import register_converter
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PYTORCH_FILE = "pytorch_model.bin"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"

# transformers `hidden_act` -> Keras activation (keras-hub's CLIP layers
# accept "quick_gelu"; Keras' "gelu" is the exact erf form, like torch's).
ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

# transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults:
# `save_pretrained` leaves out values equal to them.
_TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}
_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_CLIP_DEFAULTS = {"projection_dim": 512, "logit_scale_init_value": 2.6592}

# CLIPImageProcessor defaults (OpenAI CLIP's mean/std, bicubic, 224).
_IMAGE_PROCESSOR_DEFAULTS = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# PIL resampling filter codes -> (tf.image.resize method, antialias).
_RESAMPLE = {
    0: ("nearest", False),
    1: ("lanczos3", True),
    2: ("bilinear", True),
    3: ("bicubic", True),
}


# === Config ===


def _sub_config(hf_config: dict, name: str, defaults: dict) -> dict:
    # Very old configs carry `<name>_dict`; transformers lets it override.
    return {
        **defaults,
        **(hf_config.get(name) or {}),
        **(hf_config.get(f"{name}_dict") or {}),
    }


def _activation(name: str, tower: str) -> str:
    if name not in ACTIVATIONS:
        raise NotImplementedError(
            f"The {tower} config has hidden_act={name!r}, which keras_towers "
            f"does not map yet. Supported: {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def _square(value, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise NotImplementedError(
                f"Only square {what}s are supported. Received: {what}={value}."
            )
        value = value[0]
    return int(value)


def convert_config(hf_config: dict) -> dict:
    """transformers `CLIPConfig` (a dict) -> keras_towers constructor kwargs.

    Returns a dict with keys `"image_backbone"` and `"text_backbone"`
    (`VisionTransformer` / `TextTransformer` kwargs), `"image_tower"` and
    `"text_tower"` (`ImageTower` / `TextTower` kwargs without the backbone)
    and `"logit_scale_init"` (the scale `exp(logit_scale_init_value)`).

    Example:

    ```python
    kwargs = keras_towers.converters.transformers_clip.convert_config(
        json.load(open("clip/config.json"))
    )
    ```
    """
    if hf_config.get("model_type") != "clip":
        raise ValueError(
            "Expected a transformers CLIP config (`model_type: clip`). "
            f"Received model_type={hf_config.get('model_type')!r}."
        )
    text = _sub_config(hf_config, "text_config", _TEXT_DEFAULTS)
    vision = _sub_config(hf_config, "vision_config", _VISION_DEFAULTS)
    top = {**_CLIP_DEFAULTS, **hf_config}
    if int(vision["num_channels"]) != 3:
        raise NotImplementedError(
            f"Only RGB vision towers are supported. Received "
            f"num_channels={vision['num_channels']}."
        )
    image_size = _square(vision["image_size"], "image_size")
    patch_size = _square(vision["patch_size"], "patch_size")
    eos_token_id = text["eos_token_id"]
    if isinstance(eos_token_id, (list, tuple)):
        raise NotImplementedError(
            f"A list of eos_token_id ({eos_token_id}) is not supported."
        )
    # transformers' CLIPTextTransformer: configs from before PR #24773 carry
    # eos_token_id=2 and pool at argmax(input_ids) (the end token has the
    # largest id); newer ones pool at the first eos_token_id.
    if eos_token_id == 2:
        text_pooling = {"pooling": "argmax", "eos_token_id": None}
    else:
        text_pooling = {"pooling": "eos", "eos_token_id": int(eos_token_id)}
    projection_dim = int(top["projection_dim"])
    return {
        "image_backbone": {
            "patch_size": patch_size,
            "hidden_dim": int(vision["hidden_size"]),
            "num_layers": int(vision["num_hidden_layers"]),
            "num_heads": int(vision["num_attention_heads"]),
            "intermediate_dim": int(vision["intermediate_size"]),
            "intermediate_activation": _activation(vision["hidden_act"], "vision"),
            "image_shape": (image_size, image_size, 3),
            "layer_norm_epsilon": float(vision["layer_norm_eps"]),
        },
        "text_backbone": {
            "vocabulary_size": int(text["vocab_size"]),
            "embedding_dim": int(text["hidden_size"]),
            "hidden_dim": int(text["hidden_size"]),
            "num_layers": int(text["num_hidden_layers"]),
            "num_heads": int(text["num_attention_heads"]),
            "intermediate_dim": int(text["intermediate_size"]),
            "intermediate_activation": _activation(text["hidden_act"], "text"),
            "max_sequence_length": int(text["max_position_embeddings"]),
            "layer_norm_epsilon": float(text["layer_norm_eps"]),
        },
        "image_tower": {
            "pooling": "cls",
            "projection_dim": projection_dim,
            "head": "linear",
            "head_use_bias": False,
        },
        "text_tower": {
            **text_pooling,
            "projection_dim": projection_dim,
            "head": "linear",
            "head_use_bias": False,
        },
        "logit_scale_init": math.exp(float(top["logit_scale_init_value"])),
    }


# === Weights ===


class CheckpointReader:
    """Named tensors of a transformers checkpoint directory, as NumPy.

    Reads `model.safetensors`, a sharded `model.safetensors.index.json`, or,
    if neither exists, `pytorch_model.bin` with
    `torch.load(weights_only=True)` (only when torch is installed). Records
    which tensors were read, so that unused ones can be reported.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        self.path = path
        self.used: set[str] = set()
        self._files: dict[str, str] = {}  # tensor name -> file name
        self._torch_state = None
        index = path / SAFETENSORS_INDEX_FILE
        if (path / SAFETENSORS_FILE).is_file():
            self._add_safetensors(SAFETENSORS_FILE)
        elif index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            for name in sorted(set(weight_map.values())):
                if not (path / name).is_file():
                    raise FileNotFoundError(
                        f"{index} lists the shard {name!r}, which is missing "
                        f"from {str(path)!r}."
                    )
                self._add_safetensors(name)
        elif (path / PYTORCH_FILE).is_file():
            self._load_torch()
        else:
            raise FileNotFoundError(
                f"No weights in the transformers checkpoint {str(path)!r}: "
                f"expected {SAFETENSORS_FILE} (or {SAFETENSORS_INDEX_FILE} "
                f"with its shards, or {PYTORCH_FILE}). Pass "
                "`load_weights=False` to build the architecture only."
            )

    def _add_safetensors(self, name: str):
        from safetensors import safe_open

        with safe_open(str(self.path / name), framework="numpy") as f:
            for key in f.keys():
                self._files[key] = name

    def _load_torch(self):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{str(self.path)!r} has only {PYTORCH_FILE}, a pickle-based "
                "file that needs torch to read safely "
                "(`torch.load(weights_only=True)`). Install torch, or convert "
                f"the checkpoint to {SAFETENSORS_FILE}."
            ) from e
        state = torch.load(
            str(self.path / PYTORCH_FILE), map_location="cpu", weights_only=True
        )
        self._torch_state = state
        self._files = {key: PYTORCH_FILE for key in state}

    def keys(self) -> list[str]:
        return sorted(self._files)

    def __contains__(self, key: str) -> bool:
        return key in self._files

    def file_of(self, key: str) -> str:
        return self._files.get(key, SAFETENSORS_FILE)

    def shape(self, key: str) -> tuple:
        if self._torch_state is not None:
            return tuple(self._torch_state[key].shape)
        from safetensors import safe_open

        with safe_open(str(self.path / self._files[key]), framework="numpy") as f:
            return tuple(f.get_slice(key).get_shape())

    def get(self, key: str) -> np.ndarray:
        self.used.add(key)
        if self._torch_state is not None:
            tensor = self._torch_state[key]
            if tensor.is_floating_point():
                tensor = tensor.float()
            return tensor.numpy()
        from safetensors import safe_open

        with safe_open(str(self.path / self._files[key]), framework="numpy") as f:
            return f.get_tensor(key)


def _source_shape(kind: str, target: tuple) -> tuple:
    """The transformers tensor shape that fills a Keras variable of `target`."""
    if kind == "copy":
        return target
    if kind == "linear":  # Dense kernel (in, out) <- nn.Linear weight (out, in)
        return (target[1], target[0])
    if kind == "conv":  # (kh, kw, in, out) <- (out, in, kh, kw)
        return (target[3], target[2], target[0], target[1])
    if kind == "attention_in":  # (hidden, heads, head_dim) <- (heads*head_dim, hidden)
        return (target[1] * target[2], target[0])
    if kind == "attention_in_bias":  # (heads, head_dim) <- (heads*head_dim,)
        return (target[0] * target[1],)
    if kind == "attention_out":  # (heads, head_dim, hidden) <- (hidden, heads*head_dim)
        return (target[2], target[0] * target[1])
    raise ValueError(f"Unknown weight transform {kind!r}.")


def _transform(kind: str, value: np.ndarray, target: tuple) -> np.ndarray:
    if kind == "copy":
        return value
    if kind == "linear":
        return value.T
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind in ("attention_in", "attention_out"):
        return value.T.reshape(target)
    if kind == "attention_in_bias":
        return value.reshape(target)
    raise ValueError(f"Unknown weight transform {kind!r}.")


def _layer_norm(layer, prefix: str) -> list:
    return [
        (layer.gamma, f"{prefix}.weight", "copy"),
        (layer.beta, f"{prefix}.bias", "copy"),
    ]


def _encoder_block(block, prefix: str) -> list:
    attention = block.attention
    entries = _layer_norm(block.layer_norm_1, f"{prefix}.layer_norm1")
    for dense, name in (
        (attention.query_dense, "q_proj"),
        (attention.key_dense, "k_proj"),
        (attention.value_dense, "v_proj"),
    ):
        entries.append(
            (dense.kernel, f"{prefix}.self_attn.{name}.weight", "attention_in")
        )
        entries.append(
            (dense.bias, f"{prefix}.self_attn.{name}.bias", "attention_in_bias")
        )
    out = attention.output_dense
    entries.append((out.kernel, f"{prefix}.self_attn.out_proj.weight", "attention_out"))
    entries.append((out.bias, f"{prefix}.self_attn.out_proj.bias", "copy"))
    entries += _layer_norm(block.layer_norm_2, f"{prefix}.layer_norm2")
    for dense, name in ((block.dense_1, "fc1"), (block.dense_2, "fc2")):
        entries.append((dense.kernel, f"{prefix}.mlp.{name}.weight", "linear"))
        entries.append((dense.bias, f"{prefix}.mlp.{name}.bias", "copy"))
    return entries


def weight_mapping(model) -> list[tuple]:
    """`(keras_variable, transformers_key, transform)` for every weight.

    `transform` is one of `"copy"`, `"linear"` (transpose), `"conv"`
    (OIHW -> HWIO), `"attention_in"`, `"attention_in_bias"` and
    `"attention_out"` (split or merge the heads axis).
    """
    image = model.image_tower.backbone
    text = model.text_tower.backbone
    v, t = "vision_model", "text_model"
    entries = [
        (image.embedding.class_embedding, f"{v}.embeddings.class_embedding", "copy"),
        (
            image.embedding.patch_embedding.kernel,
            f"{v}.embeddings.patch_embedding.weight",
            "conv",
        ),
        (
            image.embedding.position_embedding.embeddings,
            f"{v}.embeddings.position_embedding.weight",
            "copy",
        ),
    ]
    entries += _layer_norm(image.pre_layer_norm, f"{v}.pre_layrnorm")
    for i, block in enumerate(image.encoder_layers):
        entries += _encoder_block(block, f"{v}.encoder.layers.{i}")
    # keras-hub normalises the whole sequence before CLS pooling; transformers
    # normalises the pooled CLS token: the same numbers for the CLS token.
    entries += _layer_norm(image.layer_norm, f"{v}.post_layernorm")
    entries += [
        (
            text.embedding.token_embedding.embeddings,
            f"{t}.embeddings.token_embedding.weight",
            "copy",
        ),
        (
            text.embedding.position_embedding.position_embeddings,
            f"{t}.embeddings.position_embedding.weight",
            "copy",
        ),
    ]
    for i, block in enumerate(text.encoder_layers):
        entries += _encoder_block(block, f"{t}.encoder.layers.{i}")
    entries += _layer_norm(text.layer_norm, f"{t}.final_layer_norm")
    entries += [
        (model.image_tower.projection.kernel, "visual_projection.weight", "linear"),
        (model.text_tower.projection.kernel, "text_projection.weight", "linear"),
        (model.logit_scale, "logit_scale", "copy"),
    ]
    return entries


# Buffers older checkpoints saved: checked (must be `arange`), not loaded.
_POSITION_ID_KEYS = (
    "vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)


def convert_weights(model, reader: CheckpointReader) -> None:
    """Copy a transformers CLIP checkpoint into a converted keras_towers CLIP.

    Raises `ValueError` naming the file and tensor for a missing tensor, a
    shape mismatch, a checkpoint tensor left unused, or a Keras variable
    left unset.
    """
    entries = weight_mapping(model)
    missing = [key for _, key, _ in entries if key not in reader]
    if missing:
        raise ValueError(
            f"The checkpoint {str(reader.path)!r} lacks {len(missing)} tensor(s) "
            f"that a CLIPModel with this config.json has: {missing}."
        )
    for variable, key, kind in entries:
        target = tuple(variable.shape)
        expected = _source_shape(kind, target)
        found = reader.shape(key)
        if found != expected:
            raise ValueError(
                f"Tensor {key!r} in {reader.file_of(key)} has shape {found}, but "
                f"config.json implies {expected} (for Keras variable "
                f"{variable.path!r} of shape {target}). The weights do not "
                "match the config."
            )
        value = _transform(kind, reader.get(key), target)
        variable.assign(np.asarray(value, dtype=variable.dtype))
    for key in _POSITION_ID_KEYS:
        if key in reader:
            ids = np.asarray(reader.get(key)).reshape(-1)
            if not np.array_equal(ids, np.arange(ids.size)):
                raise NotImplementedError(
                    f"{key!r} in {reader.file_of(key)} is not arange; custom "
                    "position ids are not supported."
                )
    unused = sorted(set(reader.keys()) - reader.used)
    if unused:
        raise ValueError(
            f"{len(unused)} tensor(s) in {str(reader.path)!r} match no Keras "
            f"variable (not a plain CLIPModel checkpoint?): {unused}."
        )
    assigned = {id(variable) for variable, _, _ in entries}
    position_ids = model.image_tower.backbone.embedding.position_ids
    unset = [
        w.path for w in model.weights if id(w) not in assigned and w is not position_ids
    ]
    if unset:
        raise ValueError(f"Keras variables left unset by the converter: {unset}.")


# === Tokenizer ===


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

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        import tensorflow_text as tf_text

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
        texts = _nfc_and_whitespace_tf(inputs)
        texts = tf.strings.lower(texts, encoding="utf-8")
        # Keep the matches; the pieces between them are whitespace only.
        words = tf_text.regex_split(texts, CLIP_SPLIT_PATTERN, CLIP_SPLIT_PATTERN)
        words = tf.ragged.boolean_mask(words, tf.strings.strip(words) != "")
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
            # transformers maps out-of-vocabulary symbols to its unk token,
            # CLIP's end token.
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


# === Images ===


@keras.saving.register_keras_serializable(package="keras_towers")
class TransformersImageConverter(ImageConverter):
    """Resize, center-crop and normalise images like transformers' CLIP.

    With `shortest_edge` (or `resize_size`) set, this reproduces the PIL
    `CLIPImageProcessor`: resize the shortest edge to `shortest_edge` (the
    long edge to `int(shortest_edge * long / short)`), center-crop to
    `image_size` at offset `(size - crop) // 2`, then `x * scale + offset`.
    With neither set it is a plain `keras_hub.layers.ImageConverter`.

    Resizing follows PIL, which transformers uses: antialiased (the filter is
    widened when downscaling), separable with the horizontal pass first, and
    8-bit, rounding and clipping to `[0, 255]` after each pass
    (`round_to_uint8`). Measured against PIL bicubic, this gives identical
    pixels except rare off-by-one rounding ties (0-0.1% of values); without
    the rounding nearly every value is off by up to ~2 grey levels, and
    without antialiasing by up to ~140. A dimension that does not change is not resampled (PIL
    copies it). It runs with TensorFlow ops, eagerly or inside `tf.data`, on
    every backend.

    keras-hub's `ImageConverter(crop_to_aspect_ratio=True)` crops before
    resizing; even when `shortest_edge` equals the crop size, that shifts the
    sampling grid of non-square images (measured: up to 130 grey levels off
    transformers), so this layer handles that case too.

    Args:
        image_size: `(height, width)` of the output (the crop size).
        scale: float or per-channel floats multiplied after resizing.
        offset: float or per-channel floats added after scaling.
        shortest_edge: int or `None`. Resize the shortest edge to this size
            (aspect ratio kept) before the crop.
        resize_size: `(height, width)` or `None`. Resize to this fixed size
            before the crop (instead of `shortest_edge`).
        interpolation: `"bicubic"`, `"bilinear"`, `"lanczos3"` or
            `"nearest"`.
        antialias: bool. Widen the filter when downscaling, like PIL.
        round_to_uint8: bool. Round and clip after each resize pass, like
            PIL's 8-bit images.

    Example:

    ```python
    converter = TransformersImageConverter(
        image_size=(224, 224), shortest_edge=224, scale=1 / 255
    )
    converter(np.zeros((2, 300, 400, 3), "uint8"))  # (2, 224, 224, 3)
    ```
    """

    def __init__(
        self,
        image_size=None,
        scale=None,
        offset=None,
        shortest_edge: int | None = None,
        resize_size=None,
        interpolation: str = "bicubic",
        antialias: bool = True,
        round_to_uint8: bool = True,
        **kwargs,
    ):
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            interpolation=interpolation,
            antialias=antialias,
            **kwargs,
        )
        if shortest_edge is not None and resize_size is not None:
            raise ValueError("Pass only one of `shortest_edge` and `resize_size`.")
        if (shortest_edge is not None or resize_size is not None) and not image_size:
            raise ValueError("`shortest_edge`/`resize_size` need `image_size`.")
        self.shortest_edge = None if shortest_edge is None else int(shortest_edge)
        self.resize_size = None if resize_size is None else tuple(resize_size)
        self.round_to_uint8 = round_to_uint8

    def call(self, inputs):
        if self.shortest_edge is None and self.resize_size is None:
            return super().call(inputs)
        if isinstance(inputs, dict):
            raise ValueError(
                "TransformersImageConverter takes image tensors, not dicts."
            )
        return self._resize_crop_normalize(inputs)

    def _resample(self, images, height, width):
        """One PIL-style pass to (height, width) (one of them unchanged)."""
        resized = tf.image.resize(
            images,
            tf.stack([height, width]),
            method=self.interpolation,
            antialias=self.antialias,
        )
        if self.round_to_uint8:
            # PIL rounds half up (fixed point + 0.5) and clips to 8 bits.
            resized = tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0)
        return resized

    @preprocessing_function
    def _resize_crop_normalize(self, images):
        images = tf.cast(tf.convert_to_tensor(images), "float32")
        unbatched = images.shape.rank == 3
        if unbatched:
            images = images[None]
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        if self.shortest_edge is not None:
            short = tf.minimum(height, width)
            long = tf.maximum(height, width)
            # transformers: int(size * long / short), in float64 like Python.
            new_long = tf.cast(
                tf.cast(self.shortest_edge * long, "float64")
                / tf.cast(short, "float64"),
                "int32",
            )
            portrait = width <= height
            new_height = tf.where(portrait, new_long, self.shortest_edge)
            new_width = tf.where(portrait, self.shortest_edge, new_long)
        else:
            new_height = tf.constant(self.resize_size[0], "int32")
            new_width = tf.constant(self.resize_size[1], "int32")
        # PIL: horizontal pass first, and only along axes that change.
        images = tf.cond(
            tf.equal(new_width, width),
            lambda: images,
            lambda: self._resample(images, height, new_width),
        )
        images = tf.cond(
            tf.equal(new_height, height),
            lambda: images,
            lambda: self._resample(images, new_height, new_width),
        )
        crop_height, crop_width = self.image_size
        checks = [
            tf.debugging.assert_greater_equal(
                new_height,
                crop_height,
                message="The resized image is smaller than the crop size.",
            ),
            tf.debugging.assert_greater_equal(
                new_width,
                crop_width,
                message="The resized image is smaller than the crop size.",
            ),
        ]
        with tf.control_dependencies(checks):
            top = (new_height - crop_height) // 2
            left = (new_width - crop_width) // 2
        images = images[:, top : top + crop_height, left : left + crop_width, :]
        images = tf.ensure_shape(images, [None, crop_height, crop_width, None])
        if self.scale is not None:
            images = images * tf.constant(self.scale, "float32")
        if self.offset is not None:
            images = images + tf.constant(self.offset, "float32")
        if unbatched:
            images = images[0]
        return images

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "shortest_edge": self.shortest_edge,
                "resize_size": self.resize_size,
                "round_to_uint8": self.round_to_uint8,
            }
        )
        return config


def _size_pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        raise NotImplementedError(f"Unsupported {what} {value!r}.")
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def convert_image_processor_config(processor_config: dict, image_size: int) -> dict:
    """transformers CLIP image-processor config -> converter kwargs.

    Example:

    ```python
    kwargs = convert_image_processor_config(
        json.load(open("clip/preprocessor_config.json")), image_size=224
    )
    converter = TransformersImageConverter(**kwargs)
    ```
    """
    cfg = {**_IMAGE_PROCESSOR_DEFAULTS, **processor_config}
    kwargs = {}
    resize_to = None
    if not cfg["do_resize"]:
        raise NotImplementedError(
            "Image processors with do_resize=False (crop only) are not supported."
        )
    size = cfg["size"]
    if isinstance(size, int):
        size = {"shortest_edge": size}  # CLIP: default_to_square=False
    if isinstance(size, dict) and "shortest_edge" in size:
        if size.get("longest_edge"):
            raise NotImplementedError(
                f"size={size}: a longest_edge limit is not supported."
            )
        kwargs["shortest_edge"] = int(size["shortest_edge"])
    else:
        resize_to = _size_pair(size, "size")
        kwargs["resize_size"] = resize_to
    resample = int(cfg["resample"])
    if resample not in _RESAMPLE:
        raise NotImplementedError(
            f"resample={resample} (PIL filter code) is not supported; "
            f"supported: {sorted(_RESAMPLE)}."
        )
    kwargs["interpolation"], kwargs["antialias"] = _RESAMPLE[resample]
    if cfg["do_center_crop"]:
        output = _size_pair(cfg["crop_size"], "crop_size")
    elif resize_to is not None:
        output = resize_to
    else:
        raise NotImplementedError(
            "Image processors that neither crop nor resize to a fixed size "
            "give variable-size images; a ViT needs a fixed size."
        )
    if output != (image_size, image_size):
        raise ValueError(
            f"The image processor outputs {output[0]}x{output[1]} images but the "
            f"vision model takes {image_size}x{image_size}."
        )
    if "shortest_edge" in kwargs and kwargs["shortest_edge"] < min(output):
        raise NotImplementedError(
            f"shortest_edge={kwargs['shortest_edge']} is smaller than the crop "
            f"{output}; transformers would pad, which is not supported."
        )
    factor = float(cfg["rescale_factor"]) if cfg["do_rescale"] else 1.0
    mean, std = [0.0] * 3, [1.0] * 3
    if cfg["do_normalize"]:
        mean = [float(m) for m in np.broadcast_to(cfg["image_mean"], (3,))]
        std = [float(s) for s in np.broadcast_to(cfg["image_std"], (3,))]
    kwargs["image_size"] = output
    kwargs["scale"] = [factor / s for s in std]
    kwargs["offset"] = [-m / s for m, s in zip(mean, std, strict=True)]
    return kwargs


def load_image_converter(
    path: str | os.PathLike, image_size: int
) -> TransformersImageConverter:
    """The image converter described by `preprocessor_config.json`."""
    file = Path(path) / PREPROCESSOR_FILE
    if file.is_file():
        processor_config = json.loads(file.read_text())
        kind = processor_config.get("image_processor_type", "CLIPImageProcessor")
        if not kind.startswith("CLIPImageProcessor"):
            warnings.warn(
                f"{file} is for a {kind}; reading it with CLIPImageProcessor's "
                "semantics and defaults.",
                stacklevel=2,
            )
    else:
        warnings.warn(
            f"No {PREPROCESSOR_FILE} in {str(path)!r}: using OpenAI CLIP's "
            f"preprocessing (bicubic shortest edge {image_size}, center crop, "
            "CLIP mean/std).",
            stacklevel=2,
        )
        processor_config = {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
        }
    return TransformersImageConverter(
        **convert_image_processor_config(processor_config, image_size)
    )


# === Model ===


def load_preprocessor(
    path: str | os.PathLike, hf_config: dict
) -> ContrastivePreprocessor:
    """Tokenizer + image converter of a transformers CLIP directory."""
    converted = convert_config(hf_config)
    image_size = converted["image_backbone"]["image_shape"][0]
    sequence_length = converted["text_backbone"]["max_sequence_length"]
    tokenizer, pad_token_id = load_tokenizer(path)
    eos = converted["text_tower"]["eos_token_id"]
    if eos is not None and eos != tokenizer.end_token_id:
        warnings.warn(
            f"config.json has eos_token_id={eos} but the tokenizer's end token "
            f"{END_TOKEN!r} has id {tokenizer.end_token_id}: text pooling will "
            "not find it (transformers behaves the same way).",
            stacklevel=2,
        )
    return ContrastivePreprocessor(
        image_converter=load_image_converter(path, image_size),
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        lowercase=True,
        start_token_id=int(tokenizer.start_token_id),
        end_token_id=int(tokenizer.end_token_id),
        pad_token_id=pad_token_id,
    )


@register_converter("clip")
def load_transformers_clip(
    path: str | os.PathLike, cls=None, load_weights: bool = True, **kwargs
):
    """Build a keras_towers CLIP from a transformers CLIP checkpoint directory.

    Args:
        path: directory with `config.json` (`model_type: clip`),
            `model.safetensors`, tokenizer files and
            `preprocessor_config.json`.
        cls: the model class (`keras_towers.CLIP` or a subclass).
        load_weights: bool. Load the weights, or keep the random init (the
            logit scale then starts at the config's `logit_scale_init_value`).
        **kwargs: passed to `cls` (e.g. `learn_logit_scale=False`).

    Example:

    ```python
    model = keras_towers.CLIP.from_preset("/path/to/clip-vit-base-patch32")
    ```
    """
    from keras_towers.models import CLIP

    cls = CLIP if cls is None else cls
    if not issubclass(cls, CLIP):
        raise ValueError(
            f"transformers CLIP checkpoints load into keras_towers.CLIP (or a "
            f"subclass), not {cls.__name__}."
        )
    path = Path(path)
    hf_config = json.loads((path / CONFIG_FILE).read_text())
    converted = convert_config(hf_config)
    reader = CheckpointReader(path) if load_weights else None
    logit_scale = converted["logit_scale_init"]
    if reader is not None and "logit_scale" in reader:
        logit_scale = math.exp(float(np.asarray(reader.get("logit_scale"))))
        reader.used.clear()

    preprocessor = load_preprocessor(path, hf_config)
    image_tower = ImageTower(
        VisionTransformer(**converted["image_backbone"], name="image_tower_backbone"),
        name="image_tower",
        **converted["image_tower"],
    )
    text_tower = TextTower(
        TextTransformer(**converted["text_backbone"], name="text_tower_backbone"),
        name="text_tower",
        **converted["text_tower"],
    )
    # Keep a pretrained scale above CLIP's default clamp of 100 reachable.
    kwargs.setdefault("max_logit_scale", max(100.0, logit_scale))
    kwargs.setdefault("logit_scale_init", logit_scale)
    model = cls(image_tower, text_tower, preprocessor, **kwargs)
    if reader is not None:
        convert_weights(model, reader)
    return model
