"""`load_pairs`: pick the reader by file suffix; `register_reader` adds one."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable

import tensorflow as tf

from keras_towers.datasets.pairs._paths import PathsLike
from keras_towers.datasets.pairs._paths import _expand_paths
from keras_towers.datasets.pairs.records import from_csv
from keras_towers.datasets.pairs.records import from_jsonl
from keras_towers.datasets.pairs.tfrecord import from_tfrecord
from keras_towers.datasets.pairs.webdataset import from_webdataset
from keras_towers.utils.registry import Registry

#: File suffix (lower case, with its dot) -> reader; see `register_reader`.
READERS = Registry(
    "pair file suffix",
    hint="Call a reader such as `from_csv` directly, or `register_reader` the suffix.",
    normalize=str.lower,
)


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
    READERS.add(suffix, reader)


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
    matches = [s for s in READERS if name.endswith(s)]
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
                    f"{name} holds no files with a known suffix ({READERS.names()})."
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
                f"{READERS.names()}. Call a reader such as `from_csv` directly, "
                "or `register_reader` the suffix."
            )
        kinds.setdefault(READERS.get(suffix), []).append(file)
    if len(kinds) > 1:
        suffixes = sorted({_suffix_of(f) for f in files})
        raise ValueError(
            f"`source` mixes files of different kinds ({suffixes}); load each "
            "kind separately (e.g. with a glob) and combine the datasets."
        )
    ((reader, group),) = kinds.items()
    return reader(group if len(group) > 1 else group[0], **kwargs)
