"""How ASIF anchor features are written to disk: exact, or compact.

In memory the anchors are always unit-norm `(N, D)` arrays in
`anchor_dtype`. On disk (`save_weights`, `save`, presets), each modality's
features go through two steps:

1. **Deduplication (always, lossless).** Identical rows are stored once with
   an `(N,)` int32 index. Captions shared by many anchors (one emoji in eight
   art styles has one caption, hence one text feature) cost one row.
2. **Compaction (`anchor_storage`, lossy, off by default).**
   - `"image_dims"` / `"text_dims"`: project the (deduplicated) rows on
     their top principal directions, stored as a `(dims, D)` float16 basis
     and a float32 mean;
   - `"quantize": "int8"`: store each row as int8 codes times one float32
     scale (`max |row| / 127`).

   On load a row is rebuilt as `mean + (codes * scale) @ basis` and
   L2-normalised again, so inner products stay cosines.

`anchor_storage="exact"` (the default) writes the features bit-exactly in
`anchor_dtype`. `"compact"` is `{"quantize": "int8", "image_dims": 256}`:
a tenth of the float16 size for 1280-d image features. The relative
representation keeps each query's top-k anchors, so a small error in a
similarity can swap which anchors are kept: measure before shipping.
"""

from __future__ import annotations

import numpy as np

from keras_towers.ops import l2_normalize_numpy

#: Named storage settings.
STORAGE_PRESETS = {
    "exact": {"quantize": None, "image_dims": None, "text_dims": None},
    "compact": {"quantize": "int8", "image_dims": 256, "text_dims": None},
}
QUANTIZERS = (None, "int8")


def check_storage(storage) -> dict:
    """A full storage dict from a name of `STORAGE_PRESETS` or a partial
    dict (missing keys are exact)."""
    if isinstance(storage, str):
        if storage not in STORAGE_PRESETS:
            raise ValueError(
                f"`anchor_storage` must be one of {sorted(STORAGE_PRESETS)} or a "
                f"dict. Received: anchor_storage={storage!r}"
            )
        return dict(STORAGE_PRESETS[storage])
    if not isinstance(storage, dict):
        raise TypeError(
            "`anchor_storage` must be a string or a dict. Received "
            f"{type(storage).__name__}: {storage!r}"
        )
    unknown = set(storage) - set(STORAGE_PRESETS["exact"])
    if unknown:
        raise ValueError(
            f"Unknown `anchor_storage` keys {sorted(unknown)}; expected "
            f"{sorted(STORAGE_PRESETS['exact'])}."
        )
    out = {**STORAGE_PRESETS["exact"], **storage}
    if out["quantize"] not in QUANTIZERS:
        raise ValueError(
            f"`anchor_storage['quantize']` must be one of {QUANTIZERS}. "
            f"Received: {out['quantize']!r}"
        )
    for key in ("image_dims", "text_dims"):
        dims = out[key]
        if dims is not None and (
            isinstance(dims, bool) or not isinstance(dims, int) or dims < 1
        ):
            raise ValueError(
                f"`anchor_storage[{key!r}]` must be a positive int or None. "
                f"Received: {dims!r}"
            )
    return out


def storage_name(storage: dict):
    """The preset name of a storage dict, else the dict (for configs)."""
    for name, preset in STORAGE_PRESETS.items():
        if storage == preset:
            return name
    return dict(storage)


# === Encoding ===


def principal_basis(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """`(mean (D,), basis (dims, D))`: the top principal directions of the
    rows of `x`, each signed so that its largest entry is positive."""
    x = np.asarray(x, "float64")
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred)
    basis = vectors[:, np.argsort(-values)[:dims]].T
    signs = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
    return mean, basis * signs[:, None]


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(codes int8, scales float32)` with `x ~ codes * scales[:, None]`."""
    x = np.asarray(x, "float32")
    scales = np.abs(x).max(axis=1) / 127.0
    safe = np.where(scales > 0, scales, 1.0)
    codes = np.clip(np.rint(x / safe[:, None]), -127, 127).astype("int8")
    return codes, scales.astype("float32")


def encode(features: np.ndarray, prefix: str, storage: dict, modality: str) -> dict:
    """The arrays storing `features` under keys starting with `prefix`.

    Exact and unduplicated: `{prefix}_features` alone (the layout every
    earlier ASIF wrote). Otherwise `{prefix}_index` maps anchors to stored
    rows and, when compact, `{prefix}_codes`, `_scales`, `_basis`, `_mean`
    replace `_features`.
    """
    arrays = {}
    rows = features
    if len(features):
        rows, first, index = np.unique(
            features, axis=0, return_index=True, return_inverse=True
        )
        # Rows in order of first use, so the file reads like the anchor set.
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        rows = rows[order]
        if len(rows) < len(features):
            arrays[f"{prefix}_index"] = rank[index.reshape(-1)].astype("int32")
    dims = storage[f"{modality}_dims"]
    compact = storage["quantize"] is not None or (
        dims is not None and len(rows) and dims < rows.shape[1]
    )
    if not compact or not len(rows):
        arrays[f"{prefix}_features"] = np.ascontiguousarray(rows)
        return arrays
    values = np.asarray(rows, "float32")
    if dims is not None and dims < values.shape[1]:
        mean, basis = principal_basis(values, dims)
        basis = basis.astype("float16")
        values = (values - mean) @ basis.astype("float32").T
        arrays[f"{prefix}_basis"] = basis
        arrays[f"{prefix}_mean"] = mean.astype("float32")
    if storage["quantize"] == "int8":
        values, scales = quantize_int8(values)
        arrays[f"{prefix}_scales"] = scales
    arrays[f"{prefix}_codes"] = np.ascontiguousarray(values)
    return arrays


def decode(arrays, prefix: str) -> np.ndarray:
    """The `(N, D)` features written by `encode` (compact ones rebuilt and
    L2-normalised; exact ones unchanged)."""
    if f"{prefix}_features" in arrays:
        rows = np.asarray(arrays[f"{prefix}_features"])
    else:
        rows = np.asarray(arrays[f"{prefix}_codes"]).astype("float32")
        if f"{prefix}_scales" in arrays:
            rows = rows * np.asarray(arrays[f"{prefix}_scales"], "float32")[:, None]
        if f"{prefix}_basis" in arrays:
            basis = np.asarray(arrays[f"{prefix}_basis"]).astype("float32")
            rows = rows @ basis + np.asarray(arrays[f"{prefix}_mean"], "float32")
        rows = l2_normalize_numpy(rows)
    if f"{prefix}_index" in arrays:
        rows = rows[np.asarray(arrays[f"{prefix}_index"]).astype("int64")]
    return rows


def has_features(arrays, prefix: str) -> bool:
    return f"{prefix}_features" in arrays or f"{prefix}_codes" in arrays


def is_own_key(key: str, prefixes) -> bool:
    """Whether `key` is one of the arrays `encode` writes for `prefixes`."""
    suffixes = ("_features", "_index", "_codes", "_scales", "_basis", "_mean")
    return any(key == p + s for p in prefixes for s in suffixes)
