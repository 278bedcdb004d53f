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

from tfdefense._validation import check_number, fit_checked, invalid_value
from tfdefense.defenses.base import (
    GANModelMixin,
    PurifierMixin,
    add_scalar_variables,
    bce_from_logits,
    check_model,
    check_symbolic_images,
    compile_optimizers,
    prepare_paired_fit,
    static_image_shape,
    unpack_images,
)

METRIC_NAMES = ("d_loss", "g_mse", "g_adv", "g_total")
LOSS_WEIGHTS = ("mse_weight", "adv_weight")


def default_optimizer(learning_rate=2e-4):
    """Adam(2e-4, beta_1=0.5), as in the APE-GAN paper's code."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)


# --------------------------------------------------------------------- model


@keras.saving.register_keras_serializable(package="tfdefense")
class APEGAN(PurifierMixin, GANModelMixin, keras.Model):
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
    paper's Table 6 networks.
    """

    def __init__(self, generator, discriminator, mse_weight=0.7, adv_weight=0.3, generator_steps=2, **kwargs):
        kwargs.setdefault("name", "apegan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("discriminator", discriminator)
        image_shape = static_image_shape(generator, "generator")
        out_shape = generator.output_shape
        if isinstance(out_shape, list) or tuple(out_shape[1:]) != image_shape:
            raise invalid_value(
                "generator", f"a model whose output shape equals its input shape {image_shape}", out_shape
            )
        d_shape = static_image_shape(discriminator, "discriminator")
        if d_shape != image_shape:
            raise invalid_value("discriminator", f"a model taking images of shape {image_shape}", d_shape)
        check_number("mse_weight", mse_weight, minimum=0)
        check_number("adv_weight", adv_weight, minimum=0)
        check_number("generator_steps", generator_steps, minimum=1, integer=True)
        self.generator = generator
        self.discriminator = discriminator
        self.image_shape = image_shape
        self.generator_steps = int(generator_steps)
        self._initial_weights = {"mse_weight": float(mse_weight), "adv_weight": float(adv_weight)}
        add_scalar_variables(self, self._initial_weights)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_mse_tracker = keras.metrics.Mean(name="g_mse")
        self.g_adv_tracker = keras.metrics.Mean(name="g_adv")
        self.g_total_tracker = keras.metrics.Mean(name="g_total")
        self.g_optimizer = None
        self.d_optimizer = None
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

    def compile(self, g_optimizer=None, d_optimizer=None, auto_scale_loss=True, **kwargs):
        """Sets the optimizers (default Adam(2e-4, beta_1=0.5) each).

        Other keyword arguments (`jit_compile`, `steps_per_execution`,
        `run_eagerly`) go to `keras.Model.compile`. Call it inside the strategy
        scope under tf.distribute.
        """
        compile_optimizers(
            self,
            {
                "g_optimizer": (g_optimizer, self.generator.trainable_variables, default_optimizer),
                "d_optimizer": (d_optimizer, self.discriminator.trainable_variables, default_optimizer),
            },
            auto_scale_loss,
            kwargs,
        )

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_mse_tracker, self.g_adv_tracker, self.g_total_tracker]

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

    def _update_metrics(self, losses):
        import tensorflow as tf

        for name in METRIC_NAMES:
            getattr(self, f"{name}_tracker").update_state(tf.reduce_mean(losses[name]))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
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
        return self._update_metrics(losses)

    def test_step(self, data):
        import tensorflow as tf

        x_adv, x_clean = (tf.cast(t, tf.float32) for t in unpack_images(data))
        fake, losses = self._generator_losses(x_adv, x_clean, training=False)
        losses["d_loss"] = self._discriminator_loss(x_clean, fake, training=False)
        return self._update_metrics(losses)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on paired data: `fit(x_adv, x_clean, ...)` (arrays, checked)
        or a `tf.data.Dataset` of `(x_adv, x_clean[, y])` batches
        (`tfdefense.data.make_paired_pipeline`)."""
        self.require_compiled()
        x, y, kwargs = prepare_paired_fit(self.image_shape, x, y, args, kwargs)
        return fit_checked(super().fit, x, y, *args, **kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {**self.nested_model_config(), **self._initial_weights, "generator_steps": self.generator_steps}
        )
        return config
