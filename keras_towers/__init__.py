"""keras_towers: contrastive vision-language models for Keras 3.

Example:

```python
import keras_towers
model = keras_towers.CLIP.tiny()
```
"""

from keras_towers import augment
from keras_towers import backbones
from keras_towers import clustering
from keras_towers import converters
from keras_towers import datasets
from keras_towers import distributed
from keras_towers import efficientnet_lite
from keras_towers import evaluation
from keras_towers import from_scratch
from keras_towers import layout_maps
from keras_towers import objectives
from keras_towers import objectives_chunked
from keras_towers import objectives_rocket
from keras_towers import objectives_ssl
from keras_towers import ops
from keras_towers import optimizers
from keras_towers import presets
from keras_towers import pretrained
from keras_towers import recipes
from keras_towers import relative
from keras_towers import tasks
from keras_towers import training
from keras_towers.feature_cache import cache_locked_features
from keras_towers.feature_cache import clear_feature_cache
from keras_towers.models import ASIF
from keras_towers.models import CLIP
from keras_towers.models import CLIPRocket
from keras_towers.models import ContrastiveModel
from keras_towers.models import LiT
from keras_towers.models import ProtoCLIP
from keras_towers.models import ProtoCLIPEpisodes
from keras_towers.models import SigLIP
from keras_towers.models import ThreeTowers
from keras_towers.preprocessing import ByteTokenizer
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.preprocessing import TruncationWarning
from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower
from keras_towers.version import __version__

__all__ = [
    "ASIF",
    "CLIP",
    "CLIPRocket",
    "ByteTokenizer",
    "ContrastiveModel",
    "ContrastivePreprocessor",
    "ImageTower",
    "LiT",
    "ProtoCLIP",
    "ProtoCLIPEpisodes",
    "SigLIP",
    "TextTower",
    "ThreeTowers",
    "TruncationWarning",
    "__version__",
    "augment",
    "backbones",
    "cache_locked_features",
    "clear_feature_cache",
    "clustering",
    "converters",
    "efficientnet_lite",
    "datasets",
    "distributed",
    "evaluation",
    "from_scratch",
    "layout_maps",
    "objectives",
    "objectives_chunked",
    "objectives_rocket",
    "objectives_ssl",
    "ops",
    "optimizers",
    "presets",
    "pretrained",
    "recipes",
    "relative",
    "tasks",
    "training",
]
