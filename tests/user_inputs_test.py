"""Users' models and data through the command lines (`python -m tfdefense.evaluate` / `tfdefense.train`).

One run evaluates what users bring as it is: a legacy `.h5` classifier that expects 0-255 pixels
(`--input-range 0-255`), a variable-free `tf.Module` SavedModel as `--purifier`, and an npz holding
only x_test / y_test. The other cases are refusals: one `error:` line and exit status 2, before
any attack runs or any graph op of an untrusted SavedModel executes.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.data import load_dataset
from tfdefense.evaluate import main as evaluate_main
from tfdefense.testing import file_writing_module, quantizer_module
from tfdefense.train import main as train_main

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A digits classifier trained on 0-255 pixels (saved as .h5), a quantizer SavedModel, a test-only npz."""
    folder = tmp_path_factory.mktemp("inputs")
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train * 255.0, y_train, epochs=15, batch_size=64, verbose=0)
    model.save(folder / "classifier_0_255.h5")
    tf.saved_model.save(quantizer_module(SHAPE), str(folder / "quantizer"))
    np.savez(folder / "test_only.npz", x_test=np.round(x_test[:12, ..., 0] * 255).astype(np.uint8), y_test=y_test[:12])
    return folder


def _evaluate(files, out, *extra):
    return evaluate_main(
        [
            "--classifier",
            str(files / "classifier_0_255.h5"),
            "--dataset",
            f"npz:{files / 'test_only.npz'}",
            "--eps",
            "0.1",
            "--suite",
            "quick",
            "--out",
            str(out),
            "--quiet",
            *map(str, extra),
        ]
    )


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow  # ~25 s on 2 shared cores; the API tests cover the same inputs in the fast tier
def test_h5_classifier_0_255_with_tf_module_purifier_on_a_test_only_npz(files, tmp_path, capsys):
    code = _evaluate(files, tmp_path / "run", "--input-range", "0-255", "--purifier", files / "quantizer")
    assert code in (0, 3), capsys.readouterr().err  # 3: a sanity check flagged the purifier; the report is written
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    clean = next(r["value"] for r in results["rows"] if r["attack"] == "clean")
    assert clean >= 0.8  # the 0-255 model was fed what it expects
    assert results["choices"]["bpda"]  # tf.round has no gradient: attacked through BPDA
    assert any("input_range='0-255'" in note for note in results["notes"])
    assert "test_only.npz" in results["data"]["description"]


def test_refusals_are_one_line_with_exit_status_2(files, tmp_path, capsys):
    code = _evaluate(files, tmp_path / "a")  # no --input-range: the detected 0-255 model names the flag
    assert code == 2 and "--input-range=0-255" in _one_error_line(capsys)

    target = tmp_path / "side_effect.txt"
    tf.saved_model.save(file_writing_module(SHAPE, target), str(tmp_path / "writer"))
    code = _evaluate(files, tmp_path / "b", "--input-range", "0-255", "--purifier", tmp_path / "writer")
    line = _one_error_line(capsys)
    assert code == 2 and "WriteFile" in line and "--trust-saved-model" in line
    assert not target.exists()

    unsafe = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Lambda(lambda t: t * 255.0), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    unsafe.save(tmp_path / "lambda.keras")
    (tmp_path / "text.keras").write_text("not a model")
    for name, reason in (("lambda.keras", "Lambda"), ("text.keras", "not a zip archive")):
        code = evaluate_main(
            [
                "--classifier",
                str(tmp_path / name),
                "--dataset",
                f"npz:{files / 'test_only.npz'}",
                "--eps",
                "0.1",
                "--out",
                str(tmp_path / name.replace(".", "_")),
                "--quiet",
            ]
        )
        line = _one_error_line(capsys)
        assert code == 2 and str(tmp_path / name) in line and reason in line, line

    _, (x, y) = load_dataset("digits")
    np.savez(tmp_path / "nchw.npz", x_test=np.round(x[:6] * 255).astype(np.uint8).transpose(0, 3, 1, 2), y_test=y[:6])
    code = evaluate_main(
        [
            "--classifier",
            str(files / "classifier_0_255.h5"),
            "--dataset",
            f"npz:{tmp_path}/nchw.npz",
            "--eps",
            "0.1",
            "--out",
            str(tmp_path / "c"),
            "--quiet",
        ]
    )
    line = _one_error_line(capsys)
    assert code == 2 and "channels-first" in line and "x_test" in line

    code = train_main(
        ["classifier", "--model", "C", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "c.keras")]
    )
    line = _one_error_line(capsys)
    assert code == 2 and "`input_shape`" in line and "'C'" in line and "(8, 8, 1)" in line
    assert not (tmp_path / "c.keras").exists()
