"""APE-GAN generator and discriminator (Shen et al., Table 6).

Paper: Shen, Ji, Wang, Li, Xu, "APE-GAN: Adversarial Perturbation Elimination
with GAN" (https://arxiv.org/abs/1707.05474). Conv / Deconv have stride 2 and
3x3 kernels ('same' padding), BN = batch normalization, lrelu = LeakyReLU(0.2),
C = image channels:

- MNIST / CIFAR-10 generator: Conv(64) - BN+lrelu - Conv(128) - BN+lrelu -
  Deconv(64) - BN+lrelu - Deconv(C) - Sigmoid.
- MNIST / CIFAR-10 discriminator: Conv(64)+lrelu - Conv(128) - BN+lrelu -
  Conv(256) - BN+lrelu - FC(1) + Sigmoid.
- ImageNet generator: Conv(64, 128, 256) each BN+lrelu - Deconv(256) - BN+lrelu -
  Deconv(128) - BN+lrelu - Deconv(C) - Sigmoid.
- ImageNet discriminator: Conv(64, 128, 256, 256) each BN+lrelu - FC(1024) -
  BN+lrelu - FC(1) + Sigmoid.

The discriminator built here returns the **logit** of the FC(1) layer; the
paper's sigmoid is applied inside the loss (binary cross-entropy from logits,
which is the same function, numerically stable). `D(x) = sigmoid(logit)`.

Images are [0, 1] in and out. Sides that are not a multiple of 2**depth are
zero-padded inside and cropped back, so the generator's output shape always
equals its input shape. Outputs are float32 under mixed-precision policies.
"""

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.models.unet import check_network_input_shape

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh")

GENERATOR_PRESETS = {
    "mnist": dict(down_filters=(64, 128), up_filters=(64,)),
    "cifar10": dict(down_filters=(64, 128), up_filters=(64,)),
    "imagenet": dict(down_filters=(64, 128, 256), up_filters=(256, 128)),
    # A few thousand parameters, for tests and smoke runs.
    "tiny": dict(down_filters=(16, 32), up_filters=(16,)),
}

DISCRIMINATOR_PRESETS = {
    "mnist": dict(filters=(64, 128, 256), first_norm=False, dense_units=()),
    "cifar10": dict(filters=(64, 128, 256), first_norm=False, dense_units=()),
    "imagenet": dict(filters=(64, 128, 256, 256), first_norm=True, dense_units=(1024,)),
    "tiny": dict(filters=(16, 32), first_norm=False, dense_units=()),
}


def _check_filters(argument, filters, allow_empty=False):
    try:
        values = tuple(filters)
    except TypeError:
        raise invalid_value(argument, "a tuple of positive ints", filters) from None
    if (not values and not allow_empty) or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in values):
        raise invalid_value(argument, "a tuple of positive ints" + ("" if allow_empty else " (at least one)"), filters)
    return values


def _pad_amounts(height, width, multiple):
    pad_h, pad_w = -height % multiple, -width % multiple
    return pad_h, pad_w, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))


