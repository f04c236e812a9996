"""Gradient accumulation with full-batch negatives (GradCache) for `fit`.

`model.fit(..., accumulation_steps=M)` trains on global batches of `B` rows
with the activation memory of `B / M` rows, and the *same* update as one step
on the whole batch: a contrastive loss still sees all `B x B` pairs. This is
GradCache (Gao et al., 2021) / open_clip's `--accum-freq`, done inside Keras'
own train step. Each step:

1. runs the model over every micro-batch without keeping a gradient graph
   (`training=True`) and concatenates the outputs (the embedding dicts) into
   the full-batch `y_pred`;
2. computes `model.compute_loss(x, y, y_pred, ...)` and its gradient with
   respect to `y_pred` and to the variables the loss uses directly (logit
   scale and bias, heads applied in `compute_loss`);
3. runs each micro-batch again, *with* gradient, and back-propagates its
   slice of the `y_pred` gradient (the vector-Jacobian product, i.e. the
   gradient of `sum(outputs_m * stop_gradient(grad_m))`), summing the
   variable gradients;
4. applies the optimizer once, and updates the loss tracker and metrics once,
   as Keras' step does.

What is exact: for models without dropout and without BatchNorm in training
mode, the update, the logged loss and the metrics equal those of one normal
step on the whole batch, up to float32 summation order. Randomness and
state are replayed: the model's state variables (Keras `SeedGenerator`
states, BatchNorm moving statistics: the non-trainable variables a forward
pass changes) are set back to their values before the first pass when the
second pass starts, and to their values after the loss when it ends. The
second pass runs the micro-batches in the same order from the same state, so
micro-batch `m`'s second forward starts from the state its first forward
started from (the same dropout masks), and moving statistics advance once
per micro-batch. Dropout masks are drawn per micro-batch, so they differ
from those of an unaccumulated step (as with any other batch split); the
gradient is exactly that of the loss on the cached outputs. What is not
exact: BatchNorm (or any layer using batch statistics) in training mode
normalises each micro-batch with its own statistics, as in open_clip's
`--accum-freq`. Losses added with `add_loss` in `call` (activity
regularisers) enter the loss as the mean over micro-batches weighted by
their sizes, which equals the full-batch value for Keras' activity
regularisers (divided by the batch size); weight regularisers are exact.

Memory: peak activation memory is one micro-batch's plus the model outputs
and the `B x B` loss. The micro-batches run one after the other: on jax as
two `lax.scan` loops (one compiled body per loop, which also keeps XLA from
merging the two forward passes of a micro-batch and so keeping every
micro-batch's activations alive); on tensorflow each micro-batch waits for
the previous one's gradients (control dependencies, or an XLA optimization
barrier under `jit_compile`). Time: one extra forward pass per step.

Micro-batches: `B` rows are split into `min(M, B)` micro-batches of
`B // M + 1` rows (the first `B % M`) and `B // M` rows, so a batch not
divisible by `M` works (on tensorflow with an unknown batch size, a batch of
fewer than `M` rows leaves the last micro-batches empty). On jax a batch
divisible by `M` is split by interleaving rows (micro-batch `m` takes rows
`m, m + M, ...`), so every micro-batch keeps rows of every data-parallel
shard; otherwise micro-batches are contiguous row ranges. With dropout the
split decides which masks rows get, nothing else.

The model's outputs must all be per-example tensors (batch axis first).
The step is stored on the model: `train_on_batch` after
`fit(accumulation_steps=M)` accumulates too, until the next `fit`.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np


def check_accumulation_steps(value) -> int:
    """`value` as an int >= 1, or a `ValueError` naming `accumulation_steps`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or int(value) < 1
    ):
        raise ValueError(
            "`accumulation_steps` must be an integer >= 1 (the number of "
            "micro-batches each batch is split into). Received: "
            f"accumulation_steps={value!r}"
        )
    return int(value)


def train_step(model, *args):
    """Keras' `train_step` for `model` with `model._accumulation_steps`
    micro-batches per batch (arguments as the backend's own `train_step`:
    `(state, data)` on jax, `(data,)` otherwise)."""
    steps = check_accumulation_steps(model._accumulation_steps)
    backend = keras.config.backend()
    if backend == "jax":
        return _jax_train_step(model, steps, *args)
    if backend == "tensorflow":
        return _tf_train_step(model, steps, *args)
    if backend == "torch":
        return _torch_train_step(model, steps, *args)
    raise NotImplementedError(
        f"`accumulation_steps` is not implemented for the {backend!r} backend."
    )


# === Backend-generic helpers ===


