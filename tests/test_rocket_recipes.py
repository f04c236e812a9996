"""The improved CLIP recipes end to end: augmented views in the epoch-seeded
pipeline, `keras-towers train --method clip-improved`, exact `--resume`."""

import csv
import gc

import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import cli
from keras_towers import recipes
from keras_towers import recipes_rocket
from keras_towers import training
from keras_towers.cli import train as cli_train
from keras_towers.datasets import make_shapes
from tests.helpers import write_shapes_csv


@pytest.fixture(scope="module")
def pairs():
    images, captions, _ = make_shapes(24, seed=1)
    return training.PairArrays(images, captions)


def _view_batches(pairs, epochs, seed=3):
    image_views, text_views = recipes_rocket.views("rocket", pairs.images.shape[1])
    ds, counter = training.epoch_shuffled_view_dataset(
        pairs, 8, seed, image_views, text_views
    )
    batches = []
    for epoch in epochs:
        counter.on_epoch_begin(epoch)
        batches.append(list(ds.as_numpy_iterator()))
    return batches


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_view_batches_are_a_function_of_seed_and_epoch(pairs):
    first, again, other = _view_batches(pairs, epochs=(0, 0, 1))
    assert sorted(first[0]) == ["images", "images_aug", "index", "texts", "texts_aug"]
    assert first[0]["images_aug"].shape[:2] == (8, recipes_rocket.ROCKET_VIEWS)
    _assert_same_batches(first, again)
    assert not np.array_equal(first[0]["images_aug"], other[0]["images_aug"])
    # The same order of examples as the plain epoch-seeded pipeline.
    plain, counter = training.epoch_shuffled_dataset(pairs, 8, seed=3)
    for epoch, batches in ((0, first), (1, other)):
        counter.on_epoch_begin(epoch)
        expected = [t for b in plain.as_numpy_iterator() for t in b["texts"]]
        order = np.concatenate([b["index"] for b in batches])
        assert [pairs.texts[i].encode() for i in order] == expected


def test_rocket_recipes_are_registered_with_their_addons():
    for method in recipes_rocket.ROCKET_ADDONS:
        recipe = recipes.get(method)
        assert "augment" in recipe.options and "zero_shot_head" in recipe.options
        assert recipes.TRAINERS.get(method) is recipes_rocket.views_trainer
        assert recipes_rocket.AUGMENTATIONS  # every choice builds its views
    model = recipes_rocket.build("siamlip", 32, zero_shot_head="ensemble")
    assert model.addon == "siamlip" and model.zero_shot_head == "ensemble"
    assert model.label_smoothing == 0.1 and model.head_layers == 3
    # The ablation's switches: linear h heads, no label smoothing, image-only
    # augmentation.
    model = recipes_rocket.build("clip-improved", 32, label_smoothing=0, head_layers=1)
    assert model.label_smoothing == 0.0 and model.head_layers == 1
    image_views, text_views = recipes_rocket.views("image", 32)
    assert [v.get_config() for v in image_views] == [
        v.get_config() for v in recipes_rocket.views("rocket", 32)[0]
    ]
    assert all(v.stopword_p == 0 and v.eda_weights is None for v in text_views)
    for option in (
        "augment",
        "zero_shot_head",
        "ensemble_weight",
        "label_smoothing",
        "head_layers",
    ):
        assert option in cli_train.RUN_ARGUMENTS


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    return write_shapes_csv(tmp_path_factory.mktemp("rocket_pairs"), 16, seed=5)


