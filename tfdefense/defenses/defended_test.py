import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.defenses import DefendedClassifier, Pix2PixDefense
from tfdefense.models import model_c, model_d, patchgan_preset, unet_generator_preset
from tfdefense.testing import assert_keras_round_trip


@pytest.fixture(scope="module")
def parts():
    keras.utils.set_random_seed(0)
    classifier = model_c()
    defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"), classifier=classifier)
    return defense, classifier


def test_logits_of_classifier_of_purified(parts, rng):
    defense, classifier = parts
    model = DefendedClassifier(defense, classifier)
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    expected = np.asarray(classifier(defense(x), training=False))
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-6)
    assert model.image_shape == (28, 28, 1) and not model.stochastic


def test_gradients_reach_the_input_through_the_purifier(parts, rng):
    defense, classifier = parts
    model = DefendedClassifier(defense, classifier)
    x = tf.constant(rng.random((2, 28, 28, 1), dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x)[:, 3])
    grad = tape.gradient(loss, x).numpy()
    assert np.abs(grad).sum() > 0 and np.isfinite(grad).all()


def test_training_flag_is_forwarded(rng):
    keras.utils.set_random_seed(1)
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x, training=None):
            seen.append(training)
            return x

    inputs = keras.Input((28, 28, 1))
    purifier = keras.Model(inputs, Probe()(inputs))
    model = DefendedClassifier(purifier, model_c())
    x = rng.random((2, 28, 28, 1), dtype=np.float32)
    seen.clear()
    model(x, training=True)
    model(x, training=False)
    assert seen == [True, False]


def test_stochastic_purifier_carried_through(parts, rng):
    defense, classifier = parts
    model = DefendedClassifier(defense.with_inference_mode("train_mode"), classifier)
    assert model.stochastic
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    assert not np.allclose(np.asarray(model(x)), np.asarray(model(x)))


def test_round_trip_shares_the_classifier(tmp_path, parts, rng):
    defense, classifier = parts
    model = DefendedClassifier(defense, classifier)
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    loaded = assert_keras_round_trip(model, x, tmp_path)
    assert loaded.classifier is loaded.purifier.classifier
    loaded.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    assert loaded.evaluate(x, np.zeros(4, np.int64), verbose=0, return_dict=True)["accuracy"] >= 0


def test_checks():
    with pytest.raises(ValueError, match="`classifier`.*shape \\(28, 28, 1\\).*Received: classifier="):
        DefendedClassifier(unet_generator_preset("tiny"), model_d())
    with pytest.raises(ValueError, match="`purifier`"):
        DefendedClassifier(lambda x: x, model_c())


def test_purifier_output_that_does_not_fit_the_classifier_is_refused_at_construction():
    cropping = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Cropping2D(2)])  # 28x28 -> 24x24
    with pytest.raises(ValueError, match=r"`purifier`.*input shape \(28, 28, 1\).*Received.*\(24, 24, 1\)"):
        DefendedClassifier(cropping, model_c())
    to_rgb = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(3, 1)])  # right size, 3 channels
    with pytest.raises(ValueError, match=r"`purifier`.*\(28, 28, 1\).*Received.*\(28, 28, 3\)"):
        DefendedClassifier(to_rgb, model_c())
    same = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(1, 3, padding="same")])
    assert DefendedClassifier(same, model_c()).image_shape == (28, 28, 1)
