"""Train several methods on the same data and budget, then evaluate them.

Each method is trained by `keras-towers train` (its recipe in
`keras_towers.recipes`) on the embedded corpus train split with the same
epochs, batch size, learning rate, schedule and seed (so the same batches in
the same order), then evaluated with `keras_towers.tasks`: zero-shot
Animal-MNIST and Fashion-MNIST, image<->text retrieval over the 178 held-out
Tux Paint stamps, and (`--linear-probe`) a Fashion-MNIST linear probe.

A method is a recipe name (`keras-towers train --method` choices) or one of
`VARIANTS` (a recipe plus fixed method options, e.g.
`protoclip-heads+teacher`). Every run is a preset directory under
`--output-dir`; a method whose directory already holds a finished preset is
evaluated, not retrained (delete it to retrain).

Usage (the ProtoCLIP vs CLIP table in the README):

```bash
.venv/bin/keras-towers data prepare
KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/compare_methods.py \
    --methods clip,protoclip,lit-heads,protoclip-heads,protoclip-heads+teacher \
    --epochs 20 --limit 1000 --linear-probe --output-dir runs/protoclip_comparison
```

The improved CLIP recipe's ablation (`ABLATION`: CLIP, + image augmentation,
+ text augmentation, + label smoothing, + MLP heads = `clip-improved`, + each
SSL add-on), from scratch:

```bash
KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/compare_methods.py \
    --methods rocket-ablation --epochs 10 --limit 1000 --linear-probe \
    --output-dir runs/rocket_ablation
```

`benchmarks/lit_3t_comparison.py` runs it with the LiT / Three Towers methods.
Quick smoke run: `--epochs 1 --limit 200 --methods lit`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Named variants: a recipe plus fixed `keras-towers train` method options.
VARIANTS = {
    "protoclip+teacher": ("protoclip", ("--teacher", "all_minilm_l6_v2")),
    "protoclip-heads+teacher": ("protoclip-heads", ("--teacher", "all_minilm_l6_v2")),
    # The improved recipe's ablation, one component at a time on the `clip`
    # recipe's towers (`clip` is the first row, `clip-improved` the full
    # recipe = + MLP h heads, then each add-on).
    "+image-aug": (
        "clip-improved",
        ("--augment", "image", "--label-smoothing", "0", "--head-layers", "1"),
    ),
    "+text-aug": (
        "clip-improved",
        ("--augment", "rocket", "--label-smoothing", "0", "--head-layers", "1"),
    ),
    "+label-smoothing": (
        "clip-improved",
        ("--augment", "rocket", "--head-layers", "1"),
    ),
}
# The same switches on locked pretrained backbones (`*-heads` recipes).
VARIANTS.update(
    {
        f"{name}-heads": ("clip-improved-heads", options)
        for name, (_, options) in list(VARIANTS.items())
        if name.startswith("+")
    }
)
#: `--methods rocket-ablation`: the improved recipe's ablation rows.
ABLATION = (
    "clip",
    "+image-aug",
    "+text-aug",
    "+label-smoothing",
    "clip-improved",
    "siamlip",
    "byolip",
    "barlip",
    "swalip",
)
#: `--methods rocket-ablation-heads`: the same rows on locked EfficientNet-Lite0
#: and MiniLM backbones with trained heads (`lit-heads` is the CLIP row).
ABLATION_HEADS = (
    "lit-heads",
    *(f"{m}-heads" for m in ABLATION[1:]),
)
TASKS = ("zeroshot:animal-mnist", "zeroshot:fashion-mnist", "retrieval:tuxpaint")
PROBE = "linear-probe:fashion-mnist"
COLUMNS = (
    ("zeroshot:animal-mnist", "accuracy", "Animal-MNIST top-1"),
    ("zeroshot:fashion-mnist", "accuracy", "Fashion-MNIST top-1"),
    ("retrieval:tuxpaint", "image_to_text_recall@1", "Tux i->t R@1"),
    ("retrieval:tuxpaint", "image_to_text_recall@10", "Tux i->t R@10"),
    ("retrieval:tuxpaint", "text_to_image_recall@1", "Tux t->i R@1"),
    ("retrieval:tuxpaint", "text_to_image_recall@10", "Tux t->i R@10"),
)


def parse_args(argv=None, default_methods=("clip",)) -> argparse.Namespace:
    from keras_towers import recipes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(default_methods))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="fixed zero-shot test subset size (0: the full test sets)",
    )
    parser.add_argument(
        "--linear-probe", action="store_true", help=f"also evaluate {PROBE}"
    )
    parser.add_argument("--output-dir", default="runs/compare_methods")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for group, rows in (
        ("rocket-ablation", ABLATION),
        ("rocket-ablation-heads", ABLATION_HEADS),
    ):
        if group in methods:
            at = methods.index(group)
            methods[at : at + 1] = [m for m in rows if m not in methods]
    known = (*recipes.names(), *VARIANTS)
    unknown = sorted(set(methods) - set(known))
    if unknown or not methods:
        parser.error(f"--methods must be a subset of {known}; got {unknown}")
    if args.epochs < 1 or args.batch_size < 1 or args.limit < 0:
        parser.error("--epochs and --batch-size must be >= 1 and --limit >= 0")
    args.methods = methods
    return args


def train(method: str, args, output: Path) -> float:
    """Train `method` with `keras-towers train` (unless finished already);
    returns the training seconds recorded in the preset (frozen-feature
    caching included)."""
    from keras_towers import cli

    if (output / "config.json").is_file():
        print(f"{method}: reusing the finished run in {output}")
        return _recorded_seconds(output)
    recipe, options = VARIANTS.get(method, (method, ()))
    argv = [
        "train",
        "--method",
        recipe,
        *options,
        "--data",
        "embedded",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--learning-rate",
        str(args.learning_rate),
        "--seed",
        str(args.seed),
        "--output",
        str(output),
        "--verbose",
        "2",
    ]
    # `keras-towers train` records `sys.argv` as the command in the preset.
    saved_argv = sys.argv
    sys.argv = ["keras-towers", *argv]
    try:
        code = cli.main(argv)
    finally:
        sys.argv = saved_argv
    if code:
        raise SystemExit(f"training {method} failed with exit code {code}")
    return _recorded_seconds(output)


def _recorded_seconds(output: Path) -> float:
    metadata = json.loads((output / "metadata.json").read_text())
    return float(metadata.get("training", {}).get("seconds_this_run", float("nan")))


def evaluate(output: Path, limit: int | None, probe: bool = False) -> dict:
    from keras_towers import ContrastiveModel
    from keras_towers import tasks

    model = ContrastiveModel.from_preset(str(output))  # the class the preset records
    metrics = {}
    for task in (*TASKS, PROBE) if probe else TASKS:
        options = {"limit": limit} if task.startswith(("zeroshot", "linear")) else {}
        metrics[task] = tasks.run(model, task, verbose=0, **options)["metrics"]
    return metrics


def print_table(results: dict) -> None:
    columns = list(COLUMNS)
    if any(PROBE in r["metrics"] for r in results.values()):
        columns.append((PROBE, "accuracy", "Fashion probe"))
    header = ["method", *(c[2] for c in columns), "train s"]
    rows = [
        [
            method,
            *(
                f"{r['metrics'][task][key]:.1%}" if task in r["metrics"] else "-"
                for task, key, _ in columns
            ),
            f"{r['seconds']:.0f}",
        ]
        for method, r in results.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main(argv=None, default_methods=("clip",)) -> int:
    import keras

    args = parse_args(argv, default_methods)
    limit = args.limit or None
    root = Path(args.output_dir)
    results = {}
    for method in args.methods:
        output = root / method
        seconds = train(method, args, output)
        print(f"{method}: evaluating {output}")
        metrics = evaluate(output, limit, args.linear_probe)
        results[method] = {"seconds": seconds, "metrics": metrics}
    print(
        f"\nsame budget: {args.epochs} epochs, batch {args.batch_size}, "
        f"lr {args.learning_rate} (1 epoch warm-up, cosine), seed {args.seed}, "
        f"backend {keras.config.backend()}; zero-shot on "
        f"{limit or 'all'} test images, retrieval on 178 held-out Tux Paint stamps "
        "(chance: 10% zero-shot, 0.6% R@1 / 5.6% R@10)"
    )
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
