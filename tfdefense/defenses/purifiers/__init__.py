"""Purifiers: trainable image-to-image models placed in front of a classifier.

Their networks' builders live in `tfdefense.models` and `FusedAdam` in `tfdefense.training`; both are
re-exported here, as before.
"""

from tfdefense.defenses.purifiers.apegan import APEGAN
from tfdefense.defenses.purifiers.defensegan import WGANGP, DefenseGAN
from tfdefense.defenses.purifiers.denoisers import Denoiser
from tfdefense.defenses.purifiers.egan import DCGAN, EGAN
from tfdefense.defenses.purifiers.pix2pix import Pix2PixDefense
from tfdefense.defenses.purifiers.robust import RobustPurifier
from tfdefense.models.defensegan_nets import defensegan_critic, defensegan_generator
from tfdefense.models.denoiser_nets import conv_autoencoder_network, dncnn_network
from tfdefense.training.optimizers import FusedAdam, default_optimizer

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
