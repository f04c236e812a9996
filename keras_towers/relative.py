"""Relative representations (ASIF): pure functions of feature matrices.

ASIF represents a query by its similarity to a set of `N` anchors: an image by
its cosine similarity to every anchor image, a text by its similarity to every
anchor caption. Keeping the `k` largest entries, raising them to a power `p`
and L2-normalising gives a sparse vector in `R^N`; since anchor `n` is the
same image-caption pair for both modalities, image and text vectors live in
one space and are compared by a sparse dot product.

Everything here is NumPy (and `scipy.sparse` for the sparse form) so it runs
identically on every Keras backend and never materialises a dense `Q x N`
matrix for large anchor sets: similarities are computed one
`(query chunk, anchor chunk)` block at a time, and the running top-k is merged
across anchor chunks (exactly a global top-k, as in the official code).

The sparse form is a `scipy.sparse.csr_array` of shape `(Q, N)` with at most
`k` stored entries per row; `dense` is the same matrix as a float32 array.

Example:

```python
from keras_towers import relative

anchors = keras_towers.ops.l2_normalize_numpy(np.random.randn(1000, 64))
queries = np.random.randn(5, 64)
reps = relative.relative_representation(queries, anchors, k=100, power=8.0)
reps.shape  # (5, 1000), 100 stored entries per row
```

References:
    - [Norelli et al., 2023](https://arxiv.org/abs/2210.01738) (ASIF)
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from keras_towers.ops import l2_normalize_numpy

#: Anchors per chunk when computing similarities.
DEFAULT_ANCHOR_CHUNK_SIZE = 16384
#: Largest `(query chunk x anchor chunk)` block of similarities held at once.
DEFAULT_BLOCK_ELEMENTS = 1 << 24


def check_k(k) -> int:
    """Validate the number of kept entries per row."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"`k` must be a positive integer. Received: k={k!r}")
    return int(k)


def check_power(power) -> float:
    """Validate the sharpening exponent."""
    if isinstance(power, bool) or not isinstance(power, (int, float, np.number)):
        raise ValueError(f"`power` must be a positive number. Received: {power!r}")
    if not math.isfinite(float(power)) or float(power) <= 0:
        raise ValueError(
            f"`power` must be a positive finite number. Received: {power!r}"
        )
    return float(power)


