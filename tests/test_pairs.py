"""Users' own image-text data: decoding, readers, error handling, batching."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import warnings
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_towers
from keras_towers.datasets import decoding
from keras_towers.datasets import pairs as pairs_lib
from keras_towers.datasets.pairs import SkippedRecordWarning

D = keras_towers.datasets

# === Helpers ===


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png16(values: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB/RGBA)."""
    values = np.asarray(values, np.uint16)
    height, width = values.shape[:2]
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pixel_image(seed: int, size=(6, 5)) -> np.ndarray:
    """A small uint8 RGB image, distinct per seed (height, width = size)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def save_png(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def collect(ds):
    """All elements as NumPy, and the SkippedRecordWarning messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        elements = list(ds.as_numpy_iterator())
    messages = [
        str(w.message) for w in caught if issubclass(w.category, SkippedRecordWarning)
    ]
    return elements, messages


def texts_of(elements):
    return [e["texts"].decode("utf-8") for e in elements]


def tree_digest(directory) -> dict:
    """Contents hash and mtime of every file, to check nothing was modified."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[path] = (
                    hashlib.sha256(f.read()).hexdigest(),
                    os.stat(path).st_mtime_ns,
                )
    return out


CAPTIONS = ["a red square", "zwei Katzen, müde", 'a "quoted" word', "emoji 🐱 cat"]


@pytest.fixture
def good_images(tmp_path):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    arrays = [pixel_image(i, (5 + i, 7)) for i in range(len(CAPTIONS))]
    paths = [save_png(images_dir / f"{i}.png", a) for i, a in enumerate(arrays)]
    return arrays, paths


@pytest.fixture
def bad_images(tmp_path):
    """The bad files of the brief: truncated, empty, text, missing."""
    bad = tmp_path / "bad"
    bad.mkdir()
    whole = encode(Image.fromarray(pixel_image(9, (40, 40))))
    (bad / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("this is a text file, not a picture")
    return {
        "truncated": bad / "truncated.png",
        "empty": bad / "empty.png",
        "text": bad / "notes.png",
        "missing": bad / "missing.png",
    }


# === Decoding: every pixel mode to uint8 RGB ===


def test_grayscale_and_grayscale_alpha():
    gray = np.array([[0, 100, 255]], np.uint8)
    out = D.decode_image(encode(Image.fromarray(gray)))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, -1))

    la = Image.fromarray(np.array([[[10, 0], [10, 255], [0, 128]]], np.uint8), "LA")
    out = D.decode_image(encode(la))
    # transparent -> white; opaque unchanged; half-transparent black -> mid grey.
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [10, 10, 10])
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])


def test_rgba_is_composited_on_white_like_the_preprocessor():
    rgba = np.array(
        [[[200, 10, 30, 0], [200, 10, 30, 255], [0, 0, 0, 64], [40, 80, 120, 200]]],
        np.uint8,
    )
    out = D.decode_image(encode(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [200, 10, 30])
    # The preprocessor's float formula, rounded.
    alpha = rgba[..., 3:] / 255.0
    expected = np.round(rgba[..., :3] * alpha + 255.0 * (1 - alpha))
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_palette_with_and_without_transparency():
    palette = [255, 0, 0, 0, 0, 255, 0, 200, 0] + [0] * (768 - 9)
    image = Image.new("P", (3, 1))
    image.putpalette(palette)
    for x, index in enumerate([0, 1, 2]):
        image.putpixel((x, 0), index)
    out = D.decode_image(encode(image))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 0, 255], [0, 200, 0]])

    # Index 1 fully transparent (tRNS), index 2 half transparent.
    out = D.decode_image(encode(image, transparency=bytes([255, 0, 128])))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    half = 128 / 255  # alpha of index 2
    expected = np.round(np.array([0, 200, 0]) * half + 255 * (1 - half))
    np.testing.assert_array_equal(out[0, 2], expected)  # [127, 227, 127]


def test_colour_key_transparency_in_l_and_rgb_pngs():
    out = D.decode_image(encode(Image.new("L", (2, 1), 5), transparency=5))
    np.testing.assert_array_equal(out, np.full((1, 2, 3), 255))
    rgb = np.array([[[1, 2, 3], [9, 9, 9]]], np.uint8)
    out = D.decode_image(encode(Image.fromarray(rgb), transparency=(1, 2, 3)))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [9, 9, 9]])


def test_16_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 1000, 257 * 100, 65535]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"  # what Pillow would clip to 255 in convert("L")
    out = D.decode_image(encode(image))
    np.testing.assert_array_equal(out[0, :, 0], [0, 4, 100, 255])
    assert (out == out[..., :1]).all()

    rgb16 = np.array([[[65535, 0, 25700], [0, 65535, 0]]], np.uint16)
    out = D.decode_image(png16(rgb16, color_type=2))
    np.testing.assert_array_equal(out[0], [[255, 0, 100], [0, 255, 0]])

    rgba16 = np.array([[[0, 0, 0, 0], [65535, 0, 0, 65535]]], np.uint16)
    out = D.decode_image(png16(rgba16, color_type=6))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [255, 0, 0]])


def test_jpeg_rgb_grayscale_and_cmyk():
    out = D.decode_image(encode(Image.new("RGB", (8, 8), (200, 30, 60)), "JPEG"))
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - [200, 30, 60]).max() <= 6

    out = D.decode_image(encode(Image.new("L", (8, 8), 77), "JPEG"))
    assert np.abs(out.astype(int) - 77).max() <= 2

    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    encoded = encode(cmyk, "JPEG")
    assert Image.open(io.BytesIO(encoded)).mode == "CMYK"
    out = D.decode_image(encoded)
    assert np.abs(out.astype(int) - [255, 0, 0]).max() <= 6


def test_webp_bmp_and_first_gif_frame():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    rgba.putpixel((1, 1), (10, 20, 30, 255))
    out = D.decode_image(encode(rgba, "WEBP", lossless=True))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1, 1], [10, 20, 30])

    out = D.decode_image(encode(Image.new("RGB", (3, 2), (1, 2, 3)), "BMP"))
    np.testing.assert_array_equal(out, np.broadcast_to([1, 2, 3], (2, 3, 3)))
    out = D.decode_image(encode(Image.new("1", (3, 2), 1), "BMP"))
    np.testing.assert_array_equal(out, np.full((2, 3, 3), 255))

    frames = []
    for colour in ((0, 0, 255), (255, 0, 0)):
        frame = Image.new("P", (4, 4), 0)
        frame.putpalette([0, 0, 0, *colour] + [0] * 762)
        frame.putpixel((2, 2), 1)
        frames.append(frame)
    gif = encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0
    )
    assert getattr(Image.open(io.BytesIO(gif)), "n_frames", 1) == 2
    out = D.decode_image(gif)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # transparent index
    np.testing.assert_array_equal(out[2, 2], [0, 0, 255])  # first frame's colour


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (4, 2), (50, 60, 70))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = D.decode_image(encode(image, "JPEG", exif=exif))
    assert out.shape == (4, 2, 3)


def test_decode_errors_name_the_file_and_reason(bad_images):
    cases = {
        "truncated": "truncated",
        "empty": "empty file",
        "text": "not an image",
        "missing": "file not found",
    }
    for name, reason in cases.items():
        with pytest.raises(D.ImageDecodeError, match=reason) as info:
            D.read_image(bad_images[name])
        assert info.value.file == str(bad_images[name])
        assert str(bad_images[name]) in str(info.value)
    with pytest.raises(TypeError, match="bytes"):
        D.decode_image(np.zeros((2, 2, 3), np.uint8))


def test_composite_on_white_rejects_bad_input():
    with pytest.raises(ValueError, match="4 channels"):
        decoding.composite_on_white(np.zeros((2, 2, 3), np.uint8))


# === CSV ===


def write_csv(path, rows, header=("image", "caption")):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_csv_round_trip_keeps_order_captions_and_pixels(tmp_path, good_images):
    arrays, paths = good_images
    rows = [(f"images/{i}.png", c) for i, c in enumerate(CAPTIONS)]
    rows[0] = (paths[0], CAPTIONS[0])  # absolute paths work too
    csv_path = write_csv(tmp_path / "pairs.csv", rows)
    ds = D.from_csv(csv_path, return_keys=True)
    assert ds.element_spec["images"].shape.as_list() == [None, None, 3]
    elements, messages = collect(ds)
    assert messages == []
    assert texts_of(elements) == CAPTIONS
    for element, array, path in zip(elements, arrays, paths, strict=True):
        np.testing.assert_array_equal(element["images"], array)
        assert os.path.samefile(element["keys"].decode(), path)
    report = ds.decode_report
    assert (report.seen, report.skipped, report.passes) == (4, 0, 1)


def test_csv_image_root_delimiter_and_extra_columns(tmp_path, good_images):
    arrays, _ = good_images
    tsv = tmp_path / "other" / "pairs.tsv"
    tsv.parent.mkdir()
    tsv.write_text("file\ttext\tsource\n1.png\tone\tweb\n0.png\tzero\tbook\n")
    ds = D.from_csv(
        tsv,
        image_key="file",
        text_key="text",
        image_root=tmp_path / "images",
        delimiter="\t",
        extra_keys=["source"],
    )
    elements, _ = collect(ds)
    assert texts_of(elements) == ["one", "zero"]
    assert [e["source"] for e in elements] == [b"web", b"book"]
    np.testing.assert_array_equal(elements[1]["images"], arrays[0])


def test_csv_bad_records_are_skipped_counted_and_named(
    tmp_path, good_images, bad_images
):
    _, paths = good_images
    csv_path = tmp_path / "mixed.csv"
    csv_path.write_text(
        "image,caption\n"
        f"{paths[0]},good one\n"
        f"{bad_images['truncated']},truncated\n"
        f"{bad_images['empty']},empty\n"
        f"{bad_images['text']},text file\n"
        f"{bad_images['missing']},missing\n"
        f"{paths[1]},\n"  # missing caption
        f"{paths[2]},too,many,fields\n"
        f"{paths[3]},good two\n",
        encoding="utf-8",
    )
    before = tree_digest(tmp_path)
    ds = D.from_csv(csv_path)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["good one", "good two"]
    report = ds.decode_report
    assert (report.seen, report.skipped, report.kept, report.passes) == (8, 6, 2, 1)
    for name in ("truncated", "empty", "text", "missing"):
        path = str(bad_images[name])
        assert any(path in m for m in messages), (name, messages)
        assert any(e.file == path for e in report.errors)
    assert any(f"{csv_path}:7" in m and "missing caption" in m for m in messages)
    assert any(f"{csv_path}:8" in m and "expected 2 fields" in m for m in messages)
    assert any("skipped 6 of 8 records" in m for m in messages)
    # A second pass reports again, from zero.
    elements, messages = collect(ds)
    assert len(elements) == 2 and report.passes == 2 and report.skipped == 6
    assert any("skipped 6 of 8 records in pass 2" in m for m in messages)
    assert tree_digest(tmp_path) == before, "reading must not modify any file"


@pytest.mark.parametrize("bad", ["truncated", "empty", "text", "missing"])
def test_csv_on_error_raise_names_the_file(tmp_path, good_images, bad_images, bad):
    _, paths = good_images
    csv_path = write_csv(
        tmp_path / "p.csv", [(paths[0], "fine"), (str(bad_images[bad]), "bad")]
    )
    ds = D.from_csv(csv_path, on_error="raise")
    with pytest.raises(tf.errors.InvalidArgumentError, match=bad_images[bad].name):
        list(ds.as_numpy_iterator())


def test_per_record_warnings_are_capped_but_all_are_counted(
    tmp_path, bad_images, monkeypatch
):
    monkeypatch.setattr(pairs_lib._report, "MAX_WARNINGS_PER_PASS", 2)
    csv_path = write_csv(
        tmp_path / "p.csv", [(str(p), "x") for p in bad_images.values()]
    )
    ds = D.from_csv(csv_path, num_parallel_calls=1)
    elements, messages = collect(ds)
    assert elements == []
    per_record = [m for m in messages if m.startswith("Skipped ")]
    assert len(per_record) == 2 and "no more warnings" in per_record[-1]
    assert ds.decode_report.skipped == 4 and len(ds.decode_report.errors) == 4
    assert any("skipped 4 of 4 records" in m for m in messages)


def test_partial_iteration_does_not_count_as_a_pass(tmp_path, good_images):
    _, paths = good_images
    ds = D.from_csv(write_csv(tmp_path / "p.csv", [(p, "x") for p in paths]))
    list(ds.take(2).as_numpy_iterator())
    assert ds.decode_report.passes == 0
    list(ds.as_numpy_iterator())
    assert ds.decode_report.passes == 1 and ds.decode_report.seen == 4


def test_csv_configuration_errors(tmp_path, good_images):
    _, paths = good_images
    csv_path = write_csv(tmp_path / "p.csv", [(paths[0], "x")])
    with pytest.raises(ValueError, match=r"\('skip', 'raise'\)"):
        D.from_csv(csv_path, on_error="ignore")
    with pytest.raises(ValueError, match="no column 'caption_text'"):
        D.from_csv(csv_path, text_key="caption_text")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        D.from_csv(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="output keys"):
        D.from_csv(csv_path, extra_keys=["texts"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        D.from_csv(tmp_path / "empty.csv")


def test_csv_malformed_quoting_and_invalid_utf8_are_skipped(tmp_path, good_images):
    _, paths = good_images
    csv_path = tmp_path / "p.csv"
    csv_path.write_bytes(
        b"image,caption\n"
        + f'{paths[0]},"bad "quote" here\n'.encode()
        + f"{paths[1]},caf\xe9 latin-1\n".encode("latin-1")
        + f"{paths[2]},fine\n".encode()
    )
    ds = D.from_csv(csv_path)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["fine"]
    assert ds.decode_report.skipped == 2
    assert any(f"{csv_path}:2" in m and "malformed CSV" in m for m in messages)
    assert any(f"{csv_path}:3" in m and "UTF-8" in m for m in messages)


# === JSON Lines ===


def test_jsonl_round_trip_with_extra_keys(tmp_path, good_images):
    arrays, paths = good_images
    lines = [
        json.dumps({"image": p, "caption": c, "id": i, "source": "test"})
        for i, (p, c) in enumerate(zip(paths, CAPTIONS, strict=True))
    ]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    ds = D.from_jsonl(jsonl, extra_keys=["id", "source"])
    elements, messages = collect(ds)
    assert messages == []
    assert texts_of(elements) == CAPTIONS
    assert [e["id"] for e in elements] == [b"0", b"1", b"2", b"3"]
    assert {e["source"] for e in elements} == {b"test"}
    for element, array in zip(elements, arrays, strict=True):
        np.testing.assert_array_equal(element["images"], array)


def test_jsonl_bad_lines_are_skipped_or_raised(tmp_path, good_images):
    _, paths = good_images
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(
        json.dumps({"image": paths[0], "caption": "good"})
        + "\n{not json at all\n"
        + json.dumps(["a", "list"])
        + "\n"
        + json.dumps({"image": paths[1]})
        + "\n"
        + json.dumps({"image": paths[2], "caption": 7})
        + "\n"
        + json.dumps({"image": "nothing/here.png", "caption": "gone"})
        + "\n"
        + json.dumps({"image": paths[3], "caption": "lone \ud800 surrogate"})
        + "\n"
    )
    ds = D.from_jsonl(jsonl)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["good"]
    assert ds.decode_report.skipped == 6
    assert any(f"{jsonl}:2" in m and "malformed JSON" in m for m in messages)
    assert any(f"{jsonl}:3" in m and "JSON object" in m for m in messages)
    assert any(f"{jsonl}:4" in m and "missing caption" in m for m in messages)
    assert any(f"{jsonl}:5" in m and "must be a string" in m for m in messages)
    assert any(os.path.join("nothing", "here.png") in m for m in messages)
    assert any(f"{jsonl}:7" in m and "Unicode" in m for m in messages)

    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{jsonl.name}:2"):
        list(D.from_jsonl(jsonl, on_error="raise").as_numpy_iterator())


def test_jsonl_wrong_key_names_fail_early(tmp_path):
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"img": "a.png", "caption": "x"}) + "\n")
    with pytest.raises(ValueError, match="'image'"):
        D.from_jsonl(jsonl)


# === In-memory records ===


def test_from_records_tuples_dicts_and_bytes(tmp_path, good_images):
    arrays, paths = good_images
    png_bytes = encode(Image.fromarray(arrays[3]))
    records = [
        ("images/0.png", "relative"),
        {"image": paths[1], "caption": "dict"},
        {"image": png_bytes, "caption": "bytes"},
        {"image": paths[2]},
        42,
    ]
    ds = D.from_records(records, image_root=tmp_path, return_keys=True)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["relative", "dict", "bytes"]
    np.testing.assert_array_equal(elements[0]["images"], arrays[0])
    np.testing.assert_array_equal(elements[2]["images"], arrays[3])
    assert elements[2]["keys"] == b"records[2]"
    assert any("records[3]" in m and "missing caption" in m for m in messages)
    assert any("records[4]" in m and "(image, caption)" in m for m in messages)
    with pytest.raises(TypeError, match="list of dicts"):
        D.from_records("pairs.csv")


# === TFRecord ===


def test_tfrecord_round_trip_from_a_dataset(tmp_path, good_images):
    arrays, paths = good_images
    source = D.from_records(list(zip(paths, CAPTIONS, strict=True)), return_keys=True)
    out = tmp_path / "pairs.tfrecord"
    report = D.write_tfrecord(source, out)
    assert report.kept == 4
    ds = D.from_tfrecord(out, return_keys=True)
    elements, messages = collect(ds)
    assert messages == []
    assert texts_of(elements) == CAPTIONS
    for element, array, path in zip(elements, arrays, paths, strict=True):
        np.testing.assert_array_equal(element["images"], array)  # PNG: lossless
        assert element["keys"].decode() == path
    with pytest.raises(FileExistsError, match="overwrite"):
        D.write_tfrecord(source, out)


def test_tfrecord_from_records_keeps_original_bytes_and_skips_bad(
    tmp_path, good_images, bad_images
):
    _, paths = good_images
    out = tmp_path / "pairs.tfrecord.gz"
    records = [
        (paths[0], "zero"),
        (str(bad_images["truncated"]), "bad"),
        (paths[1], "one"),
    ]
    with pytest.warns(SkippedRecordWarning, match="truncated.png"):
        report = D.write_tfrecord(records, out)
    assert (report.seen, report.skipped, report.kept) == (3, 1, 2)
    with gzip.open(out, "rb"):
        pass  # written GZIP-compressed
    raw = next(iter(tf.data.TFRecordDataset(str(out), compression_type="GZIP")))
    example = tf.train.Example.FromString(raw.numpy())
    with open(paths[0], "rb") as f:
        assert example.features.feature["image"].bytes_list.value[0] == f.read()
    elements, _ = collect(D.from_tfrecord(out))
    assert texts_of(elements) == ["zero", "one"]


def test_tfrecord_object_detection_convention_and_bad_examples(tmp_path, good_images):
    arrays, _ = good_images
    path = tmp_path / "od.tfrecord"

    def example(**features):
        return tf.train.Example(
            features=tf.train.Features(
                feature={
                    k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
                    for k, v in features.items()
                }
            )
        ).SerializeToString()

    png = encode(Image.fromarray(arrays[0]))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example(**{"image/encoded": png, "image/caption": b"od style"}))
        writer.write(example(**{"image/encoded": b"\x89PNG broken", "caption": b"x"}))
        writer.write(example(image=png))
        writer.write(b"\xff\xfe definitely not a protobuf")
    ds = D.from_tfrecord(path)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["od style"]
    np.testing.assert_array_equal(elements[0]["images"], arrays[0])
    assert ds.decode_report.skipped == 3
    assert any(f"{path}:record 1" in m and "not an image" in m for m in messages)
    assert any(f"{path}:record 2" in m and "missing caption" in m for m in messages)
    assert any(f"{path}:record 3" in m for m in messages)


def test_truncated_tfrecord_file_keeps_whole_records(tmp_path, good_images):
    _, paths = good_images
    path = tmp_path / "t.tfrecord"
    D.write_tfrecord(list(zip(paths, CAPTIONS, strict=True)), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    ds = D.from_tfrecord(path)
    elements, messages = collect(ds)
    assert texts_of(elements) == CAPTIONS[:3]
    assert any("corrupt TFRecord" in m and str(path) in m for m in messages)


# === WebDataset ===


def add_member(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path, samples, mode="w"):
    """samples: list of (key, {extension: bytes})."""
    with tarfile.open(path, mode) as tar:
        for key, members in samples:
            for extension, data in members.items():
                add_member(tar, f"{key}.{extension}", data)
    return str(path)


def sample(key, array, caption=None, image_ext="png", **extra):
    fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[image_ext]
    options = {"lossless": True} if fmt == "WEBP" else {}
    members = {image_ext: encode(Image.fromarray(array), fmt, **options)}
    if caption is not None:
        members["txt"] = caption.encode("utf-8")
    members.update(extra)
    return key, members


def test_webdataset_round_trip_txt_json_and_bad_samples(tmp_path):
    arrays = [pixel_image(i) for i in range(6)]
    samples = [
        sample("shard/000", arrays[0], "first caption\n"),
        sample(
            "shard/001", arrays[1], image_ext="webp", json=b'{"caption": "from json"}'
        ),
        ("shard/002", {"png": b"corrupt image bytes", "txt": b"bad image"}),
        sample("shard/003", arrays[3]),  # no caption at all
        ("shard/004", {"txt": b"no image"}),
        sample("shard/005", arrays[5], "last", cls=b"3"),
    ]
    shard = write_shard(tmp_path / "00000.tar", samples)
    ds = D.from_webdataset(shard, return_keys=True)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["first caption", "from json", "last"]
    assert [e["keys"] for e in elements] == [b"shard/000", b"shard/001", b"shard/005"]
    for element, index in zip(elements, (0, 1, 5), strict=True):
        np.testing.assert_array_equal(element["images"], arrays[index])
    assert ds.decode_report.skipped == 3
    assert any(f"{shard}:shard/002.png" in m and "not an image" in m for m in messages)
    assert any("shard/003" in m and "missing caption" in m for m in messages)
    assert any("shard/004" in m and "no image member" in m for m in messages)


def test_webdataset_shards_interleave_and_compressed(tmp_path):
    a = write_shard(
        tmp_path / "a.tar", [sample(f"a{i}", pixel_image(i), f"a{i}") for i in range(3)]
    )
    b = write_shard(
        tmp_path / "b.tar.gz",
        [sample(f"b{i}", pixel_image(i), f"b{i}") for i in range(2)],
        mode="w:gz",
    )
    elements, _ = collect(D.from_webdataset([a, b]))
    assert texts_of(elements) == ["a0", "a1", "a2", "b0", "b1"]
    elements, _ = collect(D.from_webdataset([a, b], cycle_length=2))
    assert texts_of(elements) == ["a0", "b0", "a1", "b1", "a2"]
    shuffled, _ = collect(D.from_webdataset([a, b], shuffle_files=True, seed=1))
    assert sorted(texts_of(shuffled)) == ["a0", "a1", "a2", "b0", "b1"]


def test_webdataset_truncated_and_damaged_shards(tmp_path):
    samples = [sample(f"k{i}", pixel_image(i, (20, 20)), f"c{i}") for i in range(4)]
    shard = tmp_path / "s.tar"
    write_shard(shard, samples)
    data = shard.read_bytes()

    # Cut inside the third sample's image: the first two survive.
    with tarfile.open(shard) as tar:
        third = [m for m in tar.getmembers() if m.name == "k2.png"][0]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: third.offset_data + 10])
    ds = D.from_webdataset(cut)
    elements, messages = collect(ds)
    assert texts_of(elements) == ["c0", "c1"]
    assert ds.decode_report.skipped == 1
    assert any(str(cut) in m and "rest of the shard" in m for m in messages)

    # Garbage over the fourth sample's first header: tarfile alone would stop
    # quietly there, as if the archive had ended.
    with tarfile.open(shard) as tar:
        fourth = [m for m in tar.getmembers() if m.name == "k3.png"][0]
    damaged = tmp_path / "damaged.tar"
    garbage = bytes(range(256)) * 2
    damaged.write_bytes(data[: fourth.offset] + garbage + data[fourth.offset + 512 :])
    elements, messages = collect(D.from_webdataset(damaged))
    assert texts_of(elements) == ["c0", "c1", "c2"]
    assert any("invalid tar header" in m for m in messages)

    not_tar = tmp_path / "text.tar"
    not_tar.write_text("hello")
    with pytest.raises(tf.errors.InvalidArgumentError, match="text.tar"):
        list(D.from_webdataset(not_tar, on_error="raise").as_numpy_iterator())


# === load_pairs ===


def test_load_pairs_dispatches_on_suffix_glob_and_directory(tmp_path, good_images):
    _, paths = good_images
    records = list(zip(paths, CAPTIONS, strict=True))
    csv_path = write_csv(tmp_path / "p.csv", records)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"image": p, "caption": c}) + "\n" for p, c in records)
    )
    tfr = tmp_path / "p.tfrecord"
    D.write_tfrecord(records, tfr)
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        write_shard(
            shards / f"{s:05d}.tar",
            [sample(f"{s}-{i}", pixel_image(i), f"s{s}c{i}") for i in range(2)],
        )
    tfds_style = tmp_path / "tfds" / "train.tfrecord-00000-of-00001"
    tfds_style.parent.mkdir()
    D.write_tfrecord(records, tfds_style)
    for source in (csv_path, jsonl, tfr, tfds_style):
        elements, _ = collect(D.load_pairs(source))
        assert texts_of(elements) == CAPTIONS, source
    expected = ["s0c0", "s0c1", "s1c0", "s1c1"]
    elements, _ = collect(D.load_pairs(shards))
    assert texts_of(elements) == expected
    elements, _ = collect(D.load_pairs(str(shards / "*.tar")))
    assert texts_of(elements) == expected
    elements, _ = collect(D.load_pairs(shards, cycle_length=2))
    assert texts_of(elements) == ["s0c0", "s1c0", "s0c1", "s1c1"]

    with pytest.raises(ValueError, match="mixes"):
        D.load_pairs([csv_path, str(tfr)])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="suffix"):
        D.load_pairs(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="glob"):
        D.load_pairs(str(tmp_path / "*.parquet"))


def test_register_reader_extends_load_pairs(tmp_path, good_images):
    _, paths = good_images
    psv = tmp_path / "p.psv"
    psv.write_text(
        "image|caption\n"
        + "".join(f"{p}|{c}\n" for p, c in zip(paths, ["a", "b"], strict=False))
    )
    D.register_reader(".psv", lambda path, **kw: D.from_csv(path, delimiter="|", **kw))
    try:
        elements, _ = collect(D.load_pairs(psv))
    finally:
        pairs_lib.READERS.remove(".psv")
    assert texts_of(elements) == ["a", "b"]
    with pytest.raises(ValueError, match="'.csv'"):
        D.register_reader("csv", D.from_csv)


# === batch_pairs ===


def test_batch_pairs_shapes_dtypes_and_pad_colour(tmp_path):
    wide = np.zeros((10, 40, 3), np.uint8)  # black, 4:1
    tall = np.full((30, 10, 3), 90, np.uint8)
    records = [
        (encode(Image.fromarray(wide)), "wide"),
        (encode(Image.fromarray(tall)), "tall"),
        (encode(Image.fromarray(pixel_image(0, (16, 16)))), "square"),
    ]
    ds = D.from_records([{"image": i, "caption": c} for i, c in records])
    batched = D.batch_pairs(ds, batch_size=2, image_size=16)
    assert batched.decode_report is ds.decode_report
    batches, _ = collect(batched)
    assert [b["images"].shape for b in batches] == [(2, 16, 16, 3), (1, 16, 16, 3)]
    assert batches[0]["images"].dtype == np.uint8
    assert list(batches[0]["texts"]) == [b"wide", b"tall"]
    padded_wide = batches[0]["images"][0]
    # 40x10 -> 16x4, centred: rows 0-5 and 10-15 white, rows 6-9 black.
    assert (padded_wide[:6] == 255).all() and (padded_wide[10:] == 255).all()
    assert (padded_wide[6:10] == 0).all()
    padded_tall = batches[0]["images"][1]
    assert (padded_tall[:, :5] == 255).all() and (padded_tall[:, 5:10] == 90).all()
    # An image already at the target size passes through unchanged.
    np.testing.assert_array_equal(batches[1]["images"][0], pixel_image(0, (16, 16)))

    cropped, _ = collect(D.batch_pairs(ds, 3, 8, resize="crop"))
    assert (cropped[0]["images"][0] == 0).all()  # the crop of a black image
    squashed, _ = collect(D.batch_pairs(ds, 3, 8, resize="squash", drop_remainder=True))
    assert squashed[0]["images"].shape == (3, 8, 8, 3)
    assert (squashed[0]["images"][1] == 90).all()
    assert D.batch_pairs(ds, 2, 8, drop_remainder=True).element_spec[
        "images"
    ].shape.as_list() == [2, 8, 8, 3]


def test_batch_pairs_shuffles_reproducibly_and_checks_arguments(tmp_path):
    records = [
        (encode(Image.fromarray(pixel_image(i, (4, 4)))), f"c{i}") for i in range(12)
    ]
    ds = D.from_records(records)
    first = [
        t
        for b in D.batch_pairs(ds, 4, 4, shuffle_buffer=12, seed=3).as_numpy_iterator()
        for t in b["texts"]
    ]
    second = [
        t
        for b in D.batch_pairs(ds, 4, 4, shuffle_buffer=12, seed=3).as_numpy_iterator()
        for t in b["texts"]
    ]
    assert first == second and sorted(first) == sorted(
        f"c{i}".encode() for i in range(12)
    )
    assert first != [f"c{i}".encode() for i in range(12)]
    with pytest.raises(ValueError, match="resize"):
        D.batch_pairs(ds, 4, 4, resize="stretch")
    with pytest.raises(ValueError, match="batch_size"):
        D.batch_pairs(ds, 0, 4)
    with pytest.raises(ValueError, match="unbatched"):
        D.batch_pairs(D.batch_pairs(ds, 2, 4), 2, 4)


def test_clip_fits_one_epoch_on_a_csv_dataset(tmp_path):
    images, captions, _ = D.make_shapes(8, seed=0, image_size=32)
    rows = []
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        # Mixed sizes and modes, as users' folders have.
        picture = Image.fromarray(image).resize((32 + 4 * i, 32))
        if i % 3 == 1:
            picture = picture.convert("RGBA")
        elif i % 3 == 2:
            picture = picture.convert("L")
        picture.save(tmp_path / f"{i}.png")
        rows.append((f"{i}.png", caption))
    ds = D.from_csv(write_csv(tmp_path / "train.csv", rows))
    ds = D.batch_pairs(ds, batch_size=4, image_size=32, shuffle_buffer=8, seed=0)
    model = keras_towers.CLIP.tiny(image_size=32)
    model.compile(learning_rate=1e-3)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert ds.decode_report.passes == 1 and ds.decode_report.seen == 8


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims `width` x `height` (CRC fixed), the
    shape of a decompression bomb: a few bytes that would decode to GBs."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # Signature (8) + length (4) + b"IHDR" (4) + width, height.
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def test_a_decompression_bomb_is_refused_without_decoding_it():
    bomb = _png_claiming(100_000, 100_000)  # 10^10 pixels in 70 bytes
    with pytest.raises(decoding.ImageDecodeError, match="bomb.png.*too large"):
        decoding.decode_image(bomb, "bomb.png")
