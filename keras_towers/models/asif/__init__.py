"""ASIF: a multimodal model from two frozen encoders and an anchor set.

No training at all: an image is represented by its similarity to every anchor
image, a text by its similarity to every anchor caption (the maths lives in
`keras_towers.relative`). Updating the model means adding or removing anchors,
which takes milliseconds when their features are given.

| module | what |
|---|---|
| `model.py` | `ASIF`: constructor, `call`, `encode_*`, `represent`, config, saving hooks |
| `recipes.py` | `lite_minilm_asif`: EfficientNet-Lite + MiniLM, no anchors |
| `anchors.py` | the anchor store, `Anchor`, adding and removing anchors |
| `saving.py` | the anchors as arrays for Keras saving (`save_own_variables`) |
| `storage.py` | how anchor features are written: exact, deduplicated, or compact (PCA + int8) |
| `backgrounds.py` | `query_background="light"`: invert dark-background query images |
| `legacy.py` | reading presets of the earlier format (`anchors.safetensors`) |
| `sources.py` | `load_tower_source`: towers from `keras_towers.pretrained` or a preset |
| `zero_shot.py` | `ZeroShotHead`, `zero_shot_head`, `zero_shot_scores` |
| `explain.py` | `explain`: the anchors behind a similarity |
"""

from keras_towers.models.asif.anchors import ANCHOR_DTYPES
from keras_towers.models.asif.anchors import Anchor
from keras_towers.models.asif.model import ASIF
from keras_towers.models.asif.model import MAX_DENSE_BYTES
from keras_towers.models.asif.recipes import lite_minilm_asif
from keras_towers.models.asif.sources import load_tower_source
from keras_towers.models.asif.zero_shot import ZERO_SHOT_MODES
from keras_towers.models.asif.zero_shot import ZeroShotHead

__all__ = [
    "ANCHOR_DTYPES",
    "ASIF",
    "MAX_DENSE_BYTES",
    "ZERO_SHOT_MODES",
    "Anchor",
    "ZeroShotHead",
    "lite_minilm_asif",
    "load_tower_source",
]
