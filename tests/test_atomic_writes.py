"""A full disk or a cut write never leaves a half file nor loses the old one.

Faults are injected: writers that write part of a file, then raise
`OSError(ENOSPC)` as a full disk does.
"""

import errno
import os

import keras
import numpy as np
import pytest

from keras_towers import training
from keras_towers.evaluation import report
from keras_towers.utils import io


def _disk_full(path=None):
    return OSError(errno.ENOSPC, "No space left on device", path)


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp"))


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path):
    path = tmp_path / "notes.txt"
    io.atomic_write(path, lambda f: f.write("old"), mode="w")

    def half_then_full(f):
        f.write("ne")
        f.flush()
        raise _disk_full()

    with pytest.raises(io.DiskFullError, match="disk .*is full.*untouched") as info:
        io.atomic_write(path, half_then_full, mode="w")
    assert str(path) in str(info.value)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    # Other errors pass through unchanged, leaving nothing either.
    with pytest.raises(ZeroDivisionError):
        io.atomic_write(path, lambda f: 1 / 0)
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def test_write_json_keeps_the_old_file_when_fsync_reports_a_full_disk(
    tmp_path, monkeypatch
):
    # Delayed allocation: the disk-full error surfaces when data is flushed.
    path = tmp_path / "a" / "metrics.json"
    io.write_json(path, {"top1": 0.5})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(_disk_full()))
    with pytest.raises(io.DiskFullError, match="metrics.json"):
        io.write_json(path, {"top1": 0.9})
    assert io.read_json(path) == {"top1": 0.5}
    assert _leftovers(path.parent) == []


def test_report_figure_is_written_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "loss.png"
    report.plot_history({"loss": [2.0, 1.0]}, path)
    before = path.read_bytes()
    real_savefig = Figure.savefig

    def savefig_then_full(self, fname, **kwargs):
        real_savefig(self, fname, **kwargs)
        with open(fname, "r+b") as f:
            f.truncate(os.path.getsize(fname) // 2)
        raise _disk_full(fname)

    monkeypatch.setattr(Figure, "savefig", savefig_then_full)
    with pytest.raises(OSError, match="disk .*is full"):
        report.plot_history({"loss": [3.0, 0.5, 0.1]}, path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def _read_csv(path):
    return path.read_text().splitlines()


def test_csv_logger_appends_on_resume_with_one_header(tmp_path):
    path = tmp_path / "history.csv"
    first = training.AtomicCSVLogger(path, append=True)
    first.on_train_begin()
    first.on_epoch_end(0, {"loss": 2.0})
    first.on_epoch_end(1, {"loss": 1.5})  # written, but its backup was not
    resumed = training.AtomicCSVLogger(path, append=True)
    resumed.on_train_begin()
    resumed.on_epoch_end(1, {"loss": 1.25, "val_loss": np.float32(1.5)})
    resumed.on_epoch_end(2, {"loss": 1.0, "val_loss": 1.25})
    assert _read_csv(path) == [
        "epoch,loss,val_loss",
        "0,2.0,NA",
        "1,1.25,1.5",
        "2,1.0,1.25",
    ]
    fresh = training.AtomicCSVLogger(path)
    fresh.on_train_begin()
    fresh.on_epoch_end(0, {"loss": 9.0})
    assert _read_csv(path) == ["epoch,loss", "0,9.0"]


def test_csv_logger_keeps_the_old_table_when_the_disk_fills(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    logger = training.AtomicCSVLogger(path)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 2.0})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(_disk_full()))
    with pytest.raises(io.DiskFullError, match="history.csv"):
        logger.on_epoch_end(1, {"loss": 1.0})
    assert _read_csv(path) == ["epoch,loss", "0,2.0"]
    assert _leftovers(tmp_path) == []


# === Backups of a small model (callback level) ===


def _dense_fit(backup_dir, epochs, callbacks=()):
    """A seeded Dense model fitted on fixed data, with backups in
    `backup_dir` (none with `None`)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x = np.arange(24, dtype="float32").reshape(8, 3) / 24
    if backup_dir is not None:
        callbacks = [training.SafeBackupAndRestore(str(backup_dir)), *callbacks]
    history = model.fit(
        x,
        x[:, :2],
        batch_size=4,
        epochs=epochs,
        shuffle=False,
        callbacks=list(callbacks),
        verbose=0,
    )
    return model, history


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_truncated_backup_is_skipped_for_the_previous_one(tmp_path):
    straight, _ = _dense_fit(None, 4)
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        # Backups are taken before `_StopAfter` runs: epochs 0 and 1.
        _dense_fit(backup, 4, callbacks=[_StopAfter(1)])
    newest = max(backup.glob("*.weights.h5"), key=os.path.getmtime)
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(UserWarning, match=f"damaged backup.*{newest.name}"):
        resumed, history = _dense_fit(backup, 4)
    assert len(history.history["loss"]) == 3  # from the backup of epoch 0
    _assert_same_weights(straight, resumed)


def _assert_same_weights(expected, model):
    for a, b in zip(expected.weights, model.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )


def test_disk_full_during_a_backup_keeps_the_previous_one(tmp_path, monkeypatch):
    straight, _ = _dense_fit(None, 3)
    backup = tmp_path / "backup"
    real_save_weights = keras.Model.save_weights
    saves = []

    def disk_fills_on_second_backup(self, filepath, overwrite=True, **kwargs):
        saves.append(filepath)
        real_save_weights(self, filepath, overwrite=overwrite, **kwargs)
        if len(saves) == 2:  # part of the file made it, then the disk is full
            with open(filepath, "r+b") as f:
                f.truncate(os.path.getsize(filepath) // 2)
            raise _disk_full(filepath)

    monkeypatch.setattr(keras.Model, "save_weights", disk_fills_on_second_backup)
    with pytest.raises(OSError, match="backup-1.weights.h5: the disk .*is full"):
        _dense_fit(backup, 3)
    monkeypatch.undo()
    assert len(saves) == 2
    assert _leftovers(backup) == []
    resumed, history = _dense_fit(backup, 3)
    assert len(history.history["loss"]) == 2  # from the backup of epoch 0
    _assert_same_weights(straight, resumed)
    assert not backup.exists()  # finished: the backups are removed


def test_backup_with_every_generation_damaged_is_a_clear_error(tmp_path):
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        # Backups are taken before `_StopAfter` runs: two generations.
        _dense_fit(backup, 5, callbacks=[_StopAfter(1)])
    weights = sorted(backup.glob("*.weights.h5"))
    assert len(weights) == 2
    for path in weights:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(training.DamagedBackupError, match="Delete that folder"):
        _dense_fit(backup, 5)
    assert len(sorted(backup.glob("*.weights.h5"))) == 2  # nothing deleted

    # A truncated backup left by Keras' own callback: the same clear error.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(40))
    (legacy / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    with pytest.raises(training.DamagedBackupError, match="latest.weights.h5"):
        _dense_fit(legacy, 5)


def test_backup_refuses_to_start_writing_without_room(tmp_path, monkeypatch):
    backup = tmp_path / "backup"
    monkeypatch.setattr(io, "_free_bytes", lambda directory: 10)
    with pytest.raises(io.DiskFullError, match="Not enough space"):
        _dense_fit(backup, 3)
    # The first backup (no size known yet) was written and is intact.
    assert [p.name for p in sorted(backup.glob("*.weights.h5"))] == [
        "backup-0.weights.h5"
    ]
    monkeypatch.undo()
    _, history = _dense_fit(backup, 3)
    assert len(history.history["loss"]) == 2  # resumed after epoch 0
