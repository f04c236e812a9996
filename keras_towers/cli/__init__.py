"""The `keras-towers` command: prepare data, train, evaluate, classify, embed.

Run `keras-towers --help`, or `keras-towers COMMAND --help`. The backend is
chosen as usual with `KERAS_BACKEND` (jax, torch or tensorflow).

The installed `keras-towers` script starts in `keras_towers_entry`, which
checks `KERAS_BACKEND`, parses the command line with a parser that imports
neither Keras nor this package (`keras_towers_entry.parser`, re-exported here
as `build_parser`), and imports a command's module here only to run it.
`main` here parses and runs a command in-process, with the same one-line
errors and warnings (`keras_towers_entry.run`).
"""

from __future__ import annotations

import sys

from keras_towers.cli.train import LOCK_FILE
from keras_towers.cli.train import RUN_FILE
from keras_towers.cli.train import _lock_output
from keras_towers.cli.train import _run_arguments
from keras_towers_entry import USER_ERRORS
from keras_towers_entry import _one_line_warning
from keras_towers_entry import run
from keras_towers_entry.parser import DESCRIPTION
from keras_towers_entry.parser import build_parser

__all__ = [
    "DESCRIPTION",
    "LOCK_FILE",
    "RUN_FILE",
    "USER_ERRORS",
    "_lock_output",
    "_one_line_warning",
    "_run_arguments",
    "build_parser",
    "main",
    "run",
]


def main(argv=None) -> int:
    """Parse `argv` (default: `sys.argv[1:]`) and run the command; the exit
    status (2 and one line on stderr for a user error)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
