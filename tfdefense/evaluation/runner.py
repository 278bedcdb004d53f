"""`Run`, the object a preset works through, and `run_preset` behind `python -m tfdefense.evaluate --preset`.

A preset is a function `fn(run: Run)` registered with `register_preset`
(`preset_registry`). It trains (or reuses) models through `run.model(...)`
(`model_store`), records numbers with `run.add_row(...)` and plots with
`run.add_plot(...)` (`report_writer`), and wraps expensive, resumable pieces in
`run.step(...)` (`step_cache`). The run folder is checked, marked and locked
for the run (`run_folder`); `run_preset` writes report.md, results.json and
results.csv atomically at the end. This module re-exports the public names of
those modules that it has always offered.
"""

import json
import time
import weakref

from tfdefense import distribute
from tfdefense._validation import check_choice
from tfdefense.evaluation import run_settings
from tfdefense.evaluation.cache_keys import config_hash, with_dependencies
from tfdefense.evaluation.model_store import ModelStore, fingerprint_path
from tfdefense.evaluation.preset_registry import (
    SCALES,
    Preset,
    PresetUnavailable,
    check_preset_filters,
    get_preset,
    list_presets,
    register_preset,
)
from tfdefense.evaluation.report_writer import ReportWriter
from tfdefense.evaluation.run_folder import STALE_TEMP_SECONDS, open_run_folder, remove_stale_temp_files
from tfdefense.evaluation.run_settings import SettingsError, check_settings
from tfdefense.evaluation.step_cache import StepCache

__all__ = [
    "SCALES",
    "STALE_TEMP_SECONDS",
    "Preset",
    "PresetUnavailable",
    "Run",
    "SettingsError",
    "check_preset_filters",
    "check_settings",
    "config_hash",
    "fingerprint_path",
    "get_preset",
    "list_presets",
    "register_preset",
    "remove_stale_temp_files",
    "run_preset",
    "with_dependencies",
]


def _forward(component, name):
    """A read-only attribute of `Run` that is `run.<component>.<name>` (a bound method for a method): the
    report writer's, step cache's and model store's own signatures and documentation."""
    return property(lambda run: getattr(getattr(run, component), name), doc=f"`self.{component}.{name}`")


class _Log:
    """`log(message)`: "[PRESET +SECONDS] message" when `progress` (holds no reference to the Run)."""

    def __init__(self, preset, progress):
        self.preset, self.progress, self.started = preset, progress, time.perf_counter()

    def __call__(self, message):
        if self.progress:
            print(f"[{self.preset} +{time.perf_counter() - self.started:.0f}s] {message}", flush=True)


