"""The held-out evaluation sets: Fluent 3D emoji, flags and digits.

Most tests run on tiny fake packages (`tests/eval_set_fakes.py`) selected with
the environment overrides; the last ones read the real installed packages and
are skipped when they are absent.
"""

import gzip
import os
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import datasets
from keras_towers import tasks
from keras_towers.datasets import eval_sets
from keras_towers.datasets import paths
from tests import eval_set_fakes as fakes

NEW_SETS = ("digits", "flags", "fluent-3d")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(data))
    info = fakes.install_fake_eval_sets(tmp_path, data, monkeypatch)
    return {"tmp": tmp_path, "data": data, **info}


def test_names_metadata_and_default_templates():
    names = datasets.classification_names()
    assert set(NEW_SETS) <= set(names) and names == sorted(names)
    meta = datasets.classification_metadata("fluent_3d")
    assert meta["splits"] == ("test", "all") and meta["license"] == "MIT"
    assert meta["labels_package"] == "emojibase-data"
    assert datasets.classification_metadata("flags")["splits"] == ("test", "all")
    assert datasets.classification_metadata("digits")["splits"] == (
        "train",
        "test",
        "all",
    )
    assert tasks.default_templates("digits") == "digits"
    assert tasks.default_templates("flags") == "flags"
    assert tasks.default_templates("fluent-3d") == "emoji"
    assert tasks.default_templates("fashion-mnist") == "openai"
    assert tasks.default_templates("shapes") == "openai"
    for name in ("digits", "flags", "emoji"):
        templates = keras_towers.evaluation.get_templates(name)
        assert templates and all(t.count("{}") == 1 for t in templates)
    assert "fluent-3d" in tasks.retrieval_names()
    assert "tuxpaint" in tasks.retrieval_names()


def test_emoji_key():
    assert eval_sets.emoji_key("0023-FE0F-20E3") == "0023-20e3"
    assert eval_sets.emoji_key("23-fe0f-20e3") == "0023-20e3"
    assert eval_sets.emoji_key("1F468-200D-1F469") == "1f468-200d-1f469"
    assert eval_sets.emoji_key("1f3f4-e0067_e0062") == "1f3f4-e0067-e0062"
    assert eval_sets.emoji_key("1F44B-1F3FF") == "1f44b-1f3ff"
    assert eval_sets.emoji_key("notes") is None
    assert eval_sets.emoji_key("fe0f") is None


# === fluent-3d ===


def test_fluent_3d_classes_images_and_skips(fake):
    images, labels, names = datasets.load_classification("fluent-3d")
    expected = [name for name, _ in fakes.FLUENT_CLASSES]
    assert names == expected  # sorted by code point, labels whitespace-collapsed
    assert images.shape == (len(expected), 128, 128, 3)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(len(expected)))
    assert labels.dtype == np.int32
    for image, (_, colour) in zip(images, fakes.FLUENT_CLASSES, strict=True):
        np.testing.assert_array_equal(image[64, 64], colour)
        # The transparent corner pixel is white after compositing.
        np.testing.assert_array_equal(image[0, 0], (255, 255, 255))
    # The 16x18 render was padded with white on the left and right.
    heart = images[expected.index("red heart")]
    np.testing.assert_array_equal(heart[64, 2], (255, 255, 255))

    index = eval_sets.fluent_3d_index()
    assert index["skipped"] == fakes.FLUENT_SKIPPED
    assert index["labels_without_image"] == 1  # ghost
    keys = [key for key, _, _ in index["entries"]]
    assert keys[0] == "0023-20e3"
    assert keys[2] == "1f3f4-e0067-e0062-e0065-e006e-e0067-e007f"
    assert index["entries"][0][2].name == "0023-fe0f-20e3.webp"
    again, _, _ = datasets.load_classification("fluent-3d", "all")
    np.testing.assert_array_equal(again, images)


