"""The SSL add-ons of the improved CLIP recipe: SiamLIP, BYOLIP, BarLIP, SwALIP.

Pure functions of embeddings, like `keras_towers.objectives`: each returns
`(loss, diagnostics)` and is *added* to `objectives_rocket.cl2l_loss` (the
official code's "online eval with clip loss" comment is misleading: the CL2L
loss is optimised too). `ADDONS` records, per add-on, the recipe's weight and
rules, and `combine_addon` applies them.

Inputs (`B` pairs in the global batch, `A` augmented views per modality):

- SiamLIP / BYOLIP: predictor outputs `p` and projector targets `v`, of any
  norm (the cosine normalises them);
- BarLIP: projector outputs `v`, batch-normalised by the projector's last
  layer;
- SwALIP: the CL2L augmented-view ("h") embeddings, L2-normalised, and their
  logit scale `s_h` (already exponentiated).

Augmented views are `(A, B, D)` arrays or lists of `A` arrays `(B, D)`. The
objectives see the global batch, so the official code's all-reduces (Barlow
correlation, Sinkhorn sums) are not needed.

References:
    - [Fini et al., 2023](https://arxiv.org/abs/2305.08675) ("Improved
      baselines for vision-language pre-training", TMLR; code
      facebookresearch/clip-rocket)
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass

import keras
from keras import ops

from keras_towers.objectives_rocket import _all_or_none
from keras_towers.objectives_rocket import _check_pair
from keras_towers.objectives_rocket import _matrix
from keras_towers.objectives_rocket import _views
from keras_towers.ops import at_least_float32
from keras_towers.ops import l2_normalize
from keras_towers.utils.registry import Registry

#: Diagnostics returned by `siamlip_loss` and `barlip_loss`.
PAIR_TERM_DIAGNOSTICS = ("global_loss", "local_loss")
#: Diagnostics returned by `swalip_loss`.
SWALIP_DIAGNOSTICS = ("i2t_loss", "t2i_loss", "target_max")


# --- SiamLIP / BYOLIP ----------------------------------------------------------


def _negative_cosine(p, v):
    """`2 - 2 mean_i cos(p_i, sg(v_i))` over the batch axis (-2)."""
    p = l2_normalize(p)
    v = ops.stop_gradient(l2_normalize(v))
    return 2.0 - 2.0 * ops.mean(ops.sum(p * v, axis=-1), axis=-1)


def siamlip_loss(
    p_image,
    p_text,
    v_image,
    v_text,
    p_images=None,
    p_texts=None,
    v_images=None,
    v_texts=None,
):
    """SiamLIP / BYOLIP: cross-modal predictions of stop-gradient targets.

    `D(p, v) = 2 - 2 mean_i cos(p_i, sg(v_i))`. Cross-modal only: the image
    predictor predicts the text target and vice versa, on the global pair
    and on every augmented pair (a, b):

    `L = [D(p_I, v_T) + D(p_T, v_I) + sum_ab D(p_I^a, v_T^b)
    + sum_ab D(p_T^a, v_I^b)] / (2 + 2 A^2)` (10 terms for `A = 2`).

    The targets `v` receive **no gradient**. SiamLIP (SimSiam-style) takes
    `v` from the online model's projectors (`Linear-BN-ReLU-Linear-BN`
    without affine), `p = predictor(v)`. BYOLIP is the same function with
    every `v` from an EMA copy of the whole model (run in training mode,
    without gradient), updated after each optimizer step with
    `ema_update(..., momentum=0.99)` over the parameters only.

    Args:
        p_image: tensor `(B, D)`, image predictor output (any norm).
        p_text: tensor `(B, D)`, text predictor output.
        v_image: tensor `(B, D)`, image projector output (the target).
        v_text: tensor `(B, D)`, text projector output (the target).
        p_images: optional `(A, B, D)` or list of `(B, D)`, augmented-view
            image predictions; give all four augmented arguments or none.
        p_texts: optional, the augmented text predictions.
        v_images: optional, the augmented image targets.
        v_texts: optional, the augmented text targets.

    Returns:
        `(loss, diagnostics)`: a float32 scalar (in `[0, 4]`) and a dict with
        `global_loss` (mean of the 2 global terms) and `local_loss` (mean of
        the `2 A^2` augmented terms; 0 without augmented views).

    Example:

    ```python
    from keras_towers import objectives_ssl
    p_i, p_t, v_i, v_t = (np.random.normal(size=(8, 4)) for _ in range(4))
    loss, parts = objectives_ssl.siamlip_loss(p_i, p_t, v_i, v_t)
    ```

    References:
        - [Fini et al., 2023](https://arxiv.org/abs/2305.08675)
        - [Chen & He, 2021](https://arxiv.org/abs/2011.10566) (SimSiam)
        - [Grill et al., 2020](https://arxiv.org/abs/2006.07733) (BYOL)
    """
    p_image = _matrix(p_image, "p_image")
    dtype = p_image.dtype
    p_text = _matrix(p_text, "p_text", dtype)
    v_image = _matrix(v_image, "v_image", dtype)
    v_text = _matrix(v_text, "v_text", dtype)
    _check_pair(p_image, v_text, "p_image", "v_text")
    _check_pair(p_text, v_image, "p_text", "v_image")
    _check_pair(p_image, p_text, "p_image", "p_text")
    global_loss = 0.5 * (
        _negative_cosine(p_image, v_text) + _negative_cosine(p_text, v_image)
    )
    local_loss = ops.zeros((), dtype)
    num_views = 0
    if _all_or_none(
        p_images=p_images, p_texts=p_texts, v_images=v_images, v_texts=v_texts
    ):
        p_images = _views(p_images, "p_images", dtype)
        p_texts = _views(p_texts, "p_texts", dtype)
        v_images = _views(v_images, "v_images", dtype)
        v_texts = _views(v_texts, "v_texts", dtype)
        _check_pair(p_images, v_texts, "p_images", "v_texts")
        _check_pair(p_texts, v_images, "p_texts", "v_images")
        _check_pair(p_images, p_texts, "p_images", "p_texts")
        _check_pair(p_image, p_images[0], "p_image", "p_images")
        num_views = p_images.shape[0]
        # (a, b): prediction of view a against target of view b.
        i2t = _negative_cosine(p_images[:, None], v_texts[None, :])
        t2i = _negative_cosine(p_texts[:, None], v_images[None, :])
        local_loss = 0.5 * (ops.mean(i2t) + ops.mean(t2i))
    local_terms = float(2 * num_views**2)
    loss = (2.0 * global_loss + local_terms * local_loss) / (2.0 + local_terms)
    return loss, {"global_loss": global_loss, "local_loss": local_loss}


def ema_update(target_values: Sequence, online_values: Sequence, momentum=0.99):
    """BYOL's exponential moving average, as new values (nothing is assigned).

    `t <- m t + (1 - m) o` for every pair, with `m` constant (BYOLIP:
    0.99). clip-rocket averages the model's *parameters* only, after every
    optimizer step: BN moving statistics are not averaged (the EMA copy runs
    in training mode and keeps its own). `ema_assign` writes the values.

    Args:
        target_values: sequence of `keras.Variable`s, tensors or arrays (the
            EMA copy).
        online_values: sequence of the same length and shapes (the trained
            model); they carry no gradient into the result.
        momentum: float or scalar tensor `m` in `[0, 1]`.

    Returns:
        A list of tensors, one per pair, in the target's dtype.

    Example:

    ```python
    from keras_towers import objectives_ssl
    objectives_ssl.ema_update([np.zeros(2)], [np.ones(2)], 0.9)  # [[0.1, 0.1]]
    ```
    """
    if isinstance(momentum, (int, float)) and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"`momentum` must be in [0, 1]. Received: {momentum}")
    target_values, online_values = list(target_values), list(online_values)
    if len(target_values) != len(online_values):
        raise ValueError(
            "`target_values` and `online_values` must have the same length. "
            f"Received: {len(target_values)} != {len(online_values)}"
        )
    updated = []
    for i, (target, online) in enumerate(
        zip(target_values, online_values, strict=True)
    ):
        target = ops.convert_to_tensor(target)
        online = ops.stop_gradient(ops.convert_to_tensor(online))
        if tuple(target.shape) != tuple(online.shape):
            raise ValueError(
                f"Shapes of `target_values[{i}]` and `online_values[{i}]` differ: "
                f"{tuple(target.shape)} != {tuple(online.shape)}"
            )
        m = ops.cast(momentum, target.dtype)
        updated.append(m * target + (1.0 - m) * ops.cast(online, target.dtype))
    return updated


def ema_assign(target_variables: Sequence, online_variables: Sequence, momentum=0.99):
    """Assign `ema_update`'s values to the target `keras.Variable`s.

    Example:

    ```python
    from keras_towers import objectives_ssl
    target = [keras.Variable(np.zeros(2))]
    objectives_ssl.ema_assign(target, [np.ones(2)], 0.9)  # target: [0.1, 0.1]
    ```
    """
    target_variables = list(target_variables)
    for i, variable in enumerate(target_variables):
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"`target_variables[{i}]` must be a keras.Variable. "
                f"Received: {type(variable).__name__}"
            )
    values = ema_update(target_variables, online_variables, momentum)
    for variable, value in zip(target_variables, values, strict=True):
        variable.assign(value)


# --- BarLIP --------------------------------------------------------------------


def _barlow(v_image, v_text, redundancy_weight: float, scale: float):
    n = ops.cast(ops.shape(v_image)[0], v_image.dtype)
    corr = ops.matmul(ops.transpose(v_image), v_text) / n
    eye = ops.eye(ops.shape(corr)[0], dtype=corr.dtype)
    on_diagonal = ops.sum(ops.square(1.0 - ops.sum(corr * eye, axis=-1)))
    off_diagonal = ops.sum(ops.square(corr * (1.0 - eye)))
    return scale * (on_diagonal + redundancy_weight * off_diagonal)


def barlip_loss(
    v_image,
    v_text,
    v_images=None,
    v_texts=None,
    *,
    redundancy_weight: float = 5e-3,
    scale: float = 0.025,
):
    """BarLIP: cross-modal Barlow Twins on batch-normalised projections.

    `C = v_I^T v_T / N` (`D x D`) and
    `L(v_I, v_T) = scale * [sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2]`,
    averaged over the global pair and every augmented pair (a, b):
    `(L(v_I, v_T) + sum_ab L(v_I^a, v_T^b)) / (1 + A^2)`.

    The inputs must be **batch-normalised outside**, by the projector's last
    layer (clip-rocket: `Linear(3000)-BN-ReLU-Linear(3000)-BN-ReLU-
    Linear(8192)-BN`, affine BN, synchronised across replicas): the function
    does not centre or scale them, so `C` is a correlation only for such
    inputs. Both sides receive gradients (no stop-gradient in Barlow Twins).

    Args:
        v_image: tensor `(N, D)`, the image projector's BN output.
        v_text: tensor `(N, D)`, the text projector's BN output.
        v_images: optional `(A, N, D)` or list of `(N, D)`, augmented views.
        v_texts: optional, the same for the augmented captions.
        redundancy_weight: float `lambda >= 0` (5e-3).
        scale: float loss scale (0.025).

    Returns:
        `(loss, diagnostics)`: a float32 scalar and a dict with
        `global_loss` and `local_loss` (mean over the `A^2` augmented
        pairs; 0 without augmented views).

    Example:

    ```python
    from keras_towers import objectives_ssl
    v_i, v_t = np.random.normal(size=(2, 16, 32))
    loss, parts = objectives_ssl.barlip_loss(v_i, v_t)
    ```

    References:
        - [Fini et al., 2023](https://arxiv.org/abs/2305.08675)
        - [Zbontar et al., 2021](https://arxiv.org/abs/2103.03230) (Barlow
          Twins)
    """
    redundancy_weight, scale = float(redundancy_weight), float(scale)
    if not redundancy_weight >= 0.0:
        raise ValueError(
            f"`redundancy_weight` must be >= 0. Received: {redundancy_weight}"
        )
    v_image = _matrix(v_image, "v_image")
    dtype = v_image.dtype
    v_text = _matrix(v_text, "v_text", dtype)
    _check_pair(v_image, v_text, "v_image", "v_text")
    global_loss = _barlow(v_image, v_text, redundancy_weight, scale)
    local_loss = ops.zeros((), dtype)
    num_views = 0
    if _all_or_none(v_images=v_images, v_texts=v_texts):
        v_images = _views(v_images, "v_images", dtype)
        v_texts = _views(v_texts, "v_texts", dtype)
        _check_pair(v_images, v_texts, "v_images", "v_texts")
        _check_pair(v_image, v_images[0], "v_image", "v_images")
        num_views = v_images.shape[0]
        # One D x D matrix at a time: D is 8192 in the recipe.
        terms = [
            _barlow(v_images[a], v_texts[b], redundancy_weight, scale)
            for a in range(num_views)
            for b in range(num_views)
        ]
        local_loss = ops.mean(ops.stack(terms))
    local_terms = float(num_views**2)
    loss = (global_loss + local_terms * local_loss) / (1.0 + local_terms)
    return loss, {"global_loss": global_loss, "local_loss": local_loss}


# --- SwALIP --------------------------------------------------------------------


def sinkhorn_knopp(scores, epsilon: float = 0.05, iterations: int = 3):
    """Sinkhorn-Knopp soft assignments of samples (rows) to prototypes (columns).

    As in SwAV: `Q = exp(scores / epsilon)`, divided by its total; then
    `iterations` times: divide each prototype column by its sum and by `K`
    (every prototype holds `1/K` of the mass), then each sample row by its
    sum and by `B` (every sample holds `1/B`); finally multiply by `B`.
    **Rows of the result sum to 1** (each is a sample's assignment); columns
    sum to about `B / K` (exactly in the limit of many iterations). The
    same steps run in log space (`logsumexp`), so large `scores / epsilon`
    neither overflow nor leave a row of zeros. The result carries no
    gradient.

    Args:
        scores: tensor `(..., B, K)`, e.g. cosine similarities of `B` samples
            to `K` prototypes; leading axes are independent problems.
        epsilon: float `> 0`, the entropic regularisation (0.05).
        iterations: int `>= 1` (3).

    Returns:
        Tensor `(..., B, K)` (float32, or float64 for float64 scores).

    Example:

    ```python
    from keras_towers import objectives_ssl
    q = objectives_ssl.sinkhorn_knopp(np.random.normal(size=(6, 6)))
    # q.sum(-1) == 1
    ```

    References:
        - [Caron et al., 2020](https://arxiv.org/abs/2006.09882) (SwAV)
    """
    epsilon, iterations = float(epsilon), int(iterations)
    if not epsilon > 0.0:
        raise ValueError(f"`epsilon` must be > 0. Received: {epsilon}")
    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1. Received: {iterations}")
    scores = ops.stop_gradient(at_least_float32(scores))
    if len(scores.shape) < 2:
        raise ValueError(
            "`scores` must have rank >= 2 (samples, prototypes). "
            f"Received: scores.shape={tuple(scores.shape)}"
        )
    log_samples = ops.log(ops.cast(ops.shape(scores)[-2], scores.dtype))
    log_prototypes = ops.log(ops.cast(ops.shape(scores)[-1], scores.dtype))
    # The division by the total is left out: the first column step cancels it.
    log_q = scores * (1.0 / epsilon)
    for _ in range(iterations):
        log_q = log_q - ops.logsumexp(log_q, axis=-2, keepdims=True) - log_prototypes
        log_q = log_q - ops.logsumexp(log_q, axis=-1, keepdims=True) - log_samples
    return ops.stop_gradient(ops.exp(log_q + log_samples))


def _soft_cross_entropy(logits, targets):
    return -ops.mean(ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1))


def swalip_loss(
    h_images,
    h_texts,
    h_logit_scale,
    *,
    epsilon: float = 0.05,
    iterations: int = 3,
):
    """SwALIP: swapped prediction of Sinkhorn assignments to in-batch prototypes.

    The other modality's augmented embeddings are the prototypes. For image
    view `a` and text view `b`, `L^I_ab = h_I^a (h_T^b)^T` (cosines) and
    `L^T_ab = h_T^a (h_I^b)^T`; targets `Q^X_ab = sinkhorn_knopp(sg(L^X_ab),
    epsilon, iterations)`. The predictions of pair `(a, b)` are matched to
    the targets of the other pair `(1 - a, 1 - b)`:

    `L = mean_ab [CE(s_h L^I_ab, Q^I_{1-a,1-b}) + CE(s_h L^T_ab,
    Q^T_{1-a,1-b})] / 2`, with `CE(x, q) = -mean_i sum_j q_ij log softmax(x_i)_j`.

    Exactly 2 augmented views (the code's swap assumes 2). The targets
    receive no gradient. The recipe adds `0.2 * L` to a CL2L loss **without
    label smoothing** (the code asserts it): this function returns the
    unweighted `L`; `combine_addon(..., "swalip")` applies the weight
    (`ADDONS.get("swalip").weight`) and refuses label smoothing.

    Args:
        h_images: tensor `(2, B, D)` or list of 2 tensors `(B, D)`,
            L2-normalised augmented image embeddings (the CL2L "h" head).
        h_texts: the same for the augmented captions.
        h_logit_scale: scalar `s_h` (already exponentiated), the CL2L
            augmented-view scale.
        epsilon: float, Sinkhorn's regularisation (0.05).
        iterations: int, Sinkhorn iterations (3).

    Returns:
        `(loss, diagnostics)`: a float32 scalar and a dict with `i2t_loss`,
        `t2i_loss` (the two directions, averaged over pairs) and
        `target_max` (the mean largest target probability, 1 for hard
        assignments).

    Example:

    ```python
    from keras_towers import objectives_ssl
    h_i, h_t = keras_towers.ops.l2_normalize(np.random.normal(size=(2, 2, 8, 16)))
    loss, parts = objectives_ssl.swalip_loss(h_i, h_t, 10.0)
    ```

    References:
        - [Fini et al., 2023](https://arxiv.org/abs/2305.08675)
        - [Caron et al., 2020](https://arxiv.org/abs/2006.09882) (SwAV)
    """
    h_images = _views(h_images, "h_images")
    dtype = h_images.dtype
    h_texts = _views(h_texts, "h_texts", dtype)
    _check_pair(h_images, h_texts, "h_images", "h_texts")
    if h_images.shape[0] != 2:
        raise ValueError(
            "SwALIP swaps two augmented views: `h_images` and `h_texts` must "
            f"hold exactly 2 views. Received: {h_images.shape[0]}"
        )
    # (a, b, i, j): image i of view a against text j of view b.
    i2t = ops.einsum("aid,bjd->abij", h_images, h_texts)
    # (a, b, i, j): text i of view a against image j of view b.
    t2i = ops.transpose(i2t, (1, 0, 3, 2))
    scale = ops.cast(h_logit_scale, dtype)

    def swapped(logits):
        targets = sinkhorn_knopp(logits, epsilon, iterations)
        targets = ops.flip(ops.flip(targets, axis=0), axis=1)
        return _soft_cross_entropy(scale * logits, targets), targets

    i2t_loss, i2t_targets = swapped(i2t)
    t2i_loss, t2i_targets = swapped(t2i)
    target_max = 0.5 * (
        ops.mean(ops.max(i2t_targets, axis=-1))
        + ops.mean(ops.max(t2i_targets, axis=-1))
    )
    loss = 0.5 * (i2t_loss + t2i_loss)
    return loss, {"i2t_loss": i2t_loss, "t2i_loss": t2i_loss, "target_max": target_max}


# --- add-ons on top of CL2L ----------------------------------------------------


@dataclass(frozen=True)
class AddOn:
    """An SSL add-on of the recipe: its objective and the recipe's rules.

    Args:
        name: str, the registry key.
        objective: the function computing its `(loss, diagnostics)`.
        weight: float, the recipe's weight of the add-on against CL2L.
        label_smoothing: bool, whether CL2L may smooth its local terms.
        ema_target: bool, whether the targets come from an EMA copy
            (`ema_update`) instead of the online model.
    """

    name: str
    objective: Callable
    weight: float = 1.0
    label_smoothing: bool = True
    ema_target: bool = False


ADDONS = Registry(
    "SSL add-on",
    hint="Register one with `keras_towers.objectives_ssl.ADDONS.add(name, AddOn(...))`.",
)
for _addon in (
    AddOn("siamlip", siamlip_loss),
    AddOn("byolip", siamlip_loss, ema_target=True),
    AddOn("barlip", barlip_loss),
    AddOn("swalip", swalip_loss, weight=0.2, label_smoothing=False),
):
    ADDONS.add(_addon.name, _addon)


def combine_addon(
    clip,
    addon,
    name: str,
    *,
    label_smoothing: float,
    weight=None,
):
    """The recipe's total: `L = L_CL2L + w L_addon`.

    Args:
        clip: `(loss, diagnostics)` of `cl2l_loss`.
        addon: `(loss, diagnostics)` of the add-on's objective.
        name: str, a name in `ADDONS` (`siamlip`, `byolip`, `barlip`,
            `swalip`).
        label_smoothing: float, the `label_smoothing` given to `cl2l_loss`;
            an add-on that forbids it (SwALIP) raises if it is not 0.
        weight: float or scalar tensor `w`, or `None` for the recipe's
            (`ADDONS.get(name).weight`: 0.2 for SwALIP, 1 otherwise).

    Returns:
        `(loss, diagnostics)`: the CL2L diagnostics unchanged, plus
        `<name>_loss` (unweighted) and the add-on's diagnostics prefixed
        with `<name>_`.

    Example:

    ```python
    from keras_towers import objectives_rocket, objectives_ssl
    z_i, z_t = keras_towers.ops.l2_normalize(np.random.normal(size=(2, 8, 16)))
    h_i, h_t = keras_towers.ops.l2_normalize(np.random.normal(size=(2, 2, 8, 16)))
    clip = objectives_rocket.cl2l_loss(
        z_i, z_t, 1 / 0.07, h_i, h_t, 10.0, label_smoothing=0.0
    )
    swalip = objectives_ssl.swalip_loss(h_i, h_t, 10.0)
    loss, diagnostics = objectives_ssl.combine_addon(
        clip, swalip, "swalip", label_smoothing=0.0
    )
    ```
    """
    spec = ADDONS.get(name)
    if float(label_smoothing) and not spec.label_smoothing:
        raise ValueError(
            f"The {name} add-on needs CL2L without label smoothing "
            f"(clip-rocket asserts it). Received: label_smoothing={label_smoothing}"
        )
    clip_loss, clip_diagnostics = clip
    addon_loss, addon_diagnostics = addon
    clip_loss = at_least_float32(clip_loss)
    dtype = clip_loss.dtype
    addon_loss = ops.cast(addon_loss, dtype)
    weight = spec.weight if weight is None else weight
    diagnostics = dict(clip_diagnostics)
    diagnostics[f"{name}_loss"] = addon_loss
    for key, value in addon_diagnostics.items():
        diagnostics[f"{name}_{key}"] = value
    return clip_loss + ops.cast(weight, dtype) * addon_loss, diagnostics
