"""Peak memory and time of one CLIP training step with gradient accumulation.

For each `--steps` value `M` (`1` is Keras' own step), trains a from-scratch
CLIP (`keras_towers.from_scratch` config `--config`, default `"small"`: ViT
and text transformer of width 128, 4 layers, at `--image-size` 64) on one
global batch of `--batch-size` rows (default 256) with
`model.fit(..., accumulation_steps=M)`'s train step (`train_on_batch` after
setting `accumulation_steps`), default AdamW, for the backend in
`KERAS_BACKEND`.

Every `M` runs in a fresh subprocess started with
`MALLOC_MMAP_THRESHOLD_=65536` (large buffers are `mmap`ed and returned to
the OS when freed). The child builds the model and the preprocessed batch,
runs one step (compilation/tracing included: "first s"; "RSS MiB" is the
process's resident memory after it), then resets its peak-RSS counter
(`/proc/self/clear_refs`) and runs `--repeats` more steps: "peak +MiB" is
the peak RSS over those steps minus the RSS before them, "best s" the
fastest of them. On torch (eager) "peak +MiB" is the step's activation and
gradient memory. On jax the step's buffers stay resident after the first
step (measured: the "RSS MiB" difference between `M` values matches the
"XLA temp MiB" difference), so its step memory shows in "RSS MiB", not in
"peak +MiB"; "XLA temp MiB" gives it exactly: the temporary buffer size of
the compiled train step (`memory_analysis()`). Every run starts from the
same weights and batch, so the losses must agree across `M` (the
accumulated step is exact).

Usage:

```
KERAS_BACKEND=jax .venv/bin/python benchmarks/accumulation_memory.py
KERAS_BACKEND=torch .venv/bin/python benchmarks/accumulation_memory.py \\
    --steps 1,4,8 --batch-size 128 --repeats 2
```

Defaults: `--config small --image-size 64 --batch-size 256 --steps 1,8
--repeats 2`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# === Child side ===


def _batch(model, rows: int, image_size: int):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (rows, image_size, image_size, 3), dtype="uint8")
    words = ["red", "blue", "green", "small", "large", "round", "square", "odd"]
    texts = [
        f"a {words[i % 8]} {words[(i // 8) % 8]} shape number {i}" for i in range(rows)
    ]
    out = model.preprocessor({"images": images, "texts": texts})
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def child(opts) -> None:
    import keras

    import keras_towers
    from keras_towers import from_scratch

    keras.utils.set_random_seed(0)
    parts = from_scratch.build(opts.config, opts.image_size)
    model = keras_towers.CLIP(parts.image_tower, parts.text_tower, parts.preprocessor)
    model.compile()
    batch = _batch(model, opts.batch_size, opts.image_size)
    # What `fit(accumulation_steps=M)` sets (without running an epoch).
    model._accumulation_steps = opts.accumulation_steps
    model.train_function = None

    def step():
        logs = model.train_on_batch(batch, return_dict=True)
        return float(logs["loss"])

    info = {"params": model.count_params()}
    start = time.perf_counter()
    step()
    info["first_s"] = time.perf_counter() - start
    losses = []
    info.update(_harness.timed_peak(lambda: losses.append(step()), opts.repeats))
    info.update(losses=losses, xla_temp_mib=_xla_temp_mib(model, batch))
    _harness.send_result(info)


def _xla_temp_mib(model, batch):
    """jax: XLA's temporary buffer size for the train step (its activations
    and temporaries, from the compiler's buffer assignment), else `None`."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    state = tuple(
        [v.value for v in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
    )
    compiled = jax.jit(model.train_step).lower(state, (batch, None, None)).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


# === Driver side ===


def _run_child(steps: int, opts) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--accumulation-steps",
        str(steps),
        "--config",
        opts.config,
        "--image-size",
        str(opts.image_size),
        "--batch-size",
        str(opts.batch_size),
        "--repeats",
        str(opts.repeats),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, MALLOC_MMAP_THRESHOLD_="65536")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return _harness.run_child(command, env)


def driver(opts) -> None:
    import keras

    print(
        f"backend {keras.backend.backend()}, config {opts.config!r} at "
        f"{opts.image_size}px, global batch {opts.batch_size}, default AdamW, "
        f"{opts.repeats} timed step(s) after the first, {os.cpu_count()} CPUs"
    )
    print(
        f"{'M':>3} {'micro-batch':>11} {'XLA temp MiB':>12} {'RSS MiB':>8} "
        f"{'peak +MiB':>10} {'first s':>8} {'best s':>8} {'losses':>24}"
    )
    for steps in [int(s) for s in opts.steps.split(",")]:
        r = _run_child(steps, opts)
        if "error" in r:
            print(f"{steps:>3} failed: {r['error']}")
            continue
        micro = -(-opts.batch_size // steps)
        losses = " ".join(f"{v:.6f}" for v in r["losses"])
        temp = r["xla_temp_mib"]
        temp = "-" if temp is None else f"{temp:.0f}"
        print(
            f"{steps:>3} {micro:>11} {temp:>12} {r['rss_mib']:>8.0f} "
            f"{r['peak_mib']:>10.0f} {r['first_s']:>8.2f} "
            f"{min(r['times']):>8.2f} {losses:>24}"
            + ("" if r["peak_reset"] else "  (peak not reset)")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", default="1,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--accumulation-steps", type=int, default=1)
    opts = parser.parse_args()
    if opts.child:
        child(opts)
    else:
        driver(opts)


if __name__ == "__main__":
    main()
