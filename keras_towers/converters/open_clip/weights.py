"""Copy an open_clip `CLIP` state dict into a converted keras_towers CLIP.

Key layout (open_clip `model.py` / `transformer.py`; the attention module
keeps `nn.MultiheadAttention`'s parameter names):

```
visual.conv1.weight (no bias)  visual.class_embedding  visual.positional_embedding
visual.ln_pre.*  visual.transformer.resblocks.{i}.{ln_1, attn.in_proj_weight|bias
(q;k;v stacked), attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj, ls_1.gamma, ls_2.gamma}
visual.ln_post.*  visual.proj [width, embed] (applied as x @ proj)
token_embedding.weight  positional_embedding  transformer.resblocks.{i}.*
ln_final.*  text_projection [width, embed] (x @ W) or text_projection.{weight,bias}
logit_scale (log space, [] or [1])  logit_bias (when present)
```

Layer scale (`ls_1`, `ls_2`: `x + gamma * f(x)`) is folded into the
preceding output projection (`attn.out_proj`, `mlp.c_proj`): scaling a
linear layer's output rows by gamma gives the same numbers, so the
converted blocks are plain keras-hub CLIP blocks. (Fine-tuning then trains
the folded weights rather than gamma apart; the function class is the same.)

Every tensor is shape-checked against the config, every checkpoint tensor
must be used and every Keras variable set.
"""

from __future__ import annotations

import numpy as np

from keras_towers.converters.checks import check_complete
from keras_towers.converters.transformers_clip.weights import CheckpointReader

SAFETENSORS_FILE = "open_clip_model.safetensors"
PYTORCH_FILE = "open_clip_pytorch_model.bin"


def open_checkpoint(path) -> CheckpointReader:
    """The tensors of an open_clip directory (`open_clip_model.safetensors`,
    else `open_clip_pytorch_model.bin` read with `weights_only=True`)."""
    return CheckpointReader(
        path,
        safetensors_file=SAFETENSORS_FILE,
        index_file=SAFETENSORS_FILE + ".index.json",
        pytorch_file=PYTORCH_FILE,
        kind="open_clip",
    )


class _Copier:
    """Reads checked tensors and assigns Keras variables, keeping count."""

    def __init__(self, reader: CheckpointReader):
        self.reader = reader
        self.assigned: set[int] = set()

    def read(self, key: str, shape: tuple) -> np.ndarray:
        if key not in self.reader:
            raise ValueError(
                f"The open_clip checkpoint {str(self.reader.path)!r} lacks the "
                f"tensor {key!r} that its open_clip_config.json implies."
            )
        found = tuple(self.reader.shape(key))
        if found != tuple(shape):
            raise ValueError(
                f"Tensor {key!r} in {self.reader.file_of(key)} has shape {found}, "
                f"but open_clip_config.json implies {tuple(shape)}. The weights do "
                "not match the config."
            )
        return np.asarray(self.reader.get(key), dtype="float32")

    def assign(self, variable, value: np.ndarray) -> None:
        value = np.asarray(value, dtype="float32")
        if tuple(value.shape) != tuple(variable.shape):  # a converter bug
            raise AssertionError(
                f"{variable.path}: converted shape {value.shape} != {variable.shape}"
            )
        variable.assign(value.astype(variable.dtype))
        self.assigned.add(id(variable))

    def layer_norm(self, layer, prefix: str) -> None:
        (width,) = layer.gamma.shape
        self.assign(layer.gamma, self.read(f"{prefix}.weight", (width,)))
        self.assign(layer.beta, self.read(f"{prefix}.bias", (width,)))

    def block(self, block, prefix: str, layer_scale: bool) -> None:
        attention = block.attention
        hidden, heads, head_dim = attention.query_dense.kernel.shape
        self.layer_norm(block.layer_norm_1, f"{prefix}.ln_1")
        in_weight = self.read(f"{prefix}.attn.in_proj_weight", (3 * hidden, hidden))
        in_bias = self.read(f"{prefix}.attn.in_proj_bias", (3 * hidden,))
        denses = (attention.query_dense, attention.key_dense, attention.value_dense)
        for i, dense in enumerate(denses):
            rows = slice(i * hidden, (i + 1) * hidden)
            self.assign(
                dense.kernel, in_weight[rows].T.reshape(hidden, heads, head_dim)
            )
            self.assign(dense.bias, in_bias[rows].reshape(heads, head_dim))
        out_weight = self.read(f"{prefix}.attn.out_proj.weight", (hidden, hidden))
        out_bias = self.read(f"{prefix}.attn.out_proj.bias", (hidden,))
        fc_weight = self.read(
            f"{prefix}.mlp.c_fc.weight", block.dense_1.kernel.shape[::-1]
        )
        fc_bias = self.read(f"{prefix}.mlp.c_fc.bias", block.dense_1.bias.shape)
        proj_weight = self.read(
            f"{prefix}.mlp.c_proj.weight", block.dense_2.kernel.shape[::-1]
        )
        proj_bias = self.read(f"{prefix}.mlp.c_proj.bias", (hidden,))
        if layer_scale:
            gamma_1 = self.read(f"{prefix}.ls_1.gamma", (hidden,))
            gamma_2 = self.read(f"{prefix}.ls_2.gamma", (hidden,))
            out_weight, out_bias = out_weight * gamma_1[:, None], out_bias * gamma_1
            proj_weight, proj_bias = proj_weight * gamma_2[:, None], proj_bias * gamma_2
        self.assign(
            attention.output_dense.kernel, out_weight.T.reshape(heads, head_dim, hidden)
        )
        self.assign(attention.output_dense.bias, out_bias)
        self.layer_norm(block.layer_norm_2, f"{prefix}.ln_2")
        self.assign(block.dense_1.kernel, fc_weight.T)
        self.assign(block.dense_1.bias, fc_bias)
        self.assign(block.dense_2.kernel, proj_weight.T)
        self.assign(block.dense_2.bias, proj_bias)


