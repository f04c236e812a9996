"""Backend-generic test helpers: gradients, reference batches, tiny data,
and the config / `.keras` / preset round trip every method is tested with."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from keras_towers.datasets import make_shapes


def loss_and_grads(model, batch):
    """Loss and gradients of `model.compute_loss` w.r.t. trainable variables.

    Uses each backend's own autodiff, the way its trainer does.
    """
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "jax":
        import jax

        if not model.compiled:
            model.compile()  # the jax trainer's loss function reads the optimizer
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

        def fn(trainable):
            loss, _ = model.compute_loss_and_updates(
                trainable,
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables],
                batch,
                None,
                None,
                training=True,
                optimizer_variables=[v.value for v in model.optimizer.variables],
            )
            return loss

        # Jitted: eager jax dispatches op by op (2-3x slower on these models).
        loss, grads = jax.jit(jax.value_and_grad(fn))([v.value for v in variables])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = model(batch, training=True)
            loss = model.compute_loss(x=batch, y_pred=y_pred)
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "torch":
        import torch

        for v in variables:
            v.value.grad = None
        y_pred = model(batch, training=True)
        loss = model.compute_loss(x=batch, y_pred=y_pred)
        loss.backward()
        grads = [v.value.grad for v in variables]
        _ = torch  # imported for clarity of the backend branch
    else:
        raise NotImplementedError(backend)
    grads = [
        np.zeros(v.shape, "float32") if g is None else keras.ops.convert_to_numpy(g)
        for v, g in zip(variables, grads, strict=True)
    ]
    return float(keras.ops.convert_to_numpy(loss)), {
        v.path: g for v, g in zip(variables, grads, strict=True)
    }


def value_and_grads(fn, *args):
    """Value and gradients of scalar `fn(*args)` w.r.t. every argument, with
    the backend's own autodiff (compiled on jax and tensorflow, so `fn` is
    also checked to trace). A disconnected input's gradient is zeros.

    Returns:
        `(float value, [NumPy gradient per argument])`.
    """
    backend = keras.backend.backend()
    args = [np.asarray(a, "float32") for a in args]
    if backend == "jax":
        import jax

        value, grads = jax.jit(jax.value_and_grad(fn, argnums=range(len(args))))(*args)
    elif backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value = fn(*tensors)
            return value, tape.gradient(value, tensors)

        value, grads = step(*[tf.constant(a) for a in args])
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*tensors)
        value.backward()
        grads = [t.grad for t in tensors]
    else:
        raise NotImplementedError(backend)
    grads = [
        np.zeros_like(a) if g is None else keras.ops.convert_to_numpy(g)
        for a, g in zip(args, grads, strict=True)
    ]
    return float(keras.ops.convert_to_numpy(value)), grads


def random_batch(model, batch_size=4, seed=0):
    """A preprocessed batch for `model`: distinct images and captions."""
    rng = np.random.default_rng(seed)
    size = model.image_tower.image_shape[0]
    images = rng.integers(0, 256, (batch_size, size + 5, size, 3), dtype="uint8")
    texts = [
        f"{w} shape {i}"
        for i, w in enumerate(["red", "blue", "green", "tiny", "big", "odd"] * 4)
    ]
    raw = {"images": images, "texts": texts[:batch_size]}
    out = model.preprocessor(raw)
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def _numpy_outputs(outputs) -> dict:
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def _assert_same_outputs(expected, model, batch, what, output_keys, values=True):
    """`model(batch)` equals `expected` (or, without `values`, has its
    shapes) on every key both have, and has every key in `output_keys`
    (default: all of `expected`'s)."""
    actual = _numpy_outputs(model(batch, training=False))
    required = set(expected if output_keys is None else output_keys)
    missing = required - set(actual)
    assert not missing, f"{what}outputs lack {sorted(missing)}"
    for key in sorted(set(expected) & set(actual)):
        assert actual[key].shape == expected[key].shape, what + key
        if values:
            # Bit-identical on every backend: same weights, same computation.
            np.testing.assert_array_equal(
                actual[key], expected[key], err_msg=what + key
            )


def _assert_same_preprocessing(model, restored, raw, what):
    expected = _numpy_outputs(model.preprocessor(raw))
    actual = _numpy_outputs(restored.preprocessor(raw))
    assert set(actual) == set(expected), what
    for key, value in expected.items():
        np.testing.assert_array_equal(actual[key], value, err_msg=what + key)


def _config_json(model) -> str:
    return json.dumps(model.get_config(), sort_keys=True)


def _check_preset_metadata(model, preset_dir: Path, expected_class) -> None:
    metadata = json.loads((preset_dir / "metadata.json").read_text())
    assert metadata["class_name"] == expected_class.__name__, metadata
    assert metadata["parameter_count"] == model.count_params(), metadata
    written = {
        p.relative_to(preset_dir).as_posix()
        for p in preset_dir.rglob("*")
        if p.is_file() and p.name != "metadata.json"
    }
    assert set(metadata["files_sha256"]) == written, (metadata, sorted(written))
    for name, digest in metadata["files_sha256"].items():
        data = (preset_dir / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name


def run_roundtrip(
    model,
    batch: dict,
    tmp_path,
    *,
    raw: dict | None = None,
    keras_file: bool = True,
    preset: bool = True,
    expected_class=None,
    output_keys=None,
) -> dict:
    """Check that `model` survives every way this package saves a model.

    - config: `type(model).from_config(model.get_config())` is the same class
      with the same (JSON) config, name included;
    - `.keras` (if `keras_file`): `model.save` + `keras.saving.load_model`,
      written to `tmp_path / "model.keras"`;
    - preset (if `preset`): `save_to_preset(tmp_path / "preset")`, whose
      `metadata.json` names the class, counts the parameters and holds the
      sha256 of every other file written; loaded back with both
      `type(model).from_preset` and `keras_towers.ContrastiveModel.from_preset`,
      and an unknown preset name is refused with a `ValueError` naming it.

    Every reload is of `expected_class` (default `type(model)`) and its
    `call` on the preprocessed `batch` is bit-identical to `model`'s on every
    output key both produce (for the config route, which has fresh weights:
    the same shapes); each key of `output_keys` (default: all of
    `model`'s) must be produced. Pass `output_keys` when a reload legitimately
    lacks a tower (e.g. a ThreeTowers preset loads without its third tower).
    With `raw` (unpreprocessed inputs), each reload's preprocessor must also
    give bit-identical outputs (tokenizer assets, image converters).

    Returns the reloaded models by route: `"config"` (fresh weights),
    `"keras"`, `"preset"`, `"base_preset"`, so callers can check more.
    """
    from keras_towers import ContrastiveModel

    cls = type(model)
    expected_class = expected_class or cls
    tmp_path = Path(tmp_path)
    expected = _numpy_outputs(model(batch, training=False))
    assert set(output_keys or ()) <= set(expected), sorted(expected)
    restored = {"config": cls.from_config(model.get_config())}
    assert _config_json(restored["config"]) == _config_json(model), "config"

    if keras_file:
        path = str(tmp_path / "model.keras")
        model.save(path)
        restored["keras"] = keras.saving.load_model(path)
    if preset:
        preset_dir = tmp_path / "preset"
        model.save_to_preset(str(preset_dir))
        _check_preset_metadata(model, preset_dir, expected_class)
        restored["preset"] = cls.from_preset(str(preset_dir))
        restored["base_preset"] = ContrastiveModel.from_preset(str(preset_dir))
        bogus = f"no_such_preset_{cls.__name__.lower()}"
        with pytest.raises(ValueError, match=re.escape(bogus)):
            cls.from_preset(bogus)

    for route, reloaded in restored.items():
        assert type(reloaded) is expected_class, route
        # The config route rebuilds the architecture only: fresh weights.
        values = route != "config"
        _assert_same_outputs(
            expected, reloaded, batch, f"{route}: ", output_keys, values
        )
        if raw is not None:
            _assert_same_preprocessing(model, reloaded, raw, f"{route}: ")
    return restored


def write_shapes_csv(folder: Path, n: int, seed: int) -> Path:
    """`n` drawn shapes as PNGs in `folder` plus `pairs.csv` (image, caption),
    the pairs format `keras-towers train --data` reads."""
    images, captions, _ = make_shapes(n, seed=seed)
    with open(folder / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
            Image.fromarray(image).save(folder / f"{i}.png")
            writer.writerow([f"{i}.png", caption])
    return folder / "pairs.csv"
