"""The `keras-towers` command: prepare data, train, evaluate, classify.

Run `keras-towers --help`, or `keras-towers COMMAND --help`. The backend is
chosen as usual with `KERAS_BACKEND` (jax, torch or tensorflow).
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import sys
import time
from pathlib import Path

import keras

from keras_towers import datasets
from keras_towers import evaluation
from keras_towers import presets
from keras_towers import recipes
from keras_towers import tasks
from keras_towers.datasets import read_image
from keras_towers.evaluation import report
from keras_towers.models import ContrastiveModel
from keras_towers.utils.io import read_json
from keras_towers.utils.io import write_json
from keras_towers.version import __version__

DESCRIPTION = """\
keras_towers: contrastive vision-language models on JAX, PyTorch or TensorFlow.

First steps on a fresh machine (after `bash scripts/setup.sh`):

  keras-towers data prepare                 # build the offline corpus + eval sets
  keras-towers presets list                 # what is shipped, with its metrics
  keras-towers eval --preset clip_small_embedded --task retrieval:tuxpaint
  keras-towers zero-shot --preset clip_small_embedded cat.png --classes "cat,dog"
  keras-towers train --method clip --data embedded --epochs 10 --output runs/clip

Choose the backend with KERAS_BACKEND=jax|torch|tensorflow.
"""

EVAL_EPILOG = """\
tasks (KIND:DATA, repeat --task for several):
  zeroshot:animal-mnist | zeroshot:fashion-mnist | zeroshot:shapes
      zero-shot classification with a prompt-template ensemble (--templates)
  retrieval:tuxpaint | retrieval:PATH
      image<->text recall@1/5/10 on the held-out Tux Paint test split, or on
      your pairs (.csv/.jsonl with image,caption columns; .tfrecord; .tar shards)
  linear-probe:animal-mnist | linear-probe:fashion-mnist
      logistic regression on frozen image features (C chosen on a validation split)

--json writes {"<task>": {metrics...}} with `accuracy` for zeroshot and
linear-probe, `image_to_text_recall@K` / `text_to_image_recall@K` for retrieval.
"""


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer, got {value!r}"
        ) from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-towers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"keras-towers {__version__} (keras {keras.__version__}, backend "
        f"{keras.config.backend()})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    # --- data ---
    data = commands.add_parser(
        "data", help="build or verify the offline corpus and evaluation sets"
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_commands.required = True
    prepare = data_commands.add_parser(
        "prepare",
        help="build the embedded corpus (Tux Paint + emoji) and check the "
        "evaluation sets (Animal-MNIST, Fashion-MNIST)",
    )
    prepare.add_argument(
        "--data-dir",
        help="where prepared data go (default: $KERAS_TOWERS_DATA_DIR or "
        "~/.cache/keras_towers)",
    )
    prepare.set_defaults(func=cmd_data_prepare)

    # --- presets ---
    presets = commands.add_parser("presets", help="list shipped presets")
    preset_commands = presets.add_subparsers(dest="presets_command", metavar="ACTION")
    preset_commands.required = True
    listing = preset_commands.add_parser(
        "list", help="every shipped preset with its description and metrics"
    )
    listing.set_defaults(func=cmd_presets_list)

    # --- train ---

    train = commands.add_parser(
        "train",
        help="train a model and save it as a preset directory",
        description="Train a model and save it as a preset directory "
        "(config.json, model.weights.h5, metadata.json). An interrupted run "
        "continues with --resume and ends with the same weights.",
    )
    train.add_argument(
        "--method",
        default="clip",
        choices=recipes.names(),
        help="what to train (default: clip)",
    )
    train.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (Tux Paint + emoji train split; validation split for "
        "val_ metrics) or a path to your pairs: .csv/.jsonl (columns image, "
        "caption), .tfrecord, WebDataset .tar or a glob of them",
    )
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=128)
    train.add_argument("--learning-rate", type=float, default=5e-4)
    train.add_argument("--weight-decay", type=float, default=0.2)
    train.add_argument(
        "--warmup-epochs",
        type=float,
        default=1.0,
        help="linear warmup, then cosine decay to 0 (CLIP's schedule); "
        "0 with --constant-lr keeps the rate fixed",
    )
    train.add_argument(
        "--constant-lr", action="store_true", help="no warmup/cosine schedule"
    )
    train.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help="image side in pixels (default: the method's)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", required=True, help="preset directory to write")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from OUTPUT/backup",
    )
    train.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="TASK",
        help="evaluate after training (same TASK syntax as `keras-towers eval`)",
    )
    train.add_argument("--report", help="directory for metrics JSON and plots")
    train.add_argument("--description", default="", help="preset description")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    proto = train.add_argument_group(
        "ProtoCLIP options (--method protoclip / protoclip-heads)",
        "One --epochs is one episode: --episode-size pairs drawn with "
        "replacement, clustered at its start.",
    )
    proto.add_argument(
        "--num-clusters",
        type=_positive_int,
        help="K per episode (default: episode size / 10, the official ratio)",
    )
    proto.add_argument(
        "--episode-size",
        type=_positive_int,
        help="samples per episode (default: the number of training pairs)",
    )
    proto.add_argument(
        "--proto-weight", type=float, help="weight of the prototype terms (1)"
    )
    proto.add_argument(
        "--external-weight",
        type=float,
        help="weight of the external-teacher terms (1 with --teacher)",
    )
    proto.add_argument(
        "--teacher",
        help="external text teacher: a registered text encoder, e.g. "
        "all_minilm_l6_v2 (default: none)",
    )
    proto.add_argument(
        "--teacher-pca-dim",
        type=_positive_int,
        help="PCA width of the teacher's features (64)",
    )
    proto.add_argument(
        "--lit-start-episode",
        type=int,
        help="first episode of the final LiT phase: prototype terms off, "
        "image tower frozen (default: no LiT phase)",
    )
    proto.add_argument(
        "--infonce-warmup-episodes",
        type=int,
        help="leading InfoNCE-only episodes (1)",
    )
    train.set_defaults(func=cmd_train)

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
        default="openai",
        help="prompt templates for zero-shot: openai (CLIP's 80), best7, "
        "simple, none, or a file with one template per line containing {}",
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
    evaluate.add_argument("--verbose", type=int, default=1, choices=(0, 1))
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
    zero_shot.set_defaults(func=cmd_zero_shot)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, TypeError) as error:
        # User errors: one clear line, no traceback (set KERAS_TOWERS_DEBUG=1).
        if os.environ.get("KERAS_TOWERS_DEBUG"):
            raise
        print(f"keras-towers: error: {error}", file=sys.stderr)
        return 2


# === Commands ===


def cmd_data_prepare(args) -> int:

    summary = datasets.prepare(data_dir=args.data_dir, verbose=True)
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


def load_model(preset: str):
    """Load any keras_towers model from a preset name or directory."""

    return ContrastiveModel.from_preset(preset)


def cmd_eval(args) -> int:

    for task in args.task:
        tasks.parse(task)  # fail fast on a typo, before loading anything
    names = args.preset
    if names == ["all"]:
        names = list(presets.all_presets())
    templates = _templates_arg(args.templates)
    results = {}
    rows = []
    for preset in names:
        model = load_model(preset)
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
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    if args.report:
        write_json(Path(args.report) / "metrics.json", results)
        print(f"wrote report to {args.report}")
    return 0


def _templates_arg(value: str):
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


def cmd_zero_shot(args) -> int:

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if len(classes) < 2:
        raise ValueError(
            f"--classes needs at least two comma-separated names. Received: "
            f"{args.classes!r}."
        )
    paths = _image_paths(args.images)
    images = [read_image(path) for path in paths]
    model = load_model(args.preset)
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


def _read_history(path: Path) -> dict:
    """Per-epoch logs written by CSVLogger, as `{name: [values]}`."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    history = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(v not in (None, "", "NA") for v in values):  # NA: not logged
            history[key] = [float(v) for v in values]
    return history


