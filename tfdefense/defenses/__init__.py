"""Defenses, grouped by role.

- `purifiers`: trainable image-to-image models in front of a classifier (pix2pix, APE-GAN, EGAN,
  the robust purifier, Defense-GAN, denoisers).
- `transforms`: fixed input transforms (bit depth, JPEG, TVM, ...) and the super-resolution net.
- `trainers`: training that makes the classifier itself robust (Madry / Goodfellow adversarial
  training, AdvGAN) and the paired adversarial data purifiers train on.
- `detectors`: MagNet.
- `DefendedClassifier` wraps any of them in front of a classifier.
- `base`: the `DefenseModel` / `Purifier` base classes and the contract a defense follows.

Every public name is importable from `tfdefense.defenses` directly, including the networks' builders
(from `tfdefense.models`) and the training tools the defenses use (`FusedAdam`, `EpsilonRamp`,
`ComputeBudget`, from `tfdefense.training`).
"""

from tfdefense.defenses.defended import DefendedClassifier
from tfdefense.defenses.detectors import *  # noqa: F401,F403
from tfdefense.defenses.detectors import __all__ as _detectors
from tfdefense.defenses.monitor import RobustAccuracyMonitor
from tfdefense.defenses.purifiers import *  # noqa: F401,F403
from tfdefense.defenses.purifiers import __all__ as _purifiers
from tfdefense.defenses.trainers import *  # noqa: F401,F403
from tfdefense.defenses.trainers import __all__ as _trainers
from tfdefense.defenses.transforms import *  # noqa: F401,F403
from tfdefense.defenses.transforms import __all__ as _transforms
from tfdefense.models import (
    advgan_generator,
    conv_autoencoder_network,
    defensegan_critic,
    defensegan_generator,
    dncnn_network,
    magnet_autoencoder,
    super_resolution_net,
)
from tfdefense.training import ComputeBudget, EpsilonRamp, FusedAdam, default_optimizer

# The role packages' names, then the builders and training tools re-exported from tfdefense.models and
# tfdefense.training (their one other public path).
__all__ = [
    "DefendedClassifier",
    "RobustAccuracyMonitor",
    "ComputeBudget",
    "EpsilonRamp",
    "FusedAdam",
    "advgan_generator",
    "conv_autoencoder_network",
    "default_optimizer",
    "defensegan_critic",
    "defensegan_generator",
    "dncnn_network",
    "magnet_autoencoder",
    "super_resolution_net",
]
__all__ += [*_detectors, *_purifiers, *_trainers, *_transforms]
__all__.sort()