def apegan_generator(
    input_shape=(28, 28, 1),
    down_filters=(64, 128),
    up_filters=(64,),
    output_activation="sigmoid",
    bn_momentum=0.9,
    name="apegan_generator",
):
    """Builds the APE-GAN generator as a functional `keras.Model`.

    `len(down_filters)` stride-2 3x3 convs (each BN + LeakyReLU(0.2)), then
    `len(up_filters)` stride-2 3x3 deconvs (each BN + LeakyReLU(0.2)), then a
    last stride-2 deconv to the image channels. The paper's MNIST/CIFAR
    generator is `down_filters=(64, 128), up_filters=(64,)`; ImageNet is
    `(64, 128, 256), (256, 128)`.

    Args:
      input_shape: (height, width, channels).
      output_activation: "sigmoid" ([0, 1] images, the paper) or "tanh"
        ([-1, 1], e.g. a bounded perturbation direction for AdvGAN).
      bn_momentum: BatchNormalization momentum (0.9 = PyTorch's 0.1).
    """
    height, width, channels = check_network_input_shape("input_shape", input_shape)
    down_filters = _check_filters("down_filters", down_filters)
    up_filters = _check_filters("up_filters", up_filters, allow_empty=True)
    if len(up_filters) + 1 != len(down_filters):
        raise invalid_value(
            "up_filters",
            f"{len(down_filters) - 1} value(s) (one deconv fewer than the {len(down_filters)} convs, "
            "the last deconv maps to the image channels)",
            up_filters,
        )
    check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
    check_number("bn_momentum", bn_momentum, minimum=0, maximum=1)
    depth = len(down_filters)
    pad_h, pad_w, padding = _pad_amounts(height, width, 2**depth)

    inputs = keras.Input(shape=(height, width, channels), name="images")
    x = inputs
    if pad_h or pad_w:
        x = layers.ZeroPadding2D(padding, name="pad")(x)
    for i, filters in enumerate(down_filters):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"conv{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"conv{i}_lrelu")(x)
    for i, filters in enumerate(up_filters):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False, name=f"deconv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"deconv{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"deconv{i}_lrelu")(x)
    x = layers.Conv2DTranspose(channels, 3, strides=2, padding="same", name="deconv_out")(x)
    if pad_h or pad_w:
        x = layers.Cropping2D(padding, name="crop")(x)
    outputs = layers.Activation(output_activation, dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def apegan_discriminator(
    input_shape=(28, 28, 1),
    filters=(64, 128, 256),
    first_norm=False,
    dense_units=(),
    bn_momentum=0.9,
    name="apegan_discriminator",
):
    """Builds the APE-GAN discriminator; returns one logit per image, shape (N, 1).

    Stride-2 3x3 convs of `filters` (BN + LeakyReLU(0.2); no BN on the first
    unless `first_norm`), flatten, optional hidden FC layers `dense_units`
    (BN + LeakyReLU), FC(1). The paper's sigmoid is applied in the loss.
    """
    height, width, channels = check_network_input_shape("input_shape", input_shape)
    filters = _check_filters("filters", filters)
    dense_units = _check_filters("dense_units", dense_units, allow_empty=True)
    if not isinstance(first_norm, bool):
        raise invalid_value("first_norm", "a bool", first_norm)
    check_number("bn_momentum", bn_momentum, minimum=0, maximum=1)

    inputs = keras.Input(shape=(height, width, channels), name="images")
    x = inputs
    for i, width_i in enumerate(filters):
        norm = first_norm or i > 0
        x = layers.Conv2D(width_i, 3, strides=2, padding="same", use_bias=not norm, name=f"conv{i}")(x)
        if norm:
            x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"conv{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"conv{i}_lrelu")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense_units):
        x = layers.Dense(units, use_bias=False, name=f"fc{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"fc{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"fc{i}_lrelu")(x)
    x = layers.Dense(1, name="fc_out")(x)
    logits = layers.Activation("linear", dtype="float32", name="logit")(x)
    return keras.Model(inputs, logits, name=name)


def list_apegan_presets():
    """Names accepted by `apegan_generator_preset` / `apegan_discriminator_preset`."""
    return sorted(GENERATOR_PRESETS)


def _preset_input_shape(preset, input_shape):
    if input_shape is not None:
        return input_shape
    return {"imagenet": (256, 256, 3), "cifar10": (32, 32, 3)}.get(preset, (28, 28, 1))


def apegan_generator_preset(preset="mnist", input_shape=None, **overrides):
    """The paper's generator for "mnist", "cifar10" or "imagenet", or the test-size "tiny".

    Default input shapes: 28x28x1 (mnist, tiny), 32x32x3 (cifar10), 256x256x3 (imagenet).
    """
    check_choice("preset", preset, GENERATOR_PRESETS)
    config = dict(GENERATOR_PRESETS[preset], input_shape=_preset_input_shape(preset, input_shape))
    config.update(overrides)
    config.setdefault("name", f"apegan_generator_{preset}")
    return apegan_generator(**config)


def apegan_discriminator_preset(preset="mnist", input_shape=None, **overrides):
    """The paper's discriminator for "mnist", "cifar10" or "imagenet", or the test-size "tiny"."""
    check_choice("preset", preset, DISCRIMINATOR_PRESETS)
    config = dict(DISCRIMINATOR_PRESETS[preset], input_shape=_preset_input_shape(preset, input_shape))
    config.update(overrides)
    config.setdefault("name", f"apegan_discriminator_{preset}")
    return apegan_discriminator(**config)
