"""Safety of an evaluation run's output folder and caches: count settings, the folder path, ownership marker,
run lock, symbolic-link subfolders, and step results checked by SHA-256."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfdefense.evaluation import run_folder
from tfdefense.evaluation.run_folder import LOCK_FILE, MARKER_FILE, open_run_folder
from tfdefense.evaluation.runner import Run, SettingsError

SCALES = {
    "tiny": dict(
        train_images=300,
        test_images=None,
        classifier_epochs=2,
        pgd_iter=10,
        lr=1e-3,
        unet=dict(base_filters=8, depth=None),
    )
}


def _run(out, **kwargs):
    return Run("demo", out, scale="tiny", progress=False, **kwargs)


# Settings that are counts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, minimum",
    [
        ("train_images", -5, 1),
        ("train_images", 0, 1),
        ("test_images", -1, 1),
        ("pgd_iter", 0, 1),
        ("classifier_epochs", -1, 0),
        ("unet", {"depth": -2}, 1),
    ],
)
def test_a_count_setting_below_its_minimum_is_refused_naming_the_key(tmp_path, key, value, minimum):
    run = _run(tmp_path, settings={key: value})
    name = f"{key}.depth" if key == "unet" else key
    with pytest.raises(SettingsError, match=f"'{name}' is a count; expected an integer >= {minimum}"):
        run.pick(SCALES)


def test_count_settings_in_range_are_kept(tmp_path):
    settings = {"train_images": 1, "test_images": 5, "classifier_epochs": 0, "unet": {"depth": 3}}
    picked = _run(tmp_path, settings=settings).pick(SCALES)
    assert picked["train_images"] == 1 and picked["test_images"] == 5 and picked["classifier_epochs"] == 0
    assert picked["unet"] == {"depth": 3}
    assert _run(tmp_path, settings={"train_images": None}).pick(SCALES)["train_images"] is None


# The folder path ------------------------------------------------------------------------------------
def test_an_empty_path_a_file_or_a_path_below_a_file_is_refused_naming_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="argument `out`.*an empty path would write into the working directory"):
        _run("")
    (tmp_path / "results.txt").write_text("mine")
    with pytest.raises(ValueError, match="argument `out`. Expected a folder .it is an existing file"):
        _run(tmp_path / "results.txt")
    with pytest.raises(ValueError, match="argument `out`. Expected a folder path .*results.txt is a file"):
        _run(tmp_path / "results.txt" / "run")
    with pytest.raises(TypeError, match="argument `out`"):
        _run(3)
    assert sorted(os.listdir(tmp_path)) == ["results.txt"]


# Ownership ------------------------------------------------------------------------------------------
def test_a_folder_of_the_users_files_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "report.md").write_text("my report")
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"argument `out`.*holds other files \(report.md, results.csv\)"):
        _run(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["report.md", "results.csv"]
    assert (tmp_path / "report.md").read_text() == "my report"
    assert run_folder.check_run_folder(tmp_path).startswith("expected a new or empty folder")


def test_a_new_folder_is_marked_and_reopened(tmp_path):
    out = tmp_path / "new" / "run"
    _run(out).close()
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["format"] == run_folder.MARKER_FORMAT
    (out / "notes.txt").write_text("the user's notes, in a folder of ours")
    _run(out).close()  # a marked folder is ours, whatever else it holds
    assert run_folder.check_run_folder(out) is None


def test_a_run_folder_from_before_the_marker_is_accepted_by_its_results_json(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "report.md").write_text("# tfdefense report")
    (legacy / "results.json").write_text(json.dumps({"schema_version": 1, "preset": "quickstart", "rows": []}))
    _run(legacy).close()
    assert json.loads((legacy / MARKER_FILE).read_text())["format"] == run_folder.MARKER_FORMAT
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"accuracy": 0.9}))  # someone else's results.json
    with pytest.raises(ValueError, match="holds other files"):
        _run(other)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MARKER_FILE).write_text("{}")
    with pytest.raises(ValueError, match="holds other files"):
        _run(fake)


def test_evaluate_model_into_a_file_is_a_value_error_naming_out(tmp_path):
    import keras

    from tfdefense import evaluate_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype("float32")
    (tmp_path / "out.txt").write_text("mine")
    with pytest.raises(ValueError, match="argument `out`. Expected a folder .it is an existing file"):
        evaluate_model(model, (x, np.arange(6) % 3), 0.1, suite="quick", out=tmp_path / "out.txt", progress=False)
    assert (tmp_path / "out.txt").read_text() == "mine"


# Lock -------------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys
    from tfdefense.evaluation.run_folder import open_run_folder
    folder = open_run_folder(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
""")


