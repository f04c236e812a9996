"""Three Towers (3T): CLIP from scratch, aligned to a frozen third tower."""

from __future__ import annotations

import math
import warnings

import keras
import keras_hub

from keras_towers import distributed
from keras_towers import from_scratch
from keras_towers import pretrained
from keras_towers.feature_cache import FeatureSource
from keras_towers.models import lit
from keras_towers.models.base import take_legacy_keys
from keras_towers.models.clip import CLIP
from keras_towers.models.clip import TOKEN_KEYS
from keras_towers.ops import at_least_float32
from keras_towers.ops import l2_normalize
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import THIRD_FEATURES_KEY
from keras_towers.preprocessing import THIRD_IMAGE_KEY
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained import apply_lock
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

HEAD_CHOICES = ("linear", None)

#: Loss names logged per pair, in the order of `loss_weights`.
PAIR_LOSSES = ("image_text_loss", "image_third_loss", "text_third_loss")

#: Config keys written before the one `*_tower_source` spelling (still read).
LEGACY_KEYS = {"third_tower_preset": "third_tower_source"}


def _as_third_tower(third_tower, pooling: str) -> ImageTower | None:
    """A locked `ImageTower` from a tower or a bare backbone (or `None`)."""
    if third_tower is None:
        return None
    if not isinstance(third_tower, ImageTower):
        if not isinstance(third_tower, keras.Model):
            raise TypeError(
                "`third_tower` must be a keras_towers.ImageTower or an image "
                f"backbone (keras.Model). Received: {third_tower!r}"
            )
        third_tower = ImageTower(
            third_tower, pooling=pooling, head=None, name="third_tower"
        )
    third_tower.trainable = False
    return third_tower


def _main_towers(
    image_tower,
    text_tower,
    preprocessor,
    kwargs: dict,
    *,
    image_tower_source,
    text_tower_source,
    lock_image,
    lock_text,
    image_pooling,
    text_pooling,
    image_head,
    text_head,
    projection_dim,
    third_tower_source,
) -> tuple:
    """`f`, `g`, the preprocessor and the resolved locks: the towers named by
    `image_tower_source` / `text_tower_source` built as `keras_towers.LiT`
    builds them (`lit.load_sourced_tower`), and the locks applied.

    Without sources or locks everything is returned as given (CLIP's
    defaults fill in the rest). A missing lock of a referenced tower
    defaults to `"backbone"` when it has a head, else `True`. `kwargs` (the
    CLIP arguments) gets `embedding_dim` set to the shared width of the
    towers when a source sets it.
    """
    if image_tower_source is None and text_tower_source is None:
        if lock_image is None and lock_text is None and image_head is None:
            return image_tower, text_tower, preprocessor, lock_image, lock_text

    def default_lock(source, head):
        return None if source is None else ("backbone" if head else True)

    if lock_image is None:
        lock_image = default_lock(image_tower_source, image_head)
    if lock_text is None:
        lock_text = default_lock(text_tower_source, text_head)
    lit.check_sources(
        "ThreeTowers",
        image_tower_source=image_tower_source,
        text_tower_source=text_tower_source,
        text_tower=text_tower,
        # An unset lock leaves a given tower's trainable flags as they are.
        lock_image=False if lock_image is None else lock_image,
        lock_text=False if lock_text is None else lock_text,
        image_head=image_head,
    )
    if image_tower is None and image_tower_source is not None:
        image_tower = lit.load_sourced_tower(
            "image",
            image_tower_source,
            pooling=image_pooling,
            head=image_head,
            projection_dim=projection_dim,
            lock=lock_image,
        )
    if image_tower is None:
        # CLIP's default f, built here: the preprocessor and g follow its size.
        width = projection_dim or kwargs.get("embedding_dim", 128)
        image_tower = ImageTower.vit(projection_dim=width)
    kwargs.setdefault("embedding_dim", image_tower.output_dim)
    if preprocessor is None:
        preprocessor = lit.default_preprocessor(
            image_tower, image_tower_source, text_tower_source
        )
        if (
            third_tower_source is not None
            and pretrained.source_modality(third_tower_source) == "image"
            and preprocessor.third_image_converter is None
        ):
            # As the `three-towers` recipe does: h's own image preprocessing.
            preprocessor.third_image_converter = pretrained.get_encoder(
                third_tower_source
            ).preprocessing()
    if text_tower_source is not None:
        text_tower = lit.load_sourced_tower(
            "text",
            text_tower_source,
            pooling=text_pooling,
            head=text_head,
            projection_dim=image_tower.output_dim if text_head else None,
            lock=lock_text,
        )
    for kind, tower, source, lock in (
        ("image", image_tower, image_tower_source, lock_image),
        ("text", text_tower, text_tower_source, lock_text),
    ):
        if tower is None:
            continue
        lit.check_locked_tower_has_no_head(kind, tower, source, lock)
        # Locks are set before the model tracks the towers (as in LiT).
        if lock is not None:
            apply_lock(tower, lock)
    return image_tower, text_tower, preprocessor, lock_image, lock_text


