"""Presets load strictly and save atomically.

Loading: a config that disagrees with the weights, a preset without
checksums, and a referenced encoder installed with other weights are refused
with errors that say what differs and how to opt out. Saving: a save that
fails (a full disk, by fault injection) leaves the previous preset intact and
no half directory under the real name.
"""

import errno
import hashlib
import json
import shutil

import keras
import numpy as np
import pytest

import keras_towers
from keras_towers import from_scratch
from keras_towers import presets
from keras_towers.backbones import VisionTransformer
from keras_towers.preprocessing import ContrastivePreprocessor
from keras_towers.pretrained import registry
from keras_towers.towers import ImageTower
from tests.helpers import random_batch


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory):
    """A tiny CLIP preset saved once; tests work on copies of it."""
    keras.utils.set_random_seed(0)
    model = keras_towers.CLIP.tiny()
    path = tmp_path_factory.mktemp("clip") / "preset"
    model.save_to_preset(str(path))
    batch = random_batch(model)
    return path, batch, _outputs(model, batch)


def _outputs(model, batch) -> dict:
    return {
        k: keras.ops.convert_to_numpy(v)
        for k, v in model(batch, training=False).items()
    }


def _copy(saved_clip, tmp_path):
    path = tmp_path / "preset"
    shutil.copytree(saved_clip[0], path)
    return path


def _assert_loads_unchanged(path, saved_clip, **kwargs):
    model = keras_towers.CLIP.from_preset(str(path), **kwargs)
    _, batch, expected = saved_clip
    actual = _outputs(model, batch)
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=key)
    return model


def _edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rehash(path, filename) -> None:
    digest = hashlib.sha256((path / filename).read_bytes()).hexdigest()
    _edit_json(
        path / "metadata.json",
        lambda meta: meta["files_sha256"].__setitem__(filename, digest),
    )


# === Strict loading ===


def test_a_config_that_disagrees_with_the_weights_is_refused(saved_clip, tmp_path):
    path = _copy(saved_clip, tmp_path)
    text = (path / "config.json").read_text()
    assert '"num_layers": 2' in text
    (path / "config.json").write_text(
        text.replace('"num_layers": 2', '"num_layers": 1')
    )
    # The checksum catches the edit first ...
    with pytest.raises(ValueError, match="config.json.*sha256"):
        keras_towers.CLIP.from_preset(str(path))
    # ... and with a matching checksum (or the opt-out) the weights do.
    _rehash(path, "config.json")
    for kwargs in ({}, {"verify_checksums": False}):
        with pytest.raises(ValueError, match="do not fit") as info:
            keras_towers.CLIP.from_preset(str(path), **kwargs)
        message = str(info.value)
        assert "stored weights the model has no variable for" in message
        assert "encoder_layer_1" in message


def test_a_config_with_other_shapes_is_refused(saved_clip, tmp_path):
    path = _copy(saved_clip, tmp_path)
    text = (path / "config.json").read_text()
    assert '"intermediate_dim": 128' in text
    # Same variables, narrower MLPs.
    text = text.replace('"intermediate_dim": 128', '"intermediate_dim": 64')
    (path / "config.json").write_text(text)
    with pytest.raises(ValueError, match="weights whose shapes differ"):
        keras_towers.CLIP.from_preset(str(path), verify_checksums=False)


def test_a_preset_without_metadata_is_refused_unless_opted_out(saved_clip, tmp_path):
    path = _copy(saved_clip, tmp_path)
    (path / "metadata.json").unlink()
    with pytest.raises(ValueError, match="no metadata.json") as info:
        keras_towers.CLIP.from_preset(str(path))
    assert "verify_checksums=False" in str(info.value)
    with pytest.raises(ValueError, match="no metadata.json"):
        keras_towers.ContrastiveModel.from_preset(str(path))
    model = _assert_loads_unchanged(path, saved_clip, verify_checksums=False)
    # The opt-out is an argument of loading, not a config override.
    assert "verify_checksums" not in model.get_config()
    base = keras_towers.ContrastiveModel.from_preset(str(path), verify_checksums=False)
    assert type(base) is keras_towers.CLIP


