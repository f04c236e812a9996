"""Readers of CSV, JSON Lines and in-memory lists of image-caption pairs."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import os
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence

import tensorflow as tf

from keras_towers.datasets.pairs._paths import PathsLike
from keras_towers.datasets.pairs._paths import _root_for
from keras_towers.datasets.pairs._pipeline import _check_on_error
from keras_towers.datasets.pairs._pipeline import _pairs_dataset
from keras_towers.datasets.pairs._pipeline import _read_files
from keras_towers.datasets.pairs._schema import _check_extra_keys
from keras_towers.datasets.pairs._schema import _record
from keras_towers.datasets.pairs._schema import _record_from_fields
from keras_towers.datasets.pairs._schema import _s

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


def _check_csv_columns(file: str, delimiter: str, keys: Sequence[str]) -> None:
    header = _csv_header(file, delimiter)
    missing = [k for k in keys if k not in header]
    if missing:
        raise ValueError(
            f"{file}: the CSV header has no column {missing[0]!r} "
            f"(columns: {header}). Pass `image_key=` / `text_key=` / "
            "`extra_keys=` naming its columns."
        )


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
    generate = _csv_generator(image_key, text_key, extra_keys, delimiter, image_root)
    return _read_files(
        path,
        generate,
        check_file=functools.partial(
            _check_csv_columns,
            delimiter=delimiter,
            keys=(image_key, text_key, *extra_keys),
        ),
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


def _check_jsonl_keys(file: str, keys: Sequence[str]) -> None:
    """Fail at once if none of the first objects has one of `keys`."""
    objects = [
        obj
        for _, obj, _ in itertools.islice(_jsonl_objects(file), _JSONL_PEEK)
        if obj is not None
    ]
    for key in keys:
        if objects and not any(key in obj for obj in objects):
            raise ValueError(
                f"{file}: no object among the first {len(objects)} has the "
                f"key {key!r} (keys of the first: {sorted(objects[0])}). "
                "Pass `image_key=` / `text_key=` naming its fields."
            )


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
    generate = _jsonl_generator(image_key, text_key, extra_keys, image_root)
    return _read_files(
        path,
        generate,
        check_file=functools.partial(_check_jsonl_keys, keys=(image_key, text_key)),
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
