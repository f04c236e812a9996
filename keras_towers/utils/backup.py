"""Training callbacks whose files survive a full disk or a killed process.

`SafeBackupAndRestore` is Keras' `BackupAndRestore` with every backup file
written atomically, two backup generations kept, each with the sha256 of its
weights, and a restore that skips a damaged one. `AtomicCSVLogger` is
Keras' `CSVLogger` rewriting the whole file atomically each epoch.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_towers.utils.io import atomic_write
from keras_towers.utils.io import check_free_space
from keras_towers.utils.io import read_json
from keras_towers.utils.io import sha256_file
from keras_towers.utils.io import write_json

#: Backup generations kept; generation `g` lives in slot `g % SLOTS`.
SLOTS = 2
#: What Keras' own `BackupAndRestore` writes (read once to resume old runs).
_KERAS_WEIGHTS = "latest.weights.h5"
_KERAS_METADATA = "training_metadata.json"


class DamagedBackupError(ValueError):
    """No backup in a backup folder can be restored: each is damaged."""


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore`, safe against full disks and killed writes.

    Each backup (a generation) is a weights file `backup-<slot>.weights.h5`
    and a record `backup-<slot>.json` (generation number, epoch, batch,
    sha256 of the weights), each written to a temporary name and renamed,
    the record last. Generations alternate between two slots, so the newest
    complete generation is never overwritten by the next save: if that save
    fails (a full disk raises `keras_towers.utils.io.DiskFullError`), the
    previous backup is still there. On restore, a generation whose record is
    unreadable or whose weights are missing or do not match their sha256
    (truncated, half-written) is skipped with a warning naming it, and the
    newest good one is restored; if there is none, `DamagedBackupError` says
    what is damaged and what to do. A backup folder written by Keras' own
    callback (`latest.weights.h5`) is still restored.

    Args:
        backup_dir: str. Folder of the backups, used by nothing else.
        save_freq: `"epoch"` or int (batches), as in Keras.
        delete_checkpoint: bool. Remove the folder when training completes.

    Example:

    ```python
    model.fit(
        dataset,
        epochs=10,
        callbacks=[keras_towers.training.SafeBackupAndRestore("run/backup")],
    )
    ```
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint
        )
        # Generation of the newest good backup (-1: none yet).
        self._generation = -1

    def _slot_paths(self, slot: int) -> tuple[Path, Path]:
        directory = Path(self.backup_dir)
        return (
            directory / f"backup-{slot}.weights.h5",
            directory / f"backup-{slot}.json",
        )

    # === Restore ===

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, the model must be built "
                f"before you call `fit()`. Model {self.model.name} is unbuilt: "
                "build it by calling it on a batch of data."
            )
        backup = self._newest_good_backup()
        if backup is None:
            self._generation = -1
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(backup["path"]))
        self.model._initial_epoch = backup["epoch"]
        self._generation = backup["generation"]

    def _newest_good_backup(self) -> dict | None:
        """The newest backup whose weights match their record, warning about
        (or, when none is good, raising on) the damaged ones."""
        good, damaged = [], []
        for slot in range(SLOTS):
            weights, record = self._slot_paths(slot)
            if not weights.exists() and not record.exists():
                continue
            found = _check_generation(weights, record)
            (damaged if isinstance(found, str) else good).append(found)
        if not good and not damaged:
            return self._keras_backup()
        if not good:
            raise DamagedBackupError(
                f"Cannot resume from {self.backup_dir}: every backup in it is "
                f"damaged ({'; '.join(damaged)}), e.g. by a full disk or a "
                "killed process. Delete that folder to start the run over."
            )
        newest = max(good, key=lambda b: b["generation"])
        for problem in damaged:
            warnings.warn(
                f"Ignoring a damaged backup: {problem}. Resuming from the "
                f"previous one, {newest['path']} (epoch {newest['epoch']}).",
                stacklevel=3,
            )
        return newest

    def _keras_backup(self) -> dict | None:
        """A backup left by Keras' `BackupAndRestore`, checked by opening it."""
        weights = Path(self.backup_dir) / _KERAS_WEIGHTS
        if not weights.exists():
            return None
        try:
            with h5py.File(weights, "r") as f:
                f.visit(lambda name: None)
            epoch = int(read_json(Path(self.backup_dir) / _KERAS_METADATA)["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DamagedBackupError(
                f"Cannot resume from {self.backup_dir}: its backup {weights} is "
                f"damaged ({e}), e.g. by a full disk or a killed process. Delete "
                "that folder to start the run over."
            ) from e
        return {"path": weights, "epoch": epoch, "generation": -1}

    # === Save ===

    def _save_model(self):
        directory = Path(self.backup_dir)
        generation = self._generation + 1
        weights, record = self._slot_paths(generation % SLOTS)
        newest, _ = self._slot_paths(self._generation % SLOTS)
        # HDF5 can crash when the disk fills under it: refuse up front when
        # there is clearly not room for another backup of the same size.
        if self._generation >= 0 and newest.exists():
            check_free_space(directory, newest.stat().st_size)
        atomic_write(
            weights,
            lambda path: self.model.save_weights(path, overwrite=True),
            pass_path=True,
        )
        # The record is written last: until it is, this slot does not match
        # its record and the previous generation is the newest good one.
        write_json(
            record,
            {
                "generation": generation,
                "epoch": self._current_epoch,
                "batch": self._last_batch_seen,
                "weights": weights.name,
                "sha256": sha256_file(weights),
            },
        )
        self._generation = generation


def _check_generation(weights: Path, record: Path):
    """A backup generation as a dict, or a str saying what is wrong."""
    try:
        data = read_json(record)
        generation = int(data["generation"])
        epoch = int(data["epoch"])
        expected = str(data["sha256"])
    except FileNotFoundError:
        return f"{weights} has no record {record.name} (its write was cut short)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its record {record} is unreadable ({e})"
    if not weights.exists():
        return f"{weights} is missing"
    if sha256_file(weights) != expected:
        return (
            f"{weights} does not match the sha256 in {record.name} (truncated "
            "or half-written)"
        )
    return {"path": weights, "epoch": epoch, "generation": generation}


class AtomicCSVLogger(keras.callbacks.Callback):
    """Per-epoch logs in a CSV file, rewritten atomically every epoch.

    Like `keras.callbacks.CSVLogger`, but the file is never half written:
    each epoch the whole table is written to a temporary name and renamed,
    so a full disk or a killed process leaves the previous table. With
    `append=True` the rows already in the file are kept (one header; a log
    key that appears later is `NA` in earlier rows), and an epoch that is
    run again (after resuming from a backup taken before it) replaces the
    rows of that epoch and of any later one instead of adding a second.

    Args:
        filename: str. The CSV file.
        append: bool. Keep the rows already in `filename`.

    Example:

    ```python
    model.fit(
        dataset,
        epochs=3,
        callbacks=[keras_towers.training.AtomicCSVLogger("history.csv")],
    )
    ```
    """

    def __init__(self, filename, append: bool = False):
        super().__init__()
        self.filename = Path(filename)
        self.append = append
        self._keys: list[str] = []
        self._rows: list[dict] = []

    def on_train_begin(self, logs=None):
        self._keys, self._rows = [], []
        if self.append and self.filename.is_file():
            with open(self.filename, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self._rows = list(reader)
                self._keys = [k for k in reader.fieldnames or () if k != "epoch"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._keys += sorted(k for k in logs if k not in self._keys)
        row = {"epoch": str(epoch)}
        row.update((k, _csv_value(v)) for k, v in logs.items())
        self._rows = [r for r in self._rows if _row_epoch(r) < epoch] + [row]
        text = io.StringIO()
        writer = csv.DictWriter(
            text, ["epoch", *self._keys], restval="NA", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write(self.filename, lambda f: f.write(text.getvalue()), mode="w")


def _row_epoch(row: dict) -> float:
    try:
        return int(row.get("epoch"))
    except (TypeError, ValueError):
        return -np.inf  # not an epoch number: keep the row


def _csv_value(value) -> str:
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return str(array.item())
    return "[" + ", ".join(str(v) for v in array.ravel().tolist()) + "]"