#: Arguments of a `train` run in progress (removed when it finishes).
RUN_FILE = "run.json"
#: The `train` arguments a `--resume` must repeat unchanged.
RUN_ARGUMENTS = (
    "method",
    "data",
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "warmup_epochs",
    "constant_lr",
    "image_size",
    "seed",
    *recipes.MODEL_OPTIONS,
    *recipes.EPISODE_OPTIONS,
)


#: Lock file of a `train` run in progress (holds the owner's pid).
LOCK_FILE = ".keras_towers_train.lock"


def _lock_output(output: Path):
    """An exclusive lock on `output` (fcntl, released when the process
    ends, even if it is killed); a run that holds it already is an error
    naming its pid. Returns the open lock file (keep it open)."""
    handle = open(output / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ValueError(
            f"{output} is in use by another `keras-towers train` (pid {holder}); "
            "wait for it to finish or choose another --output (nothing was "
            "changed)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _run_arguments(args) -> dict:
    return {name: getattr(args, name, None) for name in RUN_ARGUMENTS}


def _check_resume(output: Path, arguments: dict) -> None:
    """Refuse a `--resume` with nothing to continue, or with arguments that
    differ from the interrupted run's (listing the differences)."""
    if (output / "config.json").exists() and not (output / "backup").exists():
        raise ValueError(
            f"{output} holds a finished run: --resume has nothing to continue "
            "(nothing was overwritten). Choose another --output to train again."
        )
    if not (output / RUN_FILE).exists():
        return
    recorded = read_json(output / RUN_FILE)
    changed = [
        f"--{name.replace('_', '-')} {recorded.get(name)!r} then, {value!r} now"
        for name, value in arguments.items()
        if recorded.get(name) != value
    ]
    if changed:
        raise ValueError(
            "--resume must repeat the interrupted run's arguments; these differ: "
            f"{'; '.join(changed)}. Rerun with the original values, or choose "
            "another --output (nothing was changed)."
        )


def cmd_train(args) -> int:
    for task in args.eval:
        tasks.parse(task)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; a preset is a directory.")
    output.mkdir(parents=True, exist_ok=True)
    # Held until the process exits: a second `train` on OUTPUT fails at once.
    lock = _lock_output(output)
    if any(p.name != LOCK_FILE for p in output.iterdir()) and not args.resume:
        if (output / "backup").exists():
            raise ValueError(
                f"{output} holds an interrupted run: add --resume to continue it, "
                "or choose another --output."
            )
        if (output / "config.json").exists():
            raise ValueError(
                f"{output} already holds a trained preset; choose another --output "
                "(nothing was overwritten)."
            )
    arguments = _run_arguments(args)
    if args.resume:
        _check_resume(output, arguments)
    recipe = recipes.get(args.method)
    method_options = {
        name: arguments[name]
        for name in recipes.MODEL_OPTIONS + recipes.EPISODE_OPTIONS
        if arguments[name] is not None
    }
    refused = sorted(set(method_options) - set(recipe.options))
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        accepting = [n for n in recipes.names() if recipes.get(n).options]
        raise ValueError(
            f"{flags} do not apply to --method {args.method}; they are options "
            f"of {accepting}."
        )
    keras.utils.set_random_seed(args.seed)
    image_size = args.image_size or recipe.image_size
    train_pairs, validation_pairs, data_info = recipes.load_training_data(
        args.data, image_size=image_size
    )
    print(
        f"training {args.method} on {len(train_pairs)} pairs"
        + (f" ({len(validation_pairs)} validation)" if validation_pairs else "")
        + f", image size {image_size}, backend {keras.config.backend()}"
    )
    # What this run was started with: a later --resume must match it.
    if not (output / RUN_FILE).exists():
        write_json(output / RUN_FILE, arguments)
    model_options = {
        k: v for k, v in method_options.items() if k in recipes.MODEL_OPTIONS
    }
    episode_options = {
        k: v for k, v in method_options.items() if k in recipes.EPISODE_OPTIONS
    }
    if recipe.options:
        model_options.setdefault("episode_size", len(train_pairs))
    model = recipe.build(image_size=image_size, **model_options)
    if recipe.options:
        print(
            f"episodes of {model.episode_size} pairs (drawn with replacement), "
            f"K={model.active_clusters} clusters"
            + (f", teacher {model.teacher_source}" if model.external_teacher else "")
        )
    learning_rate = args.learning_rate
    if not args.constant_lr:
        examples = getattr(model, "episode_size", len(train_pairs))
        steps_per_epoch = max(1, examples // args.batch_size)
        total = steps_per_epoch * args.epochs
        warmup = min(int(round(args.warmup_epochs * steps_per_epoch)), total - 1)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else args.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=args.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    model.compile(learning_rate=learning_rate, weight_decay=args.weight_decay)
    # A recipe may train differently (LiT / 3T on cached frozen features).
    train_fn = recipes.trainer(args.method, data=args.data)
    history = train_fn(
        model,
        train_pairs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_pairs=validation_pairs,
        seed=args.seed,
        backup_dir=str(output / "backup"),
        # Appends across --resume, so the report covers every epoch.
        callbacks=[keras.callbacks.CSVLogger(str(output / "history.csv"), append=True)],
        verbose=args.verbose,
        **episode_options,
    )
    seconds = history.pop("seconds")
    metrics = {}
    for task in args.eval:
        result = tasks.run(model, task, verbose=args.verbose)
        metrics[task] = result["metrics"]
        if args.report:
            _report_task(Path(args.report), str(output), result)
    command = "keras-towers " + " ".join(sys.argv[1:]) if sys.argv else ""
    model.save_to_preset(
        str(output),
        description=args.description
        or f"{args.method} trained on {args.data} for {args.epochs} epochs",
        metrics=metrics,
        training={
            "method": args.method,
            "data": data_info,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "schedule": "constant"
            if args.constant_lr
            else f"linear warmup {args.warmup_epochs} epochs, cosine decay to 0",
            "weight_decay": args.weight_decay,
            "image_size": image_size,
            **({"method_options": method_options} if method_options else {}),
            "seed": args.seed,
            "backend": keras.config.backend(),
            "seconds_this_run": round(seconds, 1),
            "command": command,
        },
    )
    final = {k: v[-1] for k, v in history.items() if v}
    print("final epoch:", ", ".join(f"{k}={v:.4f}" for k, v in sorted(final.items())))
    if metrics:
        _print_table([(str(output), task, m) for task, m in metrics.items()])
    if args.report:
        report_dir = Path(args.report)
        report_dir.mkdir(parents=True, exist_ok=True)
        history = _read_history(output / "history.csv") or history
        write_json(report_dir / "history.json", history)
        write_json(report_dir / "metrics.json", metrics)
        if history:
            report.plot_history(history, report_dir / "loss.png")
        print(f"wrote report to {report_dir}")
    # Finished: the preset records the arguments; nothing is left to resume.
    (output / RUN_FILE).unlink(missing_ok=True)
    (output / LOCK_FILE).unlink(missing_ok=True)
    lock.close()
    print(f"saved preset to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
