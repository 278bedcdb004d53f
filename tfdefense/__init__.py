"""tfdefense: GAN-based adversarial purification defenses for Keras 3 classifiers.

Subpackages: `data`, `models`, `attacks`, `defenses`, `training`,
`evaluation`, `export`. Images are float32 NHWC in [0, 1] everywhere.
"""

__version__ = "0.1.0"
