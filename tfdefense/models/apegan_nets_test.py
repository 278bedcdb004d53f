import keras
import numpy as np
import pytest

from tfdefense.models.apegan_nets import (
    apegan_discriminator,
    apegan_discriminator_preset,
    apegan_generator,
    apegan_generator_preset,
    list_apegan_presets,
)


def _kinds(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


def test_mnist_generator_follows_table_6(rng):
    generator = apegan_generator_preset("mnist")
    convs = _kinds(generator, keras.layers.Conv2D)
    deconvs = _kinds(generator, keras.layers.Conv2DTranspose)
    assert [c.filters for c in convs] == [64, 128] and [d.filters for d in deconvs] == [64, 1]
    for layer in convs + deconvs:
        assert layer.kernel_size == (3, 3) and layer.strides == (2, 2)
    assert len(_kinds(generator, keras.layers.BatchNormalization)) == 3
    assert generator.layers[-1].activation.__name__ == "sigmoid"
    x = rng.random((3, 28, 28, 1), dtype=np.float32)
    out = np.asarray(generator(x))
    assert out.shape == x.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_discriminators_return_one_logit(rng):
    mnist = apegan_discriminator_preset("mnist")
    convs = _kinds(mnist, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [64, 128, 256]
    assert len(_kinds(mnist, keras.layers.BatchNormalization)) == 2  # no BN after the first conv
    imagenet = apegan_discriminator_preset("imagenet", input_shape=(64, 64, 3))
    assert [c.filters for c in _kinds(imagenet, keras.layers.Conv2D)] == [64, 128, 256, 256]
    assert [d.units for d in _kinds(imagenet, keras.layers.Dense)] == [1024, 1]
    assert len(_kinds(imagenet, keras.layers.BatchNormalization)) == 5
    logits = np.asarray(mnist(rng.random((4, 28, 28, 1), dtype=np.float32)))
    assert logits.shape == (4, 1)


@pytest.mark.parametrize("preset, shape", [("cifar10", (32, 32, 3)), ("imagenet", (64, 64, 3)), ("tiny", (30, 22, 1))])
def test_generator_keeps_any_image_shape(preset, shape, rng):
    generator = apegan_generator_preset(preset, input_shape=shape)
    x = rng.random((2, *shape), dtype=np.float32)
    assert np.asarray(generator(x)).shape == (2, *shape)
    if preset == "imagenet":
        assert [d.filters for d in _kinds(generator, keras.layers.Conv2DTranspose)] == [256, 128, 3]


def test_tanh_output_and_presets():
    generator = apegan_generator((28, 28, 1), (8, 16), (8,), output_activation="tanh")
    out = np.asarray(generator(np.ones((1, 28, 28, 1), np.float32)))
    assert -1 <= out.min() and out.max() <= 1
    assert list_apegan_presets() == ["cifar10", "imagenet", "mnist", "tiny"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="`up_filters`.*Received: up_filters=\\(64, 32\\)"):
        apegan_generator((28, 28, 1), (64, 128), (64, 32))
    with pytest.raises(ValueError, match="`down_filters`.*Received: down_filters=\\(\\)"):
        apegan_generator((28, 28, 1), (), ())
    with pytest.raises(ValueError, match="`output_activation`"):
        apegan_generator(output_activation="relu")
    with pytest.raises(ValueError, match="`input_shape`"):
        apegan_discriminator(input_shape=(28, 28))
    with pytest.raises(ValueError, match="`filters`.*Received: filters=\\(64, 0\\)"):
        apegan_discriminator(filters=(64, 0))
    with pytest.raises(ValueError, match="`preset`.*Received: preset='svhn'"):
        apegan_generator_preset("svhn")
