"""Parts of `keras_towers.CLIPRocket`: BN-MLP heads, the EMA target's copies
of trained layers, text dropout inside a text transformer, and the
preprocessing of augmented views.

The heads follow clip-rocket's `nn.Sequential`s (Linear, BatchNorm1d, ReLU);
`HeadBatchNorm` is a batch normalisation that can keep using batch
statistics while frozen, which BYOLIP's EMA target needs (the official
momentum model runs in train mode but is never trained).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from keras_hub.models import CLIPTextEncoder
from keras_hub.src.utils.tensor_utils import preprocessing_function

from keras_towers import objectives_ssl
from keras_towers.augment.views import IMAGES_AUG_KEY
from keras_towers.augment.views import TEXTS_AUG_KEY
from keras_towers.models.clip import TOKEN_KEYS
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

#: Preprocessed augmented-view inputs: `(B, A, H, W, 3)` and `(B, A, L)`.
TOKEN_IDS_AUG_KEY = "token_ids_aug"
PADDING_MASK_AUG_KEY = "padding_mask_aug"
#: Precomputed pooled backbone features of the augmented views `(B, A, F)`
#: of a tower whose backbone is locked, by modality.
FEATURES_AUG_KEYS = {"image": "image_features_aug", "text": "text_features_aug"}
OUTPUT_NORMS = (None, "affine", "plain")
ZERO_SHOT_HEADS = ("global", "augmented", "ensemble")
#: Add-ons this model builds heads for: name -> (recipe hidden width,
#: recipe output width) of the projector (`None`: no projector).
ADDON_PROJECTORS = {
    "siamlip": (2048, 128),
    "byolip": (2048, 128),
    "barlip": (3000, 8192),
    "swalip": None,
}


@keras.saving.register_keras_serializable(package="keras_towers")
class HeadBatchNorm(keras.layers.Layer):
    """Batch normalisation over the batch axis of `(B, D)` features.

    As `torch.nn.BatchNorm1d` (momentum 0.1, i.e. Keras' 0.9; eps 1e-5;
    moving statistics updated with `assign` in the forward pass, as Keras'
    `BatchNormalization`). Unlike Keras' layer, a frozen instance with
    `batch_stats_when_frozen=True` still normalises with batch statistics in
    training mode (and updates its moving statistics): BYOLIP's EMA target
    is a train-mode copy whose parameters only move by the EMA.

    Args:
        affine: bool. Learn a scale and an offset (`False`: SiamLIP's last
            projector layer).
        momentum: float. Moving-average momentum of the statistics.
        epsilon: float.
        batch_stats_when_frozen: bool. See above.
    """

    def __init__(
        self,
        affine: bool = True,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        batch_stats_when_frozen: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.affine = bool(affine)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.batch_stats_when_frozen = bool(batch_stats_when_frozen)

    def build(self, input_shape):
        dim = (int(input_shape[-1]),)
        if self.affine:
            self.gamma = self.add_weight(shape=dim, initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=dim, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=dim, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=dim, initializer="ones", trainable=False, name="moving_variance"
        )
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if training and (self.trainable or self.batch_stats_when_frozen):
            mean = ops.mean(x, axis=0)
            variance = ops.mean(ops.square(x - mean), axis=0)
            m = self.momentum
            self.moving_mean.assign(m * self.moving_mean + (1.0 - m) * mean)
            self.moving_variance.assign(m * self.moving_variance + (1.0 - m) * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        x = (x - mean) * ops.rsqrt(variance + self.epsilon)
        if self.affine:
            x = x * self.gamma + self.beta
        return ops.cast(x, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "affine": self.affine,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "batch_stats_when_frozen": self.batch_stats_when_frozen,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_towers")
class MLPHead(keras.layers.Layer):
    """`num_layers` Dense layers, each but the last followed by BN and ReLU.

    `in -> hidden -> BN -> ReLU -> ... -> output [-> BN]`, clip-rocket's
    `_build_mlp` (the "h" heads: 3 layers, 4096 wide) and its add-on
    projectors and predictors.

    Args:
        input_dim: int. Input width.
        hidden_dim: int. Width of the hidden layers.
        output_dim: int. Output width.
        num_layers: int >= 1 (1: a single Dense layer).
        hidden_bias: bool. Bias in the hidden Dense layers.
        output_bias: bool. Bias in the last Dense layer.
        output_norm: `None`, `"affine"` (BN, BarLIP) or `"plain"` (BN
            without scale and offset, SiamLIP) after the last layer.
        batch_stats_when_frozen: bool. Passed to every `HeadBatchNorm`.

    Example:

    ```python
    head = keras_towers.models.rocket_heads.MLPHead(32, 64, 16, name="head")
    head(np.zeros((4, 32), "float32"))
    ```
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int = 3,
        hidden_bias: bool = True,
        output_bias: bool = True,
        output_norm: str | None = None,
        batch_stats_when_frozen: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (
            ("input_dim", input_dim),
            ("hidden_dim", hidden_dim),
            ("output_dim", output_dim),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"`{arg}` must be an int >= 1. Received: {value!r}")
        if output_norm not in OUTPUT_NORMS:
            raise ValueError(
                f"`output_norm` must be one of {OUTPUT_NORMS}. "
                f"Received: {output_norm!r}"
            )
        self.input_dim = int(input_dim)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.num_layers = int(num_layers)
        self.hidden_bias = bool(hidden_bias)
        self.output_bias = bool(output_bias)
        self.output_norm = output_norm
        self.batch_stats_when_frozen = bool(batch_stats_when_frozen)

        # === Layers ===
        prefix, dtype = self.name, self.dtype_policy
        self.blocks = []
        width = self.input_dim
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            dense = keras.layers.Dense(
                self.output_dim if last else self.hidden_dim,
                use_bias=self.output_bias if last else self.hidden_bias,
                dtype=dtype,
                name=f"{prefix}_dense_{i}",
            )
            dense.build((None, width))
            width = dense.units
            norm = None
            if not last or output_norm is not None:
                norm = HeadBatchNorm(
                    affine=not last or output_norm == "affine",
                    batch_stats_when_frozen=self.batch_stats_when_frozen,
                    dtype=dtype,
                    name=f"{prefix}_bn_{i}",
                )
                norm.build((None, width))
            self.blocks.append((dense, norm, not last))
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for dense, norm, relu in self.blocks:
            x = dense(x)
            if norm is not None:
                x = norm(x, training=training)
            if relu:
                x = ops.relu(x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim,
                "num_layers": self.num_layers,
                "hidden_bias": self.hidden_bias,
                "output_bias": self.output_bias,
                "output_norm": self.output_norm,
                "batch_stats_when_frozen": self.batch_stats_when_frozen,
            }
        )
        return config


