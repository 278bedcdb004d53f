import keras
import numpy as np
import pytest

from tfdefense.training import (
    VERSATILE_STAGES,
    ComputeBudget,
    EpsilonRamp,
    StagedLossWeights,
    check_stages,
    versatile_stages,
)


class WeightsModel(keras.Model):
    """A minimal model with loss-weight variables, trained by a compiled step that reads them."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.lambda_l1 = self.add_weight(shape=(), initializer="zeros", trainable=False, name="lambda_l1")
        self.lambda_perc = self.add_weight(shape=(), initializer="zeros", trainable=False, name="lambda_perc")

    def call(self, x):
        return self.dense(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # The loss equals lambda_l1 + 1000 * lambda_perc: logs show what the traced step saw.
        return 0.0 * keras.ops.mean(y_pred) + self.lambda_l1 + 1000.0 * self.lambda_perc


@pytest.fixture
def data():
    return np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32)


def test_default_is_the_versatile_schedule():
    callback = StagedLossWeights()
    assert callback.stages == VERSATILE_STAGES
    assert callback.weights_for_epoch(0) == {"lambda_l1": 100.0, "lambda_perc": 100.0}
    assert callback.weights_for_epoch(39)["lambda_perc"] == 100.0
    assert callback.weights_for_epoch(40)["lambda_perc"] == 50.0
    assert callback.weights_for_epoch(69)["lambda_perc"] == 50.0
    assert callback.weights_for_epoch(70) == {"lambda_l1": 100.0, "lambda_perc": 1.0}
    assert callback.weights_for_epoch(99)["lambda_perc"] == 1.0
    assert callback.weights_for_epoch(150)["lambda_perc"] == 1.0  # last stage kept
    assert [(s["start"], s["end"]) for s in versatile_stages(10)] == [(0, 4), (4, 7), (7, 10)]


def test_assigned_values_reach_the_compiled_step_and_logs(data):
    model = WeightsModel()
    model.compile(optimizer="sgd")
    stages = [
        (0, 2, {"lambda_l1": 1.0, "lambda_perc": 0.0}),
        {"start": 2, "end": 3, "lambda_l1": 2.0, "lambda_perc": 0.5},
    ]
    history = model.fit(*data, batch_size=4, epochs=4, verbose=0, callbacks=[StagedLossWeights(stages)])
    assert history.history["loss"] == pytest.approx([1.0, 1.0, 502.0, 502.0])
    assert history.history["lambda_l1"] == [1.0, 1.0, 2.0, 2.0]
    assert history.history["lambda_perc"] == [0.0, 0.0, 0.5, 0.5]


def test_resume_mid_schedule_with_initial_epoch(data):
    model = WeightsModel()
    model.compile(optimizer="sgd")
    stages = [(0, 2, {"lambda_l1": 1.0, "lambda_perc": 0.0}), (2, 4, {"lambda_l1": 3.0, "lambda_perc": 0.0})]
    history = model.fit(*data, epochs=4, initial_epoch=3, verbose=0, callbacks=[StagedLossWeights(stages)])
    assert history.history["lambda_l1"] == [3.0] and history.history["loss"] == pytest.approx([3.0])


def test_resume_mid_schedule_with_backup_and_restore(tmp_path, data):
    stages = [(0, 1, {"lambda_l1": 1.0, "lambda_perc": 0.0}), (1, 3, {"lambda_l1": 5.0, "lambda_perc": 0.0})]

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("stop")

    model = WeightsModel()
    model(data[0])
    model.compile(optimizer="sgd")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    with pytest.raises(RuntimeError):
        model.fit(*data, epochs=3, verbose=0, callbacks=[StagedLossWeights(stages), backup, Stop()])
    model = WeightsModel()
    model(data[0])
    model.compile(optimizer="sgd")
    history = model.fit(*data, epochs=3, verbose=0, callbacks=[StagedLossWeights(stages), backup])
    assert history.history["lambda_l1"] == [5.0] and history.history["loss"] == pytest.approx([5.0])


@pytest.mark.parametrize(
    "stages, message",
    [
        ([(0, 10, {"lambda_l1": 1.0}), (12, 20, {"lambda_l1": 2.0})], "gap: epochs 10-11"),
        ([(0, 10, {"lambda_l1": 1.0}), (8, 20, {"lambda_l1": 2.0})], "both cover epoch 8"),
        ([(0, 10, {"lambda_l1": -1.0})], "non-negative weight for 'lambda_l1'"),
        ([(5, 10, {"lambda_l1": 1.0})], "starting at epoch 0"),
        ([(0, 0, {"lambda_l1": 1.0})], "end.*> .*start"),
        ([(0, 5, {"lambda_l1": 1.0}), (5, 9, {"lambda_perc": 1.0})], "same weights"),
        ([(0, 5, {})], "at least one loss weight"),
        ([], "non-empty list"),
        ([(0, 5, {"lambda_l1": float("nan")})], "finite"),
    ],
)
def test_bad_tables_name_what_was_received(stages, message):
    with pytest.raises(ValueError, match=f"Invalid value received for argument `stages.*{message}.*Received: stages"):
        check_stages(stages)
    with pytest.raises(ValueError, match="Received: stages"):
        StagedLossWeights(stages)


def test_unknown_weight_name_fails_at_train_begin(data):
    model = WeightsModel()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="has no variable 'lambda_xyz'"):
        model.fit(*data, epochs=1, verbose=0, callbacks=[StagedLossWeights([(0, 1, {"lambda_xyz": 1.0})])])


def test_perceptual_weight_needs_a_feature_extractor():
    from tfdefense.defenses import Pix2PixDefense
    from tfdefense.models import patchgan_preset, unet_generator_preset

    defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))
    defense.compile()
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="lambda_perc = 0 in every stage for a model without a feature_extractor"):
        defense.fit(x, x, epochs=1, verbose=0, callbacks=[StagedLossWeights()])


class RampedAttackModel(WeightsModel):
    """A model with the training attack's eps / step-size variables; its loss reports what the step saw."""

    def __init__(self, eps=0.3, step_ratio=0.25):
        super().__init__()
        self.schedule = {"eps": eps, "step_ratio": step_ratio}
        self.attack_eps = self.add_weight(shape=(), initializer="zeros", trainable=False, name="attack_eps")
        self.attack_step_size = self.add_weight(shape=(), initializer="zeros", trainable=False, name="attack_step_size")

    def attack_schedule(self):
        return dict(self.schedule)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return 0.0 * keras.ops.mean(y_pred) + self.attack_eps + 1000.0 * self.attack_step_size


