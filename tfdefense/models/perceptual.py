"""Frozen feature extractors for perceptual (feature-matching) losses.

`perceptual_feature_extractor` returns a functional `keras.Model` mapping [0, 1]
images to a list of feature maps phi_k. The perceptual loss of the versatile
defense is sum_k mean |phi_k(G(x_adv)) - phi_k(x_clean)| over these layers.

Backbones: "vgg19" / "vgg16" (keras.applications, ImageNet "caffe"
preprocessing inside, grayscale tiled to RGB, images smaller than 32 px resized
up to 32 so every block has at least 1 px) or any functional Keras model plus
a list of its layer names (for example the target classifier).
"""

import keras
from keras import layers as keras_layers

from tfdefense._validation import check_choice, invalid_value
from tfdefense.models.applications import ImageNetPreprocessing, check_weights
from tfdefense.models.unet import check_network_input_shape

VGG19_BLOCK_CONV2 = ("block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2")
VGG19_BLOCK_POOL = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool")
VGG16_BLOCK_CONV2 = VGG19_BLOCK_CONV2

_VGG = {
    "vgg19": (keras.applications.VGG19, VGG19_BLOCK_CONV2),
    "vgg16": (keras.applications.VGG16, VGG16_BLOCK_CONV2),
}
MIN_VGG_SIZE = 32


def _check_layers(layers, model):
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise invalid_value("layers", "a non-empty list of layer names", layers)
    names = [layer.name for layer in model.layers]
    missing = [name for name in layers if name not in names]
    if missing:
        raise invalid_value("layers", f"names of layers of model {model.name!r} (one of {names})", list(layers))
    return tuple(layers)


def perceptual_feature_extractor(
    backbone="vgg19", layers=None, weights="imagenet", input_shape=(224, 224, 3), name=None
):
    """A frozen model mapping [0, 1] images to a list of feature maps.

    Args:
      backbone: "vgg19", "vgg16", or a functional `keras.Model` whose layers
        are named in `layers` (its weights are shared, not copied, and the
        model is left trainable: the defenses never update it).
      layers: layer names; default for VGG the second conv of each block
        ("block1_conv2" ... "block5_conv2"). Required for a custom model.
      weights: VGG weights: "imagenet" (keras' download, needs internet the
        first time), the path of a weights file, or None (random init, for
        tests and benchmarks).
      input_shape: (height, width, channels) of the images; 1-channel images
        are tiled to RGB for VGG. Ignored for a custom model (its own input).
    """
    if isinstance(backbone, keras.Model):
        if weights not in (None, "imagenet"):
            raise invalid_value("weights", "None when `backbone` is a model (its own weights are used)", weights)
        if not hasattr(backbone, "inputs") or backbone.inputs is None:
            raise invalid_value("backbone", "a functional keras.Model (with symbolic inputs)", backbone)
        layers = _check_layers(layers, backbone)
        outputs = [backbone.get_layer(n).output for n in layers]
        inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
        return keras.Model(inputs, outputs, name=name or f"{backbone.name}_features")

    check_choice("backbone", backbone, tuple(_VGG))
    weights = check_weights(weights)
    height, width, channels = check_network_input_shape("input_shape", input_shape)
    if channels not in (1, 3):
        raise invalid_value("input_shape", "1 (grayscale) or 3 (RGB) channels", input_shape)
    build, default_layers = _VGG[backbone]
    inner_h, inner_w = max(height, MIN_VGG_SIZE), max(width, MIN_VGG_SIZE)
    vgg = build(include_top=False, weights=weights, input_shape=(inner_h, inner_w, 3))
    layers = _check_layers(default_layers if layers is None else layers, vgg)
    features = keras.Model(vgg.inputs[0], [vgg.get_layer(n).output for n in layers], name=f"{backbone}_features")

    inputs = keras.Input(shape=(height, width, channels), name="images")
    x = inputs
    if channels == 1:
        x = keras_layers.Concatenate(name="to_rgb")([x, x, x])
    if (inner_h, inner_w) != (height, width):
        x = keras_layers.Resizing(inner_h, inner_w, interpolation="bilinear", name="resize")(x)
    x = ImageNetPreprocessing("caffe", name="preprocessing")(x)
    outputs = features(x)
    model = keras.Model(inputs, list(outputs), name=name or f"{backbone}_perceptual")
    model.trainable = False
    return model
