"""Load `transformers` CLIP checkpoints (`model_type: clip`) as keras_towers CLIP.

A checkpoint directory written by `transformers.CLIPModel.save_pretrained`
(plus its tokenizer and image-processor files) becomes a
`keras_towers.CLIP` built from keras_towers parts:

- `VisionTransformer` + `ImageTower(pooling="cls", head="linear")`;
- `TextTransformer` + `TextTower(pooling="argmax" | "eos", head="linear")`,
  pooling exactly where transformers pools: at `argmax(input_ids)` for legacy
  configs with `eos_token_id == 2`, else at the first `eos_token_id`;
- a `ContrastivePreprocessor` whose tokenizer and image converter reproduce
  transformers' `CLIPTokenizer` and (PIL) `CLIPImageProcessor`, inside
  `tf.data` as well as eagerly.

The parts, one module each: `config` (config conversion), `weights`
(`CheckpointReader`, the weight map), `tokenizer`, `image_converter`, and
`loader` (`load_transformers_clip`, registered in
`keras_towers.presets.FORMAT_LOADERS` as `"clip"`).

Example:

```python
model = keras_towers.CLIP.from_preset("/path/to/clip-vit-base-patch32")
model.encode_texts(["a photo of a cat"])
```
"""

from keras_towers.converters.transformers_clip.config import ACTIVATIONS
from keras_towers.converters.transformers_clip.config import convert_config
from keras_towers.converters.transformers_clip.image_converter import PREPROCESSOR_FILE
from keras_towers.converters.transformers_clip.image_converter import (
    TransformersImageConverter,
)
from keras_towers.converters.transformers_clip.image_converter import (
    convert_image_processor_config,
)
from keras_towers.converters.transformers_clip.image_converter import (
    load_image_converter,
)
from keras_towers.converters.transformers_clip.loader import CONFIG_FILE
from keras_towers.converters.transformers_clip.loader import load_preprocessor
from keras_towers.converters.transformers_clip.loader import load_transformers_clip
from keras_towers.converters.transformers_clip.tokenizer import CLIP_SPLIT_PATTERN
from keras_towers.converters.transformers_clip.tokenizer import END_TOKEN
from keras_towers.converters.transformers_clip.tokenizer import MERGES_FILE
from keras_towers.converters.transformers_clip.tokenizer import SPECIAL_TOKENS_FILE
from keras_towers.converters.transformers_clip.tokenizer import START_TOKEN
from keras_towers.converters.transformers_clip.tokenizer import TOKENIZER_CONFIG_FILE
from keras_towers.converters.transformers_clip.tokenizer import TOKENIZER_FILE
from keras_towers.converters.transformers_clip.tokenizer import VOCAB_FILE
from keras_towers.converters.transformers_clip.tokenizer import (
    TransformersCLIPTokenizer,
)
from keras_towers.converters.transformers_clip.tokenizer import load_tokenizer
from keras_towers.converters.transformers_clip.tokenizer import read_bpe
from keras_towers.converters.transformers_clip.weights import PYTORCH_FILE
from keras_towers.converters.transformers_clip.weights import SAFETENSORS_FILE
from keras_towers.converters.transformers_clip.weights import SAFETENSORS_INDEX_FILE
from keras_towers.converters.transformers_clip.weights import CheckpointReader
from keras_towers.converters.transformers_clip.weights import convert_weights
from keras_towers.converters.transformers_clip.weights import weight_mapping

__all__ = [
    "ACTIVATIONS",
    "CLIP_SPLIT_PATTERN",
    "CONFIG_FILE",
    "END_TOKEN",
    "MERGES_FILE",
    "PREPROCESSOR_FILE",
    "PYTORCH_FILE",
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX_FILE",
    "SPECIAL_TOKENS_FILE",
    "START_TOKEN",
    "TOKENIZER_CONFIG_FILE",
    "TOKENIZER_FILE",
    "VOCAB_FILE",
    "CheckpointReader",
    "TransformersCLIPTokenizer",
    "TransformersImageConverter",
    "convert_config",
    "convert_image_processor_config",
    "convert_weights",
    "load_image_converter",
    "load_preprocessor",
    "load_tokenizer",
    "load_transformers_clip",
    "read_bpe",
    "weight_mapping",
]
