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


SCALES = {
    "tiny": dict(train=300, epochs=2, lr=1e-3, eps_grid=(0.0, 0.3)),
    "full": dict(train=None, epochs=10, lr=1e-3, eps_grid=(0.0,)),
}


def test_settings_override_the_scale_and_are_reported(tmp_path):
    from tfdefense.evaluation import reports

    settings = {"epochs": 3, "train": 30000, "lr": 2, "eps_grid": [0.1]}
    run = Run("test", tmp_path, scale="full", progress=False, settings=settings)
    assert run.pick(SCALES) == dict(train=30000, epochs=3, lr=2.0, eps_grid=(0.1,))
    assert Run("test", tmp_path, scale="tiny", progress=False, settings={"train": None}).pick(SCALES)["train"] is None
    results = run.results(1.0)
    assert results["settings"] == {"epochs": 3, "train": 30000, "lr": 2, "eps_grid": [0.1]}
    results["data"] = {"dataset": "mnist", "description": "digits"}
    reports.validate_results(results)
    assert "Settings changed from the full scale's (--set): epochs=3, train=30000" in reports.to_markdown(results)
    assert "settings" not in Run("test", tmp_path, progress=False).results(1.0)  # no override, no field


def test_settings_naming_no_setting_or_of_the_wrong_type_are_refused(tmp_path):
    import pytest

    from tfdefense.evaluation.runner import SettingsError

    with pytest.raises(SettingsError, match=r"has no setting 'epoch'; expected one of: epochs, eps_grid, lr, train"):
        Run("test", tmp_path, scale="tiny", progress=False, settings={"epoch": 3}).pick(SCALES)
    for bad in ({"epochs": "3"}, {"epochs": 2.5}, {"lr": "fast"}, {"eps_grid": 0.3}, {"train": True}):
        with pytest.raises(SettingsError, match=f"settings: '{next(iter(bad))}' expects a value like its default"):
            Run("test", tmp_path, scale="tiny", progress=False, settings=bad).pick(SCALES)
    with pytest.raises(TypeError, match="settings: expected a dict"):
        Run("test", tmp_path, settings=["epochs=3"])


def test_an_interrupted_model_training_resumes_from_its_last_epoch(tmp_path):
    import pytest

    x, y = np.random.default_rng(0).normal(size=(32, 3)).astype("float32"), np.zeros(32, "int64")
    epochs_run = []

    class Interrupt(keras.callbacks.Callback):
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)
            if epoch == self.at:
                raise KeyboardInterrupt

    def build():
        model = _dense(0)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def train(at):
        return lambda model: model.fit(x, y, epochs=5, verbose=0, callbacks=[Interrupt(at), *run.training_backup()])

    run = Run("test", tmp_path, scale="tiny", progress=False)
    with pytest.raises(KeyboardInterrupt):
        run.model("net", {"epochs": 5}, build, train(at=3))
    (backup,) = (tmp_path / "backup").iterdir()
    assert backup.name.startswith("net-") and (backup / "training_metadata.json").is_file()
    assert not list((tmp_path / "models").glob("net-*.keras"))
    with pytest.raises(RuntimeError, match="for the train function of Run.model"):
        run.training_backup_dir()  # outside a training

    epochs_run.clear()
    run = Run("test", tmp_path, scale="tiny", progress=False)  # a new process: the rerun
    run.model("net", {"epochs": 5}, build, train(at=None))
    assert epochs_run == [3, 4]  # epochs 0-2 were finished before the interruption
    assert not backup.exists() and list((tmp_path / "models").glob("net-*.keras"))
