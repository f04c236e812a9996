"""ASIF anchor updates and zero-shot throughput on random features.

Measures, with features given (encoders excluded):

- `add_anchors` of `--add` anchors to a model holding `--anchors`, and
  `remove_anchors` of the same anchors by id (median of `--repeats`);
- zero-shot classification of `--queries` image features against
  `--classes` x `--templates` prompts over the anchors: relative
  representations (chunked top-k), then sparse scoring, in queries/s, for
  both zero-shot modes; and the peak NumPy memory of that step (tracemalloc),
  to show that no dense `queries x anchors` matrix is built.

Random Gaussian features cost the same as real ones; their accuracy is
meaningless, so none is reported.

```
.venv/bin/python benchmarks/asif.py                     # 100k anchors, ~1 min
.venv/bin/python benchmarks/asif.py --anchors 1000000 --anchor-dtype float16
.venv/bin/python benchmarks/asif.py --json out.json
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tracemalloc

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from keras_towers.models.asif import ASIF  # noqa: E402


def random_features(rng, n, dim, chunk=100_000):
    """Random unit-norm rows, generated in chunks to bound temporary memory."""
    out = np.empty((n, dim), "float32")
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype="float32")
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anchors", type=int, default=100_000)
    parser.add_argument("--add", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--templates", type=int, default=18)
    parser.add_argument("--image-dim", type=int, default=1280)  # EfficientNet-Lite0
    parser.add_argument("--text-dim", type=int, default=384)  # MiniLM-L6
    parser.add_argument("--k", type=int, default=800)
    parser.add_argument("--p", type=float, default=8.0)
    parser.add_argument("--anchor-dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    results = {"config": vars(args).copy(), "cpu_count": os.cpu_count()}
    model = ASIF(k=args.k, p=args.p, anchor_dtype=args.anchor_dtype)

    start = time.perf_counter()
    model.add_anchors(
        image_features=random_features(rng, args.anchors, args.image_dim),
        text_features=random_features(rng, args.anchors, args.text_dim),
        captions=[f"anchor {i}" for i in range(args.anchors)],
        image_refs=[f"img/{i}.png" for i in range(args.anchors)],
    )
    results["initial_add_s"] = time.perf_counter() - start

    new_image = random_features(rng, args.add, args.image_dim)
    new_text = random_features(rng, args.add, args.text_dim)
    captions = [f"new {i}" for i in range(args.add)]
    refs = [f"new/{i}.png" for i in range(args.add)]
    add_times, remove_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ids = model.add_anchors(
            image_features=new_image,
            text_features=new_text,
            captions=captions,
            image_refs=refs,
        )
        add_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.remove_anchors(ids=ids)
        remove_times.append(time.perf_counter() - start)
    results["add_s_median"] = statistics.median(add_times)
    results["remove_s_median"] = statistics.median(remove_times)
    print(
        f"{args.anchors} anchors ({args.anchor_dtype}): +{args.add} anchors in "
        f"{results['add_s_median'] * 1000:.1f} ms, -{args.add} by id in "
        f"{results['remove_s_median'] * 1000:.1f} ms (median of {args.repeats})"
    )

    queries = random_features(rng, args.queries, args.image_dim)
    prompts = random_features(rng, args.classes * args.templates, args.text_dim)
    names = [f"class {c}" for c in range(args.classes)]
    templates = [f"{{}} {t}" for t in range(args.templates)]
    for mode in ("best_single", "average"):
        tracemalloc.start()
        start = time.perf_counter()
        head = model.zero_shot_head(
            names, templates, mode=mode, prompt_features=prompts
        )
        head_s = time.perf_counter() - start
        start = time.perf_counter()
        reps = model.represent(queries, "image", sparse=True)
        represent_s = time.perf_counter() - start
        start = time.perf_counter()
        predictions = head.predict(reps)
        score_s = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert predictions.shape == (args.queries,)
        total = represent_s + score_s
        dense_bytes = 4 * args.queries * model.num_anchors
        results[mode] = {
            "prompts_s": head_s,
            "represent_s": represent_s,
            "score_s": score_s,
            "queries_per_s": args.queries / total,
            "peak_numpy_mb": peak / 2**20,
            "dense_queries_x_anchors_mb": dense_bytes / 2**20,
        }
        print(
            f"zero-shot {mode:11s}: {args.queries / total:7.1f} queries/s "
            f"(represent {represent_s:.2f} s, score {score_s:.3f} s; "
            f"{args.classes}x{args.templates} prompts in {head_s:.2f} s); "
            f"peak NumPy memory {peak / 2**20:.0f} MB vs "
            f"{dense_bytes / 2**20:.0f} MB for one dense queries x anchors matrix"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