def _flatten(structure):
    return keras.tree.flatten(structure)


def _first_leaf(x):
    for leaf in _flatten(x):
        if leaf is not None:
            return leaf
    raise ValueError("`accumulation_steps` needs a batch with at least one input.")


def _static_bounds(rows: int, steps: int) -> list:
    """Row boundaries of `min(steps, rows)` micro-batches: `rows % steps` of
    `rows // steps + 1` rows, then the others of `rows // steps`."""
    if rows < 1:
        raise ValueError(
            f"Cannot split an empty batch into micro-batches "
            f"(accumulation_steps={steps})."
        )
    steps = min(steps, rows)
    size, extra = divmod(rows, steps)
    return [m * size + min(m, extra) for m in range(steps + 1)]


def _slice(structure, start, stop):
    return keras.tree.map_structure(
        lambda t: None if t is None else t[start:stop], structure
    )


def _call_kwargs(model) -> dict:
    return {"training": True} if model._call_has_training_arg else {}


def _total(losses):
    """Sum of a list of scalar losses, or `None` for no losses."""
    if not losses:
        return None
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total


def _check_per_example(outputs, rows):
    for leaf in _flatten(outputs):
        if leaf is None:
            continue
        shape = tuple(leaf.shape)
        if not shape or (
            isinstance(shape[0], int) and isinstance(rows, int) and shape[0] != rows
        ):
            raise ValueError(
                "`accumulation_steps` needs every model output to be a "
                "per-example tensor (batch axis first). Received an output of "
                f"shape {shape} for a micro-batch of {rows} rows."
            )


class _LossesOverride:
    """Make `model.losses` return `[value]` while `compute_loss` runs on the
    cached outputs (as Keras' jax trainer does with `_losses_override`):
    `add_loss` and regulariser losses were computed per micro-batch.

    A plain list, set past Keras' attribute tracking (which would make it a
    `TrackedList`, which `ops.sum` cannot take on jax)."""

    def __init__(self, model, value):
        self.model = model
        self.value = value
        self.saved = None

    def __enter__(self):
        if self.value is not None:
            self.saved = self.model._losses_override
            object.__setattr__(self.model, "_losses_override", [self.value])

    def __exit__(self, *exc):
        if self.value is not None:
            object.__setattr__(self.model, "_losses_override", self.saved)


def _state_variables(model) -> list:
    """Non-trainable variables a forward pass may change (seed states,
    BatchNorm moving statistics), without frozen weights (weights of a layer
    set `trainable = False`), which need no snapshots."""
    frozen = set()
    for layer in model._flatten_layers():
        frozen.update(id(v) for v in layer._trainable_variables)
    return [v for v in model.non_trainable_variables if id(v) not in frozen]


def _no_weights_warning():
    warnings.warn("The model does not have any trainable weights.", stacklevel=3)


# === JAX ===


def _jax_groups(rows: int, steps: int) -> list:
    """Micro-batch groups `(start, stop, count, size, interleave)`: rows
    `start:stop` as `count` micro-batches of `size` rows. One group of
    interleaved rows when `steps` divides `rows` (micro-batch `m`: rows
    `m, m + steps, ...`, so each keeps rows of every data-parallel shard),
    else contiguous micro-batches in two groups of sizes `q + 1` and `q`."""
    steps = min(steps, rows)
    size, extra = divmod(rows, steps)
    if not extra:
        return [(0, rows, steps, size, True)]
    split = extra * (size + 1)
    return [
        (0, split, extra, size + 1, False),
        (split, rows, steps - extra, size, False),
    ]


