"""open_clip's inference image transform, reproduced by `OpenCLIPImageConverter`.

Pixels are compared with `open_clip.image_transform(size, is_train=False,
...)` on PNGs (tests/open_clip_reference.py, one subprocess for the module)
for each resize mode and both interpolations. Resampling reproduces PIL
(antialiased separable passes, Pillow >= 13's pass order, 8-bit rounding
after each pass); what remains is rounding ties that PIL's fixed point breaks
differently: at most one grey level (1/255/std in normalised units), on
<= 0.1% of the values with bicubic and a few % with bilinear, whose
weights are more often exact halves. Measured here, per image: bicubic at
most 0.1%, bilinear at most 4.1% of the values. Plain TensorFlow resizing (no
8-bit passes) is off on most values, so the bound discriminates.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_towers.converters.open_clip.image_converter import OPENAI_MEAN
from keras_towers.converters.open_clip.image_converter import OPENAI_STD
from keras_towers.converters.open_clip.image_converter import OpenCLIPImageConverter
from keras_towers.converters.open_clip.image_converter import convert_preprocess_config
from keras_towers.converters.open_clip.image_converter import load_image_converter
from keras_towers.preprocessing import ContrastivePreprocessor
from tests.open_clip_reference import run_reference

# Tokenisation and image conversion run in TensorFlow (tf.data and eager TF
# ops) whatever the Keras backend, so one backend checks them;
# tests/test_open_clip.py runs the loaded models on all three.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="backend-independent (TensorFlow preprocessing): checked on torch",
)

SIZE = 32
# (height, width): non-square both ways, smaller and larger than SIZE, one
# square, one tall enough for Pillow to resample vertically first.
SHAPES = [(48, 67), (67, 48), (20, 27), (27, 13), (45, 32), (32, 32), (100, 40)]
CFGS = [
    {"resize_mode": mode, "interpolation": interpolation}
    for mode, interpolation in itertools.product(
        ["shortest", "squash", "longest"], ["bicubic", "bilinear"]
    )
]
CFGS.append(
    {
        "resize_mode": "longest",
        "interpolation": "random",
        "fill_color": 128,
        "mean": 0.5,
        "std": [0.25, 0.5, 0.2],
    }
)
# Fraction of values allowed one grey level off (see the module doc).
TIE_FRACTION = {"bicubic": 0.01, "random": 0.01, "bilinear": 0.06}


def _images():
    rng = np.random.default_rng(0)
    images = []
    for h, w in SHAPES:
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack(
            [np.sin(xx / 5 + c) * np.cos(yy / 7 - c) for c in range(3)], -1
        )
        noisy = smooth * 100 + 128 + rng.normal(0, 30, (h, w, 3))
        images.append(np.clip(noisy, 0, 255).astype("uint8"))
    return images


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip_preprocess")
    images = _images()
    paths = []
    for i, image in enumerate(images):
        paths.append(str(root / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    job = {"preprocess": {"images": paths, "cfgs": [{"size": SIZE, **c} for c in CFGS]}}
    results = run_reference(job, root)
    return images, results


def _theirs(results, c, i):
    return results[f"preprocess/{c}/{i}"].transpose(1, 2, 0)


@pytest.mark.parametrize(
    "c", range(len(CFGS)), ids=lambda c: "-".join(map(str, CFGS[c].values()))
)
def test_pixels_match_open_clip(reference, c):
    images, results = reference
    cfg = CFGS[c]
    converter = load_image_converter(cfg, SIZE)
    grey_level = np.asarray(converter.scale)  # 1/255/std
    worst = 0.0
    for i, image in enumerate(images):
        ours = keras.ops.convert_to_numpy(converter(image.astype("float32")))
        theirs = _theirs(results, c, i)
        assert ours.shape == theirs.shape == (SIZE, SIZE, 3)
        diff = np.abs(ours - theirs)
        assert (diff <= grey_level + 1e-5).all(), SHAPES[i]
        off = (diff > 1e-5).mean()
        assert off <= TIE_FRACTION[cfg["interpolation"]], (SHAPES[i], off)
        worst = max(worst, off)
    print(f"{cfg}: at most {worst:.2%} of values one grey level off")


def test_bound_rejects_plain_tensorflow_resizing(reference):
    images, results = reference
    converter = load_image_converter(CFGS[0], SIZE)
    plain = OpenCLIPImageConverter.from_config(
        {**converter.get_config(), "round_to_uint8": False}
    )
    grey_level = np.asarray(converter.scale)
    off = [
        np.abs(
            keras.ops.convert_to_numpy(plain(image.astype("float32")))
            - _theirs(results, 0, i)
        )
        > grey_level / 2
        for i, image in enumerate(images[:2])
    ]
    assert np.mean(off) > TIE_FRACTION["bicubic"]


def test_preprocessor_and_tf_data_keep_the_pixels(reference):
    images, results = reference
    c = len(CFGS) - 1  # longest, padded with fill_color
    converter = load_image_converter(CFGS[c], SIZE)
    preprocessor = ContrastivePreprocessor(image_converter=converter)
    assert preprocessor.framing == "pad"
    image = images[0]
    eager = keras.ops.convert_to_numpy(preprocessor({"images": image[None]})["images"])
    ds = tf.data.Dataset.from_tensors(image[None]).map(
        lambda x: preprocessor({"images": x})["images"]
    )
    np.testing.assert_allclose(next(iter(ds)).numpy(), eager, atol=1e-6)
    theirs = _theirs(results, c, 0)
    assert np.abs(eager[0] - theirs).max() <= np.max(converter.scale) + 1e-5


def test_defaults_are_open_clip_s():
    kwargs = convert_preprocess_config({}, 224)
    assert kwargs["resize_mode"] == "shortest"
    assert kwargs["interpolation"] == "bicubic"
    assert kwargs["image_size"] == (224, 224)
    np.testing.assert_allclose(kwargs["scale"], [1 / 255 / s for s in OPENAI_STD])
    offset = [-m / s for m, s in zip(OPENAI_MEAN, OPENAI_STD, strict=True)]
    np.testing.assert_allclose(kwargs["offset"], offset)
    # None means the default, like open_clip; a falsy mean too.
    assert (
        convert_preprocess_config(
            {"resize_mode": None, "mean": 0, "fill_color": None}, 224
        )
        == kwargs
    )
    # open_clip uses the model's image size whatever preprocess_cfg says.
    with pytest.warns(UserWarning, match="size=336"):
        assert convert_preprocess_config({"size": 336}, 224) == kwargs
    assert convert_preprocess_config({"size": [224, 224]}, 224) == kwargs


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"resize_mode": "crop"}, "resize_mode"),
        ({"interpolation": "nearest"}, "interpolation"),
        ({"mode": "RGBA"}, "mode"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"std": "0.5"}, "std"),
        ({"fill_color": 300}, "fill_color"),
        ({"size": [224, 256]}, "size"),
        ({"size": "224"}, "size"),
        ({"crop_pct": 0.9}, "crop_pct"),
    ],
)
def test_bad_preprocess_cfg_is_refused(cfg, field):
    with pytest.raises(ValueError, match=field):
        load_image_converter(cfg, 224)