# === The EMA target's copies ===


def frozen_copy(layer, prefix: str = "target_"):
    """A frozen copy of `layer` (same config, weights copied), every name
    prefixed so that no variable path is shared with the original (the
    keras-hub trap: shared paths leave half the parameters untrained on
    torch). Towers copy their backbone, renamed too; `MLPHead`s keep
    normalising with batch statistics in training mode."""
    config = layer.get_config()
    config["name"] = prefix + config["name"]
    if "backbone" in config:
        backbone = dict(config["backbone"])
        backbone["config"] = dict(backbone["config"])
        backbone["config"]["name"] = prefix + backbone["config"]["name"]
        config["backbone"] = backbone
    if isinstance(layer, MLPHead):
        config["batch_stats_when_frozen"] = True
    copy = type(layer).from_config(config)
    pairs = list(zip(copy.weights, layer.weights, strict=False))
    if len(copy.weights) != len(layer.weights) or any(
        tuple(c.shape) != tuple(o.shape) for c, o in pairs
    ):
        raise ValueError(
            f"Could not copy {layer.name!r} for the EMA target: its copy from "
            "config has other weights."
        )
    for target, online in pairs:
        # A copy: on jax, assigning the array itself would share its buffer,
        # which the train step donates once per variable.
        target.assign(np.array(keras.ops.convert_to_numpy(online)))
    copy.trainable = False
    return copy


def ema_pairs(target, online) -> list:
    """(target, online) variable pairs the EMA averages: the online layer's
    trainable parameters (BN moving statistics are not averaged)."""
    return [
        (t, o)
        for t, o in zip(target.weights, online.weights, strict=True)
        if o.trainable
    ]


# === Text dropout ===


def check_text_dropout(tower) -> None:
    """Text dropout acts inside a trained keras-hub CLIP-style text encoder."""
    backbone = tower.backbone
    if not isinstance(backbone, CLIPTextEncoder) or (
        backbone.intermediate_output_index is not None
    ):
        raise ValueError(
            "`text_dropout` drops the input of every block of a CLIP-style text "
            "transformer (keras_towers.backbones.TextTransformer / keras-hub "
            f"CLIPTextEncoder). The text backbone is {type(backbone).__name__}."
        )
    if not backbone.trainable:
        raise ValueError("`text_dropout` needs a trained (unlocked) text backbone.")
    if tower.pooling == "none":
        raise ValueError("`text_dropout` needs a text pooling other than 'none'.")


def pool_text_with_dropout(tower, inputs, dropout, training=None):
    """`tower.pool` with `dropout` applied to the input of every block, as
    clip-rocket's `mode='local'` text forward (augmented captions only)."""
    backbone = tower.backbone
    token_ids = inputs["token_ids"]
    padding_mask = inputs.get("padding_mask")
    if padding_mask is None:
        padding_mask = ops.ones_like(token_ids, dtype="bool")
    x = backbone.embedding(token_ids)
    for block in backbone.encoder_layers:
        x = dropout(x, training=training)
        x = block(x, training=training)
    x = backbone.layer_norm(x)
    return tower.pool_sequence(x, token_ids, padding_mask)


