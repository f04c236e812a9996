"""Presets: named, versioned model directories, and loading them.

A preset is a directory in keras-hub's layout:

- `config.json`: the serialized model (towers, preprocessor, options);
- `model.weights.h5`: the weights (a safe format; no pickles), without the
  optimizer and without towers the model only *references* by name (their
  frozen weights come from their own source, see
  `ContrastiveModel.referenced_objects`);
- `assets/tokenizer/`: tokenizer vocabulary files, when the tokenizer has any;
- `metadata.json`: class, versions, parameter counts, description, metrics,
  `files_sha256` (the sha256 of every file above) and `referenced_encoders`
  (for each registered encoder the model references: its package, version,
  weight file and that file's sha256).

Loading is strict. Every file is checked against its sha256 (a preset
without checksums is refused unless `verify_checksums=False`); every weight
stored must be a variable of the model the config builds, with its shape, and
every variable must have a stored weight; the installed weights of every
referenced encoder must be those the preset was saved with (unless
`verify_encoders=False`).

Saving is atomic: a new preset is written whole under a hidden sibling name,
then moved into place (see `save`), so a failed or interrupted save never
leaves half a preset under the real name nor damages the previous one.

One format and one metadata schema for every method. Shipped presets live in
the package (`keras_towers/shipped_presets/<name>/`), so an installed wheel
resolves their names; users register their own directories with
`register_preset`.

This module imports no model and no converter. Directories in an external
checkpoint format (a `config.json` with a `model_type`, as transformers
writes, or a format's own marker file such as open_clip's
`open_clip_config.json`) are handed to the loader registered for that format
in `FORMAT_LOADERS` (`external_format` finds it; both live in
`keras_towers.checkpoint_formats` and are re-exported here);
`keras_towers.converters` registers them.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
from keras.src.saving import saving_lib

from keras_towers.checkpoint_formats import FORMAT_LOADERS
from keras_towers.checkpoint_formats import CheckpointFormat
from keras_towers.checkpoint_formats import external_format
from keras_towers.checkpoint_formats import register_format
from keras_towers.pretrained.registry import ENCODERS
from keras_towers.pretrained.registry import weights_mismatch
from keras_towers.pretrained.registry import weights_record
from keras_towers.utils.io import read_json
from keras_towers.utils.io import sha256_file
from keras_towers.utils.io import write_json
from keras_towers.version import __version__
from keras_towers_entry.presets import METADATA_FILE
from keras_towers_entry.presets import presets_dir
from keras_towers_entry.presets import shipped_presets

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
TOKENIZER_ASSETS = os.path.join("assets", "tokenizer")
#: `metadata.json` key: source -> `pretrained.registry.weights_record(source)`.
ENCODERS_KEY = "referenced_encoders"
#: Weight-bearing files: each one in a preset directory must have a sha256.
_DATA_SUFFIXES = (".h5", ".safetensors")

_USER_PRESETS: dict[str, dict] = {}
_SHIPPED_CACHE: dict[str, dict] | None = None

__all__ = [
    "FORMAT_LOADERS",
    "CheckpointFormat",
    "all_presets",
    "list_presets",
    "external_format",
    "load",
    "presets_dir",
    "register_format",
    "register_preset",
    "resolve",
    "save",
    "sha256_file",
]


def _shipped() -> dict[str, dict]:
    """Shipped presets (read once): name -> `{"path", "metadata"}`."""
    global _SHIPPED_CACHE
    if _SHIPPED_CACHE is None:
        _SHIPPED_CACHE = shipped_presets(presets_dir())
    return _SHIPPED_CACHE


def register_preset(name: str, path: str) -> None:
    """Register a preset directory under a name, for `from_preset(name)`."""
    metadata_path = Path(path) / METADATA_FILE
    if not metadata_path.is_file():
        raise ValueError(
            f"{path!r} is not a keras_towers preset directory (no "
            f"{METADATA_FILE}). Write one with `model.save_to_preset(path)`."
        )
    _USER_PRESETS[name] = {"path": str(path), "metadata": read_json(metadata_path)}


def _all() -> dict[str, dict]:
    return {**_shipped(), **_USER_PRESETS}


def _registered_class(class_name: str):
    return keras.saving.get_registered_object(f"keras_towers>{class_name}")


def _class_matches(cls, class_name: str) -> bool:
    registered = _registered_class(class_name)
    return registered is not None and issubclass(registered, cls)


def list_presets(cls) -> dict[str, dict]:
    """Presets whose model class is `cls` or a subclass: name -> metadata."""
    return {
        name: entry["metadata"]
        for name, entry in sorted(_all().items())
        if _class_matches(cls, entry["metadata"].get("class_name", ""))
    }


def all_presets() -> dict[str, dict]:
    """Every shipped and registered preset: name -> metadata."""
    return {name: entry["metadata"] for name, entry in sorted(_all().items())}


def resolve(cls, preset: str) -> Path:
    """A preset name or directory -> the directory, or a clear error."""
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(
            "`preset` must be a preset name or a directory path. "
            f"Received: {type(preset).__name__}: {preset!r}"
        )
    preset = os.fspath(preset)
    presets = _all()
    if preset in presets:
        return Path(presets[preset]["path"])
    if os.path.isdir(preset):
        return Path(preset)
    known = sorted(list_presets(cls))
    raise ValueError(
        f"Unknown preset {preset!r} for {cls.__name__}: it is neither a shipped "
        f"preset nor a directory. Known presets: {known or 'none yet'}. "
        "Pass a directory written by `save_to_preset` or a checkpoint "
        f"directory in a supported format ({FORMAT_LOADERS.names()})."
    )


def _expected_digests(metadata: dict) -> dict[str, str]:
    """File -> sha256 from any schema this package has written."""
    expected = dict(metadata.get("files_sha256") or {})
    if metadata.get("weights_sha256"):  # written before files_sha256 existed
        expected.setdefault(WEIGHTS_FILE, metadata["weights_sha256"])
    return expected


_OPT_OUT = (
    "If you trust these files, load them with `from_preset({preset!r}, "
    "verify_checksums=False)` and save them again with `save_to_preset` to "
    "record their checksums."
)


def _required_digests(path: Path, metadata: dict) -> list[str]:
    """Files that loading reads and that must therefore have a sha256: every
    weight-bearing file, and with the `files_sha256` schema of a current
    preset (one with `model.weights.h5`) also `config.json` and the
    tokenizer assets. Older schemas covered only their weight files."""
    required = {
        f.name for f in path.iterdir() if f.is_file() and f.suffix in _DATA_SUFFIXES
    }
    if metadata.get("files_sha256") and (path / WEIGHTS_FILE).is_file():
        required.add(CONFIG_FILE)
        assets = path / TOKENIZER_ASSETS
        if assets.is_dir():
            required.update(_files_under(assets, path))
    return sorted(required)


def check_files(path: Path, preset: str, metadata: dict | None) -> None:
    """Raise unless every file loading reads has a sha256 in `metadata`
    (`None`: there is no `metadata.json`) and matches it."""
    opt_out = _OPT_OUT.format(preset=preset)
    if metadata is None:
        raise ValueError(
            f"Preset {preset!r} ({path}) has no {METADATA_FILE}, so its files "
            "cannot be checked against their sha256: it is incomplete (an "
            "interrupted copy or save) or was not written by `save_to_preset`."
            f"{_interrupted_save_hint(path)} {opt_out}"
        )
    expected = _expected_digests(metadata)
    if not expected:
        raise ValueError(
            f"The {METADATA_FILE} of preset {preset!r} ({path}) records no "
            "checksum (neither `files_sha256` nor `weights_sha256`), so its "
            f"files cannot be verified. {opt_out}"
        )
    unlisted = [f for f in _required_digests(path, metadata) if f not in expected]
    if unlisted:
        raise ValueError(
            f"The {METADATA_FILE} of preset {preset!r} ({path}) has no sha256 "
            f"for {unlisted} (`files_sha256` lists {sorted(expected)}), so "
            f"these files cannot be verified. {opt_out}"
        )
    for filename, digest in sorted(expected.items()):
        file = path / filename
        if not file.is_file():
            raise ValueError(
                f"Preset {preset!r} ({path}) lacks {filename}, which its "
                f"{METADATA_FILE} lists: the directory is incomplete."
            )
        if sha256_file(file) != digest:
            raise ValueError(
                f"{filename} of preset {preset!r} ({file}) does not match the "
                f"sha256 in its {METADATA_FILE}: the file is corrupt or was "
                "changed after saving."
            )


def _interrupted_save_hint(path: Path) -> str:
    left = sorted(path.parent.glob(f".{path.name}.replaced-*"))
    if not left:
        return ""
    return (
        f" A save into it was interrupted; the previous version is in "
        f"{str(left[-1])!r}."
    )


def check_encoders(preset: str, metadata: dict | None) -> None:
    """Raise if a referenced encoder recorded in `metadata` is installed with
    other weights than the preset was saved with."""
    records = (metadata or {}).get(ENCODERS_KEY) or {}
    problems = [
        problem
        for source, record in sorted(records.items())
        if (problem := weights_mismatch(source, record)) is not None
    ]
    if problems:
        raise ValueError(
            f"Preset {preset!r} references frozen encoders whose installed "
            f"weights differ from those it was saved with: {'; '.join(problems)}. "
            "Its embeddings would not be the ones it was trained and evaluated "
            "with. Install the recorded package version, or pass "
            f"`from_preset({preset!r}, verify_encoders=False)` to load it with "
            "the installed weights anyway."
        )


def _referenced_sources(model) -> list[str]:
    """The string values of the model's `*_source` arguments (registered
    encoder names, backbone preset directories, `preset#tower` references)."""
    config = model.get_config()
    return sorted(
        {
            value
            for key, value in config.items()
            if key.endswith("_source") and isinstance(value, str)
        }
    )


def _encoder_records(model) -> dict[str, dict]:
    records = {}
    for source in _referenced_sources(model):
        record = weights_record(source)
        if record is not None:
            records[source] = record
    return records


def _warn_unrecorded_encoders(model, preset: str, metadata: dict | None) -> None:
    records = (metadata or {}).get(ENCODERS_KEY) or {}
    unrecorded = [
        source
        for source in _referenced_sources(model)
        if source not in records and _has_weights_record(source)
    ]
    if unrecorded:
        warnings.warn(
            f"Preset {preset!r} does not record which weights of the "
            f"referenced encoders {unrecorded} it was saved with (it predates "
            "these records), so they were not verified. Save it again with "
            "`save_to_preset` to record them.",
            stacklevel=4,
        )


def _has_weights_record(source: str) -> bool:
    return source in ENCODERS and ENCODERS.get(source).weights_file is not None


def preset_class(cls, preset: str):
    """The registered class a keras_towers preset holds, checked against
    `cls`; `None` for a directory in an external format."""
    path = resolve(cls, preset)
    if external_format(path) is not None:
        return None
    return _target_class(cls, preset, _read_config(path))


def _read_config(path: Path) -> dict:
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"Preset directory {str(path)!r} has no {CONFIG_FILE}.")
    return read_json(config_path)


def _target_class(cls, preset: str, config: dict):
    registered = config.get("registered_name") or ""
    target = keras.saving.get_registered_object(registered)
    if target is None:
        raise ValueError(
            f"Preset {preset!r} holds a {registered or config.get('class_name')!r}, "
            "which is not a registered keras_towers class (import the module "
            "that defines it first)."
        )
    if not issubclass(target, cls):
        raise ValueError(
            f"Preset {preset!r} holds a {registered or config.get('class_name')!r}, "
            f"which is not a {cls.__name__}. Load it with its own class, or "
            "with `keras_towers.ContrastiveModel.from_preset`."
        )
    return target


def load(
    cls,
    preset: str,
    load_weights: bool = True,
    verify_checksums: bool = True,
    verify_encoders: bool = True,
    **kwargs,
):
    """Load a preset as `cls` (or the subclass recorded in it).

    Args:
        cls: the class `from_preset` was called on.
        preset: a preset name or directory.
        load_weights: bool. Load the weights, or only the architecture.
        verify_checksums: bool. Check every file against its sha256 and
            refuse a preset without checksums. `False` skips the check (for
            files changed on purpose); the weights must still fit the model.
        verify_encoders: bool. Check that the referenced frozen encoders are
            installed with the weights the preset was saved with.
        **kwargs: config overrides.
    """
    path = resolve(cls, preset)
    checkpoint_format = external_format(path)
    if checkpoint_format is not None:
        return checkpoint_format.load(
            path, cls=cls, load_weights=load_weights, **kwargs
        )
    config = _read_config(path)

    _target_class(cls, preset, config)
    metadata_path = path / METADATA_FILE
    metadata = read_json(metadata_path) if metadata_path.is_file() else None
    if load_weights and verify_checksums:
        check_files(path, preset, metadata)
    if verify_encoders:
        check_encoders(preset, metadata)
    if kwargs:
        config = dict(config)
        config["config"] = {**config["config"], **kwargs}
    model = _build(config, preset, path)
    if verify_encoders:
        _warn_unrecorded_encoders(model, preset, metadata)
    assets = path / TOKENIZER_ASSETS
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if assets.is_dir() and tokenizer is not None and hasattr(tokenizer, "load_assets"):
        tokenizer.load_assets(str(assets))
    if load_weights:
        weights = path / WEIGHTS_FILE
        legacy = getattr(model, "load_legacy_preset_files", None)
        if weights.is_file():
            check_weights_fit(model, weights, preset, _skipped_objects(model))
            model.load_weights(str(weights))
        elif legacy is not None:
            legacy(path)
        else:
            raise ValueError(
                f"Preset {preset!r} ({path}) has no {WEIGHTS_FILE}. Pass "
                "`load_weights=False` to build the architecture only."
            )
    return model


# === Strict weights ===


class _ShapeRecorder(saving_lib.H5IOStore):
    """A write-only weights store that records the dataset path and shape of
    every weight Keras would write, without copying any value: what a
    `.weights.h5` of the model holds, at the cost of a walk over the model.
    Shapes are kept for variables only (layers may store arrays of any
    length, e.g. ASIF's anchors)."""

    def __init__(self):
        self.mode = "w"
        self.shapes: dict[str, tuple | None] = {}
        self._prefix = "vars"

    def __bool__(self):
        return True

    def make(self, path, metadata=None):
        self._prefix = f"{path}/vars" if path else "vars"
        return self

    def __setitem__(self, key, value):
        shape = tuple(value.shape) if isinstance(value, keras.Variable) else None
        self.shapes[f"{self._prefix}/{key}"] = shape

    def close(self):
        pass


def expected_weights(model, skip=()) -> dict[str, tuple | None]:
    """Dataset path -> shape (`None`: any) of every weight a `.weights.h5` of
    `model` holds when `skip` objects are left out (as `save` leaves them)."""
    recorder = _ShapeRecorder()
    saving_lib._save_state(
        model,
        weights_store=recorder,
        assets_store=None,
        inner_path="",
        visited_saveables={id(obj) for obj in skip},
    )
    return recorder.shapes


def _stored_weights(weights_file: Path) -> dict[str, tuple]:
    stored = {}
    with h5py.File(weights_file, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                stored[name] = tuple(obj.shape)

        f.visititems(visit)
    return stored


def check_weights_fit(model, weights_file, preset: str, skip=()) -> None:
    """Raise unless `weights_file` holds exactly the weights of `model` (less
    `skip`): no stored weight left unused, no variable left unassigned, and
    every shape equal. Keras' own loading ignores unused stored weights.

    Stored weights that loading skips on purpose are allowed: an optimizer's
    state (older presets kept it) and the weights of `skip` objects
    (referenced towers and training state, which older presets stored)."""
    expected = expected_weights(model, skip)
    stored = _stored_weights(Path(weights_file))
    skipped = set(expected_weights(model)) - set(expected) if skip else set()
    # Arrays whose names depend on the content (ASIF's anchor storage); the
    # model checks them itself when it loads them.
    free_form = getattr(model, "is_free_form_weight", None)
    if free_form is not None:
        expected = {k: v for k, v in expected.items() if not free_form(k)}
        stored = {k: v for k, v in stored.items() if not free_form(k)}
    unused = sorted(
        name
        for name in set(stored) - set(expected)
        if name not in skipped and not name.startswith("optimizer/")
    )
    unassigned = sorted(set(expected) - set(stored))
    reshaped = [
        f"{name!r}: stored {stored[name]}, model {shape}"
        for name, shape in sorted(expected.items())
        if name in stored and shape is not None and stored[name] != shape
    ]
    if not (unused or unassigned or reshaped):
        return
    parts = []
    for what, items in (
        ("stored weights the model has no variable for", unused),
        ("model variables with no stored weight", unassigned),
        ("weights whose shapes differ", reshaped),
    ):
        if items:
            shown = ", ".join(str(i) for i in items[:5])
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            parts.append(f"{len(items)} {what} ({shown}{more})")
    raise ValueError(
        f"The weights of preset {preset!r} ({weights_file}) do not fit the "
        f"model its {CONFIG_FILE} builds: {'; '.join(parts)}. The config and "
        "the weights come from different models (an edited config.json, a "
        "config override, or files from different saves); nothing was loaded. "
        "Restore the preset's own files, or save it again with "
        "`save_to_preset` from the model that holds these weights."
    )


def _skipped_objects(model) -> list:
    """Layers presets leave out: referenced towers and training state."""
    skipped = []
    for hook in ("referenced_objects", "training_state_objects"):
        fn = getattr(model, hook, None)
        skipped += fn() if fn is not None else []
    return skipped


def _build(config: dict, preset: str, path: Path):
    """The model a config describes, in Keras' safe mode: a config naming a
    function or class that is not a registered Keras / keras_towers object
    (or a Lambda with bytecode) is refused, and nothing in it runs."""
    try:
        return keras.saving.deserialize_keras_object(config, safe_mode=True)
    except (TypeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        # Keras suggests turning safe mode off; a preset never needs that.
        reason = reason.split(" If you trust the source")[0]
        raise ValueError(
            f"Preset {preset!r}: {path / CONFIG_FILE} does not describe a model "
            f"keras_towers can build safely ({reason}). Configs may name only "
            "registered Keras, keras-hub and keras_towers objects; nothing in "
            "this one was run. Restore the preset's own config.json."
        ) from error


def _save_weights_without_optimizer(model, path, referenced=()) -> None:
    """Model weights only: a compiled model's optimizer state (2x the model
    for Adam) is training state, not part of a preset, and `referenced`
    layers' weights live in their own presets (frozen towers) or are
    training state too (`training_state_objects`)."""
    skip = list(referenced)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        skip.append(optimizer)
    saving_lib.save_weights_only(model, str(path), objects_to_skip=skip or None)


def _files_under(path: Path, root: Path) -> list[str]:
    if path.is_file():
        return [path.relative_to(root).as_posix()]
    return sorted(
        p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file()
    )


def save(model, preset_dir: str, description: str = "", **metadata) -> None:
    """Write `model` as a preset directory (see the module docstring).

    The preset is written whole into a hidden sibling directory first
    (`.<name>.saving-*`), `metadata.json` last. Then:

    - if `preset_dir` does not exist, the sibling is renamed to it;
    - if it exists (an older version, or a training output directory that
      also holds other files), the files of the old preset (`config.json`,
      the weights, `assets/tokenizer/`, the files its metadata lists) are
      moved aside into `.<name>.replaced-*`, `metadata.json` first, the new
      ones moved in, `metadata.json` last, and the old ones deleted. Other
      files (a `README.md` card, training logs) are left alone.

    Any error (a full disk, an unwritable directory) removes the sibling and
    puts the old files back, so `preset_dir` stays as it was. A process
    killed while the files are being moved (a few renames) leaves the
    directory without `metadata.json`, which loading refuses, naming the
    `.replaced-*` directory that holds the previous version.
    """
    target = Path(preset_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "saving")
    try:
        staging.mkdir()
        names = _write_preset(model, staging, description, metadata)
        _commit(staging, target, names)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception):
            error.add_note(
                f"Saving the preset {str(target)!r} failed; nothing under that "
                "name was changed."
            )
        raise


def _sibling(target: Path, kind: str) -> Path:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}.{kind}-{token}")


def _write_preset(model, path: Path, description: str, metadata: dict) -> list[str]:
    """Write every file of the preset into `path` (metadata last); return
    the top-level names written."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    config.pop("build_config", None)
    write_json(path / CONFIG_FILE, config)
    referenced = _skipped_objects(model)
    _save_weights_without_optimizer(model, path / WEIGHTS_FILE, referenced)
    files = [CONFIG_FILE, WEIGHTS_FILE]
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "save_assets"):
        assets = path / TOKENIZER_ASSETS
        assets.mkdir(parents=True, exist_ok=True)
        tokenizer.save_assets(str(assets))
        files += _files_under(assets, path)
    extra_fn = getattr(model, "preset_metadata", None)
    extra = extra_fn() if extra_fn is not None else {}
    meta = {
        "class_name": type(model).__name__,
        "description": description,
        "keras_towers_version": __version__,
        "keras_version": keras.__version__,
        "parameter_count": int(model.count_params()),
        "date": datetime.date.today().isoformat(),
        "files_sha256": {f: sha256_file(path / f) for f in files},
        **extra,
        **metadata,
    }
    records = _encoder_records(model)
    if records:
        meta[ENCODERS_KEY] = records
    if referenced:
        meta["stored_parameter_count"] = int(model.count_params()) - sum(
            int(np.prod(v.shape)) for layer in referenced for v in layer.weights
        )
    write_json(path / METADATA_FILE, meta)
    return sorted({Path(f).parts[0] for f in files} | {METADATA_FILE})


def _move(source: Path, destination: Path) -> None:
    os.replace(source, destination)


def _old_preset_entries(target: Path) -> list[str]:
    """Top-level entries of the preset in `target` that a new save replaces,
    `metadata.json` first (without it the directory is not loadable, so an
    interrupted replacement is never mistaken for a preset)."""
    owned = {CONFIG_FILE, WEIGHTS_FILE}
    metadata_path = target / METADATA_FILE
    if metadata_path.is_file():
        try:
            listed = _expected_digests(read_json(metadata_path))
        except ValueError:  # unreadable JSON: nothing more is known to be ours
            listed = {}
        owned.update(Path(f).parts[0] for f in listed if f)
    owned.discard("assets")  # only the tokenizer's part is ours
    entries = [METADATA_FILE] if metadata_path.exists() else []
    entries += sorted(name for name in owned if (target / name).exists())
    if (target / TOKENIZER_ASSETS).exists():
        entries.append(TOKENIZER_ASSETS)
    return entries


def _commit(staging: Path, target: Path, names: list[str]) -> None:
    """Move the complete preset in `staging` to `target` (see `save`)."""
    if not target.exists():
        _move(staging, target)
        return
    if not target.is_dir():
        raise FileExistsError(
            f"Cannot save a preset to {str(target)!r}: it exists and is not a "
            "directory. Choose another path or remove it."
        )
    replaced = _sibling(target, "replaced")
    moved_out: list[str] = []
    moved_in: list[str] = []
    new_entries = [n for n in names if n != METADATA_FILE]
    if (staging / TOKENIZER_ASSETS).exists():
        new_entries = [n for n in new_entries if n != "assets"] + [TOKENIZER_ASSETS]
    try:
        replaced.mkdir()
        for name in _old_preset_entries(target):
            (replaced / name).parent.mkdir(parents=True, exist_ok=True)
            _move(target / name, replaced / name)
            moved_out.append(name)
        for name in [*new_entries, METADATA_FILE]:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            _move(staging / name, target / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            _move(target / name, staging / name)
        for name in reversed(moved_out):
            _move(replaced / name, target / name)
        shutil.rmtree(replaced, ignore_errors=True)
        raise
    shutil.rmtree(replaced, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
