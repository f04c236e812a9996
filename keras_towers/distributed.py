"""Global negatives on the distribution engines Keras already has.

A contrastive loss needs every image of the global batch against every
caption of it. What that takes depends on the engine:

- **JAX, `keras.distribution`** (`DataParallel`, `ModelParallel`, multi-host
  through `keras.distribution.initialize`): the train step is one SPMD
  program over global arrays, so `compute_loss` already sees the global batch
  and the gradient is the global one. Nothing here runs.
- **TensorFlow, `tf.distribute`** (`MirroredStrategy`,
  `MultiWorkerMirroredStrategy`): `compute_loss` runs once per replica on its
  shard, and the optimizer *sums* the replicas' gradients. `pair_loss` gathers
  both modalities' embeddings from every replica with their gradient
  (`ReplicaContext.all_gather`, whose backward all-reduces and slices), and
  computes this replica's rows against all columns with the objective's rows
  form (open_clip's `local_loss` + `gather_with_grad`: O(B x N) logits per
  replica). Each replica returns its *share* of the global loss (the shares sum
  to it), so the summed gradients are exactly those of the global-batch loss.
  An objective without a rows form is computed whole on the gathered batch by
  every replica and divided by the replica count: also exact, at W times the
  logits cost.
- **PyTorch**: Keras 3.15's torch backend has no `keras.distribution`
  implementation and `fit` does not run under `DistributedDataParallel`, so a
  model trains on one device. `check_fit_supported` refuses `fit` in a
  `torch.distributed` job of more than one process instead of silently
  training W independent models on local negatives.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def replica_context():
    """The TensorFlow replica context of a step running on more than one
    replica, else `None` (one device, JAX's SPMD, torch, cross-replica code)."""
    if keras.config.backend() != "tensorflow":
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas(model=None) -> int:
    """Replicas whose gradients the optimizer sums: those of the current
    `tf.distribute` strategy (or of the one `model` was built under); 1 on
    the other backends."""
    if keras.config.backend() != "tensorflow":
        return 1
    strategy = model.distribute_strategy if model is not None else None
    strategy = strategy or tf.distribute.get_strategy()
    return strategy.num_replicas_in_sync


def all_gather(*tensors):
    """Concatenate each tensor's rows over the replicas, with gradient.

    Outside a multi-replica TensorFlow step the tensors come back unchanged.
    """
    ctx = replica_context()
    if ctx is None:
        return tensors if len(tensors) > 1 else tensors[0]
    gathered = ctx.all_gather(list(tensors), axis=0)
    return tuple(gathered) if len(tensors) > 1 else gathered[0]


def _row_offset(ctx, rows):
    """Index of this replica's first row in the gathered batch (the shards
    may differ in size on a last, partial batch)."""
    sizes = ctx.all_gather(tf.shape(rows)[:1], axis=0)
    before = tf.range(ctx.num_replicas_in_sync) < ctx.replica_id_in_sync_group
    return tf.reduce_sum(tf.where(before, sizes, tf.zeros_like(sizes)))


def pair_loss(objective, image_embeddings, text_embeddings, **kwargs):
    """`objective(image_embeddings, text_embeddings, **kwargs)` over the
    global batch, as this replica's share.

    On one device (or under JAX's SPMD) this is the objective itself. In a
    multi-replica TensorFlow step it is this replica's share of the global
    loss, and the shares of all replicas sum to it; diagnostics are over
    of the global batch.
    Add shares linearly and pass other loss terms through
    `scale_to_replicas`.
    """
    ctx = replica_context()
    if ctx is None:
        return objective(image_embeddings, text_embeddings, **kwargs)
    all_images, all_texts = all_gather(image_embeddings, text_embeddings)
    rows_form = getattr(objective, "rows_form", None)
    if rows_form is None:
        loss, diagnostics = objective(all_images, all_texts, **kwargs)
        return scale_to_replicas(loss), diagnostics
    share, diagnostics = rows_form(
        image_embeddings,
        text_embeddings,
        all_images,
        all_texts,
        _row_offset(ctx, image_embeddings),
        **kwargs,
    )
    # The gradient is the share's; the values are made global (the loss
    # split evenly, diagnostics weighted by rows), so that what Keras logs
    # is the single-device value even when a last batch splits unevenly.
    rows = tf.cast(tf.shape(image_embeddings)[0], share.dtype)
    total_rows = tf.cast(tf.shape(all_images)[0], share.dtype)
    values = [tf.stop_gradient(share)] + [
        tf.cast(v, share.dtype) * rows / total_rows for v in diagnostics.values()
    ]
    totals = ctx.all_reduce("sum", values)
    share = share + tf.stop_gradient(scale_to_replicas(totals[0]) - share)
    diagnostics = dict(zip(diagnostics, totals[1:], strict=True))
    return share, diagnostics


def scale_to_replicas(loss):
    """This replica's share of a loss every replica computes whole (a
    regulariser, a loss on gathered values): `loss / num_replicas()`."""
    replicas = num_replicas()
    if replicas == 1:
        return loss
    return loss * ops.cast(1.0 / replicas, loss.dtype)


def share_to_log(share):
    """A loss share as a value to log: `share * num_replicas()`, whose mean
    over the replicas (what a `keras.metrics.Mean` reports) is the global
    loss."""
    replicas = num_replicas()
    if replicas == 1:
        return share
    return share * ops.cast(replicas, share.dtype)


def first_replica_value(value):
    """The first local replica's part of a `tf.distribute` distributed value
    (anything else unchanged)."""
    if isinstance(value, tf.distribute.DistributedValues):
        return tf.distribute.get_strategy().experimental_local_results(value)[0]
    return value


def check_fit_supported(model) -> None:
    """Refuse a `fit` that could not see global negatives.

    - torch: a `torch.distributed` job of more than one process (Keras'
      torch backend trains one model per process, on local negatives only).
    - TensorFlow: a multi-replica strategy with a method whose training
      needs statistics over the global batch that it does not yet reduce
      across replicas (`model.supports_replicas` is `False`).
    """
    backend = keras.config.backend()
    name = type(model).__name__
    if backend == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise RuntimeError(
                f"{name}.fit runs in a torch.distributed job of "
                f"{dist.get_world_size()} processes, but Keras' torch backend "
                "has no multi-device training: each process would train its "
                "own model on its own negatives. Train on several devices with "
                "KERAS_BACKEND=jax and keras.distribution.DataParallel, or "
                "KERAS_BACKEND=tensorflow and tf.distribute.MirroredStrategy "
                "(see guides/distributed.py)."
            )
    if backend == "tensorflow" and not getattr(model, "supports_replicas", True):
        replicas = num_replicas(model)
        if replicas > 1:
            raise NotImplementedError(
                f"{name} cannot yet train under tf.distribute with "
                f"{replicas} replicas: {model.replicas_unsupported_reason} "
                "Use KERAS_BACKEND=jax with keras.distribution.DataParallel, "
                "where every statistic is over the global batch."
            )
