"""Model-parallel layouts of the towers for `keras.distribution.ModelParallel`.

`tower_layout_map(model, device_mesh)` shards the large matrices of a
model's towers along the mesh's model axis, Megatron style, and leaves every
other variable replicated:

| variables (path ends with) | layout |
|---|---|
| attention `query` / `key` / `value` kernels `(width, heads, head_dim)` and biases | heads sharded (column parallel) |
| attention `attention_output/kernel` `(heads, head_dim, width)` | heads sharded (row parallel) |
| first MLP dense (`encoder_block_<i>/dense_1`, `feedforward_intermediate_dense`) kernel and bias | hidden units sharded (column parallel) |
| second MLP dense (`encoder_block_<i>/dense_2`, `feedforward_output_dense`) kernel | hidden units sharded (row parallel) |
| token / position / segment embeddings, the ViT's patch embedding and class embedding, the towers' `*_projection` kernels | feature (output) dimension sharded |
| everything else (layer norms, output biases, logit scales, heads, BatchNorm statistics) | replicated |

The rules match the variable paths of the from-scratch towers
(`keras_towers.backbones.VisionTransformer`, `TextTransformer`, i.e.
keras-hub's CLIP encoders: `..._encoder_block_0/attention/query/kernel`,
`.../dense_1/kernel`) and of keras-hub's `TransformerEncoder` backbones such
as the MiniLM text tower (`transformer_layer_0/self_attention_layer/query/kernel`,
`.../feedforward_intermediate_dense/kernel`). Convolutional backbones
(EfficientNet-Lite, ResNet) stay replicated. A variable whose sharded
dimension is not divisible by the size of the model axis stays replicated
rather than failing.

Under GSPMD the layout only decides where the weights live: the compiled step
computes the same function (the compiler adds the collectives), so the loss
still sees the global batch and training gives the same weights as on one
device.

Example (8 devices as 2 data-parallel groups of 4 model shards):

```python
devices = keras.distribution.list_devices()
mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
# Shapes and paths come from a model built without a distribution ...
template = keras_towers.CLIP.tiny()
layout_map = keras_towers.layout_maps.tower_layout_map(template, mesh)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
# ... and the model that trains is built under the distribution, so every
# variable is created with its layout.
model = keras_towers.CLIP.tiny()
model.compile()
model.fit(data, batch_size=256)  # the global batch, split over "batch"
```

Multi-host (a GPU or TPU cluster, JAX backend): run one process per host and
call `keras.distribution.initialize(job_addresses, num_processes, process_id)`
in every process before any computation (before building the mesh or the
model); `keras.distribution.list_devices()` then lists the devices of every
host and the mesh spans them. `fit`'s batch size is the global batch: give
every process the same `tf.data` pipeline batched globally and Keras keeps
each process's share (`Distribution.distribute_dataset`), or shard it per
host yourself with `auto_shard_dataset=False`. On Cloud TPU the three
arguments can be left out; elsewhere they can also come from
`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
`KERAS_DISTRIBUTION_PROCESS_ID`. `guides/distributed.py` walks through it.
"""

from __future__ import annotations

import re

import keras

#: `(path regex, layout)` rules. A layout names the dimension to shard with
#: `MODEL` (replaced by the mesh's model axis); `None` dimensions are
#: replicated. The regexes are matched with `re.fullmatch` against
#: `variable.path` (as `keras.distribution.LayoutMap` does) and match
#: disjoint sets of paths.
MODEL = "<model>"
TOWER_RULES: tuple[tuple[str, tuple], ...] = (
    # Attention: q / k / v column parallel over heads, output row parallel.
    (
        r".*/(attention|self_attention_layer)/(query|key|value)/kernel",
        (None, MODEL, None),
    ),
    (r".*/(attention|self_attention_layer)/(query|key|value)/bias", (MODEL, None)),
    (
        r".*/(attention|self_attention_layer)/attention_output/kernel",
        (MODEL, None, None),
    ),
    # MLP: first dense column parallel, second row parallel.
    (
        r".*(encoder_block_\d+/dense_1|/feedforward_intermediate_dense)/kernel",
        (None, MODEL),
    ),
    (r".*(encoder_block_\d+/dense_1|/feedforward_intermediate_dense)/bias", (MODEL,)),
    (
        r".*(encoder_block_\d+/dense_2|/feedforward_output_dense)/kernel",
        (MODEL, None),
    ),
    # Embeddings and projections: the feature (output) dimension.
    (r"(.*/)?(token|position|segment)_embedding/embeddings", (None, MODEL)),
    (r"(.*/)?patch_embedding/kernel", (None, None, None, MODEL)),
    (r"(.*/)?class_embedding", (MODEL,)),
    (r".*_projection/kernel", (None, MODEL)),
)


