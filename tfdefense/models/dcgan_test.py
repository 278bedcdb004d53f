import numpy as np
import pytest

from tfdefense.models.dcgan import dcgan_discriminator, dcgan_generator, dcgan_preset, list_dcgan_presets


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (30, 26, 1)])
def test_generator_makes_images_of_the_requested_shape(shape, rng):
    generator = dcgan_generator(latent_dim=30, image_shape=shape, base_filters=8)
    images = np.asarray(generator(rng.standard_normal((3, 30)).astype(np.float32)))
    assert images.shape == (3, *shape) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    logits = np.asarray(dcgan_discriminator(shape, base_filters=8)(images))
    assert logits.shape == (3, 1)


def test_mnist_preset_has_30_dimensional_latent():
    generator, discriminator = dcgan_preset("mnist")
    assert generator.input_shape == (None, 30) and generator.output_shape == (None, 28, 28, 1)
    assert discriminator.input_shape == (None, 28, 28, 1)
    assert dcgan_preset("tiny", latent_dim=5)[0].input_shape == (None, 5)
    assert list_dcgan_presets() == ["cifar10", "mnist", "tiny"]


def test_bad_arguments():
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"`latent_dim`.*Received: latent_dim={bad}"):
            dcgan_generator(latent_dim=bad)
    with pytest.raises(ValueError, match="`image_shape`"):
        dcgan_generator(image_shape=(28, 28))
    with pytest.raises(ValueError, match="`dropout`"):
        dcgan_discriminator(dropout=1.0)
    with pytest.raises(ValueError, match="`preset`"):
        dcgan_preset("celeba")
