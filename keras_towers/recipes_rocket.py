"""The improved CLIP recipe (clip-rocket) and its SSL add-ons, for
`keras-towers train`: models and their augmented-view trainers.

`keras_towers.recipes` registers them as `clip-improved`, `siamlip`,
`byolip`, `barlip` and `swalip`: `CLIPRocket` on the `clip` recipe's small
towers (from scratch) with `ROCKET_HEAD_HIDDEN_DIM`-wide h heads, trained on
a global view plus `ROCKET_VIEWS` augmented views of each modality, built
in `tf.data` per `(seed, epoch, index)` so `--resume` stays exact.

Example:

```python
model = keras_towers.recipes_rocket.build("siamlip", image_size=64)
image_views, text_views = keras_towers.recipes_rocket.views("rocket", 64)
```
"""

from __future__ import annotations

from collections.abc import Callable

from keras_towers import augment
from keras_towers import from_scratch
from keras_towers import training
from keras_towers.models.rocket import CLIPRocket

#: Recipe name -> `CLIPRocket` add-on.
ROCKET_ADDONS = {
    "clip-improved": None,
    "siamlip": "siamlip",
    "byolip": "byolip",
    "barlip": "barlip",
    "swalip": "swalip",
}
#: The `keras_towers.from_scratch` config of the towers (the `clip` recipe's).
ROCKET_TOWERS = "small"
#: Hidden width of the h heads (the paper's 4096 would dwarf the 128-wide
#: small towers trained on a few thousand pairs).
ROCKET_HEAD_HIDDEN_DIM = 512
#: Augmented views per modality (the paper's `A = 2`).
ROCKET_VIEWS = 2
#: `--augment` choices: name -> (image presets, text presets), global first.
AUGMENTATIONS = {
    # clip-rocket: weakly augmented global view + SimCLR-style / EDA views.
    "rocket": (
        ["rocket-global"] + ROCKET_VIEWS * ["rocket-augmented"],
        ["rocket-global"] + ROCKET_VIEWS * ["rocket-augmented"],
    ),
    # Unaugmented global view; mild crop + flip views, stopword-removed captions.
    "light": (
        ["none"] + ROCKET_VIEWS * ["light"],
        ["none"] + ROCKET_VIEWS * ["rocket-global"],
    ),
    # The global pair alone: CL2L reduces to CLIP's InfoNCE (+ the add-on on it).
    "none": (["none"], ["none"]),
}
DEFAULT_AUGMENT = "rocket"
#: CLI options `build` takes (stored in the model's config).
ROCKET_MODEL_OPTIONS = ("zero_shot_head", "ensemble_weight")
#: CLI options the trainer takes.
ROCKET_TRAINER_OPTIONS = ("augment",)


def views(augment_name: str | None, image_size: int) -> tuple[list, list]:
    """`(image_views, text_views)` of an `AUGMENTATIONS` entry at
    `image_size` (`None`: `DEFAULT_AUGMENT`)."""
    name = augment_name or DEFAULT_AUGMENT
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation {name!r}: one of {sorted(AUGMENTATIONS)} is "
            "expected."
        )
    image_presets, text_presets = AUGMENTATIONS[name]
    image_views = [
        augment.ImageAugment.from_preset(p, size=image_size) for p in image_presets
    ]
    text_views = [augment.TextAugment.from_preset(p) for p in text_presets]
    return image_views, text_views


def build(
    method: str,
    image_size: int = 64,
    zero_shot_head: str | None = None,
    ensemble_weight: float | None = None,
) -> CLIPRocket:
    """The `CLIPRocket` of recipe `method` (a key of `ROCKET_ADDONS`)."""
    if method not in ROCKET_ADDONS:
        raise ValueError(
            f"Unknown rocket recipe {method!r}: one of {sorted(ROCKET_ADDONS)}."
        )
    parts = from_scratch.build(ROCKET_TOWERS, image_size)
    return CLIPRocket(
        parts.image_tower,
        parts.text_tower,
        parts.preprocessor,
        head_hidden_dim=ROCKET_HEAD_HIDDEN_DIM,
        addon=ROCKET_ADDONS[method],
        zero_shot_head=zero_shot_head or "global",
        ensemble_weight=0.5 if ensemble_weight is None else float(ensemble_weight),
    )


def views_trainer(data: str) -> Callable:
    """`training.train` on augmented views (`--augment`, default
    `DEFAULT_AUGMENT`); validation on the plain global pairs."""
    del data  # The views are built from the pairs in memory.

    def train(model, train_pairs, epochs: int, augment: str | None = None, **kwargs):
        if augment == "none" and getattr(model, "addon", None) == "swalip":
            raise ValueError(
                "SwALIP needs augmented views: --augment none gives it none "
                f"(choose one of {sorted(set(AUGMENTATIONS) - {'none'})})."
            )
        # The views keep the pairs' size (the size the model was built for).
        images = (
            train_pairs.images
            if isinstance(train_pairs, training.PairArrays)
            else train_pairs["images"]
        )
        image_views, text_views = views(augment, int(images.shape[1]))
        return training.train(
            model,
            train_pairs,
            epochs,
            image_views=image_views,
            text_views=text_views,
            **kwargs,
        )

    return train
