"""CIFAR-style ResNet (He et al. 2016, section 4.2): ResNet-20 = 3 stages x 3 basic blocks."""

import keras
from keras import layers

from tfdefense._validation import invalid_value
from tfdefense.models.registry import register_classifier


def _basic_block(x, filters, stride, weight_decay):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=regularizer)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer)(y)
    y = layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, kernel_regularizer=regularizer)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def cifar_resnet(input_shape=(32, 32, 3), num_classes=10, depth=20, base_filters=16, weight_decay=1e-4, name=None):
    """ResNet-{depth} for small images; depth = 6n + 2 (20, 32, 44, 56, 110)."""
    if depth < 8 or (depth - 2) % 6:
        raise invalid_value("depth", "6n + 2 (e.g. 20, 32, 56)", depth)
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(base_filters, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for stage in range(3):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, base_filters * 2**stage, stride, weight_decay)
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name or f"resnet{depth}")


@register_classifier("resnet20")
def resnet20(input_shape=(32, 32, 3), num_classes=10, **kwargs):
    return cifar_resnet(input_shape, num_classes, depth=20, **kwargs)


@register_classifier("resnet8")
def resnet8(input_shape=(32, 32, 3), num_classes=10, **kwargs):
    """A tiny ResNet for tests."""
    return cifar_resnet(input_shape, num_classes, depth=8, **kwargs)
