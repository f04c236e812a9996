"""LiT: contrastive tuning of a text tower against a locked image tower."""

from __future__ import annotations

from typing import NamedTuple

import keras

from keras_towers import from_scratch
from keras_towers import pretrained
from keras_towers.backbones import VisionTransformer
from keras_towers.models.base import take_legacy_keys
from keras_towers.models.clip import CLIP
from keras_towers.preprocessing import ByteTokenizer
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained import apply_lock
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower

#: Lock settings of one tower: locked as a whole, locked backbone with a
#: trained head, or trained.
LOCKS = (True, "backbone", False)

_LETTERS = {
    # letter: (locked, pretrained)
    "L": (True, True),
    "U": (False, True),
    "u": (False, False),
}


class LiTVariant(NamedTuple):
    """A two-letter LiT setup, e.g. `"Lu"`: image tower first, text second.

    `L`: pretrained and locked; `U`: pretrained and trained; `u`: trained
    from scratch (randomly initialised).
    """

    lock_image: bool
    lock_text: bool
    image_pretrained: bool
    text_pretrained: bool


def parse_variant(variant: str) -> LiTVariant:
    """Parse LiT's two-letter notation (`"Lu"`, `"LU"`, `"Uu"`, `"UU"`, `"uu"`...).

    Example:

    ```python
    keras_towers.models.lit.parse_variant("Lu")
    # LiTVariant(lock_image=True, lock_text=False, image_pretrained=True,
    #            text_pretrained=False)
    ```
    """
    if (
        not isinstance(variant, str)
        or len(variant) != 2
        or any(c not in _LETTERS for c in variant)
    ):
        raise ValueError(
            "`variant` must be two letters from 'L' (locked pretrained), 'U' "
            "(unlocked pretrained) and 'u' (unlocked from scratch), image tower "
            f"first, e.g. 'Lu' or 'LU'. Received: variant={variant!r}"
        )
    (lock_image, image_pretrained), (lock_text, text_pretrained) = (
        _LETTERS[variant[0]],
        _LETTERS[variant[1]],
    )
    return LiTVariant(lock_image, lock_text, image_pretrained, text_pretrained)


def _check_lock(name, value):
    if not (value is True or value is False or value == "backbone"):
        raise ValueError(
            f"`{name}` must be True (lock the whole tower), 'backbone' (lock "
            f"the backbone, train the head) or False. Received: {name}={value!r}"
        )


#: Config keys written before the one `*_tower_source` spelling (still read).
LEGACY_KEYS = {
    "image_tower_preset": "image_tower_source",
    "text_backbone_preset": "text_tower_source",
}


