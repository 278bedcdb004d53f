"""Detectors: models that flag adversarial inputs (MagNet's detector, with its reformer)."""

from tfdefense.defenses.detectors.magnet import MagNet

__all__ = ["MagNet"]
