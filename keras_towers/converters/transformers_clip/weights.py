"""Read a transformers CLIP checkpoint's tensors and copy them into Keras.

Weights are read from `model.safetensors` (or its sharded index) with the
`safetensors` package; `pytorch_model.bin` is read with
`torch.load(weights_only=True)` only when no safetensors file exists and
torch is installed. Every tensor is shape-checked, every checkpoint tensor
must be used and every Keras variable set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from keras_towers.converters.checks import check_complete
from keras_towers.utils.torch_checkpoint import load_torch_checkpoint

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PYTORCH_FILE = "pytorch_model.bin"


class CheckpointReader:
    """Named tensors of a checkpoint directory, as NumPy.

    Reads `model.safetensors`, a sharded `model.safetensors.index.json`, or,
    if neither exists, `pytorch_model.bin` with
    `torch.load(weights_only=True)` (only when torch is installed). Records
    which tensors were read, so that unused ones can be reported. Other
    formats name their files (`safetensors_file`, `index_file`,
    `pytorch_file`) and themselves (`kind`, for errors).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        safetensors_file: str = SAFETENSORS_FILE,
        index_file: str = SAFETENSORS_INDEX_FILE,
        pytorch_file: str = PYTORCH_FILE,
        kind: str = "transformers",
    ):
        path = Path(path)
        self.path = path
        self.used: set[str] = set()
        self._files: dict[str, str] = {}  # tensor name -> file name
        self._torch_state = None
        self._default_file = safetensors_file
        index = path / index_file
        if (path / safetensors_file).is_file():
            self._add_safetensors(safetensors_file)
        elif index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            for name in sorted(set(weight_map.values())):
                if not (path / name).is_file():
                    raise FileNotFoundError(
                        f"{index} lists the shard {name!r}, which is missing "
                        f"from {str(path)!r}."
                    )
                self._add_safetensors(name)
        elif (path / pytorch_file).is_file():
            self._load_torch(pytorch_file)
        else:
            raise FileNotFoundError(
                f"No weights in the {kind} checkpoint {str(path)!r}: "
                f"expected {safetensors_file} (or {index_file} "
                f"with its shards, or {pytorch_file}). Pass "
                "`load_weights=False` to build the architecture only."
            )

    def _add_safetensors(self, name: str):
        from safetensors import safe_open

        with safe_open(str(self.path / name), framework="numpy") as f:
            for key in f.keys():
                self._files[key] = name

    def _load_torch(self, name: str):
        state = load_torch_checkpoint(self.path / name)
        self._torch_state = state
        self._files = {key: name for key in state}

    def keys(self) -> list[str]:
        return sorted(self._files)

    def __contains__(self, key: str) -> bool:
        return key in self._files

    def file_of(self, key: str) -> str:
        return self._files.get(key, self._default_file)

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


def _expected_shape(kind: str, target: tuple, part) -> tuple:
    """The checkpoint shape an entry reads: `_source_shape`, `(1,)` for a
    `"scalar"` stored as one value, three times the rows for one third
    (`part` 0, 1 or 2) of a stacked q/k/v tensor."""
    if kind == "scalar":
        return (1,)
    shape = _source_shape(kind, target)
    if part is not None:
        shape = (3 * shape[0],) + shape[1:]
    return shape


def copy_tensors(
    model, reader: CheckpointReader, entries, architecture: str, skipped=()
) -> None:
    """Copy checkpoint tensors into Keras variables by a weight map.

    Args:
        model: the converted model.
        reader: the checkpoint's `CheckpointReader`.
        entries: `(variable, key, transform)` or `(variable, key, transform,
            part)` (see `weight_mapping`; `part` takes a third of a stacked
            q/k/v tensor, `"scalar"` a one-value tensor).
        architecture: the transformers class, for messages ("CLIPModel").
        skipped: variables deliberately left alone (buffers).

    Raises `ValueError` naming the file and tensor for a missing tensor, a
    shape mismatch, a checkpoint tensor left unused, or a Keras variable
    left unset; `NotImplementedError` for custom position ids.
    """
    entries = [(*entry, None)[:4] for entry in entries]
    missing = sorted({key for _, key, _, _ in entries if key not in reader})
    if missing:
        raise ValueError(
            f"The checkpoint {str(reader.path)!r} lacks {len(missing)} tensor(s) "
            f"that a {architecture} with this config.json has: {missing}."
        )
    for variable, key, kind, part in entries:
        target = tuple(variable.shape)
        expected = _expected_shape(kind, target, part)
        found = reader.shape(key)
        if found != expected:
            raise ValueError(
                f"Tensor {key!r} in {reader.file_of(key)} has shape {found}, but "
                f"config.json implies {expected} (for Keras variable "
                f"{variable.path!r} of shape {target}). The weights do not "
                "match the config."
            )
        value = np.asarray(reader.get(key))
        if kind == "scalar":
            value = value.reshape(target)
        else:
            if part is not None:
                rows = value.shape[0] // 3
                value = value[part * rows : (part + 1) * rows]
            value = _transform(kind, value, target)
        variable.assign(np.asarray(value, dtype=variable.dtype))
    for key in _POSITION_ID_KEYS:
        if key in reader:
            ids = np.asarray(reader.get(key)).reshape(-1)
            if not np.array_equal(ids, np.arange(ids.size)):
                raise NotImplementedError(
                    f"{key!r} in {reader.file_of(key)} is not arange; custom "
                    "position ids are not supported."
                )
    check_complete(
        model,
        reader,
        {id(variable) for variable, _, _, _ in entries},
        skipped=skipped,
        layout=f"a plain {architecture} checkpoint",
    )


def convert_weights(model, reader: CheckpointReader) -> None:
    """Copy a transformers CLIP checkpoint into a converted keras_towers CLIP.

    Raises `ValueError` naming the file and tensor for a missing tensor, a
    shape mismatch, a checkpoint tensor left unused, or a Keras variable
    left unset.
    """
    copy_tensors(
        model,
        reader,
        weight_mapping(model),
        "CLIPModel",
        skipped=[model.image_tower.backbone.embedding.position_ids],
    )
