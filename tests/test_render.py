"""SVG rendering for the corpus (`keras_towers.datasets.render`)."""

import numpy as np
import pytest

pytest.importorskip("pyvips")

from keras_towers.datasets import render  # noqa: E402

pytestmark = pytest.mark.backend_independent


def _svg(body: str, size: int = 100) -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
        f"{body}</svg>"
    ).encode()


def test_the_drawing_is_cropped_and_scaled():
    # A 10x20 drawing in the corner of a 100x100 page fills the output.
    svg = _svg('<rect x="5" y="5" width="10" height="20" fill="#ff0000"/>')
    image = render.render_svg(svg, size=64)
    assert image.mode == "RGBA" and image.size[1] == 64
    assert 32 <= image.size[0] <= 38  # 10:20, plus a margin of a pixel or two
    rgba = np.asarray(image)
    centre = rgba[rgba.shape[0] // 2, rgba.shape[1] // 2]
    assert centre.tolist() == [255, 0, 0, 255]
    assert rgba[0, 0, 3] < 128  # the margin is transparent


@pytest.mark.parametrize(
    "body, reason",
    [
        ("", "fully transparent"),
        ('<rect width="100" height="100" fill="white"/>', "one flat colour"),
        ("<rect", "libvips"),
    ],
)
def test_blank_or_broken_svgs_are_refused(body, reason):
    with pytest.raises(ValueError):
        render.render_svg(_svg(body), size=32)


def test_cache_is_by_content_records_failures_and_prunes(tmp_path):
    good = _svg('<circle cx="50" cy="50" r="30" fill="blue"/>')
    blank = _svg("")
    (png, why), (none, reason) = render.render_many([good, blank], tmp_path, size=32)
    assert why is None and png.endswith(".png") and none is None
    assert "transparent" in reason
    stems = {p.name for p in tmp_path.iterdir()}
    assert len(stems) == 2  # one .png, one .fail
    # Cached: the same answers without rendering again.
    mtime = (tmp_path / png.split("/")[-1]).stat().st_mtime_ns
    assert render.render_many([good, blank], tmp_path, size=32)[0][0] == png
    assert (tmp_path / png.split("/")[-1]).stat().st_mtime_ns == mtime
    # Another size is another cache entry; pruning keeps only what is listed.
    other, _ = render.render_to_cache(good, tmp_path, size=16)
    assert other != png
    removed = render.prune_cache(tmp_path, [render.cache_name(good, 32)])
    assert removed == 2 and [p.name for p in tmp_path.iterdir()] == [png.split("/")[-1]]


def test_many_svgs_render_in_worker_processes_in_order(tmp_path, monkeypatch):
    # Spawned workers, each SVG into its own source's cache; answers in
    # input order, cached ones answered without a worker.
    monkeypatch.setattr(render, "PROCESS_POOL_MIN", 2)
    colours = ["red", "green", "blue", "black"]
    svgs = [
        _svg(f'<circle cx="50" cy="50" r="{10 + i}" fill="{c}"/>')
        for i, c in enumerate(colours)
    ]
    svgs.append(_svg(""))
    dirs = [tmp_path / ("a" if i % 2 else "b") for i in range(len(svgs))]
    cached = render.render_to_cache(svgs[0], dirs[0], size=32)
    results = render.render_many(svgs, dirs, size=32, workers=2)
    assert results[0] == cached
    for (png, why), svg, d in zip(results[:4], svgs[:4], dirs[:4], strict=True):
        assert why is None and png == str(d / f"{render.cache_name(svg, 32)}.png")
    assert results[4][0] is None and "transparent" in results[4][1]
    with pytest.raises(ValueError, match="one per SVG"):
        render.render_many(svgs, dirs[:2], size=32)
