"""The pix2pix U-Net generator (Isola et al. 2017, https://arxiv.org/abs/1611.07004).

Encoder: `depth` blocks Conv 4x4 stride 2 -> BatchNorm -> LeakyReLU(0.2) (no
BatchNorm on the first and the innermost block, as in the paper's code).
Decoder: ConvTranspose 4x4 stride 2 -> BatchNorm -> Dropout(0.5) on the first
`n_dropout` blocks -> ReLU, and the skip connection concatenates decoder block
i with encoder block n-i. A last ConvTranspose maps back to the image channels.

Images are [0, 1] in and [0, 1] out (the project's contract): the input is
mapped to [-1, 1] inside, and the output is a float32 sigmoid (or a tanh
mapped to [0, 1]), so the model is safe under the `mixed_bfloat16` /
`mixed_float16` policies. Inputs whose sides are not a multiple of 2**depth
(e.g. 28 px MNIST) are zero-padded inside and cropped back, so the generator's
input and output shapes always match.
"""

import math

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number, invalid_value

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh")

GENERATOR_PRESETS = {
    # The paper's 256x256 generator: 8 down blocks 64,128,256,512,512,512,512,512.
    "pix2pix_256": dict(input_shape=(256, 256, 3), base_filters=64, depth=8, max_filters=512),
    # 32x32 (CIFAR-10) / 28x28 (MNIST, padded to 32): 5 down blocks 64..512, 1x1 bottleneck.
    "small_32": dict(input_shape=(32, 32, 3), base_filters=64, depth=5, max_filters=512),
    # A few thousand parameters per block, for tests and smoke runs.
    "tiny": dict(input_shape=(28, 28, 1), base_filters=8, depth=None, max_filters=32),
}


def check_network_input_shape(argument, input_shape, rank=3):
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise invalid_value(
            argument, f"a tuple of {rank} positive ints (height, width, channels)", input_shape
        ) from None
    if len(shape) != rank or any(s < 1 for s in shape):
        raise invalid_value(
            argument, f"a tuple of {rank} positive ints (height, width, channels)", input_shape
        ) from None
    return shape


def default_depth(height, width):
    """Number of stride-2 blocks that takes the (padded) smaller side down to 1 px."""
    return max(1, math.ceil(math.log2(min(height, width))))


def unet_filters(base_filters, depth, max_filters):
    """Encoder block widths: base * 2**i capped at max_filters."""
    return [min(base_filters * 2**i, max_filters) for i in range(depth)]


def unet_generator(
    input_shape,
    base_filters=64,
    depth=None,
    max_filters=None,
    out_channels=None,
    dropout=0.5,
    n_dropout=3,
    output_activation="sigmoid",
    bn_momentum=0.9,
    name="unet_generator",
):
    """Builds the pix2pix U-Net as a functional `keras.Model` ([0, 1] -> [0, 1]).

    Args:
      input_shape: (height, width, channels) of the images.
      base_filters: width of the first encoder block (64 in the paper).
      depth: number of encoder (and decoder) blocks. None picks the depth that
        brings the smaller side down to 1 px (8 at 256 px, 5 at 28/32 px).
        Sides are zero-padded inside to a multiple of 2**depth.
      max_filters: cap on the block width (default 8 * base_filters, 512 in the paper).
      out_channels: output channels (default: the input channels).
      dropout: dropout rate of the first `n_dropout` decoder blocks (0.5 in the paper).
      n_dropout: how many decoder blocks (from the bottleneck) have dropout.
      output_activation: "sigmoid" or "tanh" (mapped to [0, 1]); both float32.
      bn_momentum: BatchNormalization momentum (0.9 = PyTorch's 0.1).
    """
    input_shape = check_network_input_shape("input_shape", input_shape)
    height, width, channels = input_shape
    check_number("base_filters", base_filters, minimum=1, integer=True)
    check_number("depth", depth, minimum=1, integer=True, allow_none=True)
    check_number("max_filters", max_filters, minimum=1, integer=True, allow_none=True)
    check_number("out_channels", out_channels, minimum=1, integer=True, allow_none=True)
    check_number("dropout", dropout, minimum=0, maximum=0.999)
    check_number("n_dropout", n_dropout, minimum=0, integer=True)
    check_number("bn_momentum", bn_momentum, minimum=0, maximum=1)
    check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
    depth = depth or default_depth(height, width)
    max_filters = max_filters or 8 * base_filters
    out_channels = out_channels or channels
    multiple = 2**depth
    pad_h, pad_w = -height % multiple, -width % multiple
    padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    init = keras.initializers.RandomNormal(0.0, 0.02)
    filters = unet_filters(base_filters, depth, max_filters)

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if pad_h or pad_w:
        x = layers.ZeroPadding2D(padding, name="pad")(x)
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(x)

    skips = []
    for i, width_i in enumerate(filters):
        norm = 0 < i < depth - 1
        x = layers.Conv2D(
            width_i, 4, strides=2, padding="same", use_bias=not norm, kernel_initializer=init, name=f"down{i}_conv"
        )(x)
        if norm:
            x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"down{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"down{i}_lrelu")(x)
        skips.append(x)

    # Decoder block j sits at encoder level depth-2-j and is concatenated with it.
    for j, level in enumerate(range(depth - 2, -1, -1)):
        x = layers.Conv2DTranspose(
            filters[level], 4, strides=2, padding="same", use_bias=False, kernel_initializer=init, name=f"up{j}_conv"
        )(x)
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"up{j}_bn")(x)
        if j < n_dropout and dropout > 0:
            x = layers.Dropout(dropout, name=f"up{j}_dropout")(x)
        x = layers.ReLU(name=f"up{j}_relu")(x)
        x = layers.Concatenate(name=f"up{j}_skip")([x, skips[level]])

    x = layers.Conv2DTranspose(out_channels, 4, strides=2, padding="same", kernel_initializer=init, name="out_conv")(x)
    if pad_h or pad_w:
        x = layers.Cropping2D(padding, name="crop")(x)
    if output_activation == "sigmoid":
        outputs = layers.Activation("sigmoid", dtype="float32", name="purified")(x)
    else:
        x = layers.Activation("tanh", dtype="float32", name="tanh")(x)
        outputs = layers.Rescaling(0.5, offset=0.5, dtype="float32", name="purified")(x)
    return keras.Model(inputs, outputs, name=name)


def list_generator_presets():
    """Names accepted by `unet_generator_preset`."""
    return sorted(GENERATOR_PRESETS)


def unet_generator_preset(preset, input_shape=None, **overrides):
    """Builds a named U-Net: "pix2pix_256", "small_32" or "tiny".

    `input_shape` and any `unet_generator` argument override the preset
    (e.g. `unet_generator_preset("small_32", input_shape=(28, 28, 1))`).
    """
    check_choice("preset", preset, GENERATOR_PRESETS)
    config = dict(GENERATOR_PRESETS[preset])
    if input_shape is not None:
        config["input_shape"] = input_shape
    config.update(overrides)
    config.setdefault("name", f"unet_{preset}")
    return unet_generator(**config)