@keras.saving.register_keras_serializable(package="keras_towers")
class LiT(CLIP):
    """Locked-image tuning: CLIP with a locked pretrained image tower.

    LiT is a freeze rule on CLIP, not a new architecture: the image tower is
    locked (`trainable=False`, always run with `training=False`, so BatchNorm
    statistics and dropout stay frozen) and only the text tower and the logit
    scale learn the contrastive objective. Without image augmentation the
    locked tower's outputs can be computed once with
    `keras_towers.cache_locked_features` and fed as `"image_features"`.

    The paper's notation names the setup with two letters, image tower first:
    `L` locked pretrained, `U` unlocked pretrained, `u` unlocked from scratch
    (so `"Lu"` is LiT proper, `"LU"` a pretrained text tower, `"UU"` both
    fine-tuned, `"uu"` CLIP from scratch). Pass `variant=` to set the locks
    from it; which towers are pretrained is the caller's choice of towers.

    Args:
        image_tower: `keras_towers.ImageTower` (usually pretrained), or a bare
            image backbone, wrapped as `ImageTower(backbone,
            pooling=image_pooling, head=None)`: LiT's default has no image
            head, so the embedding is the pooled frozen feature. Build an
            `ImageTower` with a head to have one.
        text_tower: `keras_towers.TextTower`. Default: a small causal text
            transformer projecting to the image tower's output width.
        preprocessor: `keras_towers.ContrastivePreprocessor`. Default: byte
            tokenizer + CLIP-normalised resize to the image tower's size (a
            pretrained tower usually needs its own normalisation).
        lock_image: `True` (lock the whole image tower), `"backbone"` (lock
            the backbone, train the head) or `False`. Default `True`.
        lock_text: the same for the text tower. Default `False`.
        variant: str or `None`. Two-letter setup (`"Lu"`, `"LU"`, `"Uu"`,
            `"UU"`...) that sets `lock_image` / `lock_text`; must agree with
            them if both are given.
        image_pooling: str. Pooling used when `image_tower` is a bare
            backbone (`"mean"` for conv nets, `"cls"` for ViTs).
        image_tower_source: str or `None`. Where the locked image tower
            comes from: a pretrained encoder name (see
            `keras_towers.pretrained.names()`, e.g.
            `"efficientnet_lite1_imagenet"`) or a keras-hub backbone preset
            directory. With it, `image_tower` may be omitted (the tower is
            the loaded backbone, pooled with `image_pooling` or the
            encoder's own pooling, no head), the config stores the name
            instead of the tower, and `save_to_preset` / `load_weights` leave
            the frozen tower's weights out, so a preset holds only what LiT
            trained. Needs `lock_image=True` (the tower is the backbone alone,
            no head) or `lock_image="backbone"` (the backbone is referenced,
            `image_head` trains and is stored).
            (`image_tower_preset` is its old name, still accepted.)
        text_tower_source: str or `None`. The same for the text tower's
            backbone (e.g. `"all_minilm_l6_v2"`): the text tower is then
            that backbone pooled with `text_pooling` plus `text_head`
            projecting to the image tower's width, built here (do not pass
            `text_tower`), and its backbone's weights are left out of
            presets. Needs `lock_text=True` or `"backbone"` (the usual
            choice: a frozen pretrained text encoder with a trained head).
            (`text_backbone_preset` is its old name, still accepted.)
        text_pooling: str. Pooling of a referenced text backbone
            (`"mean"`, `"cls"`, ...).
        text_head: `"linear"` (default), `"mlp"` or `None`: the head on a
            referenced text backbone.
        image_head: `None` (default), `"linear"` or `"mlp"`: a trained head
            on a referenced image backbone (`image_tower_source` with
            `lock_image="backbone"`).
        projection_dim: int or `None`. Output width of `image_head`
            (required with it); the text head projects to the image tower's
            output width.
        **kwargs: `keras_towers.CLIP` arguments (`loss`, `logit_scale_init`,
            `max_logit_scale`, `label_smoothing`, ...).

    Example:

    ```python
    image_tower = keras_towers.ImageTower(pretrained_backbone, pooling="mean",
                                          head=None)
    model = keras_towers.LiT(image_tower, preprocessor=preprocessor,
                             variant="Lu")
    cached = keras_towers.cache_locked_features(model, pairs)
    model.compile()
    model.fit(cached.shuffle(4096).batch(256), epochs=5)
    ```

    References:
        - [Zhai et al., 2022](https://arxiv.org/abs/2111.07991)
    """

    def __init__(
        self,
        image_tower: ImageTower | keras.Model | None = None,
        text_tower: TextTower | None = None,
        preprocessor: ContrastivePreprocessor | None = None,
        lock_image: bool | str | None = None,
        lock_text: bool | str | None = None,
        variant: str | None = None,
        image_pooling: str | None = None,
        image_tower_source: str | None = None,
        text_tower_source: str | None = None,
        text_pooling: str | None = None,
        text_head: str | None = "linear",
        image_head: str | None = None,
        projection_dim: int | None = None,
        **kwargs,
    ):
        kwargs.update(
            image_tower_source=image_tower_source, text_tower_source=text_tower_source
        )
        take_legacy_keys(kwargs, LEGACY_KEYS)
        image_tower_source = kwargs.pop("image_tower_source")
        text_tower_source = kwargs.pop("text_tower_source")
        kwargs.setdefault("name", "lit")
        if image_tower is None and image_tower_source is None:
            raise ValueError(
                "LiT needs a locked image tower: pass `image_tower` or "
                "`image_tower_source` (a pretrained encoder name from "
                f"{pretrained.names('image')} or a keras-hub backbone preset "
                "directory)."
            )
        if variant is not None:
            parsed = parse_variant(variant)
            for name, given, implied in (
                ("lock_image", lock_image, parsed.lock_image),
                ("lock_text", lock_text, parsed.lock_text),
            ):
                # "backbone" is a lock too: the letter L allows it.
                if given is not None and bool(given) != implied:
                    raise ValueError(
                        f"`variant={variant!r}` implies {name}={implied}, but "
                        f"{name}={given!r} was given."
                    )
            if lock_image is None:
                lock_image = parsed.lock_image
            if lock_text is None:
                lock_text = parsed.lock_text
        lock_image = True if lock_image is None else lock_image
        lock_text = False if lock_text is None else lock_text
        check_sources(
            "LiT",
            image_tower_source=image_tower_source,
            text_tower_source=text_tower_source,
            text_tower=text_tower,
            lock_image=lock_image,
            lock_text=lock_text,
            image_head=image_head,
        )

        # === Layers ===
        if image_tower is None:
            image_tower = load_sourced_tower(
                "image",
                image_tower_source,
                pooling=image_pooling,
                head=image_head,
                projection_dim=projection_dim,
                lock=lock_image,
            )
        if not isinstance(image_tower, ImageTower):
            if not isinstance(image_tower, keras.Model):
                raise TypeError(
                    "`image_tower` must be a keras_towers.ImageTower or an "
                    f"image backbone (keras.Model). Received: {image_tower!r}"
                )
            image_tower = ImageTower(
                image_tower,
                pooling=image_pooling or "mean",
                head=None,
                name="image_tower",
            )
        if preprocessor is None:
            preprocessor = default_preprocessor(
                image_tower, image_tower_source, text_tower_source
            )
        if text_tower_source is not None:
            text_tower = load_sourced_tower(
                "text",
                text_tower_source,
                pooling=text_pooling,
                head=text_head,
                projection_dim=image_tower.output_dim if text_head else None,
                lock=lock_text,
            )
        if text_tower is None:
            text_tower = TextTower.transformer(
                vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
                sequence_length=preprocessor.sequence_length,
                projection_dim=image_tower.output_dim,
            )
        check_locked_tower_has_no_head(
            "image", image_tower, image_tower_source, lock_image
        )
        # Locks are set before the model tracks the towers, so every later
        # view (trainable_variables, the optimizer, weight decay) sees them.
        apply_lock(image_tower, lock_image)
        apply_lock(text_tower, lock_text)
        super().__init__(image_tower, text_tower, preprocessor, **kwargs)

        # === Config ===
        self.lock_image = lock_image
        self.lock_text = lock_text
        self.variant = variant
        self.image_pooling = image_pooling
        self.image_tower_source = image_tower_source
        self.text_tower_source = text_tower_source
        self.text_pooling = text_pooling
        self.text_head = text_head
        self.image_head = image_head
        self.projection_dim = projection_dim

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "lock_image": self.lock_image,
                "lock_text": self.lock_text,
                "variant": self.variant,
                "image_pooling": self.image_pooling,
                "image_tower_source": self.image_tower_source,
                "text_tower_source": self.text_tower_source,
                "text_pooling": self.text_pooling,
                "text_head": self.text_head,
                "image_head": self.image_head,
                "projection_dim": self.projection_dim,
            }
        )
        return sourced_config(config, self.image_tower_source, self.text_tower_source)

    def referenced_objects(self) -> list:
        """The towers given by `image_tower_source` / `text_tower_source`:
        rebuilt from their sources, never stored in LiT's weights."""
        return referenced_parts(
            (self.image_tower, self.image_tower_source, self.lock_image),
            (self.text_tower, self.text_tower_source, self.lock_text),
        )

    def preset_metadata(self) -> dict:
        return {
            "image_tower_source": self.image_tower_source,
            "text_tower_source": self.text_tower_source,
        }

    @classmethod
    def tiny(cls, image_size: int = 32, embedding_dim: int = 32, **kwargs) -> LiT:
        """A very small LiT (random ViT image tower, no image head) for tests;
        the text tower is the `"tiny"` config of `keras_towers.from_scratch`."""
        preprocessor = ContrastivePreprocessor.default(
            image_size=image_size,
            sequence_length=from_scratch.CONFIGS.get("tiny")["sequence_length"],
        )
        backbone = VisionTransformer(
            patch_size=8,
            hidden_dim=embedding_dim,
            num_layers=2,
            num_heads=2,
            intermediate_dim=2 * embedding_dim,
            image_shape=(image_size, image_size, 3),
            name="image_tower_backbone",
        )
        image_tower = ImageTower(backbone, pooling="cls", head=None, name="image_tower")
        text_tower = from_scratch.text_tower("tiny", preprocessor, embedding_dim)
        return cls(image_tower, text_tower, preprocessor, **kwargs)


