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

from __future__ import annotations

import csv
import functools
import glob
import io
import itertools
import json
import os
import re
import tarfile
import threading
import uuid
import warnings
import zlib
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError as _ProtoDecodeError
from PIL import Image

from keras_towers.datasets.decoding import ImageDecodeError
from keras_towers.datasets.decoding import decode_image
from keras_towers.datasets.decoding import read_image
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

#: Key of the optional per-record identifier (`return_keys=True`).
KEYS_KEY = "keys"
#: Allowed values of every reader's `on_error`.
ON_ERROR_CHOICES = ("skip", "raise")
#: Per pass, at most this many skipped records get their own warning.
MAX_WARNINGS_PER_PASS = 50
#: Per pass, at most this many `(file, reason)` entries are kept.
MAX_ERRORS_KEPT = 10_000
#: `batch_pairs` resize modes.
RESIZE_MODES = ("pad", "crop", "squash")

PathsLike = str | os.PathLike | Sequence[str | os.PathLike]


class SkippedRecordWarning(UserWarning):
    """A record was skipped, or a pass over the data skipped some records."""


class PairsDataError(ValueError):
    """A bad record under `on_error="raise"`; names the file and the reason."""


class SkippedRecord(NamedTuple):
    """One skipped record: the most specific `file` at fault and why."""

    file: str
    reason: str


class DecodeReport:
    """What a pairs dataset read and skipped during one pass over the data.

    Every reader attaches one to the dataset it returns, as
    `dataset.decode_report` (`batch_pairs` carries it over). The counters
    describe the pass in progress, or the last pass when none is running;
    they restart whenever a new iterator starts reading from the beginning
    (every epoch of `fit`). Concurrent iterators over the same dataset share
    one report.

    Attributes:
        name: str. What is being read (a file name or a description).
        seen: int. Records met so far in this pass.
        skipped: int. Records skipped so far in this pass.
        errors: list of `SkippedRecord(file, reason)` for this pass (the
            first `MAX_ERRORS_KEPT`).
        passes: int. Full passes completed.
        in_progress: bool. Whether a pass is being read now.

    Example:

    ```python
    ds = keras_towers.datasets.from_csv("pairs.csv")
    for _ in ds:
        pass
    report = ds.decode_report
    print(report.skipped, report.errors)
    ```
    """

    def __init__(self, name: str):
        self.name = name
        self.seen = 0
        self.skipped = 0
        self.errors: list[SkippedRecord] = []
        self.passes = 0
        self.in_progress = False
        self._warned = 0
        self._lock = threading.Lock()

    @property
    def kept(self) -> int:
        """Records delivered in this pass (`seen - skipped`)."""
        return self.seen - self.skipped

    def summary(self) -> str:
        """One line: how many records of how many were skipped."""
        return f"{self.name}: skipped {self.skipped} of {self.seen} records" + (
            f" in pass {self.passes}" if self.passes else ""
        )

    def __repr__(self):
        return (
            f"DecodeReport(name={self.name!r}, seen={self.seen}, "
            f"skipped={self.skipped}, passes={self.passes})"
        )

    # Called from tf.data threads; every update takes the lock.
    def _start_pass(self):
        with self._lock:
            self.seen = 0
            self.skipped = 0
            self.errors = []
            self._warned = 0
            self.in_progress = True

    def _end_pass(self):
        with self._lock:
            self.passes += 1
            self.in_progress = False
            message = self.summary() if self.skipped else None
        if message:
            warnings.warn(
                f"{message} (see the warnings above; the dataset's "
                "`decode_report.errors` lists them).",
                SkippedRecordWarning,
                stacklevel=2,
            )

    def _count_ok(self):
        with self._lock:
            self.seen += 1

    def _count_skip(self, file: str, reason: str, source: str, on_error: str):
        where = file if file == source else f"{file} ({source})"
        with self._lock:
            self.seen += 1
            if on_error == "raise":
                raise PairsDataError(f"Bad record {where}: {reason}")
            self.skipped += 1
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(SkippedRecord(file, reason))
            self._warned += 1
            warned = self._warned
        if warned <= MAX_WARNINGS_PER_PASS:
            suffix = ""
            if warned == MAX_WARNINGS_PER_PASS:
                suffix = (
                    " (no more warnings per record in this pass; "
                    "see `dataset.decode_report.errors`)"
                )
            warnings.warn(
                f"Skipped {where}: {reason}{suffix}",
                SkippedRecordWarning,
                stacklevel=2,
            )


# === Records: what readers produce before decoding ===
#
# Every reader is a Python generator of flat dicts of byte strings: where the
# record is (`source`), the image as a file `path` or as encoded `data`, the
# caption, a key, extra fields, and `error` (non-empty for a record that is
# already known to be bad, e.g. a malformed line). One decoding stage then
# reads, decodes, counts and reports, whatever the source.

_EXTRA = "extra/"
_FIELDS = ("source", "path", "data", "text", "key", "error")


