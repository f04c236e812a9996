"""Chunked InfoNCE and sigmoid losses: the dense objectives, block by block.

`infonce_loss` and `sigmoid_loss` build the whole `B x B` logits matrix; at a
global batch of 32,768 that is 4 GiB per copy, and autodiff keeps several.
The objectives here give the same values and gradients (to float32
precision) while holding only one `chunk_size x B` block of logits at a time:

- the forward pass walks over row blocks of images, each against all texts,
  taking each row's logsumexp and a streaming (online) logsumexp per column;
- the gradient is analytic (`ops.custom_gradient`): the backward pass walks
  the blocks again, recomputes each block's logits and accumulates
  `dL/dU = s G V`, `dL/dV = s G^T U`, `dL/ds = sum(G * U V^T)` (and
  `dL/db = sum(G)`), where `G` is the block of `dL/dlogits`. Plain autodiff
  through a loop of blocks would save every block for the backward pass,
  i.e. the full `B x B` again.

The loop is `ops.fori_loop` over blocks of a static size; the batch is
zero-padded to a whole number of blocks and padded rows/columns are masked,
so a batch size unknown at trace time (TensorFlow's `fit` on a `tf.data`
pipeline) works too. One block costs a few `chunk_size x B` float32 tensors;
the whole objective costs one extra `B x B x D` matmul over the dense form
(the recomputation).
"""

from __future__ import annotations

from keras import ops

from keras_towers.objectives import check_label_smoothing
from keras_towers.objectives import register_objective
from keras_towers.ops import at_least_float32

#: Fill for masked (padded) logits: finite, so `exp(_MASKED - finite)` is 0
#: and a fully masked column gives no NaN.
_MASKED = -1e30


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size:
        raise ValueError(f"`chunk_size` must be an int. Received: {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1. Received: {chunk_size}")
    return int(chunk_size)


def _inputs(image_embeddings, text_embeddings, *scalars):
    u = at_least_float32(image_embeddings)
    v = ops.cast(at_least_float32(text_embeddings), u.dtype)
    return (u, v) + tuple(ops.cast(s, u.dtype) for s in scalars)


class _Blocks:
    """Static block layout of a batch of `n` rows (`n` may be a tensor)."""

    def __init__(self, u, chunk_size: int):
        n = ops.shape(u)[0]
        self.n = n
        self.dim = ops.shape(u)[1]
        self.static = isinstance(n, int)
        self.chunk = min(chunk_size, n) if self.static else chunk_size
        self.num_blocks = (n + self.chunk - 1) // self.chunk
        self.padded = self.num_blocks * self.chunk
        self.col_ids = ops.arange(self.padded, dtype="int32")
        self.col_valid = ops.less(self.col_ids, n)

    def pad(self, x):
        if self.static and self.padded == self.n:
            return x
        return ops.pad(x, [[0, self.padded - self.n], [0, 0]])

    def unpad(self, x):
        if self.static and self.padded == self.n:
            return x
        return x[: self.n]

    def block(self, i, u):
        """Rows of block `i`: `(start, u_block, row_ids, valid, eye)`."""
        start = i * self.chunk
        u_block = ops.slice(u, (start, 0), (self.chunk, self.dim))
        row_ids = start + ops.arange(self.chunk, dtype="int32")
        row_valid = ops.less(row_ids, self.n)
        valid = ops.logical_and(
            ops.expand_dims(row_valid, 1), ops.expand_dims(self.col_valid, 0)
        )
        eye = ops.equal(ops.expand_dims(row_ids, 1), ops.expand_dims(self.col_ids, 0))
        return start, u_block, row_ids, valid, eye


def _column_argmax_update(logits, start, col_max, col_arg):
    """Streaming column max/argmax; ties keep the first row, as argmax does."""
    block_max = ops.max(logits, axis=0)
    block_arg = ops.cast(ops.argmax(logits, axis=0), "int32") + start
    col_arg = ops.where(ops.greater(block_max, col_max), block_arg, col_arg)
    return ops.maximum(col_max, block_max), col_arg


def _row_hits(logits, row_ids, n, dtype):
    """How many valid rows of a block have their positive as the argmax."""
    hits = ops.logical_and(
        ops.equal(ops.cast(ops.argmax(logits, axis=1), "int32"), row_ids),
        ops.less(row_ids, n),
    )
    return ops.sum(ops.cast(hits, dtype))


def _summary(blocks, u, v, scale, bias, i2t_hits, col_arg, dtype):
    """Diagonal sum, total sum and the four pair diagnostics (no B x B)."""
    n = ops.cast(blocks.n, dtype)
    # sum_i <u_i, v_i> and sum_ij <u_i, v_j> = <sum_i u_i, sum_j v_j>.
    diag_sum = scale * ops.sum(u * v) + n * bias
    total = scale * ops.sum(ops.sum(u, axis=0) * ops.sum(v, axis=0)) + n * n * bias
    t2i = ops.logical_and(blocks.col_valid, ops.equal(col_arg, blocks.col_ids))
    diagnostics = [
        i2t_hits / n,
        ops.sum(ops.cast(t2i, dtype)) / n,
        diag_sum / n,
        # With a batch of one there are no negatives: report 0, not NaN.
        (total - diag_sum) / ops.maximum(n * n - n, 1.0),
    ]
    return diag_sum, total, diagnostics


