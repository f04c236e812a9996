"""Peak memory and time of contrastive loss + gradients: dense vs chunked.

For each batch size `N` (`--sizes`) and `D`-wide float32 embeddings, runs
loss and gradients (w.r.t. both embeddings, the scale and, for sigmoid, the
bias) of:

- `dense`: `keras_towers.objectives.infonce_loss` / `sigmoid_loss` (the
  whole `N x N` logits matrix);
- `chunked`: `keras_towers.objectives_chunked.chunked_infonce_loss` /
  `chunked_sigmoid_loss` with `--chunk-size`;
- `open_clip` (sigmoid only): open_clip's `SigLipLoss` on torch, from
  `.venv/reference/open_clip` (installed by `scripts/setup.sh`, imported as
  `tests/open_clip_reference.py` does), with `chunk_size=--chunk-size` when
  the installed version accepts one (open_clip 3.3.0 does not: it is then
  dense, and the table says so).

Every run is a fresh subprocess, so peak memory is separable: the child
resets its peak-RSS counter (`/proc/self/clear_refs`) once the inputs exist
and reports `VmHWM - VmRSS` before the first call ("peak +MiB"). The first
call includes tracing/compilation (jax: `jax.jit`; tensorflow:
`tf.function(jit_compile=True)`, as `CLIP.compile` does; torch: eager); the
next `--repeats - 1` calls give "best s". A form whose estimated need
(`--dense-copies` x N^2 x 4 bytes for dense) exceeds the available memory
is skipped with "skipped: needs X GiB".

Usage:

```
KERAS_BACKEND=jax .venv/bin/python benchmarks/chunked_loss.py
KERAS_BACKEND=torch .venv/bin/python benchmarks/chunked_loss.py \\
    --sizes 1024,4096 --loss sigmoid --chunk-size 512 --repeats 3
```

Defaults: `--sizes 4096,16384,32768 --dim 512 --chunk-size 1024
--loss both --repeats 2`.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_DIR = os.path.join(ROOT, ".venv", "reference", "open_clip")
_STUBBED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")
SCALE = {"infonce": 1.0 / 0.07, "sigmoid": 10.0}
BIAS = -10.0


# === Child side ===


def _inputs(n: int, dim: int):
    import numpy as np

    rng = np.random.default_rng(0)
    u = rng.normal(size=(n, dim)).astype("float32")
    v = (u + rng.normal(size=(n, dim)).astype("float32")).astype("float32")
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return u, v


def _keras_step(kind: str, loss: str, chunk_size: int, args):
    """A callable running loss + gradients once, returning the loss."""
    import keras

    from keras_towers import objectives
    from keras_towers import objectives_chunked

    if kind == "dense":
        fn = objectives.infonce_loss if loss == "infonce" else objectives.sigmoid_loss
    elif loss == "infonce":

        def fn(*a):
            return objectives_chunked.chunked_infonce_loss(*a, chunk_size=chunk_size)
    else:

        def fn(*a):
            return objectives_chunked.chunked_sigmoid_loss(*a, chunk_size=chunk_size)

    def scalar(*a):
        return fn(*a)[0]

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.jit(jax.value_and_grad(scalar, argnums=tuple(range(len(args)))))
        tensors = [jax.numpy.asarray(a) for a in args]

        def step():
            value, grads = grad(*tensors)
            jax.block_until_ready(grads)
            return float(value)

    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]

        @tf.function(jit_compile=True)
        def grad(*t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                value = scalar(*t)
            return value, tape.gradient(value, t)

        def step():
            value, grads = grad(*tensors)
            _ = [g.numpy() for g in grads]
            return float(value)

    else:
        step = _torch_step(scalar, args)

    return step


def _torch_step(fn, args):
    """A step computing `fn(*args)` and its gradients with torch autograd."""
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in args]

    def step():
        for t in tensors:
            t.grad = None
        value = fn(*tensors)
        value.backward()
        return float(value)

    return step


def _open_clip_step(chunk_size: int, args):
    sys.path.append(REFERENCE_DIR)
    for name in _STUBBED:
        sys.modules.setdefault(name, types.ModuleType(name))
    from open_clip.loss import SigLipLoss

    chunked = "chunk_size" in inspect.signature(SigLipLoss).parameters
    loss_fn = SigLipLoss(chunk_size=chunk_size) if chunked else SigLipLoss()
    return _torch_step(loss_fn, args), chunked


def child(opts) -> None:
    import numpy as np

    u, v = _inputs(opts.n, opts.dim)
    args = [u, v, np.float32(SCALE[opts.loss])]
    if opts.loss == "sigmoid":
        args.append(np.float32(BIAS))
    info = {}
    if opts.kind == "open_clip":
        step, info["chunked"] = _open_clip_step(opts.chunk_size, args)
    else:
        step = _keras_step(opts.kind, opts.loss, opts.chunk_size, args)
    info.update(_harness.timed_peak(step, opts.repeats))
    info["loss"] = info.pop("value")
    _harness.send_result(info)


# === Driver side ===


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def _needed_gib(kind: str, n: int, dim: int, chunk: int, copies: float) -> float:
    """Rough need: `copies` logits-sized buffers plus a few (N, D) arrays."""
    width = min(chunk, n) if kind == "chunked" else n
    return (copies * width * n * 4 + 8 * n * dim * 4) / 2**30


def _run_child(kind: str, loss: str, n: int, opts) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        kind,
        "--n",
        str(n),
        "--loss",
        loss,
        "--dim",
        str(opts.dim),
        "--chunk-size",
        str(opts.chunk_size),
        "--repeats",
        str(opts.repeats),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return _harness.run_child(command, env)


def driver(opts) -> None:
    import keras

    backend = keras.backend.backend()
    sizes = [int(s) for s in opts.sizes.split(",")]
    losses = ["infonce", "sigmoid"] if opts.loss == "both" else [opts.loss]
    open_clip = os.path.isdir(os.path.join(REFERENCE_DIR, "open_clip"))
    print(
        f"backend {backend}, D={opts.dim}, float32, chunk_size={opts.chunk_size}, "
        f"{opts.repeats} call(s) per run, {os.cpu_count()} CPUs, "
        f"{_available_gib():.1f} GiB available"
    )
    header = f"{'loss':8} {'N':>6} {'form':30} {'peak +MiB':>10} "
    header += f"{'first s':>8} {'best s':>8} {'loss value':>12}"
    print(header)
    for loss in losses:
        kinds = ["dense", "chunked"]
        if loss == "sigmoid":
            if open_clip:
                kinds.append("open_clip")
            else:
                print(f"open_clip: not installed in {REFERENCE_DIR}")
        for n in sizes:
            for kind in kinds:
                need = _needed_gib(
                    kind, n, opts.dim, opts.chunk_size, opts.dense_copies
                )
                label = "open_clip SigLipLoss" if kind == "open_clip" else kind
                row = f"{loss:8} {n:>6} "
                if kind != "chunked" and need > _available_gib():
                    print(row + f"{label:30} skipped: needs {need:.1f} GiB")
                    continue
                r = _run_child(kind, loss, n, opts)
                if "error" in r:
                    print(row + f"{label:30} failed: {r['error']}")
                    continue
                if kind == "open_clip":
                    label += " (chunked)" if r["chunked"] else " (dense)"
                best = min(r["times"][1:]) if len(r["times"]) > 1 else float("nan")
                print(
                    row + f"{label:30} {r['peak_mib']:>10.0f} "
                    f"{r['times'][0]:>8.2f} {best:>8.2f} {r['loss']:>12.6f}"
                    + ("" if r["peak_reset"] else "  (peak not reset)")
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,16384,32768")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument(
        "--loss", choices=["infonce", "sigmoid", "both"], default="both"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--dense-copies",
        type=float,
        default=4.0,
        help="N x N float32 buffers the dense form is assumed to need (skip test)",
    )
    parser.add_argument("--child", choices=["dense", "chunked", "open_clip"])
    parser.add_argument("--n", type=int)
    opts = parser.parse_args()
    if opts.child:
        opts.kind = opts.child
        child(opts)
    else:
        driver(opts)


if __name__ == "__main__":
    main()
