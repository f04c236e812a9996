"""CLIPRocket: multi-view training through `fit`, its loss against NumPy,
the add-ons, BYOLIP's EMA target, zero-shot heads and round trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_towers import augment
from keras_towers import objectives_ssl
from keras_towers.datasets import make_shapes
from keras_towers.models.rocket import CLIPRocket
from keras_towers.models.rocket_heads import pool_text_with_dropout
from tests.helpers import loss_and_grads
from tests.helpers import run_roundtrip

B, A = 8, 2
ADDONS = (None, "siamlip", "byolip", "barlip", "swalip")


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def raw():
    """A fixed raw multi-view batch: 8 pairs, 2 augmented views each."""
    images, texts, _ = make_shapes(B, image_size=32)
    texts = [str(t) for t in texts]
    return {
        "images": images,
        "texts": np.array(texts),
        "images_aug": np.stack([images[:, ::-1], np.roll(images, 5, axis=2)], 1),
        "texts_aug": np.array([[t.replace("a ", ""), t + " here"] for t in texts]),
    }


def preprocessed(model, raw):
    return {k: np_(v) for k, v in model.preprocess_samples(raw).items()}


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def smoothed_ce(logits, eps):
    n = logits.shape[-1]
    target = (1 - eps) * np.eye(n) + eps / n
    return -np.mean(np.sum(target * log_softmax(logits), axis=-1))


def numpy_cl2l(y, s, s_h, eps, reduction="mean"):
    """clip-rocket's CL2L loss, from its definition."""
    z_i, z_t = np_(y["image_z"]), np_(y["text_z"])
    g = s * z_i @ z_t.T
    i2t, t2i = smoothed_ce(g, 0.0), smoothed_ce(g.T, 0.0)
    if "image_h_aug" in y:
        h_i, h_t = np_(y["image_h_aug"]), np_(y["text_h_aug"])
        pairs = [s_h * h_i[a] @ h_t[b].T for a in range(A) for b in range(A)]
        local_i2t = np.mean([smoothed_ce(p, eps) for p in pairs])
        local_t2i = np.mean([smoothed_ce(p.T, eps) for p in pairs])
        i2t, t2i = (i2t + A * local_i2t) / (1 + A), (t2i + A * local_t2i) / (1 + A)
    return 0.5 * (i2t + t2i) * (2.0 if reduction == "sum" else 1.0)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_siamlip(y):
    def d(p, v):
        return 2 - 2 * np.mean(np.sum(unit(p) * unit(v), -1))

    p_i, p_t, v_i, v_t = (np_(y[k]) for k in ("image_p", "text_p", "image_v", "text_v"))
    terms = [d(p_i, v_t), d(p_t, v_i)]
    pa_i, pa_t = np_(y["image_p_aug"]), np_(y["text_p_aug"])
    va_i, va_t = np_(y["image_v_aug"]), np_(y["text_v_aug"])
    for a in range(A):
        for b in range(A):
            terms += [d(pa_i[a], va_t[b]), d(pa_t[a], va_i[b])]
    return np.mean(terms)


def numpy_barlip(y):
    def barlow(x, z):
        c = x.T @ z / len(x)
        off = c - np.diag(np.diag(c))
        return 0.025 * (np.sum((1 - np.diag(c)) ** 2) + 5e-3 * np.sum(off**2))

    v_i, v_t = np_(y["image_v"]), np_(y["text_v"])
    va_i, va_t = np_(y["image_v_aug"]), np_(y["text_v_aug"])
    terms = [barlow(v_i, v_t)] + [
        barlow(va_i[a], va_t[b]) for a in range(A) for b in range(A)
    ]
    return np.mean(terms)


def scales(model):
    return float(np.exp(np_(model.logit_scale))), float(
        np.exp(np_(model.h_logit_scale))
    )


@pytest.mark.parametrize(
    "addon, options",
    [
        (None, {}),
        (None, {"reduction": "sum", "label_smoothing": 0.2}),
        ("siamlip", {}),
        ("barlip", {"addon_weight": 0.5}),
        ("swalip", {}),
    ],
    ids=["cl2l", "cl2l_sum", "siamlip", "barlip", "swalip"],
)
def test_loss_matches_numpy_from_the_models_embeddings(raw, addon, options):
    model = CLIPRocket.tiny(addon=addon, **options)
    model.h_logit_scale.assign(np.log(7.0))
    batch = preprocessed(model, raw)
    y = model(batch, training=True)
    loss = float(np_(model.compute_loss(x=batch, y_pred=y)))
    s, s_h = scales(model)
    expected = numpy_cl2l(y, s, s_h, model.label_smoothing, model.reduction)
    logged = {m.name: float(np_(m.result())) for m in model.diagnostic_trackers}
    if addon == "siamlip":
        extra = numpy_siamlip(y)
    elif addon == "barlip":
        extra = numpy_barlip(y)
    elif addon == "swalip":
        assert model.label_smoothing == 0.0
        extra = float(
            np_(objectives_ssl.swalip_loss(y["image_h_aug"], y["text_h_aug"], s_h)[0])
        )
    if addon:
        np.testing.assert_allclose(logged[f"{addon}_loss"], extra, rtol=1e-4)
        expected += model.addon_weight * extra
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    assert logged["local_i2t_loss"] > 0 and logged["global_i2t_loss"] > 0