def _split(output):
    """`(loss, diagnostics)` from the `[loss, 4 diagnostics]` vector."""
    return output[0], {
        "i2t_accuracy": ops.cast(output[1], "float32"),
        "t2i_accuracy": ops.cast(output[2], "float32"),
        "positive_logit": output[3],
        "negative_logit": output[4],
    }


def _infonce_op(eps: float, chunk_size: int):
    @ops.custom_gradient
    def infonce(u, v, scale):
        dtype = u.dtype
        blocks = _Blocks(u, chunk_size)
        u_pad, v_pad = blocks.pad(u), blocks.pad(v)
        v_t = ops.transpose(v_pad)

        def forward(i, carry):
            row_lse_sum, i2t_hits, col_max, col_sum, col_arg = carry
            start, u_block, row_ids, valid, _ = blocks.block(i, u_pad)
            logits = ops.where(valid, scale * ops.matmul(u_block, v_t), _MASKED)
            row_lse = ops.logsumexp(logits, axis=1)
            row_valid = ops.less(row_ids, blocks.n)
            row_lse_sum = row_lse_sum + ops.sum(ops.where(row_valid, row_lse, 0.0))
            i2t_hits = i2t_hits + _row_hits(logits, row_ids, blocks.n, dtype)
            # Online logsumexp down each column.
            new_max = ops.maximum(col_max, ops.max(logits, axis=0))
            col_sum = col_sum * ops.exp(col_max - new_max) + ops.sum(
                ops.exp(logits - ops.expand_dims(new_max, 0)), axis=0
            )
            _, col_arg = _column_argmax_update(logits, start, col_max, col_arg)
            return row_lse_sum, i2t_hits, new_max, col_sum, col_arg

        zero = ops.zeros((), dtype)
        row_lse_sum, i2t_hits, col_max, col_sum, col_arg = ops.fori_loop(
            0,
            blocks.num_blocks,
            forward,
            (
                zero,
                zero,
                ops.full((blocks.padded,), _MASKED, dtype),
                ops.zeros((blocks.padded,), dtype),
                ops.zeros((blocks.padded,), "int32"),
            ),
        )
        col_lse = col_max + ops.log(col_sum)
        col_lse_sum = ops.sum(ops.where(blocks.col_valid, col_lse, 0.0))
        diag_sum, total, diagnostics = _summary(
            blocks, u, v, scale, zero, i2t_hits, col_arg, dtype
        )
        n = ops.cast(blocks.n, dtype)
        # CE with targets (1 - eps) I + eps / n, both directions, averaged.
        loss = (
            0.5 * (row_lse_sum + col_lse_sum) / n
            - (1.0 - eps) * diag_sum / n
            - eps * total / (n * n)
        )

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g_loss = ops.cast(upstream[0], dtype)

            def backward(i, carry):
                du, dv, ds = carry
                start, u_block, row_ids, valid, eye = blocks.block(i, u_pad)
                sims = ops.matmul(u_block, v_t)
                logits = ops.where(valid, scale * sims, _MASKED)
                row_lse = ops.logsumexp(logits, axis=1, keepdims=True)
                p_rows = ops.exp(logits - row_lse)
                p_cols = ops.exp(logits - ops.expand_dims(col_lse, 0))
                g = 0.5 / n * (p_rows + p_cols) - eps / (n * n)
                g = g - ops.where(eye, (1.0 - eps) / n, 0.0)
                g = ops.where(valid, g, 0.0) * g_loss
                du = ops.slice_update(du, (start, 0), scale * ops.matmul(g, v_pad))
                dv = dv + scale * ops.matmul(ops.transpose(g), u_block)
                return du, dv, ds + ops.sum(g * sims)

            du, dv, ds = ops.fori_loop(
                0,
                blocks.num_blocks,
                backward,
                (ops.zeros_like(u_pad), ops.zeros_like(v_pad), zero),
            )
            return blocks.unpad(du), blocks.unpad(dv), ds

        return ops.stack([loss] + diagnostics), grad

    return infonce


