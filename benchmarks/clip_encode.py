"""Benchmark CLIP encoding: keras_towers' `encode_*` vs transformers' `get_*_features`.

Issue 16: encoding throughput (`encode_images` / `encode_texts`, images/s and
texts/s) >= transformers' `get_image_features` / `get_text_features` on the
same model, on every backend, including the per-call overhead of small
batches. Contenders:

- `keras_towers.CLIP` on each Keras backend (`jax`, `torch`, `tensorflow`),
  called as a user calls it: `model.encode_images(images)` on raw uint8
  images `(B, S, S, 3)` at the model's size and `model.encode_texts(texts)`
  on a list of `B` caption strings. These public methods include their
  preprocessing (image framing and CLIP's mean/std scaling; byte
  tokenization, packing to the context) and return L2-normalised NumPy
  embeddings;
- `transformers.CLIPModel` (PyTorch, eval mode, under
  `torch.inference_mode()`): `get_image_features(pixel_values=...)` on float
  `(B, 3, S, S)` pixels that are already normalised, and
  `get_text_features(input_ids=..., attention_mask=...)` on token ids padded
  to the context; no preprocessing, no tokenization, no normalisation; the
  projected embeddings are returned as a NumPy array (`.numpy()`, no copy).

The model is `clip_train_step.py`'s (`--config small|large` and the same
architecture flags; `build_keras_clip` and `transformers_config` there): the
same architecture and parameter count (checked), initialised independently,
so the embeddings differ; each contender's output shape is checked instead.

Each (modality, batch size) is a named call of the worker (see
`_harness._serve`): the first call is timed separately (tracing, XLA
compilation, first use of the preprocessing), then `--warmup` untimed calls
run. The driver then runs, for each (modality, batch size) in turn,
`--rounds` interleaved rounds of one block per contender, in rotating order;
a block is as many calls as take about `--block-s` seconds for the slowest
contender (the same count for all). The table gives the median time per
call, items/s (batch size / median) and the ratio to transformers at the
same batch size; batch sizes 1 and 8 show per-call overhead.

By default `encode_*` get no `batch_size` (their defaults, 32 images and
256 texts per forward pass; on jax and tensorflow a smaller call is padded
to a power of two >= 8 rows, at most the batch size, so a 1-image call runs
8 rows; torch runs the call's rows);
`--encode-batch-size call` passes the call's size instead (one forward pass
of exactly `B` rows, as transformers runs).

A contender is `BACKEND[:MODE]`: `auto` (the default) is the model as built
and not compiled, as `from_preset` gives it (Keras' `jit_compile="auto"`:
XLA on jax, eager on torch, a non-XLA `tf.function` on a CPU-only
tensorflow); `compile` calls `model.compile()` first (CLIP's defaults, which
turn XLA on for tensorflow); `xla` / `nojit` compile with `jit_compile=True`
/ `False`. Modes other than `auto` are variants: shown, not in the targets.

Usage:

```
python benchmarks/clip_encode.py
python benchmarks/clip_encode.py --config large --json /tmp/clip_encode.json
python benchmarks/clip_encode.py --batch-sizes 1,8 --backends jax,tensorflow:compile
python benchmarks/clip_encode.py --encode-batch-size call
```
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

# The harness and the training benchmark sit next to this script; workers
# also run it as a script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as harness  # noqa: E402
import clip_train_step as train_bench  # noqa: E402

TARGET_EVERY = 1.0
MODALITIES = ("images", "texts")
KERAS_BACKENDS = train_bench.KERAS_BACKENDS
#: `--backends` modes -> `model.compile(jit_compile=...)`; None: no compile.
MODES = {"auto": None, "compile": "auto", "xla": True, "nojit": False}
#: Flags a worker is started with, besides the architecture.
WORKER_FLAGS = (
    *train_bench.ARCHITECTURE_FLAGS,
    "threads",
    "seed",
    "warmup",
    "batch_sizes",
    "encode_batch_size",
)


# === Arguments ===


def batch_sizes(text: str) -> list:
    sizes = list(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes >= 1, got {text!r}")
    return sizes


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train_bench.add_config_argument(p)
    p.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default="1,8,64,256",
        help="items per encode call, comma-separated",
    )
    p.add_argument(
        "--encode-batch-size",
        choices=("default", "call"),
        default="default",
        help="`batch_size` given to encode_*: none (their defaults, 32 "
        "images / 256 texts per forward pass), or the call's size",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument(
        "--block-s",
        type=float,
        default=0.5,
        help="a timed block is as many calls as take about this long for "
        "the slowest contender (at least one)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed calls after the first, per modality and batch size",
    )
    p.add_argument(
        "--backends",
        default="jax,torch,tensorflow",
        help="keras_towers contenders, BACKEND[:auto|compile|xla|nojit]",
    )
    p.add_argument(
        "--no-transformers",
        action="store_true",
        help="skip the transformers baseline (no ratios then)",
    )
    train_bench.add_model_arguments(p)
    train_bench.add_run_arguments(p)
    # Internal: run as a worker.
    p.add_argument("--worker", choices=("keras", "transformers"))
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="auto", help=argparse.SUPPRESS)
    args = train_bench.parse_with_config(p, argv)
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (its calls size the timed blocks)")
    return args


def call_name(modality: str, size: int) -> str:
    return f"{modality}_{size}"


# === Inputs (no framework imports) ===


def with_batch_size(args, size: int):
    """`args` with `batch_size` set, for `clip_train_step.make_batch`."""
    sized = copy.copy(args)
    sized.batch_size = size
    return sized


def raw_inputs(args, size: int):
    """What a user gives `encode_*`: uint8 images at the model's size and
    captions of random words that fit the context (no truncation)."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    s = args.image_size
    images = rng.integers(0, 256, (size, s, s, 3), dtype=np.uint8)
    words = np.array(["a", "photo", "of", "red", "cat", "dog", "small", "the"])
    # Byte tokens: one per character, plus start and end.
    limit = args.context_length - 2
    texts = [
        " ".join(rng.choice(words, rng.integers(2, 8)))[:limit] for _ in range(size)
    ]
    return images, texts


