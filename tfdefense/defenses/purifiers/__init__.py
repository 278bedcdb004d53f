"""Purifiers: trainable image-to-image models placed in front of a classifier.

Their networks' builders live in `tfdefense.models` and `FusedAdam` in `tfdefense.training` (both are
importable from `tfdefense.defenses` too).
"""

from tfdefense.defenses.purifiers.apegan import APEGAN
from tfdefense.defenses.purifiers.defensegan import WGANGP, DefenseGAN
from tfdefense.defenses.purifiers.denoisers import Denoiser
from tfdefense.defenses.purifiers.egan import DCGAN, EGAN
from tfdefense.defenses.purifiers.pix2pix import Pix2PixDefense
from tfdefense.defenses.purifiers.robust import RobustPurifier

__all__ = [
    "APEGAN",
    "DCGAN",
    "DefenseGAN",
    "Denoiser",
    "EGAN",
    "Pix2PixDefense",
    "RobustPurifier",
    "WGANGP",
]