def _holder(out):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_on_the_same_folder_is_refused_until_the_first_ends(tmp_path):
    process = _holder(tmp_path)
    try:
        with pytest.raises(ValueError, match=f"process {process.pid} on .* holds its lock {LOCK_FILE}"):
            _run(tmp_path)
        assert not (tmp_path / "steps").exists()
    finally:
        process.communicate("", timeout=60)
    # The holder is gone (its lock file stays, with its dead pid): the folder opens.
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == process.pid
    with _run(tmp_path) as run:
        assert run.folder.locked
        with _run(tmp_path) as again:  # runs of one process share the lock
            assert again.folder.locked
    assert not run.folder.locked and run_folder._HELD == {}


def test_without_flock_a_lock_file_of_a_dead_process_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "fcntl", None)
    process = _holder(tmp_path / "elsewhere")  # a live pid (its own folder is locked with flock)
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": process.pid, "host": "h"}))
        with pytest.raises(ValueError, match=f"process {process.pid} on h holds its lock"):
            open_run_folder(tmp_path / "run")
    finally:
        process.communicate("", timeout=60)
    folder = open_run_folder(tmp_path / "run")  # that pid is dead now: a stale lock
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    folder.close()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_the_chief_opens_the_folder_in_which_a_worker_made_its_own_first(tmp_path):
    out = tmp_path / "run"
    worker = _holder(out / "workers" / "worker-1")  # a multi-worker run's other worker, quicker than the chief
    try:
        (out / "workers" / "worker-2").mkdir()  # a worker between making its folder and marking it
        assert run_folder.check_run_folder(out) is None  # the command-line check of the chief and the workers
        open_run_folder(out).close()
    finally:
        worker.communicate("", timeout=60)
    other = tmp_path / "other"
    (other / "workers" / "worker-2").mkdir(parents=True)
    (other / "workers" / "worker-2" / "mine.txt").write_text("not a worker's")
    with pytest.raises(ValueError, match=r"holds other files \(workers\)"):
        open_run_folder(other)


# Symbolic-link subfolders -----------------------------------------------------------------------------
def test_a_symlinked_subfolder_is_refused_and_nothing_is_written_through_it(tmp_path):
    out, outside = tmp_path / "run", tmp_path / "outside"
    _run(out).close()
    outside.mkdir()
    (out / "steps").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="subfolder steps/ is a real folder, not a symbolic link"):
        _run(out)
    os.unlink(out / "steps")

    run = _run(out)  # a link made while the run is going
    (out / "cache").mkdir()
    (out / "cache" / "adversarial").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="subfolder cache/adversarial/ is a real folder"):
        _ = run.cache_dir
    (out / "steps").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="subfolder steps/ is a real folder"):
        run.step("clean", {"n": 1}, lambda: run.add_row("t", "whole_test_set", "none", "clean", "accuracy", 0.9, 10))
    run.close()
    assert os.listdir(outside) == []


# Step results checked by SHA-256 ------------------------------------------------------------------------
def test_a_step_result_edited_by_hand_is_recomputed(tmp_path, capsys):
    calls = []

    def evaluate(run):
        calls.append(1)
        run.add_row("t", "whole_test_set", "none", "clean", "accuracy", 0.93, 100)
        return {"curve": [0.93]}

    run = _run(tmp_path)
    assert run.step_value("eval", {"eps": 0.3}, lambda: evaluate(run)) == {"curve": [0.93]}
    (path,) = (tmp_path / "steps").glob("eval-*.json")
    stored = json.loads(path.read_text())
    assert len(stored["sha256"]) == 64
    again = _run(tmp_path)
    again.step("eval", {"eps": 0.3}, lambda: evaluate(again))
    assert len(calls) == 1 and again.steps_reused == ["eval"]

    path.write_text(path.read_text().replace("0.93", "0.999"))  # still valid JSON
    assert json.loads(path.read_text())["rows"][0]["value"] == 0.999
    edited = Run("demo", tmp_path, scale="tiny", progress=True)
    capsys.readouterr()
    assert edited.step("eval", {"eps": 0.3}, lambda: evaluate(edited))[0]["value"] == 0.93
    assert len(calls) == 2 and edited.steps_computed == ["eval"] and edited.rows[0]["value"] == 0.93
    assert "does not match its SHA-256 (edited or damaged), recomputing" in capsys.readouterr().out
    assert json.loads(path.read_text())["rows"][0]["value"] == 0.93  # rewritten

    del stored["sha256"]  # a result stored without its digest
    path.write_text(json.dumps(stored))
    fresh = _run(tmp_path)
    fresh.step("eval", {"eps": 0.3}, lambda: evaluate(fresh))
    assert len(calls) == 3 and fresh.steps_computed == ["eval"]