def test_epsilon_ramp_reaches_the_target_at_ramp_epochs_and_scales_the_step(data):
    model = RampedAttackModel(eps=0.3, step_ratio=0.25)
    model.compile(optimizer="sgd")
    history = model.fit(*data, batch_size=8, epochs=5, verbose=0, callbacks=[EpsilonRamp(3, start=0.0)])
    expected = [0.1, 0.2, 0.3, 0.3, 0.3]
    np.testing.assert_allclose(history.history["attack_eps"], expected, rtol=1e-6)
    # the traced step read eps + 1000 * step with step = 0.25 * eps
    np.testing.assert_allclose(history.history["loss"], [e + 250.0 * e for e in expected], rtol=1e-5)
    resumed = RampedAttackModel(eps=0.3, step_ratio=0.25)
    resumed.compile(optimizer="sgd")
    history = resumed.fit(*data, batch_size=8, epochs=3, initial_epoch=1, verbose=0, callbacks=[EpsilonRamp(3)])
    np.testing.assert_allclose(history.history["attack_eps"], [0.2, 0.3], rtol=1e-6)


def test_epsilon_ramp_refuses_a_model_without_a_training_attack(data):
    model = WeightsModel()
    model.compile(optimizer="sgd")
    with pytest.raises(TypeError, match="attack_schedule.*WeightsModel"):
        model.fit(*data, batch_size=8, epochs=1, verbose=0, callbacks=[EpsilonRamp(2)])
    with pytest.raises(ValueError, match="`ramp_epochs`"):
        EpsilonRamp(0)
    with pytest.raises(ValueError, match="`target`"):
        EpsilonRamp(2, target=1.5)


def test_compute_budget_stops_after_the_epoch_that_spends_it(data):
    model = WeightsModel()
    model.compile(optimizer="sgd")
    budget = ComputeBudget(cpu_seconds=0.0, offset=2.0)
    history = model.fit(*data, batch_size=8, epochs=4, verbose=0, callbacks=[budget])
    assert len(history.history["loss"]) == 1
    assert history.history["cpu_seconds"][0] > 2.0 and budget.spent == history.history["cpu_seconds"][0]
    unlimited = ComputeBudget()
    history = model.fit(*data, batch_size=8, epochs=3, verbose=0, callbacks=[unlimited])
    assert len(history.history["loss"]) == 3
    assert np.all(np.diff(history.history["cpu_seconds"]) >= 0)
    with pytest.raises(ValueError, match="`cpu_seconds`"):
        ComputeBudget(-1)
