"""transformers SigLIP checkpoints load into keras_towers.SigLIP with output parity.

Tiny random `transformers.SiglipModel`s are saved together with a tiny
SentencePiece model (trained here), wrapped in transformers'
`SiglipTokenizer`, and a `SiglipImageProcessor`; they are loaded with
`keras_towers.SigLIP.from_preset(dir)` and compared with transformers on the
same raw inputs: token ids, text and image features, logit scale and bias.
Runs on whichever backend KERAS_BACKEND selects.
"""

import dataclasses
import io
import json
import shutil
import string

import keras
import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
spm = pytest.importorskip("sentencepiece")

import transformers  # noqa: E402

import keras_towers  # noqa: E402
from keras_towers import cli  # noqa: E402
from keras_towers.converters import transformers_siglip  # noqa: E402

one_backend = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="backend-independent (config checks): checked on torch",
)

TEXTS = [
    "A photo of the Cat!",
    "",
    "   ",
    "...!?",
    "two DOGS, 3 cats and 1024 birds.",
    "it's the dog's toy; don't (you'll) [we've] {x}",
    "naïve cafe\u0301 café Über ÉCOLE 東京の猫 🙂🐱",
    "a\u00a0photo\u3000of\ta\nsquare  \u2028end",
    "İstanbul ΣΑΣ Ünïcödé ﬁne ＡＢＣ",
    "▁weird▁ pieces",
    "a red square " * 12,
]


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    image_size: int
    patch_size: int
    vision_hidden: int
    text_hidden: int
    heads: int
    layers: int
    activation: str
    eps: float
    context: int
    seed: int


SPECS = [
    Spec("tanh_p8", 32, 8, 32, 32, 4, 2, "gelu_pytorch_tanh", 1e-6, 16, 0),
    # Text narrower than the joint space: the text head projects 40 -> 48.
    Spec("gelu_p4_eps", 24, 4, 48, 40, 4, 1, "gelu", 1e-5, 12, 1),
    Spec("relu_p6", 18, 6, 24, 24, 2, 2, "relu", 1e-4, 20, 2),
]


