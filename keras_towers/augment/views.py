"""Multi-view dataset elements: one global view plus augmented views.

Keys of the element `make_views` returns (documented contract for models):

- `"images"`: uint8 `(S, S, 3)`, the global image view (`image_views[0]`);
- `"images_aug"`: uint8 `(A, S', S', 3)`, the augmented image views
  (`image_views[1:]`, all of one output size); absent when `A == 0`;
- `"texts"`: string scalar, the global caption view (`text_views[0]`);
- `"texts_aug"`: string `(A_t,)`, the augmented captions
  (`text_views[1:]`); absent when `A_t == 0`.

View `v` of modality `m` of example `index` in `epoch` is seeded by
`example_seed(seed, epoch, index, stream=m, view=v)`: pure, so the batches
of an epoch are the same on every backend and after a resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_towers.augment.image import ImageAugment
from keras_towers.augment.seeds import IMAGE_STREAM
from keras_towers.augment.seeds import TEXT_STREAM
from keras_towers.augment.seeds import example_seed
from keras_towers.augment.text import TextAugment

IMAGE_KEY = "images"
TEXT_KEY = "texts"
IMAGES_AUG_KEY = "images_aug"
TEXTS_AUG_KEY = "texts_aug"


def _check_views(views, cls, name):
    views = list(views)
    if not views or not all(isinstance(v, cls) for v in views):
        raise ValueError(
            f"`{name}` must be a non-empty list of `{cls.__name__}` (the first "
            f"is the global view). Received: {views!r}."
        )
    return views


def make_views(
    image,
    caption,
    index,
    seed,
    epoch,
    image_views: Sequence[ImageAugment],
    text_views: Sequence[TextAugment],
) -> dict[str, tf.Tensor]:
    """The views of one `(image, caption)` pair, usable inside `Dataset.map`.

    Args:
        image: uint8 `(H, W, 3)` tensor.
        caption: string scalar tensor.
        index: int scalar. The example's index in the dataset (stable across
            epochs and resumes).
        seed: int. The run's seed.
        epoch: int, scalar tensor or int64 `tf.Variable` set by a callback
            (as `keras_towers.utils.epochs`).
        image_views: `ImageAugment`s; the first is the global view. `None`:
            captions only (`image` is ignored and may be `None`, e.g. where
            a locked image tower's features are cached).
        text_views: `TextAugment`s; the first is the global view.

    Returns:
        A dict with `"images"` (unless `image_views` is `None`), `"texts"`
        and, for more than one view, `"images_aug"` and `"texts_aug"` (see
        the module docstring).

    Example:

    ```python
    from keras_towers import augment
    views = augment.make_views(
        image, "a red car", index=3, seed=0, epoch=0,
        image_views=[augment.ImageAugment.from_preset("rocket-global", size=64)]
        + 2 * [augment.ImageAugment.from_preset("rocket-augmented", size=64)],
        text_views=[augment.TextAugment.from_preset("rocket-global")]
        + 2 * [augment.TextAugment.from_preset("rocket-augmented")],
    )
    ```
    """
    if image_views is not None:
        image_views = _check_views(image_views, ImageAugment, "image_views")
    text_views = _check_views(text_views, TextAugment, "text_views")
    sizes = {v.size for v in (image_views or [])[1:]}
    if len(sizes) > 1:
        raise ValueError(
            "Augmented image views are stacked, so they need one `size`. "
            f"Received sizes {sorted(sizes)}."
        )
    if isinstance(epoch, tf.Variable):
        epoch = epoch.read_value()
    caption = tf.convert_to_tensor(caption, tf.string)

    def seed_of(stream, view):
        return example_seed(seed, epoch, index, stream=stream, view=view)

    images = [
        v(image, seed_of(IMAGE_STREAM, i)) for i, v in enumerate(image_views or [])
    ]
    texts = [v(caption, seed_of(TEXT_STREAM, i)) for i, v in enumerate(text_views)]
    out = {TEXT_KEY: texts[0]}
    if images:
        out[IMAGE_KEY] = images[0]
    if len(images) > 1:
        out[IMAGES_AUG_KEY] = tf.stack(images[1:])
    if len(texts) > 1:
        out[TEXTS_AUG_KEY] = tf.stack(texts[1:])
    return out


def views_map_fn(
    image_views: Sequence[ImageAugment],
    text_views: Sequence[TextAugment],
    seed: int,
    epoch,
    index_key: str = "index",
):
    """A `Dataset.map` function turning pair dicts into multi-view dicts.

    The input element is a dict with `"images"` (uint8 `(H, W, 3)`; not
    needed when `image_views` is `None`), `"texts"` (string) and `index_key`
    (int, the example's index); other keys are kept. The output replaces `"images"` / `"texts"` with the
    global views and adds `"images_aug"` / `"texts_aug"` (see `make_views`).

    Example:

    ```python
    ds = ds.enumerate().map(lambda i, x: {**x, "index": i})
    ds = ds.map(augment.views_map_fn(image_views, text_views, seed=0, epoch=epoch))
    ```
    """
    if image_views is not None:
        image_views = _check_views(image_views, ImageAugment, "image_views")
    text_views = _check_views(text_views, TextAugment, "text_views")
    required = (TEXT_KEY, index_key) + ((IMAGE_KEY,) if image_views else ())

    def fn(element):
        for key in required:
            if key not in element:
                raise ValueError(
                    f"Each element needs the key {key!r}. Received keys "
                    f"{sorted(element)}."
                )
        views = make_views(
            element.get(IMAGE_KEY),
            element[TEXT_KEY],
            element[index_key],
            seed,
            epoch,
            image_views,
            text_views,
        )
        return {**element, **views}

    return fn
