"""Purification defenses (keras.Model subclasses trained with `fit`)."""

from tfdefense.defenses.defended import DefendedClassifier
from tfdefense.defenses.pix2pix import Pix2PixDefense, default_optimizer

__all__ = ["DefendedClassifier", "Pix2PixDefense", "default_optimizer"]