def _train_sentencepiece(path):
    rng = np.random.default_rng(0)
    words = (
        "a photo of the cat dog bird red blue green square circle small large "
        "picture café naïve über école 東京 猫 two cats dogs toy"
    ).split()
    letters = list(string.ascii_lowercase)
    words += ["".join(rng.choice(letters, rng.integers(2, 8))) for _ in range(200)]
    sentences = [" ".join(rng.choice(words, rng.integers(3, 10))) for _ in range(300)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=200,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (path / "spiece.model").write_bytes(buffer.getvalue())
    return path / "spiece.model"


def write_checkpoint(spec, path, proto):
    tokenizer = transformers.SiglipTokenizer(str(proto), model_max_length=spec.context)
    common = {
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "hidden_act": spec.activation,
        "layer_norm_eps": spec.eps,
    }
    config = transformers.SiglipConfig(
        text_config={
            **common,
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": 2 * spec.text_hidden,
            "max_position_embeddings": spec.context,
            "projection_size": spec.vision_hidden,
        },
        vision_config={
            **common,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": 3 * spec.vision_hidden,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
        },
    )
    torch.manual_seed(spec.seed)
    model = transformers.SiglipModel(config).eval()
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
        model.logit_scale.fill_(np.log(12.0 + spec.seed))
        model.logit_bias.fill_(-7.5 - spec.seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    transformers.SiglipImageProcessor(
        size={"height": spec.image_size, "width": spec.image_size}
    ).save_pretrained(path)


def _normalize(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class Checkpoint:
    def __init__(self, spec, path, proto):
        self.spec = spec
        self.path = str(path)
        write_checkpoint(spec, path, proto)
        self.hf_model = transformers.SiglipModel.from_pretrained(self.path).eval()
        self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
        self.model = keras_towers.SigLIP.from_preset(self.path)

    def hf_ids(self, texts):
        return self.hf_tokenizer(
            texts,
            padding="max_length",
            max_length=self.spec.context,
            truncation=True,
        )["input_ids"]

    def hf_text_features(self, texts):
        with torch.no_grad():
            ids = torch.tensor(self.hf_ids(texts))
            out = self.hf_model.get_text_features(input_ids=ids)
        return _normalize(out.pooler_output.numpy())

    def hf_image_features(self, images):
        # Images at the model's size: the processor only rescales/normalises.
        pixels = (images.astype("float32") / 255.0 - 0.5) / 0.5
        with torch.no_grad():
            out = self.hf_model.get_image_features(
                pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2)
            )
        return _normalize(out.pooler_output.numpy())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("siglip")
    proto = _train_sentencepiece(root)
    return {s.name: Checkpoint(s, root / s.name, proto) for s in SPECS}


@pytest.fixture(params=[s.name for s in SPECS])
def ckpt(request, checkpoints):
    return checkpoints[request.param]


def _images(spec, seed, n=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, spec.image_size, spec.image_size, 3), "uint8")


def test_structure(ckpt):
    model = ckpt.model
    assert type(model) is keras_towers.SigLIP
    assert model.image_tower.output_dim == ckpt.spec.vision_hidden
    assert model.text_tower.output_dim == ckpt.spec.vision_hidden
    assert isinstance(model.preprocessor, transformers_siglip.SigLIPPreprocessor)
    assert model.preprocessor.framing == "squash"


def test_token_ids_match_transformers(ckpt):
    ours = keras.ops.convert_to_numpy(
        ckpt.model.preprocessor({"texts": TEXTS})["token_ids"]
    )
    np.testing.assert_array_equal(ours, np.array(ckpt.hf_ids(TEXTS)))
    # Inside tf.data too.
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices({"texts": TEXTS}).batch(4)
    ds = ds.map(ckpt.model.preprocessor)
    batched = np.concatenate([b["token_ids"].numpy() for b in ds])
    np.testing.assert_array_equal(batched, np.array(ckpt.hf_ids(TEXTS)))


def test_truncation_warning_counts_the_end_token_only(checkpoints):
    from keras_towers.preprocessing import TruncationWarning

    preprocessor = checkpoints[SPECS[0].name].model.preprocessor
    capacity = preprocessor.sequence_length - 1
    assert preprocessor.text_capacity == capacity
    with pytest.warns(
        TruncationWarning, match=rf"\({capacity} for text, plus the end token\)"
    ):
        assert preprocessor.warn_if_truncated(["a b c d e f g h " * 20]) == 1


@pytest.mark.filterwarnings("ignore::keras_towers.preprocessing.TruncationWarning")
def test_text_features_match_transformers(ckpt):
    ours = keras.ops.convert_to_numpy(ckpt.model.encode_texts(TEXTS))
    diff = np.abs(ours - ckpt.hf_text_features(TEXTS)).max()
    print(f"{ckpt.spec.name} text max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_image_features_match_transformers(ckpt):
    images = _images(ckpt.spec, 1)
    ours = keras.ops.convert_to_numpy(ckpt.model.encode_images(images))
    diff = np.abs(ours - ckpt.hf_image_features(images)).max()
    print(f"{ckpt.spec.name} image max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_image_processor_pixels_match(checkpoints):
    ckpt = checkpoints["tanh_p8"]
    images = _images(ckpt.spec, 2)
    processor = transformers.AutoImageProcessor.from_pretrained(ckpt.path)
    theirs = processor(list(images), return_tensors="np")["pixel_values"]
    ours = keras.ops.convert_to_numpy(
        ckpt.model.preprocessor({"images": images})["images"]
    )
    np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 1), atol=1e-6)


def test_logit_scale_and_bias_loaded(ckpt):
    model = ckpt.model
    theta = float(keras.ops.convert_to_numpy(model.logit_scale))
    bias = float(keras.ops.convert_to_numpy(model.logit_bias))
    assert theta == pytest.approx(ckpt.hf_model.logit_scale.item(), abs=1e-6)
    assert bias == pytest.approx(ckpt.hf_model.logit_bias.item(), abs=1e-6)
    assert model.max_logit_scale >= np.exp(theta) - 1e-4


def test_fit_trains_every_variable(checkpoints):
    ckpt = checkpoints["tanh_p8"]
    model = keras_towers.SigLIP.from_preset(ckpt.path)
    data = {
        "images": _images(ckpt.spec, 3, n=4),
        "texts": ["a red square", "the blue circle", "2 cats", "a photo of a dog"],
    }
    before = {
        v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables
    }
    model.compile(learning_rate=1e-3)
    history = model.fit(data, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    unchanged = [
        v.path
        for v in model.trainable_variables
        if np.array_equal(before[v.path], keras.ops.convert_to_numpy(v))
    ]
    assert not unchanged
    assert model.logit_bias is not None


@pytest.mark.filterwarnings("ignore::keras_towers.preprocessing.TruncationWarning")
def test_convert_cli_writes_equal_native_preset(checkpoints, tmp_path):
    ckpt = checkpoints["gelu_p4_eps"]
    out = tmp_path / "native"
    cli.main(["convert", ckpt.path, str(out)])
    reloaded = keras_towers.SigLIP.from_preset(str(out))
    assert type(reloaded) is keras_towers.SigLIP
    # keras-hub's MAP probe is an unnamed weight, whose path counter differs
    # between the two models: compare in order.
    assert len(reloaded.weights) == len(ckpt.model.weights)
    for ours, theirs in zip(ckpt.model.weights, reloaded.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(theirs),
            keras.ops.convert_to_numpy(ours),
            err_msg=ours.path,
        )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded.encode_texts(TEXTS)),
        keras.ops.convert_to_numpy(ckpt.model.encode_texts(TEXTS)),
        atol=1e-6,
    )


def _edited_copy(ckpt, tmp_path, edit):
    path = tmp_path / "edited"
    shutil.copytree(ckpt.path, path)
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@one_backend
@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.update(model_type="siglip2"), "model_type='siglip2'"),
        (
            lambda c: c["vision_config"].update(vision_use_head=False),
            "vision_use_head",
        ),
        (lambda c: c["vision_config"].update(image_size=[32, 16]), "image_size"),
        (
            lambda c: c["text_config"].update(hidden_act="quick_gelu"),
            "text_config.hidden_act",
        ),
        (lambda c: c["vision_config"].update(num_channels=1), "num_channels"),
    ],
)
def test_unsupported_variants_refused(checkpoints, tmp_path, edit, field):
    path = _edited_copy(checkpoints["tanh_p8"], tmp_path, edit)
    with pytest.raises(NotImplementedError, match=field):
        keras_towers.SigLIP.from_preset(path)


@one_backend
def test_missing_and_unused_tensors_raise(checkpoints, tmp_path):
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    path = tmp_path / "copy"
    shutil.copytree(checkpoints["tanh_p8"].path, path)
    tensors = load_file(str(path / "model.safetensors"))
    tensors["extra.weight"] = np.zeros((2,), "float32")
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="extra.weight"):
        keras_towers.SigLIP.from_preset(str(path))
    del tensors["extra.weight"]
    del tensors["vision_model.head.probe"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="vision_model.head.probe"):
        keras_towers.SigLIP.from_preset(str(path))
