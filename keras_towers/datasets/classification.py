"""Zero-shot classification sets, read straight from their installed packages.

- **Fashion-MNIST** (Debian `dataset-fashion-mnist`, MIT): the IDX `.gz` files
  in `/usr/share/datasets/fashion-mnist`, 60,000 train + 10,000 test images,
  28x28 grey, labels in the dataset's documented order.
- **Animal-MNIST** (PyPI `animal-mnist` 0.4, MIT): 10,000 28x28 white-on-black
  silhouettes, 1,000 per class, shipped as two pickled NumPy arrays in
  `animal_mnist/data/Animal_MNIST/` (284 images appear twice). The package's own loader imports
  TensorFlow, so the pickles are read here, with an unpickler that only
  rebuilds NumPy arrays. Labels 0-9 are, in order, bear, bird, cat, cow, dog,
  elephant, giraffe, horse, sheep, zebra: the package lists the classes
  alphabetically without a mapping, and this order was checked by looking at
  samples of each label. It ships one set only; `split="test"` is a fixed
  stratified 20% (200 per class, chosen by a SHA-256 hash of the pixels, so
  duplicates stay on one side), `"train"` the other 8,000, `"all"` all 10,000.

Nothing is copied: each call decodes the files (well under a second).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import pickle
from pathlib import Path

import numpy as np

from keras_towers.datasets import paths

FASHION_MNIST_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
ANIMAL_MNIST_CLASSES = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
SPLITS = ("train", "test", "all")
ANIMAL_MNIST_TEST_FRACTION = 0.2

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
_DATASETS = {
    "animal-mnist": {
        "classes": ANIMAL_MNIST_CLASSES,
        "package": "animal-mnist",
        "license": "MIT",
    },
    "fashion-mnist": {
        "classes": FASHION_MNIST_CLASSES,
        "package": "dataset-fashion-mnist",
        "license": "MIT",
    },
}


def classification_names() -> list[str]:
    """The zero-shot evaluation sets `load_classification` can read.

    Example:

    ```python
    keras_towers.datasets.classification_names()  # ['animal-mnist', 'fashion-mnist']
    ```
    """
    return sorted(_DATASETS)


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"`name` must be a string. Received: name={name!r} of type "
            f"{type(name).__name__}"
        )
    key = name.strip().lower().replace("_", "-")
    if key not in _DATASETS:
        raise ValueError(
            f"Unknown classification set {name!r}. Expected one of "
            f"{classification_names()}."
        )
    return key


def _read_idx(path: Path) -> np.ndarray:
    """Decode one gzipped IDX file of unsigned bytes (the MNIST format)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"{path}: size does not match its IDX header {shape}.")
    return np.frombuffer(raw, "uint8", offset=header).reshape(shape)


def _idx_count(path: Path) -> int:
    """The first dimension of an IDX file, reading only its header."""
    with gzip.open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    return int.from_bytes(head[4:8], "big")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and refuses every other global (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"Refusing to unpickle {module}.{name}: only NumPy arrays expected."
            )
        return super().find_class(module, name)


def _load_array_pickle(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        value = _NumpyOnlyUnpickler(f).load()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path} should hold a NumPy array, got {type(value)}.")
    return value


def _fashion_dir() -> Path:
    directory = paths.fashion_mnist_dir()
    names = [n for pair in _FASHION_FILES.values() for n in pair]
    if not all((directory / n).is_file() for n in names):
        raise paths.MissingDataError({"dataset-fashion-mnist": str(directory)}, None)
    return directory


def _animal_dir() -> Path:
    directory = paths.animal_mnist_dir()
    if directory is None or not all((directory / n).is_file() for n in _ANIMAL_FILES):
        where = str(directory) if directory else "the Python environment"
        raise paths.MissingDataError({"animal-mnist": where}, None)
    return directory


def _animal_test_mask(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A fixed stratified test selection that keeps duplicates together.

    The package holds 284 pairs of identical images. Per class, images are
    grouped by the SHA-256 of their pixels and groups are taken in hash order
    until the class has its 20% share, so the split depends only on the data
    and no image appears in both train and test.
    """
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        groups: dict[bytes, list[int]] = {}
        for i in np.flatnonzero(labels == c):
            digest = hashlib.sha256(images[i].tobytes()).digest()
            groups.setdefault(digest, []).append(int(i))
        target = int(round(int((labels == c).sum()) * ANIMAL_MNIST_TEST_FRACTION))
        taken = 0
        for digest in sorted(groups):
            if taken + len(groups[digest]) <= target:
                mask[groups[digest]] = True
                taken += len(groups[digest])
            if taken == target:
                break
    return mask


def load_classification(name: str, split: str = "test"):
    """Load a zero-shot classification set.

    Args:
        name: str. One of `classification_names()`: `"animal-mnist"` or
            `"fashion-mnist"`.
        split: str. `"train"`, `"test"` or `"all"` (both). Fashion-MNIST uses
            its official 60,000/10,000 split; Animal-MNIST ships one set and
            gets a fixed stratified 8,000/2,000 split (see the module
            docstring).

    Returns:
        `(images, labels, class_names)`: uint8 array `(N, 28, 28)`, int32
        labels `(N,)` indexing `class_names`, and the lowercase class names to
        build prompts from (e.g. `"a photo of a {}"`).

    Example:

    ```python
    images, labels, class_names = keras_towers.datasets.load_classification(
        "fashion-mnist", split="test"
    )
    ```
    """
    key = _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    classes = list(_DATASETS[key]["classes"])
    if key == "fashion-mnist":
        directory = _fashion_dir()
        parts = ("train", "test") if split == "all" else (split,)
        images, labels = [], []
        for part in parts:
            image_file, label_file = _FASHION_FILES[part]
            images.append(_read_idx(directory / image_file))
            labels.append(_read_idx(directory / label_file))
        images, labels = np.concatenate(images), np.concatenate(labels)
    else:
        directory = _animal_dir()
        images = _load_array_pickle(directory / _ANIMAL_FILES[0])
        labels = _load_array_pickle(directory / _ANIMAL_FILES[1])
        if split != "all":
            mask = _animal_test_mask(images, labels)
            keep = mask if split == "test" else ~mask
            images, labels = images[keep], labels[keep]
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"{key}: expected uint8 images (N, H, W) and N labels, got "
            f"{images.dtype} {images.shape} and {labels.shape}."
        )
    labels = labels.astype("int32")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"{key}: labels outside [0, {len(classes)}).")
    return np.ascontiguousarray(images), labels, classes


def describe_classification(name: str) -> dict:
    """Check that a set is installed and count it, cheaply (for `prepare`).

    Raises `MissingDataError` when its package is missing.
    """
    key = _check_name(name)
    info = dict(_DATASETS[key])
    info["classes"] = list(info["classes"])
    if key == "fashion-mnist":
        directory = _fashion_dir()
        counts = {
            part: _idx_count(directory / files[0])
            for part, files in _FASHION_FILES.items()
        }
        info["version"] = paths.debian_package_version("dataset-fashion-mnist")
    else:
        directory = _animal_dir()
        images = _load_array_pickle(directory / _ANIMAL_FILES[0])
        labels = _load_array_pickle(directory / _ANIMAL_FILES[1])
        n_test = int(_animal_test_mask(images, labels).sum())
        counts = {"train": len(labels) - n_test, "test": n_test}
        try:
            info["version"] = importlib.metadata.version("animal-mnist")
        except importlib.metadata.PackageNotFoundError:
            info["version"] = None
    info["path"] = str(directory)
    info["counts"] = counts
    return info
