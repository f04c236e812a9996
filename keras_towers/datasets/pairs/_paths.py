"""The files a reader is given: paths, globs or lists of those."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

PathsLike = str | os.PathLike | Sequence[str | os.PathLike]

_GLOB_CHARS = frozenset("*?[")


def _expand_paths(paths: PathsLike, argument: str = "path") -> list[str]:
    """Files named by a path, a glob, or a list of those; all must exist."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif not isinstance(paths, Sequence):
        raise TypeError(
            f"`{argument}` must be a path, a glob or a list of paths. "
            f"Received {type(paths).__name__}."
        )
    files = []
    for p in paths:
        p = os.path.expanduser(os.fsdecode(p))
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            raise IsADirectoryError(
                f"`{argument}` names a directory: {p}. Pass a glob such as "
                f"{os.path.join(p, '*.tar')!r}, or use `load_pairs({p!r})`."
            )
        elif _GLOB_CHARS & set(p):
            matches = sorted(m for m in glob.glob(p) if os.path.isfile(m))
            if not matches:
                raise FileNotFoundError(f"No files match the glob {p!r}.")
            files.extend(matches)
        else:
            raise FileNotFoundError(f"`{argument}` file not found: {p}")
    if not files:
        raise ValueError(f"`{argument}` names no files. Received: {paths!r}.")
    return files


def _describe(files: Sequence[str]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"


def _root_for(file: str, image_root) -> str:
    if image_root is not None:
        return os.path.expanduser(os.fsdecode(image_root))
    return os.path.dirname(os.path.abspath(file))
