"""The scripts in experiments/ that produce documented numbers: they run, and read what the package writes."""

import importlib.util
import pathlib
import subprocess
import sys

import keras
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_robustness_table_reads_an_evaluate_run(tmp_path):
    from tfdefense import evaluate_model
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(x_train.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=5, verbose=0)
    result = evaluate_model(model, (x_test[:30], y_test[:30]), 0.1, suite="quick", out=tmp_path / "run", progress=False)
    table = _script("robustness_table").table([("plain", tmp_path / "run")])
    row = table.splitlines()[-1]
    assert row.startswith(f"| plain | {100 * result.clean_accuracy:.1f} | {100 * result.worst_case:.1f} (")
    assert "| 30 |" in row
    with pytest.raises(FileNotFoundError):
        _script("robustness_table").summary(tmp_path / "missing")


@pytest.mark.parametrize("script", ["robustness_table", "apegan_model_c"])
def test_scripts_explain_themselves_and_refuse_bad_arguments(script):
    help_text = subprocess.run(
        [sys.executable, str(REPO / "experiments" / f"{script}.py"), "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "usage:" in help_text.stdout
    bad = {"robustness_table": ["no-equals-sign"], "apegan_model_c": ["--recipes", "nope", "--out", "x.json"]}[script]
    failed = subprocess.run([sys.executable, str(REPO / "experiments" / f"{script}.py"), *bad], capture_output=True)
    assert failed.returncode == 2