def trainable_towers(
    method: str, image_tower, lock_image, lock_text, kwargs: dict
) -> tuple:
    """Defaults of methods built on LiT's tower machinery whose towers train
    (ProtoCLIP, CLIPRocket): a tower not named by a source trains unless a
    lock is given; without an image tower or source, a small from-scratch
    ViT; the contrastive term is InfoNCE (`kwargs["loss"]`, popped).

    Returns:
        `(image_tower, lock_image, lock_text)`.
    """
    if kwargs.get("variant") is None:
        if lock_image is None and kwargs.get("image_tower_source") is None:
            lock_image = False
        if lock_text is None and kwargs.get("text_tower_source") is None:
            lock_text = False
    if image_tower is None and kwargs.get("image_tower_source") is None:
        image_tower = ImageTower.vit(projection_dim=kwargs.get("embedding_dim", 128))
    loss = kwargs.pop("loss", "infonce")
    if loss != "infonce":
        raise ValueError(
            f"{method}'s contrastive term is InfoNCE. Received: loss={loss!r}"
        )
    return image_tower, lock_image, lock_text


# === Towers from referenced pretrained backbones ===
#
# Shared by every method whose main towers may come from a registered
# encoder (LiT and its subclasses, ThreeTowers): one validation, one way to
# build them, one rule for what a preset leaves out.


