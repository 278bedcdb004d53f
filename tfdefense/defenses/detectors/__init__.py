"""Detectors: models that flag adversarial inputs (MagNet's detector, with its reformer)."""

from tfdefense.defenses.detectors.magnet import MagNet
from tfdefense.models.magnet_nets import magnet_autoencoder

__all__ = ["MagNet", "magnet_autoencoder"]