def top_k_similarities(
    queries,
    anchors,
    k: int,
    anchor_chunk_size: int = DEFAULT_ANCHOR_CHUNK_SIZE,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` largest inner products of each query with the anchors.

    Anchors are visited `anchor_chunk_size` rows at a time (float16 anchors
    are cast to float32 one chunk at a time) and queries in chunks sized so
    that a block holds at most `block_elements` similarities; the top-k of
    each block is merged into a running top-k. `k` larger than the number of
    anchors `N` is clamped to `N` (every anchor is kept). Ties at the k-th
    value are broken arbitrarily.

    Args:
        queries: array `(Q, D)`.
        anchors: array `(N, D)`, float32 or float16.
        k: int. Entries to keep per query.
        anchor_chunk_size: int. Anchors per chunk.
        block_elements: int. Bound on `query chunk x anchor chunk`.

    Returns:
        `(values, indices)`: float32 and int64 arrays `(Q, min(k, N))`, each
        row sorted by decreasing value.
    """
    k = check_k(k)
    queries = np.asarray(queries, dtype="float32")
    if queries.ndim != 2 or np.ndim(anchors) != 2:
        raise ValueError(
            "`queries` and `anchors` must be 2-D (rows are vectors). Received "
            f"shapes {np.shape(queries)} and {np.shape(anchors)}."
        )
    if queries.shape[1] != anchors.shape[1]:
        raise ValueError(
            "`queries` and `anchors` must have the same width. Received "
            f"{queries.shape[1]} and {anchors.shape[1]}."
        )
    num_anchors = anchors.shape[0]
    if num_anchors == 0:
        raise ValueError("There are no anchors to compare with.")
    k = min(k, num_anchors)
    chunk = max(1, min(int(anchor_chunk_size), num_anchors))
    query_chunk = max(1, int(block_elements) // chunk)
    values = np.empty((len(queries), k), "float32")
    indices = np.empty((len(queries), k), "int64")
    for q0 in range(0, len(queries), query_chunk):
        block = queries[q0 : q0 + query_chunk]
        best_v = best_i = None
        for a0 in range(0, num_anchors, chunk):
            part = np.asarray(anchors[a0 : a0 + chunk], dtype="float32")
            sims = block @ part.T
            if best_v is None or best_v.shape[1] < k:
                v, i = _row_top_k(sims, k)
                i += a0
                if best_v is not None:
                    v, i = _row_top_k(
                        np.concatenate([best_v, v], axis=1),
                        k,
                        np.concatenate([best_i, i], axis=1),
                    )
                best_v, best_i = v, i
            else:
                best_v, best_i = _merge_above_threshold(best_v, best_i, sims, a0, k)
        order = np.argsort(-best_v, axis=1, kind="stable")
        values[q0 : q0 + len(block)] = np.take_along_axis(best_v, order, 1)
        indices[q0 : q0 + len(block)] = np.take_along_axis(best_i, order, 1)
    return values, indices


def _row_top_k(values, k, indices=None):
    """Unsorted top-k of each row (and the matching column labels)."""
    width = values.shape[1]
    if width <= k:
        if indices is None:
            indices = np.broadcast_to(np.arange(width), values.shape).copy()
        return values, indices
    # argpartition puts the k largest in the last k slots (O(width) per row).
    part = np.argpartition(values, width - k, axis=1)[:, width - k :]
    top = np.take_along_axis(values, part, 1)
    if indices is None:
        return top, part.astype("int64")
    return top, np.take_along_axis(indices, part, 1)


def _merge_above_threshold(best_v, best_i, sims, offset, k):
    """Merge a block into a full running top-k, looking only at entries above
    each row's current k-th value (after the first chunks, few are): much
    cheaper than partitioning every block."""
    threshold = best_v.min(axis=1)
    mask = sims > threshold[:, None]
    counts = mask.sum(axis=1)
    width = int(counts.max())
    if width == 0:
        return best_v, best_i
    rows, cols = np.nonzero(mask)  # row-major, so grouped by row
    starts = np.cumsum(counts) - counts
    slots = np.arange(len(rows)) - np.repeat(starts, counts)
    # Padding slots hold -inf; each row has k finite entries, so they lose.
    cand_v = np.full((len(sims), width), -np.inf, "float32")
    cand_i = np.zeros((len(sims), width), "int64")
    cand_v[rows, slots] = sims[rows, cols]
    cand_i[rows, slots] = cols + offset
    return _row_top_k(
        np.concatenate([best_v, cand_v], axis=1),
        k,
        np.concatenate([best_i, cand_i], axis=1),
    )


def sharpen(values, power: float) -> np.ndarray:
    """Clip at zero, raise to `power` and L2-normalise each row.

    Negative similarities are set to zero before the power: for an even
    `power` the official code would turn a dissimilar anchor into a similar
    one, and for a fractional one it would give NaN. Both only matter when
    fewer than `k` anchors have a positive similarity. A row with no positive
    entry becomes all zeros.

    Args:
        values: array `(Q, k)` of similarities.
        power: float > 0.

    Returns:
        float32 array `(Q, k)`.
    """
    power = check_power(power)
    values = np.maximum(np.asarray(values, dtype="float32"), 0.0)
    if values.ndim != 2:
        raise ValueError(f"`values` must be 2-D. Received shape {values.shape}.")
    # Divide by the row maximum before the power: (v / m)^p has the same
    # direction as v^p, but small similarities to a high power would
    # underflow float32 (0.001^8 squared is 1e-48) and break the norm.
    row_max = values.max(axis=1, keepdims=True) if values.shape[1] else values
    ratio = np.divide(values, row_max, out=np.zeros_like(values), where=row_max > 0)
    return l2_normalize_numpy(ratio**power)


def to_csr(values, indices, num_columns: int) -> sp.csr_array:
    """Rows of `(values, indices)` pairs as a `(Q, num_columns)` CSR array.

    Explicit zeros are dropped, so a row stores at most `k` entries.
    """
    values = np.asarray(values, dtype="float32")
    indices = np.asarray(indices, dtype="int64")
    if values.shape != indices.shape or values.ndim != 2:
        raise ValueError(
            "`values` and `indices` must be 2-D arrays of the same shape. "
            f"Received {values.shape} and {indices.shape}."
        )
    rows, width = values.shape
    indptr = np.arange(0, rows * width + 1, width, dtype="int64")
    matrix = sp.csr_array(
        (values.ravel(), indices.ravel(), indptr), shape=(rows, int(num_columns))
    )
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def relative_representation(
    queries,
    anchors,
    k: int,
    power: float,
    anchor_chunk_size: int = DEFAULT_ANCHOR_CHUNK_SIZE,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> sp.csr_array:
    """ASIF's sparse relative representation of `queries` w.r.t. `anchors`.

    `r[n] = <q, a_n>` for every anchor, keep the top `k` (clamped to `N`),
    clip at 0, raise to `power`, L2-normalise. Pass unit-norm anchors to get
    cosine similarities; the scale of a query does not matter (it cancels in
    the normalisation).

    Args:
        queries: array `(Q, D)`.
        anchors: array `(N, D)` (float32 or float16).
        k: int. Non-zeros kept per row.
        power: float. Sharpening exponent.
        anchor_chunk_size, block_elements: chunking, see
            `top_k_similarities`.

    Returns:
        `scipy.sparse.csr_array` `(Q, N)`, float32, unit-norm rows (or zero
        rows), at most `k` entries per row.
    """
    values, indices = top_k_similarities(
        queries, anchors, k, anchor_chunk_size, block_elements
    )
    return to_csr(sharpen(values, power), indices, anchors.shape[0])


def _as_csr(x, name: str) -> sp.csr_array:
    if sp.issparse(x):
        return sp.csr_array(x, dtype="float32")
    x = np.asarray(x, dtype="float32")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D. Received shape {x.shape}.")
    return sp.csr_array(x)


def similarity(a, b, chunk_size: int = 4096) -> np.ndarray:
    """Dot products of every row of `a` with every row of `b`.

    Works on the sparse form (CSR) in chunks of `chunk_size` rows of `a`, so
    only the `(Qa, Qb)` result is ever dense. Dense inputs are accepted too.

    Args:
        a: `(Qa, N)` relative representations (sparse or dense).
        b: `(Qb, N)` relative representations (sparse or dense).
        chunk_size: int. Rows of `a` per sparse product.

    Returns:
        float32 array `(Qa, Qb)`.
    """
    a = _as_csr(a, "a")
    b = _as_csr(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            "Both representations must be over the same anchors. Received "
            f"{a.shape[1]} and {b.shape[1]} columns; recompute representations "
            "after adding or removing anchors."
        )
    b_t = b.T.tocsc()
    out = np.zeros((a.shape[0], b.shape[0]), "float32")
    for start in range(0, a.shape[0], max(1, int(chunk_size))):
        block = a[start : start + chunk_size] @ b_t
        out[start : start + block.shape[0]] = block.toarray()
    return out


def normalize_csr_rows(x: sp.csr_array) -> sp.csr_array:
    """L2-normalise the rows of a CSR array (zero rows stay zero)."""
    x = sp.csr_array(x, dtype="float32")
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    scale = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)
    return sp.csr_array(sp.diags_array(scale.astype("float32")) @ x)


def group_mean(x, group_size: int) -> sp.csr_array:
    """Mean of consecutive groups of `group_size` rows, renormalised.

    The CLIP-style template average: rows laid out group-major (class 0's
    templates, then class 1's, ...) become one unit-norm row per group.
    """
    x = _as_csr(x, "x")
    if group_size <= 0 or x.shape[0] % group_size:
        raise ValueError(
            f"{x.shape[0]} rows cannot be split into groups of {group_size}."
        )
    groups = x.shape[0] // group_size
    rows = np.repeat(np.arange(groups), group_size)
    averaging = sp.csr_array(
        (
            np.full(x.shape[0], 1.0 / group_size, "float32"),
            (rows, np.arange(x.shape[0])),
        ),
        shape=(groups, x.shape[0]),
    )
    return normalize_csr_rows(averaging @ x)


def group_max(scores, group_size: int) -> np.ndarray:
    """Max over consecutive groups of `group_size` columns of `scores`.

    ASIF's "best single prompt": a class scores as its best template.
    """
    scores = np.asarray(scores)
    if group_size <= 0 or scores.shape[1] % group_size:
        raise ValueError(
            f"{scores.shape[1]} columns cannot be split into groups of {group_size}."
        )
    return scores.reshape(scores.shape[0], -1, group_size).max(axis=-1)