def check_sources(
    method: str,
    *,
    image_tower_source,
    text_tower_source,
    text_tower,
    lock_image,
    lock_text,
    image_head,
) -> None:
    """Raise unless the locks and heads fit the referenced towers.

    A referenced backbone's weights are not stored, so it must be locked
    (`True` or `"backbone"`); `image_head` is the trained head on a
    referenced image backbone; a referenced text tower is built by `method`
    itself (no `text_tower` with it). `lock_image` / `lock_text` must be
    resolved (not `None`).
    """
    _check_lock("lock_image", lock_image)
    _check_lock("lock_text", lock_text)
    if image_tower_source is not None and lock_image not in (True, "backbone"):
        raise ValueError(
            "`image_tower_source` references frozen weights that the preset "
            "does not store, so the image backbone must be locked "
            f"(lock_image=True or 'backbone'). Received: lock_image={lock_image!r}"
        )
    if image_head is not None and (
        image_tower_source is None or lock_image != "backbone"
    ):
        raise ValueError(
            "`image_head` is the trained head on a referenced image backbone: "
            'it needs `image_tower_source` and `lock_image="backbone"`. '
            f"Received: image_tower_source={image_tower_source!r}, "
            f"lock_image={lock_image!r}"
        )
    if text_tower_source is not None:
        if text_tower is not None:
            raise ValueError(
                "Give `text_tower` or `text_tower_source`, not both: with "
                f"`text_tower_source` {method} builds the text tower itself."
            )
        if lock_text not in (True, "backbone"):
            raise ValueError(
                "`text_tower_source` references frozen weights that the "
                "preset does not store, so the text backbone must be locked "
                f"(lock_text=True or 'backbone'). Received: lock_text={lock_text!r}"
            )