# === Workers ===


def make_call(encode, size: int, embed_dim: int, warmup: int):
    """`encode()` (one call over `size` items, returning a NumPy array) as a
    named call for `_harness._serve`, returning `{"s": seconds}`.

    The first invocation times the first call, checks the output's shape
    and values, then runs `warmup` more calls; its record adds `warm_s`
    (their median, which sizes the driver's blocks), `shape` and the mean
    row norm (1 for normalised embeddings).
    """
    import numpy as np

    first = [True]

    def call():
        t = time.perf_counter()
        out = encode()
        seconds = time.perf_counter() - t
        if not first[0]:
            return {"s": seconds}
        first[0] = False
        out = np.asarray(out)
        if out.shape != (size, embed_dim) or not np.all(np.isfinite(out)):
            raise RuntimeError(
                f"expected finite embeddings of shape {(size, embed_dim)}, got "
                f"shape {out.shape}"
            )
        warm = []
        for _ in range(warmup):
            t = time.perf_counter()
            encode()
            warm.append(time.perf_counter() - t)
        return {
            "s": seconds,
            "warm_s": statistics.median(warm),
            "shape": list(out.shape),
            "row_norm": float(np.linalg.norm(out, axis=1).mean()),
        }

    return call


def _noop_step() -> float:
    """`_serve` warms up a `step`; everything here is timed through calls."""
    return 0.0


