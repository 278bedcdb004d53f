"""tfdefense: GAN-based adversarial purification defenses for Keras 3 classifiers.

Subpackages: `data`, `models`, `attacks`, `defenses`, `training`,
`evaluation`, `export`. Images are float32 NHWC in [0, 1] everywhere.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # `tfdefense.evaluate_model` is imported on first use: `import tfdefense` stays free of TensorFlow.
    if name == "evaluate_model":
        from tfdefense.evaluation.user_model import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'tfdefense' has no attribute {name!r}")
