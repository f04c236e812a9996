"""Benchmark the frozen-feature cache: one LiT epoch on cached vs raw images.

LiT trains a text tower against a locked image tower. Without image
augmentation the locked tower's outputs are the same every epoch, so
`keras_towers.cache_locked_features` computes them once and later epochs only
run the text tower. This script times one `fit` epoch both ways on the same
data, batch size and model:

- uncached: raw uint8 images (256 px) are resized to 224 px inside tf.data
  and the locked image tower runs forward in every step;
- cached: the dataset returned by `cache_locked_features` (image features +
  captions), shuffled and batched; the locked tower never runs.

The locked tower is a random keras-hub ResNet (basic blocks, one per stage,
64-128-256-512 channels: 4.9M parameters, 224 px input) with BatchNorm and no
head, so the image embedding is its 512-d mean-pooled feature; the text tower
is a 2-layer causal transformer (width 128, context 32). Random weights give
the same cost as pretrained ones.

The first epoch of each kind (tracing/compilation) is not timed; then
`--rounds` rounds each time one uncached and one cached epoch, interleaved so
machine-load drift affects both. The cache's one-off build time is reported
too, with the number of epochs after which caching has paid for itself.

Usage:

```
.venv/bin/python benchmarks/feature_cache.py                 # jax, ~2 min on 2 cores
.venv/bin/python benchmarks/feature_cache.py --backend torch
.venv/bin/python benchmarks/feature_cache.py --examples 64 --rounds 2
```
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

TARGET_RATIO = 0.30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND", "jax"),
        choices=("jax", "torch", "tensorflow"),
    )
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    return parser.parse_args(argv)


def build_model(image_size: int):
    import keras_hub

    import keras_towers
    from keras_towers.models.lit import LiT

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        image_shape=(image_size, image_size, 3),
        name="locked_resnet",
    )
    image_tower = keras_towers.ImageTower(backbone, pooling="mean", head=None)
    preprocessor = keras_towers.ContrastivePreprocessor.default(
        image_size=image_size, sequence_length=32
    )
    text_tower = keras_towers.TextTower.transformer(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        sequence_length=32,
        width=128,
        num_layers=2,
        num_heads=4,
        projection_dim=image_tower.output_dim,
    )
    return LiT(image_tower, text_tower, preprocessor, variant="Lu")


def make_pairs(n: int, size: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype="uint8")
    colours = ["red", "green", "blue", "yellow", "black", "white", "orange", "pink"]
    shapes = ["circle", "square", "triangle", "star"]
    texts = [f"a {colours[i % 8]} {shapes[(i // 8) % 4]} number {i}" for i in range(n)]
    return tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})


def timed_epoch(model, dataset) -> float:
    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from keras_towers.feature_cache import cache_locked_features

    if args.examples % args.batch_size:
        sys.exit("--examples must be a multiple of --batch-size (no ragged batch).")
    keras.utils.set_random_seed(0)
    model = build_model(args.image_size)
    image_params = model.image_tower.count_params()
    text_params = model.text_tower.count_params()
    pairs = make_pairs(args.examples, args.image_size + 32)
    model.compile()
    load_before = os.getloadavg()[0]

    start = time.perf_counter()
    cached = cache_locked_features(model, pairs, batch_size=args.batch_size)
    build_s = time.perf_counter() - start
    uncached_ds = pairs.batch(args.batch_size)
    cached_ds = cached.shuffle(args.examples, seed=0).batch(args.batch_size)

    # Untimed first epochs: tracing and compilation for each input structure.
    warm_uncached = timed_epoch(model, uncached_ds)
    warm_cached = timed_epoch(model, cached_ds)
    uncached, cached_times = [], []
    for _ in range(args.rounds):
        uncached.append(timed_epoch(model, uncached_ds))
        cached_times.append(timed_epoch(model, cached_ds))
    u = statistics.median(uncached)
    c = statistics.median(cached_times)
    ratio = c / u
    steps = args.examples // args.batch_size
    print(f"backend: {args.backend}")
    print(
        f"locked image tower: keras-hub ResNet, {image_params / 1e6:.2f}M params, "
        f"{args.image_size} px; text tower {text_params / 1e6:.2f}M params"
    )
    print(
        f"data: {args.examples} pairs, batch {args.batch_size} "
        f"({steps} steps/epoch), {args.rounds} timed rounds"
    )
    print(
        f"first (compiling) epochs: uncached {warm_uncached:.2f} s, "
        f"cached {warm_cached:.2f} s"
    )
    print(f"cache build (one pass of the locked tower): {build_s:.2f} s")
    print(
        "epoch times (s): uncached "
        + ", ".join(f"{t:.2f}" for t in uncached)
        + " | cached "
        + ", ".join(f"{t:.2f}" for t in cached_times)
    )
    print(f"median epoch: uncached {u:.3f} s, cached {c:.3f} s")
    saved = u - c
    if saved > 0:
        print(f"caching pays for itself after {build_s / saved:.1f} epochs")
    print(
        f"load average (1 min) before/after: {load_before:.2f} / "
        f"{os.getloadavg()[0]:.2f} (other processes share the CPUs)"
    )
    verdict = "PASS" if ratio < TARGET_RATIO else "FAIL"
    print(
        f"cached/uncached epoch time: {ratio:.1%} "
        f"(target < {TARGET_RATIO:.0%}): {verdict}"
    )
    return 0 if ratio < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
