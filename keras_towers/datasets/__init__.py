"""Data sets keras_towers can build offline."""

from keras_towers.datasets.shapes import make_shapes
from keras_towers.datasets.shapes import shape_class_names

__all__ = ["make_shapes", "shape_class_names"]

# Embedded corpus (Tux Paint + emoji) and zero-shot evaluation sets.
from keras_towers.datasets.classification import classification_names  # noqa: E402
from keras_towers.datasets.classification import load_classification  # noqa: E402
from keras_towers.datasets.corpus import corpus_file  # noqa: E402
from keras_towers.datasets.corpus import embedded_records  # noqa: E402
from keras_towers.datasets.corpus import prepare  # noqa: E402
from keras_towers.datasets.paths import MissingDataError  # noqa: E402
from keras_towers.datasets.paths import data_dir  # noqa: E402

__all__ += [
    "MissingDataError",
    "classification_names",
    "corpus_file",
    "data_dir",
    "embedded_records",
    "load_classification",
    "prepare",
]
