"""Purification defenses (keras.Model subclasses trained with `fit`)."""

from tfdefense.defenses.advgan import AdvGAN, advgan_generator, advgan_perturb
from tfdefense.defenses.apegan import APEGAN
from tfdefense.defenses.defended import DefendedClassifier
from tfdefense.defenses.egan import DCGAN, EGAN
from tfdefense.defenses.paired import PairedExamples, make_attack_pairs, split_by_class
from tfdefense.defenses.pix2pix import FusedAdam, Pix2PixDefense, default_optimizer
from tfdefense.defenses.robust import RobustPurifier
from tfdefense.defenses.training_attack import ComputeBudget, EpsilonRamp

__all__ = [
    "ComputeBudget",
    "EpsilonRamp",
    "RobustPurifier",
    "APEGAN",
    "AdvGAN",
    "DCGAN",
    "EGAN",
    "advgan_generator",
    "advgan_perturb",
    "DefendedClassifier",
    "FusedAdam",
    "PairedExamples",
    "Pix2PixDefense",
    "default_optimizer",
    "make_attack_pairs",
    "split_by_class",
]

# Input-transformation baselines (issue 7): image-to-image keras.Models, BPDA-ready, registry.
from tfdefense.defenses.transforms import (  # noqa: E402
    BitDepthReduction,
    InputTransform,
    JpegCompression,
    MedianSmoothing,
    PixelDeflection,
    RandomResizePad,
    TotalVarianceMinimization,
    WaveletDenoise,
    get_transform,
    list_transforms,
    register_transform,
)
from tfdefense.defenses.superres import SuperResolutionWavelet, super_resolution_net, train_super_resolution  # noqa: E402

__all__ += [
    "BitDepthReduction",
    "InputTransform",
    "JpegCompression",
    "MedianSmoothing",
    "PixelDeflection",
    "RandomResizePad",
    "SuperResolutionWavelet",
    "TotalVarianceMinimization",
    "WaveletDenoise",
    "get_transform",
    "list_transforms",
    "register_transform",
    "super_resolution_net",
    "train_super_resolution",
]

# Learned baselines (issue 7): adversarial training, MagNet, Defense-GAN, DnCNN / autoencoder.
from tfdefense.defenses.adversarial_training import AdversarialTrainer, adversarial_training  # noqa: E402
from tfdefense.defenses.defensegan import WGANGP, DefenseGAN, defensegan_critic, defensegan_generator  # noqa: E402
from tfdefense.defenses.denoisers import Denoiser, conv_autoencoder_network, dncnn_network  # noqa: E402
from tfdefense.defenses.magnet import MagNet, magnet_autoencoder  # noqa: E402

__all__ += [
    "AdversarialTrainer",
    "DefenseGAN",
    "Denoiser",
    "MagNet",
    "WGANGP",
    "adversarial_training",
    "conv_autoencoder_network",
    "defensegan_critic",
    "defensegan_generator",
    "dncnn_network",
    "magnet_autoencoder",
]
