import keras
import numpy as np

from tfdefense.evaluation.runner import Run


def _dense(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_model_retrains_when_a_dependency_changes_and_reuses_otherwise(tmp_path):
    run = Run("test", tmp_path, scale="tiny", progress=False)
    trained = []

    def get(classifier, data):
        return run.model("purifier", {"epochs": 1}, lambda: _dense(1), trained.append, depends_on=[classifier, data])

    classifier, data = _dense(0), np.zeros((4, 3), np.float32)
    first = get(classifier, data)
    again = get(classifier, data.copy())
    assert len(trained) == 1  # same classifier weights and data: reused from models/
    np.testing.assert_array_equal(first.get_weights()[0], again.get_weights()[0])

    classifier.layers[0].kernel.assign(classifier.layers[0].kernel + 1.0)
    get(classifier, data)
    get(classifier, data + 1.0)
    assert len(trained) == 3  # a changed classifier, then changed data: retrained each time
    assert len(list((tmp_path / "models").glob("purifier-*.keras"))) == 3
