"""APE-GAN: adversarial perturbation elimination with a GAN.

Paper: Shen, Ji, Wang, Li, Xu, "APE-GAN: Adversarial Perturbation Elimination
with GAN" (https://arxiv.org/abs/1707.05474). A generator G maps an
adversarial image to a clean one; a discriminator D tells clean images from
G's reconstructions. Trained on paired `(x_adv, x_clean)` FGSM examples
(MNIST eps 0.3, 2 epochs; CIFAR-10 eps 0.1, 10 epochs; ImageNet eps 8/255,
30 epochs, 256 px, batch 16), Adam with learning rate 2e-4. Build the pairs
with `tfdefense.defenses.make_attack_pairs(classifier, x_train, y_train,
[("fgsm", {"eps": 0.3})], mode="all")` on the training split and evaluate on
held-out images.

Objective (per batch, averaged over the global batch under tf.distribute):

    D:  d_loss  = BCE(D(x_clean), 1) + BCE(D(G(x_adv)), 0)
    G:  g_total = mse_weight * mean (G(x_adv) - x_clean)^2      (g_mse, 0.7)
                + adv_weight * BCE(D(G(x_adv)), 1)               (g_adv, 0.3)

Each `train_step` makes one discriminator update, then `generator_steps`
generator updates (2 in the paper) on the same batch. The discriminator's
sigmoid output D(x) = sigmoid(logit) is folded into the binary cross-entropy
(`sigmoid_cross_entropy_with_logits`): the same loss as the paper's
sigmoid + BCE, without its saturation at 0 and 1.

The loss weights live in non-trainable variables (`defense.mse_weight`,
`defense.adv_weight`) that callbacks may `assign` during `fit`.

Inference: `defense(x)` purifies, deterministically (batch norm uses its
stored statistics). `defense.purify(x)` does the same on numpy arrays with
input checks.

Limits: the robustness comes from the training attack (FGSM in the paper);
APE-GAN is differentiable end to end, so an attacker who differentiates through
`DefendedClassifier(apegan, classifier)` (the adaptive evaluation) defeats it.
The generator is built for one image size and channel count.
"""

import keras

from tfdefense._validation import check_number
from tfdefense.defenses.base import (
    OptimizerSlot,
    Purifier,
    bce_from_logits,
    check_image_input,
    check_model,
    check_symbolic_images,
    image_to_image_shape,
    unpack_images,
)

METRIC_NAMES = ("d_loss", "g_mse", "g_adv", "g_total")
LOSS_WEIGHTS = ("mse_weight", "adv_weight")


def default_optimizer(learning_rate=2e-4):
    """Adam(2e-4, beta_1=0.5), as in the APE-GAN paper's code."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)


# --------------------------------------------------------------------- model


@keras.saving.register_keras_serializable(package="tfdefense")
class APEGAN(Purifier):
    """APE-GAN purifier trained with `fit` on `(x_adv, x_clean[, y])` batches.

    Args:
      generator: a `keras.Model` mapping [0, 1] images to [0, 1] images of the
        same shape (`tfdefense.models.apegan_generator`).
      discriminator: a `keras.Model` mapping images to one logit per image
        (`tfdefense.models.apegan_discriminator`); D = sigmoid(logit).
      mse_weight: weight of the reconstruction MSE (0.7 in the paper).
      adv_weight: weight of the generator's adversarial loss (0.3 in the paper).
      generator_steps: generator updates per discriminator update (2 in the paper).

    Use `APEGAN.from_preset("mnist" | "cifar10" | "imagenet" | "tiny")` for the
    paper's Table 6 networks. `compile(g_optimizer=None, d_optimizer=None)`:
    Adam(2e-4, beta_1=0.5) each by default.
    """

    optimizer_slots = (
        OptimizerSlot("g_optimizer", "generator", "g_total", default_optimizer),
        OptimizerSlot("d_optimizer", "discriminator", "d_loss", default_optimizer),
    )
    metric_names = METRIC_NAMES
    nested_models = ("generator", "discriminator")
    fit_data = "pairs"

    def __init__(self, generator, discriminator, mse_weight=0.7, adv_weight=0.3, generator_steps=2, **kwargs):
        kwargs.setdefault("name", "apegan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("discriminator", discriminator)
        image_shape = image_to_image_shape(generator, "generator")
        check_image_input(discriminator, "discriminator", image_shape, "a model taking images of shape")
        check_number("mse_weight", mse_weight, minimum=0)
        check_number("adv_weight", adv_weight, minimum=0)
        check_number("generator_steps", generator_steps, minimum=1, integer=True)
        self.generator = generator
        self.discriminator = discriminator
        self.image_shape = image_shape
        self.generator_steps = int(generator_steps)
        self.add_loss_weights({"mse_weight": mse_weight, "adv_weight": adv_weight})
        self._purify_function = None
        self.built = True

    @classmethod
    def from_preset(cls, preset="mnist", input_shape=None, **kwargs):
        """An untrained APEGAN with the paper's networks: "mnist", "cifar10", "imagenet" or "tiny"."""
        from tfdefense.models.apegan_nets import apegan_discriminator_preset, apegan_generator_preset

        generator = apegan_generator_preset(preset, input_shape)
        discriminator = apegan_discriminator_preset(preset, generator.input_shape[1:])
        return cls(generator, discriminator, **kwargs)

    # ------------------------------------------------------------------ inference

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self.generator(inputs, training=bool(training))

    # ------------------------------------------------------------------ training

    def _generator_losses(self, x_adv, x_clean, training):
        import tensorflow as tf

        fake = tf.cast(self.generator(x_adv, training=training), tf.float32)
        g_mse = tf.reduce_mean(tf.square(fake - x_clean), axis=[1, 2, 3])
        g_adv = bce_from_logits(self.discriminator(fake, training=training), True)
        g_total = tf.cast(self.mse_weight, tf.float32) * g_mse + tf.cast(self.adv_weight, tf.float32) * g_adv
        return fake, {"g_mse": g_mse, "g_adv": g_adv, "g_total": g_total}

    def _discriminator_loss(self, x_clean, fake, training):
        real = bce_from_logits(self.discriminator(x_clean, training=training), True)
        return real + bce_from_logits(self.discriminator(fake, training=training), False)

    def compute_losses(self, x_adv, x_clean, y, training):
        fake, losses = self._generator_losses(x_adv, x_clean, training=training)
        losses["d_loss"] = self._discriminator_loss(x_clean, fake, training=training)
        return losses

    def train_step(self, data):
        """One discriminator update on G's current output, then `generator_steps` generator updates."""
        import tensorflow as tf

        x_adv, x_clean = (tf.cast(t, tf.float32) for t in unpack_images(data))
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        fake = tf.stop_gradient(tf.cast(self.generator(x_adv, training=True), tf.float32))
        with tf.GradientTape() as tape:
            d_loss = self._discriminator_loss(x_clean, fake, training=True)
            scaled = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(d_loss))
        self.d_optimizer.apply(tape.gradient(scaled, d_vars), d_vars)
        for _ in range(self.generator_steps):
            with tf.GradientTape() as tape:
                _, losses = self._generator_losses(x_adv, x_clean, training=True)
                scaled = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(losses["g_total"]))
            self.g_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)
        losses["d_loss"] = d_loss
        return self.update_metrics(losses)

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {**super().get_config(), "generator_steps": self.generator_steps}