def _jax_train_step(model, steps, state, data):
    import jax
    import jax.numpy as jnp

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    rows = int(_first_leaf(x).shape[0])
    if rows < 1:
        _static_bounds(rows, steps)  # raises
    groups = _jax_groups(rows, steps)

    def stack(structure, group):
        """Rows of `group` as `(count, size, ...)`."""
        start, stop, count, size, interleave = group

        def one(t):
            if t is None:
                return None
            t = t[start:stop]
            if interleave:
                return jnp.swapaxes(t.reshape((size, count) + t.shape[1:]), 0, 1)
            return t.reshape((count, size) + t.shape[1:])

        return keras.tree.map_structure(one, structure)

    def unstack(parts):
        """Inverse of `stack` over all groups: `(rows, ...)` leaves."""

        def one(*ts):
            flat = []
            for t, (_, _, count, size, interleave) in zip(ts, groups, strict=True):
                if interleave:
                    t = jnp.swapaxes(t, 0, 1)
                flat.append(t.reshape((count * size,) + t.shape[2:]))
            return flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=0)

        return keras.tree.map_structure(one, *parts)

    call_kwargs = _call_kwargs(model)

    def forward(trainable, non_trainable, x_m):
        outputs, new_non_trainable, losses = model.stateless_call(
            trainable, non_trainable, x_m, return_losses=True, **call_kwargs
        )
        # Same types as the loop carry (scan refuses weak types changing).
        new_non_trainable = [
            jnp.asarray(new, dtype=old.dtype)
            for new, old in zip(new_non_trainable, non_trainable, strict=True)
        ]
        return outputs, new_non_trainable, _total(losses)

    # 1. Forward passes without gradient, one micro-batch after the other
    # (`lax.scan`: one compiled body, sequential by construction).
    initial_non_trainable = non_trainable
    parts, extra = [], None
    for group in groups:
        size = group[3]

        def first_pass(non_trainable, x_m, size=size):
            outputs, non_trainable, extra_m = forward(trainable, non_trainable, x_m)
            _check_per_example(outputs, size)
            return non_trainable, (outputs, extra_m)

        non_trainable, (outputs, extras) = jax.lax.scan(
            first_pass, non_trainable, stack(x, group)
        )
        parts.append(outputs)
        if extras is not None:
            group_extra = jnp.sum(extras) * (size / rows)
            extra = group_extra if extra is None else extra + group_extra
    y_pred = unstack(parts)

    # 2. The loss on the whole batch; gradients w.r.t. outputs and variables.
    def loss_fn(trainable, y_pred, extra, non_trainable=non_trainable):
        with _LossesOverride(model, extra):
            loss, (_, new_non_trainable, new_metrics) = model.stateless_compute_loss(
                trainable,
                non_trainable,
                metrics_variables,
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=True,
            )
        unscaled_loss = loss
        if model.optimizer is not None:
            mapping = list(
                zip(model.optimizer.variables, optimizer_variables, strict=True)
            )
            with keras.StatelessScope(state_mapping=mapping):
                loss = model.optimizer.scale_loss(loss)
        return loss, (unscaled_loss, new_non_trainable, new_metrics)

    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)
    (_, aux), (grads, y_pred_grads, extra_grad) = grad_fn(trainable, y_pred, extra)
    unscaled_loss, non_trainable, metrics_variables = aux

    # 3. Forward again with gradient, one micro-batch at a time, from the
    # state before the first pass: each micro-batch replays its first
    # forward's state (dropout masks, BatchNorm updates). The second pass is
    # another loop, so XLA cannot merge it with the first (CSE would keep
    # every micro-batch's activations alive).
    replay_state = initial_non_trainable
    for group in groups:
        extra_weight = None
        if extra is not None:
            extra_weight = (extra_grad * (group[3] / rows)).astype(extra.dtype)

        def second_pass(carry, inputs, extra_weight=extra_weight):
            grads, non_trainable = carry
            x_m, y_pred_grad_m = inputs

            def micro_forward(trainable):
                outputs, new_non_trainable, extra_m = forward(
                    trainable, non_trainable, x_m
                )
                return (outputs, extra_m), new_non_trainable

            _, vjp, new_non_trainable = jax.vjp(micro_forward, trainable, has_aux=True)
            (micro_grads,) = vjp((y_pred_grad_m, extra_weight))
            grads = jax.tree.map(jnp.add, grads, micro_grads)
            return (grads, new_non_trainable), None

        inputs = (stack(x, group), stack(y_pred_grads, group))
        (grads, replay_state), _ = jax.lax.scan(
            second_pass, (grads, replay_state), inputs
        )

    # 4. One optimizer step, metrics once (as `JAXTrainer.train_step`).
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, grads, trainable
    )
    logs, metrics_variables = model._update_metrics_variables(
        metrics_variables, unscaled_loss, x, y, y_pred, sample_weight
    )
    state = (trainable, non_trainable, optimizer_variables, metrics_variables)
    return logs, state


# === TensorFlow ===


