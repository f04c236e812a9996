"""open_clip checkpoint directories load into keras_towers.CLIP with parity.

Tiny random open_clip `CLIP` models in several configurations are built and
saved as open_clip writes them for model hubs (`open_clip_config.json` +
`open_clip_model.safetensors` or `open_clip_pytorch_model.bin`) by open_clip
itself, in a subprocess (`tests/open_clip_reference.py`, which also records
open_clip's `encode_image` / `encode_text`, normalised). Each is loaded with
`keras_towers.CLIP.from_preset(dir)` on the backend KERAS_BACKEND selects
and compared on the same inputs: token ids, image features from the same
pixels, image features from the same image files (open_clip's transform vs
the converted preprocessor, no resampling), text features from the same
strings. Then: the model trains, round-trips through a native preset, and
bad checkpoints fail naming what is wrong.
"""

import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

import keras_towers
from keras_towers import presets
from keras_towers.converters import open_clip as open_clip_converter
from tests.open_clip_reference import run_reference

TEXTS = [
    "A photo of the Cat!",
    "",
    "two DOGS, 3 cats and 1024 birds.",
    "it's the dog's toy; don't you'll we've",
    "Hello,   World... (42) #tag @user ?!",
    "naïve cafe\u0301 café 日本語の写真 🙂🐱",
    "Tom &amp; Jerry &lt;3",
    "a red square " * 12,
]
IMAGE_SIZE = 32
#: Refusals and error messages do not depend on the backend: checked on one.
one_backend = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="backend-independent (config and file checks): checked on torch",
)


def _vision(**extra):
    return {
        "image_size": IMAGE_SIZE,
        "layers": 2,
        "width": 32,
        "head_width": 16,
        "patch_size": 8,
        **extra,
    }


def _text(**extra):
    return {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 2,
        **extra,
    }


#: The configurations: one per feature the converter maps differently.
SPECS = {
    # OpenAI-style: quick_gelu, default preprocessing, safetensors.
    "quickgelu": {
        "model_cfg": {
            "embed_dim": 16,
            "quick_gelu": True,
            "vision_cfg": _vision(),
            "text_cfg": _text(),
        }
    },
    # LAION-style exact GELU, text projection with bias, layer scale in both
    # towers, LayerNorm eps 1e-6, a [1]-shaped logit scale, custom mean/std,
    # squash resizing, the pickle-based .bin file.
    "gelu_ls_projbias": {
        "model_cfg": {
            "embed_dim": 24,
            "nonscalar_logit_scale": True,
            "vision_cfg": _vision(
                ls_init_value=0.5, norm_kwargs={"eps": 1e-6}, mlp_ratio=2.0
            ),
            "text_cfg": _text(
                ls_init_value=0.5, proj_bias=True, norm_kwargs={"eps": 1e-6}
            ),
        },
        "preprocess_cfg": {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.3, 0.35],
            "resize_mode": "squash",
            "interpolation": "bilinear",
        },
        "format": "bin",
    },
    # eos pooling, a logit bias (SigLIP-style: loads as SigLIP), patch 16,
    # LayerNorm after pooling.
    "eos_bias": {
        "model_cfg": {
            "embed_dim": 16,
            "init_logit_bias": -10.0,
            "vision_cfg": _vision(patch_size=16, final_ln_after_pool=True),
            "text_cfg": _text(
                pool_type="eos", eos_id=49407, heads=4, final_ln_after_pool=True
            ),
        },
    },
}


def _images(root):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8")
    pixels[2] = np.linspace(0, 255, IMAGE_SIZE, dtype="uint8")[None, :, None]
    paths = []
    for i, image in enumerate(pixels):
        path = root / f"image_{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    normalised = rng.normal(size=(2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype("float32")
    np.save(root / "pixels.npy", normalised)
    return pixels, paths, normalised


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip")
    raw, paths, pixels = _images(root)
    job = {
        "models": [
            {"name": name, "seed": i, **spec}
            for i, (name, spec) in enumerate(SPECS.items())
        ],
        "images": str(root / "pixels.npy"),
        "raw_images": paths,
        "texts": TEXTS,
    }
    results = run_reference(job, root)
    return {"root": root, "raw": raw, "pixels": pixels, "results": results}


@pytest.fixture(scope="module")
def models(reference):
    return {
        name: keras_towers.CLIP.from_preset(str(reference["root"] / name))
        for name in SPECS
    }


@pytest.fixture(params=list(SPECS))
def name(request):
    return request.param


def _normalize(x):
    x = keras.ops.convert_to_numpy(x)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_format_is_detected_from_the_directory(reference, name):
    found = presets.external_format(reference["root"] / name)
    assert found is not None and found.load is open_clip_converter.load_open_clip


