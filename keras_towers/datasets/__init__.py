"""Data sets keras_towers can build offline."""

from keras_towers.datasets.shapes import make_shapes
from keras_towers.datasets.shapes import shape_class_names

__all__ = ["make_shapes", "shape_class_names"]
