import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# XLA (jax, and tensorflow's jit_compile) compiles the tiny test models with
# LLVM's cheap passes: tests/test_clip.py on jax took 89 s instead of 146 s
# on a 2-core Intel Xeon (2026-12-01). Fusion and the HLO are unchanged; the
# parity tests' tolerances hold. Set before Keras imports jax or tensorflow;
# an XLA_FLAGS of your own is kept.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
)

import keras  # noqa: E402
import pytest  # noqa: E402

#: The backend whose run also runs the `backend_independent` tests.
INDEPENDENT_TESTS_BACKEND = "jax"
#: The backend whose run runs the `one_backend` tests (the fastest here).
ONE_BACKEND = "torch"


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}"


def pytest_collection_modifyitems(config, items):
    """Tests marked `backend_independent` (pure data code: corpus, sources,
    rendering) run in one backend's pass of `scripts/test.sh`, not three.

    Tests marked `one_backend` exercise orchestration around training and
    loading (resuming, shipped presets by name, CLI and recipe runs) whose
    backend-specific parts, the train steps and the towers' numerics, are
    checked on every backend against stored references
    (`test_backend_parity.py`, `test_protoclip_parity.py`,
    `test_rocket_parity.py`, `test_efficientnet_lite.py`, `test_minilm.py`):
    they run in the torch pass only."""
    backend = keras.backend.backend()
    skip_independent = pytest.mark.skip(
        reason=f"backend-independent: runs with KERAS_BACKEND={INDEPENDENT_TESTS_BACKEND}"
    )
    skip_one = pytest.mark.skip(
        reason=f"one_backend: runs with KERAS_BACKEND={ONE_BACKEND}"
    )
    for item in items:
        if (
            "backend_independent" in item.keywords
            and backend != INDEPENDENT_TESTS_BACKEND
        ):
            item.add_marker(skip_independent)
        if "one_backend" in item.keywords and backend != ONE_BACKEND:
            item.add_marker(skip_one)


@pytest.fixture(autouse=True)
def _float32_and_seed():
    keras.config.set_floatx("float32")
    keras.utils.set_random_seed(0)
    yield
