"""`keras-towers data prepare`, `presets list`, `eval` and `zero-shot`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from keras_towers import datasets
from keras_towers import evaluation
from keras_towers import presets
from keras_towers import tasks
from keras_towers.cli.common import _image_paths
from keras_towers.cli.common import _positive_int
from keras_towers.cli.common import _print_table
from keras_towers.cli.common import _report_task
from keras_towers.cli.common import _templates_arg
from keras_towers.cli.common import add_load_options
from keras_towers.cli.common import check_output_paths
from keras_towers.cli.common import load_model
from keras_towers.datasets import read_image
from keras_towers.utils.io import write_json

EVAL_EPILOG = """\
tasks (KIND:DATA, repeat --task for several):
  zeroshot:animal-mnist | zeroshot:fashion-mnist | zeroshot:digits |
  zeroshot:flags | zeroshot:fluent-3d | zeroshot:shapes
      zero-shot classification with a prompt-template ensemble (--templates;
      default: digits, flags and fluent-3d use their own, the others openai)
  retrieval:tuxpaint | retrieval:fluent-3d | retrieval:PATH
      image<->text recall@1/5/10 on the held-out Tux Paint test split, on the
      Fluent 3D emoji and their CLDR names, or on your pairs (.csv/.jsonl with
      image,caption columns; .tfrecord; .tar shards)
  linear-probe:animal-mnist | linear-probe:fashion-mnist | linear-probe:digits
      logistic regression on frozen image features (C chosen on a validation
      split; flags and fluent-3d have one image per class and no train split)