def _axis_size(device_mesh, axis: str) -> int:
    if axis not in device_mesh.axis_names:
        raise ValueError(
            f"The device mesh has axes {list(device_mesh.axis_names)}; "
            f"there is no axis {axis!r}."
        )
    return int(device_mesh.shape[list(device_mesh.axis_names).index(axis)])


def _rule_for(path: str):
    """The `(regex, layout)` rule matching `path`, or `None`."""
    for pattern, layout in TOWER_RULES:
        if re.fullmatch(pattern, path):
            return pattern, layout
    return None


def _divisible(shape, layout, size: int) -> bool:
    return len(shape) == len(layout) and all(
        axis != MODEL or (dim is not None and dim % size == 0)
        for dim, axis in zip(shape, layout, strict=True)
    )


def tower_layout_map(
    model, device_mesh, model_axis: str = "model", batch_axis: str | None = "batch"
) -> keras.distribution.LayoutMap:
    """A `keras.distribution.LayoutMap` sharding `model`'s towers.

    Args:
        model: a built model (or layer) whose `variables` give the paths and
            shapes; build it without a distribution, then build the model
            that trains (with the same paths) after
            `keras.distribution.set_distribution(ModelParallel(...))`.
        device_mesh: `keras.distribution.DeviceMesh` with a `model_axis`
            (and usually a `batch_axis`).
        model_axis: str. The mesh axis the matrices are sharded over.
        batch_axis: str or `None`. The mesh axis the batch is split over;
            pass the same name as `ModelParallel(batch_dim_name=...)`. No
            variable is sharded along it. `None` for a mesh without one.

    Returns:
        A `LayoutMap` for `keras.distribution.ModelParallel`: one regex key
        per rule of `TOWER_RULES` that matches a variable of `model` (its
        sharded layout), plus, for each matching variable whose sharded
        dimension is not divisible by the model axis size, its exact path
        with a replicated layout (exact paths win over regexes). Variables
        matching no rule are replicated.

    Example:

    ```python
    mesh = keras.distribution.DeviceMesh(
        (2, 2), ["batch", "model"], keras.distribution.list_devices()
    )
    layout_map = tower_layout_map(keras_towers.CLIP.tiny(), mesh)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    model = keras_towers.CLIP.tiny()  # its matrices are now sharded
    ```
    """
    size = _axis_size(device_mesh, model_axis)
    if batch_axis is not None:
        _axis_size(device_mesh, batch_axis)
        if batch_axis == model_axis:
            raise ValueError(
                f"`batch_axis` and `model_axis` are both {model_axis!r}: "
                "the batch and the matrices are split over different axes."
            )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    # `LayoutMap.__getitem__` returns None for a missing key instead of
    # raising KeyError, so `key in layout_map` is always true: track keys.
    keys = set()
    for variable in model.variables:
        path = variable.path
        rule = _rule_for(path)
        if rule is None:
            continue
        pattern, layout = rule
        if not _divisible(tuple(variable.shape), layout, size):
            if path not in keys:
                keys.add(path)
                layout_map[path] = (None,) * len(variable.shape)
            continue
        if pattern not in keys:
            keys.add(pattern)
            layout_map[pattern] = tuple(
                model_axis if axis == MODEL else None for axis in layout
            )
    return layout_map


def sharded_paths(layout_map, model) -> dict[str, tuple]:
    """`{path: axes}` of `model`'s variables that `layout_map` shards
    (a layout naming at least one mesh axis); every other variable is
    replicated."""
    out = {}
    for variable in model.variables:
        layout = layout_map[variable.path]
        if layout is not None and any(axis is not None for axis in layout.axes):
            out[variable.path] = tuple(layout.axes)
    return out
