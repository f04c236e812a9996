"""The shared pipeline: records -> decoded pairs, with reporting.

Every reader hands `_pairs_dataset` a generator of records (see `_schema`);
it decodes their images with Pillow in parallel inside `tf.data`, drops and
reports the bad ones, and runs the report's pass hooks at the start and end
of every full pass. `_read_files` is the common tail of the file readers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_towers.datasets.decoding import ImageDecodeError
from keras_towers.datasets.decoding import decode_image
from keras_towers.datasets.decoding import read_image
from keras_towers.datasets.pairs._paths import PathsLike
from keras_towers.datasets.pairs._paths import _describe
from keras_towers.datasets.pairs._paths import _expand_paths
from keras_towers.datasets.pairs._report import DecodeReport
from keras_towers.datasets.pairs._schema import _EXTRA
from keras_towers.datasets.pairs._schema import KEYS_KEY
from keras_towers.datasets.pairs._schema import _b
from keras_towers.datasets.pairs._schema import _s
from keras_towers.datasets.pairs._schema import _signature
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

#: Allowed values of every reader's `on_error`.
ON_ERROR_CHOICES = ("skip", "raise")

_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(
            f"`on_error` must be one of {ON_ERROR_CHOICES}. Received: {on_error!r}."
        )


def _positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{argument}` must be an int >= 1. Received: {value!r}.")
    return int(value)


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


def _read_files(
    paths: PathsLike,
    generate: Callable[..., Iterator[dict]],
    *,
    argument: str = "path",
    check_file: Callable[[str], None] | None = None,
    extra_keys: tuple[str, ...] = (),
    return_keys: bool,
    on_error: str,
    num_parallel_calls: int | None,
    cycle_length: int = 1,
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """The file readers' common tail: expand paths -> check files -> pipeline.

    `check_file(file)` runs on every file before the dataset is built (to
    fail early on a wrong column or key name).
    """
    files = _expand_paths(paths, argument)
    if check_file is not None:
        for file in files:
            check_file(file)
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
