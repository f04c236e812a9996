"""ASIF anchor storage on disk: deduplication, compact (PCA + int8) storage,
and the layout earlier versions wrote."""

import json

import h5py
import keras
import numpy as np
import pytest

from keras_towers.models.asif import ASIF
from keras_towers.models.asif import saving
from keras_towers.models.asif import storage
from keras_towers.ops import l2_normalize_numpy

#: The arrays every ASIF wrote before deduplication and compact storage.
OLD_KEYS = {
    "anchor_image_features",
    "anchor_text_features",
    "anchor_ids",
    "anchor_captions",
    "anchor_caption_offsets",
    "anchor_image_refs",
    "anchor_image_ref_offsets",
    "anchor_next_id",
}


def low_rank_features(n, d, rank, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    return (x + 0.01 * rng.standard_normal((n, d))).astype("float32")


def shared_caption_model(n=60, distinct=12, storage_spec="exact", dtype="float16"):
    """Anchors whose captions repeat (as one emoji in several styles)."""
    rng = np.random.default_rng(0)
    which = rng.integers(0, distinct, n)
    text_rows = rng.standard_normal((distinct, 10)).astype("float32")
    model = ASIF(k=8, p=8.0, anchor_dtype=dtype, anchor_storage=storage_spec)
    model.add_anchors(
        image_features=low_rank_features(n, 48, 6, 1),
        text_features=text_rows[which],
        captions=[f"caption {i}" for i in which],
        image_refs=[f"style-{i % 3}:{i}" for i in range(n)],
    )
    return model


def stored_arrays(path) -> dict:
    with h5py.File(path, "r") as f:
        return {key: np.asarray(f["vars"][key]) for key in f["vars"]}


def test_exact_storage_without_duplicates_writes_the_earlier_layout(tmp_path):
    rng = np.random.default_rng(0)
    model = ASIF(k=4, anchor_dtype="float16")
    model.add_anchors(
        image_features=rng.standard_normal((9, 6)),
        text_features=rng.standard_normal((9, 5)),
    )
    model.save_weights(str(tmp_path / "a.weights.h5"))
    arrays = stored_arrays(tmp_path / "a.weights.h5")
    assert set(arrays) == OLD_KEYS
    np.testing.assert_array_equal(
        arrays["anchor_image_features"], model.anchor_image_features
    )
    assert model.get_config()["anchor_storage"] == "exact"


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_shared_captions_are_stored_once_and_reload_bit_exact(tmp_path, dtype):
    model = shared_caption_model(dtype=dtype)
    model.save_to_preset(str(tmp_path / "p"))
    arrays = stored_arrays(tmp_path / "p" / "model.weights.h5")
    assert arrays["anchor_text_features"].shape == (12, 10)
    assert arrays["anchor_text_index"].shape == (60,)
    assert "anchor_image_index" not in arrays  # no duplicate images
    loaded = ASIF.from_preset(str(tmp_path / "p"))
    for name in ("anchor_image_features", "anchor_text_features"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
        assert getattr(loaded, name).dtype == np.dtype(dtype)
    assert loaded.anchor_captions == model.anchor_captions
    assert loaded.anchor_image_refs == model.anchor_image_refs
    # Rows are stored in order of first use.
    first = arrays["anchor_text_index"]
    assert first[0] == 0 and np.all(np.diff(np.maximum.accumulate(first)) <= 1)


def test_earlier_layout_with_repeated_rows_still_loads():
    """Before deduplication, repeated captions were stored in full."""
    model = shared_caption_model()
    arrays = saving.anchor_arrays(model._anchors)
    old = {k: v for k, v in arrays.items() if not k.endswith("_index")}
    old["anchor_text_features"] = np.ascontiguousarray(model.anchor_text_features)
    restored = saving.anchors_from_arrays(old)
    np.testing.assert_array_equal(restored["text_features"], model.anchor_text_features)
    np.testing.assert_array_equal(
        restored["image_features"], model.anchor_image_features
    )
    # A config written before `anchor_storage` existed.
    config = model.get_config()
    del config["anchor_storage"]
    assert ASIF.from_config(config).anchor_storage == "exact"


def test_compact_storage_is_small_and_close(tmp_path):
    exact = shared_caption_model(n=400)
    compact = shared_caption_model(n=400, storage_spec="compact")
    assert compact.anchor_storage == "compact"
    for model, name in ((exact, "exact"), (compact, "compact")):
        model.save_to_preset(str(tmp_path / name))
    arrays = stored_arrays(tmp_path / "compact" / "model.weights.h5")
    assert arrays["anchor_image_codes"].dtype == np.int8
    # 48-d image features are under the 256 dims of "compact": int8 only.
    assert arrays["anchor_image_codes"].shape == (400, 48)
    assert "anchor_image_features" not in arrays
    assert arrays["anchor_text_codes"].shape == (12, 10)
    loaded = ASIF.from_preset(str(tmp_path / "compact"))
    meta = json.loads((tmp_path / "compact" / "metadata.json").read_text())
    assert meta["anchor_storage"] == "compact"
    assert loaded.anchor_storage == "compact"
    for name in ("anchor_image_features", "anchor_text_features"):
        stored = getattr(loaded, name).astype("float32")
        np.testing.assert_allclose(
            stored, getattr(exact, name).astype("float32"), atol=0.02
        )
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=2e-3)
    # Image-to-text retrieval through the reloaded anchors barely moves.
    queries = low_rank_features(50, 48, 6, 1)[:50]
    reps = exact.represent(queries, "image")
    reps_loaded = loaded.represent(queries, "image")
    overlap = np.mean((reps > 0) == (reps_loaded > 0))
    assert overlap > 0.98
    # Saving the reloaded model again is stable.
    loaded.save_to_preset(str(tmp_path / "again"))
    again = ASIF.from_preset(str(tmp_path / "again"))
    np.testing.assert_allclose(
        again.anchor_image_features.astype("float32"),
        loaded.anchor_image_features.astype("float32"),
        atol=0.01,
    )


def test_principal_projection_is_exact_for_low_rank_features(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.standard_normal((80, 5)) @ rng.standard_normal((5, 40))
    model = ASIF(k=6, anchor_storage={"image_dims": 6})  # rank 5 + the mean
    model.add_anchors(image_features=image, text_features=rng.standard_normal((80, 7)))
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"))
    assert loaded.anchor_storage == {
        "quantize": None,
        "image_dims": 6,
        "text_dims": None,
    }
    # float16 basis: about 3 significant digits.
    np.testing.assert_allclose(
        loaded.anchor_image_features, model.anchor_image_features, atol=2e-3
    )
    np.testing.assert_array_equal(
        loaded.anchor_text_features, model.anchor_text_features
    )


def test_principal_basis_matches_the_svd():
    x = low_rank_features(200, 30, 4, 5).astype("float64")
    mean, basis = storage.principal_basis(x, 4)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(mean, x.mean(0))
    # Same subspace (signs may differ): |<b_i, v_i>| = 1.
    np.testing.assert_allclose(np.abs(np.sum(basis * vt[:4], axis=1)), 1, atol=1e-6)
    assert np.all(basis[np.arange(4), np.abs(basis).argmax(1)] > 0)


def test_int8_quantisation_round_trip():
    x = l2_normalize_numpy(np.random.default_rng(0).standard_normal((20, 64)))
    codes, scales = storage.quantize_int8(x)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127
    np.testing.assert_allclose(codes * scales[:, None], x, atol=scales.max() / 2 + 1e-7)
    codes, scales = storage.quantize_int8(np.zeros((2, 3)))
    assert not codes.any() and not scales.any()


def test_loaded_weights_replace_anchors_in_any_storage(tmp_path):
    model = shared_caption_model(storage_spec="compact")
    model.save_weights(str(tmp_path / "w.weights.h5"))
    other = ASIF(k=8, p=8.0, anchor_dtype="float16")  # exact storage
    other.load_weights(str(tmp_path / "w.weights.h5"))
    assert other.num_anchors == 60
    np.testing.assert_allclose(
        other.anchor_text_features.astype("float32"),
        model.anchor_text_features.astype("float32"),
        atol=0.02,
    )


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tiny", "must be one of"),
        ({"bits": 4}, "Unknown `anchor_storage` keys"),
        ({"quantize": "int4"}, "quantize"),
        ({"image_dims": 0}, "positive int"),
        ({"image_dims": True}, "positive int"),
        (8, "string or a dict"),
    ],
)
def test_bad_storage_is_rejected(spec, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ASIF(anchor_storage=spec)


def test_missing_feature_arrays_are_reported():
    arrays = saving.anchor_arrays(shared_caption_model()._anchors)
    del arrays["anchor_image_features"]
    with pytest.raises(ValueError, match="anchor_image_features"):
        saving.anchors_from_arrays(arrays)


def test_only_anchor_arrays_escape_the_strict_preset_check():
    model = ASIF()
    for key in ("anchor_ids", "anchor_text_index", "anchor_image_codes"):
        assert model.is_free_form_weight(f"vars/{key}")
    for path in ("vars/bogus", "vars/anchor_text_extra", "tower/vars/anchor_ids"):
        assert not model.is_free_form_weight(path)
