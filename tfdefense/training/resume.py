"""Exact resume of `fit`: random-generator states saved beside `BackupAndRestore`'s checkpoint.

`keras.callbacks.BackupAndRestore` saves weights, optimizer states and the
epoch, but not the states of the `keras.random.SeedGenerator`s (dropout
masks, random augmentation layers, the in-graph training attack's random
starts): a resumed fit restarts them where the model's constructor put them.
`RandomStateBackup` writes those states to `random_state.json` in the same
backup folder at every epoch end (before `BackupAndRestore` writes its own
files, keeping the last two epochs, so a kill between the two writes still
finds the epoch the weights belong to) and restores them when a fit resumes.

`resumable_fit_callbacks(x, callbacks)` is what the fit methods of tfdefense
call: it adds a `RandomStateBackup` in front of every `BackupAndRestore` and
a `tfdefense.data.pipelines.PipelineEpoch` for `make_pipeline` /
`make_paired_pipeline` data (whose order is a function of the epoch).

Exactness needs data whose order does not depend on the process: pipelines
of `tfdefense.data`, unshuffled datasets, or arrays given with a
`BackupAndRestore` to the `fit` of a tfdefense purifier (turned into such a
pipeline, `_gan.epoch_ordered_arrays`; its seed is the model's `seed` or a
draw from Python's `random`, which `keras.utils.set_random_seed` seeds).
Other arrays are shuffled by keras from TensorFlow's global seed, an order
that restarts with every process. Measured on CPU (TF 2.21, Keras 3.15): weights of a fit killed and
resumed equal the uninterrupted ones within 1e-6 (`resume_test.py`).
"""

import json
import pathlib
import warnings

import keras
import numpy as np

from tfdefense._io import write_json
from tfdefense.data.pipelines import with_pipeline_epoch
from tfdefense.distribute import backup_write_error

STATE_FILE = "random_state.json"


def seed_generator_states(model):
    """The state variables of every `keras.random.SeedGenerator` the model holds, in model order."""
    return [v for v in model.variables if v.name == "seed_generator_state" and "int" in str(v.dtype)]


class RandomStateBackup(keras.callbacks.Callback):
    """Saves and restores the model's `SeedGenerator` states in `backup_dir` (that of a `BackupAndRestore`).

    Place it before the `BackupAndRestore` callback (`resumable_fit_callbacks`
    does). States are restored at the first `on_epoch_begin`, after
    `BackupAndRestore` has restored the weights and the epoch.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.path = pathlib.Path(backup_dir) / STATE_FILE
        self._restored = False

    def on_train_begin(self, logs=None):
        self._restored = False

    def _read(self):
        try:
            stored = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            warnings.warn(f"{self.path}: unreadable ({type(error).__name__}); random states start afresh", stacklevel=2)
            return {}
        return stored.get("epochs", {}) if isinstance(stored, dict) else {}

    def on_epoch_begin(self, epoch, logs=None):
        if self._restored:
            return
        self._restored = True
        if epoch == 0:
            return
        states = seed_generator_states(self.model)
        stored = self._read().get(str(epoch))
        if stored is None:
            if self.path.exists():
                warnings.warn(
                    f"{self.path} holds no random-generator states for epoch {epoch}: dropout and "
                    "attack seeds continue from the model's initial states (the resumed fit will not "
                    "repeat an uninterrupted one exactly)",
                    stacklevel=2,
                )
            return
        if len(stored) != len(states):
            warnings.warn(
                f"{self.path}: {len(stored)} stored random-generator states, the model has {len(states)}; not restored",
                stacklevel=2,
            )
            return
        for variable, value in zip(states, stored, strict=False):
            variable.assign(np.asarray(value, dtype=str(variable.dtype)))

    def on_epoch_end(self, epoch, logs=None):
        states = [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in seed_generator_states(self.model)]
        epochs = {k: v for k, v in self._read().items() if k == str(epoch)}  # keep the previous epoch
        epochs[str(epoch + 1)] = states
        try:
            write_json(self.path, {"epochs": epochs})  # atomic: the previous file stays on failure
        except OSError as error:
            raise backup_write_error(self.path.parent, error, "the previous random states are kept") from None


def resumable_fit_callbacks(x, callbacks):
    """`callbacks` with a `RandomStateBackup` before each `BackupAndRestore` and a `PipelineEpoch` for `x`.

    A `keras.callbacks.CallbackList` is returned as it is (keras uses it unchanged).
    """
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    callbacks = list(callbacks or [])
    result = []
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.BackupAndRestore) and not any(
            isinstance(c, RandomStateBackup) and c.path.parent == pathlib.Path(callback.backup_dir) for c in callbacks
        ):
            result.append(RandomStateBackup(callback.backup_dir))
        result.append(callback)
    return with_pipeline_epoch(x, result)
