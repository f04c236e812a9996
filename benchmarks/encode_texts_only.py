"""Time `encode_texts` in a process that never encodes an image (issue 16).

Keras' jax `predict_on_batch` runs an extra eager forward pass on every call
while any layer of the model is unbuilt; an image converter's `Resizing` is
built only by the first image, so a process that only encoded texts paid it
on every call until `encode_*` marked the preprocessor's weightless layers
built (`ContrastiveModel._build_preprocessing`). `clip_encode.py` encodes
images first and so never sees this path. `--without-build` replaces
`_build_preprocessing` by a no-op, to time the path as it was.

Usage (one backend per process):

```
KERAS_BACKEND=jax python benchmarks/encode_texts_only.py
KERAS_BACKEND=jax python benchmarks/encode_texts_only.py --without-build
```
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clip_train_step  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200, help="timed calls")
    p.add_argument("--without-build", action="store_true")
    args = p.parse_args(argv)
    import keras

    import keras_towers

    if args.without_build:
        keras_towers.CLIP._build_preprocessing = lambda self: None
    model = clip_train_step.build_keras_clip(clip_train_step.parse_args([]))
    texts = ["a photo of a cat"]
    for _ in range(10):
        model.encode_texts(texts)
    unbuilt = [layer.name for layer in model._flatten_layers() if not layer.built]
    start = time.perf_counter()
    for _ in range(args.calls):
        model.encode_texts(texts)
    ms = (time.perf_counter() - start) / args.calls * 1e3
    print(
        f"{keras.config.backend()}: encode_texts, 1 text, {ms:.2f} ms per call "
        f"({args.calls} calls; unbuilt layers: {unbuilt or 'none'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
