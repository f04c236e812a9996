"""open_clip as the reference for the open_clip converter's tests.

`scripts/setup.sh` installs `open_clip_torch` (with torchvision, ftfy and
wcwidth, no other dependencies) into `.venv/reference/open_clip`, outside
site-packages: PyPI's torchvision wheel is a CUDA build whose operator library
cannot load beside the CPU torch this project pins, and transformers (and
others) import torchvision when they find it. So open_clip never enters the
test process: `run_reference(job, out_dir)` runs this file in a subprocess,
which puts that folder on `sys.path`, replaces torchvision's fake-tensor and
autograd registrations for its compiled operators (nms, roi_align, ... —
open_clip uses only torchvision's Python transforms and `FrozenBatchNorm2d`)
by empty modules, and imports open_clip.

A job (JSON) may hold:

- `"models"`: a list of `{"name", "model_cfg", "preprocess_cfg", "seed",
  "format"}`. Each model is built by `open_clip.model.CLIP(**model_cfg)`
  with every parameter perturbed by seeded noise (so no weight is a
  symmetric 0 or 1 that would hide a transposed or swapped tensor), written
  to `out_dir/<name>/` as open_clip writes for model hubs
  (`open_clip_config.json` with `model_cfg` and `preprocess_cfg`, and
  `open_clip_model.safetensors` or, with `"format": "bin"`,
  `open_clip_pytorch_model.bin`), and its `encode_image` /
  `encode_text` (normalised) recorded for the job's `"images"` (an .npy of
  NCHW float32 pixels already preprocessed), `"raw_images"` (image files,
  through open_clip's inference transform for the model's
  `preprocess_cfg`) and `"texts"` (tokenised by open_clip's tokenizer at
  the model's context length).
- `"tokenize"`: `{"texts": [...], "context_length": N}` -> open_clip's
  default tokenizer's ids.
- `"preprocess"`: `{"images": [png paths], "cfgs": [{"size", ...
  preprocess_cfg}]}` -> open_clip's inference transform of each image.

Results go to `out_dir/reference.npz` (keys `"<name>/image_features"`,
`"<name>/raw_image_features"`,
`"<name>/text_features"`, `"<name>/text_tokens"`, `"tokens"`,
`"preprocess/<cfg index>/<image index>"`).

A missing reference folder is an error naming the setup step, never a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

REFERENCE_DIR = (
    Path(__file__).resolve().parents[1] / ".venv" / "reference" / "open_clip"
)
_STUBBED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def run_reference(job: dict, out_dir: str | os.PathLike) -> dict:
    """Run `job` with open_clip in a subprocess; its results as NumPy."""
    if not (REFERENCE_DIR / "open_clip").is_dir():
        raise RuntimeError(
            f"open_clip is not installed in {REFERENCE_DIR}: run scripts/setup.sh "
            "(it installs open_clip_torch there for the tests)."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, __file__, str(job_file), str(out_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"The open_clip reference failed:\n{result.stdout}\n{result.stderr}"
        )
    with np.load(out_dir / "reference.npz") as data:
        return {key: data[key] for key in data.files}


def _import_open_clip():
    sys.path.append(str(REFERENCE_DIR))
    for name in _STUBBED:
        sys.modules.setdefault(name, types.ModuleType(name))
    import open_clip

    return open_clip


def _build(open_clip, spec, out_dir: Path, images, raw_images, texts, results: dict):
    import safetensors.torch
    import torch

    torch.manual_seed(int(spec.get("seed", 0)))
    model = open_clip.model.CLIP(**spec["model_cfg"]).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.02 if name != "logit_scale" else 0.1
            parameter.add_(torch.randn_like(parameter) * scale)
    target = out_dir / spec["name"]
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if spec.get("format", "safetensors") == "bin":
        torch.save(state, target / "open_clip_pytorch_model.bin")
    else:
        safetensors.torch.save_file(state, target / "open_clip_model.safetensors")
    config = {"model_cfg": spec["model_cfg"]}
    if spec.get("preprocess_cfg") is not None:
        config["preprocess_cfg"] = spec["preprocess_cfg"]
    (target / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    name = spec["name"]
    with torch.no_grad():
        if raw_images:
            from PIL import Image

            cfg = dict(spec.get("preprocess_cfg") or {})
            cfg.pop("size", None)
            size = spec["model_cfg"].get("vision_cfg", {}).get("image_size", 224)
            transform = open_clip.image_transform(size, is_train=False, **cfg)
            pixels = []
            for path in raw_images:
                with Image.open(path) as image:
                    pixels.append(transform(image))
            features = model.encode_image(torch.stack(pixels), normalize=True)
            results[f"{name}/raw_image_features"] = features.numpy()
        if images is not None:
            features = model.encode_image(torch.from_numpy(images), normalize=True)
            results[f"{name}/image_features"] = features.numpy()
        if texts:
            context = spec["model_cfg"].get("text_cfg", {}).get("context_length", 77)
            tokens = open_clip.tokenize(texts, context_length=context)
            results[f"{name}/text_tokens"] = tokens.numpy()
            features = model.encode_text(tokens, normalize=True)
            results[f"{name}/text_features"] = features.numpy()


def _main(job_file: str, out_dir: str) -> None:
    job = json.loads(Path(job_file).read_text())
    out_dir = Path(out_dir)
    open_clip = _import_open_clip()
    results = {}
    images = np.load(job["images"]).astype("float32") if job.get("images") else None
    for spec in job.get("models", []):
        _build(
            open_clip,
            spec,
            out_dir,
            images,
            job.get("raw_images"),
            job.get("texts"),
            results,
        )
    if "tokenize" in job:
        tokenize = job["tokenize"]
        tokens = open_clip.tokenize(
            tokenize["texts"], context_length=tokenize.get("context_length", 77)
        )
        results["tokens"] = tokens.numpy()
    if "preprocess" in job:
        from PIL import Image

        for c, cfg in enumerate(job["preprocess"]["cfgs"]):
            cfg = dict(cfg)
            size = cfg.pop("size")
            transform = open_clip.image_transform(size, is_train=False, **cfg)
            for i, path in enumerate(job["preprocess"]["images"]):
                with Image.open(path) as image:
                    results[f"preprocess/{c}/{i}"] = transform(image).numpy()
    np.savez(out_dir / "reference.npz", **results)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
