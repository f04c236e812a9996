"""Ready-made ASIFs over the pretrained encoders of `keras_towers.pretrained`."""

from __future__ import annotations

from keras_towers import pretrained
from keras_towers.models.asif.model import ASIF
from keras_towers.pretrained.pairing import DEFAULT_SEQUENCE_LENGTH


def lite_minilm_asif(
    variant: str = "lite0",
    k: int = 800,
    p: float = 8.0,
    anchor_dtype: str = "float16",
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    **kwargs,
) -> ASIF:
    """An ASIF over EfficientNet-Lite and all-MiniLM-L6-v2, with no anchors.

    Args:
        variant: str. EfficientNet-Lite variant: `"lite0"`, `"lite1"` or
            `"lite2"`.
        k: int. Non-zeros kept per relative representation.
        p: float. Sharpening exponent.
        anchor_dtype: `"float16"` (default: half the size on disk and in
            memory) or `"float32"`.
        sequence_length: int. Packed text length.
        **kwargs: further `keras_towers.ASIF` arguments.

    Example:

    ```python
    from keras_towers.models.asif import lite_minilm_asif
    model = lite_minilm_asif("lite0")
    model.add_anchors(pairs=keras_towers.datasets.from_records(records))
    ```
    """
    image_source = f"efficientnet_{variant}_imagenet"
    if not pretrained.is_registered(image_source):
        variants = [
            name.split("_")[1]
            for name in pretrained.names("image")
            if name.startswith("efficientnet_lite")
        ]
        raise ValueError(
            f"Pretrained EfficientNet-Lite weights exist for {variants}. "
            f"Received: variant={variant!r}"
        )
    return ASIF.from_encoders(
        image_source,
        "all_minilm_l6_v2",
        sequence_length=sequence_length,
        k=k,
        p=p,
        anchor_dtype=anchor_dtype,
        **kwargs,
    )
