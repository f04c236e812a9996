"""ProtoCLIP's objectives: prototype targets, prototype losses and PBT.

Pure functions of embeddings, like `keras_towers.objectives`: no model, no
clustering. The episodic machinery (eval pass, k-means, cluster-id look-up)
produces the inputs; these functions turn them into `(loss, diagnostics)`.

Notation (N pairs in the global batch, K clusters, D feature width):

- `z_i`: L2-normalised projected features of one modality, `(N, D)`;
- `P`: the student's prototypes in that modality's space, `(K, D)`, built by
  Prototypical Back Translation (`pbt_prototypes`) from the other modality's
  clusters;
- `C`: the raw (not renormalised) k-means centroids of the target modality,
  `(K, D)`, and `y_i` the target-modality cluster id of pair `i`;
- `s`: the prototype logit scale, **already exponentiated**, exactly as
  `keras_towers.objectives.infonce_loss` takes it (models keep the log-space
  variable `theta` and pass `s = exp(theta)`).

The losses are kept out of `keras_towers.objectives` on purpose: that module's
registry holds pairwise objectives with the `(image_embeddings,
text_embeddings, **kwargs)` signature that `CLIP(loss=...)` selects by name;
the prototype losses take other inputs and are not CLIP losses.

References:
    - [Chen et al., 2022](https://arxiv.org/abs/2206.10996) (ProtoCLIP)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_towers.objectives import PAIR_DIAGNOSTICS
from keras_towers.ops import at_least_float32

#: Diagnostics returned by `prototype_loss`.
PROTO_DIAGNOSTICS = ("accuracy", "target_entropy")
#: Diagnostics returned by `external_prototype_loss`.
EXTERNAL_DIAGNOSTICS = ("accuracy",)
#: Prefixes under which `protoclip_loss` reports each directional term.
PROTO_TERMS = ("proto_i2t", "proto_t2i")
EXTERNAL_TERMS = ("external_i2e", "external_t2e")


def _static_shape(x, rank: int, name: str) -> tuple:
    shape = tuple(x.shape)
    if len(shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank}. Received: {name}.shape={shape}"
        )
    return shape


def _check_same(a, b, what: str) -> None:
    # Static dims may be None (symbolic batch): only known ones are compared.
    if a is not None and b is not None and a != b:
        raise ValueError(f"{what} differ: {a} != {b}")


def _integer_ids(ids, num: int | None, name: str):
    """`ids` as an int32 tensor of rank 1; host arrays are range-checked."""
    if isinstance(ids, (np.ndarray, list, tuple)):
        host = np.asarray(ids)
        if not np.issubdtype(host.dtype, np.integer):
            raise ValueError(
                f"`{name}` must hold integers. Received dtype {host.dtype}"
            )
        if num is not None and host.size and (host.min() < 0 or host.max() >= num):
            raise ValueError(
                f"`{name}` must lie in [0, {num}). "
                f"Received values in [{host.min()}, {host.max()}]"
            )
    ids = ops.convert_to_tensor(ids)
    dtype = keras.backend.standardize_dtype(ids.dtype)
    if "int" not in dtype:
        raise ValueError(f"`{name}` must hold integers. Received dtype {dtype}")
    _static_shape(ids, 1, name)
    return ops.cast(ids, "int32")


def _student_logits(features, prototypes, logit_scale):
    """`s * z P^T` in (at least) float32, with shape checks."""
    features = at_least_float32(features)
    prototypes = ops.cast(at_least_float32(prototypes), features.dtype)
    f_shape = _static_shape(features, 2, "features")
    p_shape = _static_shape(prototypes, 2, "prototypes")
    _check_same(f_shape[1], p_shape[1], "Feature widths of `features` and `prototypes`")
    logit_scale = ops.cast(logit_scale, features.dtype)
    return logit_scale * ops.matmul(features, ops.transpose(prototypes))


def prototype_targets(cluster_ids, centroids, target_temperature: float = 0.01):
    """ProtoCLIP's soft targets: prototype-to-prototype similarities.

    `q_ij = softmax_j(<C_{y_i}, C_j> / tau_t)`: the target of pair `i` is how
    similar its own target-modality cluster is to every cluster, with `C` the
    raw k-means centroids (not renormalised, as in the official code). The
    targets carry no gradient.

    With raw centroids the peak of row `i` is at `y_i` only when its centroid
    is at least as long as its neighbours (always true for equal-norm
    centroids); a short centroid can point to a longer neighbour.

    Args:
        cluster_ids: int tensor or array `(N,)`, the target-modality cluster
            id `y_i` of each pair, in `[0, K)` (checked for NumPy inputs).
        centroids: tensor `(K, D)`, the target modality's k-means centroids.
        target_temperature: float `tau_t > 0` (ProtoCLIP: 0.01).

    Returns:
        Tensor `(N, K)` (float32, or float64 for float64 centroids) whose
        rows sum to 1.

    Example:

    ```python
    from keras_towers import objectives_proto
    centroids = np.eye(3, dtype="float32")
    q = objectives_proto.prototype_targets(np.array([2, 0]), centroids)
    # q[0] peaks at cluster 2, q[1] at cluster 0
    ```

    References:
        - [Chen et al., 2022](https://arxiv.org/abs/2206.10996)
    """
    target_temperature = float(target_temperature)
    if not target_temperature > 0.0:
        raise ValueError(
            "`target_temperature` must be > 0. "
            f"Received: target_temperature={target_temperature}"
        )
    centroids = at_least_float32(centroids)
    num_clusters = _static_shape(centroids, 2, "centroids")[0]
    cluster_ids = _integer_ids(cluster_ids, num_clusters, "cluster_ids")
    centroids = ops.stop_gradient(centroids)
    # Gather first: N x K x D, cheaper than the K x K Gram matrix for K >> N.
    own = ops.take(centroids, cluster_ids, axis=0)
    logits = ops.matmul(own, ops.transpose(centroids)) * (1.0 / target_temperature)
    return ops.stop_gradient(ops.softmax(logits, axis=-1))


def prototype_loss(features, prototypes, targets, logit_scale):
    """Soft-target cross-entropy of features against prototypes.

    `a_ij = s * <z_i, P_j>` and
    `L = -(1/N) sum_i sum_j q_ij log softmax_j(a_ij)`, computed in float32
    with a stable log-softmax. For image -> text (`L_I->T`): `z` = image
    features, `P` = `pbt_prototypes(image features, text cluster ids, K)`
    and `q` = `prototype_targets(text cluster ids, text centroids)`; text ->
    image is the mirror image.

    Args:
        features: tensor `(N, D)`, L2-normalised student features.
        prototypes: tensor `(K, D)`, the student's prototypes (PBT means).
        targets: tensor `(N, K)`, rows summing to 1 (`prototype_targets`).
        logit_scale: scalar multiplier `s` (already exponentiated).

    Returns:
        `(loss, diagnostics)`: a float32 scalar and a dict with `accuracy`
        (fraction of pairs whose top logit is their top target) and
        `target_entropy` (mean entropy of the target rows, in nats).

    Example:

    ```python
    from keras_towers import objectives_proto
    z = keras_towers.ops.l2_normalize(np.random.normal(size=(4, 8)))
    centroids = np.random.normal(size=(3, 8)).astype("float32")
    ids = np.array([0, 1, 2, 1])
    q = objectives_proto.prototype_targets(ids, centroids)
    p = objectives_proto.pbt_prototypes(z, ids, 3)
    loss, diagnostics = objectives_proto.prototype_loss(z, p, q, 1 / 0.07)
    ```

    References:
        - [Chen et al., 2022](https://arxiv.org/abs/2206.10996)
    """
    logits = _student_logits(features, prototypes, logit_scale)
    targets = ops.cast(at_least_float32(targets), logits.dtype)
    t_shape = _static_shape(targets, 2, "targets")
    _check_same(logits.shape[0], t_shape[0], "Rows of `features` and `targets`")
    _check_same(logits.shape[1], t_shape[1], "Clusters of `prototypes` and `targets`")
    targets = ops.stop_gradient(targets)
    loss = -ops.mean(ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1))
    hits = ops.equal(ops.argmax(logits, axis=-1), ops.argmax(targets, axis=-1))
    # q log q -> 0 as q -> 0; the clamp only avoids 0 * -inf.
    entropy = -ops.sum(targets * ops.log(ops.maximum(targets, 1e-30)), axis=-1)
    return loss, {
        "accuracy": ops.mean(ops.cast(hits, logits.dtype)),
        "target_entropy": ops.mean(entropy),
    }


def external_prototype_loss(features, prototypes, labels, logit_scale):
    """Hard-label cross-entropy against external-teacher prototypes.

    `L = CE(s * z P^T, y)` = `-(1/N) sum_i log softmax_j(s <z_i, P_j>)[y_i]`:
    `y` are the teacher's cluster ids and `P` the PBT means of this
    modality's features over the teacher's clusters (ProtoCLIP's `L_I->E` and
    `L_T->E`). The teacher's own centroids are not used.

    Args:
        features: tensor `(N, D)`, L2-normalised student features.
        prototypes: tensor `(K, D)`, `pbt_prototypes(features, labels, K)`
            over the episode.
        labels: int tensor or array `(N,)` in `[0, K)` (checked for NumPy
            inputs), the teacher's cluster id of each pair.
        logit_scale: scalar multiplier `s` (already exponentiated).

    Returns:
        `(loss, diagnostics)`: a float32 scalar and a dict with `accuracy`
        (fraction of pairs whose top logit is their label).

    Example:

    ```python
    from keras_towers import objectives_proto
    z = keras_towers.ops.l2_normalize(np.random.normal(size=(4, 8)))
    labels = np.array([0, 1, 1, 0])
    p = objectives_proto.pbt_prototypes(z, labels, 2)
    loss, diagnostics = objectives_proto.external_prototype_loss(
        z, p, labels, 1 / 0.07
    )
    ```

    References:
        - [Chen et al., 2022](https://arxiv.org/abs/2206.10996)
    """
    logits = _student_logits(features, prototypes, logit_scale)
    labels = _integer_ids(labels, logits.shape[1], "labels")
    _check_same(logits.shape[0], labels.shape[0], "Rows of `features` and `labels`")
    onehot = ops.one_hot(labels, ops.shape(logits)[1], dtype=logits.dtype)
    loss = -ops.mean(ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1))
    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    hits = ops.cast(ops.equal(predicted, labels), logits.dtype)
    return loss, {"accuracy": ops.mean(hits)}


def pbt_prototypes(features_other, cluster_ids, num_clusters: int):
    """Prototypical Back Translation: cluster means in another space.

    Row `k` is the mean of `features_other` over the samples whose cluster id
    is `k`: `P_k = sum_{i: y_i = k} x_i / |{i: y_i = k}|`. The clusters come
    from one modality and the features from the other (e.g. image features
    grouped by text cluster give the image-space prototypes `P^{I<-T}`).
    **Empty clusters give zero rows**, whose logits are 0 in the losses. The
    means are not renormalised. Runs on the backend (`segment_sum`), on NumPy
    arrays or tensors.

    Args:
        features_other: tensor or array `(M, D)`, features of the episode.
        cluster_ids: int tensor or array `(M,)` in `[0, num_clusters)`
            (checked for NumPy inputs).
        num_clusters: int `K`, the number of rows returned.

    Returns:
        Tensor `(K, D)`, float32 (float64 for float64 features).

    Example:

    ```python
    from keras_towers import objectives_proto
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "float32")
    objectives_proto.pbt_prototypes(x, np.array([0, 0, 2]), 3)
    # [[0.5, 0.5], [0, 0], [1, 1]]
    ```

    References:
        - [Chen et al., 2022](https://arxiv.org/abs/2206.10996)
    """
    num_clusters = int(num_clusters)
    if num_clusters < 1:
        raise ValueError(f"`num_clusters` must be >= 1. Received: {num_clusters}")
    features_other = at_least_float32(features_other)
    f_shape = _static_shape(features_other, 2, "features_other")
    cluster_ids = _integer_ids(cluster_ids, num_clusters, "cluster_ids")
    _check_same(
        f_shape[0], cluster_ids.shape[0], "Rows of `features_other` and `cluster_ids`"
    )
    sums = ops.segment_sum(features_other, cluster_ids, num_segments=num_clusters)
    ones = ops.ones(ops.shape(cluster_ids), dtype=features_other.dtype)
    counts = ops.segment_sum(ones, cluster_ids, num_segments=num_clusters)
    # Empty clusters: 0 / 1 = 0.
    return sums / ops.maximum(counts, 1.0)[:, None]


def protoclip_diagnostics(
    clip_diagnostics=PAIR_DIAGNOSTICS, external: bool = False
) -> tuple:
    """Names of the diagnostics `protoclip_loss` returns (for metrics).

    Example:

    ```python
    keras_towers.objectives_proto.protoclip_diagnostics(external=True)
    # (..., "clip_loss", "proto_i2t_loss", "proto_i2t_accuracy", ...)
    ```
    """
    names = [*clip_diagnostics, "clip_loss"]
    for prefix in PROTO_TERMS:
        names += [f"{prefix}_loss"] + [f"{prefix}_{k}" for k in PROTO_DIAGNOSTICS]
    if external:
        for prefix in EXTERNAL_TERMS:
            names += [f"{prefix}_loss"]
            names += [f"{prefix}_{k}" for k in EXTERNAL_DIAGNOSTICS]
    return tuple(names)


def protoclip_loss(
    clip,
    proto_i2t,
    proto_t2i,
    external_i2e=None,
    external_t2e=None,
    *,
    clip_weight=1.0,
    proto_weight=1.0,
    external_weight=1.0,
):
    """ProtoCLIP's total loss from already computed terms.

    `L = w_clip L_CLIP + w_proto (L_I->T + L_T->I) / 2
    + w_ext (L_I->E + L_T->E) / 2`. Each term is the `(loss, diagnostics)`
    pair of its objective; the external terms are both given or both
    omitted. Weights may be floats or scalar tensors (e.g. a variable that an
    episode callback sets to 0 for the InfoNCE warm-up and LiT episodes, so
    the compiled step is not retraced).

    Args:
        clip: `(loss, diagnostics)` of the CLIP objective
            (`keras_towers.objectives.infonce_loss`).
        proto_i2t: `(loss, diagnostics)` of `prototype_loss` for image
            features against image-space prototypes of the text clusters.
        proto_t2i: the mirror image.
        external_i2e: optional `(loss, diagnostics)` of
            `external_prototype_loss` on image features.
        external_t2e: optional, the same on text features.
        clip_weight: float or scalar tensor `w_clip`.
        proto_weight: float or scalar tensor `w_proto`.
        external_weight: float or scalar tensor `w_ext`.

    Returns:
        `(loss, diagnostics)`: the weighted sum and a dict with the CLIP
        diagnostics unchanged, `clip_loss`, and per term `<term>_loss` plus
        its diagnostics prefixed, e.g. `proto_i2t_loss`,
        `proto_i2t_accuracy`, `external_t2e_accuracy` (names as listed by
        `protoclip_diagnostics`).

    Example:

    ```python
    from keras_towers import objectives, objectives_proto
    clip = objectives.infonce_loss(u, v, 1 / 0.07)
    i2t = objectives_proto.prototype_loss(z_i, p_i, q_t, s_proto)
    t2i = objectives_proto.prototype_loss(z_t, p_t, q_i, s_proto)
    loss, diagnostics = objectives_proto.protoclip_loss(clip, i2t, t2i)
    ```

    References:
        - [Chen et al., 2022](https://arxiv.org/abs/2206.10996)
    """
    if (external_i2e is None) != (external_t2e is None):
        raise ValueError(
            "Give both external terms (`external_i2e` and `external_t2e`) or neither."
        )
    clip_loss, clip_diagnostics = clip
    clip_loss = at_least_float32(clip_loss)
    dtype = clip_loss.dtype
    diagnostics = dict(clip_diagnostics)
    diagnostics["clip_loss"] = clip_loss

    def weighted_pair(prefixes, terms, weight):
        losses = []
        for prefix, (loss, term_diagnostics) in zip(prefixes, terms, strict=True):
            loss = ops.cast(loss, dtype)
            losses.append(loss)
            diagnostics[f"{prefix}_loss"] = loss
            for key, value in term_diagnostics.items():
                diagnostics[f"{prefix}_{key}"] = value
        return ops.cast(weight, dtype) * (0.5 * (losses[0] + losses[1]))

    loss = ops.cast(clip_weight, dtype) * clip_loss
    loss = loss + weighted_pair(PROTO_TERMS, (proto_i2t, proto_t2i), proto_weight)
    if external_i2e is not None:
        loss = loss + weighted_pair(
            EXTERNAL_TERMS, (external_i2e, external_t2e), external_weight
        )
    return loss, diagnostics
