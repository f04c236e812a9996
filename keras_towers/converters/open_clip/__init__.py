"""Load open_clip checkpoint directories as keras_towers CLIP (or SigLIP).

A directory as open_clip writes it for model hubs — `open_clip_config.json`
(`model_cfg` + `preprocess_cfg`) and `open_clip_model.safetensors` (or
`open_clip_pytorch_model.bin`, read with `torch.load(weights_only=True)`) —
becomes a `keras_towers.CLIP` built from keras_towers parts:

- `VisionTransformer` + `ImageTower(pooling="cls", head="linear")`;
- `TextTransformer` + `TextTower(pooling="argmax" | "eos", head="linear")`
  (with a bias when `proj_bias`);
- a `ContrastivePreprocessor` with open_clip's default CLIP BPE tokenizer
  and an image converter following `preprocess_cfg` (size, mean/std,
  interpolation, resize mode, fill colour).

A checkpoint with a `logit_bias` (trained SigLIP-style) becomes a `SigLIP`.
What is supported and what is refused (by the field's name): `config`.

The parts, one module each: `config` (`convert_config`), `weights`
(`open_checkpoint`, `convert_weights`), `tokenizer`, `image_converter` and
`loader` (`load_open_clip`, registered in
`keras_towers.presets.FORMAT_LOADERS` for directories holding
`open_clip_config.json`).

Example:

```python
model = keras_towers.CLIP.from_preset("/path/to/open_clip_dir")
model.encode_texts(["a photo of a cat"])
```
"""

from keras_towers.converters.open_clip.config import convert_config
from keras_towers.converters.open_clip.loader import CONFIG_FILE
from keras_towers.converters.open_clip.loader import load_open_clip
from keras_towers.converters.open_clip.loader import load_preprocessor
from keras_towers.converters.open_clip.loader import read_config
from keras_towers.converters.open_clip.weights import PYTORCH_FILE
from keras_towers.converters.open_clip.weights import SAFETENSORS_FILE
from keras_towers.converters.open_clip.weights import convert_weights
from keras_towers.converters.open_clip.weights import open_checkpoint

__all__ = [
    "CONFIG_FILE",
    "PYTORCH_FILE",
    "SAFETENSORS_FILE",
    "convert_config",
    "convert_weights",
    "load_open_clip",
    "load_preprocessor",
    "open_checkpoint",
    "read_config",
]