def keras_worker(args) -> None:
    channel = harness._protocol_channel()
    harness.restrict_threads(args.threads)
    os.environ["KERAS_BACKEND"] = args.backend
    if args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    import keras
    import numpy as np

    model = train_bench.build_keras_clip(args)
    jit_compile = MODES[args.mode]
    if jit_compile is not None:
        model.compile(jit_compile=jit_compile)
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    kwargs = {}
    calls = {}
    for modality in MODALITIES:
        for size in args.batch_sizes:
            if args.encode_batch_size == "call":
                kwargs = {"batch_size": size}
            images, texts = raw_inputs(args, size)
            if modality == "images":

                def encode(images=images, kwargs=kwargs):
                    return model.encode_images(images, **kwargs)

            else:

                def encode(texts=texts, kwargs=kwargs):
                    return model.encode_texts(texts, **kwargs)

            calls[call_name(modality, size)] = make_call(
                encode, size, args.embed_dim, args.warmup
            )
    info = {
        "params": params,
        "framework": f"keras {keras.__version__} ({args.backend})",
        "jit_compile": str(model.jit_compile),
        "compiled": jit_compile is not None,
        "threads": args.threads,
    }
    if args.backend == "torch":
        import torch

        info["framework"] += f", torch {torch.__version__}"
    elif args.backend == "jax":
        import jax

        info["framework"] += f", jax {jax.__version__}"
    else:
        import tensorflow as tf

        info["framework"] += f", tensorflow {tf.__version__}"
    harness._serve(channel, _noop_step, info, 0, calls=calls)


def transformers_worker(args) -> None:
    channel = harness._protocol_channel()
    harness.restrict_threads(args.threads)
    import torch
    import transformers
    from transformers import CLIPModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = CLIPModel(train_bench.transformers_config(args)).eval()

    def embeddings(out):
        # transformers 5 returns the model output, the projection in
        # `pooler_output`; older versions the tensor itself.
        out = getattr(out, "pooler_output", out)
        return out.numpy()

    calls = {}
    for modality in MODALITIES:
        for size in args.batch_sizes:
            images, token_ids, mask = train_bench.make_batch(
                with_batch_size(args, size)
            )
            if modality == "images":
                pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

                def encode(pixels=pixels):
                    with torch.inference_mode():
                        return embeddings(model.get_image_features(pixel_values=pixels))

            else:
                ids = torch.from_numpy(token_ids).long()
                attention = torch.from_numpy(mask).long()

                def encode(ids=ids, attention=attention):
                    with torch.inference_mode():
                        out = model.get_text_features(
                            input_ids=ids, attention_mask=attention
                        )
                        return embeddings(out)

            calls[call_name(modality, size)] = make_call(
                encode, size, args.embed_dim, args.warmup
            )
    info = {
        "params": int(sum(p.numel() for p in model.parameters())),
        "framework": f"transformers {transformers.__version__}, "
        f"torch {torch.__version__}",
        "attn_implementation": model.config._attn_implementation,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
    }
    harness._serve(channel, _noop_step, info, 0, calls=calls)


# === Driver ===


def worker_command(args, kind, backend=None, mode="auto"):
    """This script as a `--worker KIND` subprocess with the model flags."""
    flags = ["--worker", kind]
    for flag in WORKER_FLAGS:
        value = getattr(args, flag)
        if flag == "batch_sizes":
            value = ",".join(str(v) for v in value)
        flags += [f"--{flag.replace('_', '-')}", str(value)]
    if backend is not None:
        flags += ["--backend", backend, "--mode", mode]
    return harness.worker_command(__file__, flags)


def parse_contenders(spec: str):
    """`BACKEND[:MODE]` items -> (name, backend, mode)."""
    return [
        (name, backend, mode)
        for name, backend, mode, _ in train_bench.parse_contenders(
            spec, modes=MODES, setups=False
        )
    ]


