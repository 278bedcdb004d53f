"""EGAN: purification by encoding into a fixed GAN generator's latent space.

Paper: Perez-Bravo et al., "Encoding Generative Adversarial Networks for
defense against image classification attacks". Two stages, no class labels:

1. `DCGAN`: a generator G(z) (z of dimension 30 for MNIST) is trained with its
   discriminator on clean images (non-saturating GAN loss, Radford et al.):

       D: d_loss = BCE(D(x), 1) + BCE(D(G(z)), 0)
       G: g_loss = BCE(D(G(z)), 1)                     z ~ N(0, I)

2. `EGAN`: G is frozen; an encoder E is trained on generated images G(z) of
   random z to minimise the image-space reconstruction error

       loss = mean (G(E(G(z))) - G(z))^2  [+ latent_weight * mean (E(G(z)) - z)^2]

   (`latent_weight` is 0 in the paper; a positive value is an optional extra.)

Purification is `G(E(x))`: the input is projected onto the generator's range,
which holds no adversarial perturbations. `egan(x)` is deterministic: the
frozen generator always runs in inference mode, and so does the encoder unless
`training=True`. The data given to `EGAN.fit` only sets the batch size and the
number of steps (its images are never encoded during training; `evaluate`
reports how well real images are reconstructed, `real_mse`).

Binary cross-entropies are computed from the discriminator's logits (the
sigmoid is inside the loss). Losses are averaged over the global batch under
tf.distribute. Random latent codes are drawn with stateless ops from a seed
state kept in a non-trainable weight (`latent_seed`), like a
`keras.random.SeedGenerator` but saved with the weights, so a run resumed by
`keras.callbacks.BackupAndRestore` draws the same codes as an uninterrupted
one; under tf.distribute every replica folds its replica id into the seed.

Limits: purified images are only as good as G's coverage of the data (a short
DCGAN run yields blurry or wrong-class reconstructions, which is the main
source of the clean-accuracy drop); E is differentiable, so an adaptive
attacker differentiating through `DefendedClassifier(egan, classifier)` can
search the generator's range for misclassified images.
"""

import contextlib

import keras

from tfdefense._validation import check_number, invalid_value
from tfdefense.defenses.base import (
    DefenseModel,
    OptimizerSlot,
    Purifier,
    add_seed_state,
    batched_call,
    bce_from_logits,
    check_image_array,
    check_image_input,
    check_latent_codes,
    check_model,
    check_symbolic_images,
    draw_seed,
    first_images,
    generator_image_shape,
    generator_latent_dim,
    sample_images,
)
from tfdefense.defenses.precision import check_precision


def default_gan_optimizer():
    """Adam(2e-4, beta_1=0.5) (DCGAN paper)."""
    return keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5)


