"""TFRecord files of `tf.train.Example`s: `from_tfrecord` and `write_tfrecord`."""

from __future__ import annotations

import io
import itertools
import os
import uuid
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError as _ProtoDecodeError
from PIL import Image

from keras_towers.datasets.pairs._paths import PathsLike
from keras_towers.datasets.pairs._pipeline import _check_on_error
from keras_towers.datasets.pairs._pipeline import _make_decoder
from keras_towers.datasets.pairs._pipeline import _read_files
from keras_towers.datasets.pairs._report import DecodeReport
from keras_towers.datasets.pairs._schema import _EXTRA
from keras_towers.datasets.pairs._schema import KEYS_KEY
from keras_towers.datasets.pairs._schema import _check_extra_keys
from keras_towers.datasets.pairs._schema import _record
from keras_towers.datasets.pairs._schema import _s
from keras_towers.datasets.pairs.records import _records_generator
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

#: Image feature names tried in order by `from_tfrecord` (ours, then the
#: TensorFlow Object Detection / TF-Slim convention).
TFRECORD_IMAGE_FEATURES = ("image", "image/encoded")
#: Caption feature names tried in order by `from_tfrecord`.
TFRECORD_TEXT_FEATURES = ("caption", "image/caption", "text")


def _names(value, argument: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"`{argument}` must be a feature name or a list of them. "
            f"Received: {value!r}."
        )
    return names


def _compression(file: str, compression_type: str | None) -> str:
    if compression_type is not None:
        return compression_type
    lower = file.lower()
    if lower.endswith(".gz"):
        return "GZIP"
    if lower.endswith((".zz", ".zlib")):
        return "ZLIB"
    return ""


def _bytes_feature(features, names) -> tuple[str | None, bytes | None]:
    for name in names:
        if name in features:
            values = features[name].bytes_list.value
            return name, (values[0] if values else None)
    return None, None


#: Feature holding a record's key (`write_tfrecord` stores `"keys"` there).
TFRECORD_KEY_FEATURE = "key"


def _key_of(features, default: str) -> str:
    _, key = _bytes_feature(features, (TFRECORD_KEY_FEATURE,))
    return default if key is None else key.decode("utf-8", "replace")


def _example_record(source, raw, image_features, text_features, extra_keys):
    def bad(reason):
        return _record(source, error=reason, extra_keys=extra_keys)

    try:
        features = tf.train.Example.FromString(raw).features.feature
    except _ProtoDecodeError:
        return bad("not a serialized tf.train.Example")
    name, data = _bytes_feature(features, image_features)
    if name is None:
        return bad(f"missing image feature (looked for {list(image_features)})")
    if not data:
        return bad(f"image feature {name!r} holds no bytes")
    name, text = _bytes_feature(features, text_features)
    if name is None:
        return bad(f"missing caption feature (looked for {list(text_features)})")
    try:
        text = (text or b"").decode("utf-8")
    except UnicodeDecodeError:
        return bad(f"caption feature {name!r} is not valid UTF-8")
    if not text.strip():
        return bad(f"missing caption (empty {name!r})")
    extras = {}
    for key in extra_keys:
        found, value = _bytes_feature(features, (key,))
        if found is None or value is None:
            return bad(f"missing feature {key!r}")
        extras[key] = value.decode("utf-8", "replace")
    return _record(
        source,
        data=data,
        text=text,
        key=_key_of(features, source),
        extras=extras,
        extra_keys=extra_keys,
    )


def _tfrecord_generator(image_features, text_features, extra_keys, compression_type):
    def generate(file):
        file = _s(file)
        raw_records = iter(
            tf.data.TFRecordDataset(
                file, compression_type=_compression(file, compression_type)
            )
        )
        for index in itertools.count():
            source = f"{file}:record {index}"
            try:
                raw = next(raw_records).numpy()
            except StopIteration:
                return
            except tf.errors.OpError as e:
                # A damaged frame (length, CRC) cannot be skipped over.
                reason = e.message.splitlines()[0] if e.message else type(e).__name__
                yield _record(
                    source,
                    error=f"corrupt TFRecord data ({reason}); the rest of the "
                    "file is unreadable",
                    extra_keys=extra_keys,
                )
                return
            yield _example_record(
                source, raw, image_features, text_features, extra_keys
            )

    return generate