def test_views_go_through_backbone_and_h_heads(raw):
    model = CLIPRocket.tiny(zero_shot_head="augmented")
    batch = preprocessed(model, raw)
    assert batch["images_aug"].shape == (B, A, 32, 32, 3)
    assert batch["token_ids_aug"].shape == (B, A, 16)
    # Augmented views are normalised like the global view.
    flat = model.preprocessor({"images": raw["images_aug"][:, 1]})["images"]
    np.testing.assert_allclose(batch["images_aug"][:, 1], np_(flat), atol=1e-6)
    y = model(batch, training=False)
    for kind, views, head in (
        ("image", batch["images_aug"], model.image_h_head),
        ("text", None, model.text_h_head),
    ):
        for a in range(A):
            if kind == "image":
                pooled = model.image_tower.pool(views[:, a])
            else:
                pooled = model.text_tower.pool(
                    {
                        "token_ids": batch["token_ids_aug"][:, a],
                        "padding_mask": batch["padding_mask_aug"][:, a],
                    }
                )
            expected = unit(np_(head(pooled, training=False)))
            np.testing.assert_allclose(
                np_(y[f"{kind}_h_aug"][a]), expected, atol=1e-5, err_msg=kind
            )
        z = unit(np_(getattr(model, f"{kind}_tower")(_global(kind, batch))))
        np.testing.assert_allclose(np_(y[f"{kind}_z"]), z, atol=1e-5)


def _global(kind, batch):
    if kind == "image":
        return batch["images"]
    return {k: batch[k] for k in ("token_ids", "padding_mask")}


@pytest.mark.parametrize(
    "addon, options",
    [
        (None, {"text_dropout": 0.2}),
        ("siamlip", {}),
        ("byolip", {}),
        ("barlip", {}),
        ("swalip", {}),
    ],
    ids=["cl2l_text_dropout", "siamlip", "byolip", "barlip", "swalip"],
)
def test_every_trainable_variable_gets_a_gradient(raw, addon, options):
    model = CLIPRocket.tiny(addon=addon, **options)
    batch = preprocessed(model, raw)
    loss, grads = loss_and_grads(model, batch)
    assert np.isfinite(loss)
    zero = [path for path, g in grads.items() if not np.any(g)]
    assert not zero, f"no gradient for {zero}"
    assert any("h_head" in p for p in grads) and any(
        "h_logit_scale" in p for p in grads
    )
    if addon in ("siamlip", "byolip", "barlip"):
        assert any("projector" in p for p in grads)
    if addon == "byolip":
        targets = [v.path for v in model.non_trainable_variables if "target_" in v.path]
        assert targets and not any("target_" in p for p in grads)


