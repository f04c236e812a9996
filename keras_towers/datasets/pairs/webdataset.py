"""WebDataset-style `.tar` shards: `from_webdataset`."""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Sequence

import tensorflow as tf

from keras_towers.datasets.pairs._paths import PathsLike
from keras_towers.datasets.pairs._pipeline import _check_on_error
from keras_towers.datasets.pairs._pipeline import _read_files
from keras_towers.datasets.pairs._schema import _record
from keras_towers.datasets.pairs._schema import _s


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
    return _read_files(
        paths_or_glob,
        _webdataset_generator(image_extensions, text_extensions),
        argument="paths_or_glob",
        return_keys=return_keys,
        on_error=on_error,
        num_parallel_calls=num_parallel_calls,
        cycle_length=cycle_length,
        shuffle_files=shuffle_files,
        seed=seed,
    )
