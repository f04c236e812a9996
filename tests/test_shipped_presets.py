"""Shipped presets load by name on every backend and do what their card says."""

import json
import os

import numpy as np
import pytest

import keras_towers
from keras_towers import presets
from keras_towers.pretrained import registry


def test_registry_lists_shipped_presets_by_class():
    shipped = keras_towers.CLIP.presets
    assert "shapes_clip_tiny" in shipped
    assert shipped["shapes_clip_tiny"]["class_name"] == "CLIP"
    assert "shapes_clip_tiny" not in keras_towers.SigLIP.presets
    assert keras_towers.ASIF.presets["asif_lite0_minilm_embedded"]["class_name"] == (
        "ASIF"
    )
    assert "asif_lite0_minilm_embedded" not in keras_towers.CLIP.presets


def test_the_base_class_resolves_every_shipped_preset_to_its_own_class():
    shipped = presets.all_presets()
    assert len(shipped) >= 6
    classes = {}
    for name, metadata in shipped.items():
        target = presets.preset_class(keras_towers.ContrastiveModel, name)
        assert target.__name__ == metadata["class_name"], name
        classes[name] = target
    assert classes["lit_lite0_embedded"] is keras_towers.LiT
    assert classes["three_towers_lite0_embedded"] is keras_towers.ThreeTowers
    assert classes["asif_lite0_minilm_embedded"] is keras_towers.ASIF
    # A class that is not the preset's (nor a base of it) is refused.
    with pytest.raises(ValueError, match="not a LiT"):
        keras_towers.LiT.from_preset("shapes_clip_tiny")
    model = keras_towers.ContrastiveModel.from_preset("shapes_clip_tiny")
    assert type(model) is keras_towers.CLIP


def test_every_shipped_preset_has_a_card_and_checksum():
    root = presets.presets_dir()
    for name in os.listdir(root):
        path = root / name
        if not path.is_dir():
            continue
        metadata = json.loads((path / "metadata.json").read_text())
        assert (path / "README.md").is_file(), f"{name} has no card"
        if "files_sha256" in metadata:
            # ASIF-style presets: a checksum per data file (anchors, towers
            # stored inside), and the model's encoders referenced by name.
            checked = metadata["files_sha256"]
            assert checked, f"{name} lists no checksummed file"
        else:
            checked = {"model.weights.h5": metadata["weights_sha256"]}
        for filename, digest in checked.items():
            assert digest == presets.sha256_file(path / filename), (
                f"{name}/{filename} does not match its sha256"
            )
        # Every weight-bearing file is covered by a checksum.
        data_files = {
            f.name for f in path.iterdir() if f.suffix in (".h5", ".safetensors")
        }
        assert data_files <= set(checked), (
            f"{name}: unchecked {data_files - set(checked)}"
        )
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        assert size < 15 * 2**20, f"{name} is {size / 2**20:.1f} MB"


def test_shapes_clip_tiny_zero_shot_matches_its_card():
    model = keras_towers.CLIP.from_preset("shapes_clip_tiny")
    names = keras_towers.datasets.shape_class_names()
    text = model.encode_texts([f"a {name}" for name in names])
    images, _, labels = keras_towers.datasets.make_shapes(1200, seed=1)
    accuracy = float(
        np.mean(
            (model.encode_images(images, batch_size=256) @ text.T).argmax(1) == labels
        )
    )
    recorded = model_card_accuracy()
    # Same weights and data on every backend: only float rounding may differ.
    assert accuracy == pytest.approx(recorded, abs=0.01)


def model_card_accuracy():
    meta = keras_towers.CLIP.presets["shapes_clip_tiny"]
    return meta["metrics"]["zero_shot_shapes_accuracy"]


def test_shipped_presets_record_the_weights_of_their_referenced_encoders():
    """Every registered encoder a shipped preset references (26.1M of
    `lit_lite0_minilm_embedded`'s 26.6M parameters) is recorded with its
    package version and weight-file sha256, and matches what is installed."""
    root = presets.presets_dir()
    checked = 0
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        config = json.loads((path / "config.json").read_text())["config"]
        metadata = json.loads((path / "metadata.json").read_text())
        # `*_source` values, and the old `*_preset` spellings of configs.
        sources = {
            value
            for value in config.values()
            if isinstance(value, str) and value in registry.ENCODERS
        }
        records = metadata.get("referenced_encoders", {})
        assert set(records) == sources, path.name
        for source, record in records.items():
            assert record == registry.weights_record(source), (path.name, source)
            assert registry.weights_mismatch(source, record) is None
            checked += 1
        if sources:
            # Config and tokenizer are checksummed too, not only the weights.
            assert "config.json" in metadata["files_sha256"], path.name
    assert checked >= 8
