"""The EGAN encoder E: images -> latent codes of a fixed GAN generator.

Paper: Perez-Bravo et al., "Encoding Generative Adversarial Networks for
defense against image classification attacks". For 28x28 images:

    Conv 3x3 'same' to 100 channels + BN + lrelu
    10 x [Conv 3x3 'same', 100 channels + BN + lrelu]
    11 x [Conv 3x3 'valid', 100 channels + BN + lrelu]   (28 -> 26 -> ... -> 6)
    flatten (6 * 6 * 100 = 3600) - Dense(latent_dim = 30)

`shrink_blocks` defaults to the number of 'valid' blocks that brings the
smaller side down to 6 px (11 at 28 px, 13 at 32 px), so other sizes work.
Presets: "paper" (the above), "light" (32 channels, 2 'same' blocks; about
10x cheaper) and "tiny" (for tests).
"""

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.models.unet import check_network_input_shape

ENCODER_PRESETS = {
    "paper": dict(width=100, same_blocks=10),
    "light": dict(width=32, same_blocks=2),
    "tiny": dict(width=8, same_blocks=1, shrink_blocks=4),
}


def default_shrink_blocks(height, width, final_size=6):
    """'valid' 3x3 blocks (2 px each) that bring min(height, width) down to `final_size`."""
    return max(0, (min(height, width) - final_size) // 2)


def egan_encoder(
    input_shape=(28, 28, 1),
    latent_dim=30,
    width=100,
    same_blocks=10,
    shrink_blocks=None,
    bn_momentum=0.9,
    name="egan_encoder",
):
    """Builds E: (N, H, W, C) images in [0, 1] -> (N, latent_dim) codes.

    Args:
      width: channels of every conv (100 in the paper).
      same_blocks: 'same' conv blocks after the first conv (10 in the paper).
      shrink_blocks: 'valid' conv blocks, each 2 px smaller (default: down to 6 px).
    """
    height, width_px, channels = check_network_input_shape("input_shape", input_shape)
    check_number("latent_dim", latent_dim, minimum=1, integer=True)
    check_number("width", width, minimum=1, integer=True)
    check_number("same_blocks", same_blocks, minimum=0, integer=True)
    check_number("shrink_blocks", shrink_blocks, minimum=0, integer=True, allow_none=True)
    check_number("bn_momentum", bn_momentum, minimum=0, maximum=1)
    if shrink_blocks is None:
        shrink_blocks = default_shrink_blocks(height, width_px)
    if min(height, width_px) - 2 * shrink_blocks < 1:
        raise invalid_value(
            "shrink_blocks",
            f"at most {(min(height, width_px) - 1) // 2} for {height}x{width_px} images (2 px per block)",
            shrink_blocks,
        )

    def block(x, padding, tag):
        x = layers.Conv2D(width, 3, padding=padding, use_bias=False, name=f"{tag}_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{tag}_bn")(x)
        return layers.LeakyReLU(0.2, name=f"{tag}_lrelu")(x)

    inputs = keras.Input(shape=(height, width_px, channels), name="images")
    x = block(inputs, "same", "stem")
    for i in range(same_blocks):
        x = block(x, "same", f"same{i}")
    for i in range(shrink_blocks):
        x = block(x, "valid", f"shrink{i}")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(latent_dim, name="latent_dense")(x)
    latent = layers.Activation("linear", dtype="float32", name="latent")(x)
    return keras.Model(inputs, latent, name=name)


def list_encoder_presets():
    return sorted(ENCODER_PRESETS)


def egan_encoder_preset(preset="paper", input_shape=(28, 28, 1), latent_dim=30, **overrides):
    """The paper's encoder ("paper"), a cheaper "light" one, or "tiny" for tests."""
    check_choice("preset", preset, ENCODER_PRESETS)
    config = dict(ENCODER_PRESETS[preset])
    config.update(overrides)
    config.setdefault("name", f"egan_encoder_{preset}")
    return egan_encoder(input_shape=input_shape, latent_dim=latent_dim, **config)
