"""Defense-GAN: project the input onto the range of a WGAN generator.

Paper: Samangouei, Kabkab, Chellappa, "Defense-GAN: Protecting Classifiers
Against Adversarial Attacks Using Generative Models", ICLR 2018
(https://arxiv.org/abs/1805.06605); settings from the authors' released
configuration (MNIST): WGAN-GP (critic 5 steps per generator step, gradient
penalty 10, Adam(1e-4, beta_1=0.5, beta_2=0.9), batch 50, 200k generator
iterations), latent dimension 128, and at test time R = 10 random restarts of
L = 200 gradient-descent steps on z with learning rate 10 (momentum 0.7,
z initialised from N(0, 1/latent_dim)), minimising the per-image mean squared
reconstruction error; the classifier sees G(z*) of the best restart.

Two models:

* `WGANGP(generator, critic, critic_steps=5, gp_weight=10.0, seed=None)` -
  trained with `fit` on clean images (labels ignored). Each `train_step` runs
  `critic_steps` critic updates (the same real batch, fresh z and
  interpolation weights each time; the paper's code draws a new real batch
  per critic step) then one generator update. Metrics: `d_loss` (critic loss
  with the penalty), `g_loss`, `gp`, `w_dist` (E D(real) - E D(fake), the
  critic's Wasserstein estimate). `WGANGP.from_preset("mnist" | "light" |
  "tiny")`: the paper's MNIST networks (net_dim 64: FC 4096-ReLU, reshape
  4x4x256, Deconv 5x5 128-ReLU, crop 7x7, Deconv 64-ReLU, Deconv 1-sigmoid;
  critic Conv 5x5 s2 64/128/256 + LeakyReLU 0.2, FC 1), `light` (net_dim
  32, ~4x cheaper) and `tiny` (tests).
* `DefenseGAN(generator, iterations=200, restarts=10, learning_rate=10.0,
  ...)` - the purifier (`keras.Model`, images -> images): the projection runs
  in a `tf.while_loop` inside `call`.

Randomness: the restarts' initial codes are random, so the purifier is
**stochastic** (`stochastic` is True; evaluate adaptive attacks with EOT).
Each call draws a fresh stateless seed from a counter saved with the weights
(`latent_seed`, `seed=` sets its start); `purify(x, seed=s)` is
reproducible.

Gradients (adaptive attacks): the projection is an inner optimisation, so
by default (`backward="identity"`) its backward pass is the identity (BPDA,
Athalye et al. 2018, which is how Defense-GAN was broken); `backward="unroll"`
differentiates through all L unrolled steps (memory grows with L; practical
only for small L and batches).

Limits: the defense is only as good as the generator's range; with few
training iterations G misses digit styles and clean accuracy drops. The
projection costs L x R generator forward and backward passes per image.
"""

import keras
import numpy as np

