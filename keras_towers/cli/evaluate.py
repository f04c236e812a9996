"""`keras-towers data prepare`, `eval` and `zero-shot` (`presets list` is `keras_towers_entry.presets`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from keras_towers import datasets
from keras_towers import evaluation
from keras_towers import presets
from keras_towers import tasks
from keras_towers.cli.common import _image_paths
from keras_towers.cli.common import _print_table
from keras_towers.cli.common import _report_task
from keras_towers.cli.common import _templates_arg
from keras_towers.cli.common import check_output_paths
from keras_towers.cli.common import load_model
from keras_towers.datasets import read_image
from keras_towers.utils.io import write_json


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


#: Retrieval recalls a Markdown cell shows (image -> text), in order.
MARKDOWN_RECALLS = (1, 10)


def _headline_cell(metrics: dict) -> str:
    if "accuracy" in metrics:
        return f"{100 * metrics['accuracy']:.1f}%"
    keys = [f"image_to_text_recall@{k}" for k in MARKDOWN_RECALLS]
    if all(k in metrics for k in keys):
        return " / ".join(f"{100 * metrics[k]:.1f}%" for k in keys)
    return "-"


def _header_cell(task: str, metrics: dict) -> str:
    """`task` and what its cells show (`metrics`: one result of it)."""
    if "accuracy" in metrics:
        return f"`{task}` top-1"
    if "image_to_text_recall@1" in metrics:
        recalls = " / ".join(f"R@{k}" for k in MARKDOWN_RECALLS)
        return f"`{task}` i→t {recalls}"
    return f"`{task}`"


def _chance_cell(metrics: dict) -> str:
    if "chance" in metrics:
        return f"{100 * metrics['chance']:.2f}%"
    if "chance_recall@1" in metrics:
        # k of n texts drawn at random hold the match with probability k/n.
        return " / ".join(
            f"{min(1.0, k * metrics['chance_recall@1']) * 100:.1f}%"
            for k in MARKDOWN_RECALLS
        )
    return "-"


def markdown_table(rows) -> str:
    """Presets x tasks as a Markdown table: zero-shot and linear-probe top-1
    accuracy, retrieval image->text recall@1 / recall@10, and a chance row;
    each header says what its cells show."""
    tasks_ = list(dict.fromkeys(task for _, task, _ in rows))
    cells = {(preset, task): metrics for preset, task, metrics in rows}
    presets_ = list(dict.fromkeys(preset for preset, _, _ in rows))
    # Each task's first result: what its header and chance cells read.
    first = {t: next(m for _, task, m in rows if task == t) for t in tasks_}
    lines = [
        "| preset | " + " | ".join(_header_cell(t, first[t]) for t in tasks_) + " |",
        "|---|" + "---|" * len(tasks_),
    ]
    for preset in presets_:
        values = [_headline_cell(cells.get((preset, t), {})) for t in tasks_]
        lines.append(f"| `{preset}` | " + " | ".join(values) + " |")
    chance = [_chance_cell(first[t]) for t in tasks_]
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
