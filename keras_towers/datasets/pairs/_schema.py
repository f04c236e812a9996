"""Records: what the readers produce before decoding, and the output keys.

Every reader is a Python generator of flat dicts of byte strings: where the
record is (`source`), the image as a file `path` or as encoded `data`, the
caption, a key, extra fields, and `error` (non-empty for a record that is
already known to be bad, e.g. a malformed line). One decoding stage
(`_pipeline`) then reads, decodes, counts and reports, whatever the source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from collections.abc import Sequence

import tensorflow as tf

from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

#: Key of the optional per-record identifier (`return_keys=True`).
KEYS_KEY = "keys"

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
