"""What a corpus source is: the packages it reads and the pairs it yields.

Each source module (`tuxpaint`, `emoji_sets`, `clipart`) describes its
sources as `CorpusSource` values; `keras_towers.datasets.corpus` builds the
corpus from the registered ones. A source's `items(data_dir)` returns
`(items, skipped)`:

- `items`: dicts sorted by `id`, each with `id` (`"<source>:<key>"`),
  `caption` (primary English caption), `tags` (alternative captions, may be
  empty), `codepoint` (an emoji's normalised code point sequence, the key
  that keeps every style of one emoji in one split; `None` otherwise),
  `category`, `style`, and exactly one of `image` (path of a raster file) or
  `svg` (SVG text or the path of an `.svg` file, rendered by the corpus).
- `skipped`: reason -> sorted ids of what was left out.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

from keras_towers.datasets.npm import extract_package

# One extraction at a time: sources listed from several threads may share a
# package (every emoji source reads emojibase-data).
_EXTRACT_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Package:
    """An installed data package a source reads.

    Attributes:
        manager: `"npm"` (a tarball from `npm pack` kept in
            `<data_dir>/sources/`), `"debian"` (installed files) or `"pip"`.
        name: the package name (`"openmoji"`, `"openclipart-svg"`).
        version: the pinned version, or None where the distribution decides.
        location: npm: the tarball's file name; debian/pip: the directory
            (absolute, or overridden by `env`) the source reads.
        env: environment variable that overrides `location` (tests point it
            at tiny fake trees), or None.
    """

    manager: str
    name: str
    version: str | None
    location: str
    env: str | None = None

    def path(self, data_dir: Path) -> Path:
        """Where this package's files are on this machine."""
        if self.env and os.environ.get(self.env):
            return Path(os.environ[self.env]).expanduser().absolute()
        if self.manager == "npm":
            return Path(data_dir) / "sources" / self.location
        return Path(self.location)

    def install_hint(self) -> str:
        """The command that installs it."""
        if self.manager == "npm":
            return (
                "(mkdir -p <data_dir>/sources && cd <data_dir>/sources && "
                f"npm pack {self.name}@{self.version})"
            )
        if self.manager == "debian":
            return f"apt-get install {self.name}"
        return f"pip install --no-deps {self.name}=={self.version}"

    def extract(self, data_dir: Path, select: Callable[[str], bool]) -> Path:
        """Extract this npm package's files that `select` keeps into
        `<data_dir>/<tarball stem>/` (once: `npm.extract_package`) and return
        that directory.

        Raises:
            FileNotFoundError: the tarball is missing; the message names the
                command that installs it.
        """
        if self.manager != "npm":
            raise ValueError(f"{self.name} is a {self.manager} package, not npm.")
        tarball = self.path(data_dir)
        if not tarball.is_file():
            raise FileNotFoundError(
                f"The npm package {self.name}@{self.version} is not installed: "
                f"no {tarball}. Install it with "
                f"{self.install_hint().replace('<data_dir>', str(data_dir))} "
                "or run `bash scripts/setup.sh`."
            )
        dest = Path(data_dir) / tarball.name.removesuffix(".tgz")
        with _EXTRACT_LOCK:
            extract_package(tarball, dest, select)
        return dest


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    """One source of image-caption pairs.

    Attributes:
        name: the source name, the prefix of its items' ids.
        packages: the `Package`s it reads.
        license: the licence of its images (and captions).
        attribution: the credit line the licence asks for (README, cards).
        items: `items(data_dir) -> (items, skipped)` (module docstring).
        fractions: split -> fraction for concepts first seen in this source;
            None for the corpus default.
    """

    name: str
    packages: tuple[Package, ...]
    license: str
    attribution: str
    items: Callable[[Path], tuple[list[dict], dict[str, list[str]]]]
    fractions: dict[str, float] | None = None

    def missing(self, data_dir: Path) -> dict[str, str]:
        """`{package name: where it was looked for}` for absent packages."""
        out = {}
        for package in self.packages:
            where = package.path(data_dir)
            if not where.exists():
                out[package.name] = str(where)
        return out


def items_from_listing(listing: Callable, name: str) -> Callable:
    """A source's `items(data_dir)` from a family's `listing(name, data_dir)`
    returning `(items, skipped, meta)`: the first two."""

    def items(data_dir: Path):
        found, skipped, _ = listing(name, data_dir)
        return found, skipped

    items.__name__ = f"{name.replace('-', '_')}_items"
    items.__doc__ = f"The `{name}` items: `listing({name!r}, data_dir)[:2]`."
    return items
