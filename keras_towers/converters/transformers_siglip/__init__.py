"""Load `transformers` SigLIP checkpoints (`model_type: siglip`) as keras_towers SigLIP.

A directory written by `transformers.SiglipModel.save_pretrained` (SigLIP,
and fixed-resolution SigLIP 2, which transformers also saves as
`model_type: siglip`) plus its `SiglipTokenizer` and `SiglipImageProcessor`
files becomes a `keras_towers.SigLIP` built from keras_towers parts around
keras-hub's SigLIP encoders:

- `SigLIPImageEncoder` (keras-hub's `SigLIPVisionEncoder`: patch ViT with
  the MAP attention-pooling head, no projection) in
  `ImageTower(pooling="none", head=None)`;
- keras-hub's `SigLIPTextEncoder` (non-causal, pooled at the last position,
  linear head) in `TextTower(pooling="none", head=None)`;
- a `SigLIPPreprocessor`: `TransformersSigLIPTokenizer` (SentencePiece with
  transformers' canonicalisation), the end token, padding to the full
  context; `TransformersImageConverter` resizing straight to the model's
  size (squash), PIL-exact;
- the checkpoint's `logit_scale` (log) and `logit_bias`.

NaFlex SigLIP 2 (`model_type: siglip2`), `vision_use_head=False`,
non-square sizes and unmapped activations are refused naming the field.

Example:

```python
model = keras_towers.SigLIP.from_preset("/path/to/siglip-base-patch16-224")
model.encode_texts(["a photo of a cat"])
```
"""

from keras_towers.converters.transformers_siglip.backbones import SigLIPImageEncoder
from keras_towers.converters.transformers_siglip.config import ACTIVATIONS
from keras_towers.converters.transformers_siglip.config import convert_config
from keras_towers.converters.transformers_siglip.image_converter import (
    convert_siglip_image_processor_config,
)
from keras_towers.converters.transformers_siglip.image_converter import (
    load_image_converter,
)
from keras_towers.converters.transformers_siglip.loader import load_preprocessor
from keras_towers.converters.transformers_siglip.loader import load_transformers_siglip
from keras_towers.converters.transformers_siglip.preprocessor import SigLIPPreprocessor
from keras_towers.converters.transformers_siglip.tokenizer import (
    TransformersSigLIPTokenizer,
)
from keras_towers.converters.transformers_siglip.tokenizer import canonicalize_text_tf
from keras_towers.converters.transformers_siglip.tokenizer import load_tokenizer
from keras_towers.converters.transformers_siglip.weights import convert_weights
from keras_towers.converters.transformers_siglip.weights import weight_mapping

__all__ = [
    "ACTIVATIONS",
    "SigLIPImageEncoder",
    "SigLIPPreprocessor",
    "TransformersSigLIPTokenizer",
    "canonicalize_text_tf",
    "convert_config",
    "convert_siglip_image_processor_config",
    "convert_weights",
    "load_image_converter",
    "load_preprocessor",
    "load_tokenizer",
    "load_transformers_siglip",
    "weight_mapping",
]