def _argv(csv_path, output, *extra):
    return [
        "train",
        "--method",
        "clip-improved",
        "--data",
        str(csv_path),
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--zero-shot-head",
        "ensemble",
        "--ensemble-weight",
        "0.3",
        "--output",
        str(output),
        "--verbose",
        "0",
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_towers():
    """The recipes on `CLIPRocket.tiny`'s towers: the CLI path is the same,
    compiling the small towers' three-view step would take most of a minute."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipes_rocket, "ROCKET_TOWERS", "tiny_shallow")
        patch.setattr(recipes_rocket, "ROCKET_HEAD_HIDDEN_DIM", 32)
        yield


@pytest.fixture(scope="module")
def uninterrupted(small_csv, tmp_path_factory, tiny_towers):
    output = tmp_path_factory.mktemp("rocket_runs") / "full"
    assert cli.main(_argv(small_csv, output)) == 0
    return output


def _weights(preset):
    model = keras_towers.CLIPRocket.from_preset(str(preset))
    return model, [keras.ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.one_backend
def test_train_clip_improved_writes_a_loadable_preset(uninterrupted):
    model, _ = _weights(uninterrupted)
    assert model.zero_shot_head == "ensemble" and model.ensemble_weight == 0.3
    assert model.addon is None
    rows = list(csv.DictReader(open(uninterrupted / "history.csv")))
    assert len(rows) == 2 and all(float(r["local_i2t_loss"]) > 0 for r in rows)
    embeddings = keras.ops.convert_to_numpy(
        model.encode_images(np.zeros((2, 32, 32, 3), "uint8"))
    )
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-4)


class _InterruptingLogger(training.AtomicCSVLogger):
    """The CLI's logger, killed at the end of epoch 1 (before its backup)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        super().on_epoch_end(epoch, logs)


# Three CLI runs (each compiles the three-view step): over 30 s.
@pytest.mark.one_backend
@pytest.mark.slow
def test_resume_ends_with_the_same_weights(
    small_csv, uninterrupted, tmp_path, monkeypatch, tiny_towers
):
    output = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(training, "AtomicCSVLogger", _InterruptingLogger)
        try:
            cli.main(_argv(small_csv, output))
            raise AssertionError("the run was not interrupted")
        except KeyboardInterrupt:
            pass
    gc.collect()  # release the interrupted run's lock on `output`
    assert (output / "backup").is_dir() and (output / cli.RUN_FILE).exists()
    # Other view options than the interrupted run's: refused.
    assert cli.main(_argv(small_csv, output, "--augment", "light", "--resume")) == 2
    assert cli.main(_argv(small_csv, output, "--resume")) == 0
    _, expected = _weights(uninterrupted)
    _, resumed = _weights(output)
    for a, b in zip(expected, resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_view_options_are_refused_where_they_do_not_apply(capsys, small_csv, tmp_path):
    argv = ["train", "--data", str(small_csv), "--image-size", "32", "--output"]
    code = cli.main(
        [*argv, str(tmp_path / "a"), "--method", "protoclip", "--augment", "none"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--augment" in err and "clip-improved" in err
    code = cli.main(
        [*argv, str(tmp_path / "b"), "--method", "swalip", "--augment", "none"]
    )
    assert code == 2 and "SwALIP needs augmented views" in capsys.readouterr().err


@pytest.mark.one_backend
def test_eval_commands_select_the_zero_shot_head(capsys, uninterrupted, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a red circle\na blue square\n")
    model = keras_towers.CLIPRocket.from_preset(str(uninterrupted))
    z_dim = model.image_tower.output_dim

    def embed(name, *options):
        out = tmp_path / f"{name}.npy"
        argv = ["embed", "--preset", str(uninterrupted), "--texts", str(texts)]
        code = cli.main([*argv, "--output", str(out), *options])
        return code, (np.load(out) if code == 0 else None)

    _, stored = embed("stored")  # the preset's own head: ensemble, w = 0.3
    _, global_ = embed("global", "--zero-shot-head", "global")
    _, augmented = embed("augmented", "--zero-shot-head", "augmented")
    _, half = embed("half", "--ensemble-weight", "0.5")
    assert global_.shape == (2, z_dim) and stored.shape[1] == z_dim + augmented.shape[1]
    np.testing.assert_allclose(stored[:, :z_dim], np.sqrt(0.3) * global_, atol=1e-5)
    np.testing.assert_allclose(stored[:, z_dim:], np.sqrt(0.7) * augmented, atol=1e-5)
    np.testing.assert_allclose(half[:, :z_dim], np.sqrt(0.5) * global_, atol=1e-5)
    capsys.readouterr()
    code, _ = embed("bad", "--zero-shot-head", "global", "--ensemble-weight", "0.5")
    assert code == 2 and "needs --zero-shot-head ensemble" in capsys.readouterr().err
    argv = ["eval", "--preset", "shapes_clip_tiny", "--task", "retrieval:tuxpaint"]
    assert cli.main([*argv, "--zero-shot-head", "augmented"]) == 2
    assert "holds a CLIP" in capsys.readouterr().err


def test_single_view_recipes_take_augment_icons_and_refuse_multi_view(pairs):
    for method in ("clip", "siglip", "three-towers"):
        assert "augment" in recipes.get(method).options
    assert recipes_rocket.single_views(None, 32, "clip") == (None, None)
    image_views, text_views = recipes_rocket.single_views("icons", 32, "clip")
    assert [v.invert_p for v in image_views] == [0.3]
    assert [v.template_p for v in text_views] == [0.5]
    with pytest.raises(ValueError, match="--augment rocket.*choose one of"):
        recipes_rocket.single_views("rocket", 32, "clip")
    # One augmented view per pair reaches CLIP's fit.
    model = recipes.build_clip(32)
    model.compile(learning_rate=1e-3)
    train = recipes.trainer("clip")
    history = train(model, pairs, 1, batch_size=8, augment="icons", verbose=0)
    assert np.isfinite(history["loss"]).all()


def test_captions_alone_are_augmented_over_cached_image_features():
    assert "augment" in recipes.get("lit").options
    image_views, text_views = recipes_rocket.single_views(
        "captions", 224, "lit", locked_images=True
    )
    assert image_views is None and [v.template_p for v in text_views] == [0.5]
    with pytest.raises(
        ValueError, match="locked image tower.*\\['captions', 'none'\\]"
    ):
        recipes_rocket.single_views("icons", 224, "lit", locked_images=True)
    texts = np.array([f"shape {i}" for i in range(16)])
    features = np.arange(16 * 4, dtype="float32").reshape(16, 4)
    arrays = {"image_features": features, "texts": texts}
    ds, counter = training.epoch_shuffled_view_dataset(
        arrays, 8, seed=0, image_views=None, text_views=text_views
    )
    counter.on_epoch_begin(0)
    batches = list(ds.as_numpy_iterator())
    assert sorted(batches[0]) == ["image_features", "index", "texts"]
    wrapped = 0
    for batch in batches:
        for i, feature, text in zip(
            batch["index"], batch["image_features"], batch["texts"], strict=True
        ):
            np.testing.assert_array_equal(feature, features[i])
            assert f"shape {i}" in text.decode()
            wrapped += text.decode() != f"shape {i}"
    assert 0 < wrapped < 16
