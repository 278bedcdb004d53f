"""MagNet's MNIST autoencoders (Meng and Chen 2017, Table 1 and the released code)."""

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number, invalid_value

STRUCTURES = ("I", "II")


def magnet_autoencoder(image_shape=(28, 28, 1), structure="I", filters=3, name=None):
    """MagNet's MNIST autoencoders (all activations sigmoid, 3x3 'same' convolutions).

    "I": Conv(f), AvgPool 2x2, Conv(f), Conv(f), UpSampling 2x2, Conv(f), Conv(C).
    "II": Conv(f), Conv(f), Conv(C). Structure I needs even sides.
    """
    check_choice("structure", structure, STRUCTURES)
    check_number("filters", filters, minimum=1, integer=True)
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise invalid_value("image_shape", "a tuple (height, width, channels)", image_shape)
    height, width, channels = (int(s) for s in image_shape)
    if structure == "I" and (height % 2 or width % 2):
        raise invalid_value("image_shape", "even height and width for structure 'I'", image_shape)

    def conv(n, label):
        return layers.Conv2D(n, 3, padding="same", activation="sigmoid", name=label)

    inputs = keras.Input(shape=(height, width, channels), name="images")
    if structure == "I":
        x = conv(filters, "conv0")(inputs)
        x = layers.AveragePooling2D(2, name="pool")(x)
        x = conv(filters, "conv1")(x)
        x = conv(filters, "conv2")(x)
        x = layers.UpSampling2D(2, name="upsample")(x)
        x = conv(filters, "conv3")(x)
    else:
        x = conv(filters, "conv0")(inputs)
        x = conv(filters, "conv1")(x)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="out")(x)
    return keras.Model(inputs, outputs, name=name or f"magnet_ae_{structure}")