def _tf_train_step(model, steps, data):
    import tensorflow as tf
    from keras.src.losses import loss as loss_module

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    first = _first_leaf(x)
    rows = first.shape[0]
    if rows is not None:
        bounds = _static_bounds(int(rows), steps)
        steps = len(bounds) - 1
        fractions = [(bounds[m + 1] - bounds[m]) / rows for m in range(steps)]
        runs = list(zip(bounds[:-1], bounds[1:], strict=True))
        dynamic = False
    else:  # dynamic batch size (tf.data without drop_remainder)
        rows = tf.shape(first)[0]
        size, extra = rows // steps, rows % steps
        # As `_static_bounds`, but a batch of fewer rows than `steps` leaves
        # the last micro-batches empty. Those run the model on the batch's
        # last row instead (empty batches break reshapes in graph mode) and
        # keep none of its outputs (zero cotangents in the second pass).
        bounds = [m * size + tf.minimum(m, extra) for m in range(steps + 1)]
        fractions = [
            tf.cast(bounds[m + 1] - bounds[m], "float32") / tf.cast(rows, "float32")
            for m in range(steps)
        ]
        runs, dynamic = [], True
        for m in range(steps):
            start = tf.minimum(bounds[m], rows - 1)
            runs.append((start, tf.maximum(bounds[m + 1], start + 1)))
    xla = bool(model.jit_compile) and not model.run_eagerly
    eager = tf.executing_eagerly()

    def after(structure, dependencies):
        """`structure`, computed only once `dependencies` are."""
        dependencies = [
            tf.convert_to_tensor(d) for d in _flatten(dependencies) if d is not None
        ]
        if eager or not dependencies:
            return structure
        leaves = _flatten(structure)
        if xla:
            from tensorflow.compiler.tf2xla.ops import gen_xla_ops

            leaves = gen_xla_ops.xla_optimization_barrier(leaves + dependencies)
            leaves = leaves[: len(_flatten(structure))]
        else:
            with tf.control_dependencies(dependencies):
                leaves = [tf.identity(t) for t in leaves]
        return keras.tree.pack_sequence_as(structure, leaves)

    call_kwargs = _call_kwargs(model)

    def forward(x_m):
        return model(x_m, **call_kwargs), _total(model.losses)

    if not eager:
        # Traced once and called per micro-batch: tracing (and graph size
        # before XLA inlines it) does not grow with the micro-batch count.
        forward = tf.function(forward, reduce_retracing=True)

    state_variables = _state_variables(model)
    initial_state = [tf.identity(v.value) for v in state_variables]

    # 1. Forward passes without gradient.
    micro = [_slice(x, start, stop) for start, stop in runs]
    parts, extras = [], []
    for m in range(steps):
        outputs, extra_m = forward(after(micro[m], parts[-1] if parts else []))
        _check_per_example(outputs, None)
        if dynamic:  # keep the micro-batch's rows
            outputs = _slice(outputs, 0, bounds[m + 1] - bounds[m])
        parts.append(outputs)
        extras.append(extra_m)
    y_pred = keras.tree.map_structure(lambda *ts: tf.concat(ts, axis=0), *parts)
    extra = None
    if extras[0] is not None:
        extra = _total(
            [tf.cast(f, e.dtype) * e for f, e in zip(fractions, extras, strict=True)]
        )
    y_pred_leaves = [t for t in _flatten(y_pred) if t is not None]

    # 2. The loss on the whole batch (as `TensorFlowTrainer.train_step`).
    with tf.GradientTape() as tape:
        tape.watch(y_pred_leaves + ([extra] if extra is not None else []))
        with _LossesOverride(model, extra):
            loss = model._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
        model._loss_tracker.update_state(
            loss_module.unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(first)[0],
        )
        if model.optimizer is not None:
            loss = model.optimizer.scale_loss(loss)
    trainable = model.trainable_weights
    if not trainable:
        _no_weights_warning()
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    sources = [list(trainable), y_pred_leaves]
    if extra is not None:
        sources.append(extra)
    grads, y_pred_grads, *extra_grad = tape.gradient(loss, sources)
    extra_grad = extra_grad[0] if extra_grad else None
    grads = [_tf_dense(g) for g in grads]

    # 3. Forward again with gradient, one micro-batch at a time, from the
    # state before the first pass: each micro-batch replays its first
    # forward's state (dropout masks, BatchNorm updates).
    final_state = [tf.identity(v.value) for v in state_variables]
    _tf_assign(state_variables, initial_state)
    for m in range(steps):
        x_m = after(micro[m], grads)
        with tf.GradientTape() as tape:
            outputs, extra_m = forward(x_m)
        targets, cotangents = [], []
        for output, grad in zip(
            [t for t in _flatten(outputs) if t is not None], y_pred_grads, strict=True
        ):
            if grad is not None:
                cotangent = _tf_dense(grad)[bounds[m] : bounds[m + 1]]
                if dynamic:  # zeros for rows not kept
                    kept = bounds[m + 1] - bounds[m]
                    padding = tf.zeros_like(output[kept:], dtype=cotangent.dtype)
                    cotangent = tf.concat([cotangent, padding], axis=0)
                targets.append(output)
                cotangents.append(cotangent)
        if extra_m is not None and extra_grad is not None:
            targets.append(extra_m)
            cotangents.append(extra_grad * tf.cast(fractions[m], extra_grad.dtype))
        if targets:
            micro_grads = tape.gradient(targets, trainable, output_gradients=cotangents)
            grads = [_tf_add(a, b) for a, b in zip(grads, micro_grads, strict=True)]
    _tf_assign(state_variables, final_state)

    # 4. One optimizer step, metrics once.
    model.optimizer.apply_gradients(zip(grads, trainable, strict=True))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _tf_assign(variables, values):
    for v, value in zip(variables, values, strict=True):
        v.assign(value)


