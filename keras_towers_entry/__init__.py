"""Start of the `keras-towers` script, before Keras is imported.

Importing `keras_towers` imports Keras, which reads `KERAS_BACKEND` and, for
a name it does not know, fails with a traceback; TensorFlow (which keras-hub
imports on every backend) prints native log lines while it loads, and takes
seconds to. So the script starts here, in a package that imports neither: it
checks the backend name, parses the command line with the Keras-free parser
(`keras_towers_entry.parser`: `--help` and `--version` end there), and runs
the command's handler. `presets list` (`keras_towers_entry.presets`) needs no
Keras either; for every other command the handler's module, and with it
`keras_towers` and Keras, is imported with native log lines quieted unless
`KERAS_TOWERS_DEBUG` is set.

`run` (the handler with one-line errors and warnings) is also what
`keras_towers.cli.main` calls.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

from keras_towers_entry.parser import build_parser

#: Backends keras_towers runs on (Keras knows others it cannot train with).
BACKENDS = ("jax", "torch", "tensorflow")

#: Errors that are the user's to fix: printed as one line, no traceback
#: (`NotImplementedError`: a checkpoint variant a converter refuses).
USER_ERRORS = (ValueError, FileNotFoundError, TypeError, OSError, NotImplementedError)

#: Handlers in these modules run without importing Keras.
LIGHT_MODULES = ("keras_towers_entry.presets",)


def _error(message: str) -> int:
    print(f"keras-towers: error: {message}", file=sys.stderr)
    return 2


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"keras-towers: warning: {message}\n"


class _QuietStderr:
    """Send file descriptor 2 to /dev/null while native libraries load:
    their log lines are written below Python, so only the descriptor can
    hold them back. Python's own errors are raised after it is restored."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        return False


def _split_handler(handler: str) -> tuple[str, str]:
    module, _, function = handler.partition(":")
    return module, function


def run(args) -> int:
    """Run the command parsed into `args` (its `handler`, "module:function",
    imported now): user errors (`USER_ERRORS`) as one line and exit status
    2, warnings as one line each, unless `KERAS_TOWERS_DEBUG` is set."""
    module, function = _split_handler(args.handler)
    handler = getattr(importlib.import_module(module), function)
    formatwarning = warnings.formatwarning
    if not os.environ.get("KERAS_TOWERS_DEBUG"):
        # Warnings (e.g. texts cut at the model's context) as one line each,
        # without the source line Python would print.
        warnings.formatwarning = _one_line_warning
    try:
        return handler(args) or 0
    except USER_ERRORS as error:
        # One clear line, no traceback (set KERAS_TOWERS_DEBUG=1 for it).
        if os.environ.get("KERAS_TOWERS_DEBUG"):
            raise
        print(f"keras-towers: error: {error}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


def main(argv=None) -> int:
    backend = os.environ.get("KERAS_BACKEND")
    if backend is not None and backend not in BACKENDS:
        return _error(
            f"KERAS_BACKEND={backend!r} is not a backend keras_towers runs on; "
            f"expected one of {', '.join(BACKENDS)}."
        )
    debug = bool(os.environ.get("KERAS_TOWERS_DEBUG"))
    if not debug:
        # Later native messages (e.g. "failed call to cuInit" on a machine
        # without a GPU) are filtered by level.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # --help and --version print and exit here, before any heavy import.
    args = build_parser().parse_args(argv)
    module, _ = _split_handler(args.handler)
    if module not in LIGHT_MODULES:
        try:
            if debug:
                importlib.import_module(module)
            else:
                with _QuietStderr():
                    importlib.import_module(module)
        except Exception as error:  # e.g. a backend named in ~/.keras/keras.json
            if debug:
                raise
            return _error(
                f"could not import keras_towers ({type(error).__name__}: {error}); "
                "rerun with KERAS_TOWERS_DEBUG=1 for the traceback."
            )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
