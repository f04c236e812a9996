"""The `keras-towers` command: prepare data, train, evaluate, classify, embed.

Run `keras-towers --help`, or `keras-towers COMMAND --help`. The backend is
chosen as usual with `KERAS_BACKEND` (jax, torch or tensorflow).

The installed `keras-towers` script starts in `keras_towers_entry`, which
checks `KERAS_BACKEND` and quiets TensorFlow's native log lines before this
package (and Keras) is imported; `main` here parses and runs a command.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import keras

from keras_towers.cli import convert
from keras_towers.cli import embed
from keras_towers.cli import evaluate
from keras_towers.cli import train
from keras_towers.cli.train import LOCK_FILE
from keras_towers.cli.train import RUN_FILE
from keras_towers.cli.train import _lock_output
from keras_towers.cli.train import _run_arguments
from keras_towers.version import __version__

__all__ = [
    "LOCK_FILE",
    "RUN_FILE",
    "_lock_output",
    "_run_arguments",
    "build_parser",
    "main",
]

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
    evaluate.add_parsers(commands)
    train.add_parser(commands)
    embed.add_parser(commands)
    convert.add_parser(commands)
    return parser


#: Errors that are the user's to fix: printed as one line, no traceback
#: (`NotImplementedError`: a checkpoint variant a converter refuses).
USER_ERRORS = (ValueError, FileNotFoundError, TypeError, OSError, NotImplementedError)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"keras-towers: warning: {message}\n"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formatwarning = warnings.formatwarning
    if not os.environ.get("KERAS_TOWERS_DEBUG"):
        # Warnings (e.g. texts cut at the model's context) as one line each,
        # without the source line Python would print.
        warnings.formatwarning = _one_line_warning
    try:
        return args.func(args) or 0
    except USER_ERRORS as error:
        # One clear line, no traceback (set KERAS_TOWERS_DEBUG=1 for it).
        if os.environ.get("KERAS_TOWERS_DEBUG"):
            raise
        print(f"keras-towers: error: {error}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
