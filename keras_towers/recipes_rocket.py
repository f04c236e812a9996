"""The improved CLIP recipe (clip-rocket) and its SSL add-ons, for
`keras-towers train`: models and their augmented-view trainers.

`keras_towers.recipes` registers them as `clip-improved`, `siamlip`,
`byolip`, `barlip` and `swalip`: `CLIPRocket` on the `clip` recipe's small
towers (from scratch) with `ROCKET_HEAD_HIDDEN_DIM`-wide h heads, trained on
a global view plus `ROCKET_VIEWS` augmented views of each modality, built
in `tf.data` per `(seed, epoch, index)` so `--resume` stays exact.

Example:

```python
model = keras_towers.recipes_rocket.build("siamlip", image_size=64)
image_views, text_views = keras_towers.recipes_rocket.views("rocket", 64)
```
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from keras_towers import augment
from keras_towers import feature_cache
from keras_towers import from_scratch
from keras_towers import training
from keras_towers.augment.views import IMAGES_AUG_KEY
from keras_towers.augment.views import TEXTS_AUG_KEY
from keras_towers.feature_cache import cache_locked_features
from keras_towers.models.rocket import CLIPRocket
from keras_towers.models.rocket_heads import FEATURES_AUG_KEYS
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY

#: Recipe name -> `CLIPRocket` add-on.
ROCKET_ADDONS = {
    "clip-improved": None,
    "siamlip": "siamlip",
    "byolip": "byolip",
    "barlip": "barlip",
    "swalip": "swalip",
}
#: The `keras_towers.from_scratch` config of the towers (the `clip` recipe's).
ROCKET_TOWERS = "small"
#: Hidden width of the h heads (the paper's 4096 would dwarf the 128-wide
#: small towers trained on a few thousand pairs).
ROCKET_HEAD_HIDDEN_DIM = 512
#: Augmented views per modality (the paper's `A = 2`).
ROCKET_VIEWS = 2
#: `--augment` choices: name -> (image presets, text presets), global first.
AUGMENTATIONS = {
    # clip-rocket: weakly augmented global view + SimCLR-style / EDA views.
    "rocket": (
        ["rocket-global"] + ROCKET_VIEWS * ["rocket-augmented"],
        ["rocket-global"] + ROCKET_VIEWS * ["rocket-augmented"],
    ),
    # Image augmentation only (the ablation's first step): clip-rocket's image
    # views, the captions unaugmented.
    "image": (
        ["rocket-global"] + ROCKET_VIEWS * ["rocket-augmented"],
        (1 + ROCKET_VIEWS) * ["none"],
    ),
    # Unaugmented global view; mild crop + flip views, stopword-removed captions.
    "light": (
        ["none"] + ROCKET_VIEWS * ["light"],
        ["none"] + ROCKET_VIEWS * ["rocket-global"],
    ),
    # The global pair alone: CL2L reduces to CLIP's InfoNCE (+ the add-on on it).
    "none": (["none"], ["none"]),
    # One view, augmented for icon-like data: mild crop, grayscale, inversion;
    # the caption in one of `augment.text.CAPTION_TEMPLATES` half the time.
    # Also a choice of `clip`, `siglip` and `three-towers`, which read one view.
    "icons": (["icons"], ["templated"]),
    # The same captions, images as they are: for a locked image tower whose
    # features are cached (`lit`).
    "captions": (["none"], ["templated"]),
}
DEFAULT_AUGMENT = "rocket"
#: CLI options `build` takes (stored in the model's config).
ROCKET_MODEL_OPTIONS = (
    "zero_shot_head",
    "ensemble_weight",
    "label_smoothing",
    "head_layers",
)
#: CLI options the trainer takes.
ROCKET_TRAINER_OPTIONS = ("augment",)


def views(augment_name: str | None, image_size: int) -> tuple[list, list]:
    """`(image_views, text_views)` of an `AUGMENTATIONS` entry at
    `image_size` (`None`: `DEFAULT_AUGMENT`)."""
    name = augment_name or DEFAULT_AUGMENT
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown augmentation {name!r}: one of {sorted(AUGMENTATIONS)} is "
            "expected."
        )
    image_presets, text_presets = AUGMENTATIONS[name]
    image_views = [
        augment.ImageAugment.from_preset(p, size=image_size) for p in image_presets
    ]
    text_views = [augment.TextAugment.from_preset(p) for p in text_presets]
    return image_views, text_views


def build(
    method: str,
    image_size: int = 64,
    zero_shot_head: str | None = None,
    ensemble_weight: float | None = None,
    label_smoothing: float | None = None,
    head_layers: int | None = None,
) -> CLIPRocket:
    """The `CLIPRocket` of recipe `method` (a key of `ROCKET_ADDONS`).

    `label_smoothing` (default: `CLIPRocket`'s, 0.1; 0 with SwALIP) and
    `head_layers` (default 3; 1 makes the h heads linear) are the
    ablation's switches."""
    if method not in ROCKET_ADDONS:
        raise ValueError(
            f"Unknown rocket recipe {method!r}: one of {sorted(ROCKET_ADDONS)}."
        )
    parts = from_scratch.build(ROCKET_TOWERS, image_size)
    return CLIPRocket(
        parts.image_tower,
        parts.text_tower,
        parts.preprocessor,
        head_hidden_dim=ROCKET_HEAD_HIDDEN_DIM,
        head_layers=3 if head_layers is None else head_layers,
        label_smoothing=label_smoothing,
        addon=ROCKET_ADDONS[method],
        zero_shot_head=zero_shot_head or "global",
        ensemble_weight=0.5 if ensemble_weight is None else float(ensemble_weight),
    )


def single_views(
    augment_name: str | None,
    image_size: int,
    method: str,
    locked_images: bool = False,
):
    """`views(augment_name)` for a model that reads one view: `(None, None)`
    for `None` (no augmentation), an error for a multi-view choice.

    With `locked_images` (a locked image tower's features are cached, so
    images cannot be augmented) the image view must be the identity and
    `None` is returned in its place: the captions alone are augmented."""
    if augment_name is None:
        return None, None
    image_views, text_views = views(augment_name, image_size)
    single = [n for n, (i, t) in sorted(AUGMENTATIONS.items()) if len(i) == len(t) == 1]
    identity = augment.ImageAugment.from_preset("none", size=image_size)
    if locked_images:
        single = [n for n in single if views(n, image_size)[0] == [identity]]
    if augment_name not in single:
        why = (
            "augments images, but its locked image tower's features are cached"
            if locked_images and len(image_views) == 1
            else "gives augmented views it does not read (it trains on one "
            "view of each pair)"
        )
        raise ValueError(
            f"--augment {augment_name} does not apply to --method {method}: it "
            f"{why}; choose one of {single}."
        )
    return (None if locked_images else image_views), text_views


def single_view_trainer(
    method: str, make_train: Callable, locked_images: bool = False
) -> Callable:
    """`make_train(data)`'s trainer, taking `augment` (`--augment`): `None`
    trains on the plain pairs, a single-view `AUGMENTATIONS`
    choice on one augmented view of each pair, drawn per `(seed, epoch,
    index)` at the trained image tower's size (`locked_images`: the captions
    alone, the images' features being cached)."""

    def trainer(data: str) -> Callable:
        train = make_train(data)

        def train_augmented(model, train_pairs, epochs: int, augment=None, **kwargs):
            image_views, text_views = single_views(
                augment, train_pairs.image_size, method, locked_images
            )
            if text_views is not None:
                kwargs.update(image_views=image_views, text_views=text_views)
            return train(model, train_pairs, epochs, **kwargs)

        return train_augmented

    return trainer


def check_views_for(model, augment_name: str | None) -> None:
    """Refuse view sets the model cannot train on (SwALIP without views)."""
    if augment_name == "none" and getattr(model, "addon", None) == "swalip":
        raise ValueError(
            "SwALIP needs augmented views: --augment none gives it none "
            f"(choose one of {sorted(set(AUGMENTATIONS) - {'none'})})."
        )


def views_trainer(data: str) -> Callable:
    """`training.train` on augmented views (`--augment`, default
    `DEFAULT_AUGMENT`); validation on the plain global pairs."""
    del data  # The views are built from the pairs in memory.

    def train(model, train_pairs, epochs: int, augment: str | None = None, **kwargs):
        check_views_for(model, augment)
        # The views keep the pairs' size (the size the model was built for).
        images = (
            train_pairs.images
            if isinstance(train_pairs, training.PairArrays)
            else train_pairs["images"]
        )
        image_views, text_views = views(augment, int(images.shape[1]))
        return training.train(
            model,
            train_pairs,
            epochs,
            image_views=image_views,
            text_views=text_views,
            **kwargs,
        )

    return train


# === Locked backbones: every epoch's views encoded once ===


def _epoch_views(pairs, image_views, text_views, seed: int, epoch: int) -> dict:
    """Every view of every pair for `epoch`, in pair order, as NumPy: the
    values `epoch_shuffled_view_dataset` gives pair `i` in that epoch."""
    arrays = {
        IMAGE_KEY: pairs.images,
        TEXT_KEY: pairs.texts.astype(str),
        training.INDEX_KEY: np.arange(len(pairs), dtype="int64"),
    }
    views = augment.views_map_fn(image_views, text_views, seed=seed, epoch=epoch)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    ds = ds.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    columns = {}
    for batch in ds.batch(256).as_numpy_iterator():
        for key, value in batch.items():
            columns.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in columns.items()}


