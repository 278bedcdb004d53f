"""Preset registry and runner behind `python -m tfdefense.evaluate`.

A preset is a function `fn(run: Run)` registered with `register_preset`. It
trains (or reuses) models through `run.model(...)`, records numbers with
`run.add_row(...)`, wraps expensive, resumable pieces in `run.step(...)`, and
adds plots with `run.add_plot(...)`. The runner writes report.md,
results.json, results.csv atomically at the end.
"""

import dataclasses
import fnmatch
import hashlib
import json
import os
import pathlib
import re
import shutil
import time
import warnings

from tfdefense import distribute
from tfdefense._io import check_not_protected, file_sha256, json_default, save_model, write_json
from tfdefense._validation import check_choice, invalid_value
from tfdefense.evaluation import reports

SCALES = ("tiny", "quick", "full")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    fn: object
    description: str
    paper: str
    attacks: tuple = ()  # names (globs) `--attacks` may select; () = the preset has no attack filter
    defenses: tuple = ()  # names (globs) `--defenses` may select; () = no defense filter


_PRESETS = {}


class PresetUnavailable(RuntimeError):
    """A preset needs a defense or attack that the package does not provide yet."""


def register_preset(name, description, paper="", attacks=(), defenses=()):
    """Registers `fn(run)` as preset `name`; `attacks` / `defenses` list the names its filters know."""

    def wrap(fn):
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is registered twice")
        _PRESETS[name] = Preset(name, fn, description, paper, tuple(attacks), tuple(defenses))
        return fn

    return wrap


def check_preset_filters(name, attacks=None, defenses=None):
    """Refuses `attacks` / `defenses` filter names that preset `name` does not know (before any work)."""
    preset = get_preset(name)
    for argument, names, known in (("attacks", attacks, preset.attacks), ("defenses", defenses, preset.defenses)):
        if names is None:
            continue
        if not known:
            raise invalid_value(argument, f"None (preset {name!r} has no {argument} filter)", names)
        unknown = [n for n in names if not any(fnmatch.fnmatchcase(n, pattern) for pattern in known)]
        if not names or unknown:
            raise invalid_value(argument, f"names known to preset {name!r}: {list(known)}", unknown or names)


def list_presets(filter="*"):
    _load_builtin_presets()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, filter))


def get_preset(name):
    _load_builtin_presets()
    if name not in _PRESETS:
        raise invalid_value("preset", f"one of {list_presets()}", name)
    return _PRESETS[name]


def _load_builtin_presets():
    from tfdefense.evaluation import presets  # noqa: F401  (registers on import)


def with_dependencies(config, depends_on=()):
    """`config` plus the fingerprints of the models / arrays in `depends_on` (unchanged when empty)."""
    from tfdefense.attacks.generation import array_digest, model_fingerprint

    if not depends_on:
        return config
    fingerprints = [model_fingerprint(item) if hasattr(item, "weights") else array_digest(item) for item in depends_on]
    return {**config, "depends_on": fingerprints}


def config_hash(config):
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Temporary names made by tfdefense._io.atomic_path (files) and export_saved_model (folders):
# "." + target name + "." + mkstemp's 8 random characters + ".tmp" [+ the target's suffixes] / ".old.tmp".
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*$")
_TEMP_DIR = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.(?P<old>old\.)?tmp$")
# Run subfolders searched for them (besides the run folder itself); a worker cleans its own folder.
_TEMP_SUBFOLDERS = ("models", "cache", "steps", "backup")
STALE_TEMP_SECONDS = 15 * 60


def _newest_mtime(path):
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _is_protected(path):
    try:
        check_not_protected(path, "out", "a run folder")
    except ValueError:
        return True
    return False


