"""Purifiers: trainable image-to-image models placed in front of a classifier."""

from tfdefense.defenses.purifiers.apegan import APEGAN
from tfdefense.defenses.purifiers.defensegan import WGANGP, DefenseGAN, defensegan_critic, defensegan_generator
from tfdefense.defenses.purifiers.denoisers import Denoiser, conv_autoencoder_network, dncnn_network
from tfdefense.defenses.purifiers.egan import DCGAN, EGAN
from tfdefense.defenses.purifiers.pix2pix import FusedAdam, Pix2PixDefense, default_optimizer
from tfdefense.defenses.purifiers.robust import RobustPurifier

__all__ = [
    "APEGAN",
    "DCGAN",
    "DefenseGAN",
    "Denoiser",
    "EGAN",
    "FusedAdam",
    "Pix2PixDefense",
    "RobustPurifier",
    "WGANGP",
    "conv_autoencoder_network",
    "default_optimizer",
    "defensegan_critic",
    "defensegan_generator",
    "dncnn_network",
]
