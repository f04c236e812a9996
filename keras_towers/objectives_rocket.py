"""The improved CLIP recipe's contrastive loss (CL2L, "clip-rocket").

Pure functions of embeddings, like `keras_towers.objectives`: no model, no
heads, no optimizer. A method computes the views and heads and hands the
outputs here; `cl2l_loss` returns `(loss, diagnostics)`. The SSL add-ons
trained on top of it live in `keras_towers.objectives_ssl`.

Notation (one sample = 1 global view and `A` augmented views per modality;
`B` pairs in the global batch):

- `z_image`, `z_text`: `(B, D)`, L2-normalised global-view embeddings from
  the linear ("z") heads, with logit scale `s` (init 1/0.07);
- `h_images`, `h_texts`: `(A, B, D')` (or a list of `A` arrays `(B, D')`),
  L2-normalised augmented-view embeddings from the MLP ("h") heads, with
  their own logit scale `s_h` (init 10).

Scales are **already exponentiated**, as for `objectives.infonce_loss`.

The objectives see the *global* batch (as in `keras_towers.objectives`), so
the cross-replica gathers and all-reduces of the official code are not
needed: the in-batch negatives are all `B` pairs. clip-rocket's gather
carries no gradient (only the local rows get one); here every row and column
gets the exact gradient of the global-batch loss.

References:
    - [Fini et al., 2023](https://arxiv.org/abs/2305.08675) ("Improved
      baselines for vision-language pre-training", TMLR; code
      facebookresearch/clip-rocket)
"""

from __future__ import annotations

from keras import ops

from keras_towers.objectives import PAIR_DIAGNOSTICS
from keras_towers.objectives import check_label_smoothing
from keras_towers.objectives_proto import _check_same
from keras_towers.ops import at_least_float32

#: Diagnostics returned by `cl2l_loss` (the global-pair ones come first and
#: keep `objectives.PAIR_DIAGNOSTICS`' names).
CL2L_DIAGNOSTICS = (
    *PAIR_DIAGNOSTICS,
    "local_i2t_accuracy",
    "local_t2i_accuracy",
    "global_i2t_loss",
    "global_t2i_loss",
    "local_i2t_loss",
    "local_t2i_loss",
    "i2t_loss",
    "t2i_loss",
    "clip_loss",
)
REDUCTIONS = ("mean", "sum")


# --- input checks --------------------------------------------------------------


def _matrix(x, name: str, dtype=None):
    x = at_least_float32(x)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if len(x.shape) != 2:
        raise ValueError(
            f"`{name}` must have rank 2 (batch, width). "
            f"Received: {name}.shape={tuple(x.shape)}"
        )
    return x