def remove_stale_temp_files(out_dir, older_than=STALE_TEMP_SECONDS):
    """Removes the temporary files and folders a killed run left in `out_dir`; returns their paths.

    Only tfdefense's own temporary names (`.NAME.XXXXXXXX.tmp[.ext]` files,
    `.NAME.XXXXXXXX.tmp` SavedModel folders) in the run folder and its
    models/, cache/, steps/ and backup/ subfolders, untouched for `older_than`
    seconds (a run writing into the same folder right now keeps its own). A
    `.NAME.XXXXXXXX.old.tmp` folder holds the previous SavedModel export while
    a new one replaces it: it is removed only when NAME exists.
    """
    out_dir = pathlib.Path(out_dir)
    if not out_dir.is_dir() or _is_protected(out_dir):
        return []
    if not any((out_dir / name).is_dir() for name in _TEMP_SUBFOLDERS):
        return []  # not a run folder of ours (no models/, cache/, steps/ or backup/): nothing of ours to clean
    folders = [out_dir]
    for name in _TEMP_SUBFOLDERS:
        top = out_dir / name
        if top.is_dir() and not top.is_symlink():
            folders.extend(pathlib.Path(root) for root, _, _ in os.walk(top))
    now, removed = time.time(), []
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            try:
                if entry.is_symlink() or now - _newest_mtime(entry) < older_than:
                    continue
                if entry.is_file() and _TEMP_FILE.match(entry.name):
                    entry.unlink()
                elif entry.is_dir() and (match := _TEMP_DIR.match(entry.name)):
                    if match["old"] and not os.path.lexists(entry.parent / match["target"]):
                        continue  # the only copy of the previous export
                    shutil.rmtree(entry)
                else:
                    continue
            except OSError:
                continue
            removed.append(entry)
    return removed


def fingerprint_path(model_path):
    """`models/NAME-HASH.fingerprint.json`: the SHA-256 of `models/NAME-HASH.keras` as this package wrote it."""
    return pathlib.Path(model_path).with_suffix(".fingerprint.json")


class SettingsError(ValueError):
    """A `settings` override (--set) that names no setting of the scale or has a value of the wrong type."""


def check_settings(settings):
    """`settings` ({name: value} or None) as a dict; a TypeError for anything else."""
    if settings is None:
        return {}
    if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
        raise TypeError(f"settings: expected a dict of setting name -> value, got {settings!r}")
    return dict(settings)