@pytest.mark.parametrize("removed", ["model.weights.h5", "config.json", "all"])
def test_a_missing_checksum_is_refused_unless_opted_out(saved_clip, tmp_path, removed):
    path = _copy(saved_clip, tmp_path)

    def drop(meta):
        if removed == "all":
            del meta["files_sha256"]
        else:
            del meta["files_sha256"][removed]

    _edit_json(path / "metadata.json", drop)
    expected = "records no checksum" if removed == "all" else f"no sha256.*{removed}"
    with pytest.raises(ValueError, match=expected):
        keras_towers.CLIP.from_preset(str(path))
    _assert_loads_unchanged(path, saved_clip, verify_checksums=False)


# === Referenced encoders ===


@pytest.fixture
def fake_encoder(tmp_path):
    """A registered image encoder whose 'weights file' the test controls."""
    weights = tmp_path / "encoder_weights.bin"
    weights.write_bytes(b"version 1")
    name = "test_preset_loading_vit"

    def build(backbone_name):
        return VisionTransformer(
            patch_size=8,
            hidden_dim=16,
            num_layers=1,
            num_heads=2,
            intermediate_dim=32,
            image_shape=(32, 32, 3),
            name=backbone_name,
        )

    registry.register_encoder(
        registry.Encoder(
            name=name,
            modality="image",
            build_backbone=build,
            pooling="cls",
            output_dim=16,
            short_name="test_vit",
            weights_file=lambda: weights,
        )
    )
    yield name, weights
    registry.ENCODERS.remove(name)


def _lit_on(source):
    preprocessor = ContrastivePreprocessor.default(
        image_size=32,
        sequence_length=from_scratch.CONFIGS.get("tiny")["sequence_length"],
    )
    return keras_towers.LiT(
        image_tower_source=source,
        text_tower=from_scratch.text_tower("tiny", preprocessor, 16),
        preprocessor=preprocessor,
    )


def test_referenced_encoder_weights_are_recorded_and_verified(fake_encoder, tmp_path):
    name, weights = fake_encoder
    path = tmp_path / "lit"
    _lit_on(name).save_to_preset(str(path))
    record = json.loads((path / "metadata.json").read_text())["referenced_encoders"]
    assert record == {
        name: {
            "package": None,
            "version": None,
            "file": weights.name,
            "sha256": hashlib.sha256(b"version 1").hexdigest(),
        }
    }
    keras_towers.LiT.from_preset(str(path))  # unchanged: loads

    weights.write_bytes(b"version 2, other weights")
    with pytest.raises(ValueError, match=name) as info:
        keras_towers.ContrastiveModel.from_preset(str(path))
    message = str(info.value)
    assert hashlib.sha256(b"version 1").hexdigest() in message
    assert hashlib.sha256(b"version 2, other weights").hexdigest() in message
    assert "verify_encoders=False" in message
    model = keras_towers.LiT.from_preset(str(path), verify_encoders=False)
    assert "verify_encoders" not in model.get_config()


def test_a_preset_without_encoder_records_warns(fake_encoder, tmp_path):
    name, _ = fake_encoder
    path = tmp_path / "lit"
    _lit_on(name).save_to_preset(str(path))
    _edit_json(path / "metadata.json", lambda m: m.pop("referenced_encoders"))
    with pytest.warns(UserWarning, match=f"{name}.*not verified"):
        keras_towers.LiT.from_preset(str(path))


def test_weight_file_digests_are_computed_once(tmp_path, monkeypatch):
    file = tmp_path / "w.bin"
    file.write_bytes(b"abc")
    calls = []
    real = registry.sha256_file
    monkeypatch.setattr(registry, "sha256_file", lambda p: calls.append(p) or real(p))
    first = registry.file_sha256(file)
    assert registry.file_sha256(file) == first
    assert len(calls) == 1
    file.write_bytes(b"abcd")  # another size: hashed again
    assert registry.file_sha256(file) != first
    assert len(calls) == 2


# === Atomic saving ===


def _disk_full_writer(model, path, referenced=()):
    with open(path, "wb") as f:
        f.write(b"\x89HDF half a file")
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def _changed_model(path):
    model = keras_towers.CLIP.from_preset(str(path))
    for variable in model.trainable_variables[:3]:
        variable.assign(variable + 1.0)
    return model


