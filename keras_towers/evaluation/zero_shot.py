"""Zero-shot classification with any model that embeds images and texts.

The classifier is built from text alone: each class name is written into
every prompt template, the prompts are embedded with `encode_texts`, each
prompt embedding is L2-normalised, the prompts of a class are averaged and
the mean is renormalised (CLIP's prompt ensembling). An image is assigned to
the class whose weight vector has the largest cosine similarity with its
L2-normalised `encode_images` embedding.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np

from keras_towers.evaluation import _inputs
from keras_towers.evaluation.templates import fill_templates
from keras_towers.evaluation.templates import get_templates
from keras_towers.ops import l2_normalize_numpy as l2_normalize
from keras_towers.preprocessing import TruncationWarning

DEFAULT_LOGIT_SCALE = 100.0


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def _check_class_names(class_names) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(
            "`class_names` must be a list of strings. Received "
            f"{type(class_names).__name__}."
        )
    class_names = list(class_names)
    if not class_names:
        raise ValueError("`class_names` must contain at least one class name.")
    for i, name in enumerate(class_names):
        if not isinstance(name, str):
            raise TypeError(
                f"`class_names[{i}]` must be a string. Received "
                f"{type(name).__name__}: {name!r}."
            )
    return class_names


def _text_preprocessor(model):
    """The model's preprocessor if it can count tokens, else `None`."""
    preprocessor = getattr(model, "preprocessor", None)
    if hasattr(preprocessor, "text_token_counts"):
        return preprocessor
    return None


def fitting_templates(
    model, class_names: Sequence[str], templates: str | Sequence[str] = "openai"
) -> list[str]:
    """The templates whose prompts still tell the classes apart once cut.

    A prompt longer than the model's text context is cut at its end. When
    the cut takes the whole class name ("a bad photo of a {}." is read as
    "a bad photo of" with a 16-byte context), or enough of it that two
    classes give the same tokens ("yellow square" / "yellow squares"), the
    prompt says nothing about its class and only blurs the ensemble. Such
    templates are dropped, with one `TruncationWarning` listing them. A cut
    inside a class name that still leaves the classes distinct is kept (and
    counted by `zero_shot_classifier`'s truncation warning). Models without
    a token-counting preprocessor (`text_token_counts`) keep every template.

    Args:
        model: a model with `encode_texts` (and usually a `preprocessor`).
        class_names: list of str. One name per class.
        templates: str or list of str. A template-set name or templates with
            one `"{}"` each (see `get_templates`).

    Returns:
        The templates to use, in their original order.

    Raises:
        ValueError: when every template loses a class to the cut.

    Example:

    ```python
    model = keras_towers.CLIP.tiny()  # a 16-byte context
    keras_towers.evaluation.zero_shot.fitting_templates(
        model, ["red circle", "blue square"], ["{}", "a bad photo of a {}."]
    )  # ["{}"], with a warning naming the dropped template
    ```
    """
    class_names = _check_class_names(class_names)
    templates = get_templates(templates)
    preprocessor = _text_preprocessor(model)
    if preprocessor is None:
        return templates
    capacity = preprocessor.text_capacity
    num_t, num_c = len(templates), len(class_names)
    prefixes = preprocessor.text_token_counts([t[: t.index("{}")] for t in templates])
    prompts = [
        template.replace("{}", name, 1)
        for template in templates
        for name in class_names
    ]
    cut = (preprocessor.text_token_counts(prompts) > capacity).reshape(num_t, num_c)
    lost = {}  # template index -> (class index, why)
    for t in np.flatnonzero(cut.any(axis=1)):
        if prefixes[t] >= capacity:
            c = int(np.flatnonzero(cut[t])[0])
            lost[int(t)] = (c, f"none of the class name {class_names[c]!r}")
            continue
        rows = prompts[t * num_c : (t + 1) * num_c]
        ids = keras.ops.convert_to_numpy(preprocessor({"texts": rows})["token_ids"])
        _, first, inverse = np.unique(
            np.asarray(ids), axis=0, return_index=True, return_inverse=True
        )
        inverse = np.asarray(inverse).reshape(-1)
        for c in np.flatnonzero(cut[t]):
            twin = int(first[inverse[c]])
            if twin != c and class_names[twin] != class_names[c]:
                lost[int(t)] = (int(c), f"the same as for {class_names[twin]!r}")
                break
    if not lost:
        return templates
    t, (c, why) = next(iter(lost.items()))
    example = prompts[t * num_c + c]
    detail = f"e.g. {example!r} is read as {preprocessor._kept_text(example)!r}: {why}"
    context = (
        f"the text context of {preprocessor.sequence_length} tokens "
        f"({capacity} for text)"
    )
    if len(lost) == num_t:
        raise ValueError(
            f"All {num_t} templates lose a class when their prompts are cut at "
            f"{context}: {detail}. Use templates that put the class name first "
            '(e.g. "none": the bare name), shorter class names, or a model with '
            "a longer context."
        )
    dropped = [templates[t] for t in sorted(lost)]
    warnings.warn(
        f"Dropped {len(dropped)} of {num_t} templates: cut at {context}, their "
        f"prompts lose a class ({detail}). Dropped: {dropped}. Zero-shot uses the "
        f"other {num_t - len(dropped)}; a model with a longer context keeps them.",
        TruncationWarning,
        stacklevel=2,
    )
    return [t for i, t in enumerate(templates) if i not in lost]


