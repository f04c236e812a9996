"""Helpers shared by the `keras-towers` commands."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from keras_towers.evaluation import report
from keras_towers.models import ContrastiveModel


def load_model(preset: str, args=None):
    """Load any keras_towers model from a preset name or directory, with the
    command's `--no-verify-*` options."""
    options = {}
    for name in ("verify_checksums", "verify_encoders"):
        if args is not None and getattr(args, name, True) is False:
            options[name] = False
    model = ContrastiveModel.from_preset(preset, **options)
    head = getattr(args, "zero_shot_head", None)
    weight = getattr(args, "ensemble_weight", None)
    if head is None and weight is None:
        return model
    if not hasattr(model, "set_zero_shot_head"):
        raise ValueError(
            f"--zero-shot-head / --ensemble-weight choose a head of a CLIPRocket "
            f"preset; {preset} holds a {type(model).__name__}, which has one "
            "embedding head."
        )
    if head is None:
        head = model.zero_shot_head
    if weight is not None and head != "ensemble":
        raise ValueError(
            f"--ensemble-weight {weight} needs --zero-shot-head ensemble "
            f"(the head is {head!r})."
        )
    model.set_zero_shot_head(head, ensemble_weight=weight)
    return model


def check_output_paths(report: str | None = None, json_file: str | None = None):
    """Refuse, before any work, a `--report` that is a file and a `--json`
    that is a folder (the run would fail only at its end)."""
    if report and os.path.exists(report) and not os.path.isdir(report):
        raise ValueError(
            f"--report {report} is a file; expected a folder (created if missing)."
        )
    if json_file and os.path.isdir(json_file):
        raise ValueError(f"--json {json_file} is a folder; expected a file name.")


def _templates_arg(value: str | None):
    if value is None:
        return None  # each task's default (`keras_towers.tasks.default_templates`)
    if os.path.isfile(value):
        lines = Path(value).read_text().splitlines()
        return [line for line in lines if line.strip()]
    return value


def _print_table(rows) -> None:
    columns = [
        ("accuracy", "acc"),
        ("top5_accuracy", "top5"),
        ("image_to_text_recall@1", "i2t@1"),
        ("image_to_text_recall@5", "i2t@5"),
        ("image_to_text_recall@10", "i2t@10"),
        ("text_to_image_recall@1", "t2i@1"),
        ("text_to_image_recall@5", "t2i@5"),
        ("text_to_image_recall@10", "t2i@10"),
        ("chance", "chance"),
        ("chance_recall@1", "chance@1"),
    ]
    used = [(k, h) for k, h in columns if any(k in m for _, _, m in rows)]
    preset_width = max(len("preset"), *(len(p) for p, _, _ in rows))
    task_width = max(len("task"), *(len(t) for _, t, _ in rows))
    header = f"{'preset':<{preset_width}}  {'task':<{task_width}}"
    header += "".join(f"  {h:>8}" for _, h in used)
    print(header)
    print("-" * len(header))
    for preset, task, metrics in rows:
        line = f"{preset:<{preset_width}}  {task:<{task_width}}"
        for key, _ in used:
            value = metrics.get(key)
            line += f"  {'-':>8}" if value is None else f"  {100 * value:>7.2f}%"
        print(line)


def _report_task(report_dir: Path, preset: str, result: dict) -> None:

    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(preset).name}_{result['task'].replace(':', '_').replace('/', '_')}"
    if "confusion_matrix" in result:
        report.plot_confusion_matrix(
            result["confusion_matrix"],
            result["class_names"],
            report_dir / f"{stem}_confusion.png",
            title=f"{Path(preset).name}: {result['task']} "
            f"(accuracy {100 * result['metrics']['accuracy']:.1f}%)",
        )
    if result.get("rankings") is not None:
        _plot_retrieval(report_dir, stem, result)


def _plot_retrieval(report_dir: Path, stem: str, result: dict, n_queries: int = 8):

    rankings = result["rankings"]
    images, captions = result["images"], result["captions"]
    picks = list(range(0, len(images), max(1, len(images) // n_queries)))[:n_queries]
    i2t = rankings["image_to_text"]
    report.plot_retrieval_grid(
        [images[i] for i in picks],
        [[captions[j] for j in i2t[i][:5]] for i in picks],
        report_dir / f"{stem}_image_to_text.png",
        correct=[captions[i] for i in picks],
    )
    t2i = rankings["text_to_image"]
    report.plot_text_to_image_grid(
        [captions[i] for i in picks],
        [[images[j] for j in t2i[i][:5]] for i in picks],
        report_dir / f"{stem}_text_to_image.png",
        correct=[_index_or_none(list(t2i[i][:5]), i) for i in picks],
    )


def _index_or_none(items: list, value):
    return items.index(value) if value in items else None


#: File suffixes `keras-towers zero-shot` picks up from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _image_paths(arguments) -> list[str]:
    """Image files from file paths, folders (their image files, sorted) and
    glob patterns, in argument order; an argument matching nothing is an
    error naming it."""
    paths = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(
                str(p)
                for p in Path(argument).iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            what = f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder"
        elif glob.has_magic(argument):
            found = sorted(p for p in glob.glob(argument) if os.path.isfile(p))
            what = "no files match the pattern"
        else:
            found = [argument]
        if not found:
            raise ValueError(f"{argument}: {what}.")
        paths.extend(found)
    return paths