def test_a_save_that_fills_the_disk_leaves_the_old_preset(
    saved_clip, tmp_path, monkeypatch
):
    path = _copy(saved_clip, tmp_path)
    (path / "README.md").write_text("card")
    model = _changed_model(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(presets, "_save_weights_without_optimizer", _disk_full_writer)
    with pytest.raises(OSError) as info:
        model.save_to_preset(str(path))
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no leftovers
    assert (path / "README.md").read_text() == "card"
    _assert_loads_unchanged(path, saved_clip)


def test_a_failed_first_save_leaves_no_half_directory(
    saved_clip, tmp_path, monkeypatch
):
    model = keras_towers.CLIP.from_preset(str(saved_clip[0]))
    monkeypatch.setattr(presets, "_save_weights_without_optimizer", _disk_full_writer)
    with pytest.raises(OSError):
        model.save_to_preset(str(tmp_path / "new"))
    assert list(tmp_path.iterdir()) == []


def test_a_save_failing_while_moving_files_in_restores_the_old_preset(
    saved_clip, tmp_path, monkeypatch
):
    path = _copy(saved_clip, tmp_path)
    model = _changed_model(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    real = presets._move
    calls = []

    def flaky_move(source, destination):
        calls.append(source)
        if len(calls) == 4:  # old files moved out, some new ones in
            raise OSError(errno.EIO, "I/O error", str(destination))
        real(source, destination)

    monkeypatch.setattr(presets, "_move", flaky_move, raising=False)
    with pytest.raises(OSError):
        model.save_to_preset(str(path))
    assert len(calls) > 4  # the moves were undone
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    _assert_loads_unchanged(path, saved_clip)


def test_saving_over_a_preset_keeps_other_files_and_drops_stale_ones(
    saved_clip, tmp_path
):
    path = _copy(saved_clip, tmp_path)
    (path / "README.md").write_text("card")
    (path / "history.csv").write_text("epoch,loss\n")
    (path / "anchors.safetensors").write_bytes(b"old format")  # listed: ours
    _rehash(path, "anchors.safetensors")
    model = _changed_model(path)
    model.save_to_preset(str(path))
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "history.csv",
        "metadata.json",
        "model.weights.h5",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset"]
    reloaded = keras_towers.CLIP.from_preset(str(path))
    _, batch, _ = saved_clip
    expected = _outputs(model, batch)
    for key, value in _outputs(reloaded, batch).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_expected_weights_match_what_keras_writes(saved_clip):
    model = keras_towers.CLIP.from_preset(str(saved_clip[0]))
    stored = presets._stored_weights(saved_clip[0] / "model.weights.h5")
    assert presets.expected_weights(model) == stored
    assert isinstance(model.image_tower, ImageTower)


@pytest.mark.parametrize(
    "injected",
    [
        # A function from outside Keras in place of a layer.
        {"module": "os", "class_name": "system", "config": {"command": "touch {}"}},
        # A Lambda layer carrying marshalled bytecode.
        {
            "module": "keras.layers",
            "class_name": "Lambda",
            "config": {
                "name": "payload",
                "function": {
                    "class_name": "__lambda__",
                    "config": {
                        "code": "4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMEAAAAfABTAKkBTqkAqQHa"
                    },
                },
            },
        },
    ],
    ids=["foreign_function", "lambda_bytecode"],
)
def test_a_config_injecting_code_is_refused(saved_clip, tmp_path, injected):
    path = _copy(saved_clip, tmp_path)
    marker = tmp_path / "ran"
    injected = json.loads(json.dumps(injected).replace("{}", str(marker)))
    _edit_json(
        path / "config.json",
        lambda config: config["config"]["image_tower"]["config"].__setitem__(
            "backbone", injected
        ),
    )
    _rehash(path, "config.json")  # a well-formed preset, checksums and all
    with pytest.raises(ValueError, match="can build safely") as info:
        keras_towers.CLIP.from_preset(str(path))
    assert "safe_mode=False" not in str(info.value)
    assert not marker.exists()