def _sigmoid_op(chunk_size: int):
    @ops.custom_gradient
    def sigmoid(u, v, scale, bias):
        dtype = u.dtype
        blocks = _Blocks(u, chunk_size)
        u_pad, v_pad = blocks.pad(u), blocks.pad(v)
        v_t = ops.transpose(v_pad)

        def forward(i, carry):
            loss_sum, i2t_hits, col_max, col_arg = carry
            start, u_block, row_ids, valid, eye = blocks.block(i, u_pad)
            logits = scale * ops.matmul(u_block, v_t) + bias
            # -log sigmoid(z x) = softplus(-z x); z = +1 on the diagonal.
            terms = ops.softplus(ops.where(eye, -logits, logits))
            loss_sum = loss_sum + ops.sum(ops.where(valid, terms, 0.0))
            logits = ops.where(valid, logits, _MASKED)
            i2t_hits = i2t_hits + _row_hits(logits, row_ids, blocks.n, dtype)
            col_max, col_arg = _column_argmax_update(logits, start, col_max, col_arg)
            return loss_sum, i2t_hits, col_max, col_arg

        zero = ops.zeros((), dtype)
        loss_sum, i2t_hits, _, col_arg = ops.fori_loop(
            0,
            blocks.num_blocks,
            forward,
            (
                zero,
                zero,
                ops.full((blocks.padded,), _MASKED, dtype),
                ops.zeros((blocks.padded,), "int32"),
            ),
        )
        _, _, diagnostics = _summary(
            blocks, u, v, scale, bias, i2t_hits, col_arg, dtype
        )
        n = ops.cast(blocks.n, dtype)
        loss = loss_sum / n

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            g_loss = ops.cast(upstream[0], dtype)

            def backward(i, carry):
                du, dv, ds, db = carry
                start, u_block, _, valid, eye = blocks.block(i, u_pad)
                sims = ops.matmul(u_block, v_t)
                logits = scale * sims + bias
                # d softplus(-z x) / dx = -z sigmoid(-z x).
                g = ops.where(eye, -ops.sigmoid(-logits), ops.sigmoid(logits))
                g = ops.where(valid, g, 0.0) * (g_loss / n)
                du = ops.slice_update(du, (start, 0), scale * ops.matmul(g, v_pad))
                dv = dv + scale * ops.matmul(ops.transpose(g), u_block)
                return du, dv, ds + ops.sum(g * sims), db + ops.sum(g)

            du, dv, ds, db = ops.fori_loop(
                0,
                blocks.num_blocks,
                backward,
                (ops.zeros_like(u_pad), ops.zeros_like(v_pad), zero, zero),
            )
            return blocks.unpad(du), blocks.unpad(dv), ds, db

        return ops.stack([loss] + diagnostics), grad

    return sigmoid


@register_objective("infonce_chunked")
def chunked_infonce_loss(
    image_embeddings,
    text_embeddings,
    logit_scale,
    label_smoothing: float = 0.0,
    chunk_size: int = 1024,
):
    """Symmetric InfoNCE computed in blocks of `chunk_size` rows.

    The same loss, diagnostics and gradients as
    `keras_towers.objectives.infonce_loss` (to float32 precision), with
    logits memory `O(chunk_size * B)` instead of `O(B^2)` in both the forward
    and the backward pass.

    Args:
        image_embeddings: tensor `(B, D)`, L2-normalised image embeddings.
        text_embeddings: tensor `(B, D)`, L2-normalised text embeddings.
        logit_scale: scalar multiplier `s` (already exponentiated).
        label_smoothing: float in `[0, 1)`, as for `infonce_loss`.
        chunk_size: int, image rows per block.

    Returns:
        `(loss, diagnostics)` as for `infonce_loss`.

    Example:

    ```python
    loss, diagnostics = keras_towers.objectives_chunked.chunked_infonce_loss(
        image_embeddings, text_embeddings, 100.0, chunk_size=256
    )
    model = keras_towers.CLIP.tiny(loss="infonce_chunked")
    ```
    """
    eps = check_label_smoothing(label_smoothing)
    op = _infonce_op(eps, _check_chunk_size(chunk_size))
    return _split(op(*_inputs(image_embeddings, text_embeddings, logit_scale)))


@register_objective("sigmoid_chunked")
def chunked_sigmoid_loss(
    image_embeddings,
    text_embeddings,
    logit_scale,
    logit_bias,
    chunk_size: int = 1024,
):
    """Pairwise sigmoid loss (SigLIP) computed in blocks of `chunk_size` rows.

    The same loss, diagnostics and gradients as
    `keras_towers.objectives.sigmoid_loss` (to float32 precision), with
    logits memory `O(chunk_size * B)` instead of `O(B^2)`. The normalisation
    is big_vision's and open_clip's: the mean over images of the sum over all
    texts.

    Args:
        image_embeddings: tensor `(B, D)`, L2-normalised.
        text_embeddings: tensor `(B, D)`, L2-normalised.
        logit_scale: scalar multiplier `t` (already exponentiated).
        logit_bias: scalar bias `b`.
        chunk_size: int, image rows per block.

    Returns:
        `(loss, diagnostics)` as for `sigmoid_loss`.

    Example:

    ```python
    model = keras_towers.SigLIP.tiny(loss="sigmoid_chunked")
    ```
    """
    op = _sigmoid_op(_check_chunk_size(chunk_size))
    return _split(
        op(*_inputs(image_embeddings, text_embeddings, logit_scale, logit_bias))
    )
