"""Contrastive objectives: pure functions of embeddings.

Every objective takes per-example embeddings (already L2-normalised) plus the
scalars it needs and returns `(loss, diagnostics)`, where `diagnostics` is a
dict of scalar tensors that the methods log as metrics. Objectives never see a
model, so they can be tested against a NumPy closed form and reused by every
method (CLIP, LiT, Three Towers, ...).

The batch that an objective sees is the *global* batch: all `B` images are
contrasted against all `B` captions. Under a Keras data-parallel distribution
(JAX) the embeddings are global arrays, so the loss is the full `B x B` loss
and no gradient rescaling is needed. Under `tf.distribute` each replica holds
only its rows; an objective may then carry a *rows form* (`infonce_rows`,
`sigmoid_rows`, attached with `register_rows_form`): this replica's image and
text rows against the gathered columns, returning its share of the global
loss, so that the shares of all replicas sum to the dense value
(`keras_towers.distributed.pair_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

from keras import ops

from keras_towers.ops import at_least_float32
from keras_towers.utils.registry import Registry

OBJECTIVES = Registry(
    "objective",
    hint="Register one with `keras_towers.objectives.register_objective`.",
)

#: Diagnostics every pairwise objective returns.
PAIR_DIAGNOSTICS = (
    "i2t_accuracy",
    "t2i_accuracy",
    "positive_logit",
    "negative_logit",
)


def register_objective(name: str, diagnostics=PAIR_DIAGNOSTICS):
    """Register an objective function under `name`.

    The decorated function keeps its signature; `diagnostics` lists the keys of
    the dict it returns, so a model can create one metric per key up front.

    Example:

    ```python
    @keras_towers.objectives.register_objective("my_loss")
    def my_loss(image_embeddings, text_embeddings, logit_scale):
        ...
        return loss, {...}
    ```
    """

    def decorator(fn):
        OBJECTIVES.add(name, fn, override=False)
        fn.diagnostics = tuple(diagnostics)
        fn.objective_name = name
        return fn

    return decorator


def register_rows_form(objective):
    """Attach the decorated function as `objective`'s rows form.

    A rows form takes `(image_rows, text_rows, image_columns, text_columns,
    row_offset, *scalars)`: this shard's `b` rows of each modality, the
    gathered `N` rows of both, and the index of the shard's first row among
    them. It returns `(share, diagnostics)` where the shares of all shards sum
    to the objective on the whole batch, and diagnostics are over the
    shard's rows.
    """

    def decorator(fn):
        objective.rows_form = fn
        return fn

    return decorator


def get(name_or_fn) -> Callable:
    """Return a registered objective by name (or the function itself)."""
    if callable(name_or_fn):
        if not hasattr(name_or_fn, "diagnostics"):
            raise ValueError(
                "A custom objective must be registered with "
                "`keras_towers.objectives.register_objective` so that its "
                f"diagnostics are known. Received: {name_or_fn!r}"
            )
        return name_or_fn
    return OBJECTIVES.get(name_or_fn)


def names() -> list[str]:
    """Names of all registered objectives."""
    return OBJECTIVES.names()


def _pair_diagnostics(logits):
    """Batch retrieval accuracies and mean positive/negative logits."""
    return _rows_diagnostics(logits, ops.transpose(logits), 0)[0]


def check_label_smoothing(label_smoothing) -> float:
    """`label_smoothing` as a float, or a ValueError unless in `[0, 1)`."""
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(
            "`label_smoothing` must be in [0, 1). "
            f"Received: label_smoothing={label_smoothing}"
        )
    return float(label_smoothing)


def _soft_cross_entropy(logits, targets):
    """Mean over rows of -sum(targets * log_softmax(logits))."""
    log_probs = ops.log_softmax(logits, axis=-1)
    return -ops.mean(ops.sum(targets * log_probs, axis=-1))


def _similarity_logits(image_embeddings, text_embeddings, logit_scale):
    image_embeddings = at_least_float32(image_embeddings)
    text_embeddings = ops.cast(
        at_least_float32(text_embeddings), image_embeddings.dtype
    )
    logit_scale = ops.cast(logit_scale, image_embeddings.dtype)
    return logit_scale * ops.matmul(image_embeddings, ops.transpose(text_embeddings))


@register_objective("infonce")
def infonce_loss(
    image_embeddings,
    text_embeddings,
    logit_scale,
    label_smoothing: float = 0.0,
):
    """Symmetric InfoNCE (the CLIP loss).

    `S = logit_scale * U V^T`; the loss is
    `(CE(S, I) + CE(S^T, I)) / 2` where row `i` of `U` and `V` is a positive
    pair and every other pairing in the batch is a negative.

    Args:
        image_embeddings: tensor `(B, D)`, L2-normalised image embeddings.
        text_embeddings: tensor `(B, D)`, L2-normalised text embeddings.
        logit_scale: scalar multiplier `s` (already exponentiated).
        label_smoothing: float in `[0, 1)`. Targets become
            `(1 - eps) * onehot + eps / B`.

    Returns:
        `(loss, diagnostics)`: a float32 scalar and a dict with
        `i2t_accuracy`, `t2i_accuracy`, `positive_logit`, `negative_logit`.

    References:
        - [Radford et al., 2021](https://arxiv.org/abs/2103.00020)
    """
    check_label_smoothing(label_smoothing)
    logits = _similarity_logits(image_embeddings, text_embeddings, logit_scale)
    batch_size = ops.shape(logits)[0]
    targets = ops.eye(batch_size, dtype=logits.dtype)
    if label_smoothing:
        n = ops.cast(batch_size, logits.dtype)
        targets = targets * (1.0 - label_smoothing) + label_smoothing / n
    loss = 0.5 * (
        _soft_cross_entropy(logits, targets)
        + _soft_cross_entropy(ops.transpose(logits), targets)
    )
    return loss, _pair_diagnostics(logits)


@register_objective("sigmoid")
def sigmoid_loss(image_embeddings, text_embeddings, logit_scale, logit_bias):
    """Pairwise sigmoid loss (SigLIP).

    `L = -(1/B) sum_ij log sigmoid(z_ij * (t <u_i, v_j> + b))` with
    `z_ij = +1` on the diagonal and `-1` elsewhere: every pair is an
    independent binary classification, so no batch-wide softmax is needed.

    Args:
        image_embeddings: tensor `(B, D)`, L2-normalised.
        text_embeddings: tensor `(B, D)`, L2-normalised.
        logit_scale: scalar multiplier `t` (already exponentiated).
        logit_bias: scalar bias `b`.

    Returns:
        `(loss, diagnostics)` as for `infonce_loss`.

    References:
        - [Zhai et al., 2023](https://arxiv.org/abs/2303.15343)
    """
    logits = _similarity_logits(image_embeddings, text_embeddings, logit_scale)
    logits = logits + ops.cast(logit_bias, "float32")
    batch_size = ops.shape(logits)[0]
    signs = 2.0 * ops.eye(batch_size, dtype="float32") - 1.0
    # log sigmoid(x) = -softplus(-x), stable for large |x|.
    loss = ops.sum(ops.softplus(-signs * logits)) / ops.cast(batch_size, "float32")
    return loss, _pair_diagnostics(logits)


def _rows_diagnostics(i2t_logits, t2i_logits, row_offset):
    """Retrieval accuracies and mean positive/negative logits of a shard of
    rows (`row_offset`: the index of its first row in the batch):
    `i2t_logits` are its images against all texts, `t2i_logits` its texts
    against all images. With every row, `_pair_diagnostics`. Also returns
    the one-hot positives `(rows, columns)`."""
    rows, columns = ops.shape(i2t_logits)[0], ops.shape(i2t_logits)[1]
    labels = ops.cast(row_offset, "int32") + ops.arange(rows, dtype="int32")
    positives = ops.one_hot(labels, columns, dtype=i2t_logits.dtype)
    i2t = ops.cast(ops.argmax(i2t_logits, axis=1), "int32")
    t2i = ops.cast(ops.argmax(t2i_logits, axis=1), "int32")
    b = ops.cast(rows, i2t_logits.dtype)
    n = ops.cast(columns, i2t_logits.dtype)
    positive = ops.sum(i2t_logits * positives)
    negative = ops.sum(i2t_logits * (1.0 - positives))
    return {
        "i2t_accuracy": ops.mean(ops.cast(ops.equal(i2t, labels), "float32")),
        "t2i_accuracy": ops.mean(ops.cast(ops.equal(t2i, labels), "float32")),
        "positive_logit": positive / b,
        # With a batch of one there are no negatives: report 0, not NaN.
        "negative_logit": negative / ops.maximum(b * n - b, 1.0),
    }, positives


@register_rows_form(infonce_loss)
def infonce_rows(
    image_rows,
    text_rows,
    image_columns,
    text_columns,
    row_offset,
    logit_scale,
    label_smoothing: float = 0.0,
):
    """This shard's share of `infonce_loss` over the gathered batch.

    Image rows against all texts give the shard's image-to-text terms, text
    rows against all images its text-to-image terms (the columns of the
    dense `S`): `sum(CE) / (2N)` over both, so the shares of all shards sum
    to the dense loss, and with one shard it is the dense loss.
    """
    check_label_smoothing(label_smoothing)
    i2t = _similarity_logits(image_rows, text_columns, logit_scale)
    t2i = _similarity_logits(text_rows, image_columns, logit_scale)
    diagnostics, targets = _rows_diagnostics(i2t, t2i, row_offset)
    n = ops.cast(ops.shape(i2t)[1], i2t.dtype)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / n
    total = -ops.sum(targets * ops.log_softmax(i2t, axis=-1)) - ops.sum(
        targets * ops.log_softmax(t2i, axis=-1)
    )
    return total / (2.0 * n), diagnostics


@register_rows_form(sigmoid_loss)
def sigmoid_rows(
    image_rows,
    text_rows,
    image_columns,
    text_columns,
    row_offset,
    logit_scale,
    logit_bias,
):
    """This shard's share of `sigmoid_loss` over the gathered batch: its
    image rows against all texts, `sum(softplus(-z * logits)) / N` (every
    pair belongs to exactly one image row, so the shares sum to the dense
    loss). The text rows serve only the text-to-image diagnostic."""
    logits = _similarity_logits(image_rows, text_columns, logit_scale)
    logits = logits + ops.cast(logit_bias, logits.dtype)
    t2i = ops.stop_gradient(_similarity_logits(text_rows, image_columns, logit_scale))
    diagnostics, positives = _rows_diagnostics(
        logits, t2i + ops.cast(logit_bias, t2i.dtype), row_offset
    )
    signs = 2.0 * positives - 1.0
    n = ops.cast(ops.shape(logits)[1], logits.dtype)
    return ops.sum(ops.softplus(-signs * logits)) / n, diagnostics
