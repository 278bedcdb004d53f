"""Trainers: models whose training makes the classifier itself robust, and the paired data purifiers train on."""

from tfdefense.defenses.trainers.adversarial_training import AdversarialTrainer, adversarial_training
from tfdefense.defenses.trainers.advgan import AdvGAN, advgan_perturb
from tfdefense.defenses.trainers.paired import PairedExamples, make_attack_pairs, split_by_class

__all__ = [
    "AdvGAN",
    "AdversarialTrainer",
    "PairedExamples",
    "adversarial_training",
    "advgan_perturb",
    "make_attack_pairs",
    "split_by_class",
]