def test_text_dropout_forward_matches_the_backbone_without_dropout(raw):
    model = CLIPRocket.tiny(text_dropout=0.5)
    batch = preprocessed(model, raw)
    view = {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"]}
    plain = np_(model.text_tower.pool(view))
    none = keras.layers.Dropout(0.0)
    same = pool_text_with_dropout(model.text_tower, view, none, training=True)
    np.testing.assert_allclose(np_(same), plain, atol=1e-5)
    dropped = pool_text_with_dropout(
        model.text_tower, view, model.text_dropout_layer, training=True
    )
    assert np.abs(np_(dropped) - plain).max() > 1e-3
    # Augmented captions only: the global caption is never dropped out.
    y = model(batch, training=True)
    np.testing.assert_allclose(
        np_(y["text_z"]), unit(np_(model.text_tower(view))), atol=1e-5
    )


def multiview_dataset(n=16, batch_size=B, image_size=32):
    """Raw pairs through the real augmentation pipeline (`views_map_fn`)."""
    images, texts, _ = make_shapes(n, image_size=40)
    ds = tf.data.Dataset.from_tensor_slices({"images": images, "texts": texts})
    ds = ds.enumerate().map(lambda i, x: {**x, "index": i})
    image_views = [augment.ImageAugment.from_preset("rocket-global", size=image_size)]
    image_views += A * [
        augment.ImageAugment.from_preset("rocket-augmented", size=image_size)
    ]
    text_views = [augment.TextAugment.from_preset("rocket-global")]
    text_views += A * [augment.TextAugment.from_preset("rocket-augmented")]
    ds = ds.map(augment.views_map_fn(image_views, text_views, seed=0, epoch=0))
    return ds.batch(batch_size)


def test_fit_on_augmented_views_through_tf_data():
    model = CLIPRocket.tiny(text_dropout=0.1)
    model.compile(learning_rate=1e-3)
    before = [np_(v).copy() for v in model.trainable_variables]
    history = model.fit(multiview_dataset(), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    for key in ("global_i2t_loss", "local_i2t_loss", "local_t2i_loss", "clip_loss"):
        assert np.isfinite(history[key][0]) and history[key][0] > 0, key
    changed = [
        not np.array_equal(b, np_(v))
        for b, v in zip(before, model.trainable_variables, strict=True)
    ]
    assert all(changed)


# Every add-on trains through `fit` on augmented views on every backend in
# `tests/test_rocket_parity.py` (the same numbers as a stored reference).


# Six steps cost 20-40 s on jax and tensorflow; the step's numbers are checked
# on every backend by the parity test above, so the trend runs on torch.
@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="parity covers the step; runs on torch"
)
def test_loss_decreases_on_a_fixed_batch(raw):
    model = CLIPRocket.tiny(addon="siamlip")
    model.compile(learning_rate=2e-3, jit_compile=False)
    ds = tf.data.Dataset.from_tensor_slices(raw).batch(B).repeat(6)
    log = []
    cb = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda i, logs: log.append(logs["clip_loss"])
    )
    # Metrics are running means over the epoch: a falling mean means the
    # later steps' losses are lower than the first.
    model.fit(ds, epochs=1, verbose=0, steps_per_epoch=6, callbacks=[cb])
    assert len(log) == 6 and all(np.isfinite(log))
    assert log[-1] < log[0], log


# The EMA runs inside the compiled step; tests/test_rocket_parity.py checks
# BYOLIP's losses over several steps (which the target drives) on every
# backend. The exact rule runs on torch and jax (33 s on tensorflow).
@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="parity covers it on tensorflow"
)
def test_byolip_target_moves_by_exactly_the_ema_rule(raw):
    m = 0.5
    model = CLIPRocket.tiny(addon="byolip", momentum=m)
    model.compile(learning_rate=1e-3)
    assert (
        model.target_image_tower is not None and not model.target_image_tower.trainable
    )
    trainable = {id(v) for v in model.trainable_variables}
    pairs = []
    for kind in ("image", "text"):
        for name in ("tower", "projector"):
            target = getattr(model, f"target_{kind}_{name}")
            online = getattr(model, f"{kind}_{name}")
            for t, o in zip(target.weights, online.weights, strict=True):
                assert id(t) not in trainable
                if o.trainable:
                    pairs.append((t, o))
    # Targets start as copies; move them away so the first update is visible.
    rng = np.random.default_rng(0)
    for t, o in pairs:
        np.testing.assert_array_equal(np_(t), np_(o))
        t.assign(np_(t) + rng.normal(size=t.shape).astype("float32") * 0.1)
    t0 = [np_(t).copy() for t, _ in pairs]
    o0 = [np_(o).copy() for _, o in pairs]
    ds = tf.data.Dataset.from_tensor_slices(raw).batch(B)
    model.fit(ds, epochs=1, verbose=0)
    for (t, _), t_before, o_before in zip(pairs, t0, o0, strict=True):
        # The update used the online weights of the step, before the optimizer.
        np.testing.assert_allclose(
            np_(t), m * t_before + (1 - m) * o_before, atol=1e-6, err_msg=t.path
        )
    assert any(
        not np.array_equal(np_(o), b) for (_, o), b in zip(pairs, o0, strict=True)
    )