class _Untracked:
    """Holds a layer out of Keras' tracking (so out of saved weights)."""

    def __init__(self, value):
        self.value = value


def _renamed(diagnostics: dict, prefix: str, a: str, b: str) -> dict:
    """Objective diagnostics under pair names, e.g. `image_third_i2h_accuracy`."""
    names = {
        "i2t_accuracy": f"{prefix}_{a}2{b}_accuracy",
        "t2i_accuracy": f"{prefix}_{b}2{a}_accuracy",
    }
    return {names.get(k, f"{prefix}_{k}"): v for k, v in diagnostics.items()}


def _alignment_head(units: int, input_dim: int, name: str, dtype) -> keras.layers.Dense:
    head = keras.layers.Dense(
        units,
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=input_dim**-0.5),
        dtype=dtype,
        name=name,
    )
    head.build((None, input_dim))
    return head


@keras.saving.register_keras_serializable(package="keras_towers")
class ThreeTowers(CLIP):
    """Three Towers: contrastive image/text towers plus a frozen third tower.

    The image tower `f` and text tower `g` are trained contrastively as in
    CLIP, and both are also aligned to a frozen pretrained tower `h`:

    `L = w1 InfoNCE(f, g) + w2 InfoNCE(f_h, h) + w3 InfoNCE(g_h, h)`

    where `f_h` and `g_h` are extra linear heads on the pooled features of
    the same backbones (`f.pool`, `g.pool`), so the alignment does not
    constrain the main embedding space directly, and `h` is the third
    tower's pooled frozen feature, optionally through a trainable linear
    head. Each pair has its own learnable temperature (init `1/0.07`,
    clamped to `max_logit_scale`). Only `f` and `g` serve `encode_images` /
    `encode_texts`.

    `h` needs its own image preprocessing (e.g. 224 px for an EfficientNet
    while `f` is a 64 px ViT). Training batches carry either
    `"third_features"` (precomputed by `keras_towers.cache_locked_features`,
    the default path) or `"third_images"` (from a preprocessor with a
    `third_image_converter`). `h`'s frozen weights are never saved with the
    model: they come from `third_tower_source`, referenced by name or
    directory in the config, and `ThreeTowers.from_preset` loads the model
    without `h` unless `load_third_tower=True`.

    With referenced locked backbones the alignment heads `f_h` / `g_h` still
    sit on `f.pool` / `g.pool`, which is exactly what
    `keras_towers.cache_locked_features` caches for them (`"image_features"`
    / `"text_features"`), so a model over locked backbones trains only its
    heads and temperatures on cached features of all three towers. Without
    `preprocessor`, sources give the encoders' own preprocessing (as in
    `LiT`), plus `h`'s image converter when `third_tower_source` is a
    registered encoder.

    The paper gives no official code; the defaults follow the design notes
    (`w = 1/3` each, linear `f_h`/`g_h` heads, a linear head on `h`,
    separate temperatures) and every one of them is an option.

    Args:
        image_tower: `keras_towers.ImageTower` `f` (trained). Default: a
            small ViT.
        text_tower: `keras_towers.TextTower` `g` (trained). Default: a small
            text transformer.
        preprocessor: `keras_towers.ContrastivePreprocessor`. Give it a
            `third_image_converter` to feed `h` raw images.
        third_tower: the frozen tower `h`: a `keras_towers.ImageTower` or an
            image backbone (wrapped with `third_pooling`, no head). It is
            locked (`trainable=False`, inference mode).
        third_tower_source: str. Where `h` comes from: a pretrained encoder
            name (`keras_towers.pretrained.names("image")`, e.g.
            `"efficientnet_lite0_imagenet"`) or a keras-hub backbone preset
            directory. Stored in the config instead of `h`'s weights.
            (`third_tower_preset` is its old name, still accepted.)
        third_pooling: str. Pooling of a bare third backbone (`"mean"`,
            `"cls"`, `"none"`). Default: the encoder's own, else `"mean"`.
        third_feature_dim: int. Width of `h`'s features; taken from `h` when
            it is loaded, needed otherwise (saved in the config).
        load_third_tower: bool. Load `h` from `third_tower_source` when
            `third_tower` is not given.
        loss_weights: three floats `(w1, w2, w3)` for the image-text,
            image-third and text-third losses. Default `1/3` each.
        alignment_heads: `"linear"` (default) adds the `f_h`/`g_h` heads;
            `None` aligns the main embeddings to `h` directly.
        third_head: `"linear"` (default): a trainable linear head on `h`'s
            features; `None`: use the frozen features as they are.
        alignment_dim: int. Width of the alignment space. Default: the main
            embedding width with a third head, `h`'s feature width without.
        separate_logit_scales: bool. One learnable temperature per pair
            (default) or CLIP's single one for all three.
        image_tower_source: str or `None`. `f` from a referenced pretrained
            backbone, exactly as in `keras_towers.LiT`: a registered image
            encoder (`keras_towers.pretrained.names("image")`, e.g.
            `"efficientnet_lite0_imagenet"`) or a keras-hub backbone preset
            directory, pooled with `image_pooling`, with `image_head` on
            top. The backbone must be locked and its weights are left out of
            presets and the config (rebuilt from the source on load). An
            `image_tower` given with it is taken as the source's tower.
        text_tower_source: str or `None`. The same for `g` (e.g.
            `"all_minilm_l6_v2"`), with `text_pooling` and `text_head`
            projecting to `f`'s width.
        lock_image: `True` (lock the whole tower; with a source it then has
            no head), `"backbone"` (lock the backbone, train the head) or
            `False`. With `image_tower_source` it must be `True` or
            `"backbone"`; default there: `"backbone"` with an `image_head`,
            else `True`. Without a source `None` (default) leaves `f`'s
            trainable flags as they are.
        lock_text: the same for `g` (default with `text_tower_source`:
            `"backbone"` with a `text_head`, else `True`).
        image_pooling: str or `None`. Pooling of a referenced image backbone
            (default: the encoder's own).
        text_pooling: str or `None`. Pooling of a referenced text backbone
            (`"mean"`, `"cls"`, ...; default: the encoder's own).
        image_head: `None` (default), `"linear"` or `"mlp"`: a trained head
            on a referenced image backbone (needs `lock_image="backbone"`
            and `projection_dim`).
        text_head: `"linear"` (default), `"mlp"` or `None`: the head on a
            referenced text backbone.
        projection_dim: int or `None`. Output width of `image_head` (and of
            the default `f` when only `g` is referenced).
        **kwargs: `keras_towers.CLIP` arguments (`logit_scale_init`,
            `max_logit_scale`, `learn_logit_scale`, `label_smoothing`,
            `embedding_dim`, ...). The objective is InfoNCE.

    Example:

    ```python
    model = keras_towers.ThreeTowers(
        image_tower, text_tower, preprocessor,
        third_tower_source="efficientnet_lite0_imagenet",
    )
    cached = keras_towers.cache_locked_features(model, pairs)  # third_features
    model.compile()
    model.fit(cached.shuffle(4096).batch(256), epochs=5)
    model.save_to_preset("my_3t")  # without h's weights
    model = keras_towers.ThreeTowers.from_preset("my_3t")  # f and g only
    ```

    References:
        - [Kossen et al., 2023](https://arxiv.org/abs/2305.16999)
    """

    def __init__(
        self,
        image_tower: ImageTower | None = None,
        text_tower: TextTower | None = None,
        preprocessor: ContrastivePreprocessor | None = None,
        third_tower: ImageTower | keras.Model | None = None,
        third_tower_source: str | None = None,
        third_pooling: str | None = None,
        third_feature_dim: int | None = None,
        load_third_tower: bool = True,
        loss_weights=(1 / 3, 1 / 3, 1 / 3),
        alignment_heads: str | None = "linear",
        third_head: str | None = "linear",
        alignment_dim: int | None = None,
        separate_logit_scales: bool = True,
        image_tower_source: str | None = None,
        text_tower_source: str | None = None,
        lock_image: bool | str | None = None,
        lock_text: bool | str | None = None,
        image_pooling: str | None = None,
        text_pooling: str | None = None,
        image_head: str | None = None,
        text_head: str | None = "linear",
        projection_dim: int | None = None,
        **kwargs,
    ):
        kwargs["third_tower_source"] = third_tower_source
        take_legacy_keys(kwargs, LEGACY_KEYS)
        third_tower_source = kwargs.pop("third_tower_source")
        kwargs.setdefault("name", "three_towers")
        loss = kwargs.pop("loss", "infonce")
        if loss != "infonce":
            raise ValueError(
                f"ThreeTowers uses InfoNCE for all three pairs. Received: loss={loss!r}"
            )
        loss_weights = tuple(float(w) for w in loss_weights)
        if (
            len(loss_weights) != 3
            or any(w < 0 or not math.isfinite(w) for w in loss_weights)
            or not any(loss_weights)
        ):
            raise ValueError(
                "`loss_weights` must be three finite non-negative floats, not "
                "all zero (image-text, image-third, text-third). "
                f"Received: {loss_weights}"
            )
        for name, value in (
            ("alignment_heads", alignment_heads),
            ("third_head", third_head),
        ):
            if value not in HEAD_CHOICES:
                raise ValueError(
                    f"`{name}` must be one of {HEAD_CHOICES}. Received: {value!r}"
                )

        # === Layers ===
        if third_tower is None and third_tower_source is not None and load_third_tower:
            third_tower = pretrained.load_tower(
                third_tower_source,
                modality="image",
                pooling=third_pooling or pretrained.default_pooling(third_tower_source),
                name="third_tower",
            )
        third = _as_third_tower(third_tower, third_pooling or "mean")
        if third is not None:
            if third_feature_dim is not None and third_feature_dim != third.output_dim:
                raise ValueError(
                    f"`third_feature_dim={third_feature_dim}` does not match the "
                    f"third tower's output width {third.output_dim}."
                )
            third_feature_dim = third.output_dim
        if third_feature_dim is None:
            raise ValueError(
                "ThreeTowers needs the third tower's feature width: pass "
                "`third_tower`, `third_tower_source` or `third_feature_dim`."
            )
        image_tower, text_tower, preprocessor, lock_image, lock_text = _main_towers(
            image_tower,
            text_tower,
            preprocessor,
            kwargs,
            image_tower_source=image_tower_source,
            text_tower_source=text_tower_source,
            lock_image=lock_image,
            lock_text=lock_text,
            image_pooling=image_pooling,
            text_pooling=text_pooling,
            image_head=image_head,
            text_head=text_head,
            projection_dim=projection_dim,
            third_tower_source=third_tower_source,
        )
        super().__init__(
            image_tower, text_tower, preprocessor, loss="infonce", **kwargs
        )
        embedding_dim = self.embedding_dim
        if alignment_dim is None:
            alignment_dim = third_feature_dim if third_head is None else embedding_dim
        if third_head is None and alignment_dim != third_feature_dim:
            raise ValueError(
                "Without a third head the alignment space is h's feature space: "
                f"`alignment_dim` must be {third_feature_dim}. Received: "
                f"{alignment_dim}."
            )
        if alignment_heads is None and alignment_dim != embedding_dim:
            raise ValueError(
                "Without alignment heads the main embeddings are aligned to h "
                f"directly, so the alignment width must equal the embedding "
                f"width {embedding_dim}; it is {alignment_dim} (set "
                "`alignment_dim`, or add a third head)."
            )
        if alignment_heads == "linear":
            self.image_alignment_head = _alignment_head(
                alignment_dim,
                self.image_tower.feature_dim,
                "image_alignment_head",
                self.dtype_policy,
            )
            self.text_alignment_head = _alignment_head(
                alignment_dim,
                self.text_tower.feature_dim,
                "text_alignment_head",
                self.dtype_policy,
            )
        else:
            self.image_alignment_head = None
            self.text_alignment_head = None
        if third_head == "linear":
            self.third_head = _alignment_head(
                alignment_dim, third_feature_dim, "third_head", self.dtype_policy
            )
        else:
            self.third_head = None
        self.image_third_logit_scale = None
        self.text_third_logit_scale = None
        if separate_logit_scales:
            self.image_third_logit_scale = self.add_logit_scale(
                "image_third_logit_scale", self.logit_scale_init
            )
            self.text_third_logit_scale = self.add_logit_scale(
                "text_third_logit_scale", self.logit_scale_init
            )
        # h is deliberately untracked (and reached through a method, not an
        # attribute, which Keras' saving would walk): its frozen weights
        # belong to its own preset and never enter this model's weights,
        # summary or optimizer.
        self._third = _Untracked(third)
        self.check_unique_variable_paths()

        # === Config ===
        self.third_tower_source = third_tower_source
        self.third_pooling = third_pooling
        self.third_feature_dim = int(third_feature_dim)
        self.loss_weights = loss_weights
        self.alignment_heads = alignment_heads
        self.third_head_type = third_head
        self.alignment_dim = int(alignment_dim)
        self.separate_logit_scales = separate_logit_scales
        self.image_tower_source = image_tower_source
        self.text_tower_source = text_tower_source
        self.lock_image = lock_image
        self.lock_text = lock_text
        self.image_pooling = image_pooling
        self.text_pooling = text_pooling
        self.image_head = image_head
        self.text_head = text_head
        self.projection_dim = projection_dim

    def get_third_tower(self) -> ImageTower | None:
        """The frozen tower `h`, or `None` when loaded without it."""
        return self._third.value

    def set_third_tower(self, third_tower: ImageTower | keras.Model | None) -> None:
        """Attach (or, with `None`, drop) the frozen tower `h`.

        Args:
            third_tower: a `keras_towers.ImageTower` or an image backbone
                (pooled with `third_pooling`), with the feature width this
                model was built for. It is locked.
        """
        third = _as_third_tower(third_tower, self.third_pooling or "mean")
        if third is not None and third.output_dim != self.third_feature_dim:
            raise ValueError(
                f"This model's third head expects features of width "
                f"{self.third_feature_dim}; the given tower outputs "
                f"{third.output_dim}."
            )
        self._third.value = third

    def _diagnostic_names(self, objective) -> tuple:
        pair = tuple(objective.diagnostics)
        zeros = dict.fromkeys(pair, 0.0)
        return (
            *PAIR_LOSSES,
            *pair,
            *_renamed(zeros, "image_third", "i", "h"),
            *_renamed(zeros, "text_third", "t", "h"),
        )

    def feature_sources(self) -> list[FeatureSource]:
        return [
            *super().feature_sources(),
            FeatureSource(
                "third", self.get_third_tower(), IMAGE_KEY, (THIRD_IMAGE_KEY,)
            ),
        ]

    def _pooled(self, tower, inputs, feature_key, input_keys, training):
        """Pooled backbone features of a main tower (for both of its heads)."""
        training = training and tower.trainable
        if feature_key in inputs:
            part = tower.locked_part
            if part is None or (part == "tower" and tower.projection is not None):
                raise ValueError(
                    f"ThreeTowers needs the pooled features of {tower.name!r} "
                    f"for its alignment head, so {feature_key!r} are accepted "
                    "only when its backbone is locked (and its head, if any, "
                    f"trains). Its locked part is: {part}."
                )
            features = inputs[feature_key]
            width = features.shape[-1]
            if width is not None and width != tower.feature_dim:
                raise ValueError(
                    f"{feature_key!r} must have width {tower.feature_dim} (the "
                    f"pooled features of {tower.name!r}). Received width {width}."
                )
            return features
        if isinstance(input_keys, str):
            return tower.pool(inputs[input_keys], training=training)
        return tower.pool(
            {k: inputs[k] for k in input_keys if k in inputs}, training=training
        )

    def call(self, inputs, training=None):
        third = self.get_third_tower()
        aligned = THIRD_FEATURES_KEY in inputs or (
            THIRD_IMAGE_KEY in inputs and third is not None
        )
        outputs = {}
        for kind, feature_key, input_keys, tower, head in (
            (
                "image",
                "image_features",
                IMAGE_KEY,
                self.image_tower,
                self.image_alignment_head,
            ),
            (
                "text",
                "text_features",
                TOKEN_KEYS,
                self.text_tower,
                self.text_alignment_head,
            ),
        ):
            keys = (input_keys,) if isinstance(input_keys, str) else input_keys
            if feature_key not in inputs and keys[0] not in inputs:
                continue
            pooled = self._pooled(tower, inputs, feature_key, input_keys, training)
            embedding = tower.project(pooled, training=training and tower.trainable)
            outputs[f"{kind}_embeddings"] = l2_normalize(embedding)
            if aligned:
                if head is None:
                    outputs[f"{kind}_alignment_embeddings"] = outputs[
                        f"{kind}_embeddings"
                    ]
                else:
                    outputs[f"{kind}_alignment_embeddings"] = l2_normalize(head(pooled))
        if not outputs:
            raise ValueError(
                "ThreeTowers inputs must contain 'images' and/or 'token_ids' "
                f"(preprocessed). Received keys: {sorted(inputs)}."
            )
        if aligned:
            if THIRD_FEATURES_KEY in inputs:
                features = inputs[THIRD_FEATURES_KEY]
                width = features.shape[-1]
                if width is not None and width != self.third_feature_dim:
                    raise ValueError(
                        f"'third_features' must have width {self.third_feature_dim} "
                        f"(the third tower's). Received width {width}."
                    )
            else:
                features = third(inputs[THIRD_IMAGE_KEY], training=False)
            if self.third_head is not None:
                features = self.third_head(features)
            outputs["third_embeddings"] = l2_normalize(features)
        return outputs

    def _scale(self, variable):
        """`exp` of a pair's temperature variable (the main one if shared)."""
        variable = self.logit_scale if variable is None else variable
        return keras.ops.exp(at_least_float32(variable))

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        needed = ("image_embeddings", "text_embeddings", "third_embeddings")
        if y_pred is None or any(k not in y_pred for k in needed):
            raise ValueError(
                "Training ThreeTowers needs images, texts and the third tower's "
                "input in every batch: 'third_features' (from "
                "`keras_towers.cache_locked_features`) or 'third_images' (a "
                "preprocessor with `third_image_converter`, and the model "
                "loaded with its third tower)."
            )
        smoothing = {"label_smoothing": self.label_smoothing}
        main, main_diag = distributed.pair_loss(
            self.objective,
            y_pred["image_embeddings"],
            y_pred["text_embeddings"],
            logit_scale=self._scale(self.logit_scale),
            **smoothing,
        )
        image_third, image_diag = distributed.pair_loss(
            self.objective,
            y_pred["image_alignment_embeddings"],
            y_pred["third_embeddings"],
            logit_scale=self._scale(self.image_third_logit_scale),
            **smoothing,
        )
        text_third, text_diag = distributed.pair_loss(
            self.objective,
            y_pred["text_alignment_embeddings"],
            y_pred["third_embeddings"],
            logit_scale=self._scale(self.text_third_logit_scale),
            **smoothing,
        )
        w1, w2, w3 = self.loss_weights
        loss = w1 * main + w2 * image_third + w3 * text_third
        self._update_diagnostics(
            {
                **dict(
                    zip(
                        PAIR_LOSSES,
                        map(distributed.share_to_log, (main, image_third, text_third)),
                        strict=True,
                    )
                ),
                **main_diag,
                **_renamed(image_diag, "image_third", "i", "h"),
                **_renamed(text_diag, "text_third", "t", "h"),
            }
        )
        return self.with_layer_losses(loss)

    def get_config(self):
        config = super().get_config()
        config.pop("loss", None)
        config.update(
            {
                "third_tower_source": self.third_tower_source,
                "third_pooling": self.third_pooling,
                "third_feature_dim": self.third_feature_dim,
                # Reloading restores h only when it can come from its preset.
                "load_third_tower": self.get_third_tower() is not None
                and self.third_tower_source is not None,
                "loss_weights": list(self.loss_weights),
                "alignment_heads": self.alignment_heads,
                "third_head": self.third_head_type,
                "alignment_dim": self.alignment_dim,
                "separate_logit_scales": self.separate_logit_scales,
                "image_tower_source": self.image_tower_source,
                "text_tower_source": self.text_tower_source,
                "lock_image": self.lock_image,
                "lock_text": self.lock_text,
                "image_pooling": self.image_pooling,
                "text_pooling": self.text_pooling,
                "image_head": self.image_head,
                "text_head": self.text_head,
                "projection_dim": self.projection_dim,
            }
        )
        return lit.sourced_config(
            config, self.image_tower_source, self.text_tower_source
        )

    def referenced_objects(self) -> list:
        """The frozen parts of `f` / `g` given by `image_tower_source` /
        `text_tower_source` (the backbone when only it is locked, else the
        whole tower): rebuilt from their sources, never stored in this
        model's weights. (`h` is not tracked at all, so it is never stored.)"""
        return lit.referenced_parts(
            (self.image_tower, self.image_tower_source, self.lock_image),
            (self.text_tower, self.text_tower_source, self.lock_text),
        )

    @classmethod
    def from_preset(
        cls,
        preset: str,
        load_weights: bool = True,
        load_third_tower: bool = False,
        **kwargs,
    ):
        """Load a ThreeTowers preset; by default without the third tower.

        Args:
            preset: a preset name or directory written by `save_to_preset`.
            load_weights: bool. Load the weights of `f`, `g` and the heads.
            load_third_tower: bool. Also load `h` from the config's
                `third_tower_source`, to continue training (not needed for
                `encode_images` / `encode_texts`).
            **kwargs: config overrides, e.g. `third_tower=` to pass `h` in
                memory.
        """
        return super().from_preset(
            preset,
            load_weights=load_weights,
            load_third_tower=load_third_tower,
            **kwargs,
        )

    def save_to_preset(
        self, preset_dir: str, description: str = "", **metadata
    ) -> None:
        """Write the model without `h`'s frozen weights (see `from_preset`)."""
        self._warn_if_third_tower_is_lost("preset")
        super().save_to_preset(preset_dir, description=description, **metadata)

    def save(self, filepath, *args, **kwargs):
        """`keras.Model.save`; `h` is saved by reference only (see `save_to_preset`)."""
        self._warn_if_third_tower_is_lost("saved model")
        return super().save(filepath, *args, **kwargs)

    def _warn_if_third_tower_is_lost(self, what: str) -> None:
        if self.get_third_tower() is not None and self.third_tower_source is None:
            warnings.warn(
                "This ThreeTowers model's third tower was passed in memory "
                f"without `third_tower_source`, so the {what} cannot reload it; "
                "it loads for inference (f and g) and for training on "
                "precomputed 'third_features'.",
                stacklevel=3,
            )

    def preset_metadata(self) -> dict:
        metadata = {"third_tower_source": self.third_tower_source}
        for key in ("image_tower_source", "text_tower_source"):
            if getattr(self, key) is not None:
                metadata[key] = getattr(self, key)
        return metadata

    @classmethod
    def tiny(
        cls,
        image_size: int = 32,
        third_image_size: int = 40,
        embedding_dim: int = 32,
        third_tower: ImageTower | keras.Model | None = None,
        **kwargs,
    ) -> ThreeTowers:
        """A very small 3T for tests: tiny ViT `f`, text `g`, and (unless
        given) a random tiny ResNet `h` with BatchNorm at its own image size."""
        third_image_converter = keras_hub.layers.ImageConverter(
            image_size=(third_image_size, third_image_size),
            scale=1.0 / 255.0,
            crop_to_aspect_ratio=True,
            interpolation="bilinear",
        )
        parts = from_scratch.build(
            "tiny_shallow", image_size, projection_dim=embedding_dim
        )
        parts.preprocessor.third_image_converter = third_image_converter
        if third_tower is None and not (
            kwargs.get("third_tower_source") or kwargs.get("third_tower_preset")
        ):
            third_tower = tiny_resnet(third_image_size)
        return cls(
            parts.image_tower,
            parts.text_tower,
            parts.preprocessor,
            third_tower=third_tower,
            **kwargs,
        )


def tiny_resnet(image_size: int = 32, name: str = "third_backbone") -> keras.Model:
    """A random ~76k-parameter keras-hub ResNet (with BatchNorm), for tests."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        image_shape=(image_size, image_size, 3),
        name=name,
    )
