"""Evaluation figures written to PNG files (matplotlib, no display needed).

Figures are built with `matplotlib.figure.Figure` and its Agg canvas rather
than `pyplot`, so no global backend is switched and no window can open. Each
file is written to a temporary name and renamed (`utils.io.atomic_write`).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from collections.abc import Sequence

import numpy as np

from keras_towers.utils.io import atomic_write

HIT_COLOUR = "#1a7f37"
MISS_COLOUR = "#444444"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path) -> str:
    """Write `fig` atomically: a failed write (a full disk) leaves the
    previous file, and no half-written image is ever left at `path`."""
    path = os.fspath(path)
    atomic_write(
        path, lambda temporary: fig.savefig(temporary, dpi=100), pass_path=True
    )
    return path


#: Confusion matrices name their classes on the axes up to this many classes.
MAX_LABELLED_CLASSES = 100


def plot_confusion_matrix(
    cm,
    class_names: Sequence[str],
    path: str,
    title: str = "Confusion matrix",
    normalize: bool = True,
) -> str:
    """Draw a confusion matrix (rows: true class, columns: predicted).

    Args:
        cm: int array `(C, C)`, e.g. `evaluate_zero_shot(...)["confusion_matrix"]`.
        class_names: list of str. One per row/column.
        path: str. PNG file to write (parent directories are created).
        title: str. Figure title.
        normalize: bool. Colour cells by the share of their row (recall per
            class) instead of raw counts; the counts are printed in the cells
            either way when there are at most 30 classes. Class names label
            the axes up to `MAX_LABELLED_CLASSES` classes.

    Returns:
        The path written.

    Example:

    ```python
    keras_towers.evaluation.plot_confusion_matrix(
        [[5, 1], [2, 4]], ["cat", "dog"], "confusion.png"
    )
    ```
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"`cm` must be a square (C, C) matrix. Got shape {cm.shape}.")
    if len(class_names) != cm.shape[0]:
        raise ValueError(
            f"`class_names` has {len(class_names)} names but `cm` is "
            f"{cm.shape[0]}x{cm.shape[1]}; they must match."
        )
    c = cm.shape[0]
    values = cm.astype("float64")
    if normalize:
        rows = values.sum(axis=1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)
    side = min(max(4.0, 0.45 * c + 2.5), 30.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(
        image, ax=ax, shrink=0.8, label="share of true class" if normalize else "count"
    )
    if c <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(c), labels=list(class_names), rotation=45, ha="right")
        ax.set_yticks(range(c), labels=list(class_names))
    else:  # hundreds of names would only overlap (flags, Fluent 3D)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if c <= 30:
        vmax = 1.0 if normalize else max(float(values.max()), 1.0)
        for i in range(c):
            for j in range(c):
                # White text on the darker half of the colour map.
                dark = values[i, j] > 0.5 * vmax
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=8 if c > 12 else 10,
                    color="white" if dark else "black",
                )
    return _save(fig, path)


