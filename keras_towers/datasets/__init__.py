"""Data sets keras_towers can build offline."""

from keras_towers.datasets.shapes import make_shapes
from keras_towers.datasets.shapes import shape_class_names

__all__ = ["make_shapes", "shape_class_names"]

# Embedded corpus (12 offline sources, see `corpus_sources()`) and evaluation sets.
from keras_towers.datasets.classification import classification_metadata  # noqa: E402
from keras_towers.datasets.classification import classification_names  # noqa: E402
from keras_towers.datasets.classification import describe_classification  # noqa: E402
from keras_towers.datasets.classification import load_classification  # noqa: E402
from keras_towers.datasets.corpus import corpus_file  # noqa: E402
from keras_towers.datasets.corpus import corpus_sources  # noqa: E402
from keras_towers.datasets.corpus import embedded_dataset  # noqa: E402
from keras_towers.datasets.corpus import embedded_records  # noqa: E402
from keras_towers.datasets.corpus import prepare  # noqa: E402
from keras_towers.datasets.paths import MissingDataError  # noqa: E402
from keras_towers.datasets.paths import data_dir  # noqa: E402

__all__ += [
    "MissingDataError",
    "classification_metadata",
    "classification_names",
    "corpus_file",
    "corpus_sources",
    "data_dir",
    "describe_classification",
    "embedded_dataset",
    "embedded_records",
    "load_classification",
    "prepare",
]

# Users' own image-text pairs (CSV, JSONL, TFRecord, WebDataset) as tf.data.
from keras_towers.datasets.decoding import ImageDecodeError  # noqa: E402
from keras_towers.datasets.decoding import decode_image  # noqa: E402
from keras_towers.datasets.decoding import read_image  # noqa: E402
from keras_towers.datasets.pairs import DecodeReport  # noqa: E402
from keras_towers.datasets.pairs import PairsDataError  # noqa: E402
from keras_towers.datasets.pairs import SkippedRecord  # noqa: E402
from keras_towers.datasets.pairs import SkippedRecordWarning  # noqa: E402
from keras_towers.datasets.pairs import batch_pairs  # noqa: E402
from keras_towers.datasets.pairs import from_csv  # noqa: E402
from keras_towers.datasets.pairs import from_jsonl  # noqa: E402
from keras_towers.datasets.pairs import from_records  # noqa: E402
from keras_towers.datasets.pairs import from_tfrecord  # noqa: E402
from keras_towers.datasets.pairs import from_webdataset  # noqa: E402
from keras_towers.datasets.pairs import load_pairs  # noqa: E402
from keras_towers.datasets.pairs import register_reader  # noqa: E402
from keras_towers.datasets.pairs import resize_image  # noqa: E402
from keras_towers.datasets.pairs import write_tfrecord  # noqa: E402

__all__ += [
    "DecodeReport",
    "ImageDecodeError",
    "PairsDataError",
    "SkippedRecord",
    "SkippedRecordWarning",
    "batch_pairs",
    "decode_image",
    "from_csv",
    "from_jsonl",
    "from_records",
    "from_tfrecord",
    "from_webdataset",
    "load_pairs",
    "read_image",
    "register_reader",
    "resize_image",
    "write_tfrecord",
]
