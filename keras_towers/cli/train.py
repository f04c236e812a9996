"""`keras-towers train`: train a model into a preset directory, resumable."""

from __future__ import annotations

import csv
import fcntl
import os
import sys
from pathlib import Path

import keras

from keras_towers import recipes
from keras_towers import tasks
from keras_towers import training
from keras_towers.cli.common import _print_table
from keras_towers.cli.common import _report_task
from keras_towers.cli.common import check_output_paths
from keras_towers.evaluation import report
from keras_towers.utils.io import read_json
from keras_towers.utils.io import write_json


def _read_history(path: Path) -> dict:
    """Per-epoch logs written by CSVLogger, as `{name: [values]}`."""
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
    "accumulation_steps",
    "learning_rate",
    "weight_decay",
    "warmup_epochs",
    "constant_lr",
    "image_size",
    "seed",
    *recipes.BUILD_OPTIONS,
    *recipes.TRAINER_OPTIONS,
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
    # Runs started before the flag existed trained without accumulation.
    recorded.setdefault("accumulation_steps", 1)
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
    check_output_paths(report=args.report)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; a preset is a directory.")
    output.mkdir(parents=True, exist_ok=True)
    # Held until the process exits: a second `train` on OUTPUT fails at once.
    lock = _lock_output(output)
    if any(p.name != LOCK_FILE for p in output.iterdir()) and not args.resume:
        if (output / "backup").exists():
            raise ValueError(
                f"{output} holds an interrupted run: add --resume to continue it "
                "(if --resume reports every backup damaged, delete "
                f"{output / 'backup'} first), or choose another --output."
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
        for name in recipes.BUILD_OPTIONS + recipes.TRAINER_OPTIONS
        if arguments[name] is not None
    }
    refused = sorted(set(method_options) - set(recipe.options))
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        accepting = [
            n for n in recipes.names() if set(refused) & set(recipes.get(n).options)
        ]
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
        k: v for k, v in method_options.items() if k in recipes.BUILD_OPTIONS
    }
    episode_options = {
        k: v for k, v in method_options.items() if k in recipes.TRAINER_OPTIONS
    }
    episodic = "episode_size" in recipe.options
    if episodic:
        model_options.setdefault("episode_size", len(train_pairs))
    model = recipe.build(image_size=image_size, **model_options)
    if args.accumulation_steps > 1:
        # Checked here, before any data is encoded or trained on.
        try:
            model.check_accumulation_steps(args.accumulation_steps)
        except NotImplementedError as error:
            raise ValueError(
                f"--accumulation-steps does not apply to --method {args.method}: "
                f"{error}"
            ) from None
        episode_options["accumulation_steps"] = args.accumulation_steps
    if episodic:
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
        callbacks=[training.AtomicCSVLogger(output / "history.csv", append=True)],
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
            "accumulation_steps": args.accumulation_steps,
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