def _setting_of_type(key, new, old):
    """`new` for the setting `key` whose scale default is `old`: a SettingsError when their types differ
    (an int may stand for a float; None, the "all" of a size, may be replaced by an int and back)."""
    if old is None or new is None:
        if isinstance(new, (int, type(None))) and not isinstance(new, bool) and (old is None or isinstance(old, int)):
            return new
    elif isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, (int, float)):
        return float(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    elif type(new) is type(old):
        return new
    raise SettingsError(f"settings: {key!r} expects a value like its default {old!r}, got {new!r}")


class Run:
    """State of one preset run: output folder, options, rows, plots, caches."""

    def __init__(
        self,
        preset,
        out_dir,
        scale="quick",
        seed=0,
        data_dir=None,
        batch_size=None,
        attacks=None,
        defenses=None,
        weights=None,
        png_roundtrip=False,
        progress=True,
        strategy=None,
        settings=None,
    ):
        self.preset = preset
        self.settings = check_settings(settings)  # overrides of the scale's settings (CLI: --set KEY=VALUE)
        self.strategy = strategy  # tf.distribute strategy models are built, trained and attacked under (None: default)
        self.is_chief = distribute.is_chief(strategy)
        # Other workers keep their models, caches and steps in OUT/workers/<task>; only the chief writes reports.
        self.out_dir = distribute.worker_dir(out_dir, strategy)
        self.scale = check_choice("scale", scale, SCALES)
        self.seed = seed
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.attack_filter = attacks
        self.defense_filter = defenses
        self.weights = weights
        self.png_roundtrip = png_roundtrip
        self.progress = progress
        self.rows = []
        self.plots = []
        self.notes = []
        self.artifacts = {}
        self.data = {"dataset": "", "description": ""}
        self.models_dir = self.out_dir / "models"
        self.cache_dir = self.out_dir / "cache"
        self.steps_dir = self.out_dir / "steps"
        self.steps_computed, self.steps_reused = [], []  # step names, in order (see `step`)
        self._model_files = {}  # id -> (model, "NAME-HASH.keras") of the models `model` returned
        self._training = None  # "NAME-HASH" of the model `model` is training now (see `training_backup_dir`)
        self.failure = None  # an exception `run_preset` raises after writing the reports (`fail_after_reports`)
        self.started = time.perf_counter()

    # Selection ------------------------------------------------------------------
    def pick(self, scales, **overrides):
        """Returns the entry of `scales` ({"tiny": ..., "quick": ..., "full": ...}) for this run, with the
        run's `settings` overrides applied (each must name a setting of that entry, with a value of its type)."""
        value = scales[self.scale]
        if not isinstance(value, dict):
            return value
        value = {**value, **overrides}
        for key, new in self.settings.items():
            if key not in value:
                raise SettingsError(f"settings: {self.preset!r} at scale {self.scale!r} has no setting {key!r}; "
                                 f"expected one of: {', '.join(sorted(value))}")
            value[key] = _setting_of_type(key, new, value[key])
        return value

    def wants_attack(self, name):
        return self.attack_filter is None or name in self.attack_filter

    def wants_defense(self, name):
        return self.defense_filter is None or name in self.defense_filter

    # Recording ------------------------------------------------------------------
    def set_data(self, dataset, description):
        self.data = {"dataset": dataset, "description": description}

    def add_row(self, table, protocol, defense, attack, metric, value, n, attack_config=None, paper_value=None, eval_mode="tensor"):
        row = {
            "table": table,
            "protocol": check_choice("protocol", protocol, reports.PROTOCOLS),
            "defense": defense,
            "attack": attack,
            "attack_config": attack_config or {},
            "metric": metric,
            "value": None if value is None else float(value),
            "paper_value": paper_value,
            "n": int(n),
            "eval_mode": check_choice("eval_mode", eval_mode, reports.EVAL_MODES),
        }
        self.rows.append(row)
        return row

    def add_plot(self, filename):
        self.plots.append(filename)
        return self.out_dir / filename

    def note(self, text):
        self.notes.append(text)

    def fail_after_reports(self, error):
        """Makes `run_preset` raise `error` once the reports are written (e.g. a failed sanity check)."""
        self.failure = error

    def log(self, message):
        if self.progress:
            print(f"[{self.preset} +{time.perf_counter() - self.started:.0f}s] {message}", flush=True)

    # Caching --------------------------------------------------------------------
    def step(self, name, config, fn, depends_on=()):
        """Runs `fn()` (which adds rows) once per (name, config, depends_on); re-runs reuse the stored rows.

        Returns the rows. `depends_on`: models (keyed by architecture and
        weights) and arrays (keyed by content) the step reads beyond `config`,
        as in `model` (a model `model` returned is keyed by its file name).
        Results live in `steps/NAME-HASH.json`, so a run killed
        midway recomputes only the steps it had not finished.
        """
        return self._step(name, config, fn, depends_on)[0]

    def step_value(self, name, config, fn, depends_on=()):
        """`step` for a `fn` that also returns JSON data (e.g. the points of a plot): returns that data.

        The first run returns the data as a re-run reads it back (lists for
        tuples, floats for numpy scalars), so both draw the same plots.
        """
        return self._step(name, config, fn, depends_on)[1]

    def _step_dependencies(self, depends_on):
        """Models that `model` returned by their file name NAME-HASH.keras (the same whether just trained
        or reloaded, unlike their weights' names); other models and arrays by their fingerprints."""
        keys = []
        for item in depends_on:
            model, file = self._model_files.get(id(item), (None, None))
            keys.append(f"model {file}" if model is item else with_dependencies({}, [item])["depends_on"][0])
        return keys

    def _step(self, name, config, fn, depends_on):
        key = dict(config, depends_on=self._step_dependencies(depends_on)) if depends_on else config
        key = json.loads(json.dumps(key, sort_keys=True, default=str))
        path = self.steps_dir / f"{name}-{config_hash(key)}.json"
        stored = None
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
                if stored.get("config") != key or not isinstance(stored.get("rows"), list):
                    stored = None
            except (OSError, ValueError, AttributeError):
                self.log(f"step {name}: stored result unreadable, recomputing")
                stored = None
        if distribute.all_workers_agree(self.strategy, stored is not None):  # else every worker recomputes together
            self.log(f"reusing step {name}")
            self.steps_reused.append(name)
            self.rows.extend(stored["rows"])
            return stored["rows"], stored.get("value")
        before = len(self.rows)
        value = fn()
        rows = self.rows[before:]
        value = json.loads(json.dumps(value, default=json_default))
        write_json(path, {"config": key, "rows": rows, "value": value})
        self.steps_computed.append(name)
        return rows, value

    def model(self, name, config, build, train, depends_on=()):
        """Loads `models/NAME-HASH.keras` if present, else `build()`, `train(model)` and saves it.

        depends_on: Keras models (keyed by architecture and weights) and arrays
        (keyed by content) the training uses beyond `config`, e.g. the target
        classifier of a purifier: a changed classifier means a retrained purifier.
        """
        import keras

        key = with_dependencies(config, depends_on)
        path = self.models_dir / f"{name}-{config_hash(key)}.keras"
        loaded = None
        if self._cached_model_trusted(name, path, key):
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
            self._model_files[id(loaded)] = (loaded, path.name)
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
        digest = save_model(model, path)
        write_json(fingerprint_path(path), {"file": path.name, "sha256": digest, "key_hash": config_hash(key)})
        self.artifacts[f"model:{name}"] = str(path.relative_to(self.out_dir))
        self._model_files[id(model)] = (model, path.name)
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
        return self.out_dir / "backup" / self._training

    def training_backup(self):
        """[the `BackupAndRestore` callback on `training_backup_dir()`], for the `callbacks` of a fit."""
        return [distribute.backup_callback(self.training_backup_dir(), self.strategy)]

    def _cached_model_trusted(self, name, path, key):
        """Whether `path` is the file saved for `key`: its SHA-256 matches the fingerprint saved beside it."""
        if not path.is_file():
            return False
        record_path = fingerprint_path(path)
        try:
            record = json.loads(record_path.read_text())
            trusted = record["sha256"] == file_sha256(path) and record["key_hash"] == config_hash(key)
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._distrust(name, path, f"its fingerprint {record_path.name} is missing or unreadable ({type(error).__name__})")
            return False
        if not trusted:
            self._distrust(name, path, f"its architecture or weights differ from its fingerprint {record_path.name}")
        return trusted

    def _distrust(self, name, path, reason):
        message = f"not reusing the saved {name} model {path}: {reason}; retraining it"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.log(message)

    # Output ---------------------------------------------------------------------
    def results(self, wall_seconds):
        return {
            "schema_version": reports.SCHEMA_VERSION,
            "preset": self.preset,
            "scale": self.scale,
            "seed": self.seed,
            "data": self.data,
            "wall_seconds": float(wall_seconds),
            "environment": {**reports.environment(), "distribute": distribute.describe(self.strategy)},
            "notes": self.notes,
            "artifacts": self.artifacts,
            "rows": self.rows,
            **({"settings": self.settings} if self.settings else {}),
        }


def run_preset(name, out_dir, scale="quick", seed=0, **options):
    """Runs preset `name`, writes the reports into `out_dir`, returns the results dict."""
    import keras

    preset = get_preset(name)
    check_preset_filters(name, options.get("attacks"), options.get("defenses"))
    run = Run(preset.name, out_dir, scale=scale, seed=seed, **options)
    keras.utils.set_random_seed(seed)
    for path in remove_stale_temp_files(run.out_dir):
        run.log(f"removed {path.relative_to(run.out_dir)}, left by an interrupted run")
    start = time.perf_counter()
    if distribute.is_distributed(run.strategy):
        placement = distribute.describe(run.strategy)
        run.note(f"Distribution: strategy {placement['strategy']} ({placement['class']}), {placement['replicas']} "
                 f"replica(s) on {placement['workers']} worker(s); batch sizes are global batches.")
    preset.fn(run)
    results = run.results(time.perf_counter() - start)
    reports.validate_results(results)
    if run.is_chief:  # other workers computed the same numbers; only the chief writes reports
        reports.write_reports(run.out_dir, results, run.plots)
    if run.failure is not None:
        raise run.failure
    return results