def test_fluent_3d_extracts_once_and_describes_without_decoding(fake, monkeypatch):
    def no_decoding(path):
        raise AssertionError(f"describe decoded {path}")

    monkeypatch.setattr(eval_sets, "read_image", no_decoding)
    info = datasets.describe_classification("fluent-3d")
    assert info["counts"] == {"test": len(fakes.FLUENT_CLASSES)}
    assert info["classes"] == [name for name, _ in fakes.FLUENT_CLASSES]
    assert info["skipped"] == {
        reason: len(v) for reason, v in fakes.FLUENT_SKIPPED.items()
    }
    assert info["version"] == "1.1.0" and info["labels_version"] == "17.0.0"
    extracted = fake["data"] / "lobehub-fluent-emoji-3d-1.1.0"
    assert info["path"] == str(extracted)
    files = sorted(p.name for p in (extracted / "assets").iterdir())
    assert files == sorted(f"{stem}.webp" for stem in fakes.FLUENT_FILES)
    assert not (extracted / "README.md").exists()
    mtime = (extracted / "assets" / "1f600.webp").stat().st_mtime_ns
    datasets.describe_classification("fluent-3d")
    assert (extracted / "assets" / "1f600.webp").stat().st_mtime_ns == mtime


def test_fluent_3d_other_data_dir(fake, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    fakes.make_fluent_tarballs(other)
    info = datasets.describe_classification("fluent-3d", data_dir=other)
    assert info["path"] == str(other / "lobehub-fluent-emoji-3d-1.1.0")
    images, _, names = datasets.load_classification("fluent-3d", data_dir=other)
    assert len(images) == len(names) == len(fakes.FLUENT_CLASSES)


def test_test_only_sets_have_no_train_split(fake):
    for name in ("fluent-3d", "flags"):
        with pytest.raises(ValueError, match="test set only"):
            datasets.load_classification(name, "train")
    with pytest.raises(ValueError, match="split"):
        datasets.load_classification("flags", "validation")
    # Refused before the model is touched.
    with pytest.raises(ValueError, match="needs a train split"):
        tasks.run(object(), "linear-probe:fluent-3d")


def test_fluent_3d_retrieval_pairs(fake):
    images, captions = tasks.retrieval_pairs("fluent-3d")
    assert captions == [name for name, _ in fakes.FLUENT_CLASSES]
    assert len(images) == len(captions) and images[0].shape == (128, 128, 3)
    images, captions = tasks.retrieval_pairs("fluent-3d", limit=2)
    assert len(images) == len(captions) == 2
    with pytest.raises(ValueError, match="fluent-3d"):
        tasks.retrieval_pairs("no-such-set")


def test_corrupt_emojibase_tarball_is_a_clear_error(fake):
    fake["emojibase_tarball"].write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="emojibase-data tarball"):
        datasets.load_classification("fluent-3d")


# === flags ===


def test_country_names():
    def name(**entry):
        return eval_sets.country_name(entry)

    assert name(name="Korea, Republic of", common_name="South Korea") == ("South Korea")
    assert name(name="Virgin Islands, U.S.") == "U.S. Virgin Islands"
    assert name(name="Micronesia, Federated States of") == (
        "Federated States of Micronesia"
    )
    assert name(name="Cocos (Keeling) Islands") == "Cocos Islands"
    assert name(name="Bonaire, Sint Eustatius and Saba") == (
        "Bonaire, Sint Eustatius and Saba"
    )


