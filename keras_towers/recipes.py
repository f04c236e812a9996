"""Training recipes for `keras-towers train`: which model, on which data.

A recipe is a named builder `build(image_size) -> compiled-ready model` with
a default image size. Register more with `register_recipe`; the CLI's
`--method` choices are the registered names (the `keras-towers` script, which
parses its arguments before importing this module, has them as
`keras_towers_entry.parser.METHODS`; `keras_towers.cli.main` in a process
that registered more offers those too).

Example:

```python
recipe = keras_towers.recipes.get("clip")
model = recipe.build(image_size=64)
```
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from keras_towers import from_scratch
from keras_towers import pretrained
from keras_towers import recipes_rocket
from keras_towers import training
from keras_towers.datasets.paths import data_dir
from keras_towers.feature_cache import cache_locked_features
from keras_towers.feature_cache import locked_sources
from keras_towers.models import CLIP
from keras_towers.models import CLIPRocket
from keras_towers.models import LiT
from keras_towers.models import ProtoCLIP
from keras_towers.models import SigLIP
from keras_towers.models import ThreeTowers
from keras_towers.models.protoclip_episodes import ProtoCLIPEpisodes
from keras_towers.models.protoclip_teacher import teacher_features
from keras_towers.preprocessing import DEFAULT_FRAMING
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.preprocessing import ByteTokenizer
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.recipes_data import load_training_data
from keras_towers.training import PairArrays
from keras_towers.utils.registry import Registry


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable
    image_size: int
    description: str = ""
    #: Method options the recipe accepts (`build` takes those in
    #: `BUILD_OPTIONS`, its trainer those in `TRAINER_OPTIONS`); the CLI
    #: refuses them for other recipes.
    options: tuple = ()


#: ProtoCLIP options of `build` (model) and of the trainer (episodes).
MODEL_OPTIONS = (
    "num_clusters",
    "episode_size",
    "proto_weight",
    "external_weight",
    "teacher",
    "teacher_pca_dim",
)
EPISODE_OPTIONS = ("lit_start_episode", "infonce_warmup_episodes")
#: Options of every recipe's `build` and of its trainer (the CLI passes them
#: to whichever the recipe's `options` name).
BUILD_OPTIONS = MODEL_OPTIONS + recipes_rocket.ROCKET_MODEL_OPTIONS
TRAINER_OPTIONS = EPISODE_OPTIONS + recipes_rocket.ROCKET_TRAINER_OPTIONS


RECIPES = Registry("method", hint="Register one with `register_recipe`.")
TRAINERS = Registry("trainer")


def register_recipe(
    name: str, image_size: int, description: str = "", options: tuple = ()
):
    """Decorator registering `build(image_size, **options) -> model` under
    `name` (`options`: the method options it accepts)."""

    def wrap(build):
        RECIPES.add(name, Recipe(name, build, image_size, description, options))
        return build

    return wrap


def names() -> list[str]:
    return RECIPES.names()


def get(name: str) -> Recipe:
    return RECIPES.get(name)


def _small_clip(cls, image_size: int, **kwargs):
    parts = from_scratch.build("small", image_size)
    return cls(parts.image_tower, parts.text_tower, parts.preprocessor, **kwargs)


@register_recipe(
    "clip",
    image_size=64,
    description="CLIP from scratch: ViT (64 px, patch 8, width 128, 4 layers) + "
    "byte-level text transformer (width 128, 4 layers, 64 tokens), 128-d",
    options=recipes_rocket.ROCKET_TRAINER_OPTIONS,
)
def build_clip(image_size: int = 64):
    return _small_clip(CLIP, image_size)


@register_recipe(
    "siglip",
    image_size=64,
    description="the `clip` architecture with SigLIP's loss",
    options=recipes_rocket.ROCKET_TRAINER_OPTIONS,
)
def build_siglip(image_size: int = 64):
    return _small_clip(SigLIP, image_size)


@register_recipe(
    "clip-tiny",
    image_size=32,
    description="`CLIP.tiny()` (69k parameters): smoke runs and tests",
)
def build_clip_tiny(image_size: int = 32):
    return CLIP.tiny(image_size=image_size)


# === LiT and Three Towers on a real frozen tower ===
#
# Both reference the packaged ImageNet EfficientNet-Lite0 by its registered
# backbone name, so presets never copy its frozen weights, and both train on
# features the frozen tower computed once (not once per epoch): a 224 px
# forward pass of EfficientNet-Lite0 costs more than a whole step of the
# small towers that train.

#: The pretrained encoder's name (see `keras_towers.pretrained`).
FROZEN_BACKBONE = "efficientnet_lite0_imagenet"
#: EfficientNet-Lite0's input resolution.
FROZEN_IMAGE_SIZE = 224


def register_trainer(name: str):
    """Decorator: `fn(data) -> train` replacing `training.train` for a recipe.

    The returned `train` takes `keras_towers.training.train`'s arguments.
    """
    return TRAINERS.register(name)


def trainer(name: str, data: str = "embedded") -> Callable:
    """The training function of recipe `name` on `data` (default:
    `keras_towers.training.train`). ProtoCLIP recipes' trainers also take
    `EPISODE_OPTIONS` as keyword arguments."""
    get(name)
    if name not in TRAINERS:
        return training.train
    return TRAINERS.get(name)(data)


def _check_frozen_size(method: str, image_size: int) -> None:
    if image_size != FROZEN_IMAGE_SIZE:
        raise ValueError(
            f"The {method!r} recipe's frozen EfficientNet-Lite0 takes "
            f"{FROZEN_IMAGE_SIZE} px images. Received: image_size={image_size}"
        )


def _byte_text_tower(preprocessor, projection_dim: int):
    """The `clip` recipe's text transformer, projecting to `projection_dim`."""
    return from_scratch.text_tower("small", preprocessor, projection_dim)


