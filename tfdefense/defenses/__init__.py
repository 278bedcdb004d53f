"""Purification defenses (keras.Model subclasses trained with `fit`)."""

from tfdefense.defenses.defended import DefendedClassifier
from tfdefense.defenses.paired import PairedExamples, make_attack_pairs, split_by_class
from tfdefense.defenses.pix2pix import FusedAdam, Pix2PixDefense, default_optimizer

__all__ = [
    "DefendedClassifier",
    "FusedAdam",
    "PairedExamples",
    "Pix2PixDefense",
    "default_optimizer",
    "make_attack_pairs",
    "split_by_class",
]