def test_flags_fake(fake):
    images, labels, names = datasets.load_classification("flags")
    assert names == fakes.FLAG_CLASSES
    assert images.shape == (len(names), *fakes.FLAG_SIZE, 3)
    np.testing.assert_array_equal(labels, np.arange(len(names)))
    by_name = dict(zip(names, images, strict=True))
    np.testing.assert_array_equal(by_name["France"][3, 3], (0, 0, 255))
    np.testing.assert_array_equal(by_name["Nepal"][0, -1], (255, 255, 255))
    np.testing.assert_array_equal(by_name["Nepal"][3, 3], (220, 20, 60))

    info = datasets.describe_classification("flags")
    assert info["counts"] == {"test": len(names)}
    assert info["skipped"] == {"no_iso_code": len(fakes.FLAG_SKIPPED)}
    assert info["license"] == "public domain"
    assert info["labels_license"] == "LGPL-2.1"
    index = eval_sets.flags_index()
    assert index["skipped"] == {"no_iso_code": fakes.FLAG_SKIPPED}


def test_flags_bad_iso_codes_file(fake):
    (fake["iso_codes"] / eval_sets.ISO_3166_FILE).write_text('{"3166": []}')
    with pytest.raises(ValueError, match="ISO 3166-1 JSON"):
        datasets.load_classification("flags")


# === digits ===


def test_digits_fake(fake):
    table = fake["digits_table"]
    images, labels, names = datasets.load_classification("digits", "all")
    assert names == [str(d) for d in range(10)]
    assert images.shape == (len(table), 8, 8) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, table[:, 64])
    # 0..16 -> 0..255, rounded; bright strokes on black, as in the file.
    np.testing.assert_array_equal(images[0, 0, :3], (0, 128, 255))
    np.testing.assert_array_equal(
        images.reshape(len(table), 64), (table[:, :64] * 255 + 8) // 16
    )

    x_test, y_test, _ = datasets.load_classification("digits", "test")
    x_train, y_train, _ = datasets.load_classification("digits", "train")
    assert np.bincount(y_test).tolist() == [2] * 10  # 20% of 10 per class
    assert np.bincount(y_train).tolist() == [8] * 10
    assert not {x.tobytes() for x in x_test} & {x.tobytes() for x in x_train}
    again, _, _ = datasets.load_classification("digits", "test")
    np.testing.assert_array_equal(again, x_test)
    info = datasets.describe_classification("digits")
    assert info["counts"] == {"train": 80, "test": 20}
    assert info["classes"] == names


def test_digits_bad_file(fake):
    with gzip.open(fake["digits"] / eval_sets.DIGITS_FILE, "wt") as f:
        f.write("1,2,3\n")
    with pytest.raises(ValueError, match="65 columns"):
        datasets.load_classification("digits")


# === missing packages ===


def test_missing_packages_name_their_install_commands(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(paths.FLAGS_DIR_ENV, str(tmp_path / "nope"))
    monkeypatch.setenv(paths.ISO_CODES_DIR_ENV, str(tmp_path / "nope"))
    monkeypatch.setenv(paths.DIGITS_DIR_ENV, str(tmp_path / "nope"))
    expected = {
        "fluent-3d": [
            "npm pack @lobehub/fluent-emoji-3d@1.1.0",
            "npm pack emojibase-data@17.0.0",
            str(tmp_path / "data" / "sources"),
        ],
        "flags": ["apt-get install iso-flags-png-320x240 iso-codes"],
        "digits": ["pip install scikit-learn"],
    }
    for name, hints in expected.items():
        for call in (datasets.describe_classification, datasets.load_classification):
            with pytest.raises(datasets.MissingDataError) as info:
                call(name)
            for hint in hints:
                assert hint in str(info.value), (name, str(info.value))


# === end to end (one backend: the plumbing does not depend on it) ===


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="backend-independent plumbing"
)
def test_tasks_end_to_end(fake, monkeypatch):
    monkeypatch.delenv(paths.DIGITS_DIR_ENV)  # scikit-learn's own digits
    keras.utils.set_random_seed(0)
    # 64-byte texts: room for the digits' default template.
    model = keras_towers.CLIP.tiny(config="tiny_text64")
    result = tasks.run(model, "zeroshot:digits", limit=20, verbose=0)
    metrics = result["metrics"]
    assert metrics["num_examples"] == 20 and metrics["chance"] == pytest.approx(0.1)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert result["class_names"] == [str(d) for d in range(10)]
    result = tasks.run(model, "retrieval:fluent-3d", verbose=0)
    assert result["captions"] == [name for name, _ in fakes.FLUENT_CLASSES]
    assert result["metrics"]["unique_captions"] == len(fakes.FLUENT_CLASSES)


