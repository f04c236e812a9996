"""open_clip `model_cfg` -> keras_towers constructor kwargs.

Supported: open_clip's standard `CLIP` class (the layout of OpenAI's CLIP and
of the LAION/DataComp ViT checkpoints): a ViT image tower with a class token,
learnable positional embeddings, `ln_pre`, class-token pooling and a
`visual.proj` matrix; a causal text transformer pooled at `argmax(ids)` (or
at `eos_id`) with a `text_projection` matrix (or an `nn.Linear` with bias
when `proj_bias`); `quick_gelu` or exact GELU; layer scale (`ls_init_value`,
folded into the output projections by `weights`); LayerNorm epsilon from
`norm_kwargs`; `logit_bias` (`init_logit_bias`, SigLIP-style training).

Everything else is refused with a `NotImplementedError` naming the field:
timm or Hugging Face trunks (`timm_model_name`, `hf_model_name`,
`custom_text`), CoCa (`multimodal_cfg`), attentional pooling, other pooling
types, custom attention blocks, non-learnable positional embeddings, ...
"""

from __future__ import annotations

import math

from keras_towers.converters.checks import square_size

# The transformer-block fields CLIPVisionCfg and CLIPTextCfg share, with
# their defaults, and what each would need when not left at it.
_BLOCK_DEFAULTS = {
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_UNSUPPORTED_BLOCK = {
    "act_kwargs": "custom activation arguments",
    "block_type": "a custom attention block",
    "qk_norm": "q/k LayerNorm",
    "scaled_cosine_attn": "scaled cosine attention",
    "scale_heads": "per-head attention scales",
    "scale_attn_inner": "a LayerNorm inside attention",
    "scale_attn": "a LayerNorm after attention",
    "scale_fc": "a LayerNorm inside the MLP",
}
# open_clip's dataclass defaults (model.py, CLIPVisionCfg / CLIPTextCfg).
VISION_DEFAULTS = {
    "layers": 12,
    "width": 768,
    "head_width": 64,
    "mlp_ratio": 4.0,
    "patch_size": 16,
    "image_size": 224,
    "ls_init_value": None,
    "patch_dropout": 0.0,
    "attentional_pool": False,
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "final_ln_after_pool": False,
    "pool_type": "tok",
    "output_tokens": False,
    **_BLOCK_DEFAULTS,
    "timm_model_name": None,
}
TEXT_DEFAULTS = {
    "context_length": 77,
    "vocab_size": 49408,
    "hf_tokenizer_name": None,
    "tokenizer_mode": None,
    "tokenizer_kwargs": None,
    "width": 512,
    "heads": 8,
    "layers": 12,
    "mlp_ratio": 4.0,
    "ls_init_value": None,
    "embed_cls": False,
    "pad_id": 0,
    "eos_id": 2,
    "no_causal_mask": False,
    "final_ln_after_pool": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "output_tokens": False,
    **_BLOCK_DEFAULTS,
    "hf_model_name": None,
}
# Fields that must keep their default: field -> what it would need.
_UNSUPPORTED_VISION = {
    "timm_model_name": "a timm image trunk",
    "attentional_pool": "an attentional pooler",
    "no_ln_pre": "a ViT without ln_pre",
    **_UNSUPPORTED_BLOCK,
}
_UNSUPPORTED_TEXT = {
    "hf_model_name": "a Hugging Face text trunk",
    "hf_tokenizer_name": "a Hugging Face tokenizer",
    "tokenizer_mode": "another tokenizer mode",
    "embed_cls": "a CoCa-style text CLS token",
    "no_causal_mask": "a non-causal text tower",
    **_UNSUPPORTED_BLOCK,
}
_UNSUPPORTED_TOP = {
    "custom_text": "the CustomTextCLIP layout (text weights under `text.`)",
    "multimodal_cfg": "a CoCa text decoder",
}
# Top-level keys read or harmless at inference.
_KNOWN_TOP = {
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "init_logit_scale",
    "init_logit_bias",
    "nonscalar_logit_scale",
    "cast_dtype",
    "output_dict",
    *_UNSUPPORTED_TOP,
}
_TEXT_POOLINGS = ("argmax", "eos")


def _refuse(field: str, value, needs: str) -> None:
    raise NotImplementedError(
        f"open_clip model_cfg field {field}={value!r} is not supported: it "
        f"needs {needs}, which keras_towers does not convert. Supported: "
        "open_clip's standard CLIP (ViT with class token + text transformer); "
        "see keras_towers.converters.open_clip."
    )


def _sub_config(model_cfg: dict, name: str, defaults: dict, unsupported: dict):
    given = model_cfg.get(name) or {}
    if not isinstance(given, dict):
        raise ValueError(
            f"open_clip model_cfg.{name} must be a dict. Received: {given!r}"
        )
    if name == "vision_cfg" and isinstance(given.get("layers"), (list, tuple)):
        _refuse(f"{name}.layers", given["layers"], "a ModifiedResNet image tower")
    unknown = sorted(set(given) - set(defaults) - _IGNORED.get(name, set()))
    if unknown:
        raise NotImplementedError(
            f"open_clip model_cfg.{name} has field(s) {unknown} that keras_towers "
            "does not know; refusing rather than converting them silently."
        )
    config = {**defaults, **given}
    for field, needs in unsupported.items():
        if field == "block_type" and config.get(field) == "default":
            continue
        if config.get(field) not in (None, False, {}, defaults.get(field)):
            _refuse(f"{name}.{field}", config[field], needs)
    return config


# Fields with no effect on the converted model's numbers: timm options when no
# timm trunk is used, the HF text-tower options when no HF trunk is used,
# `patch_dropout` (training only; see `convert_config`).
_IGNORED = {
    "vision_cfg": {
        "timm_model_pretrained",
        "timm_pool",
        "timm_proj",
        "timm_proj_bias",
        "timm_drop",
        "timm_drop_path",
        "attn_pooler_queries",
        "attn_pooler_heads",
    },
    "text_cfg": {"hf_model_pretrained", "hf_proj_type", "hf_pooler_type"},
}


def _epsilon(config: dict, name: str) -> float:
    norm = config.get("norm_kwargs") or {}
    unknown = sorted(set(norm) - {"eps"})
    if unknown:
        _refuse(f"{name}.norm_kwargs", norm, f"LayerNorm arguments {unknown}")
    return float(norm.get("eps", 1e-5))


def _heads(width: int, head_width: int) -> int:
    if width % head_width:
        raise ValueError(
            f"open_clip vision_cfg.width={width} is not a multiple of "
            f"head_width={head_width}."
        )
    return width // head_width


def convert_config(model_cfg: dict) -> dict:
    """open_clip `model_cfg` (a dict) -> keras_towers constructor kwargs.

    Returns a dict with `"image_backbone"`, `"text_backbone"`
    (`VisionTransformer` / `TextTransformer` kwargs), `"image_tower"`,
    `"text_tower"` (`ImageTower` / `TextTower` kwargs without the backbone),
    `"logit_scale_init"` (`exp(init_logit_scale)`), `"logit_bias_init"`
    (`None` without a logit bias), `"layer_scale"` (`{"image": bool,
    "text": bool}`), `"nonscalar_logit_scale"`, `"pad_id"`,
    `"patch_dropout"`.

    Example:

    ```python
    from keras_towers.converters import open_clip
    kwargs = open_clip.convert_config(
        json.load(open("open_clip_config.json"))["model_cfg"]
    )
    ```
    """
    if not isinstance(model_cfg, dict):
        raise ValueError(f"open_clip model_cfg must be a dict. Received: {model_cfg!r}")
    for field, needs in _UNSUPPORTED_TOP.items():
        if model_cfg.get(field):
            _refuse(field, model_cfg[field], needs)
    unknown = sorted(set(model_cfg) - _KNOWN_TOP)
    if unknown:
        raise NotImplementedError(
            f"open_clip model_cfg has field(s) {unknown} that keras_towers does "
            "not know; refusing rather than converting them silently."
        )
    if "embed_dim" not in model_cfg:
        raise ValueError("open_clip model_cfg has no embed_dim.")
    vision = _sub_config(model_cfg, "vision_cfg", VISION_DEFAULTS, _UNSUPPORTED_VISION)
    text = _sub_config(model_cfg, "text_cfg", TEXT_DEFAULTS, _UNSUPPORTED_TEXT)
    if vision["pool_type"] != "tok":
        _refuse("vision_cfg.pool_type", vision["pool_type"], "non-class-token pooling")
    if vision["pos_embed_type"] != "learnable":
        _refuse(
            "vision_cfg.pos_embed_type",
            vision["pos_embed_type"],
            "fixed (sin-cos) positional embeddings",
        )
    if text["pool_type"] not in _TEXT_POOLINGS:
        _refuse(
            "text_cfg.pool_type",
            text["pool_type"],
            f"pooling other than {_TEXT_POOLINGS}",
        )
    if text["proj_type"] != "linear":
        _refuse(
            "text_cfg.proj_type",
            text["proj_type"],
            "a text projection other than linear",
        )
    # `final_ln_after_pool` needs nothing: LayerNorm acts on each token alone,
    # so normalising the pooled token gives the numbers of pooling the
    # normalised sequence, for class-token and argmax/eos pooling alike.
    activation = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    image_size = square_size(vision["image_size"], "vision_cfg.image_size")
    patch_size = square_size(vision["patch_size"], "vision_cfg.patch_size")
    if image_size % patch_size:
        raise ValueError(
            f"open_clip vision_cfg.image_size={image_size} is not a multiple of "
            f"patch_size={patch_size}."
        )
    vision_width = int(vision["width"])
    text_width = int(text["width"])
    embed_dim = int(model_cfg["embed_dim"])
    text_pooling = (
        {"pooling": "argmax", "eos_token_id": None}
        if text["pool_type"] == "argmax"
        else {"pooling": "eos", "eos_token_id": int(text["eos_id"])}
    )
    init_scale = model_cfg.get("init_logit_scale", math.log(1 / 0.07))
    init_bias = model_cfg.get("init_logit_bias")
    return {
        "image_backbone": {
            "patch_size": patch_size,
            "hidden_dim": vision_width,
            "num_layers": int(vision["layers"]),
            "num_heads": _heads(vision_width, int(vision["head_width"])),
            "intermediate_dim": int(vision_width * float(vision["mlp_ratio"])),
            "intermediate_activation": activation,
            "image_shape": (image_size, image_size, 3),
            "layer_norm_epsilon": _epsilon(vision, "vision_cfg"),
        },
        "text_backbone": {
            "vocabulary_size": int(text["vocab_size"]),
            "embedding_dim": text_width,
            "hidden_dim": text_width,
            "num_layers": int(text["layers"]),
            "num_heads": int(text["heads"]),
            "intermediate_dim": int(text_width * float(text["mlp_ratio"])),
            "intermediate_activation": activation,
            "max_sequence_length": int(text["context_length"]),
            "layer_norm_epsilon": _epsilon(text, "text_cfg"),
        },
        "image_tower": {
            "pooling": "cls",
            "projection_dim": embed_dim,
            "head": "linear",
            "head_use_bias": False,
        },
        "text_tower": {
            **text_pooling,
            "projection_dim": embed_dim,
            "head": "linear",
            "head_use_bias": bool(text["proj_bias"]),
        },
        "logit_scale_init": math.exp(float(init_scale)),
        "logit_bias_init": None if init_bias is None else float(init_bias),
        "layer_scale": {
            "image": vision["ls_init_value"] is not None,
            "text": text["ls_init_value"] is not None,
        },
        "nonscalar_logit_scale": bool(model_cfg.get("nonscalar_logit_scale")),
        "pad_id": int(text["pad_id"]),
        "patch_dropout": float(vision["patch_dropout"] or 0.0),
    }
