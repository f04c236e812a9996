"""Training recipes for `keras-towers train`: which model, on which data.

A recipe is a named builder `build(image_size) -> compiled-ready model` with
a default image size. Register more with `register_recipe`; the CLI's
`--method` choices are the registered names.

Example:

```python
recipe = keras_towers.recipes.get("clip")
model = recipe.build(image_size=64)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from keras_towers.training import PairArrays


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable
    image_size: int
    description: str = ""


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, image_size: int, description: str = ""):
    """Decorator registering `build(image_size) -> model` under `name`."""

    def wrap(build):
        _RECIPES[name] = Recipe(name, build, image_size, description)
        return build

    return wrap


def names() -> list[str]:
    return sorted(_RECIPES)


def get(name: str) -> Recipe:
    if name not in _RECIPES:
        raise ValueError(f"Unknown method {name!r}. Known: {names()}.")
    return _RECIPES[name]


def _small_clip(cls, image_size: int, **kwargs):
    from keras_towers.preprocessing import ContrastivePreprocessor
    from keras_towers.towers import ImageTower
    from keras_towers.towers import TextTower

    preprocessor = ContrastivePreprocessor.default(
        image_size=image_size, sequence_length=64
    )
    image_tower = ImageTower.vit(
        image_size=image_size,
        patch_size=8,
        width=128,
        num_layers=4,
        num_heads=4,
        projection_dim=128,
    )
    text_tower = TextTower.transformer(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        sequence_length=64,
        width=128,
        num_layers=4,
        num_heads=4,
        projection_dim=128,
    )
    return cls(image_tower, text_tower, preprocessor, **kwargs)


@register_recipe(
    "clip",
    image_size=64,
    description="CLIP from scratch: ViT (64 px, patch 8, width 128, 4 layers) + "
    "byte-level text transformer (width 128, 4 layers, 64 tokens), 128-d",
)
def build_clip(image_size: int = 64):
    from keras_towers.models import CLIP

    return _small_clip(CLIP, image_size)


@register_recipe(
    "siglip", image_size=64, description="the `clip` architecture with SigLIP's loss"
)
def build_siglip(image_size: int = 64):
    from keras_towers.models import SigLIP

    return _small_clip(SigLIP, image_size)


def load_training_data(data: str, image_size: int, resize: str = "pad"):
    """`"embedded"` or a path -> `(train, validation or None, info)`.

    `"embedded"` is the corpus built by `keras-towers data prepare`: the
    train split for training and the validation split for `val_` metrics
    (the Tux Paint test split is never read here).
    """
    from keras_towers import datasets

    if data == "embedded":
        train = datasets.embedded_records("train")
        validation = datasets.embedded_records("validation")
        train_pairs = PairArrays.from_dataset(
            datasets.from_records(train), image_size, resize=resize
        )
        validation_pairs = PairArrays.from_dataset(
            datasets.from_records(validation), image_size, resize=resize
        )
        info = {
            "name": "embedded",
            "train_pairs": len(train_pairs),
            "validation_pairs": len(validation_pairs),
            "sources": sorted({r.get("source", "?") for r in train}),
            "licenses": sorted({r.get("license", "?") for r in train}),
        }
        return train_pairs, validation_pairs, info
    pairs = PairArrays.from_dataset(
        datasets.load_pairs(data), image_size, resize=resize
    )
    return pairs, None, {"name": str(data), "train_pairs": len(pairs)}


@register_recipe(
    "clip-tiny",
    image_size=32,
    description="`CLIP.tiny()` (69k parameters): smoke runs and tests",
)
def build_clip_tiny(image_size: int = 32):
    from keras_towers.models import CLIP

    return CLIP.tiny(image_size=image_size)