def _tf_dense(grad):
    import tensorflow as tf

    if grad is None or not isinstance(grad, tf.IndexedSlices):
        return grad
    return tf.convert_to_tensor(grad)


def _tf_add(a, b):
    b = _tf_dense(b)
    if a is None:
        return b
    if b is None:
        return a
    return a + b


# === PyTorch ===


def _torch_train_step(model, steps, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    rows = int(_first_leaf(x).shape[0])
    bounds = _static_bounds(rows, steps)
    steps = len(bounds) - 1
    fractions = [(bounds[m + 1] - bounds[m]) / rows for m in range(steps)]
    call_kwargs = _call_kwargs(model)
    state_variables = _state_variables(model)

    def snapshot():
        # Keras' unseeded dropout on torch draws from torch's global
        # generators, not from a SeedGenerator: they are state too (as
        # `torch.utils.checkpoint` preserves them).
        rng = [torch.get_rng_state()]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng.append(torch.cuda.get_rng_state_all())
        return [v.value.detach().clone() for v in state_variables], rng

    def restore(state):
        values, rng = state
        for v, value in zip(state_variables, values, strict=True):
            v.assign(value)
        torch.set_rng_state(rng[0])
        if len(rng) > 1:
            torch.cuda.set_rng_state_all(rng[1])

    initial_state = snapshot()

    # 1. Forward passes without gradient.
    micro = [_slice(x, bounds[m], bounds[m + 1]) for m in range(steps)]
    parts, extras = [], []
    with torch.no_grad():
        for m in range(steps):
            outputs = model(micro[m], **call_kwargs)
            _check_per_example(outputs, bounds[m + 1] - bounds[m])
            parts.append(outputs)
            extras.append(_total(model.losses))

    def leaf(*ts):
        t = torch.cat(ts, dim=0).detach()
        return t.requires_grad_() if t.is_floating_point() else t

    y_pred = keras.tree.map_structure(leaf, *parts)
    extra = None
    if extras[0] is not None:
        extra = _total([f * e for f, e in zip(fractions, extras, strict=True)])
        extra = extra.detach().requires_grad_()

    # 2. The loss on the whole batch (as `TorchTrainer.train_step`).
    model.zero_grad()
    with _LossesOverride(model, extra):
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
    model._loss_tracker.update_state(loss, sample_weight=rows)
    if model.optimizer is not None:
        loss = model.optimizer.scale_loss(loss)
    trainable = model.trainable_weights[:]
    if not trainable:
        _no_weights_warning()
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    loss.backward()  # gradients of outputs, scale/bias, ... (in `.grad`)
    y_pred_leaves = [t for t in _flatten(y_pred) if t is not None]

    # 3. Forward again with gradient, one micro-batch at a time (`.grad`
    # accumulates), from the state before the first pass: each micro-batch
    # replays its first forward's state (dropout masks, BatchNorm updates).
    final_state = snapshot()
    restore(initial_state)
    for m in range(steps):
        outputs = model(micro[m], **call_kwargs)
        targets, cotangents = [], []
        for output, full in zip(
            [t for t in _flatten(outputs) if t is not None], y_pred_leaves, strict=True
        ):
            if full.grad is not None and output.requires_grad:
                targets.append(output)
                cotangents.append(full.grad[bounds[m] : bounds[m + 1]])
        if extra is not None and extra.grad is not None:
            extra_m = _total(model.losses)
            if extra_m is not None and extra_m.requires_grad:
                targets.append(extra_m)
                cotangents.append(extra.grad * fractions[m])
        if targets:
            torch.autograd.backward(targets, cotangents)
        del outputs, targets
    restore(final_state)

    # 4. One optimizer step, metrics once.
    gradients = [v.value.grad for v in trainable]
    with torch.no_grad():
        model.optimizer.apply(gradients, trainable)
    y_pred = keras.tree.map_structure(lambda t: t if t is None else t.detach(), y_pred)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
