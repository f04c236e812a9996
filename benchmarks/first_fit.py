"""The first `fit` of a new process, with and without JAX's persistent
compilation cache.

Starts one fresh process per measurement (KERAS_BACKEND=jax): the small
from-scratch CLIP (`from_scratch.build("small", 64)`) trains one batch of 32
with `fit`, and the process prints how long that first `fit` took (mostly
XLA compiling the train step). Three runs, in order: without the cache, with
an empty cache directory (compiling and writing it), and with the cache that
run wrote (reading it). Prints the three times and the warm cache's ratio
to no cache.

    .venv/bin/python benchmarks/first_fit.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

CHILD = """
import time
import numpy as np
import keras_towers as kt
parts = kt.from_scratch.build("small", 64)
model = kt.CLIP(parts.image_tower, parts.text_tower, parts.preprocessor)
model.compile()
rng = np.random.default_rng(0)
batch = {
    "images": rng.random((32, 64, 64, 3), dtype=np.float32),
    "token_ids": rng.integers(1, 200, (32, 64)).astype("int32"),
    "padding_mask": np.ones((32, 64), bool),
}
start = time.perf_counter()
model.fit(batch, batch_size=32, epochs=1, verbose=0)
print("FIRST_FIT", time.perf_counter() - start)
"""


def first_fit(cache_dir: str | None) -> float:
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("FIRST_FIT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(out.stderr[-3000:])
    return float(lines[-1].split()[1])


def main():
    with tempfile.TemporaryDirectory(prefix="jax_cache_") as cache:
        none = first_fit(None)
        cold = first_fit(cache)
        warm = first_fit(cache)
    print("jax, first fit of a new process (small CLIP, one batch of 32):")
    print(f"  no cache                 {none:6.1f} s")
    print(f"  empty cache (writing it) {cold:6.1f} s")
    print(f"  warm cache (reading it)  {warm:6.1f} s   {warm / none:.2f}x no cache")


if __name__ == "__main__":
    main()
