"""Where keras_towers finds its offline data, and the error when it cannot.

Every source is installed by a package manager (`bash scripts/setup.sh` runs
all of them); nothing is ever downloaded at run time. Each location can be
overridden by an environment variable, which the tests use to point at tiny
fake trees.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DATA_DIR_ENV = "KERAS_TOWERS_DATA_DIR"
TUXPAINT_DIR_ENV = "KERAS_TOWERS_TUXPAINT_DIR"
FASHION_MNIST_DIR_ENV = "KERAS_TOWERS_FASHION_MNIST_DIR"
ANIMAL_MNIST_DIR_ENV = "KERAS_TOWERS_ANIMAL_MNIST_DIR"
FLAGS_DIR_ENV = "KERAS_TOWERS_FLAGS_DIR"
ISO_CODES_DIR_ENV = "KERAS_TOWERS_ISO_CODES_DIR"
DIGITS_DIR_ENV = "KERAS_TOWERS_DIGITS_DIR"

DEFAULT_TUXPAINT_DIR = "/usr/share/tuxpaint/stamps"
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_FLAGS_DIR = "/usr/share/iso-flags-png-320x240"
DEFAULT_ISO_CODES_DIR = "/usr/share/iso-codes/json"


# How to install each source, quoted verbatim in `MissingDataError`.
INSTALL_HINTS = {
    "tuxpaint-stamps-default": "apt-get install tuxpaint-stamps-default",
    "animal-mnist": "pip install --no-deps animal-mnist==0.4",
    "dataset-fashion-mnist": "apt-get install dataset-fashion-mnist",
    # The evaluation sets of `keras_towers.datasets.eval_sets`.
    "iso-flags-png-320x240": "apt-get install iso-flags-png-320x240 iso-codes",
    "iso-codes": "apt-get install iso-flags-png-320x240 iso-codes",
    "@lobehub/fluent-emoji-3d": (
        "(mkdir -p <data_dir>/sources && cd <data_dir>/sources && "
        "npm pack @lobehub/fluent-emoji-3d@1.1.0)"
    ),
    "emojibase-data": (
        "(mkdir -p <data_dir>/sources && cd <data_dir>/sources && "
        "npm pack emojibase-data@17.0.0)"
    ),
    "scikit-learn": "pip install scikit-learn",
}


class MissingDataError(FileNotFoundError):
    """An offline data package is not installed.

    The message names each missing package, where it was looked for, and the
    command that installs it.
    """

    def __init__(
        self,
        missing: dict[str, str],
        data_dir: str | os.PathLike | None,
        hints: dict[str, str] | None = None,
    ):
        self.missing = dict(missing)
        lines = ["Offline data not found:"]
        for package, looked_at in self.missing.items():
            hint = (hints or {}).get(package) or INSTALL_HINTS.get(
                package, "see `bash scripts/setup.sh`"
            )
            if data_dir is not None:
                hint = hint.replace("<data_dir>", str(data_dir))
            lines.append(f"  - {package} (looked in {looked_at}); install: {hint}")
        lines.append("`bash scripts/setup.sh` installs all of them.")
        super().__init__("\n".join(lines))


def data_dir() -> Path:
    """The keras_towers data directory.

    `$KERAS_TOWERS_DATA_DIR` if set, else `~/.cache/keras_towers`. It holds
    `sources/` (package tarballs put there by `scripts/setup.sh`), extracted
    sources and the `corpus/` manifests written by
    `keras_towers.datasets.prepare()`. It is not created here.

    Example:

    ```python
    keras_towers.datasets.data_dir()  # PosixPath('/home/me/.cache/keras_towers')
    ```
    """
    value = os.environ.get(DATA_DIR_ENV)
    if value:
        return Path(value).expanduser().absolute()
    return Path("~/.cache/keras_towers").expanduser().absolute()


def resolve_data_dir(directory: str | os.PathLike | None) -> Path:
    """`directory` made absolute, or `data_dir()` when it is `None`."""
    if directory is None:
        return data_dir()
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            "`data_dir` must be a path or None. "
            f"Received: data_dir={directory!r} of type {type(directory).__name__}"
        )
    return Path(directory).expanduser().absolute()


def tuxpaint_dir() -> Path:
    """The Tux Paint stamps tree (`$KERAS_TOWERS_TUXPAINT_DIR` overrides)."""
    return Path(os.environ.get(TUXPAINT_DIR_ENV) or DEFAULT_TUXPAINT_DIR)


def fashion_mnist_dir() -> Path:
    """The Fashion-MNIST IDX files (`$KERAS_TOWERS_FASHION_MNIST_DIR` overrides)."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR)


def animal_mnist_dir() -> Path | None:
    """The Animal-MNIST pickles inside the installed `animal_mnist` package.

    `$KERAS_TOWERS_ANIMAL_MNIST_DIR` overrides. Located with
    `importlib.util.find_spec`, which does not run the package (its loader
    module imports TensorFlow). `None` when the package is not installed.
    """
    override = os.environ.get(ANIMAL_MNIST_DIR_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"


def flags_dir() -> Path:
    """The flag PNGs of Debian `iso-flags-png-320x240` (`$KERAS_TOWERS_FLAGS_DIR`
    overrides)."""
    return Path(os.environ.get(FLAGS_DIR_ENV) or DEFAULT_FLAGS_DIR)


def iso_codes_dir() -> Path:
    """The JSON files of Debian `iso-codes` (`iso_3166-1.json`, ...;
    `$KERAS_TOWERS_ISO_CODES_DIR` overrides)."""
    return Path(os.environ.get(ISO_CODES_DIR_ENV) or DEFAULT_ISO_CODES_DIR)


def digits_dir() -> Path | None:
    """The folder holding scikit-learn's bundled `digits.csv.gz`.

    `$KERAS_TOWERS_DIGITS_DIR` overrides. Located with
    `importlib.util.find_spec`, which does not import scikit-learn (slow to
    import). `None` when scikit-learn is not installed.
    """
    override = os.environ.get(DIGITS_DIR_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def debian_package_version(package: str) -> str | None:
    """The installed version of a Debian package, read from dpkg's status file.

    `None` off Debian or when the package is not installed (e.g. when the data
    came from `dpkg-deb -x` or an environment override).
    """
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return None
    current, installed, version = None, False, None
    with open(status, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("Package: "):
                current, installed, version = line[9:].strip(), False, None
            elif current == package and line.startswith("Status: "):
                installed = line.endswith(" installed")
            elif current == package and line.startswith("Version: "):
                version = line[9:].strip()
            elif not line and current == package:
                if installed and version:
                    return version
                current = None
    return version if current == package and installed else None