def spread(values):
    """(first quartile, median, third quartile); one value: itself thrice."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    return harness.quantiles(values)


def run_driver(args) -> dict:
    contenders = [
        harness.Contender(
            name,
            worker_command(args, "keras", backend, mode),
            harness._env(backend),
            variant=mode != "auto",
        )
        for name, backend, mode in parse_contenders(args.backends)
    ]
    if not args.no_transformers:
        command = worker_command(args, "transformers")
        contenders.append(harness.Contender("transformers", command, harness._env()))
    if not contenders:
        raise SystemExit("nothing to benchmark")
    log_dir = harness.make_log_dir(args.log_dir, "clip_encode_")
    machine = harness.machine_info()
    names = [call_name(m, b) for m in MODALITIES for b in args.batch_sizes]
    print(
        f"machine: {machine['cpu']}, nproc={machine['nproc']}, "
        f"threads per worker={args.threads}"
    )
    print(f"worker logs: {log_dir}")
    t_start = time.perf_counter()

    def print_ready(worker):
        info = worker.info
        first = info["first_calls"][names[0]]["s"]
        print(
            f"  ready {worker.name:<28} params={info['params']:,} "
            f"first call ({names[0]}) {first:.2f}s, warm-up {info['warmup_s']:.1f}s",
            flush=True,
        )

    blocks = {}
    foreign = {}
    with harness.worker_pool(contenders, log_dir) as workers:
        # Warm-up runs concurrently; timing only starts once all are ready.
        harness.wait_ready(workers, print_ready)
        params = {w.name: w.info["params"] for w in workers}
        if len(set(params.values())) != 1:
            raise SystemExit(f"parameter counts differ: {params}")
        for name in names:
            slowest = max(w.info["first_calls"][name]["warm_s"] for w in workers)
            blocks[name] = max(1, math.ceil(args.block_s / slowest))
            start = {w.name: len(w.foreign) for w in workers}
            harness.run_rounds(
                workers,
                args.rounds,
                blocks[name],
                quiet_wait=args.quiet_wait,
                max_other_load=args.max_other_load,
                retries=args.retries,
                call=name,
            )
            for w in workers:
                foreign[w.name, name] = w.foreign[start[w.name] :]

    results = []
    for worker in workers:
        rows = []
        for modality in MODALITIES:
            for size in args.batch_sizes:
                name = call_name(modality, size)
                times = [r["s"] for r in worker.records[name]]
                q1, median, q3 = spread(times)
                first = worker.info["first_calls"][name]
                rows.append(
                    {
                        "modality": modality,
                        "batch_size": size,
                        "median_ms": 1e3 * median,
                        "q1_ms": 1e3 * q1,
                        "q3_ms": 1e3 * q3,
                        "min_ms": 1e3 * min(times),
                        "items_per_s": size / median,
                        "calls_timed": len(times),
                        "calls_per_block": blocks[name],
                        "first_call_s": first["s"],
                        "warm_ms": 1e3 * first["warm_s"],
                        "shape": first["shape"],
                        "row_norm": first["row_norm"],
                        "foreign_load": statistics.mean(foreign[worker.name, name]),
                        "times_ms": [1e3 * t for t in times],
                    }
                )
        # (`first_calls` went into the rows; the no-op step's fields mean nothing.)
        skip = ("first_calls", "first_step_s", "first_loss")
        info = {k: v for k, v in worker.info.items() if k not in skip}
        results.append(
            {
                "name": worker.name,
                "variant": worker.variant,
                "foreign_load": statistics.mean(worker.foreign),
                "quiet_wait_s": worker.waited_s,
                "blocks_discarded": worker.discarded,
                **info,
                "rows": rows,
            }
        )
    baseline = next((r for r in results if r["name"] == "transformers"), None)
    for r in results:
        for row in r["rows"]:
            row["vs_transformers"] = None
            if baseline is not None:
                base = next(
                    b
                    for b in baseline["rows"]
                    if (b["modality"], b["batch_size"])
                    == (row["modality"], row["batch_size"])
                )
                row["vs_transformers"] = row["items_per_s"] / base["items_per_s"]
    report = {
        "machine": machine,
        "config": {
            **{k: getattr(args, k) for k in WORKER_FLAGS},
            "config_name": args.config,
            "rounds": args.rounds,
            "block_s": args.block_s,
            "inputs": {
                "keras_towers": "encode_images(uint8 (B, S, S, 3) in [0, 255]), "
                "encode_texts(list of B strings); preprocessing, tokenization "
                "and L2 normalisation included",
                "transformers": "get_image_features(pixel_values=float32 "
                "(B, 3, S, S), normalised), get_text_features(input_ids, "
                "attention_mask (B, context)) under torch.inference_mode(), "
                "eval mode; .pooler_output.numpy()",
            },
        },
        "results": results,
        "targets": evaluate_targets(results, baseline),
        "wall_s": time.perf_counter() - t_start,
    }
    print_report(report, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def evaluate_targets(results, baseline) -> list:
    """Every keras_towers backend (not variants) >= `TARGET_EVERY` x
    transformers' items/s at every batch size, per modality."""
    if baseline is None:
        return []
    targets = []
    for r in results:
        if r is baseline or r["variant"]:
            continue
        for modality in MODALITIES:
            rows = [row for row in r["rows"] if row["modality"] == modality]
            worst = min(rows, key=lambda row: row["vs_transformers"])
            ratios = ", ".join(
                f"{row['batch_size']}: {row['vs_transformers']:.2f}x" for row in rows
            )
            targets.append(
                {
                    "target": f"{r['name']} {modality}/s >= {TARGET_EVERY}x "
                    "transformers at every batch size",
                    "value": f"worst {worst['vs_transformers']:.2f}x at batch "
                    f"{worst['batch_size']} ({ratios})",
                    "pass": worst["vs_transformers"] >= TARGET_EVERY,
                }
            )
    return targets


