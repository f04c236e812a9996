"""`keras-towers convert SRC DST`: a checkpoint directory in a supported
external format (transformers CLIP, open_clip) -> a native keras_towers preset.

The native preset holds the config, the weights (`model.weights.h5`), the
tokenizer assets and `metadata.json` with the sha256 of every file, so later
loads need neither torch nor transformers nor open_clip. The conversion is
checked before the command returns: the written preset is loaded back and
must give the same image and text embeddings as the converted model (the
largest difference is printed). `converted_from` in the metadata records the
source format and the sha256 of every source file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from keras_towers import presets
from keras_towers.models.base import ContrastiveModel
from keras_towers.utils.io import sha256_file

#: Texts and images the round-trip check encodes with both models.
CHECK_TEXTS = ("a photo of a cat", "", "Two DOGS & 3 birds, naïve café 🙂")


def _check_images(model) -> list:
    size = int(model.image_tower.image_shape[0])
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (size, size, 3), dtype="uint8"),
        rng.integers(0, 256, (size + 13, size // 2 + 3, 3), dtype="uint8"),
    ]


def _max_difference(model, reloaded) -> float:
    images = _check_images(model)
    diffs = [
        np.abs(
            model.encode_texts(list(CHECK_TEXTS))
            - reloaded.encode_texts(list(CHECK_TEXTS))
        ),
        np.abs(model.encode_images(images) - reloaded.encode_images(images)),
    ]
    return float(max(d.max() for d in diffs))


def convert(source, output, description: str = "") -> float:
    """Convert `source` to a native preset at `output`; the largest
    embedding difference between the two (0.0 when exact)."""
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise FileNotFoundError(f"SRC {str(source)!r} is not a directory.")
    checkpoint_format = presets.external_format(source)
    if checkpoint_format is None:
        raise ValueError(
            f"SRC {str(source)!r} is already a keras_towers preset; nothing to "
            "convert (copy the directory instead)."
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(
            f"DST {str(output)!r} already exists and is not empty; choose a new "
            "directory (nothing was written)."
        )
    model = ContrastiveModel.from_preset(str(source))
    files = sorted(p for p in source.rglob("*") if p.is_file())
    converted_from = {
        "format": checkpoint_format.name,
        "path": str(source.resolve()),
        "files_sha256": {str(p.relative_to(source)): sha256_file(p) for p in files},
    }
    description = description or (
        f"{type(model).__name__} converted from the {checkpoint_format.name} "
        f"checkpoint {source.name}"
    )
    model.save_to_preset(
        str(output), description=description, converted_from=converted_from
    )
    reloaded = ContrastiveModel.from_preset(str(output))
    return _max_difference(model, reloaded)


def run(args) -> int:
    difference = convert(args.source, args.output, args.description)
    print(
        f"converted {args.source} -> {args.output} ({os.path.basename(args.output)}); "
        f"reloaded preset vs converted model: max embedding difference {difference:.1e}"
    )
    if difference > 1e-5:
        print(
            "keras-towers: error: the written preset does not reproduce the "
            "converted model's embeddings.",
            file=sys.stderr,
        )
        return 1
    return 0