def _locked_features(model, kind: str, raw, batch_size: int) -> np.ndarray:
    """The locked `kind` backbone's features of `raw` (images or captions)."""
    raw_key = IMAGE_KEY if kind == "image" else TEXT_KEY
    if kind == "text":
        raw = [t.decode() if isinstance(t, bytes) else str(t) for t in raw]
    cached = cache_locked_features(model, {raw_key: raw}, batch_size, towers=kind)
    key = f"{kind}_features"
    return np.concatenate(
        [b[key] for b in cached.batch(4096).as_numpy_iterator()]
    ).astype("float32")


def _pairs_digest(pairs) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(pairs.images).tobytes())
    for text in pairs.texts:
        digest.update(str(text).encode() + b"\0")
    return digest.hexdigest()


def _view_key(source_desc, view, slot, seed, epoch, pairs_sha256, count):
    """The cache key of one view slot's features: the locked backbone's
    `feature_cache.source_description` of the view's pixels or captions,
    identified by what determines them (the pairs, the view's config and
    slot, the seed and the epoch) instead of by hashing the augmented data."""
    identity = {"views": VIEW_CACHE_FORMAT, "view": view.get_config()}
    if not _is_identity(view):
        # A random view differs per slot, seed and epoch; the identity view
        # (the plain pairs) is one entry for all of them.
        identity.update(slot=slot, seed=int(seed), epoch=int(epoch))
    identity["pairs_sha256"] = pairs_sha256
    what = json.dumps(identity, sort_keys=True)
    fingerprint = hashlib.sha256(what.encode()).hexdigest()
    return feature_cache.data_key(source_desc, fingerprint, count)


