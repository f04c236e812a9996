"""Checks every converter makes: square sizes, and a checkpoint copied whole.

Each converter maps its checkpoint's tensors onto Keras variables its own
way; what must hold afterwards is the same for all of them: every checkpoint
tensor was read (else the directory holds a model the config does not
describe) and every Keras variable was set (else the model would keep part
of its random initialisation).
"""

from __future__ import annotations


def square_size(value, field: str) -> int:
    """An image or patch size given as an int or an `(h, w)` pair, as one
    int; `NotImplementedError` naming `field` for a non-square pair."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise NotImplementedError(
                f"Only square sizes are supported. Received: {field}={list(value)}."
            )
        value = value[0]
    return int(value)


def check_complete(model, reader, assigned_ids, skipped=(), layout: str = "") -> None:
    """`ValueError` for a checkpoint tensor `reader` never read, or a
    variable of `model` neither in `assigned_ids` (ids of the variables the
    converter set) nor in `skipped` (buffers it must not set).

    Args:
        model: the converted Keras model.
        reader: the `CheckpointReader` the converter read through.
        assigned_ids: set of `id(variable)` the converter assigned.
        skipped: variables deliberately left alone (e.g. position-id buffers).
        layout: what the checkpoint was expected to be, for the message
            ("a plain CLIPModel checkpoint").
    """
    unused = sorted(set(reader.keys()) - reader.used)
    if unused:
        hint = f" (not {layout}?)" if layout else ""
        raise ValueError(
            f"{len(unused)} tensor(s) in {str(reader.path)!r} match no Keras "
            f"variable{hint}: {unused}."
        )
    skipped_ids = {id(variable) for variable in skipped}
    unset = [
        w.path
        for w in model.weights
        if id(w) not in assigned_ids and id(w) not in skipped_ids
    ]
    if unset:
        raise ValueError(f"Keras variables left unset by the converter: {unset}.")


def target_class(path, cls, default: type, family: type, checkpoint: str) -> type:
    """The class a converter builds for `from_preset` called on `cls`.

    `default` when `cls` is `None` or a base class of `default` (e.g.
    `ContrastiveModel.from_preset(dir)`); `cls` itself when it is a subclass
    of `family` (e.g. `SigLIP` for a CLIP checkpoint); otherwise a
    `ValueError` naming the checkpoint (`checkpoint`, e.g. "a transformers
    CLIP checkpoint") and the class it loads into.
    """
    if cls is None:
        return default
    if isinstance(cls, type):
        if issubclass(default, cls):
            return default
        if issubclass(cls, family):
            return cls
    name = getattr(cls, "__name__", repr(cls))
    raise ValueError(
        f"{str(path)!r} is {checkpoint}, which loads into keras_towers."
        f"{family.__name__} (or a subclass, or through a base class such as "
        f"keras_towers.ContrastiveModel), not {name}. Load it with "
        f"`keras_towers.{family.__name__}.from_preset`."
    )
