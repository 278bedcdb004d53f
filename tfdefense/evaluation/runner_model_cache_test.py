"""`Run.model` reuses a saved model only when it matches the fingerprint saved beside it."""

import json
import shutil
import warnings

import keras
import numpy as np
import pytest

from tfdefense.evaluation.runner import Run, fingerprint_path


def _dense(seed, units=2):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])


def _trained_kernel(model):
    model.layers[0].kernel.assign(np.full((3, model.layers[0].units), 0.5, np.float32))


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        _trained_kernel(model)


def _get(run, train):
    return run.model("model_c", {"epochs": 1}, lambda: _dense(1), train)


def _no_warning_call(run, train):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _get(run, train)
    assert not [w for w in caught if "not reusing" in str(w.message)]
    return model


def test_saved_model_reused_only_while_it_matches_its_fingerprint(tmp_path):
    run = Run("test", tmp_path, scale="tiny", progress=False)
    train = _Counter()
    first = _no_warning_call(run, train)
    (path,) = (tmp_path / "models").glob("model_c-*.keras")
    record = json.loads(fingerprint_path(path).read_text())
    assert record["file"] == path.name and len(record["sha256"]) == 64
    _no_warning_call(run, train)
    assert train.calls == 1  # reused

    # a different but valid model of the same architecture copied over the saved file
    foreign = _dense(7)
    foreign.save(tmp_path / "foreign.keras")
    shutil.copyfile(tmp_path / "foreign.keras", path)
    with pytest.warns(RuntimeWarning, match="not reusing the saved model_c model.*differ from its fingerprint"):
        model = _get(run, train)
    assert train.calls == 2
    np.testing.assert_array_equal(model.get_weights()[0], first.get_weights()[0])
    _no_warning_call(run, train)
    assert train.calls == 2  # the retrained file and its fingerprint are reused again


def test_model_of_another_architecture_is_retrained_not_crashed_on(tmp_path):
    run = Run("test", tmp_path, scale="tiny", progress=False)
    train = _Counter()
    _get(run, train)
    (path,) = (tmp_path / "models").glob("model_c-*.keras")
    _dense(3, units=5).save(tmp_path / "other.keras")
    shutil.copyfile(tmp_path / "other.keras", path)
    with pytest.warns(RuntimeWarning, match="retraining"):
        model = _get(run, train)
    assert train.calls == 2 and model.output_shape == (None, 2)
    assert keras.saving.load_model(path).output_shape == (None, 2)


@pytest.mark.parametrize("damage", ["no fingerprint", "garbled fingerprint", "truncated model"])
def test_unverifiable_saved_model_is_retrained_with_a_warning(tmp_path, damage):
    run = Run("test", tmp_path, scale="tiny", progress=False)
    train = _Counter()
    _get(run, train)
    (path,) = (tmp_path / "models").glob("model_c-*.keras")
    if damage == "no fingerprint":
        fingerprint_path(path).unlink()
    elif damage == "garbled fingerprint":
        fingerprint_path(path).write_text("{not json")
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="not reusing the saved model_c model"):
        _get(run, train)
    assert train.calls == 2
    _no_warning_call(run, train)
    assert train.calls == 2
