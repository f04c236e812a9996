"""`DecodeReport` (what one pass read and skipped) and the bad-record warning
and error; the package docstring says how bad records are handled.
"""

from __future__ import annotations

import threading
import warnings
from typing import NamedTuple

#: Per pass, at most this many skipped records get their own warning.
MAX_WARNINGS_PER_PASS = 50
#: Per pass, at most this many `(file, reason)` entries are kept.
MAX_ERRORS_KEPT = 10_000


class SkippedRecordWarning(UserWarning):
    """A record was skipped, or a pass over the data skipped some records."""


class PairsDataError(ValueError):
    """A bad record under `on_error="raise"`; names the file and the reason."""


class SkippedRecord(NamedTuple):
    """One skipped record: the most specific `file` at fault and why."""

    file: str
    reason: str


class DecodeReport:
    """What a pairs dataset read and skipped during one pass over the data.

    Every reader attaches one to the dataset it returns, as
    `dataset.decode_report` (`batch_pairs` carries it over). The counters
    describe the pass in progress, or the last pass when none is running;
    they restart whenever a new iterator starts reading from the beginning
    (every epoch of `fit`). Concurrent iterators over the same dataset share
    one report.

    Attributes:
        name: str. What is being read (a file name or a description).
        seen: int. Records met so far in this pass.
        skipped: int. Records skipped so far in this pass.
        errors: list of `SkippedRecord(file, reason)` for this pass (the
            first `MAX_ERRORS_KEPT`).
        passes: int. Full passes completed.
        in_progress: bool. Whether a pass is being read now.

    Example:

    ```python
    ds = keras_towers.datasets.from_csv("pairs.csv")
    for _ in ds:
        pass
    report = ds.decode_report
    print(report.skipped, report.errors)
    ```
    """

    def __init__(self, name: str):
        self.name = name
        self.seen = 0
        self.skipped = 0
        self.errors: list[SkippedRecord] = []
        self.passes = 0
        self.in_progress = False
        self._warned = 0
        self._lock = threading.Lock()

    @property
    def kept(self) -> int:
        """Records delivered in this pass (`seen - skipped`)."""
        return self.seen - self.skipped

    def summary(self) -> str:
        """One line: how many records of how many were skipped."""
        return f"{self.name}: skipped {self.skipped} of {self.seen} records" + (
            f" in pass {self.passes}" if self.passes else ""
        )

    def __repr__(self):
        return (
            f"DecodeReport(name={self.name!r}, seen={self.seen}, "
            f"skipped={self.skipped}, passes={self.passes})"
        )

    # Called from tf.data threads; every update takes the lock.
    def _start_pass(self):
        with self._lock:
            self.seen = 0
            self.skipped = 0
            self.errors = []
            self._warned = 0
            self.in_progress = True

    def _end_pass(self):
        with self._lock:
            self.passes += 1
            self.in_progress = False
            message = self.summary() if self.skipped else None
        if message:
            warnings.warn(
                f"{message} (see the warnings above; the dataset's "
                "`decode_report.errors` lists them).",
                SkippedRecordWarning,
                stacklevel=2,
            )

    def _count_ok(self):
        with self._lock:
            self.seen += 1

    def _count_skip(self, file: str, reason: str, source: str, on_error: str):
        where = file if file == source else f"{file} ({source})"
        with self._lock:
            self.seen += 1
            if on_error == "raise":
                raise PairsDataError(f"Bad record {where}: {reason}")
            self.skipped += 1
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(SkippedRecord(file, reason))
            self._warned += 1
            warned = self._warned
        if warned <= MAX_WARNINGS_PER_PASS:
            suffix = ""
            if warned == MAX_WARNINGS_PER_PASS:
                suffix = (
                    " (no more warnings per record in this pass; "
                    "see `dataset.decode_report.errors`)"
                )
            warnings.warn(
                f"Skipped {where}: {reason}{suffix}",
                SkippedRecordWarning,
                stacklevel=2,
            )
