"""Contrastive objectives: pure functions of embeddings.

Every objective takes per-example embeddings (already L2-normalised) plus the
scalars it needs and returns `(loss, diagnostics)`, where `diagnostics` is a
dict of scalar tensors that the methods log as metrics. Objectives never see a
model, so they can be tested against a NumPy closed form and reused by every
method (CLIP, LiT, Three Towers, ...).

The batch that an objective sees is the *global* batch: all `B` images are
contrasted against all `B` captions. Under a Keras data-parallel distribution
the embeddings are global arrays, so the loss is the full `B x B` loss and no
gradient rescaling is needed.
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
    batch_size = ops.shape(logits)[0]
    labels = ops.arange(batch_size, dtype="int32")
    i2t = ops.cast(ops.argmax(logits, axis=1), "int32")
    t2i = ops.cast(ops.argmax(logits, axis=0), "int32")
    eye = ops.eye(batch_size, dtype=logits.dtype)
    n = ops.cast(batch_size, logits.dtype)
    positive = ops.sum(logits * eye) / n
    # With a batch of one there are no negatives: report 0, not NaN.
    negative = ops.sum(logits * (1.0 - eye)) / ops.maximum(n * n - n, 1.0)
    return {
        "i2t_accuracy": ops.mean(ops.cast(ops.equal(i2t, labels), "float32")),
        "t2i_accuracy": ops.mean(ops.cast(ops.equal(t2i, labels), "float32")),
        "positive_logit": positive,
        "negative_logit": negative,
    }


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
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(
            "`label_smoothing` must be in [0, 1). "
            f"Received: label_smoothing={label_smoothing}"
        )
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
