"""Benchmark one CLIP training step: keras_towers vs transformers.

One training step is forward + InfoNCE loss + backward + AdamW update on one
fixed batch of (image, caption) pairs. Contenders:

- `keras_towers.CLIP` on each Keras backend (`jax`, `torch`, `tensorflow`),
  trained with `model.compile()` (CLIP's default AdamW) and the compiled
  train function that `model.fit` runs;
- `transformers.CLIPModel` in PyTorch, `model(..., return_loss=True)`,
  `loss.backward()`, `torch.optim.AdamW.step()`.

Both models have the same architecture (ViT image tower with a class token,
causal text transformer pooled at the end token, quick-GELU, linear
projections without bias, learned logit scale), the same parameter count
(checked), the same batch and the same optimizer settings (lr 5e-4, betas
0.9/0.98, eps 1e-6, weight decay 0.2 on matrices only).

`KERAS_BACKEND` is read once per process, so this script is a driver that
starts one long-lived worker subprocess per contender (this script again, with
`--worker`). Each worker builds its model and warms up (tracing / XLA
compilation happen here); then the driver runs `--rounds` rounds in which each
worker, in rotating order, times `--steps` steps, blocking on the loss after
each (interleaving spreads machine-load drift over all contenders). The
worker protocol, the interleaved rounds, the matmul-peak probe and
the waiting for a quiet CPU are in `_harness.py`, shared with other
benchmarks.

Then each Keras worker trains through `model.fit` on a `tf.data` pipeline of
the same batch: `--fit-rounds` interleaved rounds of one `fit` call of
`--fit-steps` steps (see `make_fit_call` for what is timed), reported as the
steps' time per step (and its ratio to transformers' step), the time from
the call to the first batch, the time from the last step to `fit`'s return,
and a whole call over its steps' direct time. `--config large` selects the
larger model of issue 16 (ViT width 384 x 6 layers at 96 px).

The fraction of peak relates the analytic training FLOPs per step
(3 x forward matmul/conv FLOPs of both towers and the B x B logits) to the
machine's fp32 matmul peak, measured in the same run (best of several large
square matmuls in torch, NumPy and JAX, before and after the timed rounds).

The machine may be shared: before each block the driver waits for the CPUs
to be idle, and it re-times a block (up to `--retries` times) when other
processes took more than `--max-other-load` of the CPU time while it ran.
The `other load` column reports what was left.

Experiments: `BACKEND[:MODE]@FILE.py` runs FILE in that worker after
importing keras_towers and before building the model (e.g. a monkeypatch),
so a change can be timed interleaved against the unpatched contender.
Variants (a MODE other than `auto`, or a setup file) are shown in the table
but left out of the PASS/FAIL targets, which are about `model.compile()`.

Usage:

```
python benchmarks/clip_train_step.py
python benchmarks/clip_train_step.py --rounds 3 --steps 5 --backends jax,torch
python benchmarks/clip_train_step.py --backends jax,torch,tensorflow,tensorflow:xla
python benchmarks/clip_train_step.py --json /tmp/clip_step.json
```

A contender is `BACKEND[:MODE]`: `MODE` is Keras' `jit_compile` setting,
`auto` (the default `model.compile()` gives: XLA on jax, eager on torch, a
non-XLA `tf.function` on a CPU-only tensorflow), `xla`/`compile`
(`jit_compile=True`) or `nojit` (`jit_compile=False`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import runpy
import statistics
import sys
import time

# The harness sits next to this script; workers also run it as a script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as harness  # noqa: E402

LEARNING_RATE = 5e-4
BETAS = (0.9, 0.98)
EPSILON = 1e-6
WEIGHT_DECAY = 0.2
TARGET_BEST = 2.0
TARGET_EVERY = 1.0
# `fit` returns within this many seconds of its last step, and a short fit
# (`--fit-steps`, 10 by default) costs less than this multiple of its steps.
TARGET_FIT_RETURN_S = 0.5
TARGET_SHORT_FIT = 1.5
#: a training process's peak resident memory <= this x transformers'.
TARGET_PEAK_RSS = 1.5
# Named model configs (`--config`); explicit flags override them.
CONFIGS = {
    # 1.78M parameters: the benchmark's historical config.
    "small": {},
    # The issue's larger config: ViT width 384 x 6 layers at 96 px.
    "large": {
        "image_size": 96,
        "vision_width": 384,
        "vision_layers": 6,
        "vision_heads": 6,
        "text_width": 384,
        "text_layers": 6,
        "text_heads": 6,
        "embed_dim": 384,
    },
}
KERAS_BACKENDS = ("jax", "torch", "tensorflow")
JIT_MODES = {"auto": "auto", "xla": True, "compile": True, "nojit": False}


# === Arguments ===


def add_config_argument(p) -> None:
    """`--config` (see `CONFIGS`); `parse_with_config` applies it."""
    p.add_argument(
        "--config",
        choices=sorted(CONFIGS),
        default="small",
        help="model config; explicit model flags override it",
    )


def add_model_arguments(p) -> None:
    """The architecture flags (`ARCHITECTURE_FLAGS`)."""
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--vision-heads", type=int, default=4)
    p.add_argument("--vision-mlp", type=int, default=None, help="4 x width")
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--text-mlp", type=int, default=None, help="4 x width")
    p.add_argument("--context-length", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=1000)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--layer-norm-eps", type=float, default=1e-5)


def add_run_arguments(p) -> None:
    """Threads, quiet-CPU waiting and re-timing, seed, outputs."""
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per worker (default: all cores)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each block, wait up to this many seconds for other "
        "processes to leave the CPUs idle (0: don't wait)",
    )
    p.add_argument(
        "--max-other-load",
        type=float,
        default=0.1,
        help="re-time a block when other processes used more than this "
        "share of the machine's CPU time while it ran",
    )
    p.add_argument("--retries", type=int, default=3, help="re-timings per loaded block")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--log-dir", default=None, help="worker stderr logs")


def parse_with_config(p, argv=None):
    """Parse `argv` with `--config`'s values as defaults (explicit flags
    win); fill in the MLP widths (4 x width) and threads (all cores)."""
    known, _ = p.parse_known_args(argv)
    if known.config is not None:
        p.set_defaults(**CONFIGS[known.config])
    args = p.parse_args(argv)
    args.vision_mlp = args.vision_mlp or 4 * args.vision_width
    args.text_mlp = args.text_mlp or 4 * args.text_width
    args.threads = args.threads or len(os.sched_getaffinity(0))
    return args


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_argument(p)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=4, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")
    p.add_argument(
        "--fit-steps",
        type=int,
        default=10,
        help="steps per timed `model.fit` call (0: time direct steps only)",
    )
    p.add_argument(
        "--fit-data",
        choices=("preprocessed", "raw"),
        default="preprocessed",
        help="what `fit` reads: the step's preprocessed batch repeated, or "
        "raw uint8 images (1.5x the model's size) and caption strings, "
        "shuffled and preprocessed in tf.data as `fit` does for users",
    )
    p.add_argument(
        "--fit-rounds",
        type=int,
        default=None,
        help="interleaved rounds of one `fit` call each (default: --rounds)",
    )
    p.add_argument(
        "--backends",
        default="jax,torch,tensorflow",
        help="keras_towers contenders, BACKEND[:auto|xla|compile|nojit]",
    )
    p.add_argument(
        "--no-transformers",
        action="store_true",
        help="skip the transformers baseline (no ratios then)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    add_model_arguments(p)
    add_run_arguments(p)
    # Internal: run as a worker.
    p.add_argument("--worker", choices=("keras", "transformers", "peak"))
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jit", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    args = parse_with_config(p, argv)
    if args.fit_rounds is None:
        args.fit_rounds = args.rounds
    return args


#: The architecture (`add_model_arguments`), as `args` attributes.
ARCHITECTURE_FLAGS = (
    "image_size",
    "patch_size",
    "vision_width",
    "vision_layers",
    "vision_heads",
    "vision_mlp",
    "text_width",
    "text_layers",
    "text_heads",
    "text_mlp",
    "context_length",
    "vocab_size",
    "embed_dim",
    "layer_norm_eps",
)
#: What a worker is started with (`worker_command`) and the report's config.
MODEL_FLAGS = (
    "batch_size",
    *ARCHITECTURE_FLAGS,
    "threads",
    "seed",
    "warmup",
    "fit_steps",
    "fit_data",
)


def model_config(args) -> dict:
    return {k: getattr(args, k) for k in MODEL_FLAGS}


# === Shared pieces (no framework imports) ===


def make_batch(args):
    """Random preprocessed images and token ids ending in the max id."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    b, s, length = args.batch_size, args.image_size, args.context_length
    end_id = args.vocab_size - 1
    images = rng.standard_normal((b, s, s, 3), dtype=np.float32)
    token_ids = rng.integers(1, end_id, size=(b, length), dtype=np.int64)
    lengths = rng.integers(2, length + 1, size=b)
    positions = np.arange(length)[None, :]
    token_ids[positions == (lengths[:, None] - 1)] = end_id
    padding_mask = positions < lengths[:, None]
    token_ids[~padding_mask] = 0
    return images, token_ids.astype("int32"), padding_mask