def _views(x, name: str, dtype=None):
    """A list of `(B, D)` arrays or one `(A, B, D)` array, as `(A, B, D)`."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"`{name}` must hold at least one view. Received: []")
        x = ops.stack([_matrix(v, f"{name}[{i}]", dtype) for i, v in enumerate(x)])
    x = at_least_float32(x)
    if dtype is not None:
        x = ops.cast(x, dtype)
    if len(x.shape) != 3:
        raise ValueError(
            f"`{name}` must have rank 3 (views, batch, width) or be a list of "
            f"rank-2 arrays. Received: {name}.shape={tuple(x.shape)}"
        )
    return x


def _check_pair(x, y, x_name: str, y_name: str) -> None:
    """Same batch and width (the last two axes) and the same number of views."""
    if len(x.shape) == 3:
        _check_same(x.shape[0], y.shape[0], f"Views of `{x_name}` and `{y_name}`")
    _check_same(x.shape[-2], y.shape[-2], f"Batch sizes of `{x_name}` and `{y_name}`")
    _check_same(x.shape[-1], y.shape[-1], f"Widths of `{x_name}` and `{y_name}`")


def _all_or_none(**kwargs) -> bool:
    given = [k for k, v in kwargs.items() if v is not None]
    if given and len(given) != len(kwargs):
        missing = [k for k in kwargs if k not in given]
        raise ValueError(
            f"Give all of {', '.join(f'`{k}`' for k in kwargs)} or none. "
            f"Missing: {', '.join(f'`{k}`' for k in missing)}"
        )
    return bool(given)


# --- shared pieces -------------------------------------------------------------


def _smoothed_cross_entropy(logits, label_smoothing: float):
    """Mean over rows (and leading axes) of CE against `(1-eps) I + eps/B`.

    `logits` is `(..., B, B)` with the positive on the diagonal, exactly
    `torch.nn.functional.cross_entropy(..., label_smoothing=eps)` per matrix.
    """
    log_probs = ops.log_softmax(logits, axis=-1)
    eye = ops.eye(ops.shape(logits)[-1], dtype=logits.dtype)
    positive = ops.sum(log_probs * eye, axis=-1)
    nll = -(1.0 - label_smoothing) * positive
    if label_smoothing:
        nll = nll - label_smoothing * ops.mean(log_probs, axis=-1)
    return ops.mean(nll)


def _accuracy(logits):
    """Fraction of rows (over all leading axes) whose top logit is the diagonal."""
    labels = ops.arange(ops.shape(logits)[-1], dtype="int32")
    hits = ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels)
    return ops.mean(ops.cast(hits, "float32"))


def _transpose_last(x):
    rank = len(x.shape)
    return ops.transpose(x, (*range(rank - 2), rank - 1, rank - 2))


# --- CL2L ------------------------------------------------------------------------


def cl2l_loss(
    z_image,
    z_text,
    logit_scale,
    h_images=None,
    h_texts=None,
    h_logit_scale=None,
    *,
    label_smoothing: float = 0.1,
    local_weight: float | None = None,
    reduction: str = "mean",
):
    """The CL2L ("clip-rocket") contrastive loss: global plus augmented pairs.

    Global term, no label smoothing: `S = s z_I z_T^T`,
    `L_glob^I = CE(S, I)` and `L_glob^T = CE(S^T, I)`. Local terms over every
    (image view `a`, text view `b`) pair: `S_ab = s_h h_I^a (h_T^b)^T` and
    `L_loc^I = mean_ab CE_eps(S_ab, I)`, `L_loc^T = mean_ab CE_eps(S_ab^T, I)`,
    where `CE_eps` uses targets `(1 - eps) onehot + eps / B`. **Label
    smoothing applies to the local terms only.** Per direction
    `L^X = (L_glob^X + w L_loc^X) / (1 + w)`, and the loss is
    `(L^I + L^T) / 2` (`reduction="mean"`) or `L^I + L^T` (`"sum"`, the
    code's `--loss-avg-or-sum sum`, used by every repro run but CC3M; it
    also doubles the CL2L loss against an add-on). Without augmented views
    (`h_images=None`) this is `objectives.infonce_loss` (times 2 for
    `"sum"`), as clip-rocket's `--num-augs 0` baseline.

    Args:
        z_image: tensor `(B, D)`, L2-normalised global image embeddings.
        z_text: tensor `(B, D)`, L2-normalised global text embeddings.
        logit_scale: scalar `s` (already exponentiated; init 1/0.07).
        h_images: optional tensor `(A, B, D')` or list of `A` tensors
            `(B, D')`, L2-normalised augmented image embeddings (MLP head).
        h_texts: optional, the same for the `A` augmented captions.
        h_logit_scale: scalar `s_h` (already exponentiated; init 10);
            required with `h_images`.
        label_smoothing: float `eps` in `[0, 1)` for the local terms (the
            recipe: 0.1; the code's flag default is 0).
        local_weight: float `w >= 0`, or `None` for the code's choice
            `w = A` (the number of augmented views: 2 in the recipe).
        reduction: `"mean"` or `"sum"` over the two directions.

    Returns:
        `(loss, diagnostics)`: a float32 scalar and a dict (names in
        `CL2L_DIAGNOSTICS`): the global pair's `i2t_accuracy`,
        `t2i_accuracy`, `positive_logit`, `negative_logit`; the local
        accuracies averaged over pairs; the loss parts `global_i2t_loss`,
        `global_t2i_loss`, `local_i2t_loss`, `local_t2i_loss` (0 without
        augmented views), `i2t_loss` (`L^I`), `t2i_loss` (`L^T`) and
        `clip_loss = (L^I + L^T) / 2` (before the `"sum"` doubling).

    Example:

    ```python
    from keras_towers import objectives_rocket
    from keras_towers.ops import l2_normalize
    z_i, z_t = l2_normalize(np.random.normal(size=(2, 8, 16)))
    h_i, h_t = l2_normalize(np.random.normal(size=(2, 2, 8, 32)))
    loss, parts = objectives_rocket.cl2l_loss(z_i, z_t, 1 / 0.07, h_i, h_t, 10.0)
    parts["local_i2t_loss"]
    ```

    References:
        - [Fini et al., 2023](https://arxiv.org/abs/2305.08675)
    """
    label_smoothing = check_label_smoothing(label_smoothing)
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {REDUCTIONS}. Received: {reduction!r}"
        )
    if local_weight is not None and not float(local_weight) >= 0.0:
        raise ValueError(f"`local_weight` must be >= 0. Received: {local_weight}")
    z_image = _matrix(z_image, "z_image")
    dtype = z_image.dtype
    z_text = _matrix(z_text, "z_text", dtype)
    _check_pair(z_image, z_text, "z_image", "z_text")

    logits = ops.cast(logit_scale, dtype) * ops.matmul(z_image, ops.transpose(z_text))
    global_i2t = _smoothed_cross_entropy(logits, 0.0)
    global_t2i = _smoothed_cross_entropy(ops.transpose(logits), 0.0)
    diagnostics = _global_diagnostics(logits)

    zero = ops.zeros((), dtype)
    local_i2t = local_t2i = zero
    local_acc_i2t = local_acc_t2i = ops.zeros((), "float32")
    num_views = 0
    if _all_or_none(h_images=h_images, h_texts=h_texts):
        if h_logit_scale is None:
            raise ValueError("`h_logit_scale` is required with `h_images`/`h_texts`.")
        h_images = _views(h_images, "h_images", dtype)
        h_texts = _views(h_texts, "h_texts", dtype)
        _check_pair(h_images, h_texts, "h_images", "h_texts")
        _check_same(
            z_image.shape[0],
            h_images.shape[1],
            "Batch sizes of `z_image` and `h_images`",
        )
        num_views = h_images.shape[0]
        # (a, b, i, j): image i of view a against text j of view b.
        local = ops.cast(h_logit_scale, dtype) * ops.einsum(
            "aid,bjd->abij", h_images, h_texts
        )
        local_i2t = _smoothed_cross_entropy(local, label_smoothing)
        local_t2i = _smoothed_cross_entropy(_transpose_last(local), label_smoothing)
        local_acc_i2t = _accuracy(local)
        local_acc_t2i = _accuracy(_transpose_last(local))

    if local_weight is None:
        local_weight = float(num_views or 0)
    w = float(local_weight) if num_views else 0.0
    i2t = (global_i2t + w * local_i2t) / (1.0 + w)
    t2i = (global_t2i + w * local_t2i) / (1.0 + w)
    clip_loss = 0.5 * (i2t + t2i)
    diagnostics.update(
        local_i2t_accuracy=local_acc_i2t,
        local_t2i_accuracy=local_acc_t2i,
        global_i2t_loss=global_i2t,
        global_t2i_loss=global_t2i,
        local_i2t_loss=local_i2t,
        local_t2i_loss=local_t2i,
        i2t_loss=i2t,
        t2i_loss=t2i,
        clip_loss=clip_loss,
    )
    loss = clip_loss * (2.0 if reduction == "sum" else 1.0)
    return loss, diagnostics


def _global_diagnostics(logits):
    n = ops.cast(ops.shape(logits)[0], logits.dtype)
    eye = ops.eye(ops.shape(logits)[0], dtype=logits.dtype)
    return {
        "i2t_accuracy": _accuracy(logits),
        "t2i_accuracy": _accuracy(ops.transpose(logits)),
        "positive_logit": ops.sum(logits * eye) / n,
        # With a batch of one there are no negatives: report 0, not NaN.
        "negative_logit": ops.sum(logits * (1.0 - eye)) / ops.maximum(n * n - n, 1.0),
    }