@register_recipe(
    "lit",
    image_size=FROZEN_IMAGE_SIZE,
    description="LiT 'Lu': locked ImageNet EfficientNet-Lite0 (224 px, mean-pooled "
    "1280-d, no head; referenced, not stored) + the `clip` recipe's byte-level text "
    "transformer from scratch projecting to 1280",
    options=recipes_rocket.ROCKET_TRAINER_OPTIONS,
)
def build_lit(image_size: int = FROZEN_IMAGE_SIZE):
    _check_frozen_size("lit", image_size)
    preprocessor = ContrastivePreprocessor(
        image_converter=pretrained.get_encoder(FROZEN_BACKBONE).preprocessing(),
        tokenizer=ByteTokenizer(),
        sequence_length=64,
    )
    return LiT(
        text_tower=_byte_text_tower(preprocessor, projection_dim=1280),
        preprocessor=preprocessor,
        image_tower_source=FROZEN_BACKBONE,
        variant="Lu",
    )


@register_recipe(
    "lit-minilm",
    image_size=FROZEN_IMAGE_SIZE,
    description="LiT with both towers pretrained: locked ImageNet EfficientNet-Lite0 "
    "(224 px, 1280-d, no head) + all-MiniLM-L6-v2 with its backbone locked and a "
    "trained linear head to 1280 ('LL' + text head); both backbones referenced by "
    "name, not stored; trains in seconds on cached features",
    options=recipes_rocket.ROCKET_TRAINER_OPTIONS,
)
def build_lit_minilm(image_size: int = FROZEN_IMAGE_SIZE):
    _check_frozen_size("lit-minilm", image_size)
    return LiT(
        preprocessor=pretrained.preprocessor(
            FROZEN_BACKBONE, "all_minilm_l6_v2", sequence_length=32
        ),
        image_tower_source=FROZEN_BACKBONE,
        text_tower_source="all_minilm_l6_v2",
        text_pooling="mean",
        text_head="linear",
        variant="LL",
        lock_text="backbone",
    )