def convert_weights(model, reader: CheckpointReader, converted: dict) -> None:
    """Copy an open_clip checkpoint into `model`, built from `converted`
    (`config.convert_config`'s output).

    Raises `ValueError` naming the file and tensor for a missing tensor, a
    shape mismatch, a checkpoint tensor left unused, or a Keras variable
    left unset.
    """
    copier = _Copier(reader)
    image = model.image_tower.backbone
    text = model.text_tower.backbone
    width = image.embedding.class_embedding.shape[-1]
    patch = image.embedding.patch_embedding.kernel.shape  # (kh, kw, 3, width)
    copier.assign(
        image.embedding.class_embedding,
        copier.read("visual.class_embedding", (width,)),
    )
    conv = copier.read("visual.conv1.weight", (patch[3], patch[2], patch[0], patch[1]))
    copier.assign(image.embedding.patch_embedding.kernel, conv.transpose(2, 3, 1, 0))
    positions = image.embedding.position_embedding.embeddings
    copier.assign(
        positions, copier.read("visual.positional_embedding", positions.shape)
    )
    copier.layer_norm(image.pre_layer_norm, "visual.ln_pre")
    for i, block in enumerate(image.encoder_layers):
        copier.block(
            block,
            f"visual.transformer.resblocks.{i}",
            converted["layer_scale"]["image"],
        )
    copier.layer_norm(image.layer_norm, "visual.ln_post")
    projection = model.image_tower.projection.kernel
    copier.assign(projection, copier.read("visual.proj", projection.shape))

    tokens = text.embedding.token_embedding.embeddings
    copier.assign(tokens, copier.read("token_embedding.weight", tokens.shape))
    text_positions = text.embedding.position_embedding.position_embeddings
    copier.assign(
        text_positions, copier.read("positional_embedding", text_positions.shape)
    )
    for i, block in enumerate(text.encoder_layers):
        copier.block(
            block, f"transformer.resblocks.{i}", converted["layer_scale"]["text"]
        )
    copier.layer_norm(text.layer_norm, "ln_final")
    text_head = model.text_tower.projection
    if converted["text_tower"]["head_use_bias"]:
        kernel = copier.read("text_projection.weight", text_head.kernel.shape[::-1])
        copier.assign(text_head.kernel, kernel.T)
        copier.assign(
            text_head.bias, copier.read("text_projection.bias", text_head.bias.shape)
        )
    else:
        copier.assign(
            text_head.kernel, copier.read("text_projection", text_head.kernel.shape)
        )

    scale_shape = (1,) if converted["nonscalar_logit_scale"] else ()
    copier.assign(
        model.logit_scale, copier.read("logit_scale", scale_shape).reshape(())
    )
    if "logit_bias" in reader:
        if model.logit_bias is None:
            raise ValueError(
                f"The open_clip checkpoint {str(reader.path)!r} has a logit_bias "
                f"(SigLIP-style training), which {type(model).__name__} with loss "
                f"{model.loss_name!r} has no place for. Load it with "
                "keras_towers.SigLIP.from_preset."
            )
        copier.assign(
            model.logit_bias, copier.read("logit_bias", scale_shape).reshape(())
        )

    skipped = [image.embedding.position_ids]
    if model.logit_bias is not None and "logit_bias" not in reader:
        skipped.append(model.logit_bias)  # SigLIP-style use of a CLIP checkpoint
    check_complete(
        model,
        reader,
        copier.assigned,
        skipped=skipped,
        layout="an open_clip CLIP of this config",
    )
