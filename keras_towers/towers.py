"""Towers: a keras-hub backbone, a pooler and a projection head.

A tower turns one modality into per-example vectors. Any keras-hub backbone
works (`CLIPVisionEncoder`, `ViTBackbone`, `BertBackbone`, ...): the tower
feeds it the inputs it declares, pools its output and projects it. Towers
return *un-normalised* embeddings; methods normalise them (ProtoCLIP and 3T
heads need the raw vectors).

Locking a tower is a rule, not an architecture: `tower.trainable = False` and
methods call locked towers with `training=False`. A tower whose *backbone* is
locked (`tower.backbone.trainable = False`) but whose head trains runs the
backbone in inference mode too. The locked part's output
(`tower.locked_features`) can be computed once and cached
(`keras_towers.cache_locked_features`); `tower.from_locked_features` applies
the trainable rest.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_towers.backbones import TextTransformer
from keras_towers.backbones import VisionTransformer

IMAGE_POOLINGS = ("cls", "mean", "none")
TEXT_POOLINGS = ("argmax", "last", "eos", "mean", "first", "none")
HEADS = (None, "linear", "mlp")


def _backbone_output(backbone, outputs, pooling):
    if isinstance(outputs, dict):
        if pooling == "none" and "pooled_output" in outputs:
            return outputs["pooled_output"]
        return outputs["sequence_output"]
    return outputs


def _output_width(backbone) -> int:
    output = backbone.output
    if isinstance(output, dict):
        output = output.get("sequence_output", output.get("pooled_output"))
    return int(output.shape[-1])


class _Tower(keras.layers.Layer):
    """Shared backbone/pooler/head logic of `ImageTower` and `TextTower`."""

    poolings: tuple = ()

    def __init__(
        self,
        backbone: keras.Model,
        pooling: str,
        projection_dim: int | None = None,
        head: str | None = "linear",
        head_use_bias: bool = False,
        head_hidden_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in self.poolings:
            raise ValueError(
                f"`pooling` must be one of {self.poolings}. "
                f"Received: pooling={pooling!r}"
            )
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}")
        if head is not None and not projection_dim:
            raise ValueError(
                f"`head={head!r}` needs a positive `projection_dim`. "
                f"Received: projection_dim={projection_dim!r}"
            )
        # === Layers ===
        self.backbone = backbone
        self.pooling = pooling
        self.projection_dim = projection_dim
        self.head = head
        self.head_use_bias = head_use_bias
        self.head_hidden_dim = head_hidden_dim
        self.feature_dim = _output_width(backbone)
        prefix = self.name
        if head == "linear":
            self.projection = keras.layers.Dense(
                projection_dim,
                use_bias=head_use_bias,
                kernel_initializer=keras.initializers.RandomNormal(
                    stddev=self.feature_dim**-0.5
                ),
                dtype=self.dtype_policy,
                name=f"{prefix}_projection",
            )
        elif head == "mlp":
            hidden = head_hidden_dim or 4 * self.feature_dim
            self.projection = keras.Sequential(
                [
                    keras.layers.Dense(
                        hidden, dtype=self.dtype_policy, name=f"{prefix}_mlp_1"
                    ),
                    keras.layers.Activation(
                        "gelu", dtype=self.dtype_policy, name=f"{prefix}_gelu"
                    ),
                    keras.layers.Dense(
                        projection_dim,
                        use_bias=head_use_bias,
                        dtype=self.dtype_policy,
                        name=f"{prefix}_mlp_2",
                    ),
                ],
                name=f"{prefix}_projection",
            )
        else:
            self.projection = None
        if self.projection is not None:
            self.projection.build((None, self.feature_dim))
        self.built = True

    @property
    def output_dim(self) -> int:
        """Width of the embeddings this tower returns."""
        return self.projection_dim if self.projection else self.feature_dim

    @property
    def locked_part(self) -> str | None:
        """Which part of the tower is locked: `"tower"`, `"backbone"` or `None`.

        `"tower"` when the whole tower is frozen (`tower.trainable = False`),
        `"backbone"` when only the backbone is (`tower.backbone.trainable =
        False`, head trained), `None` when nothing is.
        """
        if not self.trainable:
            return "tower"
        if not self.backbone.trainable:
            return "backbone"
        return None

    @property
    def locked_feature_dim(self) -> int | None:
        """Width of `locked_features`: the output (whole tower locked), the
        pooled feature (backbone locked) or `None` (nothing locked)."""
        part = self.locked_part
        if part is None:
            return None
        return self.output_dim if part == "tower" else self.feature_dim

    def project(self, features, training=None):
        """The head applied to pooled features (identity without a head)."""
        if self.projection is None:
            return features
        return self.projection(features, training=training)

    def locked_features(self, inputs):
        """Output of the locked part, in inference mode.

        The whole tower's output when the tower is locked, the pooled backbone
        feature when only the backbone is. These are what
        `keras_towers.cache_locked_features` stores and what
        `from_locked_features` completes.
        """
        part = self.locked_part
        if part is None:
            raise ValueError(
                f"The tower {self.name!r} is not locked, so it has no locked "
                "features; lock it with `tower.trainable = False` (or "
                "`tower.backbone.trainable = False`)."
            )
        if part == "tower":
            return self(inputs, training=False)
        return self.pool(inputs, training=False)

    def from_locked_features(self, features, training=None):
        """Embeddings from `locked_features`: the trainable rest (the head
        when only the backbone is locked; nothing when all of it is)."""
        part = self.locked_part
        if part is None:
            raise ValueError(
                f"Precomputed features were given for the tower {self.name!r}, "
                "which is not locked: its output changes as it trains, so it "
                "needs the raw inputs."
            )
        width = features.shape[-1]
        if width is not None and width != self.locked_feature_dim:
            raise ValueError(
                f"The tower {self.name!r} (locked part: {part}) expects "
                f"precomputed features of width {self.locked_feature_dim}. "
                f"Received width {width}. Were they computed with another "
                "tower or lock setting?"
            )
        if part == "tower":
            return features
        return self.project(features, training=training)

    def call(self, inputs, training=None):
        return self.project(self.pool(inputs, training=training), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "pooling": self.pooling,
                "projection_dim": self.projection_dim,
                "head": self.head,
                "head_use_bias": self.head_use_bias,
                "head_hidden_dim": self.head_hidden_dim,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_towers")
class ImageTower(_Tower):
    """Image tower: any keras-hub image backbone + pooler + projection head.

    Args:
        backbone: a keras-hub image backbone (`CLIPVisionEncoder`,
            `ViTBackbone`, ...) or any functional model taking images.
        pooling: `"cls"` (first token, CLIP/ViT), `"mean"` (mean over tokens
            or spatial positions) or `"none"` (backbone already pools).
        projection_dim: int. Output width of the head.
        head: `"linear"` (CLIP's projection), `"mlp"` or `None` (no head; the
            embedding is the pooled feature, as in LiT's best public model).
        head_use_bias: bool. Bias in the last head layer (CLIP: no bias).
        head_hidden_dim: int. Hidden width of the `"mlp"` head.

    Example:

    ```python
    tower = keras_towers.ImageTower.vit(image_size=32, patch_size=8)
    embeddings = tower(np.zeros((2, 32, 32, 3), "float32"))
    ```
    """

    poolings = IMAGE_POOLINGS

    def __init__(self, backbone, pooling: str = "cls", **kwargs):
        kwargs.setdefault("name", "image_tower")
        super().__init__(backbone, pooling, **kwargs)
        inputs = backbone.input
        self._input_key = next(iter(inputs)) if isinstance(inputs, dict) else None

    @property
    def image_shape(self) -> tuple:
        """Shape of one preprocessed image, `(height, width, channels)`."""
        inputs = self.backbone.input
        if isinstance(inputs, dict):
            inputs = inputs[self._input_key]
        return tuple(inputs.shape[1:])

    def pool(self, images, training=None):
        """Backbone + pooler: the feature that heads project."""
        if self._input_key is not None:
            images = {self._input_key: images}
        # A locked backbone runs in inference mode (BatchNorm statistics and
        # dropout frozen) even when the head trains.
        outputs = self.backbone(images, training=training and self.backbone.trainable)
        x = _backbone_output(self.backbone, outputs, self.pooling)
        if self.pooling == "cls":
            return x[:, 0, :]
        if self.pooling == "mean":
            return ops.mean(x, axis=tuple(range(1, len(x.shape) - 1)))
        return x

    @classmethod
    def vit(
        cls,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        projection_dim: int = 128,
        name: str = "image_tower",
        **kwargs,
    ) -> ImageTower:
        """A from-scratch CLIP-style ViT tower with a linear head."""
        backbone = VisionTransformer(
            patch_size=patch_size,
            hidden_dim=width,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=mlp_dim or 4 * width,
            image_shape=(image_size, image_size, 3),
            name=f"{name}_backbone",
        )
        return cls(
            backbone,
            pooling="cls",
            projection_dim=projection_dim,
            head="linear",
            name=name,
            **kwargs,
        )


@keras.saving.register_keras_serializable(package="keras_towers")
class TextTower(_Tower):
    """Text tower: any keras-hub text backbone + pooler + projection head.

    Inputs are a dict with `"token_ids"` and `"padding_mask"` (what
    `keras_towers.ContrastivePreprocessor` produces); the tower passes the
    backbone the keys it declares (adding zero `"segment_ids"` for BERT).

    Args:
        backbone: a keras-hub text backbone (`CLIPTextEncoder`,
            `BertBackbone`, ...).
        pooling: `"argmax"` (CLIP: position of the largest token id, which
            must be the end token), `"eos"` (first position of
            `eos_token_id`), `"last"` (last non-padding token), `"mean"`
            (masked mean, sentence-transformers), `"first"` (CLS token) or
            `"none"` (the backbone's pooled output).
        eos_token_id: int. Needed by `pooling="eos"`.
        projection_dim, head, head_use_bias, head_hidden_dim: as for
            `ImageTower`.

    Example:

    ```python
    tower = keras_towers.TextTower.transformer(vocabulary_size=258)
    embeddings = tower({
        "token_ids": np.array([[256, 72, 105, 257, 0]]),
        "padding_mask": np.array([[1, 1, 1, 1, 0]], bool),
    })
    ```
    """

    poolings = TEXT_POOLINGS

    def __init__(
        self,
        backbone,
        pooling: str = "argmax",
        eos_token_id: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", "text_tower")
        super().__init__(backbone, pooling, **kwargs)
        if pooling == "eos" and eos_token_id is None:
            raise ValueError("`pooling='eos'` needs `eos_token_id`.")
        self.eos_token_id = eos_token_id
        inputs = backbone.input
        self._input_keys = tuple(inputs) if isinstance(inputs, dict) else ("token_ids",)

    @property
    def sequence_length(self) -> int | None:
        """The backbone's maximum sequence length, if it has one."""
        return getattr(self.backbone, "max_sequence_length", None)

    def pool(self, inputs, training=None):
        """Backbone + pooler: the feature that heads project."""
        token_ids = inputs["token_ids"]
        padding_mask = inputs.get("padding_mask")
        if padding_mask is None:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        available = {
            "token_ids": token_ids,
            "padding_mask": padding_mask,
            "segment_ids": ops.zeros_like(token_ids),
        }
        backbone_inputs = {k: available[k] for k in self._input_keys}
        if not isinstance(self.backbone.input, dict):
            backbone_inputs = token_ids
        # Inference mode for a locked backbone, as for images.
        outputs = self.backbone(
            backbone_inputs, training=training and self.backbone.trainable
        )
        x = _backbone_output(self.backbone, outputs, self.pooling)
        if self.pooling == "none":
            return x
        return self.pool_sequence(x, token_ids, padding_mask)

    def pool_sequence(self, x, token_ids, padding_mask):
        """The pooler alone: a `(B, L, D)` sequence output to `(B, D)`
        features by `pooling` (not `"none"`), for models that run the
        backbone's blocks themselves (e.g. with text dropout)."""
        if self.pooling == "first":
            return x[:, 0, :]
        mask = ops.cast(padding_mask, x.dtype)
        if self.pooling == "mean":
            summed = ops.sum(x * mask[:, :, None], axis=1)
            count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
            return summed / count
        if self.pooling == "argmax":
            index = ops.argmax(token_ids, axis=-1)
        elif self.pooling == "eos":
            is_eos = ops.cast(ops.equal(token_ids, self.eos_token_id), "int32")
            index = ops.argmax(is_eos, axis=-1)
        else:  # "last"
            index = ops.sum(ops.cast(padding_mask, "int32"), axis=-1) - 1
            index = ops.maximum(index, 0)
        index = ops.cast(index, "int32")[:, None, None]
        return ops.take_along_axis(x, index, axis=1)[:, 0, :]

    def get_config(self):
        config = super().get_config()
        config["eos_token_id"] = self.eos_token_id
        return config

    @classmethod
    def transformer(
        cls,
        vocabulary_size: int,
        sequence_length: int = 32,
        width: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        projection_dim: int = 128,
        pooling: str = "argmax",
        name: str = "text_tower",
        **kwargs,
    ) -> TextTower:
        """A from-scratch CLIP-style causal text transformer tower."""
        backbone = TextTransformer(
            vocabulary_size=vocabulary_size,
            embedding_dim=width,
            hidden_dim=width,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=mlp_dim or 4 * width,
            max_sequence_length=sequence_length,
            name=f"{name}_backbone",
        )
        return cls(
            backbone,
            pooling=pooling,
            projection_dim=projection_dim,
            head="linear",
            name=name,
            **kwargs,
        )