@register_recipe(
    "three-towers",
    image_size=64,
    description="Three Towers: the `clip` recipe's ViT f and text g from scratch, "
    "aligned to a frozen ImageNet EfficientNet-Lite0 h (224 px, referenced, not "
    "stored); ThreeTowers defaults (w = 1/3 each, linear heads)",
    options=recipes_rocket.ROCKET_TRAINER_OPTIONS,
)
def build_three_towers(image_size: int = 64):
    model = _small_clip(ThreeTowers, image_size, third_tower_source=FROZEN_BACKBONE)
    model.preprocessor.third_image_converter = pretrained.get_encoder(
        FROZEN_BACKBONE
    ).preprocessing()
    return model


def _feature_cache_dir() -> str:
    return str(data_dir() / "features")


def locked_feature_arrays(
    model,
    pairs: PairArrays,
    frozen_pairs: PairArrays | None = None,
    towers: list[str] | None = None,
) -> dict:
    """Arrays to train `model` on: its locked towers' features plus the raw
    inputs its trained towers still read.

    Args:
        model: a model with locked towers (`LiT`, `ThreeTowers`).
        pairs: the training pairs at the trained image tower's size.
        frozen_pairs: the same pairs, in the same order, at the frozen
            tower's size (default: `pairs`).
        towers: the towers to cache (`cache_locked_features`' `towers`;
            default every locked one).

    Returns:
        A dict of equally long arrays: `"<tower>_features"`, plus the raw
        `"images"` / `"texts"` of a tower that is not cached (a cached
        tower's raw input would only be preprocessed and ignored).
    """
    frozen_pairs = pairs if frozen_pairs is None else frozen_pairs
    if len(frozen_pairs) != len(pairs) or list(frozen_pairs.texts) != list(pairs.texts):
        raise ValueError(
            "`frozen_pairs` must hold the same pairs as `pairs`, in the same order."
        )
    # Streamed: the frozen tower's images are decoded and framed as they are
    # encoded, never held all at once (26,799 corpus images at 224 px are
    # 4 GB as uint8, and keeping them cost 3T a 16.8 GiB peak in copies);
    # only the features are kept, also where a trained tower reads images
    # too (Three Towers' `f` gets `pairs`' own, at its size).
    cached = cache_locked_features(
        model,
        frozen_pairs.dataset(),
        batch_size=64,
        cache_dir=_feature_cache_dir(),
        towers=towers,
        keep_inputs=False,
    )
    # With `keep_inputs=False` every key is a `"<tower>_features"`.
    feature_keys = list(cached.element_spec)
    columns = {k: [] for k in feature_keys}
    for batch in cached.batch(1024).as_numpy_iterator():
        for k in feature_keys:
            columns[k].append(batch[k])
    arrays = {k: np.concatenate(v).astype("float32") for k, v in columns.items()}
    for key, array in arrays.items():
        if len(array) != len(pairs):
            raise ValueError(
                f"{len(array)} {key} were computed for {len(pairs)} pairs: the "
                "pairs' source yielded another number of pairs than it has captions."
            )
    if "text_features" not in arrays:
        arrays[TEXT_KEY] = pairs.texts.astype(str)
    if "image_features" not in arrays:
        arrays[IMAGE_KEY] = pairs.images
    return arrays


def _frozen_image_size(model) -> int | None:
    """Input size of the model's locked image tower (`None`: any size)."""
    for source in model.feature_sources():
        tower = source.tower
        if source.raw_key == IMAGE_KEY and tower is not None and not tower.trainable:
            return tower.image_shape[0]
    return None


def _frozen_size_pairs(data: str, pairs: PairArrays | None, split: int, size):
    """`pairs` at the locked tower's input size: reloaded from `data` when they
    are smaller (upsampling 64 px pairs would blur what the frozen tower sees)."""
    if pairs is None or size is None or pairs.image_size >= size:
        return pairs
    return load_training_data(data, size, pairs.framing or DEFAULT_FRAMING)[split]


def _validation_feature_arrays(model, data: str, validation_pairs, size):
    """`locked_feature_arrays` of the validation pairs (split 1 of `data`),
    or `None` without any."""
    if validation_pairs is None or not len(validation_pairs):
        return None
    return locked_feature_arrays(
        model, validation_pairs, _frozen_size_pairs(data, validation_pairs, 1, size)
    )