def default_encoder_optimizer():
    """Adam(1e-3)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


def _latent_codes(model, batch_size, seed=None):
    """N(0, I) codes of shape (batch_size, latent_dim); draws a new seed unless given."""
    import tensorflow as tf

    seed = draw_seed(model) if seed is None else seed
    return tf.random.stateless_normal((batch_size, model.latent_dim), seed=seed)


@keras.saving.register_keras_serializable(package="tfdefense")
class DCGAN(DefenseModel):
    """A DCGAN trained with `fit` on clean images (labels, if given, are ignored).

    Args:
      generator: `keras.Model` (N, latent_dim) -> (N, H, W, C) images in [0, 1]
        (`tfdefense.models.dcgan_generator`).
      discriminator: `keras.Model` images -> one logit per image.
      seed: seed of the latent-code generator.
      precision: "fp32" or "bf16" (the train step computes in bfloat16 with
        float32 variables and losses; sampling and inference stay float32).

    `dcgan(z)` returns G(z) (inference mode); `dcgan.sample(n)` draws n images.
    Use `DCGAN.from_preset("mnist" | "cifar10" | "tiny")` for the built-in nets.
    `compile(g_optimizer=None, d_optimizer=None)`: Adam(2e-4, beta_1=0.5) each by default.
    """

    optimizer_slots = (
        OptimizerSlot("g_optimizer", "generator", "g_loss", default_gan_optimizer),
        OptimizerSlot("d_optimizer", "discriminator", "d_loss", default_gan_optimizer),
    )
    metric_names = ("d_loss", "g_loss", "d_real", "d_fake")
    nested_models = ("generator", "discriminator")
    fit_data = "images"

    def __init__(self, generator, discriminator, seed=None, precision="fp32", **kwargs):
        kwargs.setdefault("name", "dcgan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("discriminator", discriminator)
        check_number("seed", seed, integer=True, allow_none=True)
        self.precision = check_precision(precision)
        self.latent_dim = generator_latent_dim(generator)
        self.image_shape = generator_image_shape(generator)
        check_image_input(discriminator, "discriminator", self.image_shape)
        self.generator = generator
        self.discriminator = discriminator
        self.seed = seed
        self.latent_seed = add_seed_state(self, seed)
        self.built = True

    @classmethod
    def from_preset(cls, preset="mnist", image_shape=None, latent_dim=None, seed=None, **kwargs):
        from tfdefense.models.dcgan import dcgan_preset

        generator, discriminator = dcgan_preset(preset, image_shape=image_shape, latent_dim=latent_dim)
        return cls(generator, discriminator, seed=seed, **kwargs)

    def call(self, inputs, training=None):
        check_latent_codes(inputs, self.latent_dim)
        return self.generator(inputs, training=bool(training))

    def sample(self, n, seed=None, batch_size=256):
        """`n` generated images (numpy float32), from N(0, I) codes drawn with numpy `seed`."""
        return sample_images(self, n, seed, batch_size)

    def compute_losses(self, x, training, tapes=None):
        """Per-example losses; with `tapes=(g_tape, d_tape)` records G's and D's losses on separate tapes."""

        import tensorflow as tf

        g_tape, d_tape = tapes or (contextlib.nullcontext(), contextlib.nullcontext())
        x = tf.cast(x, tf.float32)
        z = _latent_codes(self, tf.shape(x)[0])
        with g_tape:
            fake = tf.cast(self.generator(z, training=training), tf.float32)
            g_logits = self.discriminator(fake, training=training)
            g_loss = bce_from_logits(g_logits, True)
        with d_tape:
            real_logits = self.discriminator(x, training=training)
            fake_logits = self.discriminator(tf.stop_gradient(fake), training=training) if tapes else g_logits
            d_loss = bce_from_logits(real_logits, True) + bce_from_logits(fake_logits, False)
        return {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": tf.reshape(tf.sigmoid(tf.cast(real_logits, tf.float32)), [-1]),
            "d_fake": tf.reshape(tf.sigmoid(tf.cast(fake_logits, tf.float32)), [-1]),
        }

    def train_step(self, data):
        """G's and D's losses on separate tapes from one batch of codes; D is updated first."""
        import tensorflow as tf

        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        with self.step_scope():
            g_tape, d_tape = tf.GradientTape(), tf.GradientTape()
            losses = self.compute_losses(first_images(data), training=True, tapes=(g_tape, d_tape))
            with g_tape:
                g_loss = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(tf.cast(losses["g_loss"], tf.float32)))
            with d_tape:
                d_loss = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(tf.cast(losses["d_loss"], tf.float32)))
            g_grads = g_tape.gradient(g_loss, g_vars)
            d_grads = d_tape.gradient(d_loss, d_vars)
            self.d_optimizer.apply(d_grads, d_vars)
            self.g_optimizer.apply(g_grads, g_vars)
        return self.update_metrics(losses)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, "precision": self.precision}


@keras.saving.register_keras_serializable(package="tfdefense")
class EGAN(Purifier):
    """EGAN purifier `G(E(x))` with a frozen generator G and a trained encoder E.

    Args:
      generator: the trained GAN generator, (N, latent_dim) -> images in [0, 1]
        (e.g. `DCGAN.generator`). Frozen: `fit` only updates the encoder, and
        G always runs in inference mode (its batch-norm statistics never move).
        Its `trainable` flag is left alone (a DCGAN sharing it can go on training it).
      encoder: `keras.Model` images -> (N, latent_dim)
        (`tfdefense.models.egan_encoder`).
      latent_weight: weight of the optional latent-code MSE (0, the paper's loss).
      input_noise: beyond the paper, off by default: during training the encoder
        sees G(z) plus random-sign noise of a random strength in [0, input_noise]
        per image (clipped to [0, 1]) and must still recover G(z).
      seed: seed of the latent-code generator used in training.
      precision: "fp32" or "bf16" (the encoder's train step, through the
        frozen generator, computes in bfloat16; state and inference float32).

    `fit(x_clean, ...)`: E is trained on G(z) of random z; the given images
    only set the batch size and the steps. `evaluate(x)` also reports
    `real_mse`, the reconstruction error of the given images.
    `compile(e_optimizer=None)`: Adam(1e-3) by default.
    """

    optimizer_slots = (OptimizerSlot("e_optimizer", "encoder", "loss", default_encoder_optimizer),)
    metric_names = ("loss", "mse", "latent_mse", "real_mse")
    nested_models = ("generator", "encoder")
    fit_data = "images"

    def __init__(self, generator, encoder, latent_weight=0.0, input_noise=0.0, seed=None, precision="fp32", **kwargs):
        kwargs.setdefault("name", "egan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("encoder", encoder)
        self.precision = check_precision(precision)
        check_number("latent_weight", latent_weight, minimum=0)
        check_number("input_noise", input_noise, minimum=0, maximum=1)
        check_number("seed", seed, integer=True, allow_none=True)
        self.latent_dim = generator_latent_dim(generator)
        self.image_shape = generator_image_shape(generator)
        check_image_input(encoder, "encoder", self.image_shape)
        e_out = encoder.output_shape
        if isinstance(e_out, list) or tuple(e_out[1:]) != (self.latent_dim,):
            raise invalid_value("encoder", f"a model returning latent codes of shape (N, {self.latent_dim})", e_out)
        self.generator = generator
        self.encoder = encoder
        self.seed = seed
        self.input_noise = float(input_noise)
        self.latent_seed = add_seed_state(self, seed)
        self.add_loss_weights({"latent_weight": latent_weight})
        self._purify_function = None
        self.built = True

    # ------------------------------------------------------------------ inference

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self.generator(self.encoder(inputs, training=bool(training)), training=False)

    def encode(self, x, batch_size=256):
        """Latent codes E(x) of a numpy batch of [0, 1] images (checked)."""
        x = check_image_array(x, self.image_shape)
        return batched_call(lambda batch: self.encoder(batch, training=False), x, batch_size, self, "_encode_fn")

    # ------------------------------------------------------------------ training

    def _generated_losses(self, batch_size, training):
        import tensorflow as tf

        seed = draw_seed(self)
        z = _latent_codes(self, batch_size, seed)
        target = tf.stop_gradient(tf.cast(self.generator(z, training=False), tf.float32))
        inputs = target
        if self.input_noise > 0 and training:
            # Random-sign noise of a random strength in [0, input_noise] per image.
            shape = tf.shape(target)
            strength = tf.random.stateless_uniform(
                tf.stack([shape[0], 1, 1, 1]), seed + tf.constant([1, 0], tf.int64), maxval=self.input_noise
            )
            signs = tf.sign(tf.random.stateless_uniform(shape, seed + tf.constant([2, 0], tf.int64), -1.0, 1.0))
            inputs = tf.clip_by_value(target + strength * signs, 0.0, 1.0)
        z_hat = tf.cast(self.encoder(inputs, training=training), tf.float32)
        recon = tf.cast(self.generator(z_hat, training=False), tf.float32)
        mse = tf.reduce_mean(tf.square(recon - target), axis=[1, 2, 3])
        latent_mse = tf.reduce_mean(tf.square(z_hat - z), axis=1)
        loss = mse + tf.cast(self.latent_weight, tf.float32) * latent_mse
        return {"loss": loss, "mse": mse, "latent_mse": latent_mse}

    def compute_losses(self, x, training):
        """Losses on generated images G(z) (as many as `x` holds); in evaluation also `real_mse` on `x`."""
        import tensorflow as tf

        if training:
            return self._generated_losses(tf.shape(x)[0], training=True)
        x = tf.cast(x, tf.float32)
        losses = self._generated_losses(tf.shape(x)[0], training=False)
        losses["real_mse"] = tf.reduce_mean(tf.square(tf.cast(self(x, training=False), tf.float32) - x), axis=[1, 2, 3])
        return losses

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {**super().get_config(), "input_noise": self.input_noise, "seed": self.seed, "precision": self.precision}
