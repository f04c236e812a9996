"""Training on several devices: data and model parallelism, global negatives.

Run it (JAX, 4 simulated CPU devices, set up below):

    python guides/distributed.py

A contrastive loss compares every image of the batch with every caption of
it, so "data parallel" has to mean *global* negatives: each image is scored
against the captions of the whole global batch, not only those of its
device. On JAX, Keras' `keras.distribution` API gives that for free: the
train step is one SPMD program over global arrays (GSPMD), so the model's
`compute_loss` sees the global batch, and one step on N devices gives the
same weights as the same step on one device (checked to float32 round-off by
`tests/test_distributed_jax.py` for CLIP, SigLIP, 3T, ProtoCLIP and
CLIP-Rocket).

The guide shows, on whatever devices JAX has:

1. `DataParallel`: CLIP with global negatives (the loss equals the
   single-device loss of the same batch), trained, zero-shot evaluated;
2. `ModelParallel` with `keras_towers.layout_maps.tower_layout_map`: the
   towers' matrices sharded Megatron-style over a "model" mesh axis;
3. what changes on a multi-host GPU/TPU cluster, on TensorFlow and on
   PyTorch (text at the end), and the chunked objectives for global batches
   whose `B x B` logits do not fit.

`GUIDE_EPOCHS` (default 20) sets the training length; the test suite runs it
with 2 epochs, in-process on one device (XLA's device count is fixed when
JAX starts), while `tests/test_distributed_jax.py` covers 4 devices.
"""

import os
import sys