# === Preprocessing of augmented views ===


@preprocessing_function
def preprocess_views(preprocessor, x, y=None, sample_weight=None):
    """Raw multi-view batches (`keras_towers.augment.views_map_fn`, batched)
    to tower inputs, with `preprocessor` applied to every view.

    `"images_aug"` uint8 `(B, A, S, S, 3)` becomes float `(B, A, H, W, 3)`
    (framed and normalised like the global view), `"texts_aug"` `(B, A)`
    becomes `"token_ids_aug"` / `"padding_mask_aug"` `(B, A, L)`; the rest
    goes through `preprocessor` as usual.
    """
    x = {k: tf.convert_to_tensor(v) for k, v in x.items()}
    rest = {k: v for k, v in x.items() if k not in (IMAGES_AUG_KEY, TEXTS_AUG_KEY)}
    out = keras.utils.unpack_x_y_sample_weight(preprocessor(rest))[0]
    out = dict(out)
    if IMAGES_AUG_KEY in x:
        images = x[IMAGES_AUG_KEY]
        if images.shape.rank != 5:
            raise ValueError(
                f"`{IMAGES_AUG_KEY}` must be a batch of views (B, A, H, W, C). "
                f"Received shape {tuple(images.shape)}."
            )
        flat = tf.reshape(images, [-1, *_dims(images)[2:]])
        pixels = preprocessor({IMAGE_KEY: flat})[IMAGE_KEY]
        out[IMAGES_AUG_KEY] = tf.reshape(
            pixels, [*_dims(images)[:2], *_dims(pixels)[1:]]
        )
    if TEXTS_AUG_KEY in x:
        texts = x[TEXTS_AUG_KEY]
        if texts.shape.rank != 2:
            raise ValueError(
                f"`{TEXTS_AUG_KEY}` must be a batch of caption views (B, A). "
                f"Received shape {tuple(texts.shape)}."
            )
        tokens = preprocessor({TEXT_KEY: tf.reshape(texts, [-1])})
        for key, name in (
            ("token_ids", TOKEN_IDS_AUG_KEY),
            ("padding_mask", PADDING_MASK_AUG_KEY),
        ):
            value = tokens[key]
            out[name] = tf.reshape(value, [*_dims(texts), *_dims(value)[1:]])
    return keras.utils.pack_x_y_sample_weight(out, y, sample_weight)


def _dims(x) -> list:
    """Static dims where known, dynamic ones elsewhere (keeps static shapes
    through `tf.reshape`, so the number of views stays a Python int)."""
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape)]


# === Add-on losses and small checks ===


def addon_loss(addon: str, y_pred: dict, h_logit_scale):
    """`(loss, diagnostics)` of a CLIPRocket add-on on its `call` outputs
    (SwALIP without augmented views: 0)."""
    has_views = "image_h_aug" in y_pred and "text_h_aug" in y_pred
    if addon == "swalip":
        if not has_views:
            zero = ops.zeros((), "float32")
            return zero, {n: zero for n in addon_diagnostics("swalip")}
        return objectives_ssl.swalip_loss(
            y_pred["image_h_aug"],
            y_pred["text_h_aug"],
            h_logit_scale,
        )
    views = ("image_v_aug", "text_v_aug")
    aug = {k: y_pred.get(k) for k in views} if has_views else {}
    if addon == "barlip":
        return objectives_ssl.barlip_loss(
            y_pred["image_v"],
            y_pred["text_v"],
            aug.get("image_v_aug"),
            aug.get("text_v_aug"),
        )
    return objectives_ssl.siamlip_loss(
        y_pred["image_p"],
        y_pred["text_p"],
        y_pred["image_v"],
        y_pred["text_v"],
        y_pred.get("image_p_aug") if has_views else None,
        y_pred.get("text_p_aug") if has_views else None,
        aug.get("image_v_aug"),
        aug.get("text_v_aug"),
    )


def addon_diagnostics(addon: str) -> tuple:
    if addon == "swalip":
        return objectives_ssl.SWALIP_DIAGNOSTICS
    return objectives_ssl.PAIR_TERM_DIAGNOSTICS


def check_zero_shot(head, weight) -> None:
    if head not in ZERO_SHOT_HEADS:
        raise ValueError(
            f"`zero_shot_head` must be one of {ZERO_SHOT_HEADS}. Received: {head!r}"
        )
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"`ensemble_weight` must be in [0, 1]. Received: {weight}")


def check_views(count, key) -> None:
    if count is None:
        raise ValueError(
            f"The number of views (axis 1 of {key!r}) must be known statically."
        )


def global_view_inputs(kind, inputs):
    if kind == "image":
        return inputs[IMAGE_KEY]
    return {k: inputs[k] for k in TOKEN_KEYS if k in inputs}
