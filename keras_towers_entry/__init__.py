"""Start of the `keras-towers` script, before Keras is imported.

Importing `keras_towers` imports Keras, which reads `KERAS_BACKEND` and, for
a name it does not know, fails with a traceback; TensorFlow (which keras-hub
imports on every backend) prints native log lines while it loads. So the
script starts here, in a module that imports neither: it checks the backend
name, quiets those log lines unless `KERAS_TOWERS_DEBUG` is set, and only then
imports `keras_towers.cli` and runs the command.
"""

from __future__ import annotations

import os
import sys

#: Backends keras_towers runs on (Keras knows others it cannot train with).
BACKENDS = ("jax", "torch", "tensorflow")


def _error(message: str) -> int:
    print(f"keras-towers: error: {message}", file=sys.stderr)
    return 2


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
    try:
        if debug:
            from keras_towers import cli
        else:
            with _QuietStderr():
                from keras_towers import cli
    except Exception as error:  # e.g. a backend named in ~/.keras/keras.json
        if debug:
            raise
        return _error(
            f"could not import keras_towers ({type(error).__name__}: {error}); "
            "rerun with KERAS_TOWERS_DEBUG=1 for the traceback."
        )
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
