"""Procedurally drawn coloured shapes with compositional captions.

Unlimited, licence-free image-caption pairs for tests, guides and smoke
training: "a small red circle", or with `objects=2` two shapes and their
spatial relation, "a small red circle left of a large blue square".
Deterministic per seed.
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
# Two-object scenes: "<first> <relation> <second>", first object first.
RELATIONS = ("left of", "right of", "above", "below")
# Radii of two-object scenes as fractions of the half image each object gets.
_SCENE_SIZES = {"small": (0.18, 0.28), "large": (0.34, 0.46)}


def _check_objects(objects):
    if objects not in (1, 2) or isinstance(objects, bool):
        raise ValueError(f"`objects` must be 1 or 2. Received: objects={objects!r}")


def shape_class_names(objects: int = 1) -> list[str]:
    """The classes `make_shapes` labels with.

    Args:
        objects: int. 1: `colour shape` classes such as `"red circle"`
            (12). 2: `first relation second` classes such as
            `"red circle left of blue square"` (12 x 4 x 12 = 576), with the
            relation from `RELATIONS`.
    """
    _check_objects(objects)
    single = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    if objects == 1:
        return single
    return [f"{a} {r} {b}" for a in single for r in RELATIONS for b in single]


def _mask(shape, cy, cx, radius, image_size):
    yy, xx = np.mgrid[:image_size, :image_size]
    if shape == "square":
        return (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    # triangle pointing up
    return (yy <= cy + radius) & (abs(xx - cx) <= (yy - (cy - radius)) / 2)


def _draw(shape, colour, radius, rng, image_size):
    image = rng.integers(200, 256, (image_size, image_size, 3)).astype("uint8")
    cy, cx = rng.integers(radius, image_size - radius, 2)
    image[_mask(shape, cy, cx, radius, image_size)] = COLOURS[colour]
    return image


def _scene_radius(size, image_size, rng):
    # Each object owns half the image along the relation axis, so the radius
    # is a fraction of that half and the two shapes never overlap.
    cell = image_size // 2
    low, high = (int(round(f * cell)) for f in _SCENE_SIZES[size])
    high = min(high, (cell - 1) // 2)
    return int(rng.integers(low, max(low, high) + 1))


def _draw_scene(objects, relation, rng, image_size):
    """Draw two `(shape, colour, size)` objects; the first is left of, right
    of, above or below the second according to `relation`."""
    image = rng.integers(200, 256, (image_size, image_size, 3)).astype("uint8")
    cell = image_size // 2
    radii = [_scene_radius(size, image_size, rng) for _, _, size in objects]
    # Both objects sit on one line across the relation axis (jitter <= cell/8),
    # so the offset along the axis always dominates: a "left of" scene is
    # never also an "above" scene.
    line = int(rng.integers(max(radii), image_size - max(radii)))
    jitter = max(1, cell // 8)
    # The half (0: left/top, 1: right/bottom) the first object occupies.
    first_half = 0 if relation in ("left of", "above") else 1
    horizontal = relation in ("left of", "right of")
    for k, (obj, radius) in enumerate(zip(objects, radii, strict=True)):
        shape, colour, _ = obj
        half = first_half if k == 0 else 1 - first_half
        along = half * cell + int(rng.integers(radius, cell - radius))
        across = line + int(rng.integers(-jitter, jitter + 1))
        across = min(max(across, radius), image_size - 1 - radius)
        cy, cx = (across, along) if horizontal else (along, across)
        image[_mask(shape, cy, cx, radius, image_size)] = COLOURS[colour]
    return image


def make_shapes(n: int, seed: int = 0, image_size: int = 32, objects: int = 1):
    """Draw `n` images with captions.

    Args:
        n: int. Number of pairs.
        seed: int. Same seed, same data.
        image_size: int. Side of the square uint8 images.
        objects: int. 1 (default): one shape per image, captions such as
            `"a small red circle"`. 2: two shapes side by side or stacked,
            captions such as `"a small red circle left of a large blue
            square"`, the relation drawn uniformly from `RELATIONS`. Two-object
            scenes size shapes relative to the image, so use
            `image_size >= 48` for sizes that stay easy to tell apart.

    Returns:
        `(images, captions, labels)`: uint8 array `(n, S, S, 3)`, a list of
        captions, and integer labels indexing `shape_class_names(objects)`
        (size is not part of the class).

    Example:

    ```python
    images, captions, labels = keras_towers.datasets.make_shapes(8)
    images, captions, labels = keras_towers.datasets.make_shapes(
        8, image_size=64, objects=2
    )
    ```
    """
    if n < 0:
        raise ValueError(f"`n` must be >= 0. Received: n={n}")
    if image_size < 28:
        raise ValueError(f"`image_size` must be >= 28. Received: {image_size}")
    _check_objects(objects)
    if objects == 2:
        return _make_scenes(n, seed, image_size)
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


def _make_scenes(n, seed, image_size):
    rng = np.random.default_rng(seed)
    colours, sizes = list(COLOURS), list(_SCENE_SIZES)
    n_single = len(colours) * len(SHAPES)
    images = np.zeros((n, image_size, image_size, 3), "uint8")
    captions, labels = [], []
    for i in range(n):
        picks = []
        for _ in range(2):
            c, s = int(rng.integers(len(colours))), int(rng.integers(len(SHAPES)))
            picks.append((c, s, sizes[int(rng.integers(len(sizes)))]))
        r = int(rng.integers(len(RELATIONS)))
        objects = [(SHAPES[s], colours[c], size) for c, s, size in picks]
        images[i] = _draw_scene(objects, RELATIONS[r], rng, image_size)
        (shape_a, colour_a, size_a), (shape_b, colour_b, size_b) = objects
        captions.append(
            f"a {size_a} {colour_a} {shape_a} {RELATIONS[r]} "
            f"a {size_b} {colour_b} {shape_b}"
        )
        class_a = picks[0][0] * len(SHAPES) + picks[0][1]
        class_b = picks[1][0] * len(SHAPES) + picks[1][1]
        labels.append((class_a * len(RELATIONS) + r) * n_single + class_b)
    return images, captions, np.array(labels, "int32")