def _is_identity(view) -> bool:
    """Whether `view` is the `"none"` preset (no randomness: the same output
    for every slot, seed and epoch)."""
    if isinstance(view, augment.ImageAugment):
        plain = augment.ImageAugment.from_preset("none", size=view.size)
    else:
        plain = augment.TextAugment.from_preset("none")
    return view.get_config() == plain.get_config()


#: Version of the view-feature cache keys (bump when the views change).
VIEW_CACHE_FORMAT = 1


def view_feature_arrays(
    model: CLIPRocket,
    pairs: training.PairArrays,
    image_views,
    text_views,
    seed: int,
    epochs: int,
    cache_dir: str | None = None,
    batch_size: int = 64,
    verbose: bool = True,
) -> training.EpochArrays:
    """The locked backbones' pooled features of every view of every pair,
    for each of `epochs` epochs: `model` trains on them exactly as on the
    raw views (`epoch_shuffled_view_dataset` with the same `seed`), without
    running the backbones again per variant or per resume.

    Both backbones of `model` must be locked (`lock_image="backbone"` /
    `lock_text="backbone"`, or locked towers without heads). The views of
    epoch `e` are a pure function of `(seed, e, index)`, so each view slot
    is encoded once per `cache_dir`, keyed on the backbone (weights, config,
    preprocessor), the pairs, the view's config and slot, the seed and the
    epoch: an ablation of several heads or losses over the same views pays
    for the backbones once, and a cached epoch is not even augmented.

    Returns:
        `training.EpochArrays` with `"image_features"`, `"text_features"`
        `(epochs, N, F)` (the global views) and, when there are augmented
        views, `"image_features_aug"`, `"text_features_aug"`
        `(epochs, N, A, F)`.
    """
    for kind in ("image", "text"):
        tower = getattr(model, f"{kind}_tower")
        if tower.locked_part is None:
            raise ValueError(
                f"view_feature_arrays needs a locked {kind} backbone; the model "
                f"trains its {kind} tower (train on the raw views instead)."
            )
    count = len(pairs)
    pairs_sha256 = _pairs_digest(pairs)
    # The backbones' weights are hashed once, not once per slot and epoch.
    source_descs = {
        kind: feature_cache.source_description(
            model, *feature_cache.select_sources(model, kind)
        )
        for kind in ("image", "text")
    }
    streams = {
        "image": (image_views, IMAGE_KEY, IMAGES_AUG_KEY),
        "text": (text_views, TEXT_KEY, TEXTS_AUG_KEY),
    }
    out = {}
    for epoch in range(epochs):
        start = time.perf_counter()
        features, missing, copies = {}, {}, {}
        first_missing = {}  # key -> the slot that computes it
        for kind, (view_list, _, _) in streams.items():
            for slot, view in enumerate(view_list):
                key, description = _view_key(
                    source_descs[kind], view, slot, seed, epoch, pairs_sha256, count
                )
                array = None
                if cache_dir is not None:
                    array = feature_cache.load_features(
                        cache_dir, f"{kind}_view_features", key, count
                    )
                if array is not None:
                    features[kind, slot] = array.astype("float32")
                elif key in first_missing:
                    # The same (deterministic) view as an earlier slot.
                    copies[kind, slot] = first_missing[key]
                else:
                    first_missing[key] = (kind, slot)
                    missing[kind, slot] = (key, description)
        if missing:
            views = _epoch_views(pairs, image_views, text_views, seed, epoch)
            for kind, (_, raw_key, aug_key) in streams.items():
                slots = [slot for k, slot in missing if k == kind]
                if not slots:
                    continue
                # One pass over the missing slots together (one compiled
                # forward function per modality and epoch).
                raw = np.concatenate(
                    [
                        views[raw_key] if slot == 0 else views[aug_key][:, slot - 1]
                        for slot in slots
                    ]
                )
                computed = _locked_features(model, kind, raw, batch_size)
                for i, slot in enumerate(slots):
                    features[kind, slot] = computed[i * count : (i + 1) * count]
            if cache_dir is not None:
                for (kind, slot), (key, description) in missing.items():
                    feature_cache.store_features(
                        cache_dir,
                        f"{kind}_view_features",
                        key,
                        description,
                        features[kind, slot],
                    )
        for slot_id, same in copies.items():
            features[slot_id] = features[same]
        for kind, (view_list, _, _) in streams.items():
            out.setdefault(f"{kind}_features", []).append(features[kind, 0])
            if len(view_list) > 1:
                out.setdefault(FEATURES_AUG_KEYS[kind], []).append(
                    np.stack(
                        [features[kind, a] for a in range(1, len(view_list))], axis=1
                    )
                )
        if verbose:
            print(
                f"views of epoch {epoch + 1}/{epochs}: {len(missing)} of "
                f"{len(image_views) + len(text_views)} view slots encoded (the rest "
                "cached or shared) "
                f"in {time.perf_counter() - start:.1f} s"
            )
    return training.EpochArrays({k: np.stack(v) for k, v in out.items()})
