"""AdvGAN: a perturbation generator and generative adversarial training.

Paper: Xia and Liu, "Adversarial Examples Generation and Defense Based on
Generative Adversarial Network" (after Xiao et al., "Generating Adversarial
Examples with Adversarial Networks", https://arxiv.org/abs/1801.02610). A
generator network G maps an image to a perturbation direction in [-1, 1]
(tanh); the adversarial image is

    x_adv = clip(x + eps * G(x), 0, 1)          (||x_adv - x||_inf <= eps)

in one forward pass. G plays against the classifier D:

    G: g_loss = -CE(D(x_adv), y)                       (maximise D's cross-entropy)
    D: d_loss = clean_weight * CE(D(x), y) + (1 - clean_weight) * CE(D(x_adv), y)

one G update then one D update per batch (`train_classifier=False` trains G
only, against a fixed classifier: the attack). `y` is the label when the data
yields `(x, y)`, else the classifier's prediction on x (no label leak).

Uses:
- attack: `get_attack("advgan", generator=advgan.generator, eps=0.3)(model, x)`
  (`tfdefense.attacks.advgan_attack`), or `advgan.perturb(x)`;
- defense: `advgan.classifier` after `fit` is the adversarially trained
  classifier; `advgan(x)` returns its logits (deterministic, inference mode),
  so `advgan` itself is a classifier usable by every attack and metric.

`eps` and `clean_weight` live in non-trainable variables that callbacks may
`assign` during `fit`. Losses are averaged over the global batch under
tf.distribute.

Limits: training against one generator family gives robustness against that
family and one-step attacks of similar strength; it is not a certified or
iterative-attack-proof defense (evaluate with PGD on `advgan.classifier`).
"""

import keras
import numpy as np

from tfdefense._validation import (
    check_images,
    check_labels,
    check_not_empty,
    check_number,
    check_validation_data,
    dataset_range_checked,
    invalid_value,
    output_classes,
)
from tfdefense.defenses.base import (
    DefenseModel,
    OptimizerSlot,
    check_dataset_images,
    check_image_array,
    check_image_input,
    check_model,
    check_symbolic_images,
    dataset_fit_defaults,
    image_to_image_shape,
)

METRIC_NAMES = ("g_loss", "d_loss", "clean_acc", "adv_acc")


def default_generator_optimizer():
    """Adam(1e-3)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


def default_classifier_optimizer():
    """Adam(1e-3)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


def _unpack(data):
    if isinstance(data, dict):
        return data.get("x"), data.get("y")
    data = tuple(data) if isinstance(data, (list, tuple)) else (data,)
    x = data[0]
    y = data[1] if len(data) > 1 else None
    return x, y