def test_token_ids_match_open_clip(reference, models):
    # One model: the three share the tokenizer and the context length
    # (tests/test_open_clip_tokenizer.py checks the tokenizer in depth).
    preprocessor = models["eos_bias"].preprocessor
    got = keras.ops.convert_to_numpy(preprocessor({"texts": TEXTS})["token_ids"])
    np.testing.assert_array_equal(got, reference["results"]["eos_bias/text_tokens"])


def test_image_features_match_open_clip(reference, models, name):
    model = models[name]
    nhwc = np.ascontiguousarray(reference["pixels"].transpose(0, 2, 3, 1))
    got = _normalize(model.image_tower(nhwc))
    want = reference["results"][f"{name}/image_features"]
    diff = float(np.abs(got - want).max())
    print(
        f"[{keras.backend.backend()}] {name} image features (same pixels) diff {diff:.2e}"
    )
    assert diff <= 1e-4


def test_image_files_match_open_clip(reference, models, name):
    got = models[name].encode_images(reference["raw"])
    want = reference["results"][f"{name}/raw_image_features"]
    diff = float(np.abs(got - want).max())
    print(f"[{keras.backend.backend()}] {name} image features (files) diff {diff:.2e}")
    assert diff <= 1e-4


def test_text_features_match_open_clip(reference, models, name):
    # The text tower on open_clip's own token ids; the tokenizer's share is
    # checked above and end to end below.
    tokens = reference["results"][f"{name}/text_tokens"]
    inputs = {"token_ids": tokens, "padding_mask": tokens != 0}
    got = _normalize(models[name].text_tower(inputs))
    want = reference["results"][f"{name}/text_features"]
    diff = float(np.abs(got - want).max())
    print(f"[{keras.backend.backend()}] {name} text features diff {diff:.2e}")
    assert diff <= 1e-4


def test_encode_texts_matches_open_clip_end_to_end(reference, models):
    got = models["eos_bias"].encode_texts(TEXTS)
    want = reference["results"]["eos_bias/text_features"]
    assert float(np.abs(got - want).max()) <= 1e-4


def test_class_scale_and_bias_follow_the_checkpoint(models):
    assert type(models["quickgelu"]) is keras_towers.CLIP
    assert models["quickgelu"].logit_bias is None
    siglip = models["eos_bias"]
    assert type(siglip) is keras_towers.SigLIP
    assert siglip.logit_bias is not None
    for model in models.values():
        scale = float(np.exp(keras.ops.convert_to_numpy(model.logit_scale)))
        assert model.max_logit_scale >= scale
    # The [1]-shaped scale of "gelu_ls_projbias" is read as a scalar.
    assert tuple(models["gelu_ls_projbias"].logit_scale.shape) == ()


