"""Resumable evaluation: `Run.step` results reused by a rerun, stale temporary files of a killed run removed."""

import os
import random
import shutil
import time

import keras
import numpy as np

from tfdefense.evaluation.runner import Run, remove_stale_temp_files


def _age(path, seconds):
    then = time.time() - seconds
    for root, dirs, files in os.walk(path) if path.is_dir() else [(path.parent, [], [path.name])]:
        for name in dirs + files:
            os.utime(os.path.join(root, name), (then, then))
    os.utime(path, (then, then))


def test_step_is_computed_once_per_config_and_dependencies(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    calls = []

    def evaluate():
        calls.append(1)
        run.add_row("t", "whole_test_set", "none", "clean", "accuracy", 0.5, 10)
        return {"curve": (1, np.float32(0.25))}

    run = Run("demo", tmp_path, scale="tiny", progress=False)
    assert run.step_value("eval", {"eps": 0.3}, evaluate, depends_on=(model,)) == {"curve": [1, 0.25]}
    again = Run("demo", tmp_path, scale="tiny", progress=False)
    run = again
    assert again.step_value("eval", {"eps": 0.3}, evaluate, depends_on=(model,)) == {"curve": [1, 0.25]}
    assert len(calls) == 1 and again.steps_reused == ["eval"] and again.rows[0]["value"] == 0.5
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)  # other weights: recomputed
    assert again.step("eval", {"eps": 0.3}, evaluate, depends_on=(model,))[0]["value"] == 0.5
    assert len(calls) == 2 and again.steps_computed == ["eval"]
    again.step("eval", {"eps": 0.2}, evaluate, depends_on=(model,))  # other config: recomputed
    assert len(calls) == 3


def test_only_stale_temporary_files_of_the_package_are_removed(tmp_path):
    (tmp_path / "models").mkdir()
    stale_model = tmp_path / "models" / ".model_c-0123456789abcdef.k2j4_x9q.tmp.keras"
    stale_json = tmp_path / ".results.ab12cd34.tmp.json"
    stale_export = tmp_path / ".saved_model.q1w2e3r4.tmp"
    (stale_export / "variables").mkdir(parents=True)
    (stale_export / "variables" / "variables.index").write_bytes(b"x")
    kept_old_export = tmp_path / ".other_export.a1b2c3d4.old.tmp"  # the only copy: other_export is missing
    (kept_old_export / "export").mkdir(parents=True)
    fresh = tmp_path / "models" / ".pix2pix-0123.zz99yy88.tmp.keras"  # a run writing right now
    users = [
        tmp_path / "notes.tmp",
        tmp_path / ".bashrc",
        tmp_path / "models" / "mine.tmp.keras",
        tmp_path / "x.abcdefgh.tmp",
    ]
    for path in (stale_model, stale_json, fresh, *users):
        path.write_text("data")
    for path in (stale_model, stale_json, stale_export, kept_old_export, *users):
        _age(path, 3600)
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([stale_model, stale_json, stale_export])
    assert not stale_model.exists() and not stale_json.exists() and not stale_export.exists()
    assert fresh.exists() and kept_old_export.exists() and all(path.exists() for path in users)


def test_folders_that_are_not_run_folders_are_not_cleaned(tmp_path, monkeypatch):
    foreign = tmp_path / "downloads" / ".report.ab12cd34.tmp.json"  # our temp-name shape, another tool's folder
    foreign.parent.mkdir()
    foreign.write_text("data")
    _age(foreign, 3600)
    assert remove_stale_temp_files(foreign.parent) == [] and foreign.exists()
    (foreign.parent / "models").mkdir()
    monkeypatch.chdir(foreign.parent)  # the working directory is never cleaned, even when it looks like a run
    assert remove_stale_temp_files(".") == [] and foreign.exists()


def test_a_model_trained_after_a_reloaded_one_matches_the_uninterrupted_run(tmp_path):

    def build():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])  # random initial weights

    def train(model):  # draws from the global generators, as training does (dropout seeds, shuffles)
        model.compile("sgd", "mse")
        model.fit(np.random.random((8, 3)), np.zeros((8, 2)), epochs=1, verbose=0)
        keras.random.uniform((1,))
        random.random()

    def run_both(out):
        keras.utils.set_random_seed(0)
        run = Run("demo", out, scale="tiny", progress=False)
        first = run.model("first", {"n": 1}, build, train)
        np.random.random(5)  # the rest of a preset draws from the global generators too
        return first, run.model("second", {"n": 2}, build, train)

    _, uninterrupted = run_both(tmp_path / "a")
    Run("demo", tmp_path / "b", scale="tiny", progress=False).close()  # the killed run had opened (marked) its folder
    (tmp_path / "b" / "models").mkdir()  # killed while training "second": only "first" was saved
    for path in (tmp_path / "a" / "models").glob("first-*"):
        shutil.copy(path, tmp_path / "b" / "models" / path.name)
    _, resumed = run_both(tmp_path / "b")
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)
