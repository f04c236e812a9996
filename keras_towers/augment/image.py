"""Image augmentation for one view, inside `tf.data`, deterministic per seed.

`ImageAugment` is a serialisable config whose call maps a uint8 `(H, W, 3)`
image and an int64 `[2]` seed to a uint8 `(size, size, 3)` view:
random resized crop (bicubic), colour jitter (in a random order, applied with
a probability), grayscale, Gaussian blur, solarize and horizontal flip, in
the order of the SimCLR/BYOL pipelines that clip-rocket uses, and an
inversion (negative image) of our own, for line art and silhouettes that
evaluation sets show light-on-dark.

Why stateless TensorFlow ops and not Keras' random preprocessing layers:
the layers (`RandomColorJitter`, `RandomGrayscale`, `RandomGaussianBlur`,
`Solarization`, `RandomFlip`, ...) do run in `tf.data` on every backend,
but they draw from a `SeedGenerator` whose state advances with every call.
The numbers an example gets then depend on how many calls came before it
(the map's parallelism, the process: a resumed run restarts the state), and
`keras.random` refuses a per-example tensor seed. Keras also has no random
*resized* crop. Here every random number comes from `tf.random.stateless_*`
keyed by a seed derived from `(seed, epoch, index, view)`
(`keras_towers.augment.example_seed`), so a view is a pure function of
its inputs: the same pixels on jax, torch and tensorflow, after a resume, and
under any `num_parallel_calls`.

References:
    Fini et al., "Improved baselines for vision-language pre-training",
    TMLR 2023, https://arxiv.org/abs/2305.08675 (code: clip-rocket).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from keras_towers.augment import _checks
from keras_towers.augment.seeds import ALG
from keras_towers.augment.seeds import split_seed
from keras_towers.utils.registry import Registry

#: name -> keyword arguments of `ImageAugment` (everything but `size`).
IMAGE_PRESETS = Registry(
    "image augmentation preset",
    hint="Register one with `keras_towers.augment.IMAGE_PRESETS.add(name, kwargs)`.",
)
IMAGE_PRESETS.add("none", {"crop_scale": None})
# clip-rocket's global view: RandomResizedCrop(scale 0.5-1, bicubic) only.
IMAGE_PRESETS.add("rocket-global", {"crop_scale": (0.5, 1.0)})
# clip-rocket's augmented views (SimCLR-style, datasets.py).
IMAGE_PRESETS.add(
    "rocket-augmented",
    {
        "crop_scale": (0.08, 1.0),
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.4,
        "hue": 0.1,
        "jitter_p": 0.8,
        "grayscale_p": 0.2,
        "blur_sigma": (0.1, 2.0),
        "blur_p": 0.5,
        "solarize_p": 0.0,
        "flip_p": 0.5,
    },
)
# A mild crop and flip.
IMAGE_PRESETS.add("light", {"crop_scale": (0.5, 1.0), "flip_p": 0.5})
# Icons, emoji and clip art drawn dark-on-light: a mild crop, grayscale and
# inversion (so a grayscale icon also appears as a light-on-dark silhouette,
# the style of MNIST-like sets). No flip: flags, digits and text in icons are
# not mirror-symmetric.
IMAGE_PRESETS.add(
    "icons", {"crop_scale": (0.7, 1.0), "grayscale_p": 0.3, "invert_p": 0.3}
)
# ProtoCLIP's `protoclip-light-augmentation` (open_clip transform.py there).
IMAGE_PRESETS.add(
    "protoclip-light",
    {
        "crop_scale": (0.5, 1.0),
        "flip_p": 0.5,
        "brightness": 0.8,
        "contrast": 0.8,
        "saturation": 0.8,
        "hue": 0.2,
        "jitter_p": 0.2,
        "grayscale_p": 0.2,
        "blur_sigma": (0.1, 2.0),
        "blur_p": 0.2,
    },
)

INTERPOLATIONS = ("bicubic", "bilinear")
# ITU-R 601 luma, as torchvision's and TensorFlow's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# Independent seed slots, so enabling one op never changes another's draws.
_CROP, _JITTER_APPLY, _JITTER, _GRAY, _BLUR, _SOLARIZE, _FLIP, _INVERT = range(8)
_SLOTS = 8
_CROP_ATTEMPTS = 10


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform(
        shape, seed=seed, minval=minval, maxval=maxval, alg=ALG
    )


def _gray(x):
    luma = tf.reduce_sum(x * tf.constant(_LUMA, x.dtype), axis=-1, keepdims=True)
    return tf.tile(luma, [1, 1, 3])


def _blend(x, other, factor):
    return tf.clip_by_value(factor * x + (1.0 - factor) * other, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="keras_towers")
class ImageAugment:
    """One augmented image view, as a stateless function usable in `tf.data`.

    Calling it maps `(image, seed)` to a view: `image` is uint8 `(H, W, 3)`,
    `seed` an int64 `[2]` tensor (see `keras_towers.augment.example_seed`);
    the result is uint8 `(size, size, 3)`. The same seed gives the same
    pixels; the ops run in this order, each gated by its probability:

    1. random resized crop: an area fraction in `crop_scale` and an aspect
       ratio log-uniform in `crop_ratio` (10 attempts, then a centre crop of
       the clamped ratio, as torchvision), resized to `size` (bicubic,
       antialiased). With `crop_scale=None` the whole image is resized.
    2. colour jitter with probability `jitter_p`: brightness, contrast,
       saturation factors uniform in `[max(0, 1 - s), 1 + s]` and a hue shift
       uniform in `[-hue, hue]` (fraction of the colour circle), in a random
       order, with torchvision's definitions (contrast blends with the mean
       luma, saturation with the luma image).
    3. grayscale (luma in all three channels) with probability `grayscale_p`.
    4. Gaussian blur with `sigma` uniform in `blur_sigma` (pixels of the
       output), separable, kernel radius `ceil(3 * max sigma)`, symmetric
       padding, with probability `blur_p`.
    5. solarize (invert pixels >= 128) with probability `solarize_p`.
    6. horizontal flip with probability `flip_p`.
    7. inversion (every pixel `255 - x`) with probability `invert_p`.

    Args:
        size: int. Side of the square output.
        crop_scale: `(lo, hi)` with `0 < lo <= hi <= 1`, or `None` for no crop.
        crop_ratio: `(lo, hi)` aspect ratios (width / height), `0 < lo <= hi`.
        brightness: float >= 0.
        contrast: float >= 0.
        saturation: float >= 0.
        hue: float in `[0, 0.5]`.
        jitter_p: float in `[0, 1]`. Probability of the colour jitter.
        grayscale_p: float in `[0, 1]`.
        blur_sigma: `(lo, hi)` standard deviations in pixels, `0 < lo <= hi`.
        blur_p: float in `[0, 1]`.
        solarize_p: float in `[0, 1]`.
        flip_p: float in `[0, 1]`.
        invert_p: float in `[0, 1]`.
        interpolation: `"bicubic"` (default, as clip-rocket) or `"bilinear"`.

    Example:

    ```python
    augment = keras_towers.augment.ImageAugment.from_preset(
        "rocket-augmented", size=224
    )
    seed = keras_towers.augment.example_seed(0, epoch=0, index=5)
    view = augment(image, seed)  # uint8 (224, 224, 3)
    ```
    """

    def __init__(
        self,
        size: int,
        crop_scale: tuple[float, float] | None = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        jitter_p: float = 1.0,
        grayscale_p: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_p: float = 0.0,
        solarize_p: float = 0.0,
        flip_p: float = 0.0,
        invert_p: float = 0.0,
        interpolation: str = "bicubic",
    ):
        self.size = _checks.positive_int(size, "size")
        self.crop_scale = (
            None
            if crop_scale is None
            else _checks.value_range(crop_scale, "crop_scale", 0.0, 1.0)
        )
        self.crop_ratio = _checks.value_range(crop_ratio, "crop_ratio")
        self.brightness = _checks.non_negative(brightness, "brightness")
        self.contrast = _checks.non_negative(contrast, "contrast")
        self.saturation = _checks.non_negative(saturation, "saturation")
        self.hue = _checks.non_negative(hue, "hue", maximum=0.5)
        self.jitter_p = _checks.probability(jitter_p, "jitter_p")
        self.grayscale_p = _checks.probability(grayscale_p, "grayscale_p")
        self.blur_sigma = _checks.value_range(blur_sigma, "blur_sigma")
        self.blur_p = _checks.probability(blur_p, "blur_p")
        self.solarize_p = _checks.probability(solarize_p, "solarize_p")
        self.flip_p = _checks.probability(flip_p, "flip_p")
        self.invert_p = _checks.probability(invert_p, "invert_p")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {INTERPOLATIONS}. "
                f"Received: {interpolation!r}."
            )
        self.interpolation = interpolation

    @classmethod
    def from_preset(cls, name: str, size: int, **overrides) -> ImageAugment:
        """The preset `name` (`IMAGE_PRESETS.names()`) at output side `size`.

        `overrides` replace single arguments of the preset.
        """
        return cls(size=size, **{**IMAGE_PRESETS.get(name), **overrides})

    def get_config(self) -> dict:
        return {
            "size": self.size,
            "crop_scale": None if self.crop_scale is None else list(self.crop_scale),
            "crop_ratio": list(self.crop_ratio),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
            "jitter_p": self.jitter_p,
            "grayscale_p": self.grayscale_p,
            "blur_sigma": list(self.blur_sigma),
            "blur_p": self.blur_p,
            "solarize_p": self.solarize_p,
            "flip_p": self.flip_p,
            "invert_p": self.invert_p,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_config(cls, config: dict) -> ImageAugment:
        return cls(**config)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ImageAugment({args})"

    # --- the augmentation ---

    def __call__(self, image, seed) -> tf.Tensor:
        image = tf.convert_to_tensor(image)
        if image.dtype != tf.uint8 or image.shape.rank != 3:
            raise ValueError(
                "`image` must be a uint8 (H, W, 3) tensor. Received dtype "
                f"{image.dtype.name} and shape {image.shape}."
            )
        if image.shape[-1] is not None and image.shape[-1] != 3:
            raise ValueError(
                f"`image` must have 3 channels. Received shape {image.shape}."
            )
        seeds = split_seed(tf.cast(seed, tf.int64), _SLOTS)
        x = tf.cast(image, tf.float32) / 255.0
        x = self._resized_crop(x, seeds[_CROP])
        if self._jitters():
            x = self._maybe(
                x, self.jitter_p, seeds[_JITTER_APPLY], self._jitter, seeds[_JITTER]
            )
        x = self._maybe(x, self.grayscale_p, seeds[_GRAY], lambda x, _: _gray(x))
        x = self._maybe(x, self.blur_p, seeds[_BLUR], self._blur)
        x = self._maybe(x, self.solarize_p, seeds[_SOLARIZE], self._solarize)
        x = self._maybe(x, self.flip_p, seeds[_FLIP], lambda x, _: tf.reverse(x, [1]))
        x = self._maybe(x, self.invert_p, seeds[_INVERT], lambda x, _: 1.0 - x)
        x = tf.round(tf.clip_by_value(x * 255.0, 0.0, 255.0))
        return tf.ensure_shape(tf.cast(x, tf.uint8), [self.size, self.size, 3])

    def _maybe(self, x, p, seed, op, op_seed=None):
        """`op(x, seed)` with probability `p` (static when p is 0 or 1)."""
        if p == 0.0:
            return x
        sub = split_seed(seed, 2)
        op_seed = sub[1] if op_seed is None else op_seed
        if p == 1.0:
            return op(x, op_seed)
        return tf.cond(_uniform(sub[0]) < p, lambda: op(x, op_seed), lambda: x)

    def crop_box(self, height, width, seed) -> tuple[tf.Tensor, ...]:
        """The crop `(top, left, crop_height, crop_width)` for an image size."""
        h = tf.cast(height, tf.float32)
        w = tf.cast(width, tf.float32)
        lo, hi = self.crop_scale
        s = split_seed(seed, 4)
        area = h * w * _uniform(s[0], [_CROP_ATTEMPTS], lo, hi)
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = tf.exp(_uniform(s[1], [_CROP_ATTEMPTS], log_lo, log_hi))
        cw = tf.round(tf.sqrt(area * ratio))
        ch = tf.round(tf.sqrt(area / ratio))
        ok = (cw >= 1.0) & (cw <= w) & (ch >= 1.0) & (ch <= h)
        first = tf.argmax(tf.cast(ok, tf.int32))
        # Fallback (no attempt fits): the centre crop of the clamped ratio.
        image_ratio = w / h
        fw = tf.where(
            image_ratio > self.crop_ratio[1], tf.round(h * self.crop_ratio[1]), w
        )
        fh = tf.where(
            image_ratio < self.crop_ratio[0], tf.round(w / self.crop_ratio[0]), h
        )
        found = tf.reduce_any(ok)
        cw = tf.maximum(tf.where(found, cw[first], fw), 1.0)
        ch = tf.maximum(tf.where(found, ch[first], fh), 1.0)
        top = tf.where(
            found, tf.floor(_uniform(s[2]) * (h - ch + 1.0)), tf.floor((h - ch) / 2)
        )
        left = tf.where(
            found, tf.floor(_uniform(s[3]) * (w - cw + 1.0)), tf.floor((w - cw) / 2)
        )
        return tuple(tf.cast(v, tf.int32) for v in (top, left, ch, cw))

    def _resized_crop(self, x, seed):
        if self.crop_scale is not None:
            shape = tf.shape(x)
            top, left, ch, cw = self.crop_box(shape[0], shape[1], seed)
            x = tf.slice(x, [top, left, 0], [ch, cw, 3])
        return tf.image.resize(
            x, [self.size, self.size], method=self.interpolation, antialias=True
        )

    def _jitters(self) -> bool:
        return self.jitter_p > 0 and any(
            (self.brightness, self.contrast, self.saturation, self.hue)
        )

    def _jitter(self, x, seed):
        s = split_seed(seed, 5)

        def factor(strength, slot):
            return _uniform(s[slot], (), max(0.0, 1.0 - strength), 1.0 + strength)

        ops = []
        if self.brightness:
            b = factor(self.brightness, 0)
            ops.append(lambda x: tf.clip_by_value(x * b, 0.0, 1.0))
        if self.contrast:
            c = factor(self.contrast, 1)
            ops.append(lambda x: _blend(x, tf.reduce_mean(_gray(x)), c))
        if self.saturation:
            sat = factor(self.saturation, 2)
            ops.append(lambda x: _blend(x, _gray(x), sat))
        if self.hue:
            delta = _uniform(s[3], (), -self.hue, self.hue)
            ops.append(lambda x: tf.image.adjust_hue(x, delta))
        # torchvision's ColorJitter applies its ops in a random order. One
        # switch in a loop keeps the graph small (tracing and start-up time).
        order = tf.argsort(_uniform(s[4], [len(ops)]))

        def body(step, x):
            branches = [lambda op=op: op(x) for op in ops]
            return step + 1, tf.switch_case(order[step], branches)

        _, x = tf.while_loop(lambda step, _: step < len(ops), body, [tf.constant(0), x])
        return x

    def _blur(self, x, seed):
        radius = min(math.ceil(3.0 * self.blur_sigma[1]), self.size - 1)
        if radius < 1:
            return x
        sigma = _uniform(seed, (), self.blur_sigma[0], self.blur_sigma[1])
        taps = tf.range(-radius, radius + 1, dtype=tf.float32)
        kernel = tf.exp(-0.5 * tf.square(taps / sigma))
        kernel = kernel / tf.reduce_sum(kernel)
        pads = [[radius, radius], [radius, radius], [0, 0]]
        y = tf.pad(x, pads, mode="SYMMETRIC")[None]
        k = tf.tile(kernel[:, None, None, None], [1, 1, 3, 1])
        y = tf.nn.depthwise_conv2d(y, k, [1, 1, 1, 1], "VALID")
        y = tf.nn.depthwise_conv2d(
            y, tf.transpose(k, [1, 0, 2, 3]), [1, 1, 1, 1], "VALID"
        )
        return y[0]

    def _solarize(self, x, _):
        return tf.where(x * 255.0 >= 127.5, 1.0 - x, x)