def test_a_converted_model_trains(reference, models):
    model = keras_towers.CLIP.from_preset(str(reference["root"] / "gelu_ls_projbias"))
    # Training starts from the checkpoint's logit scale.
    assert float(keras.ops.convert_to_numpy(model.logit_scale)) == pytest.approx(
        float(keras.ops.convert_to_numpy(models["gelu_ls_projbias"].logit_scale))
    )
    before = {
        v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables
    }
    model.compile(learning_rate=1e-3)
    # Preprocessed eagerly (tests/test_transformers_clip.py fits raw data
    # through the tf.data preprocessing path already).
    batch = model.preprocessor({"images": reference["raw"], "texts": TEXTS[:3]})
    batch = {k: keras.ops.convert_to_numpy(v) for k, v in batch.items()}
    history = model.fit(batch, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    unchanged = [
        v.path
        for v in model.trainable_variables
        if np.array_equal(before[v.path], keras.ops.convert_to_numpy(v))
    ]
    assert not unchanged


def _copy(reference, name, tmp_path):
    target = tmp_path / name
    shutil.copytree(reference["root"] / name, target)
    return target


def _edit_config(path, edit):
    config = json.loads((path / "open_clip_config.json").read_text())
    edit(config["model_cfg"])
    (path / "open_clip_config.json").write_text(json.dumps(config))


@one_backend
@pytest.mark.parametrize(
    "edit, field",
    [
        (
            lambda c: c["vision_cfg"].update(timm_model_name="vit_base_patch16_224"),
            "vision_cfg.timm_model_name",
        ),
        (lambda c: c.update(custom_text=True), "custom_text"),
        (
            lambda c: c["vision_cfg"].update(attentional_pool=True),
            "vision_cfg.attentional_pool",
        ),
        (lambda c: c["vision_cfg"].update(pool_type="avg"), "vision_cfg.pool_type"),
        (
            lambda c: c["text_cfg"].update(no_causal_mask=True),
            "text_cfg.no_causal_mask",
        ),
        (
            lambda c: c["text_cfg"].update(hf_model_name="bert-base-uncased"),
            "text_cfg.hf_model_name",
        ),
        (lambda c: c["vision_cfg"].update(layers=[3, 4, 6, 3]), "vision_cfg.layers"),
        (lambda c: c["text_cfg"].update(some_new_field=1), "some_new_field"),
    ],
)
def test_unsupported_configs_name_the_field(reference, tmp_path, edit, field):
    path = _copy(reference, "quickgelu", tmp_path)
    _edit_config(path, edit)
    with pytest.raises(NotImplementedError, match=field.replace(".", r"\.")):
        keras_towers.CLIP.from_preset(str(path))


@one_backend
def test_weights_that_do_not_fit_the_config_fail_clearly(reference, tmp_path):
    path = _copy(reference, "quickgelu", tmp_path)
    _edit_config(path, lambda c: c.update(embed_dim=8))
    with pytest.raises(ValueError, match=r"visual\.proj.*shape"):
        keras_towers.CLIP.from_preset(str(path))
    path = _copy(reference, "gelu_ls_projbias", tmp_path / "b")
    _edit_config(path, lambda c: c["vision_cfg"].pop("ls_init_value"))
    with pytest.raises(ValueError, match=r"ls_1\.gamma"):
        keras_towers.CLIP.from_preset(str(path))
    path = _copy(reference, "quickgelu", tmp_path / "c")
    (path / open_clip_converter.SAFETENSORS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="open_clip_model.safetensors"):
        keras_towers.CLIP.from_preset(str(path))
    # Without weights the architecture still builds.
    model = keras_towers.CLIP.from_preset(str(path), load_weights=False)
    assert model.embedding_dim == 16


@one_backend
def test_a_checkpoint_with_a_bias_refuses_a_model_without_one(reference):
    with pytest.raises(ValueError, match="logit_bias"):
        keras_towers.CLIP.from_preset(
            str(reference["root"] / "eos_bias"), loss="infonce"
        )


def test_convert_command_writes_a_native_preset_with_the_same_outputs(
    reference, models, tmp_path, capsys
):
    from keras_towers.cli import main

    source = reference["root"] / "gelu_ls_projbias"
    target = tmp_path / "native"
    assert main(["convert", str(source), str(target)]) == 0
    assert "max embedding difference" in capsys.readouterr().out
    metadata = json.loads((target / presets.METADATA_FILE).read_text())
    assert metadata["converted_from"]["format"] == "open_clip"
    assert set(metadata["converted_from"]["files_sha256"]) == {
        "open_clip_config.json",
        open_clip_converter.PYTORCH_FILE,
    }
    assert presets.external_format(target) is None  # native now
    # The same class, weights and preprocessing as the converted model.
    native = keras_towers.ContrastiveModel.from_preset(str(target))
    converted = models["gelu_ls_projbias"]
    assert type(native) is type(converted)
    assert {w.path for w in native.weights} == {w.path for w in converted.weights}
    for mine, theirs in zip(
        sorted(native.weights, key=lambda w: w.path),
        sorted(converted.weights, key=lambda w: w.path),
        strict=True,
    ):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
        )
    np.testing.assert_array_equal(
        native.encode_images(reference["raw"]),
        converted.encode_images(reference["raw"]),
    )
    # A second conversion onto the same directory changes nothing.
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    assert main(["convert", str(source), str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert before == {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    # A native preset is not converted again.
    assert main(["convert", str(target), str(tmp_path / "again")]) == 2
    assert "already a keras_towers preset" in capsys.readouterr().err


@one_backend
def test_the_built_class_follows_from_preset_and_the_checkpoint(reference):
    # A base class builds CLIP (or SigLIP for a checkpoint with a logit bias),
    # a CLIP subclass builds itself, an unrelated class is refused by name.
    plain, biased = reference["root"] / "quickgelu", reference["root"] / "eos_bias"
    loads = [
        (keras_towers.ContrastiveModel, plain, keras_towers.CLIP),
        (keras_towers.ContrastiveModel, biased, keras_towers.SigLIP),
        (keras_towers.SigLIP, plain, keras_towers.SigLIP),
    ]
    for cls, path, expected in loads:
        assert type(cls.from_preset(str(path), load_weights=False)) is expected
    with pytest.raises(ValueError, match="open_clip checkpoint.*not ASIF"):
        keras_towers.ASIF.from_preset(str(plain))
