"""A small DenseNet-BC for 32 px images (Huang et al. 2017)."""

import keras
from keras import layers

from tfdefense._validation import check_number, invalid_value
from tfdefense.models.registry import register_classifier


def _dense_layer(x, growth_rate):
    y = layers.ReLU()(layers.BatchNormalization()(x))
    y = layers.Conv2D(4 * growth_rate, 1, use_bias=False)(y)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False)(y)
    return layers.Concatenate()([x, y])


def _transition(x, compression):
    filters = int(x.shape[-1] * compression)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2D(filters, 1, use_bias=False)(x)
    return layers.AveragePooling2D(pool_size=2)(x)


def small_densenet(input_shape=(32, 32, 3), num_classes=10, depth=40, growth_rate=12, compression=0.5, name=None):
    """DenseNet-BC-{depth}: 3 dense blocks of (depth - 4) / 6 bottleneck layers."""
    if depth < 10 or (depth - 4) % 6:
        raise invalid_value("depth", "6n + 4 (e.g. 22, 40, 100)", depth)
    check_number("growth_rate", growth_rate, minimum=1, integer=True)
    check_number("compression", compression, minimum=0.1, maximum=1.0)
    layers_per_block = (depth - 4) // 6
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(2 * growth_rate, 3, padding="same", use_bias=False)(inputs)
    for block in range(3):
        for _ in range(layers_per_block):
            x = _dense_layer(x, growth_rate)
        if block < 2:
            x = _transition(x, compression)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name or f"densenet_bc{depth}")


@register_classifier("densenet40")
def densenet40(input_shape=(32, 32, 3), num_classes=10, **kwargs):
    return small_densenet(input_shape, num_classes, depth=40, **kwargs)


@register_classifier("densenet22")
def densenet22(input_shape=(32, 32, 3), num_classes=10, **kwargs):
    """A lighter DenseNet-BC for tests and CPU runs."""
    return small_densenet(input_shape, num_classes, depth=22, **kwargs)