def _b(text: str) -> bytes:
    # File names may hold undecodable bytes (surrogate escapes); keep them.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates, e.g. from JSON "\ud800"
        return text.encode("utf-8", "replace")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _record(
    source: str,
    *,
    path: str = "",
    data: bytes = b"",
    text: str = "",
    key: str = "",
    error: str = "",
    extras: Mapping[str, str] | None = None,
    extra_keys: Sequence[str] = (),
) -> dict:
    record = {
        "source": _b(source),
        "path": _b(path),
        "data": bytes(data),
        "text": text.encode("utf-8"),
        "key": _b(key),
        "error": error.encode("utf-8"),
    }
    extras = extras or {}
    for name in extra_keys:
        record[_EXTRA + name] = extras.get(name, "").encode("utf-8", "replace")
    return record


def _signature(extra_keys: Sequence[str]) -> dict:
    names = list(_FIELDS) + [_EXTRA + k for k in extra_keys]
    return {n: tf.TensorSpec((), tf.string) for n in names}


def _extra_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _record_from_fields(
    source: str,
    fields: Mapping,
    *,
    image_key: str,
    text_key: str,
    extra_keys: Sequence[str],
    root: str,
) -> dict:
    """A record from one row / object, or an error record saying what is wrong."""

    def bad(reason):
        return _record(source, error=reason, extra_keys=extra_keys)

    image = fields.get(image_key)
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    path, data, key = "", b"", source
    if isinstance(image, (bytes, bytearray)):
        if not image:
            return bad(f"missing image (empty {image_key!r} bytes)")
        data = bytes(image)
    elif isinstance(image, str):
        if not image.strip():
            return bad(f"missing image (empty {image_key!r})")
        path = key = os.path.join(root, image)
    elif image is None:
        return bad(f"missing image (no {image_key!r} value)")
    else:
        return bad(
            f"{image_key!r} must be an image path (or encoded bytes); "
            f"got {type(image).__name__}"
        )
    text = fields.get(text_key)
    if text is None:
        return bad(f"missing caption (no {text_key!r} value)")
    if not isinstance(text, str):
        return bad(f"caption {text_key!r} must be a string; got {type(text).__name__}")
    if not text.strip():
        return bad(f"missing caption (empty {text_key!r})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return bad(f"caption {text_key!r} is not valid Unicode (lone surrogate)")
    extras = {}
    for name in extra_keys:
        if fields.get(name) is None:
            return bad(f"missing field {name!r}")
        extras[name] = _extra_value(fields[name])
    return _record(
        source,
        path=path,
        data=data,
        text=text,
        key=key,
        extras=extras,
        extra_keys=extra_keys,
    )


# === The shared pipeline: records -> decoded pairs, with reporting ===

_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(
            f"`on_error` must be one of {ON_ERROR_CHOICES}. Received: {on_error!r}."
        )


def _check_extra_keys(extra_keys) -> tuple[str, ...]:
    if isinstance(extra_keys, str):
        extra_keys = (extra_keys,)
    extra_keys = tuple(extra_keys)
    reserved = (IMAGE_KEY, TEXT_KEY, KEYS_KEY)
    for name in extra_keys:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"`extra_keys` must be non-empty strings. Received: {extra_keys!r}."
            )
        if name in reserved:
            raise ValueError(
                f"`extra_keys` may not contain the output keys {reserved}. "
                f"Received: {extra_keys!r}."
            )
    if len(set(extra_keys)) != len(extra_keys):
        raise ValueError(f"`extra_keys` has duplicates: {extra_keys!r}.")
    return extra_keys


def _make_decoder(report: DecodeReport, on_error: str):
    def decode(source, path, data, error):
        source = _s(source)
        if error:
            file, reason = source, error.decode("utf-8", "replace")
        else:
            try:
                if path:
                    image = read_image(_s(path))
                else:
                    image = decode_image(data, source)
            except ImageDecodeError as e:
                file, reason = e.file, e.reason
            else:
                report._count_ok()
                return image, np.bool_(True)
        report._count_skip(file, reason, source, on_error)
        return _NO_IMAGE, np.bool_(False)

    return decode


def _hook_dataset(hook: Callable[[], None], element: dict) -> tf.data.Dataset:
    """A dataset that runs `hook` when iterated and yields nothing."""

    def run():
        hook()
        return np.bool_(False)

    ds = tf.data.Dataset.range(1).map(
        lambda _: tf.numpy_function(run, [], tf.bool, stateful=True)
    )
    ds = ds.filter(lambda keep: keep)
    return ds.map(lambda _: element)


def _records_of_file(generate, signature, file) -> tf.data.Dataset:
    return tf.data.Dataset.from_generator(
        generate, args=(file,), output_signature=signature
    )


def _is_decoded(pair, ok):
    return ok


def _without_flag(pair, ok):
    return pair


