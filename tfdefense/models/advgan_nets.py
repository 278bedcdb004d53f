"""AdvGAN's perturbation generator (an APE-GAN encoder-decoder with a tanh output)."""

from tfdefense.models.apegan_nets import apegan_generator_preset


def advgan_generator(input_shape=(28, 28, 1), preset="mnist", name="advgan_generator", **overrides):
    """The perturbation generator: the APE-GAN encoder-decoder with a tanh output in [-1, 1].

    `preset` is an APE-GAN generator preset ("mnist", "cifar10", "imagenet", "tiny").
    """
    return apegan_generator_preset(preset, input_shape, output_activation="tanh", name=name, **overrides)