def from_tfrecord(
    paths_or_glob: PathsLike,
    image_feature: str | Sequence[str] = TFRECORD_IMAGE_FEATURES,
    text_feature: str | Sequence[str] = TFRECORD_TEXT_FEATURES,
    on_error: str = "skip",
    extra_keys: Sequence[str] = (),
    return_keys: bool = False,
    compression_type: str | None = None,
    cycle_length: int = 1,
    shuffle_files: bool = False,
    seed: int | None = None,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Image-caption pairs from TFRecord files of `tf.train.Example`s.

    Each example holds the encoded image file (PNG, JPEG, ...) as a bytes
    feature and the caption as a UTF-8 bytes feature. By default the image
    is read from `"image"` or else `"image/encoded"` (the TensorFlow Object
    Detection convention), and the caption from `"caption"`, else
    `"image/caption"`, else `"text"`; the first value of a feature is used.
    `write_tfrecord` writes `"image"` and `"caption"`.

    Args:
        paths_or_glob: str or path-like, a glob, or a list of those.
        image_feature: str or list of str. Image feature name(s), tried in
            order.
        text_feature: str or list of str. Caption feature name(s), tried in
            order.
        on_error: `"skip"` or `"raise"`; see `from_csv`. A damaged TFRecord
            frame makes the rest of that file unreadable: it counts as one
            bad record.
        extra_keys: list of str. Further bytes features to copy as strings.
        return_keys: bool. Add `"keys"`: the `"key"` feature if present
            (`write_tfrecord` keeps a dataset's `"keys"` there), else
            `"<file>:record <index>"`.
        compression_type: `""`, `"GZIP"` or `"ZLIB"`; `None` infers it
            from the file suffix (`.gz` is GZIP).
        cycle_length: int. Files read at once, their records interleaved
            (1 reads them one after another, in order).
        shuffle_files: bool. Shuffle the file order on every pass.
        seed: optional int. Seed of the file shuffle.
        num_parallel_calls: int. Images decoded in parallel.

    Returns:
        An unbatched `tf.data.Dataset` of `{"images": uint8 (H, W, 3),
        "texts": string}`, with `.decode_report` attached.

    Example:

    ```python
    ds = keras_towers.datasets.from_tfrecord("data/train-*.tfrecord", cycle_length=4)
    ```
    """
    _check_on_error(on_error)
    extra_keys = _check_extra_keys(extra_keys)
    image_features = _names(image_feature, "image_feature")
    text_features = _names(text_feature, "text_feature")
    if compression_type not in (None, "", "GZIP", "ZLIB"):
        raise ValueError(
            "`compression_type` must be None, '', 'GZIP' or 'ZLIB'. "
            f"Received: {compression_type!r}."
        )
    generate = _tfrecord_generator(
        image_features, text_features, extra_keys, compression_type
    )
    return _read_files(
        paths_or_glob,
        generate,
        argument="paths_or_glob",
        extra_keys=extra_keys,
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
        cycle_length=cycle_length,
        shuffle_files=shuffle_files,
        seed=seed,
    )


def _bytes_list(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _encode_image(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 95} if image_format == "jpeg" else {}
    Image.fromarray(image).save(buffer, format=image_format.upper(), **options)
    return buffer.getvalue()


def _pairs_from_dataset(dataset: tf.data.Dataset, image_format: str):
    spec = dataset.element_spec
    if (
        not isinstance(spec, dict)
        or IMAGE_KEY not in spec
        or TEXT_KEY not in spec
        or spec[IMAGE_KEY].shape.rank != 3
        or spec[IMAGE_KEY].dtype != tf.uint8
    ):
        raise ValueError(
            "`pairs` must be an unbatched dataset of {'images': uint8 (H, W, 3), "
            "'texts': string} (as the readers return). Received element_spec "
            f"{spec}."
        )
    extras = [
        k
        for k, s in spec.items()
        if k not in (IMAGE_KEY, TEXT_KEY) and s.dtype == tf.string and s.shape.rank == 0
    ]
    for element in dataset.as_numpy_iterator():
        image = _encode_image(element[IMAGE_KEY], image_format)
        yield image, element[TEXT_KEY], {k: element[k] for k in extras}


def _pairs_from_records(records, image_key, text_key, extra_keys, report, on_error):
    generate = _records_generator(records, image_key, text_key, extra_keys, os.getcwd())
    decode = _make_decoder(report, on_error)
    for record in generate():
        _, ok = decode(
            record["source"], record["path"], record["data"], record["error"]
        )
        if not ok:
            continue
        # Keep the original encoding (no re-compression); it decoded fine.
        if record["path"]:
            with open(_s(record["path"]), "rb") as f:
                data = f.read()
        else:
            data = record["data"]
        extras = {k: record[_EXTRA + k] for k in extra_keys}
        yield data, record["text"], extras


def write_tfrecord(
    pairs: tf.data.Dataset | Sequence[Mapping | tuple],
    path: str | os.PathLike,
    image_feature: str = "image",
    text_feature: str = "caption",
    image_format: str = "png",
    on_error: str = "skip",
    extra_keys: Sequence[str] = (),
    overwrite: bool = False,
) -> DecodeReport:
    """Write image-caption pairs to a TFRecord file of `tf.train.Example`s.

    Each example gets the encoded image under `image_feature` and the UTF-8
    caption under `text_feature` (read back by `from_tfrecord`'s defaults).
    Records given as file paths keep their original encoding byte for byte
    (after checking that they decode); decoded images from a dataset are
    encoded as `image_format`. A `.gz` path is written GZIP-compressed. The
    file appears only when complete.

    Args:
        pairs: an unbatched pairs dataset (from any reader; its other
            string keys are written as bytes features of the same name,
            except `"keys"`, written as `"key"`), or
            records as `from_records` takes them.
        path: str or path-like. The TFRecord file to write.
        image_feature: str. Feature name for the encoded image.
        text_feature: str. Feature name for the caption.
        image_format: `"png"` (lossless) or `"jpeg"` (quality 95), for
            images from a dataset.
        on_error: `"skip"` or `"raise"` for bad records (records input).
        extra_keys: list of str. Record keys to write as bytes features
            (records input).
        overwrite: bool. Replace an existing file.

    Returns:
        A `DecodeReport` of the records read; `kept` were written.

    Example:

    ```python
    ds = keras_towers.datasets.from_csv("pairs.csv")
    keras_towers.datasets.write_tfrecord(ds, "pairs.tfrecord")
    ds = keras_towers.datasets.from_tfrecord("pairs.tfrecord")
    ```
    """
    _check_on_error(on_error)
    extra_keys = _check_extra_keys(extra_keys)
    if image_format not in ("png", "jpeg"):
        raise ValueError(
            f"`image_format` must be 'png' or 'jpeg'. Received: {image_format!r}."
        )
    for argument, value in (
        ("image_feature", image_feature),
        ("text_feature", text_feature),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"`{argument}` must be a non-empty string. Received: {value!r}."
            )
    path = os.path.expanduser(os.fsdecode(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass `overwrite=True` to replace it.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"The directory of `path` does not exist: {directory}")

    report = DecodeReport(f"write_tfrecord({path})")
    report._start_pass()
    if isinstance(pairs, tf.data.Dataset):
        items = _pairs_from_dataset(pairs, image_format)
    elif isinstance(pairs, Sequence) and not isinstance(pairs, (str, bytes)):
        items = _pairs_from_records(
            pairs, "image", "caption", extra_keys, report, on_error
        )
    else:
        raise TypeError(
            "`pairs` must be a tf.data.Dataset of pairs or a list of records. "
            f"Received {type(pairs).__name__}."
        )
    from_dataset = isinstance(pairs, tf.data.Dataset)
    options = tf.io.TFRecordOptions(compression_type=_compression(path, None))
    # Not `tempfile.mkstemp`: its owner-only permissions would stick to the
    # renamed file.
    temporary = f"{path}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with tf.io.TFRecordWriter(temporary, options) as writer:
            for data, text, extras in items:
                feature = {
                    image_feature: _bytes_list(data),
                    text_feature: _bytes_list(text),
                }
                for k, v in extras.items():
                    name = TFRECORD_KEY_FEATURE if k == KEYS_KEY else k
                    feature.setdefault(name, _bytes_list(v))
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
                if from_dataset:
                    report._count_ok()
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    report._end_pass()
    return report
