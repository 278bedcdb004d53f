"""keras.applications classifiers that take [0, 1] images, preprocessing inside.

`weights=` is "imagenet" (needs internet the first time), a local weights file
(`.h5` / `.weights.h5` as written by keras), or None (random init). The models
return logits (`classifier_activation=None`).
"""

import os

import keras
from keras import layers, ops

from tfdefense._validation import check_choice, invalid_value
from tfdefense.models.registry import register_classifier

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tfdefense")
class ImageNetPreprocessing(layers.Layer):
    """Maps [0, 1] RGB images to what a keras.applications backbone expects.

    mode "tf": to [-1, 1] (Inception-v3). mode "caffe": to 0-255 BGR minus the
    ImageNet channel means (ResNet50, VGG19). Differentiable, so attacks and
    purifiers see the [0, 1] contract.
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, ("tf", "caffe"))

    def call(self, inputs):
        if self.mode == "tf":
            return inputs * 2.0 - 1.0
        bgr = ops.flip(inputs * 255.0, axis=-1)
        return bgr - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype=bgr.dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


_BACKBONES = {
    "inception_v3": (keras.applications.InceptionV3, "tf", (299, 299, 3)),
    "resnet50": (keras.applications.ResNet50, "caffe", (224, 224, 3)),
    "vgg19": (keras.applications.VGG19, "caffe", (224, 224, 3)),
}


def check_weights(weights):
    """Validates a `weights=` value: None, "imagenet" or an existing file."""
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return os.fspath(weights)
    raise invalid_value("weights", '"imagenet", None, or the path of an existing weights file', weights)


def imagenet_classifier(backbone, input_shape=None, num_classes=1000, weights=None, name=None):
    """A keras.applications `backbone` with [0, 1] input and logits output."""
    check_choice("backbone", backbone, tuple(_BACKBONES))
    build, mode, default_shape = _BACKBONES[backbone]
    weights = check_weights(weights)
    input_shape = tuple(input_shape or default_shape)
    if weights == "imagenet" and (num_classes != 1000 or input_shape != default_shape):
        raise invalid_value(
            "weights",
            f"'imagenet' only with num_classes=1000 and input_shape={default_shape} for {backbone}",
            f"{weights!r} with num_classes={num_classes}, input_shape={input_shape}",
        )
    inputs = keras.Input(shape=input_shape, name="images")
    x = ImageNetPreprocessing(mode, name="preprocessing")(inputs)
    base = build(
        include_top=True,
        weights=weights,
        input_shape=input_shape,
        classes=num_classes,
        classifier_activation=None,
    )
    return keras.Model(inputs, base(x), name=name or backbone)


@register_classifier("inception_v3")
def inception_v3(input_shape=(299, 299, 3), num_classes=1000, weights=None, **kwargs):
    return imagenet_classifier("inception_v3", input_shape, num_classes, weights, **kwargs)


@register_classifier("resnet50")
def resnet50(input_shape=(224, 224, 3), num_classes=1000, weights=None, **kwargs):
    return imagenet_classifier("resnet50", input_shape, num_classes, weights, **kwargs)


@register_classifier("vgg19")
def vgg19(input_shape=(224, 224, 3), num_classes=1000, weights=None, **kwargs):
    return imagenet_classifier("vgg19", input_shape, num_classes, weights, **kwargs)
