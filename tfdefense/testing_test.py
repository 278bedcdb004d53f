"""The round-trip checks pass on a sound model and fail on each kind of broken round trip."""

import keras
import numpy as np
import pytest

from tfdefense.defenses import Denoiser
from tfdefense.testing import (
    InterruptAt,
    StartedEpochs,
    assert_config_round_trip,
    assert_fit_rejects_bad_data,
    assert_keras_round_trip,
    assert_purify_rejects_bad_images,
    assert_saved_model_round_trip,
    purification_accuracies,
)

register = keras.saving.register_keras_serializable(package="tfdefense_testing_test")


@register
class ScalePurifier(keras.Model):
    """x -> clip(scale * x + bias); `forget` leaves `scale` out of the config, `purify_offset` skews `purify`."""

    def __init__(self, scale=0.5, forget=False, purify_offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.forget, self.purify_offset = scale, forget, purify_offset
        self.image_shape = (28, 28, 1)
        self.bias = self.add_weight(shape=(), initializer="zeros", name="bias")

    def call(self, x, training=False):
        return keras.ops.clip(x * self.scale + self.bias, 0.0, 1.0)

    def purify(self, x):
        return np.asarray(self(x, training=False)) + self.purify_offset

    def get_config(self):
        config = {**super().get_config(), "forget": self.forget, "purify_offset": self.purify_offset}
        if not self.forget:
            config["scale"] = self.scale
        return config


@register
class LossyConfig(ScalePurifier):
    """Rebuilds itself with the default scale."""

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("scale")
        return cls(**config)


class Unregistered(ScalePurifier):
    pass


@register
class NoCompileConfig(ScalePurifier):
    def get_compile_config(self):
        return None


@pytest.fixture(scope="module")
def digits(mnist):
    (x, _), _ = mnist
    return x[:8]


def test_a_sound_model_passes_every_check(tmp_path, digits):
    model = ScalePurifier(0.5)
    model.bias.assign(0.1)
    model.compile(optimizer="adam", loss="mse")
    model.fit(digits, digits, epochs=1, verbose=0)
    loaded = assert_keras_round_trip(model, digits, tmp_path)
    assert loaded.scale == 0.5 and float(loaded.bias) == float(model.bias)
    assert_saved_model_round_trip(
        model, digits, tmp_path, classifier=keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    )
    restored = assert_config_round_trip(model)
    assert isinstance(restored.optimizer, keras.optimizers.Adam)


def test_outputs_that_change_on_reload_fail(tmp_path, digits):
    with pytest.raises(AssertionError, match="outputs of the ScalePurifier loaded"):
        assert_keras_round_trip(ScalePurifier(0.25, forget=True), digits, tmp_path)


def test_a_tolerance_admits_small_differences_only(tmp_path, digits):
    assert_keras_round_trip(ScalePurifier(0.25, forget=True), digits * 1e-3, tmp_path, atol=1e-3)
    with pytest.raises(AssertionError):
        assert_keras_round_trip(ScalePurifier(0.25, forget=True), digits * 1e-3, tmp_path, atol=1e-5)


def test_lost_optimizer_state_fails(tmp_path, digits):
    model = NoCompileConfig()
    model.compile(optimizer="adam", loss="mse")
    model.fit(digits, digits, epochs=1, verbose=0)
    with pytest.raises(AssertionError, match="optimizers \\[\\] after the round trip, \\['optimizer'\\] before"):
        assert_keras_round_trip(model, digits, tmp_path)
    assert_keras_round_trip(model, digits, tmp_path, check_optimizers=False)


def test_served_outputs_that_differ_fail(tmp_path, digits):
    with pytest.raises(AssertionError, match="SavedModel's purify endpoint"):
        assert_saved_model_round_trip(ScalePurifier(purify_offset=0.01), digits, tmp_path)


def test_config_that_does_not_rebuild_the_model_fails(digits):
    with pytest.raises(AssertionError, match="get_config\\(\\) differs.*\\['scale'\\]"):
        assert_config_round_trip(LossyConfig(0.25))
    with pytest.raises(AssertionError, match="Unregistered is not registered"):
        assert_config_round_trip(Unregistered())
    model = NoCompileConfig()
    model.compile(optimizer="adam", loss="mse")
    assert_config_round_trip(model)  # nothing to compare: no compile config is saved


def test_fit_without_data_checks_fails(digits):
    model = ScalePurifier()
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(AssertionError, match="fit with x outside \\[0, 1\\] raised no ValueError"):
        assert_fit_rejects_bad_data(model, digits, digits)


def test_fit_data_checks_of_a_defense_pass(digits):
    keras.utils.set_random_seed(0)
    model = Denoiser.dncnn("tiny")
    model.compile()
    assert_fit_rejects_bad_data(model, np.clip(digits + 0.1, 0, 1), digits, batch_size=4)
    assert model.d_optimizer.iterations.numpy() == 0  # every bad call stopped before training


def test_image_checks_of_a_defense_pass_and_a_model_without_them_fails(digits):
    assert_purify_rejects_bad_images(Denoiser.dncnn("tiny"), digits)
    with pytest.raises(AssertionError, match="purify\\(x \\* 255\\) raised no ValueError"):
        assert_purify_rejects_bad_images(ScalePurifier(), digits)


def test_purification_accuracies(mnist, mnist_model_c):
    _, (x, y) = mnist
    x, y = x[:100], y[:100]
    blank = np.zeros_like(x)
    no_defense, purified, clean = purification_accuracies(mnist_model_c, ScalePurifier(1.0), blank, x, y)
    assert no_defense == np.mean(y == np.argmax(np.asarray(mnist_model_c(blank)), -1))
    assert purified == no_defense and clean == pytest.approx(np.mean(y == np.argmax(np.asarray(mnist_model_c(x)), -1)))
    assert clean > 0.9


def test_interrupted_fit_resumes_after_the_backed_up_epochs(tmp_path, digits):
    def run(*callbacks):
        model = ScalePurifier()
        model(digits[:1])  # BackupAndRestore needs a built model
        model.compile(optimizer="sgd", loss="mse")
        log = StartedEpochs()
        model.fit(digits, digits, epochs=3, verbose=0, callbacks=[*callbacks, log])
        return log.seen

    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        run(keras.callbacks.BackupAndRestore(backup), InterruptAt(2, KeyboardInterrupt()))
    assert run(keras.callbacks.BackupAndRestore(backup)) == [2]
    with pytest.raises(RuntimeError, match="interrupted"):
        run(InterruptAt(0))
