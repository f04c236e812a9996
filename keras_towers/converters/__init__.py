"""Converters from external checkpoint formats.

Converters sit above models in the layering: they build keras_towers models
from other libraries' checkpoint directories. Each converter module registers
its loaders in `keras_towers.presets.FORMAT_LOADERS` (with
`keras_towers.presets.register_format(model_type)`) when imported, so
`keras_towers.<Method>.from_preset(dir)` can hand a directory whose
`config.json` carries that `model_type` to it.
"""

from keras_towers.converters import transformers_clip  # noqa: F401
