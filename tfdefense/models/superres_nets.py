"""The super-resolution network of the super-resolution defense (Mustafa et al. 2019): a small EDSR-style model."""

import keras
import tensorflow as tf
from keras import layers

from tfdefense._validation import check_number, invalid_value


@keras.saving.register_keras_serializable(package="tfdefense")
class PixelShuffle(layers.Layer):
    """Depth-to-space (sub-pixel convolution upsampling) by `scale`."""

    def __init__(self, scale=2, **kwargs):
        super().__init__(**kwargs)
        self.scale = check_number("scale", scale, minimum=1, integer=True)

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale
        return (n, None if h is None else h * s, None if w is None else w * s, None if c is None else c // (s * s))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _check_shape(image_shape):
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise invalid_value("image_shape", "a tuple (height, width, channels) of positive ints", image_shape) from None
    if len(shape) != 3 or min(shape) < 1:
        raise invalid_value("image_shape", "a tuple (height, width, channels) of positive ints", image_shape) from None
    return shape


def super_resolution_net(image_shape=(28, 28, 1), scale=2, filters=32, num_blocks=2, name="super_resolution"):
    """A small EDSR-style network mapping (H/scale, W/scale, C) images to (H, W, C) in [0, 1].

    Args:
      image_shape: the high-resolution (output) shape; H and W divisible by `scale`.
      scale: upscaling factor (2, 3 or 4).
      filters: channels of the feature maps.
      num_blocks: residual blocks (conv-ReLU-conv + skip).
    """
    h, w, c = _check_shape(image_shape)
    check_number("scale", scale, minimum=2, maximum=4, integer=True)
    check_number("filters", filters, minimum=1, integer=True)
    check_number("num_blocks", num_blocks, minimum=0, integer=True)
    if h % scale or w % scale:
        raise invalid_value("image_shape", f"height and width divisible by scale={scale}", image_shape)
    inputs = keras.Input((h // scale, w // scale, c), name="low_res")
    x = skip = layers.Conv2D(filters, 3, padding="same", name="head")(inputs)
    for i in range(num_blocks):
        y = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{i}_conv1")(x)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv2")(y)
        x = layers.Add(name=f"block{i}_add")([x, y])
    x = layers.Conv2D(filters, 3, padding="same", name="body_out")(x)
    x = layers.Add(name="global_skip")([x, skip])
    x = layers.Conv2D(c * scale * scale, 3, padding="same", name="upsample_conv")(x)
    x = PixelShuffle(scale, name="pixel_shuffle")(x)
    base = layers.UpSampling2D(scale, interpolation="bilinear", name="bilinear")(inputs)
    x = layers.Add(name="residual")([x, base])
    outputs = layers.ReLU(max_value=1.0, name="clip01")(x)
    return keras.Model(inputs, outputs, name=name)
