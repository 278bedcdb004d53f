"""`DefendedClassifier(purifier, classifier)`: classifier(purifier(x)) as one Keras model.

This is what an adaptive (white-box) attacker targets: gradients flow through
the purifier into the classifier, so any attack of `tfdefense.attacks` can be
run on the whole pipeline. A stochastic purifier (`Pix2PixDefense` with
`inference_mode="train_mode"`) stays stochastic here (`stochastic` is True),
so evaluate it with EOT and report it.
"""

import keras

from tfdefense._validation import invalid_value


def _image_shape(model):
    try:
        shape = getattr(model, "input_shape", None)
    except (AttributeError, ValueError):  # a subclassed model not yet called
        return None
    if isinstance(shape, list):
        return None
    return None if shape is None else tuple(shape[1:])


def _output_image_shape(model, input_shape):
    """The static shape of `model`'s output images (None when the model does not say)."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        shape = None
    if shape is None and input_shape is not None:
        try:
            shape = model.compute_output_shape((None, *input_shape))
        except Exception:  # subclassed models without a static shape rule raise anything
            shape = None
    if not isinstance(shape, tuple) or len(shape) != 4:
        return None
    return tuple(shape[1:])


def _fits(shape, expected):
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected, strict=False)
    )


@keras.saving.register_keras_serializable(package="tfdefense")
class DefendedClassifier(keras.Model):
    """Logits of `classifier(purifier(x))`.

    Args:
      purifier: a Keras model mapping [0, 1] images to [0, 1] images of the
        same shape (a `Pix2PixDefense` or any generator; a static output shape
        that differs from its input or from the classifier's input is refused
        here, not when the model is first called).
      classifier: a Keras model returning logits on [0, 1] images.

    `training` is forwarded to both models (`training=True` trains/updates
    both, including the purifier's batch statistics; freeze one with
    `model.trainable = False` to keep it fixed).
    """

    def __init__(self, purifier, classifier, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(purifier, keras.Model):
            raise invalid_value("purifier", "a keras.Model mapping images to images", purifier)
        if not isinstance(classifier, keras.Model):
            raise invalid_value("classifier", "a keras.Model returning logits", classifier)
        purifier_in = getattr(purifier, "image_shape", None) or _image_shape(purifier)
        classifier_in = _image_shape(classifier)
        if purifier_in and classifier_in and tuple(purifier_in) != tuple(classifier_in):
            raise invalid_value(
                "classifier",
                f"a model taking the purifier's images of shape {tuple(purifier_in)}",
                f"a model taking shape {classifier_in}",
            )
        purifier_out = _output_image_shape(purifier, tuple(purifier_in) if purifier_in else None)
        if purifier_out and purifier_in and not _fits(purifier_out, tuple(purifier_in)):
            raise invalid_value(
                "purifier",
                f"a model returning images of its input shape {tuple(purifier_in)} (the classifier's input)",
                f"a model returning shape {purifier_out}",
            )
        if purifier_out and classifier_in and not _fits(purifier_out, classifier_in):
            raise invalid_value(
                "purifier",
                f"a model returning images of the classifier's input shape {classifier_in}",
                f"a model returning shape {purifier_out}",
            )
        self.purifier = purifier
        self.classifier = classifier
        self.image_shape = tuple(purifier_in) if purifier_in else classifier_in
        self.built = True

    @property
    def stochastic(self):
        """Whether the purifier is stochastic / batch-dependent at inference."""
        return bool(getattr(self.purifier, "stochastic", False))

    def call(self, inputs, training=None):
        return self.classifier(self.purifier(inputs, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return self.classifier.compute_output_shape(tuple(input_shape))

    def get_config(self):
        config = super().get_config()
        # The classifier first: when the purifier holds the same classifier
        # (consistency loss), keras' object sharing then marks both configs
        # and loading rebuilds one shared model.
        classifier = keras.saving.serialize_keras_object(self.classifier)
        purifier = keras.saving.serialize_keras_object(self.purifier)
        config.update({"purifier": purifier, "classifier": classifier})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        config["purifier"] = keras.saving.deserialize_keras_object(config["purifier"])
        return cls(**config)
