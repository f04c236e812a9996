"""Prompt templates for zero-shot classification.

Defined in `keras_towers.templates` (below the models, so ASIF's zero-shot
head resolves the same set names); re-exported here.
"""

from keras_towers.templates import BEST7_TEMPLATES
from keras_towers.templates import OPENAI_IMAGENET_TEMPLATES
from keras_towers.templates import TEMPLATE_SETS
from keras_towers.templates import fill_templates
from keras_towers.templates import get_templates

__all__ = [
    "BEST7_TEMPLATES",
    "OPENAI_IMAGENET_TEMPLATES",
    "TEMPLATE_SETS",
    "fill_templates",
    "get_templates",
]
