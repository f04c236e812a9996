"""CLIPRocket: the improved CLIP recipe of Fini et al. ("clip-rocket") and
its SSL add-ons SiamLIP, BYOLIP, BarLIP and SwALIP."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_towers import from_scratch
from keras_towers import objectives
from keras_towers import objectives_rocket
from keras_towers import objectives_ssl
from keras_towers.augment.views import IMAGES_AUG_KEY
from keras_towers.augment.views import TEXTS_AUG_KEY
from keras_towers.models.clip import TOKEN_KEYS
from keras_towers.models.lit import LiT
from keras_towers.models.lit import trainable_towers
from keras_towers.models.rocket_heads import ADDON_PROJECTORS
from keras_towers.models.rocket_heads import FEATURES_AUG_KEYS
from keras_towers.models.rocket_heads import PADDING_MASK_AUG_KEY
from keras_towers.models.rocket_heads import TOKEN_IDS_AUG_KEY
from keras_towers.models.rocket_heads import MLPHead
from keras_towers.models.rocket_heads import addon_diagnostics
from keras_towers.models.rocket_heads import addon_loss
from keras_towers.models.rocket_heads import check_text_dropout
from keras_towers.models.rocket_heads import check_views
from keras_towers.models.rocket_heads import check_zero_shot
from keras_towers.models.rocket_heads import ema_pairs
from keras_towers.models.rocket_heads import frozen_copy
from keras_towers.models.rocket_heads import global_view_inputs
from keras_towers.models.rocket_heads import pool_text_with_dropout
from keras_towers.models.rocket_heads import preprocess_views
from keras_towers.ops import at_least_float32
from keras_towers.ops import l2_normalize
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

_RAW_AUG_KEYS = (IMAGES_AUG_KEY, TEXTS_AUG_KEY)


def _check_int(name, value):
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_towers")
class CLIPRocket(LiT):
    """The improved CLIP recipe ("CLIP🚀", CL2L) with optional SSL add-ons.

    Each training example has a weakly augmented **global** view (image and
    caption) and `A` strongly augmented views of each modality (the recipe:
    `A = 2`; see `keras_towers.augment.views_map_fn`). The global pair goes
    through the towers' linear heads ("z", logit scale init `1/0.07`); the
    augmented views go through the same backbones and then separate image
    and text BN-MLP heads ("h", `head_layers` Dense layers, BN + ReLU between
    them, on the pooled backbone features) with their own logit scale (init
    10); both scales are clamped to `[1, max_logit_scale]`. The loss is
    `keras_towers.objectives_rocket.cl2l_loss`: InfoNCE on the global pair,
    label-smoothed InfoNCE on every (image view, caption view) pair, per
    direction `(L_glob + w L_loc) / (1 + w)` with `w = A`. Text dropout
    (`text_dropout`) drops the input of every text block on augmented
    captions only.

    An `addon` adds `addon_weight * L_addon`
    (`keras_towers.objectives_ssl.combine_addon`):

    - `"siamlip"`: per modality a projector `Linear-BN-ReLU-Linear-BN`
      (no bias, last BN without scale/offset) on the backbone features of
      every view and a predictor `Linear-BN-ReLU-Linear`; each modality's
      predictor predicts the other modality's (stop-gradient) projection
      (`objectives_ssl.siamlip_loss`);
    - `"byolip"`: SiamLIP whose targets come from an EMA copy of the
      trained backbones and projectors (`target_*` layers; non-trainable,
      they move only by `t <- m t + (1 - m) o`, parameters only: the
      copy's BN keeps its own moving statistics and runs in training mode,
      as clip-rocket's momentum model). The update runs at the start of
      each training forward pass with the online weights of that step,
      assigned like BatchNorm's statistics (so it works in jax's stateless
      training too). That is the official sequence (an update after every
      optimizer step, with the weights the next step sees), except that
      the first step's update is a no-op and the update after the last
      step never happens: after `fit` the target lags one update behind
      clip-rocket's. Locked backbones are not copied (their EMA is
      themselves);
    - `"barlip"`: a projector `Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN` and
      the cross-modal Barlow Twins loss (`objectives_ssl.barlip_loss`);
    - `"swalip"`: swapped Sinkhorn predictions on the normalised h
      embeddings with the h scale (`objectives_ssl.swalip_loss`, exactly 2
      views); CL2L must then run without label smoothing.

    A batch without augmented views trains on the global pair alone (CLIP's
    InfoNCE, plus SiamLIP/BYOLIP/BarLIP on the global pair; SwALIP needs
    views and contributes 0). Batches come from raw multi-view data
    (`"images"`, `"texts"`, `"images_aug"` `(B, A, S, S, 3)` uint8,
    `"texts_aug"` `(B, A)` strings), preprocessed inside tf.data by
    `preprocess_samples`, which gives `"images_aug"` `(B, A, H, W, 3)`,
    `"token_ids_aug"` and `"padding_mask_aug"` `(B, A, L)`.

    `encode_images` / `encode_texts` (and `call`'s `"image_embeddings"`,
    `"text_embeddings"`) use `zero_shot_head`: `"global"` (z), `"augmented"`
    (h of the global view, BN in inference mode) or `"ensemble"`, the
    concatenation `[sqrt(w) z, sqrt(1 - w) h]` of the two unit vectors
    (`w = ensemble_weight`): still unit-norm, and the cosine of two such
    embeddings is exactly `w cos_z + (1 - w) cos_h`, the paper's ensemble of
    similarities. Change it on a trained model with `set_zero_shot_head`.
    `call` also returns `"image_z"`, `"text_z"` and (unless the head is
    `"global"`) `"image_h"`, `"text_h"`.

    Towers are chosen as in `keras_towers.ProtoCLIP`: pass `image_tower` /
    `text_tower` (trained from scratch or fine-tuned), or reference
    pretrained backbones with `image_tower_source` / `text_tower_source`
    and lock them (`lock_image="backbone"` + `image_head="linear"` trains
    the heads on frozen features). The h heads and add-on projectors read
    the pooled backbone features.

    Args:
        image_tower: `keras_towers.ImageTower`. Default: a small ViT.
        text_tower: `keras_towers.TextTower`. Default: a small text
            transformer.
        preprocessor: `keras_towers.ContrastivePreprocessor`.
        head_hidden_dim: int. Hidden width of the h heads (the paper: 4096;
            `tiny()`: 32).
        head_layers: int. Dense layers of the h heads (the paper: 3).
        head_dim: int or `None`. Output width of the h heads (default: the
            z width, as in the paper).
        h_logit_scale_init: float. Initial h logit scale (10).
        label_smoothing: float or `None`. Label smoothing of the augmented
            terms only (default 0.1; 0 with SwALIP, which refuses others).
        local_weight: float or `None`. Weight `w` of the augmented terms
            (default: the number of views).
        reduction: `"mean"` or `"sum"` (clip-rocket's `--loss-avg-or-sum`:
            doubles the CL2L loss).
        text_dropout: float. Dropout rate at the input of every text block,
            on augmented captions only (the paper: 0.2 on CC3M, 0.05 on
            CC12M, 0 on YFCC). Needs a trained CLIP-style text transformer.
        addon: `None`, `"siamlip"`, `"byolip"`, `"barlip"` or `"swalip"`.
        addon_weight: float or `None`. Weight of the add-on (default: the
            recipe's, 0.2 for SwALIP, 1 otherwise).
        addon_hidden_dim: int or `None`. Hidden width of the add-on
            projector and predictor (recipe: 2048 SiamLIP/BYOLIP, 3000
            BarLIP).
        addon_dim: int or `None`. Output width of the projector (recipe:
            128 SiamLIP/BYOLIP, 8192 BarLIP).
        momentum: float. BYOLIP's EMA momentum (0.99).
        zero_shot_head: `"global"`, `"augmented"` or `"ensemble"`.
        ensemble_weight: float `w` in `[0, 1]` of the ensemble (0.5).
        lock_image, lock_text: as in `keras_towers.LiT`, but default
            `False` (trained) for towers given as layers.
        **kwargs: `keras_towers.LiT` arguments (`image_tower_source`,
            `text_tower_source`, `image_head`, `projection_dim`, ...) and
            `keras_towers.CLIP` arguments (`logit_scale_init`,
            `max_logit_scale`, `learn_logit_scale`, `embedding_dim`,
            `name`). The global objective is InfoNCE.

    Example:

    ```python
    model = keras_towers.CLIPRocket.tiny(addon="siamlip")
    model.compile()
    views = augment.views_map_fn(image_views, text_views, seed=0, epoch=0)
    model.fit(pairs.map(views).batch(8), epochs=1)
    model.set_zero_shot_head("ensemble", ensemble_weight=0.5)
    image_embeddings = model.encode_images(images)
    ```

    References:
        - [Fini et al., 2023](https://arxiv.org/abs/2305.08675)
    """

    supports_replicas = False
    supports_accumulation = False
    replicas_unsupported_reason = (
        "its BatchNorm heads and SSL add-ons (BarLIP's cross-correlation, "
        "SwALIP's Sinkhorn sums) would see per-replica statistics."
    )

    def __init__(
        self,
        image_tower: ImageTower | None = None,
        text_tower: TextTower | None = None,
        preprocessor: ContrastivePreprocessor | None = None,
        head_hidden_dim: int = 4096,
        head_layers: int = 3,
        head_dim: int | None = None,
        h_logit_scale_init: float = 10.0,
        label_smoothing: float | None = None,
        local_weight: float | None = None,
        reduction: str = "mean",
        text_dropout: float = 0.0,
        addon: str | None = None,
        addon_weight: float | None = None,
        addon_hidden_dim: int | None = None,
        addon_dim: int | None = None,
        momentum: float = 0.99,
        zero_shot_head: str = "global",
        ensemble_weight: float = 0.5,
        lock_image: bool | str | None = None,
        lock_text: bool | str | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", "clip_rocket")
        image_tower, lock_image, lock_text = trainable_towers(
            "CLIPRocket", image_tower, lock_image, lock_text, kwargs
        )
        head_hidden_dim = _check_int("head_hidden_dim", head_hidden_dim)
        head_layers = _check_int("head_layers", head_layers)
        if head_dim is not None:
            head_dim = _check_int("head_dim", head_dim)
        if addon is not None and addon not in ADDON_PROJECTORS:
            raise ValueError(
                f"`addon` must be None or one of {tuple(ADDON_PROJECTORS)}. "
                f"Received: addon={addon!r}"
            )
        spec = objectives_ssl.ADDONS.get(addon) if addon else None
        if label_smoothing is None:
            label_smoothing = 0.0 if spec and not spec.label_smoothing else 0.1
        label_smoothing = objectives.check_label_smoothing(label_smoothing)
        if spec and not spec.label_smoothing and label_smoothing:
            raise ValueError(
                f"The {addon} add-on needs CL2L without label smoothing "
                f"(clip-rocket asserts it). Received: label_smoothing={label_smoothing}"
            )
        if reduction not in objectives_rocket.REDUCTIONS:
            raise ValueError(
                f"`reduction` must be one of {objectives_rocket.REDUCTIONS}. "
                f"Received: {reduction!r}"
            )
        if local_weight is not None and not float(local_weight) >= 0.0:
            raise ValueError(f"`local_weight` must be >= 0. Received: {local_weight}")
        if not 0.0 <= float(text_dropout) < 1.0:
            raise ValueError(
                f"`text_dropout` must be in [0, 1). Received: {text_dropout}"
            )
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: {momentum}")
        if h_logit_scale_init <= 0:
            raise ValueError(
                f"`h_logit_scale_init` must be > 0. Received: {h_logit_scale_init}"
            )
        projector = ADDON_PROJECTORS.get(addon)
        if projector is None and (addon_hidden_dim or addon_dim):
            raise ValueError(
                f"`addon_hidden_dim` / `addon_dim` size an add-on projector; "
                f"addon={addon!r} has none."
            )
        if projector is not None:
            addon_hidden_dim = _check_int(
                "addon_hidden_dim", addon_hidden_dim or projector[0]
            )
            addon_dim = _check_int("addon_dim", addon_dim or projector[1])
        if addon_weight is None and spec is not None:
            addon_weight = spec.weight
        if addon_weight is not None:
            addon_weight = float(addon_weight)
            if not (math.isfinite(addon_weight) and addon_weight >= 0):
                raise ValueError(
                    f"`addon_weight` must be finite and >= 0. Received: {addon_weight}"
                )
        check_zero_shot(zero_shot_head, ensemble_weight)
        # Read by `_diagnostic_names` inside `CLIP.__init__` (plain attribute:
        # Keras' tracking starts with `super().__init__`).
        object.__setattr__(self, "_addon", addon)
        super().__init__(
            image_tower,
            text_tower,
            preprocessor,
            lock_image=lock_image,
            lock_text=lock_text,
            label_smoothing=label_smoothing,
            **kwargs,
        )

        # === Layers ===
        image_width = self.image_tower.feature_dim
        text_width = self.text_tower.feature_dim
        z_dim = self.image_tower.output_dim
        h_dim = head_dim or z_dim
        for kind, width in (("image", image_width), ("text", text_width)):
            setattr(
                self,
                f"{kind}_h_head",
                MLPHead(
                    width, head_hidden_dim, h_dim, head_layers, name=f"{kind}_h_head"
                ),
            )
        self.h_logit_scale = self.add_logit_scale("h_logit_scale", h_logit_scale_init)
        self.image_projector = self.text_projector = None
        self.image_predictor = self.text_predictor = None
        self.target_image_tower = self.target_text_tower = None
        self.target_image_projector = self.target_text_projector = None
        for kind, width in (("image", image_width), ("text", text_width)):
            if addon in ("siamlip", "byolip"):
                projector_head = MLPHead(
                    width,
                    addon_hidden_dim,
                    addon_dim,
                    2,
                    hidden_bias=False,
                    output_bias=False,
                    output_norm="plain",
                    name=f"{kind}_projector",
                )
                predictor = MLPHead(
                    addon_dim,
                    addon_hidden_dim,
                    addon_dim,
                    2,
                    hidden_bias=False,
                    name=f"{kind}_predictor",
                )
                setattr(self, f"{kind}_predictor", predictor)
            elif addon == "barlip":
                projector_head = MLPHead(
                    width,
                    addon_hidden_dim,
                    addon_dim,
                    3,
                    output_norm="affine",
                    name=f"{kind}_projector",
                )
            else:
                continue
            setattr(self, f"{kind}_projector", projector_head)
            if addon == "byolip":
                tower = getattr(self, f"{kind}_tower")
                if tower.locked_part is None:
                    setattr(self, f"target_{kind}_tower", frozen_copy(tower))
                setattr(self, f"target_{kind}_projector", frozen_copy(projector_head))
        self.text_dropout_layer = None
        if text_dropout:
            check_text_dropout(self.text_tower)
            self.text_dropout_layer = keras.layers.Dropout(
                float(text_dropout), name="text_dropout"
            )
        self.check_unique_variable_paths()

        # === Config ===
        self.head_hidden_dim = head_hidden_dim
        self.head_layers = head_layers
        self.head_dim = head_dim
        self.h_logit_scale_init = float(h_logit_scale_init)
        self.local_weight = None if local_weight is None else float(local_weight)
        self.reduction = reduction
        self.text_dropout = float(text_dropout)
        self.addon = addon
        self.addon_weight = addon_weight
        self.addon_hidden_dim = addon_hidden_dim
        self.addon_dim = addon_dim
        self.momentum = float(momentum)
        self.set_zero_shot_head(zero_shot_head, ensemble_weight)

    def _diagnostic_names(self, objective) -> tuple:
        names = objectives_rocket.CL2L_DIAGNOSTICS
        if self._addon is not None:
            names = names + tuple(
                f"{self._addon}_{n}" for n in ("loss", *addon_diagnostics(self._addon))
            )
        return names

    # === Zero-shot head ===

    def set_zero_shot_head(
        self, zero_shot_head: str, ensemble_weight: float | None = None
    ) -> None:
        """Choose the embeddings `encode_images` / `encode_texts` return:
        `"global"` (z), `"augmented"` (h) or `"ensemble"`
        (`[sqrt(w) z, sqrt(1 - w) h]`, `w = ensemble_weight`, default: the
        current one). Compiled predict functions are rebuilt.

        Example:

        ```python
        model.set_zero_shot_head("ensemble", ensemble_weight=0.7)
        ```
        """
        if ensemble_weight is None:
            ensemble_weight = self.ensemble_weight
        check_zero_shot(zero_shot_head, ensemble_weight)
        self.zero_shot_head = zero_shot_head
        self.ensemble_weight = float(ensemble_weight)
        z_dim = self.image_tower.output_dim
        h_dim = self.head_dim or z_dim
        self.embedding_dim = {
            "global": z_dim,
            "augmented": h_dim,
            "ensemble": z_dim + h_dim,
        }[zero_shot_head]
        # The traced predict function closes over the head: trace it again.
        self.predict_function = None

    def _zero_shot_embedding(self, z, h):
        if self.zero_shot_head == "global":
            return z
        if self.zero_shot_head == "augmented":
            return h
        w = self.ensemble_weight
        return ops.concatenate([math.sqrt(w) * z, math.sqrt(1.0 - w) * h], axis=-1)

    # === Forward ===

    def preprocess_samples(self, x, y=None, sample_weight=None):
        """The preprocessor on every view: raw `"images_aug"` /
        `"texts_aug"` become `"images_aug"`, `"token_ids_aug"` and
        `"padding_mask_aug"` (see the class docstring)."""
        if isinstance(x, dict) and any(k in x for k in _RAW_AUG_KEYS):
            return preprocess_views(self.preprocessor, x, y, sample_weight)
        return super().preprocess_samples(x, y, sample_weight)

    def _global_view(self, kind, inputs, training):
        """Pooled backbone features (or `None` when only a locked tower's
        projected output was given) and the z embedding of the global view."""
        tower = getattr(self, f"{kind}_tower")
        feature_key = f"{kind}_features"
        if feature_key in inputs:
            features = inputs[feature_key]
            z = tower.from_locked_features(features, training=training)
            pooled = None
            if tower.locked_part == "backbone" or tower.projection is None:
                pooled = features
            return pooled, z
        pooled = tower.pool(global_view_inputs(kind, inputs), training=training)
        return pooled, tower.project(pooled, training=training and tower.trainable)

    def _pool_views(self, kind, inputs, training, target=False):
        """Pooled features of each augmented view of `kind`, a list of `A`
        `(B, F)` tensors (the target tower's if `target`)."""
        tower = getattr(self, f"{kind}_tower")
        if FEATURES_AUG_KEYS[kind] in inputs:
            return self._precomputed_views(kind, inputs)
        if target and getattr(self, f"target_{kind}_tower") is not None:
            tower = getattr(self, f"target_{kind}_tower")
        if kind == "image":
            views = inputs[IMAGES_AUG_KEY]
            count = views.shape[1]
            check_views(count, IMAGES_AUG_KEY)
            return [tower.pool(views[:, a], training=training) for a in range(count)]
        ids, mask = inputs[TOKEN_IDS_AUG_KEY], inputs.get(PADDING_MASK_AUG_KEY)
        count = ids.shape[1]
        check_views(count, TOKEN_IDS_AUG_KEY)
        out = []
        for a in range(count):
            view = {"token_ids": ids[:, a]}
            if mask is not None:
                view["padding_mask"] = mask[:, a]
            if self.text_dropout_layer is not None and training:
                out.append(
                    pool_text_with_dropout(
                        tower, view, self.text_dropout_layer, training=training
                    )
                )
            else:
                out.append(tower.pool(view, training=training))
        return out

    def _precomputed_views(self, kind, inputs):
        """The views' pooled features given as `"<kind>_features_aug"`
        `(B, A, F)`: only for a tower whose backbone is locked (it has no
        EMA target and no dropout, so they are exactly what it computes)."""
        key = FEATURES_AUG_KEYS[kind]
        tower = getattr(self, f"{kind}_tower")
        part = tower.locked_part
        if not (part == "backbone" or (part == "tower" and tower.projection is None)):
            raise ValueError(
                f"`{key}` are the pooled features of a locked {kind} backbone; "
                f"this model's {kind} tower is "
                + ("trained" if part is None else "locked with its head")
                + ", so it needs the raw augmented views."
            )
        views = inputs[key]
        count = views.shape[1]
        check_views(count, key)
        return [views[:, a] for a in range(count)]

    def _ema_update(self) -> None:
        pairs = []
        for kind in ("image", "text"):
            for name in ("tower", "projector"):
                target = getattr(self, f"target_{kind}_{name}")
                if target is not None:
                    pairs += ema_pairs(target, getattr(self, f"{kind}_{name}"))
        if pairs:
            targets, onlines = zip(*pairs, strict=True)
            objectives_ssl.ema_assign(targets, onlines, self.momentum)

    def call(self, inputs, training=None):
        training = bool(training)
        if training and self.addon == "byolip":
            # The online weights of this step into the EMA target, before use.
            self._ema_update()
        outputs, pooled = {}, {}
        for kind in ("image", "text"):
            keys = (IMAGE_KEY,) if kind == "image" else TOKEN_KEYS
            if f"{kind}_features" not in inputs and keys[0] not in inputs:
                continue
            pooled[kind], z = self._global_view(kind, inputs, training)
            z = l2_normalize(z)
            outputs[f"{kind}_z"] = h = z
            if self.zero_shot_head != "global":
                if pooled[kind] is None:
                    raise ValueError(
                        f"The {kind} tower is locked with a head, so its "
                        f"precomputed `{kind}_features` are projected: the h "
                        "head needs the pooled backbone features."
                    )
                # Inference mode: the h heads' BN statistics come from the
                # augmented views only, as in clip-rocket.
                head = getattr(self, f"{kind}_h_head")
                outputs[f"{kind}_h"] = h = l2_normalize(head(pooled[kind]))
            outputs[f"{kind}_embeddings"] = self._zero_shot_embedding(z, h)
        if not outputs:
            raise ValueError(
                "CLIPRocket inputs must contain 'images' (or 'image_features') "
                "and/or 'token_ids' (or 'text_features'). Received keys: "
                f"{sorted(inputs)}."
            )
        aug_keys = {"image": IMAGES_AUG_KEY, "text": TOKEN_IDS_AUG_KEY}
        views = {k: None for k in aug_keys}
        for kind, key in aug_keys.items():
            if key in inputs or FEATURES_AUG_KEYS[kind] in inputs:
                views[kind] = self._pool_views(kind, inputs, training)
                head = getattr(self, f"{kind}_h_head")
                outputs[f"{kind}_h_aug"] = ops.stack(
                    [l2_normalize(head(f, training=training)) for f in views[kind]]
                )
        if self.addon in ("siamlip", "byolip", "barlip") and len(pooled) == 2:
            outputs.update(self._addon_outputs(inputs, pooled, views, training))
        return outputs

    def _addon_outputs(self, inputs, pooled, views, training):
        outputs = {}
        for kind in ("image", "text"):
            if pooled[kind] is None:
                raise ValueError(
                    f"The {self.addon} projector needs the pooled {kind} backbone "
                    f"features; the precomputed `{kind}_features` are projected."
                )
            projector = getattr(self, f"{kind}_projector")
            feats = [pooled[kind]] + (views[kind] or [])
            v = [projector(f, training=training) for f in feats]
            if self.addon == "barlip":
                outputs[f"{kind}_v"] = v[0]
            else:
                predictor = getattr(self, f"{kind}_predictor")
                p = [predictor(x, training=training) for x in v]
                outputs[f"{kind}_p"] = p[0]
                if views[kind]:
                    outputs[f"{kind}_p_aug"] = ops.stack(p[1:])
                if self.addon == "byolip":
                    v = self._target_projections(kind, inputs, pooled, views, training)
                v = [ops.stop_gradient(x) for x in v]
                outputs[f"{kind}_v"] = v[0]
            if views[kind]:
                outputs[f"{kind}_v_aug"] = ops.stack(v[1:])
        return outputs

    def _target_projections(self, kind, inputs, pooled, views, training):
        """BYOLIP targets: the EMA copy's projections of every view (no
        gradient; the copy's BN normalises with batch statistics)."""
        target_tower = getattr(self, f"target_{kind}_tower")
        if target_tower is None:
            # A locked backbone is its own EMA: reuse the online features.
            feats = [pooled[kind]] + (views[kind] or [])
        else:
            feats = [
                target_tower.pool(global_view_inputs(kind, inputs), training=training)
            ]
            if views[kind]:
                feats += self._pool_views(kind, inputs, training, target=True)
        projector = getattr(self, f"target_{kind}_projector")
        return [projector(ops.stop_gradient(f), training=training) for f in feats]

    # === Loss ===

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y_pred is None or "image_z" not in y_pred or "text_z" not in y_pred:
            raise ValueError(
                "Training CLIPRocket needs images and texts in every batch."
            )
        loss, diagnostics = self.loss_terms(y_pred)
        self._update_diagnostics(diagnostics)
        return self.with_layer_losses(loss)

    def loss_terms(self, y_pred) -> tuple:
        """`(loss, diagnostics)` of `y_pred` (the output of `call`):
        `cl2l_loss`, plus the weighted add-on (`combine_addon`)."""
        clip = objectives_rocket.cl2l_loss(
            y_pred["image_z"],
            y_pred["text_z"],
            ops.exp(at_least_float32(self.logit_scale)),
            y_pred.get("image_h_aug"),
            y_pred.get("text_h_aug"),
            ops.exp(at_least_float32(self.h_logit_scale)),
            label_smoothing=self.label_smoothing,
            local_weight=self.local_weight,
            reduction=self.reduction,
        )
        if self.addon is None:
            return clip
        addon = addon_loss(
            self.addon, y_pred, ops.exp(at_least_float32(self.h_logit_scale))
        )
        return objectives_ssl.combine_addon(
            clip,
            addon,
            self.addon,
            label_smoothing=self.label_smoothing,
            weight=self.addon_weight,
        )

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.pop("loss", None)
        # `embedding_dim` here is the towers' width (the zero-shot width
        # depends on the head).
        config["embedding_dim"] = self.image_tower.output_dim
        config.update(
            {
                "head_hidden_dim": self.head_hidden_dim,
                "head_layers": self.head_layers,
                "head_dim": self.head_dim,
                "h_logit_scale_init": self.h_logit_scale_init,
                "local_weight": self.local_weight,
                "reduction": self.reduction,
                "text_dropout": self.text_dropout,
                "addon": self.addon,
                "addon_weight": self.addon_weight,
                "addon_hidden_dim": self.addon_hidden_dim,
                "addon_dim": self.addon_dim,
                "momentum": self.momentum,
                "zero_shot_head": self.zero_shot_head,
                "ensemble_weight": self.ensemble_weight,
            }
        )
        return config

    @classmethod
    def tiny(
        cls,
        image_size: int = 32,
        embedding_dim: int = 32,
        head_hidden_dim: int = 32,
        config: str = "tiny_shallow",
        **kwargs,
    ) -> CLIPRocket:
        """A very small CLIPRocket for tests (the `"tiny_shallow"` towers,
        32-wide h heads; add-on projectors 32 hidden, 16 out)."""
        if ADDON_PROJECTORS.get(kwargs.get("addon")) is not None:
            kwargs.setdefault("addon_hidden_dim", 32)
            kwargs.setdefault("addon_dim", 16)
        parts = from_scratch.build(config, image_size, projection_dim=embedding_dim)
        return cls(
            parts.image_tower,
            parts.text_tower,
            parts.preprocessor,
            head_hidden_dim=head_hidden_dim,
            **kwargs,
        )
