"""Users' own image-text pairs as `tf.data` pipelines.

Every reader returns an unbatched `tf.data.Dataset` of
`{"images": uint8 (H, W, 3), "texts": tf.string}` (images keep their own
size) plus, on request, `"keys"` and extra string fields:

| source | reader |
|---|---|
| CSV / TSV with a header row | `from_csv` |
| JSON Lines, one object per line | `from_jsonl` |
| a Python list of dicts or `(image, caption)` tuples | `from_records` |
| `tf.train.Example` TFRecord files | `from_tfrecord` (`write_tfrecord` converts) |
| WebDataset `.tar` shards (`key.jpg` + `key.txt`) | `from_webdataset` |
| any of these by file name, glob or directory | `load_pairs` |

Files are read lazily (a shard is streamed member by member) and images are
decoded with Pillow (`keras_towers.datasets.decode_image`) in parallel inside
the pipeline. `batch_pairs` resizes them to one size and batches them into
what `keras_towers.CLIP.fit` takes.

Bad records (a missing, empty, truncated or non-image file, a missing
caption, a malformed CSV/JSON line, a corrupt TFRecord or tar member) never
stop a pass by default (`on_error="skip"`): each is skipped with a
`SkippedRecordWarning` naming the file and the reason, and counted in the
dataset's `decode_report` (a `DecodeReport`); at the end of every full pass a
summary warning says how many records were skipped. With `on_error="raise"`
the first bad record stops iteration with an error naming the file and the
reason (TensorFlow raises it as `tf.errors.InvalidArgumentError` wrapping our
`PairsDataError`). The user's files are only read, never modified.
"""

from keras_towers.datasets.pairs._paths import PathsLike
from keras_towers.datasets.pairs._pipeline import ON_ERROR_CHOICES
from keras_towers.datasets.pairs._report import MAX_ERRORS_KEPT
from keras_towers.datasets.pairs._report import MAX_WARNINGS_PER_PASS
from keras_towers.datasets.pairs._report import DecodeReport
from keras_towers.datasets.pairs._report import PairsDataError
from keras_towers.datasets.pairs._report import SkippedRecord
from keras_towers.datasets.pairs._report import SkippedRecordWarning
from keras_towers.datasets.pairs._schema import KEYS_KEY
from keras_towers.datasets.pairs.batching import RESIZE_MODES
from keras_towers.datasets.pairs.batching import batch_pairs
from keras_towers.datasets.pairs.batching import resize_image
from keras_towers.datasets.pairs.records import from_csv
from keras_towers.datasets.pairs.records import from_jsonl
from keras_towers.datasets.pairs.records import from_records
from keras_towers.datasets.pairs.registry import READERS
from keras_towers.datasets.pairs.registry import load_pairs
from keras_towers.datasets.pairs.registry import register_reader
from keras_towers.datasets.pairs.tfrecord import TFRECORD_IMAGE_FEATURES
from keras_towers.datasets.pairs.tfrecord import TFRECORD_KEY_FEATURE
from keras_towers.datasets.pairs.tfrecord import TFRECORD_TEXT_FEATURES
from keras_towers.datasets.pairs.tfrecord import from_tfrecord
from keras_towers.datasets.pairs.tfrecord import write_tfrecord
from keras_towers.datasets.pairs.webdataset import WEBDATASET_JSON_FIELDS
from keras_towers.datasets.pairs.webdataset import from_webdataset

__all__ = [
    "KEYS_KEY",
    "MAX_ERRORS_KEPT",
    "MAX_WARNINGS_PER_PASS",
    "ON_ERROR_CHOICES",
    "READERS",
    "RESIZE_MODES",
    "TFRECORD_IMAGE_FEATURES",
    "TFRECORD_KEY_FEATURE",
    "TFRECORD_TEXT_FEATURES",
    "WEBDATASET_JSON_FIELDS",
    "DecodeReport",
    "PairsDataError",
    "PathsLike",
    "SkippedRecord",
    "SkippedRecordWarning",
    "batch_pairs",
    "from_csv",
    "from_jsonl",
    "from_records",
    "from_tfrecord",
    "from_webdataset",
    "load_pairs",
    "register_reader",
    "resize_image",
    "write_tfrecord",
]