def attention_flops(args) -> int:
    """The `q k^T` and `p v` part of `forward_flops` (both towers)."""
    b, patches = args.batch_size, (args.image_size // args.patch_size) ** 2
    vision = 4 * b * (patches + 1) ** 2 * args.vision_width * args.vision_layers
    text = 4 * b * args.context_length**2 * args.text_width * args.text_layers
    return vision + text


def forward_flops(args) -> dict:
    """Matmul/conv FLOPs (2 x MACs) of one forward pass over a batch.

    Attention counts the full `T x T` score matrix also for the causal text
    tower; the patch embedding is counted as a matmul.
    """
    b = args.batch_size

    def encoder(seq, width, layers, mlp):
        projections = 2 * b * seq * width * 4 * width  # q, k, v, out
        attention = 2 * 2 * b * seq * seq * width  # q k^T and p v
        ffn = 2 * 2 * b * seq * width * mlp
        return layers * (projections + attention + ffn)

    patches = (args.image_size // args.patch_size) ** 2
    patch_embed = 2 * b * patches * 3 * args.patch_size**2 * args.vision_width
    vision = patch_embed + encoder(
        patches + 1, args.vision_width, args.vision_layers, args.vision_mlp
    )
    vision += 2 * b * args.vision_width * args.embed_dim
    text = encoder(
        args.context_length, args.text_width, args.text_layers, args.text_mlp
    )
    text += 2 * b * args.text_width * args.embed_dim
    logits = 2 * b * b * args.embed_dim
    return {"vision": vision, "text": text, "logits": logits}


# === Workers ===


def build_keras_clip(args):
    """The benchmarks' `keras_towers.CLIP` (seeded, not compiled): a ViT image
    tower pooled at its class token and a causal text transformer pooled at
    the end token, linear heads, and the default preprocessor (byte
    tokenizer, CLIP's mean/std) at the model's image size and context.

    Imports Keras: call it in a worker, after `KERAS_BACKEND` is set.
    """
    import keras

    import keras_towers

    keras.utils.set_random_seed(args.seed)
    image_tower = keras_towers.ImageTower(
        keras_towers.backbones.VisionTransformer(
            patch_size=args.patch_size,
            hidden_dim=args.vision_width,
            num_layers=args.vision_layers,
            num_heads=args.vision_heads,
            intermediate_dim=args.vision_mlp,
            image_shape=(args.image_size, args.image_size, 3),
            layer_norm_epsilon=args.layer_norm_eps,
            name="image_tower_backbone",
        ),
        pooling="cls",
        projection_dim=args.embed_dim,
        head="linear",
        name="image_tower",
    )
    text_tower = keras_towers.TextTower(
        keras_towers.backbones.TextTransformer(
            vocabulary_size=args.vocab_size,
            embedding_dim=args.text_width,
            hidden_dim=args.text_width,
            num_layers=args.text_layers,
            num_heads=args.text_heads,
            intermediate_dim=args.text_mlp,
            max_sequence_length=args.context_length,
            layer_norm_epsilon=args.layer_norm_eps,
            name="text_tower_backbone",
        ),
        pooling="argmax",
        projection_dim=args.embed_dim,
        head="linear",
        name="text_tower",
    )
    preprocessor = keras_towers.ContrastivePreprocessor.default(
        image_size=args.image_size, sequence_length=args.context_length
    )
    return keras_towers.CLIP(image_tower, text_tower, preprocessor=preprocessor)


def keras_worker(args) -> None:
    channel = harness._protocol_channel()
    harness.restrict_threads(args.threads)
    os.environ["KERAS_BACKEND"] = args.backend
    jit_compile = JIT_MODES[args.jit]
    if args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    import keras
    import numpy as np

    import keras_towers  # noqa: F401 (a setup file patches it, imported)

    if args.setup:
        # Experiments: e.g. monkeypatch keras_towers before the model is built.
        runpy.run_path(args.setup, run_name="__clip_bench_setup__")
    model = build_keras_clip(args)
    model.compile(
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        jit_compile=jit_compile,
    )
    images, token_ids, padding_mask = make_batch(args)
    x = {"images": images, "token_ids": token_ids, "padding_mask": padding_mask}
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    # Build (symbolically, as fit does) and create the train function.
    # (`_maybe_symbolic_build` is the tensorflow trainer's wrapper; other
    # backends call `_symbolic_build` directly.)
    if args.backend == "tensorflow":
        build = model._maybe_symbolic_build
    else:
        build = model._symbolic_build
    build(data_batch=(x, None, None))
    model.make_train_function()
    x = {k: keras.ops.convert_to_tensor(v) for k, v in x.items()}
    data = (x, None, None)

    if args.backend == "jax":

        def jax_state():
            return model._get_jax_state(
                trainable_variables=True,
                non_trainable_variables=True,
                optimizer_variables=True,
                metrics_variables=True,
                purge_model_variables=False,
            )

        state = [jax_state()]

        def state_to_model():
            # The direct step donates its state's buffers (as `fit` does):
            # hand the latest state to the model's variables before a `fit`,
            # and take the fitted state back afterwards.
            names = ("trainable", "non_trainable", "optimizer", "metrics")
            model._jax_state = {
                f"{name}_variables": list(values)
                for name, values in zip(names, state[0], strict=True)
            }
            model._jax_state_synced = False
            model.jax_state_sync()

        def state_from_model():
            state[0] = jax_state()

        def step():
            logs, state[0] = model.train_function(state[0], iter([data]))
            return float(logs["loss"])

    elif args.backend == "torch":

        def step():
            return float(model.train_function([data])["loss"])

    else:

        def step():
            return float(model.train_function(iter([data]))["loss"])

    info = {
        "params": params,
        "framework": f"keras {keras.__version__} ({args.backend})",
        "jit_compile": str(model.jit_compile),
        "threads": args.threads,
    }
    if args.backend == "torch":
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["framework"] += f", torch {torch.__version__}"
    elif args.backend == "jax":
        import jax

        info["framework"] += f", jax {jax.__version__}"
    else:
        import tensorflow as tf

        info["framework"] += f", tensorflow {tf.__version__}"
    calls = {}
    if args.fit_steps > 0:
        import tensorflow as tf

        # What users run: `fit` on a tf.data pipeline (here the same
        # preprocessed batch, repeated; Keras turns it into NumPy / torch
        # tensors per step on jax and torch).
        if args.fit_data == "raw":
            dataset = raw_dataset(args)
        else:
            batch = {
                "images": images,
                "token_ids": token_ids,
                "padding_mask": padding_mask,
            }
            dataset = tf.data.Dataset.from_tensors(batch).repeat()
        if args.backend == "jax":
            hooks = {"before": state_to_model, "after": state_from_model}
        else:
            hooks = {}
        calls["fit"] = make_fit_call(model, dataset, args.fit_steps, **hooks)
    harness._serve(channel, step, info, args.warmup, calls=calls)


def raw_dataset(args, batches: int = 4):
    """`batches` batches' worth of raw pairs, shuffled, batched, repeated:
    uint8 images at 1.5x the model's size (so they are resized) and
    captions of random words (the model's preprocessor runs in tf.data)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(args.seed)
    n, size = batches * args.batch_size, args.image_size * 3 // 2
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    words = np.array(["a", "photo", "of", "red", "cat", "dog", "small", "the"])
    texts = [" ".join(rng.choice(words, rng.integers(2, 8))) for _ in range(n)]
    dataset = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})
    return dataset.shuffle(n).batch(args.batch_size, drop_remainder=True).repeat()


def make_fit_call(model, dataset, steps: int, before=None, after=None):
    """One `model.fit(dataset, epochs=1, steps_per_epoch=steps)` as a
    benchmark call, returning where its time went:

    - `total_s`: the whole call;
    - `start_s`: from the call to the first batch's start (iterator and
      callback set-up);
    - `steps_s`: from the first batch's start to the end of the last one,
      synchronised by reading its loss (the `steps` training steps);
    - `return_s`: from there until `fit` returns (epoch end, iterator
      teardown).

    `before` / `after` (untimed) run around each call.
    """
    import keras

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.first = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch == steps - 1:
                self.loss = float(keras.ops.convert_to_numpy(logs["loss"]))
                self.last = time.perf_counter()

    def fit_call():
        if before is not None:
            before()
        timer = Timer()
        t0 = time.perf_counter()
        model.fit(
            dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer]
        )
        end = time.perf_counter()
        if after is not None:
            after()
        return {
            "total_s": end - t0,
            "start_s": timer.first - t0,
            "steps_s": timer.last - timer.first,
            "return_s": end - timer.last,
            "loss": timer.loss,
        }

    return fit_call


def transformers_config(args):
    from transformers import CLIPConfig

    text = {
        "vocab_size": args.vocab_size,
        "hidden_size": args.text_width,
        "intermediate_size": args.text_mlp,
        "num_hidden_layers": args.text_layers,
        "num_attention_heads": args.text_heads,
        "max_position_embeddings": args.context_length,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": args.layer_norm_eps,
        "attention_dropout": 0.0,
        "projection_dim": args.embed_dim,
        # The end token is the largest id (pooled at the first occurrence).
        "eos_token_id": args.vocab_size - 1,
        "bos_token_id": args.vocab_size - 2,
        "pad_token_id": 0,
    }
    vision = {
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "num_channels": 3,
        "hidden_size": args.vision_width,
        "intermediate_size": args.vision_mlp,
        "num_hidden_layers": args.vision_layers,
        "num_attention_heads": args.vision_heads,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": args.layer_norm_eps,
        "attention_dropout": 0.0,
        "projection_dim": args.embed_dim,
    }
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=args.embed_dim,
        logit_scale_init_value=math.log(1 / 0.07),
    )


def transformers_worker(args) -> None:
    channel = harness._protocol_channel()
    harness.restrict_threads(args.threads)
    import torch
    import transformers
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = CLIPModel(transformers_config(args))
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LEARNING_RATE,
        betas=BETAS,
        eps=EPSILON,
    )
    images, token_ids, _ = make_batch(args)
    pixel_values = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    input_ids = torch.from_numpy(token_ids).long()

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
        out.loss.backward()
        optimizer.step()
        return out.loss.item()

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
        out.loss.backward()
    optimizer.zero_grad(set_to_none=True)
    info = {
        "params": int(sum(p.numel() for p in model.parameters())),
        "framework": f"transformers {transformers.__version__}, "
        f"torch {torch.__version__}",
        "attn_implementation": model.config._attn_implementation,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "flop_counter_train_flops": int(counter.get_total_flops()),
    }
    harness._serve(channel, step, info, args.warmup)


# === Driver ===


def worker_command(args, kind, backend=None, jit="auto", setup=None):
    """This script as a `--worker KIND` subprocess with the model flags."""
    flags = ["--worker", kind]
    for flag in MODEL_FLAGS:
        flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if backend is not None:
        flags += ["--backend", backend, "--jit", jit]
    if setup is not None:
        flags += ["--setup", os.path.abspath(setup)]
    return harness.worker_command(__file__, flags)


def measure_peak(args, log_dir, tag) -> dict:
    command = worker_command(args, "peak")
    return harness.measure_peak(command, log_dir, tag, args.quiet_wait)


def parse_contenders(spec: str, modes=JIT_MODES, setups: bool = True):
    """`BACKEND[:MODE][@SETUP.py]` items -> (name, backend, mode, setup).

    `modes`: the MODE names allowed; `setups=False` refuses `@SETUP.py`.
    """
    contenders = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        item, _, setup = item.partition("@")
        backend, _, mode = item.partition(":")
        mode = mode or "auto"
        if backend not in KERAS_BACKENDS:
            raise SystemExit(f"unknown backend {backend!r} in --backends")
        if mode not in modes:
            raise SystemExit(f"unknown mode {mode!r}; one of {sorted(modes)}")
        if setup and not setups:
            raise SystemExit(f"no @SETUP files here: {item}@{setup}")
        if setup and not os.path.isfile(setup):
            raise SystemExit(f"setup file {setup!r} not found")
        name = backend if mode == "auto" else f"{backend}:{mode}"
        if setup:
            name += "@" + os.path.splitext(os.path.basename(setup))[0]
        contenders.append((f"keras_towers[{name}]", backend, mode, setup or None))
    return contenders


def run_driver(args) -> dict:
    contenders = []
    for name, backend, mode, setup in parse_contenders(args.backends):
        contenders.append(
            harness.Contender(
                name,
                worker_command(args, "keras", backend, mode, setup),
                harness._env(backend),
                variant=mode != "auto" or setup is not None,
            )
        )
    if not args.no_transformers:
        command = worker_command(args, "transformers")
        contenders.append(harness.Contender("transformers", command, harness._env()))
    if not contenders:
        raise SystemExit("nothing to benchmark")
    log_dir = harness.make_log_dir(args.log_dir, "clip_train_step_")
    machine = harness.machine_info()
    flops = forward_flops(args)
    train_flops = 3 * sum(flops.values())
    print(
        f"machine: {machine['cpu']}, nproc={machine['nproc']}, "
        f"threads per worker={args.threads}"
    )
    print(f"worker logs: {log_dir}")
    t_start = time.perf_counter()
    peaks = [measure_peak(args, log_dir, "before")]

    def print_ready(worker):
        info = worker.info
        print(
            f"  ready {worker.name:<28} params={info['params']:,} "
            f"first step {info['first_step_s']:.1f}s "
            f"loss0={info['first_loss']:.3f}",
            flush=True,
        )

    with harness.worker_pool(contenders, log_dir) as workers:
        # Warm-up runs concurrently; timing only starts once all are ready.
        harness.wait_ready(workers, print_ready)
        params = {w.name: w.info["params"] for w in workers}
        if len(set(params.values())) != 1:
            raise SystemExit(f"parameter counts differ: {params}")
        harness.run_rounds(
            workers,
            args.rounds,
            args.steps,
            quiet_wait=args.quiet_wait,
            max_other_load=args.max_other_load,
            retries=args.retries,
        )
        fitters = [w for w in workers if "first_calls" in w.info]
        if args.fit_steps > 0 and fitters:
            harness.run_rounds(
                fitters,
                args.fit_rounds,
                1,
                quiet_wait=args.quiet_wait,
                max_other_load=args.max_other_load,
                retries=args.retries,
                call="fit",
            )
        # Peak resident memory of each training process over its whole life
        # (import, build, warm-up, the timed steps and fits), read before
        # the workers quit.
        peak_rss = {w.name: w.peak_rss_mib() for w in workers}
    peaks.append(measure_peak(args, log_dir, "after"))
    peak = max(v for p in peaks for v in p.values())

    results = []
    for worker in workers:
        q1, median, q3 = harness.quantiles(worker.times)
        results.append(
            {
                "name": worker.name,
                "median_ms": 1e3 * median,
                "q1_ms": 1e3 * q1,
                "q3_ms": 1e3 * q3,
                "min_ms": 1e3 * min(worker.times),
                "pairs_per_s": args.batch_size / median,
                "gflops": train_flops / median / 1e9,
                "peak_fraction": train_flops / median / 1e9 / peak,
                "steps_timed": len(worker.times),
                "foreign_load": statistics.mean(worker.foreign),
                "foreign_load_max": max(worker.foreign),
                "quiet_wait_s": worker.waited_s,
                "blocks_discarded": worker.discarded,
                "variant": worker.variant,
                "last_loss": worker.last_loss,
                "times_ms": [1e3 * t for t in worker.times],
                "peak_rss_mib": peak_rss[worker.name],
                **worker.info,
            }
        )
        fits = worker.records.get("fit")
        if fits:
            results[-1]["fit"] = summarise_fits(fits, args, median, train_flops, peak)
    baseline = next((r for r in results if r["name"] == "transformers"), None)
    for r in results:
        r["vs_transformers"] = (
            r["pairs_per_s"] / baseline["pairs_per_s"] if baseline else None
        )
        rss, base_rss = r["peak_rss_mib"], baseline and baseline["peak_rss_mib"]
        r["rss_vs_transformers"] = rss / base_rss if rss and base_rss else None
        if "fit" in r:
            r["fit"]["vs_transformers"] = (
                r["fit"]["pairs_per_s"] / baseline["pairs_per_s"] if baseline else None
            )
    targets = evaluate_targets(results, baseline)
    report = {
        "machine": machine,
        "config": {
            **model_config(args),
            "config_name": args.config,
            "rounds": args.rounds,
            "steps": args.steps,
            "fit_rounds": args.fit_rounds,
            "fit_data": args.fit_data,
            "optimizer": {
                "name": "AdamW",
                "learning_rate": LEARNING_RATE,
                "betas": BETAS,
                "epsilon": EPSILON,
                "weight_decay": WEIGHT_DECAY,
                "decay": "matrices only (ndim >= 2)",
            },
        },
        "forward_flops": flops,
        "train_flops_per_step": train_flops,
        "peak_gflops": peak,
        "peak_measurements": peaks,
        "results": results,
        "targets": targets,
        "wall_s": time.perf_counter() - t_start,
    }
    print_report(report, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def summarise_fits(fits, args, step_median, train_flops, peak) -> dict:
    """Medians of the timed `fit` calls of one contender.

    `ms_per_step` is the steps' part of a fit over `--fit-steps` (synchronised
    at the last one); `short_fit_ratio` is a whole fit call over
    `--fit-steps` times the direct step's median, both from this run.
    """

    def median(key):
        return statistics.median(f[key] for f in fits)

    per_step = median("steps_s") / args.fit_steps
    return {
        "calls": len(fits),
        "steps_per_call": args.fit_steps,
        "ms_per_step": 1e3 * per_step,
        "pairs_per_s": args.batch_size / per_step,
        "peak_fraction": train_flops / per_step / 1e9 / peak,
        "total_s": median("total_s"),
        "start_s": median("start_s"),
        "return_s": median("return_s"),
        "return_s_max": max(f["return_s"] for f in fits),
        "short_fit_ratio": median("total_s") / (args.fit_steps * step_median),
        "records": fits,
    }


def evaluate_targets(results, baseline) -> list:
    if baseline is None:
        return []
    # Targets are about what `model.compile()` gives; variants are extra rows.
    keras_results = [r for r in results if r is not baseline and not r["variant"]]
    if not keras_results:
        return []
    best = max(keras_results, key=lambda r: r["vs_transformers"])
    targets = [
        {
            "target": f"best backend >= {TARGET_BEST}x transformers pairs/s",
            "value": f"{best['name']} {best['vs_transformers']:.2f}x",
            "pass": best["vs_transformers"] >= TARGET_BEST,
        }
    ]
    for r in keras_results:
        targets.append(
            {
                "target": f"{r['name']} >= {TARGET_EVERY}x transformers pairs/s",
                "value": f"{r['vs_transformers']:.2f}x",
                "pass": r["vs_transformers"] >= TARGET_EVERY,
            }
        )
    for r in keras_results:
        if r["rss_vs_transformers"] is not None:
            targets.append(
                {
                    "target": f"{r['name']} peak memory <= {TARGET_PEAK_RSS}x "
                    "transformers'",
                    "value": f"{r['peak_rss_mib']:.0f} MiB, "
                    f"{r['rss_vs_transformers']:.2f}x",
                    "pass": r["rss_vs_transformers"] <= TARGET_PEAK_RSS,
                }
            )
    fitted = [r for r in keras_results if "fit" in r]
    if not fitted:
        return targets
    best = max(fitted, key=lambda r: r["fit"]["vs_transformers"])
    targets.append(
        {
            "target": f"through fit: best backend >= {TARGET_BEST}x transformers",
            "value": f"{best['name']} {best['fit']['vs_transformers']:.2f}x",
            "pass": best["fit"]["vs_transformers"] >= TARGET_BEST,
        }
    )
    for r in fitted:
        fit = r["fit"]
        targets += [
            {
                "target": f"through fit: {r['name']} >= {TARGET_EVERY}x transformers",
                "value": f"{fit['vs_transformers']:.2f}x",
                "pass": fit["vs_transformers"] >= TARGET_EVERY,
            },
            {
                "target": f"{r['name']} fit returns <= {TARGET_FIT_RETURN_S} s "
                "after its last step",
                "value": f"median {fit['return_s']:.3f} s, max "
                f"{fit['return_s_max']:.3f} s",
                "pass": fit["return_s_max"] <= TARGET_FIT_RETURN_S,
            },
            {
                "target": f"{r['name']} {fit['steps_per_call']}-step fit < "
                f"{TARGET_SHORT_FIT}x its steps",
                "value": f"{fit['short_fit_ratio']:.2f}x",
                "pass": fit["short_fit_ratio"] < TARGET_SHORT_FIT,
            },
        ]
    return targets


def print_report(report, args) -> None:
    config = report["config"]
    flops = report["forward_flops"]
    print()
    print(
        "CLIP training step (forward + InfoNCE + backward + AdamW), batch "
        f"{args.batch_size}: ViT {args.image_size}px/{args.patch_size} "
        f"w{args.vision_width} L{args.vision_layers} H{args.vision_heads} "
        f"mlp{args.vision_mlp}; text ctx{args.context_length} "
        f"vocab{args.vocab_size} w{args.text_width} L{args.text_layers} "
        f"H{args.text_heads} mlp{args.text_mlp}; embed {args.embed_dim}"
    )
    params = report["results"][0]["params"]
    print(
        f"params {params:,} (equal for all contenders); "
        f"{config['rounds']} rounds x {config['steps']} steps interleaved, "
        f"{config['warmup']} warm-up steps; threads {config['threads']}"
    )
    print(
        f"train FLOPs/step ~ 3 x forward = 3 x ({flops['vision'] / 1e9:.2f} "
        f"vision + {flops['text'] / 1e9:.2f} text + "
        f"{flops['logits'] / 1e9:.4f} logits) GFLOP = "
        f"{report['train_flops_per_step'] / 1e9:.2f} GFLOP"
    )
    before, after = report["peak_measurements"]
    print(
        f"fp32 matmul peak {report['peak_gflops']:.1f} GFLOP/s, best of "
        "square matmuls in torch/NumPy/JAX before and after the timed rounds"
    )
    for tag, peaks in (("before", before), ("after", after)):
        print(
            f"  {tag}: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peaks.items()))
        )
    print()
    header = (
        f"{'contender':<28} {'ms/step':>8} {'IQR ms':>15} {'pairs/s':>8} "
        f"{'vs HF':>6} {'GFLOP/s':>8} {'% peak':>7} {'other load':>10} "
        f"{'peak RSS':>9} {'vs HF':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        ratio = "" if r["vs_transformers"] is None else f"{r['vs_transformers']:.2f}x"
        iqr = f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}"
        rss = r["peak_rss_mib"]
        rss = "" if rss is None else f"{rss:.0f} MiB"
        rss_ratio = r["rss_vs_transformers"]
        rss_ratio = "" if rss_ratio is None else f"{rss_ratio:.2f}x"
        print(
            f"{r['name']:<28} {r['median_ms']:>8.1f} {iqr:>15} "
            f"{r['pairs_per_s']:>8.1f} {ratio:>6} {r['gflops']:>8.1f} "
            f"{100 * r['peak_fraction']:>6.1f}% {100 * r['foreign_load']:>9.0f}% "
            f"{rss:>9} {rss_ratio:>6}"
        )
    fitted = [r for r in report["results"] if "fit" in r]
    if fitted:
        steps = fitted[0]["fit"]["steps_per_call"]
        print()
        print(
            f"through model.fit (tf.data, {args.fit_data} data, {steps} steps per call, "
            f"{fitted[0]['fit']['calls']} calls; ratios against transformers' "
            "step above)"
        )
        header = (
            f"{'contender':<28} {'ms/step':>8} {'pairs/s':>8} {'vs HF':>6} "
            f"{'% peak':>7} {'start s':>8} {'return s':>9} {'fit/steps':>9}"
        )
        print(header)
        print("-" * len(header))
        for r in fitted:
            fit = r["fit"]
            ratio = fit["vs_transformers"]
            ratio = "" if ratio is None else f"{ratio:.2f}x"
            print(
                f"{r['name']:<28} {fit['ms_per_step']:>8.1f} "
                f"{fit['pairs_per_s']:>8.1f} {ratio:>6} "
                f"{100 * fit['peak_fraction']:>6.1f}% {fit['start_s']:>8.3f} "
                f"{fit['return_s']:>9.3f} {fit['short_fit_ratio']:>8.2f}x"
            )
        print(
            "  start: call to first batch; return: last step (loss read) to "
            "fit's return; fit/steps: a whole fit call over "
            f"{steps} x the direct step's median"
        )
    print()
    for r in report["results"]:
        extra = ""
        if "attn_implementation" in r:
            extra = f", attn={r['attn_implementation']}"
            no_attention = report["train_flops_per_step"] - 3 * attention_flops(args)
            extra += (
                f", torch FlopCounterMode train FLOPs "
                f"{r['flop_counter_train_flops'] / 1e9:.2f} G (it skips CPU "
                f"flash attention; analytic without attention "
                f"{no_attention / 1e9:.2f} G)"
            )
        else:
            extra = f", jit_compile={r['jit_compile']}"
        print(
            f"  {r['name']}: {r['framework']}{extra}; first step "
            f"{r['first_step_s']:.1f}s; loss {r['first_loss']:.3f} -> "
            f"{r['last_loss']:.3f}; {r['blocks_discarded']} loaded blocks re-timed"
        )
    print(
        "  peak RSS: the worker process's peak resident memory (VmHWM) over "
        "its life: imports, build, warm-up, timed steps and fits"
    )
    harness.print_footer(report)


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "keras":
        keras_worker(args)
    elif args.worker == "transformers":
        transformers_worker(args)
    elif args.worker == "peak":
        harness.peak_worker(args.threads)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