from tfdefense._validation import check_choice, check_number
from tfdefense.defenses.base import (
    DefenseModel,
    OptimizerSlot,
    Purifier,
    add_seed_state,
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
from tfdefense.models.defensegan_nets import DEFENSEGAN_PRESETS, defensegan_critic, defensegan_generator

PRESETS = DEFENSEGAN_PRESETS
BACKWARDS = ("identity", "unroll")


def default_wgan_optimizer():
    """Adam(1e-4, beta_1=0.5, beta_2=0.9) (WGAN-GP, Gulrajani et al.)."""
    return keras.optimizers.Adam(learning_rate=1e-4, beta_1=0.5, beta_2=0.9)


@keras.saving.register_keras_serializable(package="tfdefense")
class WGANGP(DefenseModel):
    """A WGAN with gradient penalty trained with `fit` on clean images.

    Args:
      generator: `keras.Model` (N, latent_dim) -> (N, H, W, C) images in [0, 1].
      critic: `keras.Model` images -> one unbounded score per image.
      critic_steps: critic updates per generator update (5).
      gp_weight: gradient-penalty weight lambda (10).
      seed: seed of the latent codes and interpolation weights.

    `wgan(z)` returns G(z); `wgan.sample(n, seed)` draws images.
    `compile(g_optimizer=None, d_optimizer=None)`: Adam(1e-4, beta_1=0.5, beta_2=0.9) each by default.
    """

    optimizer_slots = (
        OptimizerSlot("g_optimizer", "generator", "g_loss", default_wgan_optimizer),
        OptimizerSlot("d_optimizer", "critic", "d_loss", default_wgan_optimizer),
    )
    metric_names = ("d_loss", "g_loss", "gp", "w_dist")
    nested_models = ("generator", "critic")
    fit_data = "images"

    def __init__(self, generator, critic, critic_steps=5, gp_weight=10.0, seed=None, **kwargs):
        kwargs.setdefault("name", "wgan_gp")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("critic", critic)
        check_number("critic_steps", critic_steps, minimum=1, integer=True)
        check_number("gp_weight", gp_weight, minimum=0)
        check_number("seed", seed, integer=True, allow_none=True)
        self.latent_dim = generator_latent_dim(generator)
        self.image_shape = generator_image_shape(generator)
        check_image_input(critic, "critic", self.image_shape)
        self.generator = generator
        self.critic = critic
        self.critic_steps = int(critic_steps)
        self.seed = seed
        self.add_loss_weights({"gp_weight": gp_weight})
        self.latent_seed = add_seed_state(self, seed)
        self._sample_fn = None
        self.built = True

    @classmethod
    def from_preset(cls, preset="mnist", image_shape=(28, 28, 1), seed=None, **kwargs):
        check_choice("preset", preset, sorted(PRESETS))
        p = PRESETS[preset]
        generator = defensegan_generator(p["latent_dim"], p["net_dim"], image_shape)
        critic = defensegan_critic(p["net_dim"], image_shape)
        return cls(generator, critic, seed=seed, **kwargs)

    def call(self, inputs, training=None):
        check_latent_codes(inputs, self.latent_dim)
        return self.generator(inputs, training=bool(training))

    def sample(self, n, seed=None, batch_size=256):
        """`n` generated images (numpy float32) from N(0, I) codes drawn with numpy `seed`."""
        return sample_images(self, n, seed, batch_size)

    def _critic_losses(self, x, training):
        import tensorflow as tf

        n = tf.shape(x)[0]
        z = tf.random.stateless_normal((n, self.latent_dim), seed=draw_seed(self))
        fake = tf.stop_gradient(tf.cast(self.generator(z, training=training), tf.float32))
        alpha = tf.random.stateless_uniform((n, 1, 1, 1), seed=draw_seed(self))
        mixed = x + alpha * (fake - x)
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(mixed)
            mixed_score = tf.reshape(tf.cast(self.critic(mixed, training=training), tf.float32), [-1])
        grads = gp_tape.gradient(mixed_score, mixed)
        slopes = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
        gp = tf.square(slopes - 1.0)
        real_score = tf.reshape(tf.cast(self.critic(x, training=training), tf.float32), [-1])
        fake_score = tf.reshape(tf.cast(self.critic(fake, training=training), tf.float32), [-1])
        d_loss = fake_score - real_score + tf.cast(self.gp_weight, tf.float32) * gp
        return d_loss, gp, real_score - fake_score

    def _generator_loss(self, n, training):
        import tensorflow as tf

        z = tf.random.stateless_normal((n, self.latent_dim), seed=draw_seed(self))
        fake = tf.cast(self.generator(z, training=training), tf.float32)
        return -tf.reshape(tf.cast(self.critic(fake, training=training), tf.float32), [-1])

    def train_step(self, data):
        """`critic_steps` critic updates on the same real batch, then one generator update."""
        import tensorflow as tf

        x = tf.cast(first_images(data), tf.float32)
        d_vars = self.critic.trainable_variables
        g_vars = self.generator.trainable_variables
        for _ in range(self.critic_steps):
            with tf.GradientTape() as tape:
                d_loss, gp, w_dist = self._critic_losses(x, training=True)
                scaled = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(d_loss))
            self.d_optimizer.apply(tape.gradient(scaled, d_vars), d_vars)
        with tf.GradientTape() as tape:
            g_loss = self._generator_loss(tf.shape(x)[0], training=True)
            scaled = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(g_loss))
        self.g_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)
        return self.update_metrics({"d_loss": d_loss, "g_loss": g_loss, "gp": gp, "w_dist": w_dist})

    def compute_losses(self, x, training):
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        d_loss, gp, w_dist = self._critic_losses(x, training=training)
        g_loss = self._generator_loss(tf.shape(x)[0], training=training)
        return {"d_loss": d_loss, "g_loss": g_loss, "gp": gp, "w_dist": w_dist}

    def get_config(self):
        return {**super().get_config(), "critic_steps": self.critic_steps, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfdefense")
class DefenseGAN(Purifier):
    """Defense-GAN purifier: x -> G(z*), z* = best of R gradient-descent runs on ||G(z) - x||^2.

    Args:
      generator: `keras.Model` (N, latent_dim) -> images in [0, 1]
        (`WGANGP.generator`).
      iterations: L, gradient-descent steps per restart (200).
      restarts: R, random restarts (10).
      learning_rate: step size on z (10.0).
      momentum: momentum of the z updates (0.7, the authors' code).
      lr_decay, lr_decay_at: the step size is multiplied by `lr_decay` after
        a fraction `lr_decay_at` of the iterations (1.0 = constant, default).
      z_stddev: standard deviation of the initial codes (None:
        1/sqrt(latent_dim), the authors' code).
      backward: "identity" (BPDA, default) or "unroll" (exact gradient
        through the unrolled steps).
      seed: start of the restarts' seed stream.
    """

    nested_models = ("generator",)

    def __init__(
        self,
        generator,
        iterations=200,
        restarts=10,
        learning_rate=10.0,
        momentum=0.7,
        lr_decay=1.0,
        lr_decay_at=0.8,
        z_stddev=None,
        backward="identity",
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "defensegan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_number("iterations", iterations, minimum=0, integer=True)
        check_number("restarts", restarts, minimum=1, integer=True)
        check_number("learning_rate", learning_rate, minimum=0)
        check_number("momentum", momentum, minimum=0, maximum=1)
        check_number("lr_decay", lr_decay, minimum=0)
        check_number("lr_decay_at", lr_decay_at, minimum=0, maximum=1)
        check_number("z_stddev", z_stddev, minimum=0, allow_none=True)
        check_choice("backward", backward, BACKWARDS)
        check_number("seed", seed, integer=True, allow_none=True)
        self.generator = generator
        self.latent_dim = generator_latent_dim(generator)
        self.image_shape = generator_image_shape(generator)
        self.iterations = int(iterations)
        self.restarts = int(restarts)
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.lr_decay = float(lr_decay)
        self.lr_decay_at = float(lr_decay_at)
        self.z_stddev = None if z_stddev is None else float(z_stddev)
        self.backward = backward
        self.seed = seed
        self.latent_seed = add_seed_state(self, seed)
        self._purify_fn = None
        self.built = True

    @property
    def stochastic(self):
        """True: the restarts start from random codes (evaluate with EOT)."""
        return True

    # ------------------------------------------------------------------ projection

    def _project(self, x, seed):
        """(G(z*), per-image reconstruction MSE) for a batch x, restarts from `seed` (graph code)."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        n = tf.shape(x)[0]
        r = self.restarts
        tiled = tf.repeat(x, r, axis=0)  # image i's restarts are rows i*R .. i*R+R-1
        std = self.z_stddev if self.z_stddev is not None else 1.0 / np.sqrt(self.latent_dim)
        z0 = tf.random.stateless_normal((n * r, self.latent_dim), seed=seed) * std
        decay_step = int(np.ceil(self.iterations * self.lr_decay_at))

        def rec_error(z):
            out = tf.cast(self.generator(z, training=False), tf.float32)
            return out, tf.reduce_mean(tf.square(out - tiled), axis=[1, 2, 3])

        def step(i, z, velocity):
            with tf.GradientTape() as tape:
                tape.watch(z)
                _, err = rec_error(z)
                loss = tf.reduce_sum(err)
            grad = tape.gradient(loss, z)
            lr = tf.where(i >= decay_step, self.learning_rate * self.lr_decay, self.learning_rate)
            velocity = self.momentum * velocity + grad
            return i + 1, z - lr * velocity, velocity

        if self.backward == "unroll":
            z, velocity = z0, tf.zeros_like(z0)
            for i in range(self.iterations):
                _, z, velocity = step(tf.constant(i), z, velocity)
        else:
            _, z, _ = tf.while_loop(lambda i, *_: i < self.iterations, step, (tf.constant(0), z0, tf.zeros_like(z0)))
            z = tf.stop_gradient(z)
        out, err = rec_error(z)
        err = tf.reshape(err, [n, r])
        best = tf.argmin(err, axis=1, output_type=tf.int32) + tf.range(n) * r
        return tf.gather(out, best), tf.reduce_min(err, axis=1)

    def _forward(self, x, seed):
        import tensorflow as tf

        projected = self._project(x, seed)[0]
        if self.backward == "unroll":
            return projected
        # BPDA with the identity: forward G(z*), backward d/dx = I (straight-through).
        x = tf.cast(x, tf.float32)
        return x + tf.stop_gradient(projected - x)

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self._forward(inputs, draw_seed(self))

    def purify(self, x, batch_size=64, seed=None, return_errors=False):
        """Projects a checked numpy batch; `seed` (int) makes it reproducible, None draws from the stream.

        With `return_errors`, also returns each image's reconstruction MSE
        (Defense-GAN's detection statistic).
        """
        import tensorflow as tf

        x = check_image_array(x, self.image_shape)
        check_number("batch_size", batch_size, minimum=1, integer=True)
        check_number("seed", seed, integer=True, allow_none=True)
        if self._purify_fn is None:
            self._purify_fn = tf.function(self._project, reduce_retracing=True)
        outs, errs = [], []
        for k, i in enumerate(range(0, len(x), batch_size)):
            if seed is None:
                batch_seed = draw_seed(self)
            else:
                batch_seed = tf.constant([seed, k], tf.int64)
            out, err = self._purify_fn(tf.constant(x[i : i + batch_size]), batch_seed)
            outs.append(np.asarray(out))
            errs.append(np.asarray(err))
        images = np.concatenate(outs).astype(np.float32) if outs else np.zeros_like(x)
        if return_errors:
            return images, (np.concatenate(errs) if errs else np.zeros((0,), np.float32))
        return images

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "iterations": self.iterations,
                "restarts": self.restarts,
                "learning_rate": self.learning_rate,
                "momentum": self.momentum,
                "lr_decay": self.lr_decay,
                "lr_decay_at": self.lr_decay_at,
                "z_stddev": self.z_stddev,
                "backward": self.backward,
                "seed": self.seed,
            }
        )
        return config
