"""transformers' `SiglipImageProcessor` as a `TransformersImageConverter`."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from keras_towers.converters.transformers_clip.image_converter import (
    TransformersImageConverter,
)
from keras_towers.converters.transformers_clip.image_converter import (
    convert_image_processor_config,
)

PREPROCESSOR_FILE = "preprocessor_config.json"

# SiglipImageProcessor defaults: squash-resize to (height, width), bicubic,
# rescale by 1/255, normalise with mean = std = 0.5, no crop.
SIGLIP_IMAGE_PROCESSOR_DEFAULTS = {
    "do_resize": True,
    "size": {"height": 224, "width": 224},
    "resample": 3,
    "do_center_crop": False,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


def convert_siglip_image_processor_config(
    processor_config: dict, image_size: int
) -> dict:
    """SigLIP image-processor config -> `TransformersImageConverter` kwargs
    (resize straight to the model's size, PIL-exact, then scale/offset)."""
    cfg = {
        **SIGLIP_IMAGE_PROCESSOR_DEFAULTS,
        "size": {"height": image_size, "width": image_size},
        **processor_config,
    }
    if isinstance(cfg["size"], dict) and "height" not in cfg["size"]:
        raise NotImplementedError(
            f"size={cfg['size']}: SigLIP image processors resize to a fixed "
            "{'height', 'width'}; other sizes are not supported."
        )
    return convert_image_processor_config(cfg, image_size)


def load_image_converter(
    path: str | os.PathLike, image_size: int
) -> TransformersImageConverter:
    """The image converter described by `preprocessor_config.json` (SigLIP's
    defaults when the file is absent)."""
    file = Path(path) / PREPROCESSOR_FILE
    processor_config = {}
    if file.is_file():
        processor_config = json.loads(file.read_text())
        kind = processor_config.get("image_processor_type", "SiglipImageProcessor")
        if not kind.startswith("SiglipImageProcessor"):
            warnings.warn(
                f"{file} is for a {kind}; reading it with "
                "SiglipImageProcessor's semantics and defaults.",
                stacklevel=2,
            )
    else:
        warnings.warn(
            f"No {PREPROCESSOR_FILE} in {str(path)!r}: using SigLIP's "
            f"preprocessing (bicubic resize to {image_size}x{image_size}, "
            "mean = std = 0.5).",
            stacklevel=2,
        )
    return TransformersImageConverter(
        **convert_siglip_image_processor_config(processor_config, image_size)
    )
