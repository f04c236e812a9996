import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

#: The backend whose run also runs the `backend_independent` tests.
INDEPENDENT_TESTS_BACKEND = "jax"


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}"


def pytest_collection_modifyitems(config, items):
    """Tests marked `backend_independent` (pure data code: corpus, sources,
    rendering) run in one backend's pass of `scripts/test.sh`, not three."""
    if keras.backend.backend() == INDEPENDENT_TESTS_BACKEND:
        return
    skip = pytest.mark.skip(
        reason=f"backend-independent: runs with KERAS_BACKEND={INDEPENDENT_TESTS_BACKEND}"
    )
    for item in items:
        if "backend_independent" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _float32_and_seed():
    keras.config.set_floatx("float32")
    keras.utils.set_random_seed(0)
    yield
