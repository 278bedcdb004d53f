"""Defense-GAN's WGAN-GP networks (Samangouei et al. 2018, the authors' MNIST configuration) and their presets."""

import keras
from keras import layers

from tfdefense._validation import check_number, invalid_value

DEFENSEGAN_PRESETS = {
    "mnist": dict(latent_dim=128, net_dim=64),  # the paper's configuration
    "light": dict(latent_dim=128, net_dim=32),
    "tiny": dict(latent_dim=16, net_dim=8),
}


def defensegan_generator(latent_dim=128, net_dim=64, image_shape=(28, 28, 1), name="defensegan_generator"):
    """The paper's MNIST generator: z -> 28x28 images in [0, 1] (no batch norm, as configured)."""
    check_number("latent_dim", latent_dim, minimum=1, integer=True)
    check_number("net_dim", net_dim, minimum=1, integer=True)
    if tuple(image_shape)[:2] != (28, 28):
        raise invalid_value("image_shape", "(28, 28, C) (the MNIST generator)", image_shape)
    channels = int(image_shape[-1])
    z = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense(4 * 4 * 4 * net_dim, activation="relu", name="fc")(z)
    x = layers.Reshape((4, 4, 4 * net_dim), name="reshape")(x)
    x = layers.Conv2DTranspose(2 * net_dim, 5, strides=2, padding="same", activation="relu", name="deconv0")(x)
    x = layers.Cropping2D(((0, 1), (0, 1)), name="crop")(x)  # 8x8 -> 7x7
    x = layers.Conv2DTranspose(net_dim, 5, strides=2, padding="same", activation="relu", name="deconv1")(x)
    x = layers.Conv2DTranspose(channels, 5, strides=2, padding="same", name="deconv2")(x)
    images = layers.Activation("sigmoid", dtype="float32", name="images")(x)
    return keras.Model(z, images, name=name)


def defensegan_critic(net_dim=64, image_shape=(28, 28, 1), name="defensegan_critic"):
    """The paper's MNIST critic: Conv 5x5 stride 2 (net_dim, 2x, 4x) + LeakyReLU 0.2, FC(1), no sigmoid."""
    check_number("net_dim", net_dim, minimum=1, integer=True)
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    x = inputs
    for i, mult in enumerate((1, 2, 4)):
        x = layers.Conv2D(mult * net_dim, 5, strides=2, padding="same", name=f"conv{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"lrelu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(1, dtype="float32", name="critic")(x)
    return keras.Model(inputs, outputs, name=name)
