"""The `keras-towers` command, end to end on small inputs."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_towers import cli
from keras_towers.datasets import make_shapes
from tests.helpers import write_shapes_csv


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return write_shapes_csv(tmp_path_factory.mktemp("pairs"), 48, seed=5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["data", "prepare", "--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["zero-shot", "--help"],
        ["presets", "list", "--help"],
        ["embed", "--help"],
    ],
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert "usage: keras-towers" in capsys.readouterr().out


def test_presets_list(capsys):
    code, out, _ = _run(capsys, "presets", "list")
    assert code == 0
    assert "shapes_clip_tiny  [CLIP]" in out


def test_bad_task_is_a_one_line_error(capsys):
    code, _, err = _run(
        capsys, "eval", "--preset", "shapes_clip_tiny", "--task", "zeroshot"
    )
    assert code == 2
    assert "KIND:DATA" in err
    code, _, err = _run(
        capsys, "eval", "--preset", "shapes_clip_tiny", "--task", "nope:shapes"
    )
    assert code == 2 and "Unknown task kind 'nope'" in err


def test_unknown_preset(capsys):
    code, _, err = _run(
        capsys, "eval", "--preset", "no_such_preset", "--task", "zeroshot:shapes"
    )
    assert code == 2 and "Unknown preset 'no_such_preset'" in err


@pytest.mark.one_backend
def test_eval_json_and_report(capsys, tmp_path, pairs_csv):
    out_json = tmp_path / "r.json"
    report = tmp_path / "report"
    code, out, _ = _run(
        capsys,
        "eval",
        "--preset",
        "shapes_clip_tiny",
        "--task",
        "zeroshot:shapes",
        "--task",
        f"retrieval:{pairs_csv}",
        "--templates",
        "simple",
        "--limit",
        "60",
        "--json",
        str(out_json),
        "--report",
        str(report),
        "--markdown",
        str(tmp_path / "table.md"),
        "--verbose",
        "0",
    )
    assert code == 0
    metrics = json.loads(out_json.read_text())
    zero_shot = metrics["zeroshot:shapes"]
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0] == (
        f"| preset | `zeroshot:shapes` top-1 | `retrieval:{pairs_csv}` i→t R@1 / R@10 |"
    )
    row = table[2].split(" | ")
    assert row[0] == "| `shapes_clip_tiny`"
    assert row[1] == f"{100 * zero_shot['accuracy']:.1f}%"
    assert table[3].startswith("| *chance* | 8.33% | ")
    retrieval = metrics[f"retrieval:{pairs_csv}"]
    assert (
        row[2]
        == " / ".join(
            f"{100 * retrieval[f'image_to_text_recall@{k}']:.1f}%" for k in (1, 10)
        )
        + " |"
    )
    assert 0.0 <= zero_shot["accuracy"] <= 1.0 and zero_shot["num_examples"] == 60
    for direction in ("image_to_text", "text_to_image"):
        recalls = [retrieval[f"{direction}_recall@{k}"] for k in (1, 5, 10)]
        assert recalls == sorted(recalls)  # recall@k grows with k
    assert retrieval["num_images"] == 48
    assert "zeroshot:shapes" in out  # the table
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert any(name.endswith("_confusion.png") for name in pngs)
    assert any(name.endswith("_image_to_text.png") for name in pngs)
    assert all((report / name).stat().st_size > 1000 for name in pngs)


def test_zero_shot_command(capsys, tmp_path):
    images, _, _ = make_shapes(2, seed=9)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image).save(paths[-1])
    code, out, _ = _run(
        capsys,
        "zero-shot",
        "--preset",
        "shapes_clip_tiny",
        *paths,
        "--classes",
        "red circle, blue square,green triangle",
        "--top-k",
        "2",
    )
    assert code == 0
    lines = out.strip().splitlines()
    # The model's own learned temperature, said in the output (not 100).
    import keras_towers

    model = keras_towers.CLIP.from_preset("shapes_clip_tiny")
    scale = float(np.exp(keras.ops.convert_to_numpy(model.logit_scale)))
    assert lines[0] == (
        f"scores: probability: softmax over the classes of {scale:.2f} x "
        "cosine similarity"
    )
    assert lines[1] == paths[0] and lines[4] == paths[1]
    probabilities = [float(line.split("%")[0]) for line in lines[2:4]]
    assert probabilities == sorted(probabilities, reverse=True)
    expected = keras_towers.evaluation.classify(
        model,
        images[:1],
        ["red circle", "blue square", "green triangle"],
        templates="openai",
        top_k=2,
        logit_scale=scale,
    )[0]
    assert probabilities == [round(100 * p, 2) for _, p in expected]


def test_zero_shot_on_folders_and_globs(capsys, tmp_path):
    images, _, _ = make_shapes(3, seed=2)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    args = ["--preset", "shapes_clip_tiny", "--classes", "red circle,blue square"]
    code, out, _ = _run(capsys, "zero-shot", str(folder), *args)
    assert code == 0
    listed = [line for line in out.splitlines() if line.endswith(".png")]
    assert listed == [str(folder / f"{i}.png") for i in range(3)]
    code, out, _ = _run(capsys, "zero-shot", str(folder / "[12].png"), *args)
    assert code == 0 and str(folder / "0.png") not in out
    assert str(folder / "2.png") in out
    code, _, err = _run(capsys, "zero-shot", str(folder / "*.jpg"), *args)
    assert code == 2 and "no files match" in err


def test_zero_shot_needs_two_classes(capsys, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(path)
    code, _, err = _run(
        capsys,
        "zero-shot",
        "--preset",
        "shapes_clip_tiny",
        str(path),
        "--classes",
        "cat",
    )
    assert code == 2 and "at least two" in err


@pytest.mark.one_backend
def test_train_writes_a_loadable_preset(capsys, tmp_path, pairs_csv):
    import keras_towers

    output = tmp_path / "run"
    report = tmp_path / "report"
    code, out, _ = _run(
        capsys,
        "train",
        "--method",
        "clip-tiny",
        "--data",
        str(pairs_csv),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--output",
        str(output),
        "--report",
        str(report),
        "--verbose",
        "0",
    )
    assert code == 0, out
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["training"]["epochs"] == 2
    assert metadata["training"]["data"]["train_pairs"] == 48
    history = json.loads((report / "history.json").read_text())
    assert len(history["loss"]) == 2
    assert (report / "loss.png").stat().st_size > 1000
    model = keras_towers.CLIP.from_preset(str(output))
    assert model.encode_texts(["a red circle"]).shape == (1, 32)
    # A second run into the same directory refuses to overwrite it.
    code, _, err = _run(
        capsys,
        "train",
        "--method",
        "clip-tiny",
        "--data",
        str(pairs_csv),
        "--epochs",
        "1",
        "--output",
        str(output),
        "--verbose",
        "0",
    )
    assert code == 2 and "already holds a trained preset" in err


# Plumbing of a fit option (the accumulated step itself is checked on every
# backend by tests/test_accumulation.py).
@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="backend-independent; runs on torch"
)
def test_train_with_accumulation_steps(capsys, tmp_path, pairs_csv):
    common = ("--data", str(pairs_csv), "--epochs", "1", "--batch-size", "16")
    output = tmp_path / "accumulated"
    code, out, err = _run(
        capsys,
        "train",
        "--method",
        "clip-tiny",
        *common,
        "--accumulation-steps",
        "4",
        "--output",
        str(output),
        "--verbose",
        "0",
    )
    assert code == 0, out + err
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["training"]["accumulation_steps"] == 4
    code, _, err = _run(
        capsys,
        "train",
        "--method",
        "protoclip-tiny",
        *common,
        "--accumulation-steps",
        "2",
        "--output",
        str(tmp_path / "proto"),
    )
    assert code == 2 and "--accumulation-steps does not apply" in err, err
    assert "ProtoCLIP" in err and not (tmp_path / "proto" / "config.json").exists()


# The CLI's option plumbing is backend-independent (25-32 s on jax and
# tensorflow); ProtoCLIP training itself is tested on every backend.
@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="backend-independent; runs on torch"
)
def test_train_protoclip_with_lit_phase_and_method_options(capsys, tmp_path, pairs_csv):
    import keras_towers

    output = tmp_path / "proto"
    code, out, _ = _run(
        capsys,
        "train",
        "--method",
        "protoclip-tiny",
        "--data",
        str(pairs_csv),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--num-clusters",
        "6",
        "--lit-start-episode",
        "2",
        "--output",
        str(output),
        "--verbose",
        "0",
    )
    assert code == 0, out
    assert "episodes of 48 pairs" in out and "K=6 clusters" in out
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["class_name"] == "ProtoCLIP"
    assert metadata["training"]["method_options"] == {
        "num_clusters": 6,
        "lit_start_episode": 2,
    }
    assert not (output / "backup").exists()
    with open(output / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    # Episode 0 (warm-up) and 2 (LiT phase) train InfoNCE only.
    assert [float(r["loss"]) == float(r["clip_loss"]) for r in rows] == [
        True,
        False,
        True,
    ]
    model = keras_towers.ProtoCLIP.from_preset(str(output))
    assert model.active_clusters == 6 and model.episode_size == 48
    # ProtoCLIP options are refused for other methods, naming the flag.
    code, _, err = _run(
        capsys,
        "train",
        "--method",
        "clip-tiny",
        "--data",
        str(pairs_csv),
        "--num-clusters",
        "4",
        "--output",
        str(tmp_path / "refused"),
    )
    assert code == 2 and "--num-clusters" in err and "protoclip" in err


def test_version(capsys):
    import keras

    import keras_towers

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert keras_towers.__version__ in out and keras.config.backend() in out


@pytest.mark.one_backend
def test_resume_refuses_a_finished_run_and_changed_arguments(
    capsys, tmp_path, pairs_csv
):
    output = tmp_path / "run"
    base = ["train", "--method", "clip-tiny", "--data", str(pairs_csv)]
    base += ["--batch-size", "16", "--output", str(output), "--verbose", "0"]
    code, out, _ = _run(capsys, *base, "--epochs", "1")
    assert code == 0, out
    assert not (output / cli.RUN_FILE).exists()
    weights = (output / "model.weights.h5").read_bytes()
    code, _, err = _run(capsys, *base, "--epochs", "1", "--resume")
    assert code == 2 and "finished run" in err
    assert (output / "model.weights.h5").read_bytes() == weights

    # An interrupted run (a backup and its recorded arguments) resumed with
    # other arguments: refused, listing each difference.
    interrupted = tmp_path / "interrupted"
    (interrupted / "backup").mkdir(parents=True)
    recorded = cli._run_arguments(
        cli.build_parser().parse_args([*base, "--epochs", "3"])
    )
    recorded.update(seed=1)
    (interrupted / cli.RUN_FILE).write_text(json.dumps(recorded))
    argv = [a if a != str(output) else str(interrupted) for a in base]
    code, _, err = _run(capsys, *argv, "--epochs", "2", "--resume")
    assert code == 2
    assert "--epochs 3 then, 2 now" in err and "--seed 1 then, 0 now" in err
    kept = sorted(p.name for p in interrupted.iterdir() if p.name != cli.LOCK_FILE)
    assert kept == ["backup", cli.RUN_FILE]


def test_a_second_train_on_the_same_output_fails_at_once(capsys, tmp_path, pairs_csv):
    output = tmp_path / "busy"
    output.mkdir()
    holder = cli._lock_output(output)  # as a running `train` holds it
    try:
        code, _, err = _run(
            capsys,
            "train",
            "--method",
            "clip-tiny",
            "--data",
            str(pairs_csv),
            "--output",
            str(output),
        )
        assert code == 2 and "in use by another" in err
        assert f"pid {os.getpid()}" in err
    finally:
        holder.close()
    assert sorted(p.name for p in output.iterdir()) == [cli.LOCK_FILE]


def test_the_script_starts_quietly_and_refuses_an_unknown_backend(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = str(Path(sys.executable).parent / "keras-towers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS"))}
    env["HOME"] = str(tmp_path)  # no ~/.keras/keras.json of the user's
    # Even --help: Keras used to fail at import with a traceback.
    bad = subprocess.run(
        [script, "--help"],
        env={**env, "KERAS_BACKEND": "foo"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "KERAS_BACKEND='foo'" in bad.stderr
    assert "jax, torch, tensorflow" in bad.stderr
    # TensorFlow's native log lines (oneDNN, CUDA) used to print on every command.
    ok = subprocess.run(
        [script, "--version"],
        env={**env, "KERAS_BACKEND": keras.config.backend()},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    assert keras.config.backend() in ok.stdout


def test_report_and_json_paths_are_checked_before_any_work(capsys, tmp_path):
    taken = tmp_path / "file"
    taken.write_text("keep me")
    code, _, err = _run(
        capsys,
        "eval",
        "--preset",
        "no_such_preset",
        "--task",
        "zeroshot:shapes",
        "--report",
        str(taken),
    )
    assert code == 2 and "--report" in err and "is a file" in err
    code, _, err = _run(
        capsys,
        "eval",
        "--preset",
        "no_such_preset",
        "--task",
        "zeroshot:shapes",
        "--json",
        str(tmp_path),
    )
    assert code == 2 and "--json" in err and "is a folder" in err
    code, _, err = _run(
        capsys, "train", "--output", str(tmp_path / "run"), "--report", str(taken)
    )
    assert code == 2 and "--report" in err and not (tmp_path / "run").exists()
    assert taken.read_text() == "keep me"


def test_embed_images_and_texts_with_ids(capsys, tmp_path):
    from keras_towers import ContrastiveModel
    from keras_towers.datasets import read_image

    images, captions, _ = make_shapes(3, seed=2)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    table = tmp_path / "captions.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "caption"])
        writer.writerows([[f"c{i}", c] for i, c in enumerate(captions)])
    model = ContrastiveModel.from_preset("shapes_clip_tiny")

    out = tmp_path / "images.npy"
    code, printed, _ = _run(
        capsys,
        "embed",
        "--preset",
        "shapes_clip_tiny",
        "--images",
        str(folder),
        "--output",
        str(out),
    )
    assert code == 0 and "3 image embeddings" in printed
    ids = json.loads((tmp_path / "images.ids.json").read_text())
    assert ids["modality"] == "image" and len(ids["ids"]) == 3
    expected = model.encode_images([read_image(p) for p in ids["ids"]])
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)

    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "texts.parquet"
    code, _, _ = _run(
        capsys,
        "embed",
        "--preset",
        "shapes_clip_tiny",
        "--texts",
        str(table),
        "--output",
        str(out),
    )
    assert code == 0
    written = pyarrow_parquet.read_table(str(out))
    assert written.column("id").to_pylist() == ["c0", "c1", "c2"]
    np.testing.assert_allclose(
        np.array(written.column("embedding").to_pylist()),
        model.encode_texts(list(captions)),
        atol=1e-5,
    )
    # An existing output is kept unless --overwrite.
    before = out.read_bytes()
    code, _, err = _run(
        capsys,
        "embed",
        "--preset",
        "shapes_clip_tiny",
        "--texts",
        str(table),
        "--output",
        str(out),
    )
    assert code == 2 and "--overwrite" in err and out.read_bytes() == before
    code, _, err = _run(
        capsys,
        "embed",
        "--preset",
        "shapes_clip_tiny",
        "--texts",
        str(table),
        "--column",
        "text",
        "--output",
        str(tmp_path / "x.npy"),
    )
    assert code == 2 and "'text'" in err and "['id', 'caption']" in err