def zero_shot_classifier(
    model,
    class_names: Sequence[str],
    templates: str | Sequence[str] = "openai",
    batch_size: int = 256,
) -> np.ndarray:
    """Zero-shot class weights from prompt templates.

    For each class: fill every template with the class name, embed the
    prompts with `model.encode_texts`, L2-normalise each prompt embedding,
    average them and L2-normalise the mean.

    Templates whose prompts lose a class name to the model's text context
    are dropped first (see `fitting_templates`); prompts cut only after the
    class name are kept, and one `TruncationWarning` counts them.

    Args:
        model: any object with `encode_texts(texts, batch_size)` returning an
            `(N, D)` array (and `encode_images`).
        class_names: list of str. One name per class, in label order.
        templates: str or list of str. A template-set name or templates with
            one `"{}"` each (see `get_templates`).
        batch_size: int. Prompts per `encode_texts` call (rounded to whole
            classes, at least one class per call).

    Returns:
        float32 NumPy array `(C, D)` with unit-norm rows.

    Example:

    ```python
    model = keras_towers.CLIP.tiny()
    weights = keras_towers.evaluation.zero_shot_classifier(
        model, ["cat", "dog"], templates="simple"
    )
    ```
    """
    _inputs.check_model(model)
    class_names = _check_class_names(class_names)
    batch_size = _inputs.check_batch_size(batch_size)
    templates = fitting_templates(model, class_names, templates)
    preprocessor = _text_preprocessor(model)
    if preprocessor is not None:
        preprocessor.warn_if_truncated(
            [p for name in class_names for p in fill_templates(templates, name)],
            what="prompts",
            stacklevel=2,
        )
    per_call = max(1, batch_size // len(templates))
    weights = []
    # Counted once above for every prompt; not again per `encode_texts` call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        for start in range(0, len(class_names), per_call):
            names = class_names[start : start + per_call]
            prompts = [p for name in names for p in fill_templates(templates, name)]
            emb = _inputs.encode_texts(model, prompts, batch_size)
            emb = l2_normalize(emb).reshape(len(names), len(templates), -1)
            weights.append(l2_normalize(emb.mean(axis=1)))
    return np.concatenate(weights).astype("float32")


def _resolve_classifier(model, class_names, templates, classifier, batch_size):
    class_names = _check_class_names(class_names)
    if classifier is None:
        return class_names, zero_shot_classifier(
            model, class_names, templates, batch_size=max(batch_size, 256)
        )
    classifier = np.asarray(keras.ops.convert_to_numpy(classifier), "float32")
    if classifier.ndim != 2 or classifier.shape[0] != len(class_names):
        raise ValueError(
            f"`classifier` must have shape (num_classes, D) = ({len(class_names)}, "
            f"D). Received shape {classifier.shape}."
        )
    return class_names, classifier


def _check_top_k(top_k) -> tuple[int, ...]:
    if isinstance(top_k, (int, np.integer)):
        top_k = (top_k,)
    top_k = tuple(top_k)
    for k in top_k:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`top_k` must be ints >= 1. Received {top_k}.")
    return top_k


def _true_class_rank(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of the true class, ties broken by lower class index.

    The tie rule matches `argmax`, so rank 1 <=> argmax == label.
    """
    true = logits[np.arange(len(labels)), labels][:, None]
    index = np.arange(logits.shape[1])[None, :]
    above = (logits > true) | ((logits == true) & (index < labels[:, None]))
    return 1 + above.sum(axis=1)


def evaluate_zero_shot(
    model,
    images,
    labels,
    class_names: Sequence[str],
    templates: str | Sequence[str] = "openai",
    batch_size: int = 64,
    top_k: Sequence[int] = (1, 5),
    return_predictions: bool = False,
    verbose: int = 1,
    logit_scale: float = DEFAULT_LOGIT_SCALE,
    classifier: np.ndarray | None = None,
) -> dict:
    """Zero-shot classification accuracy of an image-text model.

    Images are embedded batch by batch with `model.encode_images`,
    L2-normalised, and scored against the class weights of
    `zero_shot_classifier` by cosine similarity. Only per-example predictions
    are kept, never the features, so a `tf.data.Dataset` larger than memory
    streams through.

    Accuracy depends only on the ranking, so the logit scale does not affect
    it. Probabilities are `softmax(logit_scale * cosine)` over classes; the
    default 100 is CLIP's learned temperature at the end of training.

    Args:
        model: any object with `encode_images(images, batch_size)` and
            `encode_texts(texts, batch_size)` returning `(N, D)` arrays
            (e.g. `keras_towers.CLIP`).
        images: a uint8 batch `(N, H, W, C)`, a list of `(H, W, C)` images
            (sizes may differ; grayscale as `(H, W, 1)`), or a
            `tf.data.Dataset` of unbatched elements
            `{"images": (H, W, C) uint8, "labels": int}` or `(image, label)`
            tuples.
        labels: int array `(N,)` with values in `[0, C)`, or None for a
            dataset.
        class_names: list of str. Class names in label order.
        templates: str or list of str. Prompt templates (see
            `get_templates`).
        batch_size: int. Images per `encode_images` call.
        top_k: tuple of int. Top-k accuracies to report; `"accuracy"` (k=1)
            is always reported, `"top{k}_accuracy"` for each `k > 1` when
            there are at least `k` classes.
        return_predictions: bool. Also return `"predictions"` `(N,)`,
            `"labels"` `(N,)` and `"probabilities"` `(N, C)`.
        verbose: int. 0 silences the progress bar.
        logit_scale: float. Multiplies cosine similarities before the
            softmax that gives probabilities.
        classifier: optional `(C, D)` class weights (from
            `zero_shot_classifier`) to reuse instead of embedding prompts.

    Returns:
        dict with `"accuracy"` (top-1), `"top5_accuracy"` (etc.),
        `"per_class_accuracy"` `(C,)` (NaN for classes without examples),
        `"mean_per_class_accuracy"`, `"confusion_matrix"` `(C, C)` int64
        (rows: true class, columns: predicted), `"num_examples"`,
        `"num_classes"` and `"chance"` (`1 / C`).

    Example:

    ```python
    images, _, labels = keras_towers.datasets.make_shapes(32)
    model = keras_towers.CLIP.tiny()
    results = keras_towers.evaluation.evaluate_zero_shot(
        model,
        images,
        labels,
        keras_towers.datasets.shape_class_names(),
        templates="none",  # fits the 16-byte context of `tiny()`
        verbose=0,
    )
    results["accuracy"], results["chance"]
    ```
    """
    _inputs.check_model(model)
    top_k = _check_top_k(top_k)
    batches = _inputs.Batches(images, labels, batch_size=batch_size)
    class_names, weights = _resolve_classifier(
        model, class_names, templates, classifier, batch_size
    )
    num_classes = len(class_names)
    ks = sorted({1, *(k for k in top_k if k <= num_classes)})
    hits = dict.fromkeys(ks, 0)
    confusion = np.zeros((num_classes, num_classes), "int64")
    predictions, all_labels, probabilities = [], [], []
    bar = None
    if verbose:
        bar = keras.utils.Progbar(
            batches.total,
            verbose=verbose,
            stateful_metrics=["accuracy"],
            unit_name="image",
        )
    seen = 0
    for batch_images, batch_labels in batches:
        batch_labels = _check_label_values(batch_labels, num_classes, seen)
        features = l2_normalize(_inputs.encode_images(model, batch_images, batch_size))
        if features.shape[1] != weights.shape[1]:
            raise ValueError(
                f"Image embeddings have dimension {features.shape[1]} but text "
                f"(class) embeddings have {weights.shape[1]}; they must match."
            )
        logits = features @ weights.T
        rank = _true_class_rank(logits, batch_labels)
        for k in ks:
            hits[k] += int(np.sum(rank <= k))
        predicted = np.argmax(logits, axis=1)
        np.add.at(confusion, (batch_labels, predicted), 1)
        seen += len(batch_labels)
        if return_predictions:
            predictions.append(predicted)
            all_labels.append(batch_labels)
            probabilities.append(softmax(float(logit_scale) * logits))
        if bar is not None:
            bar.update(seen, values=[("accuracy", hits[1] / seen)])
    if seen == 0:
        raise ValueError("`images` is empty: there is nothing to evaluate.")
    if bar is not None and bar.target is None:
        bar.update(seen, values=[("accuracy", hits[1] / seen)], finalize=True)

    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / support, np.nan)
    results = {
        "accuracy": hits[1] / seen,
        **{f"top{k}_accuracy": hits[k] / seen for k in ks if k > 1},
        "per_class_accuracy": per_class,
        "mean_per_class_accuracy": float(np.nanmean(per_class)),
        "confusion_matrix": confusion,
        "num_examples": seen,
        "num_classes": num_classes,
        "chance": 1.0 / num_classes,
    }
    if return_predictions:
        results["predictions"] = np.concatenate(predictions)
        results["labels"] = np.concatenate(all_labels)
        results["probabilities"] = np.concatenate(probabilities).astype("float32")
    return results


def _check_label_values(labels: np.ndarray, num_classes: int, offset: int):
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
            labels = labels.astype("int64")
        else:
            raise TypeError(
                "`labels` must be integer class indices. Received dtype "
                f"{labels.dtype}."
            )
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"`labels` must be in [0, {num_classes}) (one per class name). "
            f"Example {offset + int(bad[0])} has label {labels[bad[0]]}."
        )
    return labels.astype("int64")


class ScoreRule:
    """How `classify` turns image-class cosine similarities into scores.

    `kind` is `"softmax"` (probabilities over the classes,
    `softmax(scale * cosine)`), `"sigmoid"` (SigLIP: an independent match
    probability per class, `sigmoid(scale * cosine + bias)`) or `"cosine"`
    (the similarity itself, for models without a learned temperature).
    """

    def __init__(self, kind: str, scale: float | None = None, bias=None):
        self.kind, self.scale, self.bias = kind, scale, bias

    def apply(self, cosine: np.ndarray) -> np.ndarray:
        if self.kind == "softmax":
            return softmax(self.scale * cosine)
        if self.kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-(self.scale * cosine + self.bias)))
        return np.asarray(cosine, "float64")

    @property
    def description(self) -> str:
        if self.kind == "softmax":
            return (
                f"probability: softmax over the classes of {self.scale:.2f} x "
                "cosine similarity"
            )
        if self.kind == "sigmoid":
            return (
                f"match probability per class: sigmoid({self.scale:.2f} x cosine "
                f"{self.bias:+.2f}) (SigLIP; classes are scored independently)"
            )
        return (
            "cosine similarity (the model has no learned temperature, so "
            "there is no calibrated probability)"
        )


def score_rule(model, logit_scale: float | None = None) -> ScoreRule:
    """The scoring `classify` uses for `model`.

    An explicit `logit_scale` gives `softmax(logit_scale * cosine)`.
    Otherwise the model's own: a learned `logit_scale` (stored as a log, as
    in CLIP) gives a softmax with that scale, plus a `logit_bias` (SigLIP)
    a per-class sigmoid; a model without one (ASIF) keeps the cosine.
    """
    if logit_scale is not None:
        if not float(logit_scale) > 0:
            raise ValueError(f"`logit_scale` must be > 0. Received: {logit_scale}")
        return ScoreRule("softmax", float(logit_scale))
    log_scale = getattr(model, "logit_scale", None)
    if log_scale is None:
        return ScoreRule("cosine")
    scale = float(np.exp(keras.ops.convert_to_numpy(log_scale)))
    bias = getattr(model, "logit_bias", None)
    if bias is not None:
        return ScoreRule("sigmoid", scale, float(keras.ops.convert_to_numpy(bias)))
    return ScoreRule("softmax", scale)


def classify(
    model,
    images,
    class_names: Sequence[str],
    templates: str | Sequence[str] = "openai",
    top_k: int = 5,
    batch_size: int = 64,
    logit_scale: float | None = None,
    classifier: np.ndarray | None = None,
) -> list[list[tuple[str, float]]]:
    """Rank class names for each image (zero-shot), with scores.

    Args:
        model: any object with `encode_images` and `encode_texts`.
        images: one image `(H, W, C)`, a batch `(N, H, W, C)`, a list of
            images, or a `tf.data.Dataset` of unbatched images (or of dicts
            with an `"images"` key, or `(image, label)` tuples; labels are
            ignored).
        class_names: list of str. Candidate class names.
        templates: str or list of str. Prompt templates (see
            `get_templates`).
        top_k: int. How many classes to return per image (at most C).
        batch_size: int. Images per `encode_images` call.
        logit_scale: float or `None`. `None` (default): the model's own
            scoring, see `score_rule` (its learned temperature; SigLIP's
            scale and bias; the cosine itself for a model without one, such
            as ASIF). A float: `softmax(logit_scale * cosine)` over classes.
        classifier: optional precomputed `(C, D)` class weights.

    Returns:
        One list per image of `(class_name, score)`, best first; what the
        score means is `score_rule(model, logit_scale).description`.

    Example:

    ```python
    model = keras_towers.CLIP.tiny()
    images, _, _ = keras_towers.datasets.make_shapes(2)
    keras_towers.evaluation.classify(
        model, images, ["red circle", "blue square"], templates="simple"
    )
    ```
    """
    _inputs.check_model(model)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be an int >= 1. Received {top_k!r}.")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    batches = _inputs.Batches(images, None, batch_size=batch_size, require_extra=False)
    class_names, weights = _resolve_classifier(
        model, class_names, templates, classifier, batch_size
    )
    k = min(int(top_k), len(class_names))
    rule = score_rule(model, logit_scale)
    results = []
    for batch_images, _ in batches:
        features = l2_normalize(_inputs.encode_images(model, batch_images, batch_size))
        probs = rule.apply(features @ weights.T)
        # Stable sort so equal probabilities keep class order.
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for row, idx in zip(probs, order, strict=True):
            results.append([(class_names[i], float(row[i])) for i in idx])
    return results
