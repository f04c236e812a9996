"""From-scratch architectures as named configs (data, like open_clip's
`model_configs/`), and one builder for them.

Every `tiny()` constructor, the training recipes and the tests build their
random towers from a name here instead of repeating the numbers.

| name | ViT | text transformer | tokens | used by |
|---|---|---|---|---|
| `"tiny"` | patch 8, width 32, 2 layers, 2 heads | width 32, 2 layers, 2 heads | 16 | `CLIP.tiny`, `SigLIP.tiny`, `LiT.tiny` (text) |
| `"tiny_shallow"` | as `tiny`, 1 layer | as `tiny`, 1 layer | 16 | `ThreeTowers.tiny`, `ASIF.tiny` |
| `"small"` | patch 8, width 128, 4 layers, 4 heads | width 128, 4 layers, 4 heads | 64 | the `clip`, `siglip`, `three-towers` recipes |

Example:

```python
parts = keras_towers.from_scratch.build("small", image_size=64)
model = keras_towers.CLIP(parts.image_tower, parts.text_tower, parts.preprocessor)
```
"""

from __future__ import annotations

from typing import NamedTuple

from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower
from keras_towers.utils.registry import Registry

CONFIGS = Registry(
    "from-scratch config",
    hint="Register one with `keras_towers.from_scratch.CONFIGS.add(name, dict)`.",
)
CONFIGS.add(
    "tiny",
    {
        "patch_size": 8,
        "width": 32,
        "num_layers": 2,
        "num_heads": 2,
        "sequence_length": 16,
        "projection_dim": 32,
    },
)
CONFIGS.add("tiny_shallow", {**CONFIGS.get("tiny"), "num_layers": 1})
# `tiny` with a 64-byte text context: room for CLIP's prompt templates filled
# with short class names (`shapes_clip_tiny`; 16 bytes cut most of them).
CONFIGS.add("tiny_text64", {**CONFIGS.get("tiny"), "sequence_length": 64})
CONFIGS.add(
    "small",
    {
        "patch_size": 8,
        "width": 128,
        "num_layers": 4,
        "num_heads": 4,
        "sequence_length": 64,
        "projection_dim": 128,
    },
)


class FromScratch(NamedTuple):
    """A byte-level preprocessor and a matched pair of random towers."""

    preprocessor: ContrastivePreprocessor
    image_tower: ImageTower
    text_tower: TextTower


def text_tower(
    config: str,
    preprocessor: ContrastivePreprocessor,
    projection_dim: int | None = None,
    name: str = "text_tower",
) -> TextTower:
    """The config's text transformer over `preprocessor`'s tokenizer."""
    spec = CONFIGS.get(config)
    return TextTower.transformer(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        sequence_length=preprocessor.sequence_length,
        width=spec["width"],
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        projection_dim=projection_dim or spec["projection_dim"],
        name=name,
    )


def build(
    config: str,
    image_size: int,
    projection_dim: int | None = None,
    name_prefix: str = "",
) -> FromScratch:
    """Build the named from-scratch architecture.

    Args:
        config: str. A name in `CONFIGS` (`"tiny"`, `"tiny_shallow"`,
            `"small"`).
        image_size: int. Square input size of the ViT.
        projection_dim: int. Embedding width (default: the config's).
        name_prefix: str. Prefix of the tower names (`"<prefix>image_tower"`,
            `"<prefix>text_tower"`); saved weights are keyed by these names.

    Returns:
        `FromScratch(preprocessor, image_tower, text_tower)`: the default
        byte-level preprocessor at `image_size` and the config's token
        length, a ViT and a causal text transformer of the same width and
        depth.
    """
    spec = CONFIGS.get(config)
    projection_dim = projection_dim or spec["projection_dim"]
    preprocessor = ContrastivePreprocessor.default(
        image_size=image_size, sequence_length=spec["sequence_length"]
    )
    image = ImageTower.vit(
        image_size=image_size,
        patch_size=spec["patch_size"],
        width=spec["width"],
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        projection_dim=projection_dim,
        name=f"{name_prefix}image_tower",
    )
    text = text_tower(
        config, preprocessor, projection_dim, name=f"{name_prefix}text_tower"
    )
    return FromScratch(preprocessor, image, text)
