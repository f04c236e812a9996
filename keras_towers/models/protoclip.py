"""ProtoCLIP: CLIP plus prototype-level discrimination between episodes."""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_towers import from_scratch
from keras_towers import objectives_proto
from keras_towers.models.clip import TOKEN_KEYS
from keras_towers.models.clip import _tower_output
from keras_towers.models.lit import LiT
from keras_towers.models.lit import trainable_towers
from keras_towers.ops import at_least_float32
from keras_towers.ops import l2_normalize
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

#: Input key: each sample's position in the current episode.
SAMPLE_INDEX_KEY = "sample_index"
K_POLICIES = ("error", "clip")

#: Episode state set by `set_episode_state`: name -> (rows, kind).
_STATE = {
    "image_cluster_ids": ("episode", "int32"),
    "text_cluster_ids": ("episode", "int32"),
    "image_centroids": ("clusters", "float32"),
    "text_centroids": ("clusters", "float32"),
    "image_prototypes": ("clusters", "float32"),
    "text_prototypes": ("clusters", "float32"),
}
_EXTERNAL_STATE = {
    "external_cluster_ids": ("episode", "int32"),
    "image_external_prototypes": ("clusters", "float32"),
    "text_external_prototypes": ("clusters", "float32"),
}


def _proto_head(hidden_dim, proto_dim, input_dim, name, dtype):
    """Linear -> BN -> ReLU -> Linear (the official `--add-projection-head`)."""
    head = keras.Sequential(
        [
            keras.layers.Dense(hidden_dim, name=f"{name}_hidden", dtype=dtype),
            # torch BatchNorm1d defaults: momentum 0.1 (Keras 0.9), eps 1e-5.
            keras.layers.BatchNormalization(
                momentum=0.9, epsilon=1e-5, name=f"{name}_bn", dtype=dtype
            ),
            keras.layers.ReLU(name=f"{name}_relu", dtype=dtype),
            keras.layers.Dense(proto_dim, name=f"{name}_output", dtype=dtype),
        ],
        name=name,
    )
    head.build((None, input_dim))
    return head


@keras.saving.register_keras_serializable(package="keras_towers")
class EpisodeState(keras.layers.Layer):
    """ProtoCLIP's per-episode clusters and prototypes, as non-trainable
    variables of fixed shape (`names` -> `(rows, dtype)`, see `_STATE`).

    Training state, not model knowledge: `.keras` files keep it; presets
    leave it out, and `load_weights` of a `.weights.h5` file (presets,
    `BackupAndRestore` checkpoints) does not restore it: the next episode
    re-clusters anyway.
    """

    def __init__(self, episode_size, num_clusters, proto_dim, external, **kwargs):
        super().__init__(**kwargs)
        state = dict(_STATE)
        if external:
            state.update(_EXTERNAL_STATE)
        rows = {"episode": int(episode_size), "clusters": int(num_clusters)}
        self.names = tuple(state)
        for name, (kind, dtype) in state.items():
            shape = (rows[kind],) if dtype == "int32" else (rows[kind], proto_dim)
            setattr(
                self,
                name,
                self.add_weight(
                    shape=shape,
                    initializer="zeros",
                    dtype=dtype,
                    trainable=False,
                    name=name,
                ),
            )
        self.built = True
        self._config = {
            "episode_size": int(episode_size),
            "num_clusters": int(num_clusters),
            "proto_dim": int(proto_dim),
            "external": bool(external),
        }

    def get_config(self):
        return {**super().get_config(), **self._config}