def plot_history(history, path: str, title: str | None = None) -> str:
    """Plot every logged series per epoch: loss and metrics, train and val.

    Each series `name` gets a panel with its `val_name` counterpart (dashed)
    when present.

    Args:
        history: dict of series name -> list of per-epoch values, or a
            `keras.callbacks.History` (from `fit`).
        path: str. PNG file to write.
        title: optional str. Figure title.

    Returns:
        The path written.

    Example:

    ```python
    keras_towers.evaluation.plot_history(
        {"loss": [2.0, 1.5], "val_loss": [2.1, 1.8]}, "history.png"
    )
    ```
    """
    from matplotlib.ticker import MaxNLocator

    series = getattr(history, "history", history)
    if not isinstance(series, Mapping) or not series:
        raise ValueError(
            "`history` must be a non-empty dict of name -> per-epoch values or a "
            f"keras History. Received {type(history).__name__}."
        )
    names = []
    for key in series:
        base = key[4:] if key.startswith("val_") else key
        if base not in names:
            names.append(base)
    # Loss first: it is what every method logs and what readers look for.
    names = sorted(names, key=lambda n: n != "loss")  # stable: keeps log order
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        for key, style, label in ((name, "-", "train"), (f"val_{name}", "--", "val")):
            if key in series:
                values = np.asarray(series[key], dtype="float64").reshape(-1)
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _as_display_image(image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected an image (H, W, C). Got shape {image.shape}.")
    if image.dtype != np.uint8:
        # keras_towers images are in [0, 255] whatever their dtype.
        image = np.clip(image.astype("float64"), 0, 255).astype("uint8")
    return image


def _positions(entry, ranked: Sequence) -> set[int]:
    """Correct positions in a ranked list from an int, str or a collection."""
    if entry is None:
        return set()
    if isinstance(entry, (str, bytes, int, np.integer)):
        entry = [entry]
    found = set()
    for item in entry:
        if isinstance(item, (str, bytes)):
            found.update(i for i, r in enumerate(ranked) if r == item)
        else:
            found.add(int(item))
    return found


def _check_rows(queries, ranked, correct, what):
    if len(queries) != len(ranked):
        raise ValueError(
            f"{len(queries)} queries but {len(ranked)} ranked lists of {what}; "
            "they must match."
        )
    if correct is not None and len(correct) != len(queries):
        raise ValueError(
            f"`correct` has {len(correct)} entries but there are {len(queries)} "
            "queries; they must match."
        )
    if not len(queries):
        raise ValueError("There are no queries to plot.")


def plot_retrieval_grid(
    query_images,
    ranked_captions: Sequence[Sequence[str]],
    path: str,
    correct: Sequence | None = None,
    scores: Sequence[Sequence[float]] | None = None,
    title: str | None = "Image → text retrieval",
    wrap: int = 60,
) -> str:
    """One row per query image: the image, then its ranked captions.

    Correct captions are drawn bold in green with a check mark.

    Args:
        query_images: list or array of images `(H, W, C)`, values in
            `[0, 255]`.
        ranked_captions: per query, its captions best first (e.g. the top 5
            of `evaluate_retrieval(..., return_rankings=True)`).
        path: str. PNG file to write.
        correct: optional, per query: the correct caption (str), the index
            of the correct entry in its ranked list (int), or a collection of
            either.
        scores: optional, per query, a score per ranked caption (printed).
        title: optional str. Figure title.
        wrap: int. Characters per line before captions wrap.

    Returns:
        The path written.

    Example:

    ```python
    images, captions, _ = keras_towers.datasets.make_shapes(2)
    keras_towers.evaluation.plot_retrieval_grid(
        images,
        [[captions[0], captions[1]], [captions[0], captions[1]]],
        "i2t.png",
        correct=[captions[0], captions[1]],
    )
    ```
    """
    _check_rows(query_images, ranked_captions, correct, "captions")
    lines_per_row = [
        sum(len(textwrap.wrap(str(c), wrap)) or 1 for c in caps)
        for caps in ranked_captions
    ]
    row_heights = [max(1.9, 0.24 * n + 0.4) for n in lines_per_row]
    fig = _figure(2.0 + 0.095 * wrap + 0.8, sum(row_heights) + (0.4 if title else 0))
    grid = fig.add_gridspec(
        len(query_images),
        2,
        width_ratios=[2.0, 0.095 * wrap + 0.8],
        height_ratios=row_heights,
    )
    for row, (image, captions) in enumerate(
        zip(query_images, ranked_captions, strict=True)
    ):
        hits = _positions(None if correct is None else correct[row], captions)
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(_as_display_image(image), cmap="gray", interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"query {row + 1}", fontsize=9)
        text_ax = fig.add_subplot(grid[row, 1])
        text_ax.set_axis_off()
        total = max(lines_per_row[row], 1)
        y = 1.0
        for rank, caption in enumerate(captions):
            wrapped = textwrap.wrap(str(caption), wrap) or [""]
            hit = rank in hits
            label = f"{rank + 1}. " + "\n    ".join(wrapped)
            if scores is not None:
                label += f"   ({float(scores[row][rank]):.3f})"
            if hit:
                label = "✓ " + label
            else:
                label = "   " + label
            text_ax.text(
                0.0,
                y,
                label,
                va="top",
                ha="left",
                fontsize=10,
                family="DejaVu Sans",
                fontweight="bold" if hit else "normal",
                color=HIT_COLOUR if hit else MISS_COLOUR,
                transform=text_ax.transAxes,
            )
            y -= len(wrapped) / total
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_text_to_image_grid(
    query_captions: Sequence[str],
    ranked_images: Sequence[Sequence],
    path: str,
    correct: Sequence | None = None,
    title: str | None = "Text → image retrieval",
    wrap: int = 28,
) -> str:
    """One row per query caption: the caption, then its ranked images.

    Correct images get a thick green frame and a check mark.

    Args:
        query_captions: list of str.
        ranked_images: per query, its images best first (each `(H, W, C)`,
            values in `[0, 255]`).
        path: str. PNG file to write.
        correct: optional, per query: the index of the correct image in its
            ranked list (int), a collection of indices, or None.
        title: optional str. Figure title.
        wrap: int. Characters per line before the caption wraps.

    Returns:
        The path written.

    Example:

    ```python
    images, captions, _ = keras_towers.datasets.make_shapes(3)
    keras_towers.evaluation.plot_text_to_image_grid(
        captions[:2], [images, images[::-1]], "t2i.png", correct=[0, 1]
    )
    ```
    """
    _check_rows(query_captions, ranked_images, correct, "images")
    k = max(len(r) for r in ranked_images)
    text_width = 0.1 * wrap + 0.4
    fig = _figure(
        text_width + 1.9 * k, 2.1 * len(query_captions) + (0.4 if title else 0)
    )
    grid = fig.add_gridspec(
        len(query_captions), k + 1, width_ratios=[text_width] + [1.9] * k
    )
    for row, (caption, images) in enumerate(
        zip(query_captions, ranked_images, strict=True)
    ):
        hits = _positions(None if correct is None else correct[row], images)
        text_ax = fig.add_subplot(grid[row, 0])
        text_ax.set_axis_off()
        # Right-aligned so the caption sits next to its images.
        text_ax.text(
            0.97,
            0.5,
            "\n".join(textwrap.wrap(str(caption), wrap)),
            va="center",
            ha="right",
            multialignment="left",
            fontsize=10,
            transform=text_ax.transAxes,
        )
        for rank, image in enumerate(images):
            ax = fig.add_subplot(grid[row, rank + 1])
            ax.imshow(_as_display_image(image), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            hit = rank in hits
            for spine in ax.spines.values():
                spine.set_edgecolor(HIT_COLOUR if hit else "#bbbbbb")
                spine.set_linewidth(5 if hit else 1)
            ax.set_title(
                f"{'✓ ' if hit else ''}{rank + 1}",
                fontsize=9,
                color=HIT_COLOUR if hit else MISS_COLOUR,
                fontweight="bold" if hit else "normal",
            )
    if title:
        fig.suptitle(title)
    return _save(fig, path)