def print_report(report, args) -> None:
    print()
    print(
        f"CLIP encoding ({args.config} config): ViT {args.image_size}px/"
        f"{args.patch_size} w{args.vision_width} L{args.vision_layers} "
        f"H{args.vision_heads} mlp{args.vision_mlp}; text ctx"
        f"{args.context_length} vocab{args.vocab_size} w{args.text_width} "
        f"L{args.text_layers} H{args.text_heads} mlp{args.text_mlp}; embed "
        f"{args.embed_dim}; params {report['results'][0]['params']:,} (equal "
        "for all contenders)"
    )
    print(
        f"{args.rounds} rounds interleaved per modality and batch size, blocks of "
        f"~{args.block_s}s; first call + {args.warmup} warm-up calls untimed; "
        f"threads {args.threads}"
    )
    if args.encode_batch_size == "call":
        print("encode_* get batch_size = the call's size (one forward pass of B rows)")
    else:
        print(
            "encode_* get no batch_size (defaults: 32 images, 256 texts per "
            "forward pass; smaller calls padded to a power of two >= 8 rows)"
        )
    inputs = report["config"]["inputs"]
    print(f"inputs: keras_towers {inputs['keras_towers']}")
    print(f"        transformers {inputs['transformers']}")
    print()
    width = max(28, *(len(r["name"]) for r in report["results"]))
    header = (
        f"{'contender':<{width}} {'modality':<8} {'batch':>5} {'ms/call':>9} "
        f"{'IQR ms':>17} {'items/s':>9} {'vs HF':>6} {'1st call s':>10} "
        f"{'calls':>6} {'other load':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        for row in r["rows"]:
            ratio = row["vs_transformers"]
            ratio = "" if ratio is None else f"{ratio:.2f}x"
            iqr = f"{row['q1_ms']:.2f}-{row['q3_ms']:.2f}"
            print(
                f"{r['name']:<{width}} {row['modality']:<8} {row['batch_size']:>5} "
                f"{row['median_ms']:>9.2f} {iqr:>17} {row['items_per_s']:>9.1f} "
                f"{ratio:>6} {row['first_call_s']:>10.2f} "
                f"{row['calls_timed']:>6} {100 * row['foreign_load']:>9.0f}%"
            )
    print()
    for r in report["results"]:
        extra = r.get("attn_implementation")
        extra = f"attn={extra}" if extra else f"jit_compile={r['jit_compile']}"
        norms = sorted({round(row["row_norm"], 3) for row in r["rows"]})
        print(
            f"  {r['name']}: {r['framework']}, {extra}; ready after "
            f"{r['warmup_s']:.1f}s; output shapes checked, row norms {norms}; "
            f"{r['blocks_discarded']} loaded blocks re-timed"
        )
    print(
        f"  1st call s: a worker's first call at that modality and batch size, "
        f"in order {', '.join(call_name(m, b) for m in MODALITIES for b in args.batch_sizes)}"
        " (the first one pays tracing / compilation of the whole path)"
    )
    harness.print_footer(report)


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "keras":
        keras_worker(args)
    elif args.worker == "transformers":
        transformers_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
