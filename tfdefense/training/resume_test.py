"""A fit killed at epoch k and resumed from its `BackupAndRestore` folder ends with the same weights.

Each run builds its model, data pipeline and callbacks afresh (as a new
process would); the resumed model is even built from another seed, so what
it continues with comes from the backup, not from a repeated construction.
"""

import json

import keras
import numpy as np
import pytest

from tfdefense.data import make_paired_pipeline, make_pipeline
from tfdefense.data.pipelines import PipelineEpoch
from tfdefense.testing import InterruptAt, StartedEpochs
from tfdefense.training.resume import STATE_FILE, RandomStateBackup, resumable_fit_callbacks

EPOCHS, KILL_AT = 3, 2


def _kill_and_resume(tmp_path, fit):
    """Weights of `fit(callbacks, build_seed)` uninterrupted vs killed at KILL_AT and resumed (both backed up)."""
    reference = fit([keras.callbacks.BackupAndRestore(str(tmp_path / "reference"))], 0)
    backup = str(tmp_path / "backup")
    killed = InterruptAt(KILL_AT, KeyboardInterrupt(f"killed at epoch {KILL_AT}"))  # like a SIGKILL
    with pytest.raises(KeyboardInterrupt):
        fit([keras.callbacks.BackupAndRestore(backup), killed], 0)
    stored = json.loads((tmp_path / "backup" / STATE_FILE).read_text())["epochs"]
    assert set(stored) == {str(KILL_AT - 1), str(KILL_AT)}
    epochs = StartedEpochs()
    resumed = fit([keras.callbacks.BackupAndRestore(backup), epochs], 1)
    assert epochs.seen == list(range(KILL_AT, EPOCHS))
    assert not (tmp_path / "backup").exists()  # deleted at the end of the resumed fit
    return reference, resumed


def _assert_same_weights(reference, resumed):
    a, b = reference.get_weights(), resumed.get_weights()
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=False):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def digits(mnist):
    (x, y), (x_test, y_test) = mnist
    return x[:256], y[:256], x_test[:500], y_test[:500]


def test_pipeline_order_is_a_function_of_seed_and_epoch(digits):
    x, y, _, _ = digits
    labels = lambda dataset: np.concatenate([b[1].numpy() for b in dataset])  # noqa: E731

    first, second = (
        make_pipeline(x, y, batch_size=64, shuffle=True, seed=3),
        make_pipeline(x, y, batch_size=64, shuffle=True, seed=3),
    )
    epoch = PipelineEpoch([first, second])
    epoch.on_epoch_begin(5)
    np.testing.assert_array_equal(labels(first), labels(second))  # two pipelines (processes) agree on epoch 5
    epoch5 = labels(first)
    epoch.on_epoch_begin(6)
    assert not np.array_equal(labels(first), epoch5)
    assert sorted(labels(first)) == sorted(y)  # a permutation, every example once
    epoch.on_train_end()  # without the callback every pass draws a new order
    assert not np.array_equal(labels(first), labels(first))
    paired = make_paired_pipeline(x, x, y, batch_size=64, seed=3)
    PipelineEpoch(paired.map(lambda a, b, c: (a, b, c))).on_epoch_begin(5)  # found through a map
    np.testing.assert_array_equal(np.concatenate([b[2].numpy() for b in paired]), epoch5)


def test_resumable_fit_callbacks_put_the_state_backup_before_the_checkpoint(tmp_path, digits):
    x, y, _, _ = digits
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    callbacks = resumable_fit_callbacks(make_pipeline(x, y, shuffle=True), [backup])
    assert [type(c) for c in callbacks] == [RandomStateBackup, keras.callbacks.BackupAndRestore, PipelineEpoch]
    assert resumable_fit_callbacks(x, []) == []


def test_train_classifier_resumes_exactly(tmp_path, digits):
    from tfdefense.evaluation import accuracy
    from tfdefense.models import train_classifier

    x, y, x_test, y_test = digits

    def fit(callbacks, build_seed):
        keras.utils.set_random_seed(build_seed)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(10),
            ]
        )
        train_classifier(
            model,
            x,
            y,
            epochs=EPOCHS,
            batch_size=32,
            augment="shift",
            learning_rate=3e-3,
            seed=7,
            callbacks=callbacks,
            verbose=0,
        )
        return model

    reference, resumed = _kill_and_resume(tmp_path, fit)
    _assert_same_weights(reference, resumed)
    assert accuracy(resumed, x_test, y_test) == accuracy(reference, x_test, y_test) > 0.5


def _tiny_pix2pix():
    from tfdefense.defenses import Pix2PixDefense
    from tfdefense.models import patchgan_preset, unet_generator_preset

    return Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))


def _tiny_apegan():
    from tfdefense.defenses import APEGAN

    return APEGAN.from_preset("tiny")


@pytest.mark.slow  # about 30 s each on two busy cores
@pytest.mark.parametrize("build", [_tiny_pix2pix, _tiny_apegan], ids=["pix2pix", "apegan"])
def test_paired_purifier_resumes_exactly(tmp_path, digits, build):
    x, _, _, _ = digits
    x_adv = np.clip(x + 0.3 * np.sign(np.random.default_rng(0).standard_normal(x.shape)), 0, 1).astype(np.float32)

    def fit(callbacks, build_seed):
        keras.utils.set_random_seed(build_seed)
        defense = build()
        defense.compile()
        defense.fit(
            make_paired_pipeline(x_adv[:64], x[:64], batch_size=32, seed=1),
            epochs=EPOCHS,
            callbacks=callbacks,
            verbose=0,
        )
        return defense

    reference, resumed = _kill_and_resume(tmp_path, fit)
    if build is _tiny_pix2pix:  # its dropout draws are restored too
        assert any(isinstance(layer, keras.layers.Dropout) for layer in reference.generator.layers)
    _assert_same_weights(reference, resumed)


def test_robust_purifier_resumes_exactly(tmp_path, digits):
    from tfdefense.defenses import RobustPurifier
    from tfdefense.models import model_c, unet_generator_preset

    x, y, _, _ = digits
    keras.utils.set_random_seed(0)
    classifier = model_c()

    def fit(callbacks, build_seed):
        keras.utils.set_random_seed(build_seed)
        purifier = RobustPurifier(unet_generator_preset("tiny"), classifier, attack_eps=0.3, attack_steps=2, seed=1)
        purifier.compile()
        # Arrays with a BackupAndRestore: ordered by (seed, epoch) as make_pipeline does, not by keras' shuffle.
        purifier.fit(x[:64], y[:64], batch_size=32, epochs=EPOCHS, callbacks=callbacks, verbose=0)
        return purifier

    reference, resumed = _kill_and_resume(tmp_path, fit)
    _assert_same_weights(reference, resumed)
