"""An installed wheel, not only the source checkout, resolves the shipped presets.

`scripts/check_wheel.sh` builds the wheel, installs it into a fresh venv and
loads a shipped preset from outside the repository. Marked `packaging`: run
once (its own step in `scripts/test.sh`), not once per backend.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_wheel.sh"


@pytest.mark.packaging
@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_installed_wheel_resolves_shipped_presets():
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"scripts/check_wheel.sh exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
