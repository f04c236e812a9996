"""CLIP and SigLIP: two towers, one contrastive objective."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_towers import distributed
from keras_towers import from_scratch
from keras_towers import objectives
from keras_towers import objectives_chunked  # noqa: F401 (registers them)
from keras_towers.constraints import ClampConstraint
from keras_towers.feature_cache import FeatureSource
from keras_towers.models.base import ContrastiveModel
from keras_towers.ops import at_least_float32
from keras_towers.ops import l2_normalize
from keras_towers.optimizers import AdamW
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

#: Preprocessed inputs of a text tower.
TOKEN_KEYS = ("token_ids", "padding_mask")

_LOSS_DEFAULTS = {
    # objective: (logit scale init, logit bias init)
    "infonce": (1.0 / 0.07, None),
    "sigmoid": (10.0, -10.0),
    "infonce_chunked": (1.0 / 0.07, None),
    "sigmoid_chunked": (10.0, -10.0),
}


@keras.saving.register_keras_serializable(package="keras_towers")
class CLIP(ContrastiveModel):
    """Contrastive language-image pre-training with two towers.

    `call` returns L2-normalised per-example embeddings (never a
    batch-coupled logits matrix, so `predict` over many batches is
    meaningful); `compute_loss` builds the `B x B` logits and applies the
    objective. The logit scale `s = exp(theta)` is learned, and `theta` is
    clamped to `[0, ln(max_logit_scale)]` after every optimizer step.

    `call` takes preprocessed `"images"` and `"token_ids"` (+
    `"padding_mask"`); for a locked tower it also takes the output of its
    locked part precomputed, `"image_features"` / `"text_features"` (see
    `keras_towers.cache_locked_features`), and applies only the trainable
    rest. Locked towers (and locked backbones) always run in inference mode.

    Args:
        image_tower: `keras_towers.ImageTower`. Default: a small ViT.
        text_tower: `keras_towers.TextTower`. Default: a small causal text
            transformer over the preprocessor's tokenizer.
        preprocessor: `keras_towers.ContrastivePreprocessor` for raw images
            and strings. Default: byte tokenizer + bicubic resize to the
            image tower's input size.
        loss: `"infonce"` (CLIP) or `"sigmoid"` (SigLIP), their block-wise
            forms for very large batches (`"infonce_chunked"`,
            `"sigmoid_chunked"`), or any registered objective name.
        logit_scale_init: float. Initial `s` (default `1/0.07` for InfoNCE,
            `10` for sigmoid).
        logit_bias_init: float or `None`. Initial bias of the sigmoid loss
            (default `-10`); unused by InfoNCE.
        max_logit_scale: float or `None`. Upper clamp of `s` (default 100;
            `None` disables clamping, as in big_vision's SigLIP).
        learn_logit_scale: bool. Train the scale (else keep it fixed).
        label_smoothing: float. InfoNCE label smoothing.
        embedding_dim: int. Embedding width of the default towers.

    Example:

    ```python
    model = keras_towers.CLIP.tiny()
    model.compile()
    model.fit({"images": images, "texts": captions}, epochs=1, batch_size=8)
    image_embeddings = model.encode_images(images)
    text_embeddings = model.encode_texts(["a photo of a cat"])
    ```

    References:
        - [Radford et al., 2021](https://arxiv.org/abs/2103.00020)
        - [Zhai et al., 2023](https://arxiv.org/abs/2303.15343) (SigLIP)
    """

    def __init__(
        self,
        image_tower: ImageTower | None = None,
        text_tower: TextTower | None = None,
        preprocessor: ContrastivePreprocessor | None = None,
        loss: str = "infonce",
        logit_scale_init: float | None = None,
        logit_bias_init: float | None = None,
        max_logit_scale: float | None = 100.0,
        learn_logit_scale: bool = True,
        label_smoothing: float = 0.0,
        embedding_dim: int = 128,
        **kwargs,
    ):
        kwargs.setdefault("name", "clip")
        objective = objectives.get(loss)
        scale_default, bias_default = _LOSS_DEFAULTS.get(
            objective.objective_name, (1.0 / 0.07, None)
        )
        if logit_scale_init is None:
            logit_scale_init = scale_default
        if logit_bias_init is None:
            logit_bias_init = bias_default
        if logit_scale_init <= 0:
            raise ValueError(
                f"`logit_scale_init` must be > 0. Received: {logit_scale_init}"
            )
        if max_logit_scale is not None and max_logit_scale < 1.0:
            raise ValueError(
                f"`max_logit_scale` must be >= 1. Received: {max_logit_scale}"
            )

        # === Layers ===
        if preprocessor is None:
            image_size = image_tower.image_shape[0] if image_tower else 64
            preprocessor = ContrastivePreprocessor.default(image_size=image_size)
        if image_tower is None:
            image_tower = ImageTower.vit(projection_dim=embedding_dim)
        if text_tower is None:
            text_tower = TextTower.transformer(
                vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
                sequence_length=preprocessor.sequence_length,
                projection_dim=embedding_dim,
            )
        if image_tower.output_dim != text_tower.output_dim:
            raise ValueError(
                "The image and text towers must output embeddings of the same "
                f"width. Received: image_tower.output_dim="
                f"{image_tower.output_dim}, text_tower.output_dim="
                f"{text_tower.output_dim}."
            )
        super().__init__(**kwargs)
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.preprocessor = preprocessor
        self.objective = objective
        self._objective_takes_label_smoothing = "label_smoothing" in _arguments(
            objective
        )
        self.max_logit_scale = max_logit_scale
        self.learn_logit_scale = learn_logit_scale
        self.logit_scale = self.add_logit_scale("logit_scale", logit_scale_init)
        self.logit_bias = None
        if logit_bias_init is not None and "logit_bias" in _arguments(objective):
            self.logit_bias = self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(float(logit_bias_init)),
                trainable=True,
                name="logit_bias",
            )
        self._init_diagnostics(self._diagnostic_names(objective))
        self.built = True
        self.check_unique_variable_paths()

        # === Config ===
        self.loss_name = objective.objective_name
        self.logit_scale_init = float(logit_scale_init)
        self.logit_bias_init = logit_bias_init
        self.label_smoothing = float(label_smoothing)
        self.embedding_dim = image_tower.output_dim

    def add_logit_scale(self, name: str, init: float):
        """A temperature weight stored as log(scale), starting at `init`,
        clamped to [0, log(max_logit_scale)] after every step and learned
        when `learn_logit_scale` (CLIP's rule; methods with several scales
        make each one this way)."""
        max_scale = self.max_logit_scale
        return self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(init)),
            constraint=ClampConstraint(
                0.0, None if max_scale is None else math.log(max_scale)
            ),
            trainable=self.learn_logit_scale,
            name=name,
        )

    def _diagnostic_names(self, objective) -> tuple:
        """Metric names logged by `compute_loss` (subclasses extend)."""
        return tuple(objective.diagnostics)

    def feature_sources(self) -> list[FeatureSource]:
        """The towers whose locked part `cache_locked_features` can cache."""
        return [
            FeatureSource("image", self.image_tower, IMAGE_KEY, (IMAGE_KEY,)),
            FeatureSource("text", self.text_tower, TEXT_KEY, TOKEN_KEYS),
        ]

    def call(self, inputs, training=None):
        outputs = {}
        if "image_features" in inputs or IMAGE_KEY in inputs:
            outputs["image_embeddings"] = l2_normalize(
                _tower_output(
                    self.image_tower, inputs, "image_features", IMAGE_KEY, training
                )
            )
        if "text_features" in inputs or "token_ids" in inputs:
            outputs["text_embeddings"] = l2_normalize(
                _tower_output(
                    self.text_tower, inputs, "text_features", TOKEN_KEYS, training
                )
            )
        if not outputs:
            raise ValueError(
                f"{type(self).__name__} inputs must contain 'images' (or "
                "precomputed 'image_features') and/or 'token_ids' (or "
                f"'text_features'). Received keys: {sorted(inputs)}."
            )
        return outputs

    def objective_kwargs(self) -> dict:
        """Scale (and bias) to pass to the objective, as tensors."""
        kwargs = {"logit_scale": ops.exp(at_least_float32(self.logit_scale))}
        if self.logit_bias is not None:
            kwargs["logit_bias"] = self.logit_bias
        if self._objective_takes_label_smoothing:
            kwargs["label_smoothing"] = self.label_smoothing
        return kwargs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if (
            y_pred is None
            or "text_embeddings" not in y_pred
            or "image_embeddings" not in y_pred
        ):
            raise ValueError("Training CLIP needs images and texts in every batch.")
        loss, diagnostics = distributed.pair_loss(
            self.objective,
            y_pred["image_embeddings"],
            y_pred["text_embeddings"],
            **self.objective_kwargs(),
        )
        self._update_diagnostics(diagnostics)
        return self.with_layer_losses(loss)

    def compile(
        self,
        optimizer="auto",
        learning_rate=5e-4,
        weight_decay: float = 0.2,
        **kwargs,
    ):
        """Configure training. `optimizer="auto"` gives CLIP's AdamW.

        The default is AdamW (beta 0.9/0.98, eps 1e-6;
        `keras_towers.optimizers.AdamW`, which densifies TensorFlow's sparse
        embedding gradients that Keras' Adam mishandles) with weight decay on
        matrices only: biases, norms, logit scale/bias and every other
        parameter with fewer than two dimensions are excluded.

        Args:
            optimizer: `"auto"` or any Keras optimizer.
            learning_rate: float or schedule, for `"auto"`.
            weight_decay: float, for `"auto"`.
            **kwargs: passed to `keras.Model.compile`. On tensorflow,
                `jit_compile` defaults to `True` (XLA), which Keras' "auto"
                leaves off on CPU (except under a multi-replica
                `tf.distribute` strategy); other backends keep Keras' default.
                `loss` is not accepted: the objective is part of the model.
        """
        if "loss" in kwargs:
            raise ValueError(
                "CLIP computes its own loss; choose it with `CLIP(loss=...)` "
                "instead of `compile(loss=...)`."
            )
        if optimizer == "auto":
            optimizer = AdamW(
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                beta_1=0.9,
                beta_2=0.98,
                epsilon=1e-6,
            )
        if (
            kwargs.get("jit_compile", "auto") == "auto"
            and keras.config.backend() == "tensorflow"
            and distributed.num_replicas(self) == 1
        ):
            # Keras' "auto" leaves XLA off for tensorflow on CPU; with it the
            # train step is ~1.3x faster (benchmarks/clip_train_step.py).
            # Not under a multi-replica tf.distribute strategy: there XLA
            # fails to reach the mirrored variables of the other devices.
            kwargs["jit_compile"] = True
        # A built optimizer (recompiling to continue training with it) keeps
        # the exclusions it was built with.
        if getattr(optimizer, "weight_decay", None) and not optimizer.built:
            optimizer.exclude_from_weight_decay(
                var_list=[v for v in self.trainable_variables if len(v.shape) < 2]
            )
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        if not self.compiled or self.optimizer is None:
            return None
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config):
        optimizer = keras.saving.deserialize_keras_object(config["optimizer"])
        self.compile(optimizer=optimizer)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_tower": keras.saving.serialize_keras_object(self.image_tower),
                "text_tower": keras.saving.serialize_keras_object(self.text_tower),
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "loss": self.loss_name,
                "logit_scale_init": self.logit_scale_init,
                "logit_bias_init": self.logit_bias_init,
                "max_logit_scale": self.max_logit_scale,
                "learn_logit_scale": self.learn_logit_scale,
                "label_smoothing": self.label_smoothing,
                "embedding_dim": self.embedding_dim,
            }
        )
        return config

    @classmethod
    def tiny(
        cls,
        image_size: int = 32,
        embedding_dim: int = 32,
        config: str = "tiny",
        **kwargs,
    ) -> CLIP:
        """A very small CLIP for tests, guides and smoke runs (the `"tiny"`
        config of `keras_towers.from_scratch`, 16-byte texts; `"tiny_text64"`
        has room for prompt templates)."""
        parts = from_scratch.build(config, image_size, projection_dim=embedding_dim)
        return cls(parts.image_tower, parts.text_tower, parts.preprocessor, **kwargs)


@keras.saving.register_keras_serializable(package="keras_towers")
class SigLIP(CLIP):
    """CLIP with the pairwise sigmoid loss (`CLIP(loss="sigmoid")`).

    The logit scale starts at 10 and a learnable bias at -10 (open_clip's
    SigLIP defaults); both are options.

    Example:

    ```python
    model = keras_towers.SigLIP.tiny()
    ```

    References:
        - [Zhai et al., 2023](https://arxiv.org/abs/2303.15343)
    """

    def __init__(self, *args, loss: str = "sigmoid", **kwargs):
        kwargs.setdefault("name", "siglip")
        super().__init__(*args, loss=loss, **kwargs)


def _tower_output(tower, inputs, feature_key, input_keys, training):
    """A tower's output from precomputed locked features or from its inputs.

    Locked parts always run with `training=False` (BatchNorm statistics and
    dropout frozen); only the trainable rest sees `training`.
    """
    training = training and tower.trainable
    if feature_key in inputs:
        return tower.from_locked_features(inputs[feature_key], training=training)
    if isinstance(input_keys, str):
        return tower(inputs[input_keys], training=training)
    return tower({k: inputs[k] for k in input_keys if k in inputs}, training=training)


def _arguments(fn) -> tuple:
    import inspect

    return tuple(inspect.signature(fn).parameters)