def _cached_feature_trainer(data: str) -> Callable:
    """`training.train` on the locked towers' features, computed once."""

    def train(
        model,
        train_pairs: PairArrays,
        epochs: int,
        batch_size: int = 128,
        validation_pairs: PairArrays | None = None,
        **kwargs,
    ) -> dict:
        if epochs < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
        training.check_pairs_framing(model, train_pairs, validation_pairs)
        start = time.perf_counter()
        size = _frozen_image_size(model)
        # Augmented captions must go through the text tower every step.
        towers = None
        if kwargs.get("text_views") is not None:
            towers = [s.name for s in locked_sources(model) if s.name != "text"]
        train_arrays = locked_feature_arrays(
            model, train_pairs, _frozen_size_pairs(data, train_pairs, 0, size), towers
        )
        val_arrays = _validation_feature_arrays(model, data, validation_pairs, size)
        print(f"frozen-tower features ready in {time.perf_counter() - start:.1f} s")
        result = training.train(
            model,
            train_arrays,
            epochs,
            batch_size=batch_size,
            validation_pairs=val_arrays,
            **kwargs,
        )
        # Feature caching is part of the run's cost.
        result["seconds"] = time.perf_counter() - start
        return result

    return train


_one_view = recipes_rocket.single_view_trainer
register_trainer("clip")(_one_view("clip", lambda data: training.train))
register_trainer("siglip")(_one_view("siglip", lambda data: training.train))
register_trainer("lit")(_one_view("lit", _cached_feature_trainer, locked_images=True))
register_trainer("lit-minilm")(
    _one_view("lit-minilm", _cached_feature_trainer, locked_images=True)
)
register_trainer("three-towers")(_one_view("three-towers", _cached_feature_trainer))


# === ProtoCLIP, in the two regimes of the comparison ===
#
# `protoclip` trains the `clip` recipe's towers from scratch; `lit-heads` and
# `protoclip-heads` train linear heads on the locked pretrained backbones
# (ImageNet EfficientNet-Lite0, all-MiniLM-L6-v2, both referenced by name, not
# stored), the regime where CLIP is above chance on this data. Within a
# regime the towers, data, batches and epochs are the same; only the
# objective (and ProtoCLIP's prototype heads) differ.

#: Pairs in the embedded corpus's train split (the default episode size).
EMBEDDED_TRAIN_PAIRS = 26799
#: Width of both heads in the `*-heads` recipes.
HEADS_DIM = 256
#: Hidden width of `protoclip-heads`' prototype heads (ProtoCLIP's default
#: 2048 would hold 4x the parameters of the heads it trains, for 2k pairs).
HEADS_PROTO_HIDDEN_DIM = 512