@keras.saving.register_keras_serializable(package="keras_towers")
class ProtoCLIP(LiT):
    """ProtoCLIP: CLIP with prototype-level discrimination over episodes.

    Training runs in episodes (one Keras epoch each; see
    `keras_towers.models.protoclip_episodes.ProtoCLIPEpisodes`): at the start
    of an episode, the episode's samples are encoded in inference mode, the
    image and text prototype features are clustered separately (k-means, `K`
    clusters), and the clusters and Prototypical Back Translation (PBT)
    prototypes are written into this model's non-trainable episode state.
    The train step then minimises

    `L = w_clip InfoNCE + w_proto (L_I->T + L_T->I) / 2
    + w_ext (L_I->E + L_T->E) / 2`

    (`keras_towers.objectives_proto`): InfoNCE on the ordinary embeddings;
    the prototype terms on two extra heads (one per tower, not shared:
    Dense -> BatchNorm -> ReLU -> Dense, on the *un-normalised* embedding,
    output L2-normalised) with their own learnable temperature
    `logit_scale_proto` (init `1/0.07`, clamped to `[1, max_logit_scale]`);
    soft targets `softmax(<C_y, C_j> / target_temperature)` from the raw
    centroids of the other modality; hard external-teacher labels when
    `external_teacher` is set. Each training batch carries
    `"sample_index"`, the sample's position in the episode, which selects
    its cluster ids.

    The episode state lives in non-trainable variables of fixed shape
    (cluster ids `(episode_size,)`, centroids and prototypes
    `(num_clusters, proto_dim)`) and a scalar `proto_active` (0 during the
    InfoNCE warm-up and LiT episodes, 1 otherwise), so the compiled train
    step reads the current episode's values on every backend without being
    retraced. The state (sub-layer `episode_state`) is training state: a
    `.keras` file keeps it; presets leave it out (at the recipe's scale,
    `K=20000` and 128 dims, it would add about 40 MB) and weight files do
    not restore it, since the next episode re-clusters anyway.

    Towers are chosen as in `keras_towers.LiT`, but both train by default:
    pass `image_tower` / `text_tower` (trained from scratch or fine-tuned),
    or reference pretrained backbones with `image_tower_source` /
    `text_tower_source` and lock them (`lock_image="backbone"` +
    `image_head="linear"` trains heads on frozen features; the backbones
    are then not stored in presets). Without towers, a small ViT and text
    transformer are built (`embedding_dim` wide).

    Args:
        image_tower: `keras_towers.ImageTower`. Default: a small ViT.
        text_tower: `keras_towers.TextTower`. Default: a small text
            transformer.
        preprocessor: `keras_towers.ContrastivePreprocessor`.
        num_clusters: int `K` (recipe: 20000, about 10 samples per cluster).
        episode_size: int. Samples per episode (recipe: 200000), drawn with
            replacement from the data set; fixes the shape of the cluster-id
            state.
        k_policy: `"error"` (default) refuses `num_clusters > episode_size`;
            `"clip"` then uses `K = episode_size` clusters.
        proto_hidden_dim: int. Hidden width of the prototype heads (2048).
        proto_dim: int. Output width of the prototype heads (128).
        proto_logit_scale_init: float. Initial prototype logit scale
            (`1/0.07`), clamped like the CLIP scale.
        target_temperature: float. Temperature of the soft targets (0.01).
        clip_weight: float `w_clip` (1).
        proto_weight: float `w_proto` (1, as in the recipe; the official
            code's default is 0).
        external_weight: float `w_ext`. Default: 1 with an external teacher
            (the recipe), 0 without (the only allowed value then).
        pbt: bool. Students use PBT prototypes (default, as in the recipe);
            `False` uses the other modality's raw centroids instead.
        external_teacher: `None` or int, the feature width of the external
            teacher's (cached, e.g. PCA-64) features, as computed by
            `keras_towers.models.protoclip_teacher.teacher_features`.
            Requires `pbt=True` (the official code silently trains against
            zero prototypes otherwise).
        teacher_source: str or `None`. Which encoder computed the teacher
            features (e.g. `"all_minilm_l6_v2"`); recorded in the config for
            `keras-towers train` and the preset card, not used by the model.
        lock_image, lock_text: as in `keras_towers.LiT`, but default
            `False` (trained) for towers given as layers.
        **kwargs: `keras_towers.LiT` arguments (`image_tower_source`,
            `text_tower_source`, `image_head`, `projection_dim`,
            `text_pooling`, `variant`, ...) and `keras_towers.CLIP`
            arguments (`logit_scale_init`, `max_logit_scale`,
            `learn_logit_scale`, `label_smoothing`, `embedding_dim`,
            `name`). The CLIP objective is InfoNCE.

    Example:

    ```python
    model = keras_towers.ProtoCLIP.tiny(num_clusters=8, episode_size=32)
    model.compile()
    episodes = keras_towers.ProtoCLIPEpisodes(
        model, {"images": images, "texts": texts}, batch_size=8
    )
    model.fit(episodes.dataset, epochs=3, callbacks=[episodes])
    ```

    With the external teacher (frozen all-MiniLM-L6-v2 features of every
    caption, L2-normalised, PCA to 64 dims, cached on disk):

    ```python
    from keras_towers.models.protoclip_teacher import teacher_features

    teacher = teacher_features(texts, pca_dim=64, cache_dir="cache/teacher")
    model = keras_towers.ProtoCLIP.tiny(
        num_clusters=8, episode_size=32, external_teacher=64
    )
    model.compile()
    episodes = keras_towers.ProtoCLIPEpisodes(
        model, {"images": images, "texts": texts}, batch_size=8,
        teacher_features=teacher,
    )
    model.fit(episodes.dataset, epochs=3, callbacks=[episodes])
    ```

    References:
        - [Chen et al., 2022](https://arxiv.org/abs/2206.10996)
    """

    supports_replicas = False
    supports_accumulation = False
    replicas_unsupported_reason = (
        "its BatchNorm heads would see per-replica statistics and its "
        "prototype losses local rows only."
    )

    def __init__(
        self,
        image_tower: ImageTower | None = None,
        text_tower: TextTower | None = None,
        preprocessor: ContrastivePreprocessor | None = None,
        num_clusters: int = 20000,
        episode_size: int = 200000,
        k_policy: str = "error",
        proto_hidden_dim: int = 2048,
        proto_dim: int = 128,
        proto_logit_scale_init: float = 1.0 / 0.07,
        target_temperature: float = 0.01,
        clip_weight: float = 1.0,
        proto_weight: float = 1.0,
        external_weight: float | None = None,
        pbt: bool = True,
        external_teacher: int | None = None,
        teacher_source: str | None = None,
        lock_image: bool | str | None = None,
        lock_text: bool | str | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", "protoclip")
        image_tower, lock_image, lock_text = trainable_towers(
            "ProtoCLIP", image_tower, lock_image, lock_text, kwargs
        )
        for arg, value in (
            ("num_clusters", num_clusters),
            ("episode_size", episode_size),
            ("proto_hidden_dim", proto_hidden_dim),
            ("proto_dim", proto_dim),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"`{arg}` must be an int >= 1. Received: {value!r}")
        if k_policy not in K_POLICIES:
            raise ValueError(
                f"`k_policy` must be one of {K_POLICIES}. Received: {k_policy!r}"
            )
        if num_clusters > episode_size and k_policy == "error":
            raise ValueError(
                f"`num_clusters={num_clusters}` clusters need at least as many "
                f"samples per episode, but `episode_size={episode_size}`. Lower "
                '`num_clusters`, raise `episode_size`, or pass `k_policy="clip"` '
                f"to use K={episode_size}."
            )
        if external_teacher is not None:
            if not pbt:
                raise ValueError(
                    "An external teacher needs `pbt=True`: its prototypes are "
                    "PBT means of the student features over the teacher's "
                    "clusters (the official code, without PBT, silently trains "
                    "against all-zero prototypes and labels)."
                )
            if isinstance(external_teacher, bool) or int(external_teacher) < 1:
                raise ValueError(
                    "`external_teacher` must be None or the teacher's feature "
                    f"width (an int >= 1). Received: {external_teacher!r}"
                )
            external_teacher = int(external_teacher)
        if external_weight is None:
            external_weight = 1.0 if external_teacher is not None else 0.0
        if external_teacher is None and external_weight != 0:
            raise ValueError(
                "`external_weight` needs an `external_teacher`. Received: "
                f"external_weight={external_weight}, external_teacher=None."
            )
        weights = (clip_weight, proto_weight, external_weight)
        if any(not math.isfinite(float(w)) or float(w) < 0 for w in weights):
            raise ValueError(
                "`clip_weight`, `proto_weight` and `external_weight` must be "
                f"finite and >= 0. Received: {weights}"
            )
        if not float(target_temperature) > 0:
            raise ValueError(
                f"`target_temperature` must be > 0. Received: {target_temperature}"
            )
        if proto_logit_scale_init <= 0:
            raise ValueError(
                "`proto_logit_scale_init` must be > 0. Received: "
                f"{proto_logit_scale_init}"
            )
        # Read by `_diagnostic_names` inside `CLIP.__init__` (plain attribute:
        # Keras' tracking starts with `super().__init__`).
        object.__setattr__(self, "_has_teacher", external_teacher is not None)
        super().__init__(
            image_tower,
            text_tower,
            preprocessor,
            lock_image=lock_image,
            lock_text=lock_text,
            **kwargs,
        )

        # === Layers ===
        width = self.image_tower.output_dim
        self.image_proto_head = _proto_head(
            proto_hidden_dim, proto_dim, width, "image_proto_head", self.dtype_policy
        )
        self.text_proto_head = _proto_head(
            proto_hidden_dim, proto_dim, width, "text_proto_head", self.dtype_policy
        )
        self.logit_scale_proto = self.add_logit_scale(
            "logit_scale_proto", proto_logit_scale_init
        )
        self.active_clusters = min(int(num_clusters), int(episode_size))
        self.episode_state = EpisodeState(
            episode_size,
            self.active_clusters,
            proto_dim,
            external=external_teacher is not None,
            name="episode_state",
        )
        self.episode_state_names = self.episode_state.names
        self.proto_active = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            name="proto_active",
        )
        self.check_unique_variable_paths()

        # === Config ===
        self.num_clusters = int(num_clusters)
        self.episode_size = int(episode_size)
        self.k_policy = k_policy
        self.proto_hidden_dim = int(proto_hidden_dim)
        self.proto_dim = int(proto_dim)
        self.proto_logit_scale_init = float(proto_logit_scale_init)
        self.target_temperature = float(target_temperature)
        self.clip_weight = float(clip_weight)
        self.proto_weight = float(proto_weight)
        self.external_weight = float(external_weight)
        self.pbt = bool(pbt)
        self.external_teacher = external_teacher
        self.teacher_source = teacher_source

    def _diagnostic_names(self, objective) -> tuple:
        return objectives_proto.protoclip_diagnostics(
            tuple(objective.diagnostics), external=self._has_teacher
        )

    def call(self, inputs, training=None):
        outputs = {}
        for kind, tower, head, feature_key, input_keys in (
            (
                "image",
                self.image_tower,
                self.image_proto_head,
                "image_features",
                IMAGE_KEY,
            ),
            (
                "text",
                self.text_tower,
                self.text_proto_head,
                "text_features",
                TOKEN_KEYS,
            ),
        ):
            keys = (input_keys,) if isinstance(input_keys, str) else input_keys
            if feature_key not in inputs and keys[0] not in inputs:
                continue
            raw = _tower_output(tower, inputs, feature_key, input_keys, training)
            outputs[f"{kind}_embeddings"] = l2_normalize(raw)
            outputs[f"{kind}_proto"] = l2_normalize(head(raw, training=training))
        if not outputs:
            raise ValueError(
                "ProtoCLIP inputs must contain 'images' (or 'image_features') "
                "and/or 'token_ids' (or 'text_features'). Received keys: "
                f"{sorted(inputs)}."
            )
        return outputs

    def set_episode_state(self, proto_active: bool | None = None, **state) -> None:
        """Write the current episode's clusters and prototypes.

        Called by `ProtoCLIPEpisodes` between episodes (outside the compiled
        step). Keyword arguments are NumPy arrays named as
        `episode_state_names`: `image_cluster_ids`, `text_cluster_ids`
        (int, `(episode_size,)`), `image_centroids`, `text_centroids`
        (`C^I`, `C^T`), `image_prototypes` (`P^{I<-T}`), `text_prototypes`
        (`P^{T<-I}`), and with a teacher `external_cluster_ids`,
        `image_external_prototypes`, `text_external_prototypes`; all
        `(K, proto_dim)` but the ids. `proto_active` switches the prototype
        terms on or off.
        """
        unknown = set(state) - set(self.episode_state_names)
        if unknown:
            raise ValueError(
                f"Unknown episode state {sorted(unknown)}; expected names in "
                f"{self.episode_state_names}."
            )
        for name, value in state.items():
            variable = getattr(self.episode_state, name)
            value = np.asarray(value)
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"`{name}` must have shape {tuple(variable.shape)}. "
                    f"Received: {value.shape}"
                )
            if variable.dtype == "int32":
                limit = self.active_clusters
                if value.size and (value.min() < 0 or value.max() >= limit):
                    raise ValueError(f"`{name}` must lie in [0, {limit}).")
            variable.assign(value.astype(variable.dtype))
        if proto_active is not None:
            self.proto_active.assign(1.0 if proto_active else 0.0)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        needed = ("image_embeddings", "text_embeddings", "image_proto", "text_proto")
        if y_pred is None or any(k not in y_pred for k in needed):
            raise ValueError(
                "Training ProtoCLIP needs images and texts in every batch."
            )
        if not isinstance(x, dict) or SAMPLE_INDEX_KEY not in x:
            raise ValueError(
                "Training ProtoCLIP needs each sample's position in the episode, "
                f"{SAMPLE_INDEX_KEY!r}, in every batch (use the dataset of "
                "`keras_towers.models.protoclip_episodes.ProtoCLIPEpisodes`)."
            )
        index = ops.cast(x[SAMPLE_INDEX_KEY], "int32")
        scale = ops.exp(at_least_float32(self.logit_scale_proto))
        tau = self.target_temperature
        clip = self.objective(
            y_pred["image_embeddings"],
            y_pred["text_embeddings"],
            **self.objective_kwargs(),
        )
        state = self.episode_state
        image_ids = ops.take(state.image_cluster_ids, index, axis=0)
        text_ids = ops.take(state.text_cluster_ids, index, axis=0)
        # Without PBT the student faces the other modality's raw centroids.
        image_protos = state.image_prototypes if self.pbt else state.text_centroids
        text_protos = state.text_prototypes if self.pbt else state.image_centroids
        i2t = objectives_proto.prototype_loss(
            y_pred["image_proto"],
            image_protos,
            objectives_proto.prototype_targets(text_ids, state.text_centroids, tau),
            scale,
        )
        t2i = objectives_proto.prototype_loss(
            y_pred["text_proto"],
            text_protos,
            objectives_proto.prototype_targets(image_ids, state.image_centroids, tau),
            scale,
        )
        external = (None, None)
        if self.external_teacher is not None:
            labels = ops.take(state.external_cluster_ids, index, axis=0)
            external = tuple(
                objectives_proto.external_prototype_loss(
                    y_pred[f"{kind}_proto"], prototypes, labels, scale
                )
                for kind, prototypes in (
                    ("image", state.image_external_prototypes),
                    ("text", state.text_external_prototypes),
                )
            )
        active = at_least_float32(self.proto_active)
        loss, diagnostics = objectives_proto.protoclip_loss(
            clip,
            i2t,
            t2i,
            *external,
            clip_weight=self.clip_weight,
            proto_weight=self.proto_weight * active,
            external_weight=self.external_weight * active,
        )
        self._update_diagnostics(diagnostics)
        return self.with_layer_losses(loss)

    def compile(self, optimizer="auto", **kwargs):
        """`CLIP.compile`; the prototype heads also get no weight decay.

        The official code excludes every `projection_head` parameter (and
        1-D parameters, as CLIP does) from AdamW's weight decay.
        """
        super().compile(optimizer=optimizer, **kwargs)
        optimizer = self.optimizer
        if getattr(optimizer, "weight_decay", None) and not optimizer.built:
            heads = self.image_proto_head.weights + self.text_proto_head.weights
            small = [v for v in self.trainable_variables if len(v.shape) < 2]
            optimizer.exclude_from_weight_decay(var_list=small + heads)

    def get_config(self):
        config = super().get_config()
        config.pop("loss", None)
        config.update(
            {
                "num_clusters": self.num_clusters,
                "episode_size": self.episode_size,
                "k_policy": self.k_policy,
                "proto_hidden_dim": self.proto_hidden_dim,
                "proto_dim": self.proto_dim,
                "proto_logit_scale_init": self.proto_logit_scale_init,
                "target_temperature": self.target_temperature,
                "clip_weight": self.clip_weight,
                "proto_weight": self.proto_weight,
                "external_weight": self.external_weight,
                "pbt": self.pbt,
                "external_teacher": self.external_teacher,
                "teacher_source": self.teacher_source,
            }
        )
        return config

    def training_state_objects(self) -> list:
        """The episode state: left out of presets (see the class docstring)."""
        return [self.episode_state]

    def preset_metadata(self) -> dict:
        return {**super().preset_metadata(), "teacher_source": self.teacher_source}

    @classmethod
    def tiny(
        cls,
        image_size: int = 32,
        embedding_dim: int = 32,
        num_clusters: int = 4,
        episode_size: int = 16,
        proto_hidden_dim: int = 32,
        proto_dim: int = 16,
        **kwargs,
    ) -> ProtoCLIP:
        """A very small ProtoCLIP for tests (the `"tiny_shallow"` towers)."""
        parts = from_scratch.build(
            "tiny_shallow", image_size, projection_dim=embedding_dim
        )
        return cls(
            parts.image_tower,
            parts.text_tower,
            parts.preprocessor,
            num_clusters=num_clusters,
            episode_size=episode_size,
            proto_hidden_dim=proto_hidden_dim,
            proto_dim=proto_dim,
            **kwargs,
        )
