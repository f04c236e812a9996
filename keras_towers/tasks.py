"""Evaluation tasks by name: `"zeroshot:animal-mnist"`, `"retrieval:tuxpaint"`...

A task string is `KIND:DATA`. Kinds are registered functions of
`(model, data, **options)` returning a result dict whose `"metrics"` holds
the numbers (`accuracy` for zero-shot and linear probe;
`image_to_text_recall@1/5/10` and `text_to_image_recall@1/5/10` for
retrieval) and whose other keys feed reports (confusion matrix, rankings).

DATA is an evaluation set name (`keras_towers.datasets.classification_names()`
for classification, `retrieval_names()` for retrieval) or, for retrieval, a
path to the user's pairs (CSV, JSONL, TFRecord, WebDataset tar).

Zero-shot uses each set's own prompt templates unless told otherwise
(`default_templates`): `"digits"`, `"flags"` and `"emoji"` (Fluent 3D) for
the sets whose names do not read as "a photo of a {}.", CLIP's 80 `"openai"`
templates for the others. Linear probes need a train split: flags and Fluent
3D (one image per class) are zero-shot and retrieval sets only.

Example:

```python
result = keras_towers.tasks.run(model, "zeroshot:fashion-mnist", limit=1000)
result["metrics"]["accuracy"]
```
"""

from __future__ import annotations

import os

import numpy as np

from keras_towers import datasets
from keras_towers import evaluation
from keras_towers.utils.registry import Registry

TASKS = Registry("task kind", hint="Register one with `register_task`.")

#: Retrieval sets built from the embedded corpus: name -> (split, sources).
RETRIEVAL_SETS = {
    "tuxpaint": ("test", ("tuxpaint",)),
    # Every held-out concept of the corpus, in every art style (None: all
    # sources): 1,708 pairs.
    "corpus": ("test", None),
}

#: Retrieval sets read some other way: name -> `loader(limit)` returning
#: `(images, captions)` (a list of uint8 arrays, a list of str). Register
#: one with `register_retrieval_set`.
RETRIEVAL_LOADERS = Registry(
    "retrieval set", hint="Register one with `register_retrieval_set`."
)


def register_task(kind: str):
    """Decorator registering `fn(model, data, **options) -> dict` as `kind`."""

    return TASKS.register(kind)


def kinds() -> list[str]:
    """Registered task kinds."""
    return TASKS.names()


def register_retrieval_set(name: str):
    """Decorator registering `loader(limit) -> (images, captions)` as a
    retrieval set, for pairs that are not embedded-corpus records.

    Example:

    ```python
    @keras_towers.tasks.register_retrieval_set("my-pairs")
    def my_pairs(limit=None):
        return images[:limit], captions[:limit]

    keras_towers.tasks.run(model, "retrieval:my-pairs")
    ```
    """

    return RETRIEVAL_LOADERS.register(name)


def retrieval_names() -> list[str]:
    """The named retrieval sets (`"retrieval:NAME"`; a path works too)."""
    return sorted({*RETRIEVAL_SETS, *RETRIEVAL_LOADERS.names()})


def parse(task: str) -> tuple[str, str]:
    """`"kind:data"` -> `(kind, data)`, or a clear error."""
    if not isinstance(task, str) or ":" not in task:
        raise ValueError(
            f"A task must look like KIND:DATA (e.g. 'zeroshot:animal-mnist'). "
            f"Received: {task!r}. Kinds: {kinds()}."
        )
    kind, data = task.split(":", 1)
    if kind not in TASKS:
        raise ValueError(f"Unknown task kind {kind!r} in {task!r}. Known: {kinds()}.")
    if not data:
        raise ValueError(f"Task {task!r} names no data set after ':'.")
    return kind, data


def run(model, task: str, **options) -> dict:
    """Run one task on a model with `encode_images` / `encode_texts`."""
    kind, data = parse(task)
    result = TASKS.get(kind)(model, data, **options)
    result["task"] = task
    return result