@pytest.mark.parametrize("w", [0.3])
def test_zero_shot_heads_and_ensemble_similarities(raw, w):
    model = CLIPRocket.tiny(zero_shot_head="ensemble", ensemble_weight=w)
    batch = preprocessed(model, raw)
    y = model(batch, training=False)
    # Within the 14-byte context of the tiny towers (no truncation warning).
    images, texts = raw["images"], [str(t)[:14] for t in raw["texts"]]
    e_i, e_t = model.encode_images(images), model.encode_texts(texts)
    assert e_i.shape == (B, model.embedding_dim) == (B, 64)
    np.testing.assert_allclose(np.linalg.norm(e_i, axis=1), 1.0, atol=1e-5)
    cos_z = np_(y["image_z"]) @ np_(y["text_z"]).T
    cos_h = np_(y["image_h"]) @ np_(y["text_h"]).T
    np.testing.assert_allclose(e_i @ e_t.T, w * cos_z + (1 - w) * cos_h, atol=1e-5)
    model.set_zero_shot_head("augmented")
    np.testing.assert_allclose(
        model.encode_images(images), np_(y["image_h"]), atol=1e-5
    )
    model.set_zero_shot_head("global")
    np.testing.assert_allclose(model.encode_texts(texts), np_(y["text_z"]), atol=1e-5)
    assert model.get_config()["embedding_dim"] == 32


def test_global_only_batches_train_and_encode(raw):
    plain = {"images": raw["images"], "texts": raw["texts"]}
    for addon in (None, "swalip"):
        model = CLIPRocket.tiny(addon=addon)
        batch = preprocessed(model, plain)
        y = model(batch, training=True)
        assert "image_h_aug" not in y
        loss = float(np_(model.compute_loss(x=batch, y_pred=y)))
        s, _ = scales(model)
        np.testing.assert_allclose(loss, numpy_cl2l(y, s, 1.0, 0.1), rtol=1e-4)
    # One `fit` (each compiles its step, ~40 s on jax): the model with an
    # add-on, whose add-on heads see no views here, so it runs the plain CL2L
    # step plus the add-on's global-only path.
    model.compile(learning_rate=1e-3, jit_compile=False)
    history = model.fit(plain, epochs=1, batch_size=B, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["local_i2t_loss"][0] == 0
    assert model.encode_texts(["a red circle"]).shape == (1, 32)


def test_roundtrip_keeps_heads_targets_and_zero_shot_head(raw, tmp_path):
    model = CLIPRocket.tiny(
        addon="byolip", zero_shot_head="ensemble", ensemble_weight=0.6, text_dropout=0.1
    )
    model.compile(learning_rate=1e-3, jit_compile=False)
    # Targets start as copies of the online towers; move them (and only them,
    # as the EMA would after training: `test_byolip_target_moves_by_exactly_
    # the_ema_rule` runs a real step) so a reload that rebuilt them from the
    # online weights, or lost them, fails below. No `fit`: its compile cost
    # 40-70 s on jax and tensorflow, and saving does not depend on it.
    rng = np.random.default_rng(0)
    targets = [
        v
        for kind in ("image", "text")
        for name in ("tower", "projector")
        for v in getattr(model, f"target_{kind}_{name}").weights
        if "float" in str(v.dtype)
    ]
    assert targets
    for v in targets:
        v.assign(np_(v) + rng.normal(size=v.shape).astype("float32") * 0.1)
    batch = preprocessed(model, raw)
    restored = run_roundtrip(model, batch, tmp_path, raw={"images": raw["images"][:2]})
    for route in ("keras", "preset", "base_preset"):
        other = restored[route]
        assert other.zero_shot_head == "ensemble" and other.ensemble_weight == 0.6
        for kind in ("image", "text"):
            for name in ("tower", "projector"):
                for a, b in zip(
                    getattr(model, f"target_{kind}_{name}").weights,
                    getattr(other, f"target_{kind}_{name}").weights,
                    strict=True,
                ):
                    np.testing.assert_array_equal(np_(a), np_(b), err_msg=a.path)
        # Not bitwise: on tensorflow the compiled model predicts through XLA.
        np.testing.assert_allclose(
            other.encode_images(raw["images"]),
            model.encode_images(raw["images"]),
            atol=1e-6,
        )


def test_option_errors():
    with pytest.raises(ValueError, match="label smoothing"):
        CLIPRocket.tiny(addon="swalip", label_smoothing=0.1)
    with pytest.raises(ValueError, match="addon"):
        CLIPRocket.tiny(addon="simclr")
    with pytest.raises(ValueError, match="zero_shot_head"):
        CLIPRocket.tiny(zero_shot_head="local")
    with pytest.raises(ValueError, match="ensemble_weight"):
        CLIPRocket.tiny(zero_shot_head="ensemble", ensemble_weight=1.5)
    with pytest.raises(ValueError, match="InfoNCE"):
        CLIPRocket.tiny(loss="sigmoid")
    with pytest.raises(ValueError, match="projector"):
        CLIPRocket.tiny(addon="swalip", addon_dim=8)
    with pytest.raises(ValueError, match="text_dropout"):
        CLIPRocket.tiny(text_dropout=0.1, lock_text=True)
