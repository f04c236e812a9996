"""SVG artwork rendered once to PNG, cached by content.

`keras-towers data prepare` renders every SVG source (OpenMoji, iconify sets,
OpenClipart, Tux Paint's SVG-only stamps) with libvips (`pyvips` and the
`pyvips-binary` wheel, which bundles librsvg: the `data` extra) into
`<data_dir>/rendered/<source>/<sha256 of the SVG and size>.png`. The name
depends only on the SVG's bytes and the size, so re-running renders nothing
new, and a changed package renders only what changed. A file that fails to
render, or renders blank (fully transparent, or one flat colour), is recorded
next to the cache as `<name>.fail` with its reason and counted; it is not a
pair.

The PNG is the drawn area (the artwork's bounding box of non-transparent
pixels plus a 2% margin: many SVGs are a page with a small drawing on it),
with its alpha channel and aspect ratio, its longer side `size` pixels; decoding composites it onto white, as for every other
image (`keras_towers.datasets.decode_image`).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

#: Longer side of every rendered image, in pixels.
RENDER_SIZE = 128
#: Cached PNGs of this renderer version; bump when the rendering changes.
RENDER_VERSION = 2

_INSTALL = "pip install 'keras-towers[data]' (pyvips==3.2.0 pyvips-binary==8.18.7)"


class RendererMissingError(FileNotFoundError):
    """pyvips (with its bundled libvips) is not installed (a missing package,
    like `keras_towers.datasets.MissingDataError`)."""


def _pyvips():
    try:
        import pyvips
    except (ImportError, OSError) as e:
        raise RendererMissingError(
            f"Rendering SVG artwork needs pyvips with libvips: {_INSTALL} "
            f"(`bash scripts/setup.sh` installs it). Import failed: {e}"
        ) from e
    return pyvips


def svg_bytes(svg) -> bytes:
    """SVG bytes from bytes, SVG text or the path of an `.svg` file."""
    if isinstance(svg, bytes):
        return svg
    if isinstance(svg, str) and svg.lstrip().startswith("<"):
        return svg.encode("utf-8")
    return Path(svg).read_bytes()


def cache_name(svg_data: bytes, size: int = RENDER_SIZE) -> str:
    """The cache file stem of an SVG's bytes rendered at `size`."""
    digest = hashlib.sha256(svg_data)
    digest.update(f"|{size}|v{RENDER_VERSION}".encode())
    return digest.hexdigest()[:24]


def render_svg(svg_data: bytes, size: int = RENDER_SIZE) -> Image.Image:
    """Render SVG bytes to an RGBA `PIL.Image` whose longer side is `size`.

    libvips renders at twice `size`; the drawn area (alpha > 0, plus a 2%
    margin) is cropped and scaled down with premultiplied alpha.

    Raises `ValueError` with the reason when the SVG cannot be rendered or
    renders blank.
    """
    pyvips = _pyvips()
    try:
        probe = pyvips.Image.svgload_buffer(svg_data, access="sequential")
        scale = 2 * size / max(probe.width, probe.height, 1)
        image = pyvips.Image.svgload_buffer(svg_data, scale=scale, unlimited=True)
        # Rendered once: every later step reads these pixels (libvips is
        # lazy and would otherwise render the SVG again for each one).
        image = image.copy_memory()
        if image.bands == 3:
            image = image.bandjoin(255)
        if image.bands != 4:
            raise ValueError(f"{image.bands} bands after rendering")
        left, top, width, height = image.extract_band(3).find_trim(
            threshold=0, background=[0]
        )
        if width == 0 or height == 0:
            raise ValueError("blank: fully transparent")
        margin = max(1, round(0.02 * max(width, height)))
        left, top = max(0, left - margin), max(0, top - margin)
        width = min(image.width - left, width + 2 * margin)
        height = min(image.height - top, height + 2 * margin)
        image = image.crop(left, top, width, height)
        image = image.premultiply().resize(size / max(width, height))
        image = image.unpremultiply().cast("uchar").copy_memory()
        if image.width > size or image.height > size:  # rounding up
            image = image.crop(0, 0, min(image.width, size), min(image.height, size))
        pixels = image.numpy()
    except pyvips.Error as e:
        message = str(e).strip().splitlines()
        raise ValueError(message[0] if message else "libvips error") from e
    if not pixels[..., 3].any():
        raise ValueError("blank: fully transparent")
    # One flat colour once composited onto white: nothing to see.
    alpha = pixels[..., 3:].astype(np.float32) / 255.0
    flat = pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)
    if float(flat.std()) < 0.5:
        raise ValueError("blank: one flat colour")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGBA")


def render_to_cache(
    svg, cache_dir: str | os.PathLike, size: int = RENDER_SIZE
) -> tuple[str | None, str | None]:
    """Render one SVG (bytes, SVG text, or a path) into `cache_dir`.

    Returns `(png_path, None)` on success (also when already cached) or
    `(None, reason)` when it cannot be rendered or renders blank.
    """
    cache_dir = Path(cache_dir)
    try:
        data = svg_bytes(svg)
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    stem = cache_name(data, size)
    png, fail = cache_dir / f"{stem}.png", cache_dir / f"{stem}.fail"
    if png.is_file() and png.stat().st_size > 0:
        return str(png), None
    if fail.is_file():
        return None, fail.read_text("utf-8").strip() or "failed"
    try:
        image = render_svg(data, size)
    except ValueError as e:
        fail.write_text(str(e) + "\n", encoding="utf-8")
        return None, str(e)
    partial = png.with_name(f"{png.name}.partial-{os.getpid()}-{id(image)}.png")
    image.save(partial, format="PNG", compress_level=6)
    os.replace(partial, png)
    return str(png), None


def prune_cache(cache_dir: str | os.PathLike, keep: list[str]) -> int:
    """Delete cached renders in `cache_dir` whose stem (`cache_name`) is not
    in `keep`: those of an older renderer version or of artwork no longer in
    a package. Returns how many files went."""
    cache_dir = Path(cache_dir)
    keep_stems = {Path(p).stem for p in keep if p}
    removed = 0
    for path in cache_dir.glob("*"):
        if path.suffix in (".png", ".fail") and path.stem not in keep_stems:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def render_many(
    svgs: list, cache_dir: str | os.PathLike, size: int = RENDER_SIZE, workers=None
) -> list[tuple[str | None, str | None]]:
    """`render_to_cache` over many SVGs on a thread pool, in order.

    libvips renders outside the GIL, so threads use every core.
    """
    _pyvips()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    if workers == 1 or len(svgs) < 2:
        return [render_to_cache(s, cache_dir, size) for s in svgs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda s: render_to_cache(s, cache_dir, size), svgs))
