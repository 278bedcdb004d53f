"""DCGAN generator and discriminator (Radford et al. 2016) for small images.

Paper: Radford, Metz, Chintala, "Unsupervised Representation Learning with
Deep Convolutional Generative Adversarial Networks"
(https://arxiv.org/abs/1511.06434); layout of the TensorFlow DCGAN tutorial.

Generator G(z): Dense(s*s*4F) - BN+lrelu - reshape - Deconv(2F, 5x5, stride 1) -
BN+lrelu - Deconv(F, 5x5, stride 2) - BN+lrelu - Deconv(C, 5x5, stride 2) -
sigmoid, with s = ceil(side / 4) (7 for 28 px, 8 for 32 px) and the output
cropped to the image size. Images are [0, 1]. Used by EGAN with a latent
dimension of 30.

Discriminator: Conv(F, 5x5, stride 2)+lrelu+Dropout - Conv(2F, 5x5, stride 2)+
lrelu+Dropout - flatten - FC(1), returning a logit (the sigmoid is in the loss).
"""

import math

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number
from tfdefense.models.unet import check_network_input_shape

DCGAN_PRESETS = {
    "mnist": dict(image_shape=(28, 28, 1), latent_dim=30, base_filters=64),
    "cifar10": dict(image_shape=(32, 32, 3), latent_dim=100, base_filters=64),
    "tiny": dict(image_shape=(28, 28, 1), latent_dim=30, base_filters=8),
}


def dcgan_generator(latent_dim=30, image_shape=(28, 28, 1), base_filters=64, bn_momentum=0.9, name="dcgan_generator"):
    """Builds G: (N, latent_dim) -> (N, *image_shape) images in [0, 1]."""
    check_number("latent_dim", latent_dim, minimum=1, integer=True)
    height, width, channels = check_network_input_shape("image_shape", image_shape)
    check_number("base_filters", base_filters, minimum=1, integer=True)
    check_number("bn_momentum", bn_momentum, minimum=0, maximum=1)
    start_h, start_w = math.ceil(height / 4), math.ceil(width / 4)

    z = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense(start_h * start_w * 4 * base_filters, use_bias=False, name="project")(z)
    x = layers.BatchNormalization(momentum=bn_momentum, name="project_bn")(x)
    x = layers.LeakyReLU(0.2, name="project_lrelu")(x)
    x = layers.Reshape((start_h, start_w, 4 * base_filters), name="reshape")(x)
    for i, (filters, stride) in enumerate(((2 * base_filters, 1), (base_filters, 2))):
        x = layers.Conv2DTranspose(filters, 5, strides=stride, padding="same", use_bias=False, name=f"deconv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"deconv{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"deconv{i}_lrelu")(x)
    x = layers.Conv2DTranspose(channels, 5, strides=2, padding="same", name="deconv_out")(x)
    crop_h, crop_w = 4 * start_h - height, 4 * start_w - width
    if crop_h or crop_w:
        cropping = ((crop_h // 2, crop_h - crop_h // 2), (crop_w // 2, crop_w - crop_w // 2))
        x = layers.Cropping2D(cropping, name="crop")(x)
    images = layers.Activation("sigmoid", dtype="float32", name="images")(x)
    return keras.Model(z, images, name=name)


def dcgan_discriminator(image_shape=(28, 28, 1), base_filters=64, dropout=0.3, name="dcgan_discriminator"):
    """Builds D: images -> one logit per image, shape (N, 1)."""
    height, width, channels = check_network_input_shape("image_shape", image_shape)
    check_number("base_filters", base_filters, minimum=1, integer=True)
    check_number("dropout", dropout, minimum=0, maximum=0.999)
    inputs = keras.Input(shape=(height, width, channels), name="images")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(inputs)
    for i, filters in enumerate((base_filters, 2 * base_filters)):
        x = layers.Conv2D(filters, 5, strides=2, padding="same", name=f"conv{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"conv{i}_lrelu")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"conv{i}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1, name="fc_out")(x)
    logits = layers.Activation("linear", dtype="float32", name="logit")(x)
    return keras.Model(inputs, logits, name=name)


def list_dcgan_presets():
    return sorted(DCGAN_PRESETS)


def dcgan_preset(preset="mnist", image_shape=None, latent_dim=None, **overrides):
    """(generator, discriminator) for "mnist" (28x28x1, z of 30), "cifar10" or "tiny"."""
    check_choice("preset", preset, DCGAN_PRESETS)
    config = dict(DCGAN_PRESETS[preset])
    if image_shape is not None:
        config["image_shape"] = image_shape
    if latent_dim is not None:
        config["latent_dim"] = latent_dim
    base = overrides.pop("base_filters", config["base_filters"])
    generator = dcgan_generator(
        config["latent_dim"], config["image_shape"], base, name=f"dcgan_generator_{preset}", **overrides
    )
    discriminator = dcgan_discriminator(config["image_shape"], base, name=f"dcgan_discriminator_{preset}")
    return generator, discriminator
