"""Preprocessing for a pair of pretrained encoders."""

from __future__ import annotations

from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained.registry import get_encoder

#: Packed caption length when none is given (captions need few tokens, and
#: attention cost grows with the square of the padded length).
DEFAULT_SEQUENCE_LENGTH = 64


def preprocessor(
    image_source: str | None = None,
    text_source: str | None = None,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    **kwargs,
) -> ContrastivePreprocessor:
    """The `ContrastivePreprocessor` two registered encoders expect.

    Images get the image encoder's converter (resize and normalisation of its
    weights); texts its tokenizer, which does its own lower-casing. Either
    side may be omitted.

    Args:
        image_source: str. A registered image encoder name.
        text_source: str. A registered text encoder name.
        sequence_length: int. Packed text length.
        **kwargs: further `ContrastivePreprocessor` arguments.

    Example:

    ```python
    preprocessor = keras_towers.pretrained.preprocessor(
        "efficientnet_lite0_imagenet", "all_minilm_l6_v2", sequence_length=32
    )
    batch = preprocessor({"images": np.zeros((1, 64, 64, 3), "uint8"),
                          "texts": ["a cat"]})
    ```
    """
    image_converter = None
    tokenizer = None
    if image_source is not None:
        image_converter = _preprocessing(image_source, "image")
    if text_source is not None:
        tokenizer = _preprocessing(text_source, "text")
        kwargs.setdefault("lowercase", False)
    return ContrastivePreprocessor(
        image_converter=image_converter,
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        **kwargs,
    )


def _preprocessing(source: str, modality: str):
    encoder = get_encoder(source)
    if encoder.modality != modality:
        raise ValueError(
            f"{source!r} is a {encoder.modality} encoder, not a {modality} encoder."
        )
    if encoder.preprocessing is None:
        raise ValueError(f"Encoder {source!r} registers no preprocessing.")
    return encoder.preprocessing()
