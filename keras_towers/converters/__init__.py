"""Converters from external checkpoint formats.

Converters sit above models in the layering: they build keras_towers models
from other libraries' checkpoint directories. Each converter module registers
its loaders in `keras_towers.presets.FORMAT_LOADERS` (with
`keras_towers.presets.register_format(model_type)` or
`register_format(marker_file=...)`) when imported, so
`keras_towers.<Method>.from_preset(dir)` hands a directory whose
`config.json` carries that `model_type` (transformers), or which holds that
marker file (open_clip's `open_clip_config.json`), to it.
"""

from keras_towers.converters import open_clip  # noqa: F401
from keras_towers.converters import transformers_clip  # noqa: F401
from keras_towers.converters import transformers_siglip  # noqa: F401
