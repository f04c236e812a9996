"""Guides run end to end (at tiny size).

Every guide runs on torch (the fastest backend here); `getting_started.py`
runs on every backend too, and `distributed.py` on jax, so the suite does not
repeat every guide on the two slow backends (25-100 s each there). The ProtoCLIP and
improved-recipe guides run on torch only: their training steps are checked
on every backend against stored references. The training code the guides
call is checked across backends by the parity tests
(`tests/test_backend_parity.py`, `tests/test_protoclip_parity.py`,
`tests/test_rocket_parity.py`).
"""

import os
import runpy

import keras
import pytest

GUIDES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides")

#: Guide -> the backends that run it.
BACKENDS = {
    "getting_started.py": ("jax", "torch", "tensorflow"),
    # Their training and loading code is checked on every backend by the
    # parity tests; on jax and tensorflow each took 25-100 s in CI.
    "evaluate_and_train_on_your_data.py": ("torch",),
    "lit.py": ("torch",),
    "three_towers.py": ("torch",),
    # ProtoCLIP's and the improved recipe's training steps are checked on
    # every backend against stored references (`tests/test_protoclip_parity.py`,
    # `tests/test_rocket_parity.py`'s clip-improved case), so these two guides,
    # about 35 s and 60 s on jax, run on torch only.
    "protoclip.py": ("torch",),
    "improved_recipe.py": ("torch",),
    # keras.distribution is JAX only; in-process it sees one device (XLA's
    # device count is fixed when JAX starts): `tests/test_distributed_jax.py`
    # runs the same API on 4 simulated devices.
    "distributed.py": ("jax",),
}


def test_every_guide_is_run():
    # `asif.py` needs the pretrained encoders: `tests/test_asif.py` runs it
    # (on torch).
    assert sorted([*BACKENDS, "asif.py"]) == sorted(
        name for name in os.listdir(GUIDES) if name.endswith(".py")
    )


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_guide_runs(name, monkeypatch, capsys):
    if keras.backend.backend() not in BACKENDS[name]:
        pytest.skip(f"{name} runs on {', '.join(BACKENDS[name])}")
    monkeypatch.setenv("GUIDE_EPOCHS", "2")
    runpy.run_path(os.path.join(GUIDES, name), run_name="__main__")
    assert "zero-shot accuracy" in capsys.readouterr().out