# Simulated devices: XLA can split the host CPU into N "devices", so the
# guide (and the tests) run multi-device code without a GPU. The flag must be
# set before JAX is imported. On a real GPU/TPU machine or cluster, drop
# these lines: `keras.distribution.list_devices()` lists the accelerators.
os.environ.setdefault("KERAS_BACKEND", "jax")
if (
    os.environ["KERAS_BACKEND"] == "jax"
    and "jax" not in sys.modules
    and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_towers  # noqa: E402
from keras_towers import layout_maps  # noqa: E402

if keras.backend.backend() != "jax":
    sys.exit(
        "keras.distribution runs on JAX: run this guide with KERAS_BACKEND=jax "
        "(on TensorFlow use tf.distribute.MirroredStrategy, see the end of "
        "the guide)."
    )

epochs = int(os.environ.get("GUIDE_EPOCHS", 20))
devices = keras.distribution.list_devices()
print(f"{len(devices)} device(s): {devices}")
if len(devices) == 1:
    print(
        "One device (JAX started before XLA_FLAGS could add simulated "
        "devices, e.g. inside the test suite): the same code runs, data "
        "parallel over 1."
    )

images, captions, _ = keras_towers.datasets.make_shapes(512, seed=0)
# The batch size of `fit` is the GLOBAL batch: DataParallel splits each batch
# of 64 into len(devices) shards (it must divide evenly), and the loss
# compares all 64 images with all 64 captions.
BATCH = 64


def tiny_clip():
    # One-layer towers (the library's "tiny_shallow" config): a quick guide.
    return keras_towers.CLIP.tiny(image_size=32, config="tiny_shallow")


# A model built without a distribution gives the preprocessor and (section 2)
# the variable paths and shapes of the model-parallel layout.
keras.distribution.set_distribution(None)
template = tiny_clip()
# Preprocess once (resize, normalise, tokenise) into arrays, to keep the
# guide quick; `fit` also takes raw images and strings or a tf.data pipeline
# of them (guides/getting_started.py), under a distribution too.
data = template.preprocessor({"images": images, "texts": captions})
data = {key: keras.ops.convert_to_numpy(value) for key, value in data.items()}
first_batch = {key: value[:BATCH] for key, value in data.items()}

# 1. Data parallel. Set the distribution BEFORE building the model: variables
#    are created where the distribution puts them (replicated here).
data_parallel = keras.distribution.DataParallel(devices=devices)

# Global negatives, checked: the loss of one batch on one device and under
# DataParallel, from the same initial weights. With local negatives (each
# device's 64 / N images against its own captions only) it would be lower.
losses = {}
for name, distribution in (("one device", None), ("data parallel", data_parallel)):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = tiny_clip()
    model.compile(learning_rate=2e-3, weight_decay=0.01)
    result = model.evaluate(first_batch, batch_size=BATCH, verbose=0, return_dict=True)
    losses[name] = result["loss"]
print(
    "loss of one batch: one device {one device:.6f}, data parallel over "
    "{n} {data parallel:.6f}".format(n=len(devices), **losses)
)
assert abs(losses["one device"] - losses["data parallel"]) < 1e-4 * losses["one device"]

# `model` is the data-parallel one (the distribution is still set): train it.
# Keras splits each batch of arrays or of a tf.data pipeline over the devices.
model.fit(data, batch_size=BATCH, epochs=epochs, verbose=2)

# 2. Model parallel: a (batch, model) mesh; the layout map shards the towers'
#    attention, MLP, embedding and projection matrices over "model" and
#    replicates the rest (a dimension the axis does not divide stays
#    replicated). Build the model under the distribution.
model_axis = 2 if len(devices) % 2 == 0 else 1
mesh = keras.distribution.DeviceMesh(
    (len(devices) // model_axis, model_axis), ["batch", "model"], devices
)
layout_map = layout_maps.tower_layout_map(template, mesh)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
)
keras.utils.set_random_seed(0)
sharded = tiny_clip()  # the same initial weights as in section 1
print(f"mesh {dict(zip(mesh.axis_names, mesh.shape, strict=True))}; for example")
for variable in sharded.variables:
    if variable.path.endswith(("block_0/dense_1/kernel", "block_0/dense_2/kernel")):
        axes = layout_map[variable.path].axes
        print(f"  {variable.path} {tuple(variable.shape)}: {axes}")
print(
    f"  {len(layout_maps.sharded_paths(layout_map, sharded))} of "
    f"{len(sharded.variables)} variables sharded over 'model', the rest replicated"
)
# It computes the same function (XLA adds the collectives): the loss of the
# first batch is again the one-device loss. `sharded.fit(...)` trains as any
# model; tests/test_distributed_jax.py checks that one step gives the weights
# of one device.
sharded.compile(learning_rate=2e-3, weight_decay=0.01)
result = sharded.evaluate(first_batch, batch_size=BATCH, verbose=0, return_dict=True)
print(f"loss of the same batch, model parallel: {result['loss']:.6f}")
assert abs(result["loss"] - losses["one device"]) < 1e-4 * losses["one device"]
keras.distribution.set_distribution(data_parallel)

# 3. Evaluate the data-parallel model zero-shot (`encode_*` run under the
#    distribution too; they pad their batches to sizes the devices divide).
class_names = keras_towers.datasets.shape_class_names()
text_embeddings = model.encode_texts([f"a {name}" for name in class_names])
test_images, _, test_labels = keras_towers.datasets.make_shapes(120, seed=1)
image_embeddings = model.encode_images(test_images, batch_size=128)

predicted = (image_embeddings @ text_embeddings.T).argmax(axis=1)
accuracy = float(np.mean(predicted == test_labels))
chance = 1 / len(class_names)
print(
    f"zero-shot accuracy on 120 new images: {accuracy:.1%} (chance {chance:.1%}), "
    f"trained data parallel over {len(devices)} device(s)"
)
keras.distribution.set_distribution(None)

# 4. Large global batches. The loss needs the B x B logits of the global
#    batch; at B = 32k that is 4 GiB per copy, and autodiff keeps several.
#    `keras_towers.CLIP(loss="infonce_chunked")` (SigLIP: `"sigmoid_chunked"`)
#    computes the same loss and gradients (float32 round-off) holding one
#    `chunk_size x B` block at a time (`keras_towers.objectives_chunked`;
#    checked against the dense objectives by tests/test_chunked_objectives.py).
#    Under DataParallel the blocks are over the global batch, as the dense
#    loss is.
#
# 5. On a cluster (JAX). One process per host, each started with the same
#    script; before anything touches the devices, every process calls
#
#        keras.distribution.initialize(
#            job_addresses="10.0.0.1:1234",  # the coordinator (process 0)
#            num_processes=4,
#            process_id=int(os.environ["RANK"]),
#        )
#
#    (or sets KERAS_DISTRIBUTION_JOB_ADDRESSES / _NUM_PROCESSES / _PROCESS_ID;
#    on Cloud TPU `initialize()` needs no arguments). Then
#    `list_devices()` lists the accelerators of every host, the
#    DataParallel / ModelParallel above span them unchanged, and:
#    - `fit`'s batch size stays the GLOBAL batch (what the loss compares);
#    - each process feeds only its share: give every process the same
#      tf.data pipeline batched to the global batch, and `fit` rebatches it
#      to the per-process size and keeps this process's shard
#      (`Distribution.distribute_dataset`; tf.data only). If every host
#      already reads its own files, create the distribution with
#      `auto_shard_dataset=False` and batch per process: the global batch is
#      then the per-process batch times the number of processes;
#    - save presets and checkpoints from process 0 only.
#
# TensorFlow: create the model inside `tf.distribute.MirroredStrategy()`
# `.scope()` and call `fit` as usual (`MultiWorkerMirroredStrategy` uses the
# same code, but Keras 3.15's own `fit` fails under it, even for a plain
# `keras.Sequential`: scripts/multiworker_probe.py). There
# each replica runs its own `compute_loss` on its shard, so keras_towers
# gathers both modalities' embeddings from every replica with their gradient
# (`keras_towers.distributed.pair_loss`, open_clip's `gather_with_grad` +
# local loss) and returns this replica's share of the global-batch loss: the
# summed gradients are those of the global batch. Methods whose training
# needs other global statistics (ProtoCLIP, CLIP-Rocket's BatchNorm heads and
# add-ons) refuse multi-replica TensorFlow and point here.
#
# PyTorch: Keras 3.15's torch backend has no `keras.distribution` and `fit`
# does not run under DistributedDataParallel, so keras_towers trains on one
# device there; in a multi-process `torch.distributed` job `fit` raises
# instead of training each process's model on its own negatives. Train on
# several GPUs with KERAS_BACKEND=jax (this guide) or tensorflow.