@keras.saving.register_keras_serializable(package="tfdefense")
class AdvGAN(DefenseModel):
    """Perturbation generator G trained against classifier D, optionally alternating with D.

    Args:
      generator: `keras.Model` images -> same-shape perturbation directions in
        [-1, 1] (`advgan_generator`).
      classifier: the classifier D, a `keras.Model` returning logits.
      eps: Linf bound of the perturbation, in [0, 1].
      train_classifier: alternate G updates with D updates (generative
        adversarial training); False trains G only (an attack on a fixed D).
      clean_weight: weight of the clean-image cross-entropy in D's loss.

    `compile(g_optimizer=None, d_optimizer=None)`: Adam(1e-3) each by default
    (`d_optimizer` trains the classifier). `fit` takes `(x, y)` labelled images
    (arrays or a dataset); `y=None` uses the classifier's predictions.
    """

    optimizer_slots = (
        OptimizerSlot("g_optimizer", "generator", "g_loss", default_generator_optimizer),
        OptimizerSlot("d_optimizer", "classifier", "d_loss", default_classifier_optimizer),
    )
    metric_names = METRIC_NAMES
    nested_models = ("generator", "classifier")

    def __init__(self, generator, classifier, eps=0.3, train_classifier=True, clean_weight=0.5, **kwargs):
        kwargs.setdefault("name", "advgan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("classifier", classifier)
        image_shape = image_to_image_shape(generator, "generator")
        check_image_input(classifier, "classifier", image_shape)
        check_number("eps", eps, minimum=0, maximum=1)
        check_number("clean_weight", clean_weight, minimum=0, maximum=1)
        if not isinstance(train_classifier, bool):
            raise invalid_value("train_classifier", "a bool", train_classifier)
        self.generator = generator
        self.classifier = classifier
        self.image_shape = image_shape
        self.train_classifier = train_classifier
        self.add_loss_weights({"eps": eps, "clean_weight": clean_weight})
        self._perturb_function = None
        self.built = True

    # ------------------------------------------------------------------ inference

    def call(self, inputs, training=None):
        """Logits of the classifier (the adversarially trained one after `fit`)."""
        check_symbolic_images(inputs, self.image_shape)
        return self.classifier(inputs, training=bool(training))

    def compute_output_shape(self, input_shape):
        return self.classifier.compute_output_shape(tuple(input_shape))

    def _adversarial(self, x, training=False, eps=None):
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        eps = tf.cast(self.eps if eps is None else eps, tf.float32)
        delta = eps * tf.cast(self.generator(x, training=training), tf.float32)
        return tf.clip_by_value(x + delta, 0.0, 1.0)

    def perturb(self, x, eps=None, batch_size=256):
        """clip(x + eps * G(x), 0, 1) for a numpy batch (checked); `eps` defaults to `self.eps`."""
        import tensorflow as tf

        x = check_image_array(x, self.image_shape)
        check_number("eps", eps, minimum=0, maximum=1, allow_none=True)
        eps_value = float(keras.ops.convert_to_numpy(self.eps)) if eps is None else float(eps)
        if self._perturb_function is None:
            self._perturb_function = tf.function(
                lambda batch, e: self._adversarial(batch, training=False, eps=e), reduce_retracing=True, autograph=False
            )
        outputs = [
            np.asarray(self._perturb_function(tf.constant(x[i : i + batch_size]), tf.constant(eps_value)))
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros_like(x)

    # ------------------------------------------------------------------ training

    def _targets(self, x, y):
        import tensorflow as tf

        if y is not None:
            return tf.reshape(tf.cast(y, tf.int64), [-1])
        return tf.stop_gradient(tf.argmax(self.classifier(x, training=False), axis=-1))

    @staticmethod
    def _ce(labels, logits):
        import tensorflow as tf

        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))

    @staticmethod
    def _correct(labels, logits):
        import tensorflow as tf

        return tf.cast(tf.equal(tf.argmax(logits, axis=-1), labels), tf.float32)

    def train_step(self, data):
        """One generator step against the classifier, then one classifier step on the new examples."""
        import tensorflow as tf

        x, labels = self.prepare_batch(data, training=True)
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            x_adv = self._adversarial(x, training=True)
            adv_logits = self.classifier(x_adv, training=False)
            g_loss = -self._ce(labels, adv_logits)
            scaled = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(g_loss))
        self.g_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)

        x_adv = tf.stop_gradient(self._adversarial(x, training=False))
        if self.train_classifier:
            d_vars = self.classifier.trainable_variables
            with tf.GradientTape() as tape:
                values = self._classifier_losses(x, x_adv, labels, training=True)
                scaled = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(values["d_loss"]))
            self.d_optimizer.apply(tape.gradient(scaled, d_vars), d_vars)
        else:
            values = self._classifier_losses(x, x_adv, labels, training=False)
        return self.update_metrics({"g_loss": g_loss, **values})

    def _classifier_losses(self, x, x_adv, labels, training):
        """D's loss and its accuracy on clean and adversarial images."""
        import tensorflow as tf

        clean_logits = self.classifier(x, training=training)
        adv_logits = self.classifier(x_adv, training=training)
        weight = tf.cast(self.clean_weight, tf.float32)
        return {
            "d_loss": weight * self._ce(labels, clean_logits) + (1.0 - weight) * self._ce(labels, adv_logits),
            "clean_acc": self._correct(labels, clean_logits),
            "adv_acc": self._correct(labels, adv_logits),
            "adv_logits": adv_logits,
        }

    def prepare_batch(self, data, training):
        import tensorflow as tf

        x, y = _unpack(data)
        x = tf.cast(x, tf.float32)
        return x, self._targets(x, y)

    def compute_losses(self, x, labels, training):
        values = self._classifier_losses(x, self._adversarial(x, training=False), labels, training=False)
        return {"g_loss": -self._ce(labels, values["adv_logits"]), **values}

    def _check_fit_data(self, x, y, argument="x"):
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            expected = f"a dataset of (x, y) batches of images of shape {self.image_shape}"
            spec = check_dataset_images(x, self.image_shape, argument, expected)
            labels = 1 if isinstance(spec, (tuple, list)) and len(spec) > 1 else None
            return dataset_range_checked(x, argument, (0,), labels, output_classes(self.classifier)), y
        if x is None or isinstance(x, (str, dict)) or not hasattr(x, "shape"):
            return x, y
        x = check_not_empty(check_image_array(x, self.image_shape, argument), argument)
        if y is not None:
            y = check_labels(y, "y", num_examples=len(x), num_classes=output_classes(self.classifier))
        return x, y

    def prepare_fit(self, x, y, args, kwargs):
        x, y = self._check_fit_data(x, y)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)):
            validation = check_validation_data(validation, (1, 2))
            labels = validation[1] if len(validation) > 1 else None
            kwargs["validation_data"] = self._check_fit_data(validation[0], labels, "validation_data")
        return x, y, dataset_fit_defaults(x, args, kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {**super().get_config(), "train_classifier": self.train_classifier}


def advgan_perturb(generator, x, eps, batch_size=256):
    """clip(x + eps * generator(x), 0, 1) on numpy images with one forward pass per batch."""
    import tensorflow as tf

    check_model("generator", generator)
    x = check_images(x, "x", allow_tensor=False)
    check_number("eps", eps, minimum=0, maximum=1)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    outputs = []
    for i in range(0, len(x), batch_size):
        batch = tf.constant(x[i : i + batch_size])
        delta = float(eps) * tf.cast(generator(batch, training=False), tf.float32)
        outputs.append(np.asarray(tf.clip_by_value(batch + delta, 0.0, 1.0)))
    return np.concatenate(outputs).astype(np.float32) if outputs else np.zeros_like(x)
