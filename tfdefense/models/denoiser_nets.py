"""Denoiser networks: DnCNN (Zhang et al. 2017) and a small convolutional autoencoder, with their presets."""

import keras
from keras import layers

from tfdefense._validation import check_number, invalid_value

DNCNN_PRESETS = {
    "paper": dict(depth=17, filters=64),  # Zhang et al. 2017 (sigma-specific model)
    "small": dict(depth=8, filters=32),
    "tiny": dict(depth=3, filters=8),
}
AUTOENCODER_PRESETS = {
    "default": dict(filters=(32, 64)),
    "tiny": dict(filters=(8, 16)),
}


def _shape(image_shape):
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise invalid_value("image_shape", "a tuple (height, width, channels)", image_shape)
    for s in image_shape:
        check_number("image_shape", s, minimum=1, integer=True)
    return tuple(int(s) for s in image_shape)


def dncnn_network(image_shape=(28, 28, 1), depth=17, filters=64, kernel_size=3, name="dncnn"):
    """DnCNN: (N, H, W, C) images in [0, 1] -> clip(x - R(x), 0, 1) (residual learning)."""
    image_shape = _shape(image_shape)
    check_number("depth", depth, minimum=2, integer=True)
    check_number("filters", filters, minimum=1, integer=True)
    check_number("kernel_size", kernel_size, minimum=1, integer=True)
    inputs = keras.Input(shape=image_shape, name="images")
    x = layers.Conv2D(filters, kernel_size, padding="same", name="conv0")(inputs)
    x = layers.ReLU(name="relu0")(x)
    for i in range(1, depth - 1):
        x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    noise = layers.Conv2D(image_shape[-1], kernel_size, padding="same", name="noise")(x)
    residual = layers.Subtract(name="residual")([inputs, noise])
    outputs = layers.ReLU(max_value=1.0, dtype="float32", name="clip")(residual)  # clip to [0, 1]
    return keras.Model(inputs, outputs, name=name)


def conv_autoencoder_network(image_shape=(28, 28, 1), filters=(32, 64), name="conv_autoencoder"):
    """Conv(f1, s2), Conv(f2, s2), ConvT(f2, s2), ConvT(f1, s2) (each + LeakyReLU 0.2), Conv(C), clip [0, 1].

    Sides must be multiples of 4 (28 and 32 are).
    """
    image_shape = _shape(image_shape)
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise invalid_value("image_shape", "height and width divisible by 4", image_shape)
    if not isinstance(filters, (tuple, list)) or len(filters) != 2:
        raise invalid_value("filters", "two filter counts (f1, f2)", filters)
    for f in filters:
        check_number("filters", f, minimum=1, integer=True)
    f1, f2 = (int(f) for f in filters)
    inputs = keras.Input(shape=image_shape, name="images")
    x = inputs
    for i, (kind, f) in enumerate(
        ((layers.Conv2D, f1), (layers.Conv2D, f2), (layers.Conv2DTranspose, f2), (layers.Conv2DTranspose, f1))
    ):
        name = f"enc{i}" if i < 2 else f"dec{i - 2}"
        x = kind(f, 3, strides=2, padding="same", name=name)(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_lrelu")(x)
    x = layers.Conv2D(image_shape[-1], 3, padding="same", name="out")(x)
    outputs = layers.ReLU(max_value=1.0, dtype="float32", name="clip")(x)  # clip to [0, 1]
    return keras.Model(inputs, outputs, name=name)
