"""The APE-GAN paper's target models (its Table 5), returning logits.

Conv1 = stride 1, Conv2 = stride 2, (filters, kh, kw). A, B, C are the MNIST
models of Samangouei et al. / Carlini-Wagner; D is the CIFAR-10 model.
Padding follows the cleverhans / Defense-GAN reference code: C is
Conv2 'same', Conv2 'valid', Conv1 'valid' (28 -> 14 -> 5 -> 1); A, B and D
use 'valid' 3x3 convs.
"""

import keras
from keras import layers

from tfdefense.models.registry import register_classifier


def _input(input_shape, name):
    return keras.Input(shape=input_shape, name=f"{name}_images")


@register_classifier("A", "apegan_a")
def model_a(input_shape=(28, 28, 1), num_classes=10, name="model_a"):
    """Conv(32,3)+ReLU, Conv(64,3)+ReLU, MaxPool, Dropout(.25), FC(128)+ReLU, Dropout(.5), FC(10)."""
    inputs = _input(input_shape, name)
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)


@register_classifier("B", "apegan_b")
def model_b(input_shape=(28, 28, 1), num_classes=10, name="model_b"):
    """Conv(32,3)x2, MaxPool, Conv(64,3)x2, MaxPool, FC(200)x2, FC(10); ReLU throughout."""
    inputs = _input(input_shape, name)
    x = layers.Conv2D(32, 3, activation="relu")(inputs)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(200, activation="relu")(x)
    x = layers.Dense(200, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)


@register_classifier("C", "apegan_c")
def model_c(input_shape=(28, 28, 1), num_classes=10, name="model_c"):
    """Conv2(64,8,8)+ReLU, Conv2(128,6,6)+ReLU, Conv1(128,5,5)+ReLU, FC(10)."""
    inputs = _input(input_shape, name)
    x = layers.Conv2D(64, 8, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(128, 6, strides=2, padding="valid", activation="relu")(x)
    x = layers.Conv2D(128, 5, strides=1, padding="valid", activation="relu")(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)


@register_classifier("D", "apegan_d")
def model_d(input_shape=(32, 32, 3), num_classes=10, name="model_d"):
    """Conv(64,3)x2, MaxPool, Conv(128,3)x2, MaxPool, FC(256)x2, FC(10); ReLU throughout."""
    inputs = _input(input_shape, name)
    x = layers.Conv2D(64, 3, activation="relu")(inputs)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.Conv2D(128, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(256, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)
