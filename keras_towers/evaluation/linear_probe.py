"""Linear-probe evaluation: logistic regression on frozen image features."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from keras_towers.evaluation import _inputs

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _features(model, images, labels, batch_size, name, verbose):
    batches = _inputs.Batches(
        images,
        labels,
        batch_size=batch_size,
        images_name=f"{name}_images",
        extra_name=f"{name}_labels",
    )
    bar = _inputs.progbar(batches.total, verbose)
    features, all_labels, seen = [], [], 0
    for batch_images, batch_labels in batches:
        features.append(_inputs.encode_images(model, batch_images, batch_size))
        all_labels.append(batch_labels)
        seen += len(batch_labels)
        if bar is not None:
            bar.update(seen)
    if seen == 0:
        raise ValueError(f"`{name}_images` is empty.")
    if bar is not None and bar.target is None:
        bar.update(seen, finalize=True)
    return np.concatenate(features), np.concatenate(all_labels)


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split into (train, val) index arrays.

    Each class puts `round(val_fraction * count)` of its examples (at least
    one when it has two or more, none when it has one) in validation.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _fit_score(x_fit, y_fit, x_eval, y_eval, c, max_iter, seed):
    # Imported here so importing keras_towers does not pay for scikit-learn.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    # lbfgs on several classes fits the multinomial (softmax) model.
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, random_state=seed),
    )
    # One BLAS/OpenMP thread: the matrices are small, and after TensorFlow or
    # XLA have run in the process, multi-threaded OpenBLAS calls contend with
    # their thread pools (measured: a C=1000 fit took 44 s instead of 0.4 s).
    with threadpool_limits(limits=1):
        probe.fit(x_fit, y_fit)
        return float(np.mean(probe.predict(x_eval) == y_eval))


def linear_probe(
    model,
    train_images,
    train_labels,
    test_images,
    test_labels,
    val_images=None,
    val_labels=None,
    val_fraction: float = 0.2,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    batch_size: int = 64,
    max_iter: int = 1000,
    verbose: int = 0,
) -> dict:
    """Linear-probe accuracy of a model's frozen image features.

    Images are embedded with `model.encode_images` (as returned, not
    renormalised), features are standardised (zero mean, unit variance per
    dimension, statistics from the fitting data only) and a multinomial
    L2-regularised logistic regression (scikit-learn, lbfgs) is fit. The
    inverse regularisation strength `C` is chosen on a validation split
    (`val_images`, or a deterministic stratified `val_fraction` of the
    training set); the probe is then refit on train + validation with the
    best `C` and scored on the test set. Ties in validation accuracy go to
    the smallest `C` (strongest regularisation).

    Args:
        model: any object with `encode_images(images, batch_size)` returning
            an `(N, D)` array.
        train_images: a batch `(N, H, W, C)`, a list of `(H, W, C)` images,
            or a `tf.data.Dataset` of unbatched `{"images", "labels"}` dicts
            or `(image, label)` tuples.
        train_labels: array `(N,)` of class labels, or None for a dataset.
        test_images: like `train_images`.
        test_labels: like `train_labels`.
        val_images: optional, like `train_images`.
        val_labels: optional, like `train_labels`.
        val_fraction: float in (0, 1). Share of each training class held out
            for choosing `C` when `val_images` is None.
        Cs: list of float. Candidate inverse regularisation strengths.
        seed: int. Seeds the validation split and the solver.
        batch_size: int. Images per `encode_images` call.
        max_iter: int. lbfgs iterations per fit.
        verbose: int. 1 shows progress bars while embedding.

    Returns:
        dict with `"accuracy"` (test top-1 of the refit probe), `"best_C"`,
        `"val_accuracy"` (dict C -> validation accuracy), `"num_train"` (the
        training examples used to choose `C`), `"num_val"`, `"num_test"` and
        `"num_classes"` (in the training data).

    Example:

    ```python
    images, _, labels = keras_towers.datasets.make_shapes(60)
    model = keras_towers.CLIP.tiny()
    results = keras_towers.evaluation.linear_probe(
        model, images[:40], labels[:40], images[40:], labels[40:]
    )
    results["accuracy"], results["best_C"]
    ```
    """
    _inputs.check_model(model)
    batch_size = _inputs.check_batch_size(batch_size)
    Cs = [float(c) for c in np.atleast_1d(np.asarray(Cs, dtype="float64"))]
    if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
        raise ValueError(f"`Cs` must be a non-empty list of positive floats. Got {Cs}.")
    if (val_images is None) != (val_labels is None) and not _is_dataset(val_images):
        raise ValueError(
            "`val_images` and `val_labels` must be given together (or neither)."
        )
    if val_images is None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1). Received {val_fraction}.")

    x_train, y_train = _features(
        model, train_images, train_labels, batch_size, "train", verbose
    )
    x_test, y_test = _features(
        model, test_images, test_labels, batch_size, "test", verbose
    )
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError("Train and test features have different dimensions.")
    if val_images is None:
        fit_idx, val_idx = stratified_split(y_train, val_fraction, seed)
        if len(val_idx) == 0:
            raise ValueError(
                "Too few training examples to hold out a validation split (every "
                "class has one example). Pass `val_images`/`val_labels`."
            )
        x_fit, y_fit = x_train[fit_idx], y_train[fit_idx]
        x_val, y_val = x_train[val_idx], y_train[val_idx]
    else:
        x_fit, y_fit = x_train, y_train
        x_val, y_val = _features(
            model, val_images, val_labels, batch_size, "val", verbose
        )
    if len(np.unique(y_fit)) < 2:
        raise ValueError(
            "The training split has a single class; a classifier needs at least two."
        )

    from sklearn.exceptions import ConvergenceWarning

    val_accuracy = {}
    unconverged = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for c in sorted(Cs):
            before = len(caught)
            val_accuracy[c] = _fit_score(x_fit, y_fit, x_val, y_val, c, max_iter, seed)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught[before:]):
                unconverged.append(c)
        best_c = max(val_accuracy, key=lambda c: (val_accuracy[c], -c))
        x_all = np.concatenate([x_fit, x_val])
        y_all = np.concatenate([y_fit, y_val])
        before = len(caught)
        accuracy = _fit_score(x_all, y_all, x_test, y_test, best_c, max_iter, seed)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught[before:]):
            unconverged.append(best_c)
    if unconverged:
        warnings.warn(
            f"lbfgs did not converge in max_iter={max_iter} iterations for "
            f"C in {sorted(set(unconverged))}; raise `max_iter` for exact optima.",
            stacklevel=2,
        )
    return {
        "accuracy": accuracy,
        "best_C": best_c,
        "val_accuracy": val_accuracy,
        "num_train": int(len(y_fit)),
        "num_val": int(len(y_val)),
        "num_test": int(len(y_test)),
        "num_classes": int(len(np.unique(y_all))),
    }


def _is_dataset(x) -> bool:
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)
