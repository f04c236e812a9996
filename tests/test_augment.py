"""Image augmentation and multi-view elements inside tf.data (keras_towers.augment).

Everything runs in TensorFlow (tf.data), so the pixels are the same on every
backend; each backend's run checks determinism, each op in isolation, and
that `Dataset.map` gives what an eager call gives.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_towers import augment
from keras_towers.augment import ImageAugment

# === Helpers ===


def random_image(h=32, w=32, seed=0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (h, w, 3)), tf.uint8)


def seed_of(index=0, epoch=0, seed=0, view=0):
    return augment.example_seed(
        seed, epoch, index, stream=augment.IMAGE_STREAM, view=view
    )


def identity_geometry(**kwargs) -> ImageAugment:
    """No crop and no resize on a 32x32 image: only the op under test acts."""
    return ImageAugment(size=32, crop_scale=None, **kwargs)


# === Config ===


@pytest.mark.parametrize("name", augment.IMAGE_PRESETS.names())
def test_presets_round_trip_config_and_keras_serialization(name):
    aug = ImageAugment.from_preset(name, size=24)
    assert ImageAugment.from_config(aug.get_config()) == aug
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(aug)
    )
    assert restored == aug
    out = aug(random_image(40, 28), seed_of())
    assert out.shape == (24, 24, 3) and out.dtype == tf.uint8


def test_rocket_presets_match_clip_rocket():
    g = ImageAugment.from_preset("rocket-global", size=224)
    assert g.crop_scale == (0.5, 1.0) and g.flip_p == 0 and not g._jitters()
    assert g.grayscale_p == g.blur_p == g.solarize_p == 0
    a = ImageAugment.from_preset("rocket-augmented", size=224)
    assert a.crop_scale == (0.08, 1.0)
    assert (a.brightness, a.contrast, a.saturation, a.hue) == (0.4, 0.4, 0.4, 0.1)
    assert (a.jitter_p, a.grayscale_p, a.blur_p, a.solarize_p, a.flip_p) == (
        0.8,
        0.2,
        0.5,
        0.0,
        0.5,
    )
    assert a.blur_sigma == (0.1, 2.0) and a.interpolation == "bicubic"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
        ({"crop_scale": (0.9, 0.5)}, "crop_scale"),
        ({"crop_scale": 0.5}, "crop_scale"),
        ({"crop_ratio": (0.0, 1.0)}, "crop_ratio"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"grayscale_p": -0.1}, "grayscale_p"),
        ({"jitter_p": "often"}, "jitter_p"),
        ({"hue": 0.7}, "hue"),
        ({"brightness": -1}, "brightness"),
        ({"blur_sigma": (0.0, 2.0)}, "blur_sigma"),
        ({"size": 0}, "size"),
        ({"interpolation": "lanczos"}, "interpolation"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ImageAugment(**{"size": 8, **kwargs})


def test_bad_image_and_unknown_preset():
    aug = ImageAugment.from_preset("light", size=8)
    with pytest.raises(ValueError, match="uint8"):
        aug(tf.zeros([8, 8, 3], tf.float32), seed_of())
    with pytest.raises(ValueError, match="rocket-augmented"):
        ImageAugment.from_preset("rocket", size=8)


# === Determinism ===


def test_same_seed_same_pixels_other_seed_epoch_index_differ():
    aug = ImageAugment.from_preset("rocket-augmented", size=24)
    image = random_image(40, 36)
    first = aug(image, seed_of(index=3, epoch=1)).numpy()
    tf.random.set_seed(1234)  # global RNG state must not matter
    np.testing.assert_array_equal(first, aug(image, seed_of(index=3, epoch=1)).numpy())
    for other in (
        seed_of(index=4, epoch=1),
        seed_of(index=3, epoch=2),
        seed_of(index=3, epoch=1, seed=1),
        seed_of(index=3, epoch=1, view=1),
    ):
        assert not np.array_equal(first, aug(image, other).numpy())


def test_example_seed_streams_differ():
    seeds = {
        tuple(augment.example_seed(0, 0, 0, stream=s, view=v).numpy())
        for s in (1, 2)
        for v in (0, 1, 2)
    }
    assert len(seeds) == 6


# === Each op in isolation ===


def test_full_crop_of_square_image_is_a_plain_resize():
    image = random_image(32, 32)
    full = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    same = ImageAugment(size=32, **full)(image, seed_of())
    np.testing.assert_array_equal(same.numpy(), image.numpy())
    small = ImageAugment(size=16, **full)(image, seed_of())
    expected = tf.image.resize(
        tf.cast(image, tf.float32), [16, 16], method="bicubic", antialias=True
    )
    expected = tf.cast(tf.round(tf.clip_by_value(expected, 0, 255)), tf.uint8)
    np.testing.assert_array_equal(small.numpy(), expected.numpy())


def test_crop_boxes_respect_scale_ratio_and_bounds():
    aug = ImageAugment(size=8, crop_scale=(0.2, 0.6), crop_ratio=(0.5, 2.0))
    h, w = 90, 120
    for i in range(30):
        top, left, ch, cw = (int(v) for v in aug.crop_box(h, w, seed_of(index=i)))
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        # Rounding the sides moves the area and ratio by a pixel at most.
        assert 0.2 * 0.95 <= ch * cw / (h * w) <= 0.6 * 1.05
        assert 0.5 * 0.95 <= cw / ch <= 2.0 * 1.05


def test_crop_falls_back_to_centre_crop_of_clamped_ratio():
    # A 4x64 strip: no crop of ratio <= 4/3 and scale >= 0.9 fits.
    aug = ImageAugment(size=4, crop_scale=(0.9, 1.0))
    box = [int(v) for v in aug.crop_box(4, 64, seed_of())]
    assert box == [0, (64 - 5) // 2, 4, 5]  # width round(4 * 4/3) = 5


def test_flip_p1_mirrors_and_p0_does_not():
    image = random_image()
    flipped = identity_geometry(flip_p=1.0)(image, seed_of())
    np.testing.assert_array_equal(flipped.numpy(), image.numpy()[:, ::-1])
    kept = identity_geometry(flip_p=0.0)(image, seed_of())
    np.testing.assert_array_equal(kept.numpy(), image.numpy())


def test_probability_gates_depend_on_the_seed():
    image = random_image()
    aug = identity_geometry(flip_p=0.5)
    flips = [
        bool(
            np.array_equal(aug(image, seed_of(index=i)).numpy(), image.numpy()[:, ::-1])
        )
        for i in range(16)
    ]
    assert 0 < sum(flips) < 16


def test_grayscale_p1_gives_equal_channels_of_luma():
    image = random_image()
    gray = identity_geometry(grayscale_p=1.0)(image, seed_of()).numpy().astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    luma = image.numpy().astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray[..., 0] - luma).max() <= 1


def test_solarize_p1_inverts_bright_pixels():
    image = random_image().numpy()
    out = identity_geometry(solarize_p=1.0)(image, seed_of()).numpy()
    expected = np.where(image >= 128, 255 - image, image)
    np.testing.assert_array_equal(out, expected)


def test_invert_p1_gives_the_negative_and_leaves_other_draws_alone():
    image = random_image().numpy()
    out = identity_geometry(invert_p=1.0)(image, seed_of()).numpy()
    np.testing.assert_array_equal(out, 255 - image)
    # Its own seed slot: adding inversion keeps the crop of every example.
    crop = ImageAugment(size=16, crop_scale=(0.3, 0.6))
    both = ImageAugment(size=16, crop_scale=(0.3, 0.6), invert_p=1.0)
    for index in range(3):
        np.testing.assert_array_equal(
            both(image, seed_of(index)).numpy(),
            255 - crop(image, seed_of(index)).numpy(),
        )


def test_blur_keeps_flat_images_and_smooths_noise():
    flat = tf.fill([32, 32, 3], tf.constant(77, tf.uint8))
    aug = identity_geometry(blur_p=1.0, blur_sigma=(1.5, 2.0))
    np.testing.assert_array_equal(aug(flat, seed_of()).numpy(), flat.numpy())
    noise = random_image()
    blurred = aug(noise, seed_of()).numpy().astype(float)
    assert blurred.std() < 0.5 * noise.numpy().astype(float).std()
    assert abs(blurred.mean() - noise.numpy().mean()) < 3


def test_brightness_scales_every_pixel_by_one_factor():
    image = tf.constant(
        np.tile(np.arange(40, 104, 2, dtype=np.uint8), (32, 1))[..., None].repeat(3, -1)
    )
    out = identity_geometry(brightness=0.4, jitter_p=1.0)(image, seed_of()).numpy()
    ratio = out.astype(float) / image.numpy().astype(float)
    assert 0.6 - 0.02 <= ratio.mean() <= 1.4 + 0.02 and ratio.std() < 0.02
    assert not np.array_equal(out, image.numpy())


def test_saturation_and_hue_leave_gray_images_gray():
    gray = tf.constant(
        np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))[..., None].repeat(3, -1)
    )
    aug = identity_geometry(saturation=0.8, hue=0.3, jitter_p=1.0)
    out = aug(gray, seed_of()).numpy().astype(int)
    assert np.abs(out - gray.numpy()).max() <= 1


def test_contrast_keeps_mean_luma_and_changes_spread():
    image = random_image()
    aug = identity_geometry(contrast=0.4, jitter_p=1.0)
    outs = [aug(image, seed_of(index=i)).numpy().astype(float) for i in range(4)]
    # Values stay in [0, 255], so the blend towards the mean keeps it (up to clipping).
    for out in outs:
        assert abs(out.mean() - image.numpy().mean()) < 6
    assert len({round(o.std(), 3) for o in outs}) > 1


def test_colour_jitter_applies_with_its_probability():
    image = random_image()
    aug = identity_geometry(brightness=0.4, saturation=0.4, hue=0.1, jitter_p=0.5)
    outs = [aug(image, seed_of(index=i)).numpy() for i in range(12)]
    unchanged = sum(np.array_equal(o, image.numpy()) for o in outs)
    assert 0 < unchanged < 12
    assert len({o.tobytes() for o in outs}) == 12 - unchanged + 1


# === Multi-view elements and tf.data ===


def views_config():
    image_views = [ImageAugment.from_preset("rocket-global", size=16)] + 2 * [
        ImageAugment.from_preset("rocket-augmented", size=12)
    ]
    text_views = [augment.TextAugment.from_preset("rocket-global")] + 2 * [
        augment.TextAugment.from_preset("rocket-augmented")
    ]
    return image_views, text_views


def pairs_dataset(n=2):
    images = np.stack([random_image(30, 26, seed=i).numpy() for i in range(n)])
    texts = [
        "a red car parked on the street",
        "two dogs playing with a ball in the park",
        "the old man is reading a book",
    ][:n]
    return tf.data.Dataset.from_tensor_slices(
        {"images": images, "texts": texts, "index": np.arange(n, dtype=np.int64)}
    )


def test_make_views_keys_shapes_and_views_differ():
    image_views, text_views = views_config()
    element = next(iter(pairs_dataset(1)))
    out = augment.make_views(
        element["images"], element["texts"], 0, 0, 0, image_views, text_views
    )
    assert sorted(out) == ["images", "images_aug", "texts", "texts_aug"]
    assert out["images"].shape == (16, 16, 3) and out["images"].dtype == tf.uint8
    assert out["images_aug"].shape == (2, 12, 12, 3)
    assert out["texts"].shape == () and out["texts_aug"].shape == (2,)
    a, b = out["images_aug"].numpy()
    assert not np.array_equal(a, b)  # the two augmented views have their own seeds


def test_dataset_map_matches_eager_and_is_repeatable():
    image_views, text_views = views_config()
    epoch = tf.Variable(0, dtype=tf.int64)
    fn = augment.views_map_fn(image_views, text_views, seed=5, epoch=epoch)
    ds = pairs_dataset().map(fn, num_parallel_calls=2, deterministic=False)

    def collect():
        return sorted(
            (
                int(e["index"]),
                e["images"].numpy().tobytes(),
                e["images_aug"].numpy().tobytes(),
                e["texts"].numpy(),
                tuple(e["texts_aug"].numpy()),
            )
            for e in ds
        )

    first = collect()
    assert collect() == first
    eager = [
        augment.make_views(
            e["images"], e["texts"], e["index"], 5, 0, image_views, text_views
        )
        for e in pairs_dataset()
    ]
    for (_, img, img_aug, txt, txt_aug), e in zip(first, eager, strict=True):
        assert img == e["images"].numpy().tobytes()
        assert img_aug == e["images_aug"].numpy().tobytes()
        assert txt == e["texts"].numpy() and txt_aug == tuple(e["texts_aug"].numpy())
    epoch.assign(1)  # a callback sets the epoch; the next iterator reads it
    second = collect()
    assert all(a[2] != b[2] for a, b in zip(first, second, strict=True))


def test_make_views_rejects_bad_views_and_mixed_sizes():
    image = random_image(16, 16)
    _, text_views = views_config()
    with pytest.raises(ValueError, match="image_views"):
        augment.make_views(image, "x", 0, 0, 0, [], text_views)
    mixed = [ImageAugment(size=8)] + [ImageAugment(size=8), ImageAugment(size=6)]
    with pytest.raises(ValueError, match="one `size`"):
        augment.make_views(image, "x", 0, 0, 0, mixed, text_views)
    with pytest.raises(ValueError, match="'index'"):
        augment.views_map_fn(mixed[:1], text_views[:1], 0, 0)(
            {"images": image, "texts": tf.constant("x")}
        )