def load_sourced_tower(
    modality: str, source, *, pooling, head, projection_dim, lock
) -> ImageTower | TextTower:
    """The `"<modality>_tower"` over a referenced backbone: pooled with
    `pooling` (default: the encoder's own), with an optional `head` to
    `projection_dim`, locked by `lock`."""
    return pretrained.load_tower(
        source,
        modality=modality,
        pooling=pooling or pretrained.default_pooling(source),
        name=f"{modality}_tower",
        head=head,
        projection_dim=projection_dim,
        lock=lock,
    )


def check_locked_tower_has_no_head(kind: str, tower, source, lock) -> None:
    """A referenced tower locked as a whole is the backbone alone: a head on
    it would be referenced (left out of presets) with the backbone."""
    if source is not None and lock is True and tower.projection is not None:
        raise ValueError(
            f"With `{kind}_tower_source` and lock_{kind}=True the {kind} tower "
            "is the referenced backbone alone: it cannot have a head (its "
            "trained weights would not be saved). Build the tower with "
            f'`head=None`, or lock only the backbone (lock_{kind}="backbone").'
        )


def referenced_parts(*towers) -> list:
    """The frozen parts of referenced towers, which presets leave out.

    Args:
        *towers: `(tower, source, lock)` triples; those without a source are
            skipped.

    Returns:
        For each referenced tower, its backbone when only the backbone is
        locked (or the tower has a head), else the whole tower.
    """
    referenced = []
    for tower, source, lock in towers:
        if source is None:
            continue
        backbone_only = lock == "backbone" or tower.projection is not None
        referenced.append(tower.backbone if backbone_only else tower)
    return referenced


def sourced_config(config: dict, image_source, text_source) -> dict:
    """`config` with the referenced towers left out: they are rebuilt from
    their sources (and the pooling/head/lock options) on load."""
    if image_source is not None:
        config["image_tower"] = None
    if text_source is not None:
        config["text_tower"] = None
    return config


def default_preprocessor(image_tower, image_source, text_source):
    """What the towers' weights expect: a registered encoder's image
    converter and tokenizer; otherwise CLIP normalisation and bytes."""
    if image_source is not None and pretrained.is_registered(image_source):
        if text_source is not None and pretrained.is_registered(text_source):
            return pretrained.preprocessor(image_source, text_source)
        encoder = pretrained.get_encoder(image_source)
        return ContrastivePreprocessor(
            image_converter=encoder.preprocessing(), tokenizer=ByteTokenizer()
        )
    if text_source is not None and pretrained.is_registered(text_source):
        preprocessor = pretrained.preprocessor(text_source=text_source)
        preprocessor.image_converter = ContrastivePreprocessor.default(
            image_size=_image_size(image_tower)
        ).image_converter
        return preprocessor
    return ContrastivePreprocessor.default(image_size=_image_size(image_tower))


def _image_size(image_tower) -> int:
    image_size = image_tower.image_shape[0]
    if image_size is None:
        raise ValueError(
            "The image backbone takes any image size, so the model cannot "
            "choose one: pass `preprocessor=` (with the resize and "
            "normalisation the pretrained tower expects)."
        )
    return image_size
