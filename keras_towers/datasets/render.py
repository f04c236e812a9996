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
import pickle
import subprocess
import sys
import tempfile
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


def _cached(data: bytes, cache_dir: Path, size: int):
    """`(png_path, fail_path, answer)` of an SVG's bytes in `cache_dir`:
    `answer` is `render_to_cache`'s when already cached, else None."""
    stem = cache_name(data, size)
    png, fail = cache_dir / f"{stem}.png", cache_dir / f"{stem}.fail"
    if png.is_file() and png.stat().st_size > 0:
        return png, fail, (str(png), None)
    if fail.is_file():
        return png, fail, (None, fail.read_text("utf-8").strip() or "failed")
    return png, fail, None


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
    png, fail, answer = _cached(data, cache_dir, size)
    if answer is not None:
        return answer
    cache_dir.mkdir(parents=True, exist_ok=True)
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


#: Fewer SVGs to render than this are rendered in this process: starting
#: the worker processes costs about as much as rendering a few dozen.
PROCESS_POOL_MIN = 64

# A worker runs this file as a script, not `keras_towers.datasets.render`:
# importing the package would import Keras (seconds per worker), and running
# a file as a script does not import its caller's main module again (what
# `multiprocessing`'s spawn does, which breaks scripts without a
# `__name__ == "__main__"` guard). `sys.path.pop(0)` drops the working
# directory that `-c` puts first.
_WORKER = (
    "import runpy, sys; sys.path.pop(0); "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


def _render_job(job):
    svg, cache_dir, size = job
    return render_to_cache(svg, cache_dir, size)


def _render_in_processes(jobs: list, workers: int) -> list:
    """`_render_job` over `jobs` in `workers` processes (job i in process
    i % workers), in order."""
    with tempfile.TemporaryDirectory(prefix="keras_towers_render_") as tmp:
        running = []
        for w in range(workers):
            job_file = Path(tmp) / f"jobs-{w}.pickle"
            job_file.write_bytes(pickle.dumps(jobs[w::workers]))
            out_file = Path(tmp) / f"results-{w}.pickle"
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER, __file__, str(job_file), str(out_file)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            running.append((process, out_file))
        parts = []
        for process, out_file in running:
            _, stderr = process.communicate()
            if process.returncode != 0 or not out_file.is_file():
                message = stderr.decode("utf-8", "replace").strip()[-2000:]
                raise RuntimeError(
                    f"An SVG rendering worker ({sys.executable} {__file__}) "
                    f"exited with status {process.returncode}: {message}"
                )
            parts.append(pickle.loads(out_file.read_bytes()))
    results = [None] * len(jobs)
    for w, part in enumerate(parts):
        results[w::workers] = part
    return results


def render_many(
    svgs: list, cache_dir, size: int = RENDER_SIZE, workers=None
) -> list[tuple[str | None, str | None]]:
    """`render_to_cache` over many SVGs, in order.

    `cache_dir` is one directory, or one per SVG (a list as long as `svgs`).
    Cached SVGs are answered here; the others are rendered by `workers`
    processes (default: the CPU count, at most 8) when there are at least
    `PROCESS_POOL_MIN` of them, else in this process. Processes, not
    threads: threads rendered at about the speed of one (2026-12-01, 2
    cores: 400 OpenMoji SVGs in 3.3 s on one thread, 2.9 s on two; the time
    is in libvips' SVG load and render calls). Each worker is a fresh
    Python running this file, which imports neither Keras nor the caller's
    modules.
    """
    _pyvips()
    dirs = (
        [Path(d) for d in cache_dir]
        if isinstance(cache_dir, (list, tuple))
        else [Path(cache_dir)] * len(svgs)
    )
    if len(dirs) != len(svgs):
        raise ValueError(
            f"`cache_dir` is a list of {len(dirs)} directories for {len(svgs)} SVGs; "
            "pass one directory, or one per SVG."
        )
    results: list = [None] * len(svgs)
    todo = []
    for i, (svg, d) in enumerate(zip(svgs, dirs, strict=True)):
        try:
            data = svg_bytes(svg)
        except OSError as e:
            results[i] = (None, f"unreadable: {e.strerror or e}")
            continue
        answer = _cached(data, d, size)[2]
        if answer is None:
            todo.append(i)
        results[i] = answer
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    jobs = [(svgs[i], str(dirs[i]), size) for i in todo]
    if workers == 1 or len(jobs) < PROCESS_POOL_MIN:
        rendered = [_render_job(job) for job in jobs]
    else:
        rendered = _render_in_processes(jobs, min(workers, len(jobs)))
    for i, answer in zip(todo, rendered, strict=True):
        results[i] = answer
    return results


if __name__ == "__main__":  # a worker of `_render_in_processes`
    _jobs_file, _results_file = sys.argv[-2:]
    _results = [_render_job(job) for job in pickle.loads(Path(_jobs_file).read_bytes())]
    Path(_results_file).write_bytes(pickle.dumps(_results))