def protoclip_options(
    num_clusters: int | None = None,
    episode_size: int | None = None,
    proto_weight: float = 1.0,
    external_weight: float | None = None,
    teacher: str | None = None,
    teacher_pca_dim: int = 64,
) -> dict:
    """`ProtoCLIP` keyword arguments from the CLI's method options.

    `episode_size` defaults to the embedded corpus's train split (the CLI
    passes the data's size) and `num_clusters` to `episode_size // 10` (the
    official recipe's ratio: 20,000 clusters for 200,000-sample episodes).
    `teacher` names a registered frozen text encoder (e.g.
    `"all_minilm_l6_v2"`) whose PCA'd caption features (`teacher_pca_dim`)
    are the external teacher.
    """
    episode_size = int(episode_size or EMBEDDED_TRAIN_PAIRS)
    if num_clusters is None:
        num_clusters = max(1, episode_size // 10)
    options = {
        "num_clusters": int(num_clusters),
        "episode_size": episode_size,
        "proto_weight": float(proto_weight),
    }
    if teacher is not None:
        if teacher not in pretrained.names("text"):
            raise ValueError(
                f"Unknown teacher {teacher!r}: a registered text encoder is "
                f"expected, one of {pretrained.names('text')}."
            )
        options.update(external_teacher=int(teacher_pca_dim), teacher_source=teacher)
        if external_weight is not None:
            options["external_weight"] = float(external_weight)
    elif external_weight not in (None, 0, 0.0):
        raise ValueError(
            "`external_weight` needs a `teacher`. Received: "
            f"external_weight={external_weight}, teacher=None."
        )
    return options


@register_recipe(
    "protoclip",
    image_size=64,
    description="ProtoCLIP on the `clip` recipe's towers (from scratch) + "
    "prototype heads (2048 -> 128); K = episode size / 10, episode = the "
    "training set drawn with replacement; optional MiniLM teacher",
    options=MODEL_OPTIONS + EPISODE_OPTIONS,
)
def build_protoclip(image_size: int = 64, **options):
    parts = from_scratch.build("small", image_size)
    return ProtoCLIP(
        parts.image_tower,
        parts.text_tower,
        parts.preprocessor,
        **protoclip_options(**options),
    )


@register_recipe(
    "protoclip-tiny",
    image_size=32,
    description="`ProtoCLIP.tiny()` (K = episode size / 10): smoke runs and tests",
    options=MODEL_OPTIONS + EPISODE_OPTIONS,
)
def build_protoclip_tiny(image_size: int = 32, **options):
    return ProtoCLIP.tiny(image_size=image_size, **protoclip_options(**options))


def _pretrained_heads_kwargs() -> dict:
    return {
        "preprocessor": pretrained.preprocessor(
            FROZEN_BACKBONE, "all_minilm_l6_v2", sequence_length=32
        ),
        "image_tower_source": FROZEN_BACKBONE,
        "lock_image": "backbone",
        "image_head": "linear",
        "projection_dim": HEADS_DIM,
        "text_tower_source": "all_minilm_l6_v2",
        "lock_text": "backbone",
        "text_pooling": "mean",
        "text_head": "linear",
    }


@register_recipe(
    "lit-heads",
    image_size=FROZEN_IMAGE_SIZE,
    description="CLIP objective on locked ImageNet EfficientNet-Lite0 (224 px) "
    "and locked all-MiniLM-L6-v2 backbones (referenced, not stored) with "
    f"trained linear heads to {HEADS_DIM} on both; trains on cached features",
)
def build_lit_heads(image_size: int = FROZEN_IMAGE_SIZE):
    _check_frozen_size("lit-heads", image_size)
    return LiT(**_pretrained_heads_kwargs())


@register_recipe(
    "protoclip-heads",
    image_size=FROZEN_IMAGE_SIZE,
    description="ProtoCLIP on the `lit-heads` towers (locked EfficientNet-Lite0 "
    "+ MiniLM backbones, trained linear heads) + prototype heads; trains on "
    f"cached features (prototype heads {HEADS_PROTO_HIDDEN_DIM} -> 128)",
    options=MODEL_OPTIONS + EPISODE_OPTIONS,
)
def build_protoclip_heads(image_size: int = FROZEN_IMAGE_SIZE, **options):
    _check_frozen_size("protoclip-heads", image_size)
    return ProtoCLIP(
        **_pretrained_heads_kwargs(),
        proto_hidden_dim=HEADS_PROTO_HIDDEN_DIM,
        **protoclip_options(**options),
    )


register_trainer("lit-heads")(_cached_feature_trainer)


def _protoclip_trainer(data: str) -> Callable:
    """Episodes (`ProtoCLIPEpisodes.fit`), on cached features of the locked
    backbones when the towers have them, with the teacher when set."""

    def train(
        model,
        train_pairs: PairArrays,
        epochs: int,
        batch_size: int = 128,
        validation_pairs: PairArrays | None = None,
        seed: int = 0,
        backup_dir: str | None = None,
        callbacks=(),
        verbose="auto",
        lit_start_episode: int | None = None,
        infonce_warmup_episodes: int = 1,
    ) -> dict:
        if epochs < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
        training.check_pairs_framing(model, train_pairs, validation_pairs)
        start = time.perf_counter()
        size = _frozen_image_size(model)
        sources = model.feature_sources()
        if any(s.tower is not None and s.tower.locked_part for s in sources):
            arrays = locked_feature_arrays(
                model, train_pairs, _frozen_size_pairs(data, train_pairs, 0, size)
            )
            print(
                f"locked-backbone features ready in {time.perf_counter() - start:.1f} s"
            )
        else:
            arrays = {IMAGE_KEY: train_pairs.images, TEXT_KEY: train_pairs.texts}
        teacher = None
        if model.external_teacher is not None:
            teacher = teacher_features(
                [str(t) for t in train_pairs.texts],
                source=model.teacher_source or "all_minilm_l6_v2",
                pca_dim=model.external_teacher,
                cache_dir=str(data_dir() / "features" / "teacher"),
            )
        if validation_pairs is not None and len(validation_pairs):
            print(
                "ProtoCLIP: no val_ metrics during training (the prototype "
                "terms are defined on the training episode's clusters); use "
                "--eval for held-out metrics."
            )
        episodes = ProtoCLIPEpisodes(
            model,
            arrays,
            batch_size=batch_size,
            seed=seed,
            teacher_features=teacher,
            infonce_warmup_episodes=infonce_warmup_episodes,
            lit_start_episode=lit_start_episode,
        )
        result = episodes.fit(
            epochs, callbacks=callbacks, backup_dir=backup_dir, verbose=verbose
        )
        result["seconds"] = time.perf_counter() - start
        return result

    return train


register_trainer("protoclip")(_protoclip_trainer)
register_trainer("protoclip-tiny")(_protoclip_trainer)
register_trainer("protoclip-heads")(_protoclip_trainer)


# === The improved CLIP recipe (clip-rocket) and its SSL add-ons ===
#
# `CLIPRocket` on the `clip` recipe's towers from scratch, trained on a global
# view plus augmented views built per (seed, epoch, example) in tf.data
# (`training.epoch_shuffled_view_dataset`), so `--resume` stays exact.

_ROCKET_DESCRIPTIONS = {
    "clip-improved": "the improved CLIP recipe (clip-rocket, CL2L): the `clip` "
    "recipe's towers + BN-MLP h heads (512 hidden) on 2 augmented image and "
    "caption views, label-smoothed InfoNCE on every view pair",
    "siamlip": "`clip-improved` + SiamLIP (cross-modal SimSiam add-on)",
    "byolip": "`clip-improved` + BYOLIP (SiamLIP with an EMA target)",
    "barlip": "`clip-improved` + BarLIP (cross-modal Barlow Twins add-on)",
    "swalip": "`clip-improved` + SwALIP (swapped Sinkhorn predictions; CL2L "
    "without label smoothing)",
}


def _register_rocket(method: str) -> None:
    def build(image_size: int = 64, **options):
        return recipes_rocket.build(method, image_size, **options)

    register_recipe(
        method,
        image_size=64,
        description=_ROCKET_DESCRIPTIONS[method],
        options=recipes_rocket.ROCKET_MODEL_OPTIONS
        + recipes_rocket.ROCKET_TRAINER_OPTIONS,
    )(build)
    register_trainer(method)(recipes_rocket.views_trainer)


for _method in recipes_rocket.ROCKET_ADDONS:
    _register_rocket(_method)


# === The improved CLIP recipe on locked pretrained backbones ===
#
# `*-heads`: `CLIPRocket` on the `lit-heads` towers (locked EfficientNet-Lite0
# and all-MiniLM-L6-v2, trained linear z heads to 256) with BN-MLP h heads
# (and the add-on's projectors) on the pooled backbone features. The locked
# backbones see every epoch's views once (`recipes_rocket.view_feature_arrays`,
# cached on disk): the ablation's variants share that cost.

#: Hidden width of the `*-heads` rocket recipes' h heads.
HEADS_ROCKET_HIDDEN_DIM = 512


def _register_rocket_heads(method: str) -> None:
    name = f"{method}-heads"

    def build(image_size: int = FROZEN_IMAGE_SIZE, **options):
        _check_frozen_size(name, image_size)
        options = {k: v for k, v in options.items() if v is not None}
        return CLIPRocket(
            **_pretrained_heads_kwargs(),
            head_hidden_dim=HEADS_ROCKET_HIDDEN_DIM,
            addon=recipes_rocket.ROCKET_ADDONS[method],
            **options,
        )

    register_recipe(
        name,
        image_size=FROZEN_IMAGE_SIZE,
        description=f"`{method}` on the `lit-heads` towers (locked EfficientNet-Lite0 "
        f"+ MiniLM backbones, trained linear z heads to {HEADS_DIM}) with "
        f"{HEADS_ROCKET_HIDDEN_DIM}-wide BN-MLP h heads; every epoch's views "
        "encoded once by the locked backbones (cached on disk)",
        options=recipes_rocket.ROCKET_MODEL_OPTIONS
        + recipes_rocket.ROCKET_TRAINER_OPTIONS,
    )(build)
    register_trainer(name)(_view_feature_trainer)


def _view_feature_trainer(data: str) -> Callable:
    """`training.train` on the locked backbones' features of every epoch's
    views (`recipes_rocket.view_feature_arrays`); validation on the plain
    pairs' cached features."""

    def train(
        model,
        train_pairs: PairArrays,
        epochs: int,
        augment: str | None = None,
        seed: int = 0,
        validation_pairs: PairArrays | None = None,
        **kwargs,
    ) -> dict:
        if epochs < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
        recipes_rocket.check_views_for(model, augment)
        training.check_pairs_framing(model, train_pairs, validation_pairs)
        start = time.perf_counter()
        size = _frozen_image_size(model)
        train_pairs = _frozen_size_pairs(data, train_pairs, 0, size)
        image_views, text_views = recipes_rocket.views(augment, train_pairs.image_size)
        arrays = recipes_rocket.view_feature_arrays(
            model,
            train_pairs,
            image_views,
            text_views,
            seed=seed,
            epochs=epochs,
            cache_dir=_feature_cache_dir(),
        )
        val_arrays = _validation_feature_arrays(model, data, validation_pairs, size)
        print(
            f"frozen-backbone view features ready in {time.perf_counter() - start:.1f} s"
        )
        result = training.train(
            model, arrays, epochs, seed=seed, validation_pairs=val_arrays, **kwargs
        )
        # Encoding the views is part of the run's cost.
        result["seconds"] = time.perf_counter() - start
        return result

    return train


for _method in recipes_rocket.ROCKET_ADDONS:
    _register_rocket_heads(_method)


# === Three Towers over locked pretrained f and g ===


@register_recipe(
    "three-towers-heads",
    image_size=FROZEN_IMAGE_SIZE,
    description="Three Towers on the `lit-heads` towers: f = locked ImageNet "
    "EfficientNet-Lite0 backbone (224 px) + trained linear head to "
    f"{HEADS_DIM}, g = locked all-MiniLM-L6-v2 backbone (mean-pooled) + "
    "trained linear head, aligned to a frozen EfficientNet-Lite0 h; all three "
    "backbones referenced, not stored; trains heads and temperatures on "
    "cached features",
)
def build_three_towers_heads(image_size: int = FROZEN_IMAGE_SIZE):
    _check_frozen_size("three-towers-heads", image_size)
    preprocessor = pretrained.preprocessor(
        FROZEN_BACKBONE, "all_minilm_l6_v2", sequence_length=32
    )
    preprocessor.third_image_converter = pretrained.get_encoder(
        FROZEN_BACKBONE
    ).preprocessing()
    return ThreeTowers(
        preprocessor=preprocessor,
        image_tower_source=FROZEN_BACKBONE,
        lock_image="backbone",
        image_head="linear",
        projection_dim=HEADS_DIM,
        text_tower_source="all_minilm_l6_v2",
        lock_text="backbone",
        text_pooling="mean",
        text_head="linear",
        third_tower_source=FROZEN_BACKBONE,
    )


register_trainer("three-towers-heads")(_cached_feature_trainer)