def _pairs_dataset(
    name: str,
    generate: Callable[..., Iterator[dict]],
    *,
    files: Sequence[str] | None,
    extra_keys: tuple[str, ...],
    return_keys: bool,
    on_error: str,
    num_parallel_calls: int | None,
    cycle_length: int = 1,
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    signature = _signature(extra_keys)
    if files is None:
        records = tf.data.Dataset.from_generator(generate, output_signature=signature)
    else:
        file_ds = tf.data.Dataset.from_tensor_slices([_b(f) for f in files])
        if shuffle_files and len(files) > 1:
            file_ds = file_ds.shuffle(
                len(files), seed=seed, reshuffle_each_iteration=True
            )
        cycle_length = max(1, min(int(cycle_length), len(files)))
        parallel = {}
        if cycle_length > 1:
            # Shards are read in parallel only when interleaved.
            parallel = {"num_parallel_calls": cycle_length, "deterministic": True}
        records = file_ds.interleave(
            functools.partial(_records_of_file, generate, signature),
            cycle_length=cycle_length,
            block_length=1,
            **parallel,
        )

    report = DecodeReport(name)
    decode = _make_decoder(report, on_error)

    def decode_record(record):
        image, ok = tf.numpy_function(
            decode,
            [record["source"], record["path"], record["data"], record["error"]],
            [tf.uint8, tf.bool],
            stateful=True,
        )
        image.set_shape([None, None, 3])
        ok.set_shape([])
        out = {IMAGE_KEY: image, TEXT_KEY: record["text"]}
        if return_keys:
            out[KEYS_KEY] = record["key"]
        for k in extra_keys:
            out[k] = record[_EXTRA + k]
        return out, ok

    pairs = records.map(decode_record, num_parallel_calls=num_parallel_calls)
    pairs = pairs.filter(_is_decoded).map(_without_flag)

    # Concatenation creates each input's iterator only when the previous one
    # is exhausted, so the hooks run before the first record is read and
    # after the last one is decoded: once per full pass.
    empty = {IMAGE_KEY: tf.zeros([0, 0, 3], tf.uint8), TEXT_KEY: tf.constant("")}
    if return_keys:
        empty[KEYS_KEY] = tf.constant("")
    for k in extra_keys:
        empty[k] = tf.constant("")
    ds = (
        _hook_dataset(report._start_pass, empty)
        .concatenate(pairs)
        .concatenate(_hook_dataset(report._end_pass, empty))
    )
    ds.decode_report = report
    return ds


# === Paths ===

_GLOB_CHARS = frozenset("*?[")


def _expand_paths(paths: PathsLike, argument: str = "path") -> list[str]:
    """Files named by a path, a glob, or a list of those; all must exist."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif not isinstance(paths, Sequence):
        raise TypeError(
            f"`{argument}` must be a path, a glob or a list of paths. "
            f"Received {type(paths).__name__}."
        )
    files = []
    for p in paths:
        p = os.path.expanduser(os.fsdecode(p))
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            raise IsADirectoryError(
                f"`{argument}` names a directory: {p}. Pass a glob such as "
                f"{os.path.join(p, '*.tar')!r}, or use `load_pairs({p!r})`."
            )
        elif _GLOB_CHARS & set(p):
            matches = sorted(m for m in glob.glob(p) if os.path.isfile(m))
            if not matches:
                raise FileNotFoundError(f"No files match the glob {p!r}.")
            files.extend(matches)
        else:
            raise FileNotFoundError(f"`{argument}` file not found: {p}")
    if not files:
        raise ValueError(f"`{argument}` names no files. Received: {paths!r}.")
    return files


def _describe(files: Sequence[str]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"


def _root_for(file: str, image_root) -> str:
    if image_root is not None:
        return os.path.expanduser(os.fsdecode(image_root))
    return os.path.dirname(os.path.abspath(file))


# === CSV ===


def _utf8_lines(f, bad_lines: set) -> Iterator[str]:
    """Decode a binary file line by line, noting lines that are not UTF-8."""
    for number, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            line = raw.decode("utf-8", "replace")
        if number == 1:
            line = line.removeprefix("\ufeff")  # byte-order mark
        yield line


def _csv_header(file: str, delimiter: str) -> list[str]:
    with open(file, "rb") as f:
        reader = csv.reader(_utf8_lines(f, set()), delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise ValueError(f"{file}: malformed CSV header ({e}).") from None
    if not header:
        raise ValueError(f"{file}: the CSV file is empty; expected a header row.")
    return [h.strip() for h in header]


def _csv_generator(image_key, text_key, extra_keys, delimiter, image_root):
    def generate(file):
        file = _s(file)
        root = _root_for(file, image_root)
        bad_lines: set[int] = set()
        with open(file, "rb") as f:
            reader = csv.reader(
                _utf8_lines(f, bad_lines), delimiter=delimiter, strict=True
            )
            header = [h.strip() for h in next(reader)]
            previous = reader.line_num
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    # The reader resumes at the next line after an error.
                    yield _record(
                        f"{file}:{reader.line_num}",
                        error=f"malformed CSV line ({e})",
                        extra_keys=extra_keys,
                    )
                    previous = reader.line_num
                    continue
                first, previous = previous + 1, reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                source = f"{file}:{first}"
                if bad_lines.intersection(range(first, previous + 1)):
                    reason = "line is not valid UTF-8"
                elif len(row) != len(header):
                    reason = (
                        f"malformed CSV line (expected {len(header)} fields, "
                        f"found {len(row)})"
                    )
                else:
                    yield _record_from_fields(
                        source,
                        dict(zip(header, row, strict=True)),
                        image_key=image_key,
                        text_key=text_key,
                        extra_keys=extra_keys,
                        root=root,
                    )
                    continue
                yield _record(source, error=reason, extra_keys=extra_keys)

    return generate


def from_csv(
    path: PathsLike,
    image_key: str = "image",
    text_key: str = "caption",
    image_root: str | os.PathLike | None = None,
    delimiter: str = ",",
    on_error: str = "skip",
    extra_keys: Sequence[str] = (),
    return_keys: bool = False,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Image-caption pairs from a CSV file with a header row.

    Each row names an image file and its caption. Relative image paths are
    resolved against `image_root`, or else the CSV file's directory. The
    file is UTF-8 (a byte-order mark is fine); fields may be quoted.

    Args:
        path: str or path-like, a glob, or a list of those. CSV file(s),
            read one after another.
        image_key: str. Column with the image paths.
        text_key: str. Column with the captions.
        image_root: optional str. Directory relative image paths start from.
        delimiter: str. Field separator (`"\\t"` for TSV).
        on_error: `"skip"` (warn, count in `dataset.decode_report`, go on)
            or `"raise"` for bad records; see the module docstring.
        extra_keys: list of str. Further columns to copy into each element,
            as strings under their own names.
        return_keys: bool. Add `"keys"`: the resolved image path.
        num_parallel_calls: int. Images decoded in parallel.

    Returns:
        An unbatched `tf.data.Dataset` of `{"images": uint8 (H, W, 3),
        "texts": string}` in file order, with `.decode_report` attached.

    Example:

    ```python
    # pairs.csv:
    #   image,caption
    #   images/cat.jpg,a cat on a sofa
    ds = keras_towers.datasets.from_csv("pairs.csv")
    ds = keras_towers.datasets.batch_pairs(ds, batch_size=32, image_size=64)
    ```
    """
    _check_on_error(on_error)
    extra_keys = _check_extra_keys(extra_keys)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(
            f"`delimiter` must be a single character. Received: {delimiter!r}."
        )
    files = _expand_paths(path)
    for file in files:
        header = _csv_header(file, delimiter)
        missing = [k for k in (image_key, text_key, *extra_keys) if k not in header]
        if missing:
            raise ValueError(
                f"{file}: the CSV header has no column {missing[0]!r} "
                f"(columns: {header}). Pass `image_key=` / `text_key=` / "
                "`extra_keys=` naming its columns."
            )
    generate = _csv_generator(image_key, text_key, extra_keys, delimiter, image_root)
    return _pairs_dataset(
        _describe(files),
        generate,
        files=files,
        extra_keys=extra_keys,
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
    )


# === JSON Lines ===

# How many leading objects `from_jsonl` inspects to catch a wrong key name.
_JSONL_PEEK = 20


def _jsonl_objects(file: str) -> Iterator[tuple[int, object, str]]:
    """(line number, parsed object or None, error) for each non-blank line."""
    with open(file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
            except UnicodeDecodeError:
                yield number, None, "line is not valid UTF-8"
                continue
            except (ValueError, RecursionError) as e:
                yield number, None, f"malformed JSON ({e})"
                continue
            if not isinstance(obj, dict):
                yield (
                    number,
                    None,
                    f"expected a JSON object, found {type(obj).__name__}",
                )
                continue
            yield number, obj, ""


def _jsonl_generator(image_key, text_key, extra_keys, image_root):
    def generate(file):
        file = _s(file)
        root = _root_for(file, image_root)
        for number, obj, error in _jsonl_objects(file):
            source = f"{file}:{number}"
            if error:
                yield _record(source, error=error, extra_keys=extra_keys)
            else:
                yield _record_from_fields(
                    source,
                    obj,
                    image_key=image_key,
                    text_key=text_key,
                    extra_keys=extra_keys,
                    root=root,
                )

    return generate


def from_jsonl(
    path: PathsLike,
    image_key: str = "image",
    text_key: str = "caption",
    image_root: str | os.PathLike | None = None,
    on_error: str = "skip",
    extra_keys: Sequence[str] = (),
    return_keys: bool = False,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Image-caption pairs from a JSON Lines file (one object per line).

    Each line is an object such as `{"image": "cats/1.jpg", "caption":
    "a cat"}`; blank lines are ignored. Relative image paths are resolved
    against `image_root`, or else the file's directory. Lines that are not
    JSON objects, or lack the image or caption, are bad records. If none of
    the first 20 objects has `image_key` (or `text_key`), the key names are
    taken to be wrong and a `ValueError` is raised at once.

    Args:
        path: str or path-like, a glob, or a list of those. JSONL file(s),
            read one after another.
        image_key: str. Field with the image path.
        text_key: str. Field with the caption (a string).
        image_root: optional str. Directory relative image paths start from.
        on_error: `"skip"` or `"raise"`; see `from_csv`.
        extra_keys: list of str. Further fields to copy into each element as
            strings (non-string values as JSON text).
        return_keys: bool. Add `"keys"`: the resolved image path.
        num_parallel_calls: int. Images decoded in parallel.

    Returns:
        An unbatched `tf.data.Dataset` of `{"images": uint8 (H, W, 3),
        "texts": string}` in file order, with `.decode_report` attached.

    Example:

    ```python
    ds = keras_towers.datasets.from_jsonl("manifest.jsonl", extra_keys=["source"])
    ```
    """
    _check_on_error(on_error)
    extra_keys = _check_extra_keys(extra_keys)
    files = _expand_paths(path)
    for file in files:
        objects = [
            obj
            for _, obj, _ in itertools.islice(_jsonl_objects(file), _JSONL_PEEK)
            if obj is not None
        ]
        for key in (image_key, text_key):
            if objects and not any(key in obj for obj in objects):
                raise ValueError(
                    f"{file}: no object among the first {len(objects)} has the "
                    f"key {key!r} (keys of the first: {sorted(objects[0])}). "
                    "Pass `image_key=` / `text_key=` naming its fields."
                )
    generate = _jsonl_generator(image_key, text_key, extra_keys, image_root)
    return _pairs_dataset(
        _describe(files),
        generate,
        files=files,
        extra_keys=extra_keys,
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
    )


# === In-memory records ===


def _records_generator(records, image_key, text_key, extra_keys, root):
    def generate():
        for index, item in enumerate(records):
            source = f"records[{index}]"
            if isinstance(item, Mapping):
                fields = item
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                fields = {image_key: item[0], text_key: item[1]}
            else:
                yield _record(
                    source,
                    error=(
                        "expected a dict or an (image, caption) pair; got "
                        f"{type(item).__name__}"
                    ),
                    extra_keys=extra_keys,
                )
                continue
            yield _record_from_fields(
                source,
                fields,
                image_key=image_key,
                text_key=text_key,
                extra_keys=extra_keys,
                root=root,
            )

    return generate


def from_records(
    records: Sequence[Mapping | tuple],
    image_key: str = "image",
    text_key: str = "caption",
    image_root: str | os.PathLike | None = None,
    on_error: str = "skip",
    extra_keys: Sequence[str] = (),
    return_keys: bool = False,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Image-caption pairs from a list of dicts or `(image, caption)` tuples.

    An image is a file path (relative paths start from `image_root`, or else
    the working directory at the time of this call) or the encoded bytes of
    an image file.

    Args:
        records: list of dicts with `image_key` and `text_key`, or of
            `(image, caption)` tuples. The list is read on every pass, so
            it must not change while the dataset is in use.
        image_key: str. Dict key of the image.
        text_key: str. Dict key of the caption.
        image_root: optional str. Directory relative image paths start from.
        on_error: `"skip"` or `"raise"`; see `from_csv`.
        extra_keys: list of str. Further dict keys to copy, as strings.
        return_keys: bool. Add `"keys"`: the resolved image path, or
            `"records[i]"` for images given as bytes.
        num_parallel_calls: int. Images decoded in parallel.

    Returns:
        An unbatched `tf.data.Dataset` of `{"images": uint8 (H, W, 3),
        "texts": string}` in list order, with `.decode_report` attached.

    Example:

    ```python
    ds = keras_towers.datasets.from_records(
        [("cat.jpg", "a cat"), ("dog.png", "a dog")], image_root="photos"
    )
    ```
    """
    _check_on_error(on_error)
    extra_keys = _check_extra_keys(extra_keys)
    if isinstance(records, (str, bytes, os.PathLike)) or not isinstance(
        records, Sequence
    ):
        raise TypeError(
            "`records` must be a list of dicts or (image, caption) tuples. "
            f"Received {type(records).__name__}; for files use `load_pairs`."
        )
    root = (
        os.getcwd()
        if image_root is None
        else os.path.expanduser(os.fsdecode(image_root))
    )
    generate = _records_generator(records, image_key, text_key, extra_keys, root)
    return _pairs_dataset(
        f"records ({len(records)})",
        generate,
        files=None,
        extra_keys=extra_keys,
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
    )


# === TFRecord ===

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
    files = _expand_paths(paths_or_glob, "paths_or_glob")
    generate = _tfrecord_generator(
        image_features, text_features, extra_keys, compression_type
    )
    return _pairs_dataset(
        _describe(files),
        generate,
        files=files,
        extra_keys=extra_keys,
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
        cycle_length=_positive_int(cycle_length, "cycle_length"),
        shuffle_files=shuffle_files,
        seed=seed,
    )


def _positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{argument}` must be an int >= 1. Received: {value!r}.")
    return int(value)


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


# === WebDataset tar shards ===


def _split_member(name: str) -> tuple[str, str] | None:
    """`dir/key.ext.ext2` -> (`dir/key`, `ext.ext2`), as WebDataset groups."""
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not dot or not stem or not extension:
        return None
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _json_caption(data: bytes) -> tuple[str | None, str]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"malformed .json member ({e})"
    if not isinstance(obj, dict):
        return None, ".json member is not an object"
    for field in WEBDATASET_JSON_FIELDS:
        if isinstance(obj.get(field), str):
            return obj[field], ""
    return (
        None,
        f"missing caption (no .txt member; .json has no {WEBDATASET_JSON_FIELDS})",
    )


#: Fields of a `key.json` member read as the caption when a sample has no
#: text member, in order.
WEBDATASET_JSON_FIELDS = ("caption", "text")


def _tar_sample(shard, key, members, image_extensions, text_extensions):
    image_ext = next((e for e in image_extensions if e in members), None)
    if image_ext is None:
        looked = ", ".join("." + e for e in image_extensions)
        return _record(f"{shard}:{key}", error=f"no image member ({looked})")
    source = f"{shard}:{key}.{image_ext}"
    text_ext = next((e for e in text_extensions if e in members), None)
    if text_ext is not None:
        try:
            text, reason = members[text_ext].decode("utf-8").strip(), ""
        except UnicodeDecodeError:
            text, reason = None, f"{key}.{text_ext} is not valid UTF-8"
    elif "json" in members:
        text, reason = _json_caption(members["json"])
    else:
        text, reason = None, "missing caption (no text or .json member)"
    if text is not None and not text.strip():
        text, reason = None, "missing caption (empty)"
    if text is None:
        return _record(source, error=reason)
    return _record(source, data=members[image_ext], text=text, key=key)


def _check_tar_end(tar: tarfile.TarFile) -> str:
    """Why the archive stopped early, or "" if it ended properly.

    In stream mode `tarfile` treats a damaged or cut header after the first
    member as the end of the archive; tell the two apart by what is left.
    """
    header_bytes = tar.fileobj.tell() - tar.offset
    if 0 < header_bytes < tarfile.BLOCKSIZE:
        return f"truncated tar header at byte {tar.offset}"
    while chunk := tar.fileobj.read(1 << 16):
        if chunk.strip(b"\0"):
            return f"invalid tar header at byte {tar.offset}"
    return ""


def _webdataset_generator(image_extensions, text_extensions):
    wanted = set(image_extensions) | set(text_extensions) | {"json"}

    def generate(file):
        shard = _s(file)
        key, members, complete = None, {}, False
        try:
            with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    split = _split_member(member.name) if member.isfile() else None
                    if split is None:
                        continue
                    member_key, extension = split
                    if member_key != key:
                        if key is not None:
                            yield _tar_sample(
                                shard, key, members, image_extensions, text_extensions
                            )
                        key, members = member_key, {}
                    if extension in wanted and extension not in members:
                        members[extension] = tar.extractfile(member).read()
                # Every member seen was read whole, so the last sample is too.
                complete = True
                problem = _check_tar_end(tar)
                if problem and key is not None:
                    problem += f" after sample {key!r}"
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            problem = f"corrupt tar archive ({e})"
            if key is not None:
                problem += f" while reading sample {key!r}"
        if complete and key is not None:
            yield _tar_sample(shard, key, members, image_extensions, text_extensions)
        if problem:
            yield _record(
                shard, error=f"{problem}; the rest of the shard is unreadable"
            )

    return generate


def _extensions(value, argument: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n.lstrip(".") for n in names):
        raise ValueError(
            f"`{argument}` must be a list of file extensions such as ('jpg', "
            f"'png'). Received: {value!r}."
        )
    return tuple(n.lower().lstrip(".") for n in names)


def from_webdataset(
    paths_or_glob: PathsLike,
    image_extensions: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
    text_extensions: Sequence[str] = ("txt",),
    on_error: str = "skip",
    return_keys: bool = False,
    cycle_length: int = 1,
    shuffle_files: bool = False,
    seed: int | None = None,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Image-caption pairs from WebDataset-style `.tar` shards.

    A shard holds samples as consecutive members sharing a key:
    `0001.jpg` + `0001.txt`, `0002.png` + `0002.json`, ... (the key is the
    member path up to the first dot of its file name; extensions are matched
    case-insensitively). The image is the first of `image_extensions`
    present; the caption is the first of `text_extensions` present (UTF-8,
    surrounding whitespace stripped), else the `"caption"` (or else
    `"text"`) string field of a `key.json` member. Shards are streamed with
    `tarfile` member by member, never loaded whole; `.tar.gz` works too.
    A damaged archive counts as one bad record and ends that shard.

    Args:
        paths_or_glob: str or path-like, a glob, or a list of those.
        image_extensions: list of str. Image member extensions, by priority.
        text_extensions: list of str. Caption member extensions, by priority.
        on_error: `"skip"` or `"raise"`; see `from_csv`.
        return_keys: bool. Add `"keys"`: the sample key (WebDataset's
            `__key__`).
        cycle_length: int. Shards read at once, their samples interleaved
            (1 reads them one after another, in order).
        shuffle_files: bool. Shuffle the shard order on every pass.
        seed: optional int. Seed of the shard shuffle.
        num_parallel_calls: int. Images decoded in parallel.

    Returns:
        An unbatched `tf.data.Dataset` of `{"images": uint8 (H, W, 3),
        "texts": string}`, with `.decode_report` attached.

    Example:

    ```python
    ds = keras_towers.datasets.from_webdataset(
        "shards/*.tar", cycle_length=4, shuffle_files=True, seed=0
    )
    ```
    """
    _check_on_error(on_error)
    image_extensions = _extensions(image_extensions, "image_extensions")
    text_extensions = _extensions(text_extensions, "text_extensions")
    files = _expand_paths(paths_or_glob, "paths_or_glob")
    return _pairs_dataset(
        _describe(files),
        _webdataset_generator(image_extensions, text_extensions),
        files=files,
        extra_keys=(),
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
        cycle_length=_positive_int(cycle_length, "cycle_length"),
        shuffle_files=shuffle_files,
        seed=seed,
    )


# === load_pairs: dispatch on the file suffix ===

_READERS: dict[str, Callable[..., tf.data.Dataset]] = {}


def register_reader(suffix: str, reader: Callable[..., tf.data.Dataset]) -> None:
    """Make `load_pairs` read files ending in `suffix` with `reader`.

    Args:
        suffix: str. File name ending, with its dot (`".parquet"`);
            case-insensitive. The longest registered suffix wins.
        reader: callable taking a path (or list of paths) and keyword
            arguments, returning a pairs dataset.

    Example:

    ```python
    keras_towers.datasets.register_reader(
        ".psv", functools.partial(keras_towers.datasets.from_csv, delimiter="|")
    )
    ```
    """
    if not isinstance(suffix, str) or not suffix.startswith(".") or len(suffix) < 2:
        raise ValueError(f"`suffix` must look like '.csv'. Received: {suffix!r}.")
    if not callable(reader):
        raise TypeError(f"`reader` must be callable. Received: {reader!r}.")
    _READERS[suffix.lower()] = reader


for _suffix, _reader in {
    ".csv": from_csv,
    ".tsv": functools.partial(from_csv, delimiter="\t"),
    ".jsonl": from_jsonl,
    ".ndjson": from_jsonl,
    ".tfrecord": from_tfrecord,
    ".tfrecords": from_tfrecord,
    ".tfrecord.gz": from_tfrecord,
    ".tar": from_webdataset,
    ".tar.gz": from_webdataset,
    ".tgz": from_webdataset,
}.items():
    register_reader(_suffix, _reader)


# TFDS-style shard names put the shard number after the suffix:
# "train.tfrecord-00000-of-00008".
_SHARD_NUMBER = re.compile(r"-\d+-of-\d+$")


def _suffix_of(file: str) -> str | None:
    name = _SHARD_NUMBER.sub("", os.path.basename(file).lower())
    matches = [s for s in _READERS if name.endswith(s)]
    return max(matches, key=len) if matches else None


def load_pairs(source: PathsLike, **kwargs) -> tf.data.Dataset:
    """Image-caption pairs from a file, glob, list or directory, by suffix.

    `.csv` / `.tsv` -> `from_csv`, `.jsonl` / `.ndjson` -> `from_jsonl`,
    `.tfrecord(s)` -> `from_tfrecord`, `.tar` / `.tar.gz` / `.tgz` ->
    `from_webdataset`; more with `register_reader`. A directory means its
    files (not subdirectories) with a known suffix, e.g. a folder of shards.
    All files must be of one kind. A TFDS-style shard number after the
    suffix (`train.tfrecord-00000-of-00008`) is allowed.

    Args:
        source: str or path-like: a file, a glob or a directory; or a list of
            files.
        **kwargs: passed to the reader.

    Returns:
        The reader's unbatched pairs dataset, with `.decode_report`.

    Example:

    ```python
    ds = keras_towers.datasets.load_pairs("shards/")  # 000.tar, 001.tar, ...
    ```
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.path.expanduser(os.fsdecode(source))
        if os.path.isdir(name):
            entries = sorted(os.listdir(name))
            files = [
                os.path.join(name, e)
                for e in entries
                if os.path.isfile(os.path.join(name, e)) and _suffix_of(e)
            ]
            if not files:
                raise ValueError(
                    f"{name} holds no files with a known suffix ({sorted(_READERS)})."
                )
        else:
            files = _expand_paths(name, "source")
    else:
        files = _expand_paths(source, "source")
    kinds = {}
    for file in files:
        suffix = _suffix_of(file)
        if suffix is None:
            raise ValueError(
                f"Cannot tell how to read {file}: its suffix is not one of "
                f"{sorted(_READERS)}. Call a reader such as `from_csv` directly, "
                "or `register_reader` the suffix."
            )
        kinds.setdefault(_READERS[suffix], []).append(file)
    if len(kinds) > 1:
        suffixes = sorted({_suffix_of(f) for f in files})
        raise ValueError(
            f"`source` mixes files of different kinds ({suffixes}); load each "
            "kind separately (e.g. with a glob) and combine the datasets."
        )
    ((reader, group),) = kinds.items()
    return reader(group if len(group) > 1 else group[0], **kwargs)


# === Resizing and batching ===


def _resize(image, height, width):
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [height, width], method="bilinear", antialias=True
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def resize_image(image, image_size: int, resize: str = "pad"):
    """Resize one uint8 `(H, W, 3)` image to `(S, S, 3)` uint8 in TensorFlow.

    Resampling is bilinear with antialiasing (a triangle filter when
    shrinking), rounded to integers.

    Args:
        image: uint8 tensor `(H, W, 3)`.
        image_size: int. The side `S` of the output.
        resize: `"pad"` keeps the aspect ratio (longest side to `S`) and
            centres the image on white; `"crop"` scales the shortest side to
            `S` and crops the centre; `"squash"` resizes to `S x S` and
            distorts the aspect ratio.

    Returns:
        uint8 tensor `(S, S, 3)`.

    Example:

    ```python
    square = keras_towers.datasets.resize_image(image, 64, resize="crop")
    ```
    """
    if resize not in RESIZE_MODES:
        raise ValueError(
            f"`resize` must be one of {RESIZE_MODES}. Received: {resize!r}."
        )
    size = _positive_int(image_size, "image_size")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8 or image.shape.rank != 3:
        raise ValueError(
            "`image` must be uint8 (H, W, 3). Received dtype "
            f"{image.dtype.name} and shape {image.shape}."
        )
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    if resize == "squash":
        out = _resize(image, size, size)
    elif resize == "crop":
        scale = size / tf.minimum(height, width)
        h = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
        w = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
        out = _resize(image, h, w)
        top, left = (h - size) // 2, (w - size) // 2
        out = out[top : top + size, left : left + size]
    else:
        scale = size / tf.maximum(height, width)
        h = tf.clip_by_value(tf.cast(tf.round(height * scale), tf.int32), 1, size)
        w = tf.clip_by_value(tf.cast(tf.round(width * scale), tf.int32), 1, size)
        out = _resize(image, h, w)
        top, left = (size - h) // 2, (size - w) // 2
        out = tf.pad(
            out,
            [[top, size - h - top], [left, size - w - left], [0, 0]],
            constant_values=255,
        )
    return tf.ensure_shape(out, [size, size, 3])


def batch_pairs(
    dataset: tf.data.Dataset,
    batch_size: int,
    image_size: int,
    resize: str = "pad",
    shuffle_buffer: int = 0,
    seed: int | None = None,
    drop_remainder: bool = False,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Resize, optionally shuffle, and batch an unbatched pairs dataset.

    The result feeds `keras_towers.CLIP.fit` (and every `ContrastiveModel`)
    directly: the model maps its preprocessor over these raw batches.

    Args:
        dataset: unbatched `{"images": uint8 (H, W, 3), "texts": string}`
            dataset (any reader's output); other keys are kept.
        batch_size: int. Pairs per batch.
        image_size: int. Side `S` of the square uint8 images.
        resize: `"pad"`, `"crop"` or `"squash"`; see `resize_image`.
        shuffle_buffer: int. Shuffle buffer size (of resized pairs); 0 keeps
            the order.
        seed: optional int. Shuffle seed (reshuffled every pass).
        drop_remainder: bool. Drop a last, smaller batch.
        num_parallel_calls: int. Images resized in parallel.

    Returns:
        A `tf.data.Dataset` of `{"images": uint8 (B, S, S, 3), "texts":
        string (B,)}`, carrying the input's `decode_report`.

    Example:

    ```python
    ds = keras_towers.datasets.load_pairs("pairs.csv")
    ds = keras_towers.datasets.batch_pairs(ds, 32, 64, shuffle_buffer=1000, seed=0)
    model = keras_towers.CLIP.tiny(image_size=64)
    model.compile()
    model.fit(ds, epochs=1)
    ```
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            f"`dataset` must be a tf.data.Dataset. Received {type(dataset).__name__}."
        )
    spec = dataset.element_spec
    if (
        not isinstance(spec, dict)
        or IMAGE_KEY not in spec
        or TEXT_KEY not in spec
        or spec[IMAGE_KEY].dtype != tf.uint8
        or spec[IMAGE_KEY].shape.rank != 3
    ):
        raise ValueError(
            "`dataset` must yield unbatched {'images': uint8 (H, W, 3), "
            "'texts': string} pairs. Received element_spec " + f"{spec}."
        )
    batch_size = _positive_int(batch_size, "batch_size")
    size = _positive_int(image_size, "image_size")
    if resize not in RESIZE_MODES:
        raise ValueError(
            f"`resize` must be one of {RESIZE_MODES}. Received: {resize!r}."
        )
    if (
        isinstance(shuffle_buffer, bool)
        or not isinstance(shuffle_buffer, int)
        or shuffle_buffer < 0
    ):
        raise ValueError(
            f"`shuffle_buffer` must be an int >= 0. Received: {shuffle_buffer!r}."
        )

    def resize_pair(element):
        element = dict(element)
        element[IMAGE_KEY] = resize_image(element[IMAGE_KEY], size, resize)
        return element

    ds = dataset.map(resize_pair, num_parallel_calls=num_parallel_calls)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    report = getattr(dataset, "decode_report", None)
    if report is not None:
        ds.decode_report = report
    return ds
