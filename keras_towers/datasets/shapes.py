"""Procedurally drawn coloured shapes with compositional captions.

Unlimited, licence-free image-caption pairs for tests, guides and smoke
training: "a red circle", "a small blue square", ... Deterministic per seed.
"""

from __future__ import annotations

import numpy as np

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
}
SHAPES = ("square", "circle", "triangle")
SIZES = {"small": (4, 7), "large": (9, 13)}


def shape_class_names() -> list[str]:
    """The `colour shape` classes, e.g. `"red circle"`."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def _draw(shape, colour, radius, rng, image_size):
    image = rng.integers(200, 256, (image_size, image_size, 3)).astype("uint8")
    cy, cx = rng.integers(radius, image_size - radius, 2)
    yy, xx = np.mgrid[:image_size, :image_size]
    if shape == "square":
        mask = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
    elif shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    else:  # triangle pointing up
        mask = (yy <= cy + radius) & (abs(xx - cx) <= (yy - (cy - radius)) / 2)
    image[mask] = COLOURS[colour]
    return image


def make_shapes(n: int, seed: int = 0, image_size: int = 32):
    """Draw `n` images with captions.

    Args:
        n: int. Number of pairs.
        seed: int. Same seed, same data.
        image_size: int. Side of the square uint8 images.

    Returns:
        `(images, captions, labels)`: uint8 array `(n, S, S, 3)`, a list of
        captions such as `"a small red circle"`, and integer labels indexing
        `shape_class_names()` (size is not part of the class).

    Example:

    ```python
    images, captions, labels = keras_towers.datasets.make_shapes(8)
    ```
    """
    if n < 0:
        raise ValueError(f"`n` must be >= 0. Received: n={n}")
    if image_size < 28:
        raise ValueError(f"`image_size` must be >= 28. Received: {image_size}")
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    images = np.zeros((n, image_size, image_size, 3), "uint8")
    captions, labels = [], []
    for i in range(n):
        c, s = rng.integers(len(colours)), rng.integers(len(SHAPES))
        size = list(SIZES)[rng.integers(len(SIZES))]
        radius = int(rng.integers(*SIZES[size]))
        images[i] = _draw(SHAPES[s], colours[c], radius, rng, image_size)
        captions.append(f"a {size} {colours[c]} {SHAPES[s]}")
        labels.append(int(c * len(SHAPES) + s))
    return images, captions, np.array(labels, "int32")
