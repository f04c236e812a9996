"""Reading PyTorch checkpoints (`.bin` / `.pth`) without running their code.

`torch.load(weights_only=True)` refuses pickled objects other than tensors
and plain containers, but its message suggests `weights_only=False`, which
would run whatever the file holds. `load_torch_checkpoint` keeps the refusal
and replaces the advice: keras_towers never runs code from a checkpoint.
"""

from __future__ import annotations

import pickle
import warnings


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled objects that are not weights."""


def _reason(message: str) -> str:
    """torch's specific reason, without its generic advice."""
    for line in message.splitlines():
        line = line.strip()
        if not line or line.startswith(("Weights only load failed", "Check the doc")):
            continue
        return line.rstrip(".")
    return "it holds pickled objects other than tensors"


def load_torch_checkpoint(path) -> dict:
    """`torch.load(path, map_location="cpu", weights_only=True)`, with a
    refused pickle raised as `UnsafeCheckpointError` naming the file.

    Args:
        path: path of a `.bin` / `.pth` file (zip or legacy pickle format).

    Returns:
        What the file holds: a state dict of tensors.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {str(path)!r}, a pickle-based PyTorch checkpoint, needs "
            "PyTorch (the CPU build is enough): `pip install keras-towers[torch]`, "
            "or convert the file to safetensors."
        ) from error
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not support; the
            # error below, if any, says what matters.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"Refused to load {str(path)!r}: {_reason(str(error))}. keras_towers "
            "reads only tensors from pickle-based checkpoints and never runs "
            "code from them. If the file is a checkpoint you trust, convert it "
            "to safetensors in a separate, sandboxed process; otherwise delete it."
        ) from None
