"""`keras-towers --help`, `--version` and `presets list` start without Keras.

The parser (`keras_towers_entry.parser`) and `presets list`
(`keras_towers_entry.presets`) import neither Keras, its backends nor
`keras_towers`; commands that need them import them when they run. These
tests check what each command imports, in a fresh interpreter (the test
process has Keras loaded already), and that the parser's static copies of
library names equal the library's.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

import keras_towers
from keras_towers import presets
from keras_towers import recipes
from keras_towers import recipes_rocket
from keras_towers.cli import convert
from keras_towers.models import rocket_heads
from keras_towers_entry import parser as entry_parser
from keras_towers_entry import presets as entry_presets

pytestmark = pytest.mark.backend_independent

#: Packages a light command must not import.
HEAVY = ("keras", "keras_hub", "tensorflow", "jax", "torch", "keras_towers")

#: Runs `keras_towers_entry.main(argv)` as the script does and reports the
#: exit status, its stdout and the heavy packages it imported.
SCRIPT = """
import contextlib, io, json, sys
from keras_towers_entry import main
argv = json.loads(sys.argv[1])
heavy = json.loads(sys.argv[2])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
loaded = sorted(
    name for name in sys.modules
    if any(name == h or name.startswith(h + ".") for h in heavy)
)
print(json.dumps({"code": code, "stdout": out.getvalue(), "loaded": loaded}))
"""


def _env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS"))}
    env.update(overrides)
    return env


def _light_run(argv, env=None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(argv), json.dumps(HEAVY)],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["presets", "list"],
        ["presets", "list", "--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["zero-shot", "--help"],
        ["embed", "--help"],
        ["convert", "--help"],
        ["data", "prepare", "--help"],
        ["train", "--method", "no-such-method", "--output", "x"],  # usage error
    ],
)
def test_light_commands_import_no_keras(argv):
    result = _light_run(argv)
    expected = 2 if "no-such-method" in argv else 0
    assert result["code"] == expected
    assert result["loaded"] == [], f"{argv} imported {result['loaded']}"
    if "--help" in argv:
        assert "usage: keras-towers" in result["stdout"]


def test_building_the_parser_imports_no_keras():
    code = (
        "import sys; from keras_towers_entry.parser import build_parser; "
        "build_parser().parse_args(['train', '--output', 'x']); "
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_version_without_keras(tmp_path):
    import keras

    result = _light_run(["--version"], _env(KERAS_BACKEND="jax", HOME=str(tmp_path)))
    assert result["stdout"] == (
        f"keras-towers {keras_towers.__version__} (keras {keras.__version__}, "
        "backend jax)\n"
    )
    # No KERAS_BACKEND: the backend of $KERAS_HOME/keras.json.
    (tmp_path / "kh").mkdir()
    (tmp_path / "kh" / "keras.json").write_text('{"backend": "torch"}')
    result = _light_run(["--version"], _env(KERAS_HOME=str(tmp_path / "kh")))
    assert result["stdout"].endswith("backend torch)\n")
    assert result["loaded"] == []


def test_configured_backend_follows_keras_rules(tmp_path, monkeypatch):
    resolve = entry_parser.configured_backend
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert resolve({}) == "tensorflow"  # no keras.json
    (home / ".keras" / "keras.json").write_text('{"backend": "jax"}')
    assert resolve({}) == "jax"
    assert resolve({"KERAS_BACKEND": "torch"}) == "torch"
    assert resolve({"KERAS_BACKEND": ""}) == "jax"  # empty: ignored, as Keras does
    (home / ".keras" / "keras.json").write_text("{not json")
    assert resolve({}) == "tensorflow"
    (home / ".keras" / "keras.json").write_text('{"floatx": "float32"}')
    assert resolve({}) == "tensorflow"
    # $KERAS_HOME replaces ~/.keras.
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text('{"backend": "torch"}')
    assert resolve({"KERAS_HOME": str(keras_home)}) == "torch"
    assert resolve({"KERAS_HOME": str(tmp_path / "missing")}) == "tensorflow"


def test_configured_backend_agrees_with_keras(tmp_path):
    """The backend `--version` reports without Keras is the one Keras picks
    (here from a keras.json, without KERAS_BACKEND)."""
    (tmp_path / ".keras").mkdir()
    (tmp_path / ".keras" / "keras.json").write_text('{"backend": "jax"}')
    env = _env(HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    code = (
        "import sys; from keras_towers_entry.parser import configured_backend; "
        "print(configured_backend()); import keras; print(keras.config.backend())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    ours, keras_own = result.stdout.split()[-2:]
    assert ours == keras_own == "jax"


def _shipped_listing() -> str:
    """What `presets list` prints for `presets.all_presets()` less the
    presets other tests registered in this process."""
    import contextlib
    import io

    entries = {
        name: metadata
        for name, metadata in presets.all_presets().items()
        if name not in presets._USER_PRESETS
    }
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        entry_presets.print_presets(entries)
    return out.getvalue()


def test_presets_list_matches_the_library():
    result = _light_run(["presets", "list"])
    assert result["code"] == 0 and result["loaded"] == []
    assert result["stdout"] == _shipped_listing()
    listed = [
        line.split()[0] for line in result["stdout"].splitlines() if line[:1] != " "
    ]
    shipped = sorted(entry_presets.shipped_presets(presets.presets_dir()))
    assert listed == shipped and "shapes_clip_tiny" in listed
    assert "shapes_clip_tiny  [CLIP]" in result["stdout"]


def test_presets_list_honours_the_presets_dir(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metadata.json").write_text(
        json.dumps({"class_name": "CLIP", "metrics": {"zeroshot:x": {"accuracy": 0.5}}})
    )
    result = _light_run(
        ["presets", "list"], _env(KERAS_TOWERS_PRESETS_DIR=str(tmp_path))
    )
    assert result["stdout"] == "mine  [CLIP]\n    zeroshot:x: accuracy=0.5000\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _light_run(["presets", "list"], _env(KERAS_TOWERS_PRESETS_DIR=str(empty)))
    assert result["stdout"] == "No shipped presets found.\n"


def test_presets_list_in_process_shows_registered_presets(
    capsys, tmp_path, monkeypatch
):
    from keras_towers import cli

    monkeypatch.setitem(
        presets._USER_PRESETS,
        "my_registered_preset",
        {"path": str(tmp_path), "metadata": {"class_name": "CLIP"}},
    )
    assert cli.main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert "my_registered_preset  [CLIP]" in out and "shapes_clip_tiny  [CLIP]" in out


def test_library_presets_dir_is_the_light_one():
    assert presets.presets_dir() == entry_presets.presets_dir()
    package = os.path.dirname(os.path.realpath(keras_towers.__file__))
    assert str(presets.presets_dir()) == os.path.join(package, "shipped_presets")


def test_static_names_match_the_library():
    assert entry_parser.METHODS == tuple(recipes.names())
    assert entry_parser.AUGMENTATIONS == tuple(sorted(recipes_rocket.AUGMENTATIONS))
    assert entry_parser.DEFAULT_AUGMENT == recipes_rocket.DEFAULT_AUGMENT
    assert entry_parser.ZERO_SHOT_HEADS == rocket_heads.ZERO_SHOT_HEADS
    assert entry_parser.CONVERT_DESCRIPTION == (
        convert.__doc__.split("\n\n")[0].replace("`", "")
    )
    assert entry_parser.keras_towers_version() == keras_towers.__version__


def test_every_handler_resolves():
    for command, handler in entry_parser.HANDLERS.items():
        module, _, function = handler.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), command


def test_the_script_runs_heavy_commands_with_one_line_errors(tmp_path):
    """A command that needs Keras, through the installed script: imported
    quietly (no native log lines), a user error as one line."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-towers")
    result = subprocess.run(
        [script, "eval", "--preset", "shapes_clip_tiny", "--task", "nope:shapes"],
        env=_env(HOME=str(tmp_path), KERAS_BACKEND="jax"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "keras-towers: error: Unknown task kind 'nope'" in result.stderr
