"""Copy a transformers SigLIP checkpoint into a converted keras_towers SigLIP.

Every tensor is shape-checked, every checkpoint tensor must be used and
every Keras variable (but the `position_ids` buffers) set.
"""

from __future__ import annotations

import numpy as np

from keras_towers.converters.checks import check_complete
from keras_towers.converters.transformers_clip.weights import CheckpointReader
from keras_towers.converters.transformers_clip.weights import _source_shape
from keras_towers.converters.transformers_clip.weights import _transform

__all__ = ["CheckpointReader", "convert_weights", "weight_mapping"]


def _dense(dense, prefix: str, kind: str = "linear", bias_kind: str = "copy"):
    return [
        (dense.kernel, f"{prefix}.weight", kind, None),
        (dense.bias, f"{prefix}.bias", bias_kind, None),
    ]


def _layer_norm(layer, prefix: str) -> list:
    return [
        (layer.gamma, f"{prefix}.weight", "copy", None),
        (layer.beta, f"{prefix}.bias", "copy", None),
    ]


def _mlp(mlp, prefix: str) -> list:
    return _dense(mlp.fc1, f"{prefix}.fc1") + _dense(mlp.fc2, f"{prefix}.fc2")


def _encoder_block(block, prefix: str) -> list:
    attention = block.self_attn
    entries = _layer_norm(block.layer_norm1, f"{prefix}.layer_norm1")
    for dense, name in (
        (attention._query_dense, "q_proj"),
        (attention._key_dense, "k_proj"),
        (attention._value_dense, "v_proj"),
    ):
        entries += _dense(
            dense, f"{prefix}.self_attn.{name}", "attention_in", "attention_in_bias"
        )
    entries += _dense(
        attention._output_dense, f"{prefix}.self_attn.out_proj", "attention_out"
    )
    entries += _layer_norm(block.layer_norm2, f"{prefix}.layer_norm2")
    return entries + _mlp(block.mlp, f"{prefix}.mlp")


def _attention_pooling(head, prefix: str) -> list:
    """The MAP head: torch `nn.MultiheadAttention` stacks q, k, v in
    `in_proj_weight` / `in_proj_bias` (rows `[i * d, (i + 1) * d)`)."""
    attention = head.attention
    entries = [(head.probe, f"{prefix}.probe", "copy", None)]
    for i, dense in enumerate(
        (attention._query_dense, attention._key_dense, attention._value_dense)
    ):
        entries.append(
            (dense.kernel, f"{prefix}.attention.in_proj_weight", "attention_in", i)
        )
        entries.append(
            (dense.bias, f"{prefix}.attention.in_proj_bias", "attention_in_bias", i)
        )
    entries += _dense(
        attention._output_dense, f"{prefix}.attention.out_proj", "attention_out"
    )
    entries += _layer_norm(head.layer_norm, f"{prefix}.layernorm")
    return entries + _mlp(head.mlp, f"{prefix}.mlp")


def weight_mapping(model) -> list[tuple]:
    """`(keras_variable, transformers_key, transform, part)` for every weight.

    `transform` is as in `transformers_clip.weights` plus `"scalar"` (a `[1]`
    tensor into a scalar variable); `part` is `None`, or `i` for the `i`-th
    of three equal row blocks of a stacked q/k/v tensor.
    """
    image = model.image_tower.backbone
    text = model.text_tower.backbone
    v, t = "vision_model", "text_model"
    entries = [
        (
            image.embedding.patch_embedding.kernel,
            f"{v}.embeddings.patch_embedding.weight",
            "conv",
            None,
        ),
        (
            image.embedding.patch_embedding.bias,
            f"{v}.embeddings.patch_embedding.bias",
            "copy",
            None,
        ),
        (
            image.embedding.position_embedding.embeddings,
            f"{v}.embeddings.position_embedding.weight",
            "copy",
            None,
        ),
    ]
    for i, block in enumerate(image.encoder_layers):
        entries += _encoder_block(block, f"{v}.encoder.layers.{i}")
    entries += _layer_norm(image.post_layer_norm, f"{v}.post_layernorm")
    entries += _attention_pooling(image.head, f"{v}.head")
    entries += [
        (
            text.embedding.token_embedding.embeddings,
            f"{t}.embeddings.token_embedding.weight",
            "copy",
            None,
        ),
        (
            text.embedding.position_embedding.embeddings,
            f"{t}.embeddings.position_embedding.weight",
            "copy",
            None,
        ),
    ]
    for i, block in enumerate(text.encoder_layers):
        entries += _encoder_block(block, f"{t}.encoder.layers.{i}")
    entries += _layer_norm(text.post_layer_norm, f"{t}.final_layer_norm")
    entries += _dense(text.head, f"{t}.head")
    entries += [
        (model.logit_scale, "logit_scale", "scalar", None),
        (model.logit_bias, "logit_bias", "scalar", None),
    ]
    return entries


def _expected_shape(kind: str, target: tuple, part) -> tuple:
    if kind == "scalar":
        return (1,)
    shape = _source_shape(kind, target)
    if part is not None:
        shape = (3 * shape[0],) + shape[1:]
    return shape


# Buffers some checkpoints hold: checked (must be `arange`), not loaded.
_POSITION_ID_KEYS = (
    "vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)


def convert_weights(model, reader: CheckpointReader) -> None:
    """Copy a transformers SigLIP checkpoint into a converted keras_towers
    SigLIP. Raises `ValueError` naming the file and tensor for a missing
    tensor, a shape mismatch, a checkpoint tensor left unused, or a Keras
    variable left unset."""
    entries = weight_mapping(model)
    missing = sorted({key for _, key, _, _ in entries if key not in reader})
    if missing:
        raise ValueError(
            f"The checkpoint {str(reader.path)!r} lacks {len(missing)} tensor(s) "
            f"that a SiglipModel with this config.json has: {missing}."
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
        skipped=[
            model.image_tower.backbone.embedding.position_ids,
            model.text_tower.backbone.embedding.position_ids,
        ],
        layout="a plain SiglipModel checkpoint",
    )
