"""The `keras-towers` argument parser, built without Keras or keras_towers.

Building the parser, `--help` (of any command) and `--version` import
neither Keras nor `keras_towers`, so they answer at once. Each command names
its handler as `"module:function"` (the parsed arguments' `handler`); the
module is imported only when the command runs (`keras_towers_entry.run`).

Choices that the library defines (`--method`, `--augment`) are static copies
here; `tests/test_cli_startup.py` checks that they equal the library's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

DESCRIPTION = """\
keras_towers: contrastive vision-language models on JAX, PyTorch or TensorFlow.

First steps on a fresh machine (after `bash scripts/setup.sh`):

  keras-towers data prepare                 # build the offline corpus + eval sets
  keras-towers presets list                 # what is shipped, with its metrics
  keras-towers eval --preset clip_small_embedded --task retrieval:tuxpaint
  keras-towers zero-shot --preset clip_small_embedded cat.png --classes "cat,dog"
  keras-towers embed --preset clip_small_embedded --images photos/ --output e.npy
  keras-towers train --method clip --data embedded --epochs 10 --output runs/clip
  keras-towers convert open_clip_dir/ my_preset/   # open_clip / transformers -> native

Choose the backend with KERAS_BACKEND=jax|torch|tensorflow. Errors are one
line; KERAS_TOWERS_DEBUG=1 shows tracebacks and TensorFlow's own log lines.
"""

#: `keras_towers.recipes.names()` (the registered recipes): `train --method`.
METHODS = (
    "barlip",
    "barlip-heads",
    "byolip",
    "byolip-heads",
    "clip",
    "clip-improved",
    "clip-improved-heads",
    "clip-tiny",
    "lit",
    "lit-heads",
    "lit-minilm",
    "protoclip",
    "protoclip-heads",
    "protoclip-tiny",
    "siamlip",
    "siamlip-heads",
    "siglip",
    "swalip",
    "swalip-heads",
    "three-towers",
    "three-towers-heads",
)
#: `sorted(keras_towers.recipes_rocket.AUGMENTATIONS)`: `train --augment`.
AUGMENTATIONS = ("captions", "icons", "image", "light", "none", "rocket")
#: `keras_towers.recipes_rocket.DEFAULT_AUGMENT`.
DEFAULT_AUGMENT = "rocket"
#: The zero-shot heads of a CLIPRocket model.
ZERO_SHOT_HEADS = ("global", "augmented", "ensemble")

#: Handlers, imported when their command runs. `presets list` reads the
#: shipped presets' metadata without Keras.
HANDLERS = {
    "data prepare": "keras_towers.cli.evaluate:cmd_data_prepare",
    "presets list": "keras_towers_entry.presets:cmd_presets_list",
    "eval": "keras_towers.cli.evaluate:cmd_eval",
    "zero-shot": "keras_towers.cli.evaluate:cmd_zero_shot",
    "train": "keras_towers.cli.train:cmd_train",
    "embed": "keras_towers.cli.embed:cmd_embed",
    "convert": "keras_towers.cli.convert:run",
}

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

EMBED_EPILOG = """\
inputs:
  --images accepts image files, folders (their image files, sorted), quoted
  glob patterns, or a .csv/.tsv/.jsonl table with an `image` column (paths
  relative to the table's folder). --texts accepts a .txt file (one text per
  line) or a table with a `caption` (or `text`) column; --column picks another.
  A table's `id` column, when present, gives the ids.

outputs:
  OUT.npy      float32 [rows, dim], L2-normalised, plus OUT.ids.json (the ids
               in row order, with the preset and the modality)
  OUT.parquet  columns `id` (string) and `embedding` (float32 list); needs
               pyarrow (`pip install keras-towers[parquet]`)
"""

#: The first paragraph of `keras_towers.cli.convert`'s docstring, unquoted.
CONVERT_DESCRIPTION = """\
keras-towers convert SRC DST: a checkpoint directory in a supported
external format (transformers CLIP, open_clip) -> a native keras_towers preset."""


# --- versions, without importing Keras or keras_towers ---


def package_dir(name: str = "keras_towers") -> Path:
    """The directory of an installed package, found without running its
    `__init__` (a source checkout, an editable install or a wheel)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"No package named {name!r} is installed.")
    return Path(list(spec.submodule_search_locations)[0])


def keras_towers_version() -> str:
    """`keras_towers.version.__version__`, read from the file (an editable
    install's distribution metadata keeps the version it was installed
    with)."""
    loaded = sys.modules.get("keras_towers.version")
    if loaded is not None:
        return loaded.__version__
    try:
        text = (package_dir() / "version.py").read_text(encoding="utf-8")
    except OSError:
        text = ""
    match = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if match:
        return match.group(1)
    import importlib.metadata  # only here: ~50 ms of start-up otherwise

    return importlib.metadata.version("keras-towers")