class Run:
    """One preset run: its options, and the model store, step cache and report of its output folder.

    out_dir is opened with `run_folder.open_run_folder` (a ValueError naming `out`
    for an empty path, a file, a folder of someone else's files, a symbolic-link
    subfolder, or a folder another process is running in); the run holds its
    lock until `close()` (or `with Run(...) as run:`; else until it is garbage
    collected).
    """

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
        self.scale = check_choice("scale", scale, SCALES)
        self.strategy = strategy  # tf.distribute strategy models are built, trained and attacked under (None: default)
        self.is_chief = distribute.is_chief(strategy)
        # Other workers keep their models, caches and steps in OUT/workers/<task>; only the chief writes reports.
        self.folder = open_run_folder(distribute.worker_dir(run_folder_path(out_dir), strategy))
        weakref.finalize(self, self.folder.close)
        self.out_dir = self.folder.path
        self.seed = seed
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.attack_filter = attacks
        self.defense_filter = defenses
        self.weights = weights
        self.png_roundtrip = png_roundtrip
        self.progress = progress
        self.log = _Log(preset, progress)
        self.report = ReportWriter(self.out_dir)
        self.model_store = ModelStore(
            self.out_dir,
            seed=seed,
            strategy=strategy,
            log=self.log,
            artifacts=self.report.artifacts,
            subfolder=self.folder.subfolder,
        )
        folder = self.folder
        self.step_cache = StepCache(
            self.out_dir / "steps", strategy=strategy, log=self.log, subfolder=lambda: folder.subfolder("steps")
        )
        self.failure = None  # an exception `run_preset` raises after writing the reports (`fail_after_reports`)
        self.started = self.log.started

    def close(self):
        """Releases the run folder's lock (a second call does nothing)."""
        self.folder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # Folders --------------------------------------------------------------------
    models_dir = _forward("model_store", "models_dir")
    steps_dir = _forward("step_cache", "folder")

    @property
    def cache_dir(self):
        """cache/ (adversarial examples in cache/adversarial), checked to be real folders before use."""
        self.folder.subfolder("cache/adversarial")
        return self.out_dir / "cache"

    # Selection ------------------------------------------------------------------
    def pick(self, scales, **overrides):
        """Returns the entry of `scales` ({"tiny": ..., "quick": ..., "full": ...}) for this run, with the
        run's `settings` overrides applied (each must name a setting of that entry, with a value of its type;
        see `run_settings`)."""
        return run_settings.pick(scales, self.scale, self.settings, self.preset, **overrides)

    def wants_attack(self, name):
        return self.attack_filter is None or name in self.attack_filter

    def wants_defense(self, name):
        return self.defense_filter is None or name in self.defense_filter

    # Recording (report_writer) ----------------------------------------------------
    rows = _forward("report", "rows")
    plots = _forward("report", "plots")
    notes = _forward("report", "notes")
    artifacts = _forward("report", "artifacts")
    set_data = _forward("report", "set_data")
    add_row = _forward("report", "add_row")
    add_plot = _forward("report", "add_plot")
    note = _forward("report", "note")

    @property
    def data(self):
        return self.report.data

    @data.setter
    def data(self, value):
        self.report.data = value

    def fail_after_reports(self, error):
        """Makes `run_preset` raise `error` once the reports are written (e.g. a failed sanity check)."""
        self.failure = error

    def results(self, wall_seconds):
        return self.report.results(self.preset, self.scale, self.seed, wall_seconds, self.strategy, self.settings)

    # Caching (step_cache) ----------------------------------------------------------
    steps_computed = _forward("step_cache", "computed")
    steps_reused = _forward("step_cache", "reused")

    def step(self, name, config, fn, depends_on=()):
        """Runs `fn()` (which adds rows) once per (name, config, depends_on); re-runs reuse the stored rows.

        Returns the rows. `depends_on`: models (keyed by architecture and
        weights) and arrays (keyed by content) the step reads beyond `config`,
        as in `model` (a model `model` returned is keyed by its file name).
        Results live in `steps/NAME-HASH.json` with their SHA-256, so a run
        killed midway recomputes only the steps it had not finished, and an
        edited result is recomputed.
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
            file = self.model_store.file_of(item)
            keys.append(f"model {file}" if file is not None else with_dependencies({}, [item])["depends_on"][0])
        return keys

    def _step_key(self, config, depends_on=()):
        key = dict(config, depends_on=self._step_dependencies(depends_on)) if depends_on else config
        return json.loads(json.dumps(key, sort_keys=True, default=str))

    def step_partial(self, name, config, depends_on=()):
        """The finished chunks of step (name, config) (`step_cache.PartialChunks`), or None where not kept."""
        return self.step_cache.partial(name, self._step_key(config, depends_on))

    def _step(self, name, config, fn, depends_on):
        key = self._step_key(config, depends_on)

        def compute():
            before = len(self.rows)
            value = fn()
            return self.rows[before:], value

        rows, value, reused = self.step_cache.get(name, key, compute)
        if reused:
            self.rows.extend(rows)
        return rows, value

    # Models (model_store) ------------------------------------------------------------
    def model(self, name, config, build, train, depends_on=()):
        """Loads `models/NAME-HASH.keras` if present and trusted, else `build()`, `train(model)` and saves it.

        depends_on: Keras models (keyed by architecture and weights) and arrays
        (keyed by content) the training uses beyond `config`, e.g. the target
        classifier of a purifier: a changed classifier means a retrained purifier.
        """
        return self.model_store.model(name, config, build, train, depends_on=depends_on)

    training_backup_dir = _forward("model_store", "training_backup_dir")
    training_backup = _forward("model_store", "training_backup")


def run_folder_path(out_dir):
    """`out_dir` checked as a folder path (`run_folder.check_out_path`, errors naming `out`)."""
    from tfdefense.evaluation.run_folder import check_out_path

    return check_out_path(out_dir, "out")


def run_preset(name, out_dir, scale="quick", seed=0, **options):
    """Runs preset `name`, writes the reports into `out_dir`, returns the results dict."""
    import keras

    preset = get_preset(name)
    check_preset_filters(name, options.get("attacks"), options.get("defenses"))
    with Run(preset.name, out_dir, scale=scale, seed=seed, **options) as run:
        keras.utils.set_random_seed(seed)
        for path in remove_stale_temp_files(run.out_dir):
            run.log(f"removed {path.relative_to(run.out_dir)}, left by an interrupted run")
        start = time.perf_counter()
        if distribute.is_distributed(run.strategy):
            placement = distribute.describe(run.strategy)
            run.note(
                f"Distribution: strategy {placement['strategy']} ({placement['class']}), {placement['replicas']} "
                f"replica(s) on {placement['workers']} worker(s); batch sizes are global batches."
            )
        preset.fn(run)
        results = run.results(time.perf_counter() - start)
        if run.is_chief:  # other workers computed the same numbers; only the chief writes reports
            run.report.write(results)
        else:
            from tfdefense.evaluation import reports

            reports.validate_results(results)
    if run.failure is not None:
        raise run.failure
    return results
