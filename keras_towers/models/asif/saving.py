"""ASIF's anchors through Keras saving.

`ASIF.save_own_variables(store)` / `load_own_variables(store)` (called by
Keras inside `save_weights`, `save("x.keras")` and presets, on the model's
own entry of the weights file) write and read the arrays below, beside the
model's own variables (it has none; its towers are saved as sub-layers):

| key | array |
|---|---|
| `anchor_image_features`, `anchor_text_features` | `(N, D)` in `anchor_dtype` (float16 stays bit-exact); `(0, 0)` for a set never filled |
| `anchor_ids` | `(N,)` int64 |
| `anchor_captions`, `anchor_image_refs` | UTF-8 bytes of all strings, one uint8 blob |
| `anchor_caption_offsets`, `anchor_image_ref_offsets` | `(N + 1,)` int64 offsets into the blob |
| `anchor_next_id` | `(1,)` int64: the next id `add_anchors` hands out |

Identical feature rows are written once (`anchor_*_index`, `(N,)` int32,
maps each anchor to its row), and with `ASIF(anchor_storage=...)` the rows
may be stored compactly (`anchor_*_codes`, `_scales`, `_basis`, `_mean`
instead of `anchor_*_features`); see `storage.py`. An exact set without
duplicates is written in exactly the layout above, which every earlier
version wrote and this one still reads.
"""

from __future__ import annotations

import numpy as np

from keras_towers.models.asif import storage as storage_lib

IMAGE_FEATURES = "anchor_image_features"
TEXT_FEATURES = "anchor_text_features"
IDS = "anchor_ids"
CAPTIONS = "anchor_captions"
CAPTION_OFFSETS = "anchor_caption_offsets"
IMAGE_REFS = "anchor_image_refs"
IMAGE_REF_OFFSETS = "anchor_image_ref_offsets"
NEXT_ID = "anchor_next_id"
FEATURE_PREFIXES = ("anchor_image", "anchor_text")
#: Keys every saved anchor set has (besides its features).
ARRAY_KEYS = (
    IDS,
    CAPTIONS,
    CAPTION_OFFSETS,
    IMAGE_REFS,
    IMAGE_REF_OFFSETS,
    NEXT_ID,
)


def encode_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte blob (uint8) plus int64 offsets."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, "int64")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype="uint8")
    return blob, offsets


def decode_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = np.asarray(blob, "uint8").tobytes()
    offsets = np.asarray(offsets).tolist()
    return [
        data[a:b].decode("utf-8")
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]


def anchor_arrays(store, storage: dict | None = None) -> dict[str, np.ndarray]:
    """An `AnchorStore` as the named arrays of the table above, its features
    stored as `storage` says (`storage.check_storage`; default exact)."""
    storage = storage_lib.check_storage(storage or "exact")
    captions, caption_offsets = encode_strings(store.captions)
    refs, ref_offsets = encode_strings(store.image_refs)
    empty = np.zeros((0, 0), store.dtype)
    image = store.image if store.image is not None else empty
    text = store.text if store.text is not None else empty
    return {
        **storage_lib.encode(image, "anchor_image", storage, "image"),
        **storage_lib.encode(text, "anchor_text", storage, "text"),
        IDS: np.ascontiguousarray(store.ids),
        CAPTIONS: captions,
        CAPTION_OFFSETS: caption_offsets,
        IMAGE_REFS: refs,
        IMAGE_REF_OFFSETS: ref_offsets,
        NEXT_ID: np.array([store.next_id], "int64"),
    }


def anchors_from_arrays(arrays) -> dict:
    """The arrays of `anchor_arrays` (a dict or a Keras weights store) as
    `ASIF.restore_anchors` arguments."""
    missing = [key for key in ARRAY_KEYS if key not in arrays]
    missing += [
        f"{prefix}_features"
        for prefix in FEATURE_PREFIXES
        if not storage_lib.has_features(arrays, prefix)
    ]
    if missing:
        raise ValueError(
            f"The saved ASIF state lacks the anchor arrays {missing}: it was "
            "not written by `save_weights`, `save` or `save_to_preset` of an "
            "ASIF."
        )
    return {
        "image_features": storage_lib.decode(arrays, "anchor_image"),
        "text_features": storage_lib.decode(arrays, "anchor_text"),
        "ids": np.asarray(arrays[IDS]),
        "captions": decode_strings(arrays[CAPTIONS], arrays[CAPTION_OFFSETS]),
        "image_refs": decode_strings(arrays[IMAGE_REFS], arrays[IMAGE_REF_OFFSETS]),
        "next_id": int(np.asarray(arrays[NEXT_ID]).reshape(-1)[0]),
    }


def save_anchors(store, weights_store, storage: dict | None = None) -> None:
    """Write an anchor set into a Keras weights store (a mapping)."""
    for key, value in anchor_arrays(store, storage).items():
        weights_store[key] = value


def is_anchor_key(key: str) -> bool:
    """Whether `key` names one of the arrays `save_anchors` writes."""
    return key in ARRAY_KEYS or storage_lib.is_own_key(key, FEATURE_PREFIXES)


def split_own_variables(weights_store) -> tuple[dict, dict]:
    """`(anchor arrays, other entries)` of a Keras weights store."""
    anchors, others = {}, {}
    for key in weights_store.keys():
        (anchors if is_anchor_key(key) else others)[key] = weights_store[key]
    return anchors, others
