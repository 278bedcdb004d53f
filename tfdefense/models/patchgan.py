"""The pix2pix conditional PatchGAN discriminator (Isola et al. 2017).

The model takes `[input_image, candidate_image]` (both [0, 1]), concatenates
them along channels and returns one logit per patch, shape (N, h, w, 1). The
loss averages the patch responses. With `n_layers` stride-2 blocks the patch
(receptive field) is 16 px (n_layers=1), 34 px (2) or 70 px (3, the paper's
70x70 PatchGAN for 256 px images): C64 (no norm) - C128 - C256 stride 2, then
C512 stride 1 and a 1-channel conv, 4x4 kernels, LeakyReLU(0.2).
The logits are float32 under mixed-precision policies.
"""

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number
from tfdefense.models.unet import check_network_input_shape

DISCRIMINATOR_PRESETS = {
    # The paper's 70x70 PatchGAN on 256x256 images (30x30 patch logits).
    "pix2pix_70": dict(input_shape=(256, 256, 3), base_filters=64, n_layers=3),
    # 16x16 patches for 28/32 px images (14x14 logits at 32 px, 12x12 at 28 px).
    "small_32": dict(input_shape=(32, 32, 3), base_filters=64, n_layers=1),
    "tiny": dict(input_shape=(28, 28, 1), base_filters=8, n_layers=1),
}


def receptive_field(n_layers):
    """Patch size seen by one output logit."""
    field = 1
    for stride in [1, 1] + [2] * n_layers:  # walk back from the output
        field = (field - 1) * stride + 4
    return field


def patchgan_discriminator(
    input_shape,
    base_filters=64,
    n_layers=3,
    max_filters=512,
    target_channels=None,
    bn_momentum=0.9,
    name="patchgan_discriminator",
):
    """Builds a conditional PatchGAN as a functional `keras.Model`.

    Args:
      input_shape: (height, width, channels) of the conditioning (adversarial) image.
      base_filters: width of the first block (64 in the paper).
      n_layers: stride-2 blocks; 3 gives the 70x70 PatchGAN.
      max_filters: cap on the block width.
      target_channels: channels of the candidate image (default: same as the input).
    """
    input_shape = check_network_input_shape("input_shape", input_shape)
    check_number("base_filters", base_filters, minimum=1, integer=True)
    check_number("n_layers", n_layers, minimum=0, integer=True)
    check_number("max_filters", max_filters, minimum=1, integer=True)
    check_number("target_channels", target_channels, minimum=1, integer=True, allow_none=True)
    height, width, channels = input_shape
    target_shape = (height, width, target_channels or channels)
    init = keras.initializers.RandomNormal(0.0, 0.02)

    image = keras.Input(shape=input_shape, name="input_image")
    candidate = keras.Input(shape=target_shape, name="target_image")
    x = layers.Concatenate(name="pair")([image, candidate])
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(x)
    for i in range(n_layers):
        norm = i > 0
        x = layers.Conv2D(
            min(base_filters * 2**i, max_filters),
            4,
            strides=2,
            padding="same",
            use_bias=not norm,
            kernel_initializer=init,
            name=f"down{i}_conv",
        )(x)
        if norm:
            x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name=f"down{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"down{i}_lrelu")(x)
    x = layers.ZeroPadding2D(1, name="pad1")(x)
    x = layers.Conv2D(
        min(base_filters * 2**n_layers, max_filters), 4, use_bias=False, kernel_initializer=init, name="conv_s1"
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5, name="conv_s1_bn")(x)
    x = layers.LeakyReLU(0.2, name="conv_s1_lrelu")(x)
    x = layers.ZeroPadding2D(1, name="pad2")(x)
    x = layers.Conv2D(1, 4, kernel_initializer=init, name="patch_conv")(x)
    logits = layers.Activation("linear", dtype="float32", name="patch_logits")(x)
    return keras.Model([image, candidate], logits, name=name)


def list_discriminator_presets():
    """Names accepted by `patchgan_preset`."""
    return sorted(DISCRIMINATOR_PRESETS)


def patchgan_preset(preset, input_shape=None, **overrides):
    """Builds a named PatchGAN: "pix2pix_70" (256 px), "small_32" or "tiny"."""
    check_choice("preset", preset, DISCRIMINATOR_PRESETS)
    config = dict(DISCRIMINATOR_PRESETS[preset])
    if input_shape is not None:
        config["input_shape"] = input_shape
    config.update(overrides)
    config.setdefault("name", f"patchgan_{preset}")
    return patchgan_discriminator(**config)
