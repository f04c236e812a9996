"""File helpers shared by presets, backups, caches and reports.

Every file the library writes goes through `atomic_write`: it is written to a
temporary name next to its destination, flushed to disk and renamed over the
destination, so a reader never sees half a file and a write that fails (a
full disk, a killed process) leaves the previous file as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: `errno` values meaning "no room left to write".
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full.

    Raised by `atomic_write` and its users, with the low-level `OSError` as
    `__cause__`. The destination file is left as it was before the write.
    `errno` is `ENOSPC` and `filename` the file that could not be written.
    """

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def sha256_file(path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_sibling(path) -> Path:
    """A fresh hidden name next to `path` that ends with `path`'s name, so
    writers that look at the extension (`save_weights`, `savefig`) accept
    it."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}.{path.name}")


def atomic_write(
    path,
    write: Callable,
    mode: str = "wb",
    pass_path: bool = False,
) -> Path:
    """Write a file through `write` without ever leaving half of it.

    `write` writes to a temporary sibling of `path`, which is then flushed to
    disk and renamed over `path`; on any error the temporary is removed, the
    previous `path` (if any) is left untouched and the error re-raised. The
    parent directory is created. Local paths only.

    Args:
        path: str or `Path`. The destination.
        write: callable. Receives an open file object (opened with `mode`),
            or with `pass_path=True` the temporary path as a str (for
            writers that open the file themselves: `h5py`,
            `keras.Model.save_weights`, `Figure.savefig`).
        mode: str. `"wb"` or `"w"` (text, UTF-8) when `write` gets a file.
        pass_path: bool. Pass the temporary path instead of a file object.

    Returns:
        `path` as a `Path`.

    Raises:
        DiskFullError: the disk or the quota is full (`ENOSPC`/`EDQUOT`),
            naming `path`.

    Example:

    ```python
    keras_towers.utils.io.atomic_write("notes.txt", lambda f: f.write("hi"), "w")
    ```
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if pass_path:
            write(str(tmp))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            encoding = None if "b" in mode else "utf-8"
            with open(tmp, mode, encoding=encoding) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if is_disk_full(error):
            raise disk_full_error(path, error) from error
        raise
    _fsync_directory(path.parent)
    return path


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is `ENOSPC`/`EDQUOT`
    (writers such as h5py re-raise the low-level error)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return False  # already explained
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path, cause: BaseException | None = None) -> DiskFullError:
    """The `DiskFullError` for a failed write of `path`."""
    detail = f" ({cause})" if cause is not None else ""
    return DiskFullError(
        errno.ENOSPC,
        f"No space left to write {path}: the disk (or your quota) is full"
        f"{detail}. The previous version of the file, if any, is untouched. "
        "Free some space (or write elsewhere) and run again.",
        str(path),
    )


def check_free_space(directory, needed_bytes: int) -> None:
    """Raise `DiskFullError` before writing `needed_bytes` into `directory`
    when the disk has less than that free: some writers (HDF5) fail badly
    when the disk fills up under them."""
    directory = Path(directory)
    free = _free_bytes(directory if directory.exists() else directory.parent)
    if free is not None and free < needed_bytes:
        raise DiskFullError(
            errno.ENOSPC,
            f"Not enough space to write to {directory}: {needed_bytes} bytes "
            f"needed, {free} free. Nothing was written and the previous files "
            "are untouched. Free some space (or write elsewhere) and run again.",
            str(directory),
        )


def _free_bytes(directory) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _fsync_directory(directory) -> None:
    """Make a rename durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path, data) -> None:
    """Write `data` as indented, key-sorted JSON (NumPy scalars and arrays
    converted), creating the parent directory, atomically (`atomic_write`):
    a reader never sees half a file, and an interrupted write leaves the old
    file."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_to_builtin) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
