"""The trained models of a run folder: `models/NAME-HASH.keras`, reused only when its SHA-256 matches.

`ModelStore.model(name, config, build, train)` loads the saved model of that
key, or builds, trains and saves it with a fingerprint file beside it
(`models/NAME-HASH.fingerprint.json`: the file's SHA-256 and the key's hash).
A saved model whose bytes or key differ from its fingerprint, or that does not
load, is retrained with a RuntimeWarning.
"""

import json
import pathlib
import time
import warnings

from tfdefense import distribute
from tfdefense._io import file_sha256, save_model, write_json
from tfdefense.evaluation.cache_keys import config_hash, with_dependencies


def fingerprint_path(model_path):
    """`models/NAME-HASH.fingerprint.json`: the SHA-256 of `models/NAME-HASH.keras` as this package wrote it."""
    return pathlib.Path(model_path).with_suffix(".fingerprint.json")


class ModelStore:
    """Saved models of one run folder.

    root: the run folder (models in root/models, training backups in root/backup);
    seed: the run's seed (each model's random state is seeded from it and the model's key);
    strategy: the tf.distribute strategy models are built, trained and loaded under;
    log: a function of one message; artifacts: a dict receiving "model:NAME" -> relative path;
    subfolder: a function (root-relative name) -> checked folder path, called before each write.
    """

    def __init__(self, root, seed=0, strategy=None, log=print, artifacts=None, subfolder=None):
        self.root = pathlib.Path(root)
        self.models_dir = self.root / "models"
        self.seed = seed
        self.strategy = strategy
        self.log = log
        self.artifacts = {} if artifacts is None else artifacts
        self._subfolder = subfolder or (lambda name: self.root / name)
        self._files = {}  # id -> (model, "NAME-HASH.keras") of the models `model` returned
        self._training = None  # "NAME-HASH" of the model `model` is training now (see `training_backup_dir`)

    def file_of(self, model):
        """ "NAME-HASH.keras" of a model `model` returned (None for any other object)."""
        stored, file = self._files.get(id(model), (None, None))
        return file if stored is model else None

    def model(self, name, config, build, train, depends_on=()):
        """Loads `models/NAME-HASH.keras` if present and trusted, else `build()`, `train(model)` and saves it.

        depends_on: Keras models (keyed by architecture and weights) and arrays
        (keyed by content) the training uses beyond `config`, e.g. the target
        classifier of a purifier: a changed classifier means a retrained purifier.
        """
        import keras

        key = with_dependencies(config, depends_on)
        path = self.models_dir / f"{name}-{config_hash(key)}.keras"
        loaded = None
        if self._trusted(name, path, key):
            try:
                with distribute.scope(self.strategy):
                    loaded = keras.saving.load_model(path, compile=False)
            except Exception as error:  # a truncated or foreign file is retrained, never trusted
                self._distrust(name, path, f"it does not load ({type(error).__name__}: {error})")
        # Random state seeded from the model's key before training and again after training or
        # loading: a model trained after others were reloaded (a rerun after a kill) starts from the
        # same initial weights as in an uninterrupted run, and so does what follows.
        model_seed = int(config_hash({"seed": self.seed, "model": path.name}), 16) % (2**31)
        if distribute.all_workers_agree(self.strategy, loaded is not None):  # else all workers train together
            self.log(f"reusing trained {name} ({path.name})")
            self._files[id(loaded)] = (loaded, path.name)
            keras.utils.set_random_seed(model_seed + 1)
            return loaded
        keras.utils.set_random_seed(model_seed)
        start = time.perf_counter()  # some builders train (e.g. the super-resolution net): time both
        self._training = path.stem
        try:
            with distribute.scope(self.strategy):  # variables (and optimizer slots) mirrored on every replica
                model = build()
                train(model)
        finally:
            self._training = None
        self.log(f"trained {name} in {time.perf_counter() - start:.1f} s")
        self._subfolder("models")
        digest = save_model(model, path)
        write_json(fingerprint_path(path), {"file": path.name, "sha256": digest, "key_hash": config_hash(key)})
        self.artifacts[f"model:{name}"] = str(path.relative_to(self.root))
        self._files[id(model)] = (model, path.name)
        keras.utils.set_random_seed(model_seed + 1)
        return model

    def training_backup_dir(self):
        """backup/NAME-HASH: the folder where the model `model` is training now keeps its epochs.

        Its `train` passes it to a fit (`training_backup` or `train_classifier(backup_dir=...)`):
        a rerun after an interruption resumes that fit from its last finished epoch (same key, same
        folder), and keras deletes the folder when the fit ends.
        """
        if self._training is None:
            raise RuntimeError("training_backup_dir() is for the train function of Run.model, while it trains")
        return self._subfolder("backup") / self._training

    def training_backup(self):
        """[the `BackupAndRestore` callback on `training_backup_dir()`], for the `callbacks` of a fit."""
        return [distribute.backup_callback(self.training_backup_dir(), self.strategy)]

    def _trusted(self, name, path, key):
        """Whether `path` is the file saved for `key`: its SHA-256 matches the fingerprint saved beside it."""
        if not path.is_file():
            return False
        record_path = fingerprint_path(path)
        try:
            record = json.loads(record_path.read_text())
            trusted = record["sha256"] == file_sha256(path) and record["key_hash"] == config_hash(key)
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._distrust(
                name, path, f"its fingerprint {record_path.name} is missing or unreadable ({type(error).__name__})"
            )
            return False
        if not trusted:
            self._distrust(name, path, f"its architecture or weights differ from its fingerprint {record_path.name}")
        return trusted

    def _distrust(self, name, path, reason):
        message = f"not reusing the saved {name} model {path}: {reason}; retraining it"
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        self.log(message)