def keras_version() -> str:
    loaded = sys.modules.get("keras")
    if loaded is not None:
        return loaded.__version__
    import importlib.metadata  # only here: ~50 ms of start-up otherwise

    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def configured_backend(environ=None) -> str:
    """The backend Keras would choose, as `keras/src/backend/config.py`
    does: `KERAS_BACKEND` when set and not empty, else `backend` in
    `$KERAS_HOME/keras.json` (`~/.keras/keras.json`; `/tmp/.keras` when the
    home directory is not writable), else `tensorflow`."""
    environ = os.environ if environ is None else environ
    backend = "tensorflow"
    if "KERAS_HOME" in environ:
        keras_dir = environ.get("KERAS_HOME")
    else:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        keras_dir = os.path.join(base, ".keras")
    config_path = os.path.expanduser(os.path.join(keras_dir, "keras.json"))
    if os.path.exists(config_path):
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (OSError, ValueError):
            config = {}
        if isinstance(config, dict):
            backend = config.get("backend", backend)
    if environ.get("KERAS_BACKEND"):
        backend = environ["KERAS_BACKEND"]
    return backend


def keras_backend() -> str:
    """`keras.config.backend()` when Keras is imported, else the backend it
    would choose (`configured_backend`)."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        return loaded.config.backend()
    return configured_backend()


def version_string() -> str:
    return (
        f"keras-towers {keras_towers_version()} (keras {keras_version()}, "
        f"backend {keras_backend()})"
    )


class _VersionAction(argparse.Action):
    """argparse's `version` action, with the text computed when asked for."""

    def __init__(
        self,
        option_strings,
        dest=argparse.SUPPRESS,
        default=argparse.SUPPRESS,
        help="show program's version number and exit",
    ):
        super().__init__(
            option_strings=option_strings,
            dest=dest,
            default=default,
            nargs=0,
            help=help,
        )

    def __call__(self, parser, namespace, values, option_string=None):
        formatter = parser._get_formatter()
        formatter.add_text(version_string())
        parser._print_message(formatter.format_help(), sys.stdout)
        parser.exit()


# --- options shared by several commands ---


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


def add_load_options(parser) -> None:
    """The options of every command that loads presets: the checks
    (`--no-verify-*`) and the zero-shot head of CLIPRocket presets."""
    add_verify_options(parser)
    parser.add_argument(
        "--zero-shot-head",
        choices=ZERO_SHOT_HEADS,
        help="embeddings of a CLIPRocket preset (clip-improved, siamlip, ...): "
        "the global linear head z, the augmented-view MLP head h, or their "
        "ensemble w*cos_z + (1-w)*cos_h (default: the one the preset stores)",
    )
    parser.add_argument(
        "--ensemble-weight",
        type=float,
        help="w of --zero-shot-head ensemble, in [0, 1] (default: the stored one)",
    )


def add_verify_options(parser) -> None:
    """`--no-verify-checksums` / `--no-verify-encoders` for commands that
    load presets."""
    parser.add_argument(
        "--no-verify-checksums",
        dest="verify_checksums",
        action="store_false",
        help="load a preset whose metadata.json lacks file checksums (its files "
        "are then not checked)",
    )
    parser.add_argument(
        "--no-verify-encoders",
        dest="verify_encoders",
        action="store_false",
        help="load a preset whose recorded frozen encoders (package version, "
        "weight sha256) differ from the installed ones",
    )


def _methods() -> tuple:
    """`train --method` choices: the registered recipes when
    `keras_towers.recipes` is imported (a caller may have registered its
    own), else `METHODS`."""
    recipes = sys.modules.get("keras_towers.recipes")
    if recipes is not None:
        return tuple(recipes.names())
    return METHODS


# --- the commands ---


def add_data_parser(commands) -> None:
    """`data prepare`."""
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
        help="rendering processes (default: the number of CPUs, at most 8)",
    )
    prepare.set_defaults(handler=HANDLERS["data prepare"])


def add_presets_parser(commands) -> None:
    """`presets list`."""
    presets_parser = commands.add_parser("presets", help="list shipped presets")
    preset_commands = presets_parser.add_subparsers(
        dest="presets_command", metavar="ACTION"
    )
    preset_commands.required = True
    listing = preset_commands.add_parser(
        "list", help="every shipped preset with its description and metrics"
    )
    listing.set_defaults(handler=HANDLERS["presets list"])


