"""Seeded data augmentation inside `tf.data`, for every method and backend.

- `ImageAugment` (`IMAGE_PRESETS`: `"none"`, `"rocket-global"`,
  `"rocket-augmented"`, `"light"`, `"protoclip-light"`): one image view;
- `TextAugment` (`TEXT_PRESETS`: `"none"`, `"rocket-global"`,
  `"rocket-augmented"`): stopword removal and one EDA operation;
- `make_views` / `views_map_fn`: a global view plus augmented views;
- `example_seed`: the stateless seed of `(seed, epoch, index, stream, view)`.

Example:

```python
from keras_towers import augment
view = augment.ImageAugment.from_preset("light", size=64)
view(image, augment.example_seed(0, epoch=0, index=0))
```
"""

from keras_towers.augment import stopwords
from keras_towers.augment import wordnet
from keras_towers.augment.image import IMAGE_PRESETS
from keras_towers.augment.image import ImageAugment
from keras_towers.augment.seeds import IMAGE_STREAM
from keras_towers.augment.seeds import TEXT_STREAM
from keras_towers.augment.seeds import example_seed
from keras_towers.augment.text import CAPTION_TEMPLATES
from keras_towers.augment.text import EDA_OPS
from keras_towers.augment.text import ROCKET_EDA_WEIGHTS
from keras_towers.augment.text import TEXT_PRESETS
from keras_towers.augment.text import TextAugment
from keras_towers.augment.views import IMAGES_AUG_KEY
from keras_towers.augment.views import TEXTS_AUG_KEY
from keras_towers.augment.views import make_views
from keras_towers.augment.views import views_map_fn

__all__ = [
    "CAPTION_TEMPLATES",
    "EDA_OPS",
    "IMAGES_AUG_KEY",
    "IMAGE_PRESETS",
    "IMAGE_STREAM",
    "ImageAugment",
    "ROCKET_EDA_WEIGHTS",
    "TEXTS_AUG_KEY",
    "TEXT_PRESETS",
    "TEXT_STREAM",
    "TextAugment",
    "example_seed",
    "make_views",
    "stopwords",
    "views_map_fn",
    "wordnet",
]