--json writes {"<task>": {metrics...}} with `accuracy` for zeroshot and
linear-probe, `image_to_text_recall@K` / `text_to_image_recall@K` for retrieval.
"""


def add_parsers(commands) -> None:
    """The `data`, `presets`, `eval` and `zero-shot` commands."""
    # --- data ---
    data = commands.add_parser(
        "data", help="build or verify the offline corpus and evaluation sets"
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_commands.required = True
    prepare = data_commands.add_parser(
        "prepare",
        help="build the embedded corpus (Tux Paint, emoji in several art styles, "
        "OpenMoji, OpenClipart, game-icons: SVGs rendered once) and check the "
        "evaluation sets",
    )
    prepare.add_argument(
        "--data-dir",
        help="where prepared data go (default: $KERAS_TOWERS_DATA_DIR or "
        "~/.cache/keras_towers)",
    )
    prepare.add_argument(
        "--sources",
        help="comma-separated corpus sources to build from (default: all; "
        "`keras_towers.datasets.corpus.corpus_sources()`)",
    )
    prepare.add_argument(
        "--workers",
        type=int,
        help="rendering threads (default: the number of CPUs)",
    )
    prepare.set_defaults(func=cmd_data_prepare)

    # --- presets ---
    presets_parser = commands.add_parser("presets", help="list shipped presets")
    preset_commands = presets_parser.add_subparsers(
        dest="presets_command", metavar="ACTION"
    )
    preset_commands.required = True
    listing = preset_commands.add_parser(
        "list", help="every shipped preset with its description and metrics"
    )
    listing.set_defaults(func=cmd_presets_list)

    # --- eval ---
    evaluate = commands.add_parser(
        "eval",
        help="evaluate a preset: zero-shot, retrieval, linear probe",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--preset",
        action="append",
        required=True,
        help="preset name or directory (repeat for several; 'all' = every "
        "shipped preset)",
    )
    evaluate.add_argument("--task", action="append", required=True, metavar="TASK")
    evaluate.add_argument(
        "--templates",
        default=None,
        help="prompt templates for zero-shot: openai (CLIP's 80), best7, "
        "simple, none, digits, flags, emoji, or a file with one template per "
        "line containing {} (default: the set's own where it has them, "
        "digits/flags/emoji for digits/flags/fluent-3d, else openai)",
    )
    evaluate.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="evaluate on a fixed random subset of this many test examples",
    )
    evaluate.add_argument("--batch-size", type=_positive_int, default=64)
    evaluate.add_argument("--json", help="write the metrics to this JSON file")
    evaluate.add_argument("--report", help="directory for metrics JSON and plots")
    evaluate.add_argument(
        "--markdown",
        help="write a Markdown table (one row per preset, one column per task: "
        "accuracy, or image->text / text->image recall@10) to this file",
    )
    evaluate.add_argument("--verbose", type=int, default=1, choices=(0, 1))
    add_load_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    # --- zero-shot ---
    zero_shot = commands.add_parser(
        "zero-shot",
        help="classify image files into classes you name",
        description="Rank your class names for each image file.",
    )
    zero_shot.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files, folders (their image files, sorted) or glob patterns "
        "(quoted, e.g. 'photos/*.jpg')",
    )
    zero_shot.add_argument("--preset", required=True)
    zero_shot.add_argument(
        "--classes", required=True, help='comma-separated, e.g. "cat,dog,zebra"'
    )
    zero_shot.add_argument("--templates", default="openai")
    zero_shot.add_argument("--top-k", type=_positive_int, default=5)
    add_load_options(zero_shot)
    zero_shot.set_defaults(func=cmd_zero_shot)


def cmd_data_prepare(args) -> int:

    sources = None
    if args.sources:
        sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1. Received: {args.workers}")
    summary = datasets.prepare(
        data_dir=args.data_dir, verbose=True, sources=sources, workers=args.workers
    )
    return 0 if summary is not None else 1


def cmd_presets_list(args) -> int:

    entries = presets.all_presets()
    if not entries:
        print("No shipped presets found.")
        return 0
    for name, metadata in entries.items():
        print(f"{name}  [{metadata.get('class_name', '?')}]")
        if metadata.get("description"):
            print(f"    {metadata['description']}")
        params = metadata.get("parameter_count")
        if params:
            print(f"    parameters: {params:,}")
        for task, metrics in sorted(metadata.get("metrics", {}).items()):
            if isinstance(metrics, dict):
                shown = ", ".join(
                    f"{k}={_fmt(v)}" for k, v in metrics.items() if _headline(k)
                )
                print(f"    {task}: {shown}")
            else:
                print(f"    {task}: {_fmt(metrics)}")
    return 0


def _headline(key: str) -> bool:
    return key == "accuracy" or key.endswith("recall@1") or key.endswith("recall@10")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def cmd_eval(args) -> int:
    for task in args.task:
        tasks.parse(task)  # fail fast on a typo, before loading anything
    check_output_paths(report=args.report, json_file=args.json)
    if args.markdown and os.path.isdir(args.markdown):
        raise ValueError(
            f"--markdown {args.markdown} is a folder; expected a file name."
        )
    names = args.preset
    if names == ["all"]:
        names = list(presets.all_presets())
    templates = _templates_arg(args.templates)
    results = {}
    rows = []
    for preset in names:
        model = load_model(preset, args)
        for task in args.task:
            start = time.perf_counter()
            result = tasks.run(
                model,
                task,
                templates=templates,
                limit=args.limit,
                batch_size=args.batch_size,
                verbose=args.verbose,
            )
            result["metrics"]["seconds"] = round(time.perf_counter() - start, 2)
            key = task if len(names) == 1 else f"{preset}/{task}"
            results[key] = result["metrics"]
            rows.append((preset, task, result["metrics"]))
            if args.report:
                _report_task(Path(args.report), preset, result)
    _print_table(rows)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows), encoding="utf-8")
        print(f"wrote {args.markdown}")
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    if args.report:
        write_json(Path(args.report) / "metrics.json", results)
        print(f"wrote report to {args.report}")
    return 0


def _headline_cell(metrics: dict) -> str:
    if "accuracy" in metrics:
        return f"{100 * metrics['accuracy']:.1f}%"
    keys = ("image_to_text_recall@10", "text_to_image_recall@10")
    if all(k in metrics for k in keys):
        return " / ".join(f"{100 * metrics[k]:.1f}%" for k in keys)
    return "-"


def _chance_cell(metrics: dict) -> str:
    if "chance" in metrics:
        return f"{100 * metrics['chance']:.2f}%"
    if "chance_recall@1" in metrics:
        return f"{min(1.0, 10 * metrics['chance_recall@1']) * 100:.1f}%"
    return "-"


def markdown_table(rows) -> str:
    """Presets x tasks as a Markdown table: zero-shot and linear-probe
    accuracy, retrieval recall@10 image->text / text->image, and a chance
    row."""
    tasks_ = list(dict.fromkeys(task for _, task, _ in rows))
    cells = {(preset, task): metrics for preset, task, metrics in rows}
    presets_ = list(dict.fromkeys(preset for preset, _, _ in rows))
    lines = [
        "| preset | " + " | ".join(f"`{t}`" for t in tasks_) + " |",
        "|---|" + "---|" * len(tasks_),
    ]
    for preset in presets_:
        values = [_headline_cell(cells.get((preset, t), {})) for t in tasks_]
        lines.append(f"| `{preset}` | " + " | ".join(values) + " |")
    chance = []
    for t in tasks_:
        first = next((m for p, task, m in rows if task == t), {})
        chance.append(_chance_cell(first))
    lines.append("| *chance* | " + " | ".join(chance) + " |")
    return "\n".join(lines) + "\n"


def cmd_zero_shot(args) -> int:

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if len(classes) < 2:
        raise ValueError(
            f"--classes needs at least two comma-separated names. Received: "
            f"{args.classes!r}."
        )
    paths = _image_paths(args.images)
    images = [read_image(path) for path in paths]
    model = load_model(args.preset, args)
    ranked = evaluation.classify(
        model,
        images,
        classes,
        templates=_templates_arg(args.templates),
        top_k=min(args.top_k, len(classes)),
    )
    rule = evaluation.score_rule(model)
    print(f"scores: {rule.description}")
    for path, labels in zip(paths, ranked, strict=True):
        print(path)
        for label, score in labels:
            value = f"{score:+.4f}" if rule.kind == "cosine" else f"{100 * score:6.2f}%"
            print(f"  {value}  {label}")
    return 0