def add_eval_parser(commands) -> None:
    """`eval`."""
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
    evaluate.set_defaults(handler=HANDLERS["eval"])


def add_zero_shot_parser(commands) -> None:
    """`zero-shot`."""
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
    zero_shot.set_defaults(handler=HANDLERS["zero-shot"])


def add_train_parser(commands) -> None:
    """`train`."""
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
        choices=_methods(),
        help="what to train (default: clip)",
    )
    train.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (the train split of the corpus `keras-towers data "
        "prepare` builds; its validation split for val_ metrics) or a path "
        "to your pairs: .csv/.jsonl (columns image, caption), .tfrecord, "
        "WebDataset .tar or a glob of them",
    )
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=128)
    train.add_argument(
        "--accumulation-steps",
        type=_positive_int,
        default=1,
        help="split each batch into this many micro-batches with full-batch "
        "negatives (GradCache): the step of the whole batch with the memory of "
        "a micro-batch (default 1; not for protoclip or clip-improved methods)",
    )
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
    rocket = train.add_argument_group(
        "Improved CLIP options (--method clip-improved / siamlip / byolip / "
        "barlip / swalip; --augment also clip / siglip / three-towers / lit)"
    )
    rocket.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        help="training views: 'rocket' (clip-rocket's global view + 2 strongly "
        "augmented image and caption views), 'image' (the same image views, "
        "captions unaugmented), 'light' (plain global view + 2 "
        "mildly cropped/flipped views, stopword-removed captions), 'none' "
        "(global pair only), 'icons' (one view: mild crop, grayscale, "
        "inversion; captions in varied phrasings) or 'captions' (the same "
        f"captions, images as they are); default: {DEFAULT_AUGMENT}. For "
        "clip / siglip / three-towers (one view): no augmentation, or 'icons' "
        "/ 'captions' / 'none'; for lit and lit-minilm (cached image "
        "features): 'captions'",
    )
    rocket.add_argument(
        "--zero-shot-head",
        choices=ZERO_SHOT_HEADS,
        help="embeddings for zero-shot, retrieval and `embed`, stored in the "
        "model: the global head z, the augmented-view head h, or their "
        "ensemble (default: global)",
    )
    rocket.add_argument(
        "--ensemble-weight",
        type=float,
        help="weight w of z in the ensemble, in [0, 1]: similarity = "
        "w cos_z + (1 - w) cos_h (0.5)",
    )
    rocket.add_argument(
        "--label-smoothing",
        type=float,
        help="label smoothing of the augmented-view terms (0.1; 0 with swalip)",
    )
    rocket.add_argument(
        "--head-layers",
        type=_positive_int,
        help="Dense layers of the augmented-view h heads: 3 (BN-MLP, the "
        "recipe) or 1 (linear)",
    )
    train.set_defaults(handler=HANDLERS["train"])


def add_embed_parser(commands) -> None:
    """`embed`."""
    embed = commands.add_parser(
        "embed",
        help="export image or text embeddings with ids to .npy or .parquet",
        description="Encode images or texts with a preset and write the\n"
        "L2-normalised embeddings, one row per input, with ids.",
        epilog=EMBED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("--preset", required=True, help="preset name or directory")
    source = embed.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="IMAGES")
    source.add_argument("--texts", metavar="FILE")
    embed.add_argument(
        "--column", help="the table column holding the texts or image paths"
    )
    embed.add_argument(
        "--output", required=True, help="OUT.npy or OUT.parquet (must not exist)"
    )
    embed.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUTPUT"
    )
    embed.add_argument("--batch-size", type=_positive_int, default=64)
    add_load_options(embed)
    embed.set_defaults(handler=HANDLERS["embed"])


def add_convert_parser(commands) -> None:
    """`convert`."""
    convert = commands.add_parser(
        "convert",
        help="convert an open_clip or transformers checkpoint to a native preset",
        description=CONVERT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("source", metavar="SRC", help="checkpoint directory")
    convert.add_argument("output", metavar="DST", help="new preset directory")
    convert.add_argument("--description", default="", help="preset description")
    convert.set_defaults(handler=HANDLERS["convert"])


def build_parser() -> argparse.ArgumentParser:
    """The `keras-towers` parser; parsed arguments carry `handler`."""
    parser = argparse.ArgumentParser(
        prog="keras-towers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    add_data_parser(commands)
    add_presets_parser(commands)
    add_eval_parser(commands)
    add_zero_shot_parser(commands)
    add_train_parser(commands)
    add_embed_parser(commands)
    add_convert_parser(commands)
    return parser
