"""`python -m tfdefense.evaluate`: the output folder and --set checks end in one error line and exit 2, before any
training, and leave the user's files as they were."""

import os
import subprocess
import sys
import textwrap

import pytest

from tfdefense.evaluate import main

PRESET = ["--preset", "quickstart", "--scale", "tiny", "--quiet"]


def _error(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("flow", ["preset", "classifier"])
def test_an_empty_out_is_refused_and_nothing_is_written_into_the_working_directory(tmp_path, monkeypatch, capsys, flow):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.keras").write_text("not read")
    argv = PRESET if flow == "preset" else ["--classifier", "model.keras", "--dataset", "mnist", "--eps", "0.3"]
    assert main([*argv, "--out", ""]) == 2
    assert _error(capsys).startswith("error: argument --out: expected a folder path, got ''")
    assert os.listdir(tmp_path) == ["model.keras"]


@pytest.mark.parametrize("flow", ["preset", "classifier"])
def test_a_folder_of_the_users_files_is_refused_and_left_as_it_was(tmp_path, capsys, flow):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my report")
    (out / "results.csv").write_text("a,b\n1,2\n")
    (tmp_path / "model.keras").write_text("not read")
    argv = (
        PRESET
        if flow == "preset"
        else ["--classifier", str(tmp_path / "model.keras"), "--dataset", "mnist", "--eps", "0.3"]
    )
    assert main([*argv, "--out", str(out)]) == 2
    error = _error(capsys)
    assert error.startswith("error: argument --out: expected a new or empty folder, or a tfdefense run folder")
    assert "holds other files (report.md, results.csv)" in error
    assert sorted(os.listdir(out)) == ["report.md", "results.csv"] and (out / "report.md").read_text() == "my report"


def test_a_negative_count_setting_is_refused_naming_set_and_the_key(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*PRESET, "--out", str(out), "--set", "train_images=-5"]) == 2
    assert _error(capsys) == (
        "error: argument --set: settings: 'train_images' is a count; expected an integer >= 1, got -5"
    )
    assert not (out / "models").exists() and not (out / "report.md").exists()


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    out = tmp_path / "run"
    holder = textwrap.dedent("""
        import sys
        from tfdefense.evaluation.runner import Run
        run = Run("quickstart", sys.argv[1], scale="tiny", progress=False)
        print("running", flush=True)
        sys.stdin.read()
    """)
    first = subprocess.Popen(
        [sys.executable, "-c", holder, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "running"
        assert main([*PRESET, "--out", str(out)]) == 2
        error = _error(capsys)
        assert error.startswith("error: Invalid value received for argument `out`. Expected a folder no other run")
        assert f"process {first.pid} on " in error and "Traceback" not in error
        assert not (out / "models").exists()
    finally:
        first.communicate("", timeout=120)