# === real installed packages (skipped when absent) ===


def _real_sources() -> Path | None:
    for base in (os.environ.get(paths.DATA_DIR_ENV), "~/.cache/keras_towers"):
        if base is None:
            continue
        tarballs = eval_sets.fluent_3d_tarballs(Path(base).expanduser())
        if all(t.is_file() for t in tarballs):
            return tarballs[0].parent
    return None


@pytest.mark.skipif(
    _real_sources() is None,
    reason="the @lobehub/fluent-emoji-3d or emojibase-data tarball is missing",
)
def test_real_fluent_3d(tmp_path):
    sources = _real_sources()
    (tmp_path / "sources").mkdir()
    for tarball in eval_sets.fluent_3d_tarballs(sources.parent):
        (tmp_path / "sources" / tarball.name).symlink_to(tarball)
    info = datasets.describe_classification("fluent-3d", data_dir=tmp_path)
    n = info["counts"]["test"]
    assert n == 1855, info["skipped"]
    assert info["skipped"]["skin_tone_variant"] >= 1500
    assert info["skipped"]["duplicate_file"] == 16
    assert "no_label" not in info["skipped"]
    assert len(set(info["classes"])) == n
    images, labels, names = datasets.load_classification("fluent-3d", data_dir=tmp_path)
    assert images.shape == (n, 128, 128, 3) and names == info["classes"]
    assert names[:3] == ["keycap: #", "keycap: *", "keycap: 0"]
    for name in ("grinning face", "red apple", "dog face", "flag: Japan"):
        assert name in names
    assert "flag: Wales" in names  # a tag sequence
    # Shaded renders on white: corners white, some colour in the middle.
    assert (images[:, 0, 0] == 255).all()


@pytest.mark.skipif(
    not Path(paths.DEFAULT_FLAGS_DIR).is_dir()
    or not (Path(paths.DEFAULT_ISO_CODES_DIR) / eval_sets.ISO_3166_FILE).is_file(),
    reason="iso-flags-png-320x240 or iso-codes is not installed",
)
def test_real_flags(monkeypatch):
    monkeypatch.delenv(paths.FLAGS_DIR_ENV, raising=False)
    monkeypatch.delenv(paths.ISO_CODES_DIR_ENV, raising=False)
    info = datasets.describe_classification("flags")
    assert info["counts"] == {"test": 249}
    assert info["skipped"] == {"no_iso_code": 13}
    images, labels, names = datasets.load_classification("flags")
    assert images.shape == (249, 240, 320, 3)
    for name in ("France", "Japan", "South Korea", "Vietnam", "Bolivia"):
        assert name in names
    assert not any("," in n and " and " not in n for n in names)


@pytest.mark.skipif(paths.digits_dir() is None, reason="scikit-learn is missing")
def test_real_digits(monkeypatch):
    monkeypatch.delenv(paths.DIGITS_DIR_ENV, raising=False)
    images, labels, names = datasets.load_classification("digits", "all")
    assert images.shape == (1797, 8, 8) and images.max() == 255
    # Strokes are bright: the border (mostly background) is darker than the
    # centre on average.
    assert images[:, :, 0].mean() < images[:, 2:6, 2:6].mean()
    info = datasets.describe_classification("digits")
    assert info["counts"] == {"train": 1438, "test": 359}
    x_test, y_test, _ = datasets.load_classification("digits", "test")
    assert len(x_test) == 359 and set(np.bincount(y_test)) <= {35, 36, 37}
