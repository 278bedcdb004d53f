"""`EpochLog`: every epoch's scalar logs in a JSON file that survives resumed runs.

`EpochLog(path)` keeps every epoch's scalar logs (a `RobustAccuracyMonitor`'s, `cpu_seconds` of a
`ComputeBudget`, `attack_eps`, the losses) in a JSON list written atomically; a resumed run reads
it back, drops rows from the resumed epoch on, and appends, so the file holds the whole curve
across interruptions. Put it after the callbacks whose logs it should hold.
"""

import json
import pathlib

import keras
import numpy as np

from tfdefense._validation import invalid_value


class EpochLog(keras.callbacks.Callback):
    """Every epoch's scalar logs as a JSON list of rows {"epoch": 1-based, name: value}, kept across resumes."""

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)
        self.rows = []

    def on_train_begin(self, logs=None):
        self.rows = read_epoch_log(self.path)

    def on_epoch_end(self, epoch, logs=None):
        from tfdefense._io import write_json

        entry = {"epoch": int(epoch) + 1}
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                entry[key] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] < entry["epoch"]] + [entry]
        write_json(self.path, self.rows)


def read_epoch_log(path):
    """The rows of an `EpochLog` file ([] when there is none); a file of another shape is a ValueError."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except ValueError as error:
        raise invalid_value("path", "a JSON list written by EpochLog", str(error)) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in rows):
        raise invalid_value("path", "a JSON list written by EpochLog", type(rows).__name__)
    return rows
