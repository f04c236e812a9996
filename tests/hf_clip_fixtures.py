"""Tiny random transformers CLIP checkpoints, written to disk for converter tests.

Everything is built locally (no hub access): a small CLIP-style byte-level BPE
vocabulary learned from a handful of words, a `transformers.CLIPTokenizer`, a
`CLIPImageProcessorPil` and a random `CLIPModel` whose parameters are perturbed
well away from their initial values, so that layer norms, biases and
projections all influence the outputs (default layer-norm weights of 1 and
biases of 0 would hide mapping mistakes).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np

START = "<|startoftext|>"
END = "<|endoftext|>"

# Words the tiny BPE is learned from; test captions reuse them so that merges
# fire, and add unseen words so that byte fallbacks fire too.
_CORPUS = (
    "a photo of the cat and the dog there then this that photograph "
    "red blue green square circle triangle small large picture painting "
    "diagram sketch drawing cats dogs it's"
).split()


def byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode symbols, indexed by byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def build_bpe(num_merges: int = 60) -> tuple[dict[str, int], list[str]]:
    """A CLIP-layout vocabulary: bytes, bytes + `</w>`, merges, then specials.

    The merges are learned greedily (most frequent adjacent pair first) from
    `_CORPUS`, so every merge result is in the vocabulary, and the start and
    end tokens get the two largest ids, as in CLIP.
    """
    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    words = collections.Counter()
    for word in _CORPUS:
        pieces = [symbols[b] for b in word.encode("utf-8")]
        pieces[-1] += "</w>"
        words[tuple(pieces)] += 1
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for pieces, count in words.items():
            for pair in zip(pieces[:-1], pieces[1:], strict=True):
                pairs[pair] += count
        if not pairs:
            break
        (left, right), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{left} {right}")
        vocab.setdefault(left + right, len(vocab))
        merged = collections.Counter()
        for pieces, count in words.items():
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == (left, right):
                    out.append(left + right)
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab[START] = len(vocab)
    vocab[END] = len(vocab)
    return vocab, merges


@dataclasses.dataclass(frozen=True)
class FixtureSpec:
    """One tiny checkpoint: architecture, preprocessing and file layout."""

    name: str
    vision_width: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int
    text_width: int
    text_layers: int
    text_heads: int
    context_length: int
    projection_dim: int
    hidden_act: str
    layer_norm_eps: float
    legacy_eos: bool  # eos_token_id=2 in the config: argmax pooling
    shortest_edge: int
    pad_token: str = END
    write_vocab_files: bool = False  # vocab.json + merges.txt beside tokenizer.json
    logit_scale: float = 2.9
    seed: int = 0


SPECS = (
    # Legacy config (eos_token_id=2, argmax pooling), quick_gelu, resize == crop,
    # vocab.json + merges.txt as older checkpoints ship them.
    FixtureSpec(
        name="legacy_quick_gelu",
        vision_width=32,
        vision_layers=2,
        vision_heads=4,
        image_size=32,
        patch_size=8,
        text_width=24,
        text_layers=2,
        text_heads=2,
        context_length=16,
        projection_dim=16,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        legacy_eos=True,
        shortest_edge=32,
        write_vocab_files=True,
        seed=1,
    ),
    # Modern eos_token_id, exact gelu, shortest edge 28 != crop 24, a large
    # layer-norm epsilon (visible in the outputs), tokenizer.json only.
    FixtureSpec(
        name="modern_gelu_crop",
        vision_width=48,
        vision_layers=1,
        vision_heads=3,
        image_size=24,
        patch_size=6,
        text_width=32,
        text_layers=3,
        text_heads=4,
        context_length=12,
        projection_dim=24,
        hidden_act="gelu",
        layer_norm_eps=1e-3,
        legacy_eos=False,
        shortest_edge=28,
        logit_scale=3.7,
        seed=2,
    ),
    # Padding with "!" (id 0, open_clip-style) instead of the end token, a
    # tiny epsilon, odd patch grid (3x3), the maximum logit scale ln(100).
    FixtureSpec(
        name="bang_pad_eps1e6",
        vision_width=40,
        vision_layers=2,
        vision_heads=5,
        image_size=30,
        patch_size=10,
        text_width=16,
        text_layers=1,
        text_heads=4,
        context_length=10,
        projection_dim=8,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-6,
        legacy_eos=False,
        shortest_edge=30,
        pad_token="!",
        logit_scale=float(np.log(100.0)),
        seed=3,
    ),
)


def write_checkpoint(spec: FixtureSpec, path: str, perturb_std: float = 0.3):
    """Write `spec` as a transformers checkpoint directory; return the HF parts.

    Returns `(model, tokenizer, image_processor)` (the model in eval mode).
    """
    import torch
    import transformers

    os.makedirs(path, exist_ok=True)
    vocab, merges = build_bpe()
    vocab_path = os.path.join(path, "vocab.json")
    merges_path = os.path.join(path, "merges.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(
        vocab=vocab_path, merges=merges_path, pad_token=spec.pad_token
    )
    tokenizer.model_max_length = spec.context_length
    tokenizer.save_pretrained(path)
    if not spec.write_vocab_files:
        os.remove(vocab_path)
        os.remove(merges_path)

    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": spec.shortest_edge},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        resample=3,
        image_mean=[0.45, 0.5, 0.4],
        image_std=[0.25, 0.3, 0.2],
    )
    processor.save_pretrained(path)

    eos_id = 2 if spec.legacy_eos else vocab[END]
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": spec.text_width,
            "intermediate_size": 2 * spec.text_width,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "max_position_embeddings": spec.context_length,
            "hidden_act": spec.hidden_act,
            "layer_norm_eps": spec.layer_norm_eps,
            "bos_token_id": vocab[START],
            "eos_token_id": eos_id,
            "pad_token_id": vocab[spec.pad_token],
            "projection_dim": spec.projection_dim,
        },
        vision_config={
            "hidden_size": spec.vision_width,
            "intermediate_size": 3 * spec.vision_width,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": spec.vision_heads,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "hidden_act": spec.hidden_act,
            "layer_norm_eps": spec.layer_norm_eps,
            "projection_dim": spec.projection_dim,
        },
        projection_dim=spec.projection_dim,
        logit_scale_init_value=spec.logit_scale,
    )
    torch.manual_seed(spec.seed)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                param.fill_(spec.logit_scale)
            else:
                param.add_(torch.randn_like(param) * perturb_std)
    model.save_pretrained(path)
    return model, tokenizer, processor


def smooth_images(rng, shapes) -> list[np.ndarray]:
    """uint8 RGB images with photo-like (low-frequency) content."""
    from PIL import Image

    images = []
    for height, width in shapes:
        low = rng.integers(0, 256, (height // 5 + 2, width // 5 + 2, 3), "uint8")
        image = Image.fromarray(low).resize((width, height), Image.BILINEAR)
        images.append(np.asarray(image))
    return images


def noise_images(rng, shapes) -> list[np.ndarray]:
    """uint8 RGB white-noise images (the worst case for resampling)."""
    return [rng.integers(0, 256, (h, w, 3), "uint8") for h, w in shapes]