def _subset(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """A fixed random subset of `range(n)` (all of it when `limit` is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"`limit` must be >= 1. Received: {limit}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def _shapes(split: str):
    """Drawn shapes (12 colour x shape classes); seeds differ per split."""

    seed = {"train": 101, "test": 202}[split]
    images, _, labels = datasets.make_shapes(1200, seed=seed)
    return images, labels, datasets.shape_class_names()


#: Classification sets generated here rather than read from packages.
GENERATED_SETS = {"shapes": _shapes}


def default_templates(data: str) -> str:
    """The template set zero-shot uses on `data` when none is given: the
    set's own (`"digits"`, `"flags"`, `"emoji"` for Fluent 3D), else
    `"openai"`."""
    if data in GENERATED_SETS:
        return "openai"
    return datasets.classification_metadata(data)["templates"] or "openai"


def _classification(name: str, split: str, limit: int | None, seed: int = 0):
    if name in GENERATED_SETS:
        images, labels, class_names = GENERATED_SETS[name](split)
    else:
        images, labels, class_names = datasets.load_classification(name, split=split)
    keep = _subset(len(images), limit, seed)
    images = np.asarray(images)[keep]
    if images.ndim == 3:  # (N, H, W) grayscale -> (N, H, W, 1)
        images = images[..., None]
    return images, np.asarray(labels)[keep], list(class_names)


@register_task("zeroshot")
def zero_shot_task(
    model,
    data: str,
    templates=None,
    limit: int | None = None,
    batch_size: int = 64,
    verbose: int = 1,
    **_,
) -> dict:
    if templates is None:
        templates = default_templates(data)
    images, labels, class_names = _classification(data, "test", limit)
    result = evaluation.evaluate_zero_shot(
        model,
        images,
        labels,
        class_names,
        templates=templates,
        batch_size=batch_size,
        verbose=verbose,
    )
    metrics = {
        "accuracy": float(result["accuracy"]),
        "chance": float(result["chance"]),
        "num_examples": int(result["num_examples"]),
    }
    if "top5_accuracy" in result:
        metrics["top5_accuracy"] = float(result["top5_accuracy"])
    return {
        "metrics": metrics,
        "confusion_matrix": np.asarray(result["confusion_matrix"]),
        "class_names": class_names,
    }


def retrieval_pairs(data: str, limit: int | None = None):
    """Images (list of uint8 arrays) and captions of a retrieval set."""
    if data in RETRIEVAL_LOADERS:
        images, captions = RETRIEVAL_LOADERS.get(data)(limit)
        images, captions = list(images), [str(c) for c in captions]
        if not images or len(images) != len(captions):
            raise ValueError(
                f"Retrieval set {data!r} gave {len(images)} images and "
                f"{len(captions)} captions; expected the same number, at least 1."
            )
        return images, captions
    if data in RETRIEVAL_SETS:
        split, sources = RETRIEVAL_SETS[data]
        records = datasets.embedded_records(split, sources=sources)
        keep = _subset(len(records), limit)
        records = [records[i] for i in keep]
        ds = datasets.from_records(records)
    elif os.path.exists(data) or any(ch in data for ch in "*?["):
        ds = datasets.load_pairs(data)
        if limit is not None:
            ds = ds.take(limit)
    else:
        raise ValueError(
            f"Unknown retrieval data {data!r}: expected one of "
            f"{retrieval_names()} or a path to pairs (.csv, .jsonl, "
            ".tfrecord, WebDataset .tar)."
        )
    images, captions = [], []
    for element in ds.as_numpy_iterator():
        images.append(element["images"])
        text = element["texts"]
        captions.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    if not images:
        raise ValueError(f"Retrieval data {data!r} has no readable pairs.")
    return images, captions


@register_retrieval_set("fluent-3d")
def _fluent_3d_pairs(limit: int | None = None):
    """Each Fluent 3D emoji with its CLDR name as the caption."""
    images, labels, class_names = _classification("fluent-3d", "test", limit)
    return list(images), [class_names[i] for i in labels]


@register_task("retrieval")
def retrieval_task(
    model,
    data: str,
    limit: int | None = None,
    batch_size: int = 64,
    verbose: int = 1,
    **_,
) -> dict:
    images, captions = retrieval_pairs(data, limit)
    result = evaluation.evaluate_retrieval(
        model,
        images,
        captions,
        batch_size=batch_size,
        return_rankings=True,
        verbose=verbose,
    )
    metrics = {
        key: float(value)
        for key, value in result.items()
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    }
    # Identical captions are the same caption: retrieving the twin of a
    # duplicated caption ("A lion." for two lion stamps) is a hit. The strict
    # pair-index recalls stay available under a "_strict" suffix.
    by_caption = _recall_by_caption(result, captions, ks=(1, 5, 10))
    for key, value in by_caption.items():
        metrics[f"{key}_strict"] = metrics[key]
        metrics[key] = value
    metrics["unique_captions"] = len(set(captions))
    metrics["chance_recall@1"] = 1.0 / len(captions)
    return {
        "metrics": metrics,
        "images": images,
        "captions": captions,
        "rankings": {
            "image_to_text": result["image_to_text_rankings"],
            "text_to_image": result["text_to_image_rankings"],
        },
    }


def _recall_by_caption(result: dict, captions, ks) -> dict:
    texts = np.asarray(captions, dtype=object)
    out = {}
    for direction in ("image_to_text", "text_to_image"):
        ranked = np.asarray(result[f"{direction}_rankings"])
        hits = texts[ranked] == texts[: len(ranked), None]
        for k in ks:
            out[f"{direction}_recall@{k}"] = float(np.mean(hits[:, :k].any(axis=1)))
    return out


def _has_train_split(data: str) -> bool:
    if data in GENERATED_SETS:
        return True
    return "train" in datasets.classification_metadata(data)["splits"]


@register_task("linear-probe")
def linear_probe_task(
    model,
    data: str,
    limit: int | None = None,
    train_limit: int | None = 5000,
    batch_size: int = 64,
    verbose: int = 1,
    seed: int = 0,
    **_,
) -> dict:
    if not _has_train_split(data):
        raise ValueError(
            f"linear-probe:{data} needs a train split, and {data} has none (one "
            f"image per class: a test set only). Use zeroshot:{data} instead."
        )
    train_images, train_labels, class_names = _classification(
        data, "train", train_limit, seed
    )
    test_images, test_labels, _ = _classification(data, "test", limit, seed)
    result = evaluation.linear_probe(
        model,
        train_images,
        train_labels,
        test_images,
        test_labels,
        seed=seed,
        batch_size=batch_size,
    )
    metrics = {
        "accuracy": float(result["accuracy"]),
        "best_C": float(result["best_C"]),
        "num_train": int(result["num_train"]),
        "num_test": int(result["num_test"]),
        "chance": 1.0 / len(class_names),
    }
    return {"metrics": metrics, "class_names": class_names}
