"""Copy a transformers SigLIP checkpoint into a converted keras_towers SigLIP.

Every tensor is shape-checked, every checkpoint tensor must be used and
every Keras variable (but the `position_ids` buffers) set.
"""

from __future__ import annotations

from keras_towers.converters.transformers_clip.weights import CheckpointReader
from keras_towers.converters.transformers_clip.weights import copy_tensors

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


def convert_weights(model, reader: CheckpointReader) -> None:
    """Copy a transformers SigLIP checkpoint into a converted keras_towers
    SigLIP. Raises `ValueError` naming the file and tensor for a missing
    tensor, a shape mismatch, a checkpoint tensor left unused, or a Keras
    variable left unset."""
    copy_tensors(
        model,
        reader,
        weight_mapping(model),
        "SiglipModel",
        skipped=[
            model.image_tower.backbone.embedding.position_ids,
            model.text_tower.backbone.embedding.position_ids,
        ],
    )
