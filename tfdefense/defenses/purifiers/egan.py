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

import random

import keras

from tfdefense._validation import (
    check_not_empty,
    check_number,
    check_validation_data,
    dataset_range_checked,
    fit_checked,
    invalid_value,
)
from tfdefense.defenses.base import (
    PurifierMixin,
    add_scalar_variables,
    GANModelMixin,
    dataset_fit_defaults,
    batched_call,
    bce_from_logits,
    check_image_array,
    check_model,
    check_symbolic_images,
    compile_optimizers,
    static_image_shape,
)


def default_gan_optimizer():
    """Adam(2e-4, beta_1=0.5) (DCGAN paper)."""
    return keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5)


def default_encoder_optimizer():
    """Adam(1e-3)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


def _latent_dim(generator):
    shape = getattr(generator, "input_shape", None)
    if isinstance(shape, list) or shape is None or len(shape) != 2 or shape[1] is None:
        raise invalid_value("generator", "a keras.Model taking latent codes of shape (N, latent_dim)", shape)
    return int(shape[1])


def _generator_image_shape(generator):
    shape = generator.output_shape
    if isinstance(shape, list) or len(shape) != 4 or any(s is None for s in shape[1:]):
        raise invalid_value("generator", "a keras.Model returning (N, H, W, C) images", shape)
    return tuple(int(s) for s in shape[1:])


def _add_seed_state(model, seed):
    """A non-trainable int64 weight [seed, counter] (saved, restored, replica-safe)."""
    if seed is None:
        seed = random.randint(1, 2**31 - 2)  # follows keras.utils.set_random_seed

    def initializer(shape, dtype=None):
        return keras.ops.convert_to_tensor([seed, 0], dtype=dtype)

    return model.add_weight(
        shape=(2,), initializer=initializer, dtype="int64", trainable=False, name="latent_seed",
        aggregation="only_first_replica",
    )


def _draw_seed(model):
    """The next stateless seed (int64[2]) of `model.latent_seed`; folds in the replica id."""
    import tensorflow as tf

    seed = tf.identity(model.latent_seed)
    model.latent_seed.assign_add(tf.constant([0, 1], tf.int64))
    context = tf.distribute.get_replica_context()
    if context is not None:
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        seed = seed + tf.stack([tf.constant(0, tf.int64), replica * (2**32)])
    return seed


def _latent_codes(model, batch_size, seed=None):
    """N(0, I) codes of shape (batch_size, latent_dim); draws a new seed unless given."""
    import tensorflow as tf

    seed = _draw_seed(model) if seed is None else seed
    return tf.random.stateless_normal((batch_size, model.latent_dim), seed=seed)


def _first_images(data):
    """The image batch of `x`, `(x,)`, `(x, y)` or `(x, y, w)` (labels are ignored)."""
    if isinstance(data, (list, tuple)):
        data = data[0]
        if isinstance(data, (list, tuple)):
            data = data[0]
    return data


def _check_image_fit_data(model, x, argument="x"):
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        shape = tuple(getattr(image_spec, "shape", ()))
        if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], model.image_shape)):
            raise invalid_value(
                argument, f"a dataset of image batches of shape (N, {', '.join(map(str, model.image_shape))})", spec
            )
        if not image_spec.dtype.is_floating:
            raise invalid_value(argument, "a dataset of float images in [0, 1] (convert uint8 with x / 255)", spec)
        return dataset_range_checked(x, argument)
    if x is None or isinstance(x, (str, dict)) or not hasattr(x, "shape"):
        return x
    return check_not_empty(check_image_array(x, model.image_shape, argument), argument)


def _prepare_image_fit(model, x, args, kwargs):
    """Checks `x` and `validation_data` (images or image datasets); returns x, edits kwargs."""
    validation = kwargs.get("validation_data")
    if validation is not None:
        if isinstance(validation, (tuple, list)):
            validation = check_validation_data(validation, (1, 2, 3))
            kwargs["validation_data"] = (_check_image_fit_data(model, validation[0], "validation_data"),)
        else:
            validation = _check_image_fit_data(model, validation, "validation_data")
            kwargs["validation_data"] = validation if hasattr(validation, "element_spec") else (validation,)
    dataset_fit_defaults(x, args, kwargs)
    return _check_image_fit_data(model, x)


@keras.saving.register_keras_serializable(package="tfdefense")
class DCGAN(GANModelMixin, keras.Model):
    """A DCGAN trained with `fit` on clean images (labels, if given, are ignored).

    Args:
      generator: `keras.Model` (N, latent_dim) -> (N, H, W, C) images in [0, 1]
        (`tfdefense.models.dcgan_generator`).
      discriminator: `keras.Model` images -> one logit per image.
      seed: seed of the latent-code generator.

    `dcgan(z)` returns G(z) (inference mode); `dcgan.sample(n)` draws n images.
    Use `DCGAN.from_preset("mnist" | "cifar10" | "tiny")` for the built-in nets.
    """

    def __init__(self, generator, discriminator, seed=None, **kwargs):
        kwargs.setdefault("name", "dcgan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("discriminator", discriminator)
        check_number("seed", seed, integer=True, allow_none=True)
        self.latent_dim = _latent_dim(generator)
        self.image_shape = _generator_image_shape(generator)
        d_shape = static_image_shape(discriminator, "discriminator")
        if d_shape != self.image_shape:
            raise invalid_value("discriminator", f"a model taking the generator's images {self.image_shape}", d_shape)
        self.generator = generator
        self.discriminator = discriminator
        self.seed = seed
        self.latent_seed = _add_seed_state(self, seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        self.g_optimizer = None
        self.d_optimizer = None
        self.built = True

    @classmethod
    def from_preset(cls, preset="mnist", image_shape=None, latent_dim=None, seed=None, **kwargs):
        from tfdefense.models.dcgan import dcgan_preset

        generator, discriminator = dcgan_preset(preset, image_shape=image_shape, latent_dim=latent_dim)
        return cls(generator, discriminator, seed=seed, **kwargs)

    def call(self, inputs, training=None):
        shape = tuple(inputs.shape)
        if len(shape) != 2 or (shape[1] is not None and shape[1] != self.latent_dim):
            raise invalid_value("z", f"latent codes of shape (N, {self.latent_dim})", f"shape {shape}")
        return self.generator(inputs, training=bool(training))

    def sample(self, n, seed=None, batch_size=256):
        """`n` generated images (numpy float32), from N(0, I) codes drawn with numpy `seed`."""
        import numpy as np

        check_number("n", n, minimum=0, integer=True)
        z = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype(np.float32)
        return batched_call(lambda batch: self.generator(batch, training=False), z, batch_size, self, "_sample_fn")

    def compile(self, g_optimizer=None, d_optimizer=None, auto_scale_loss=True, **kwargs):
        """Sets the optimizers (default Adam(2e-4, beta_1=0.5) each)."""
        compile_optimizers(
            self,
            {
                "g_optimizer": (g_optimizer, self.generator.trainable_variables, default_gan_optimizer),
                "d_optimizer": (d_optimizer, self.discriminator.trainable_variables, default_gan_optimizer),
            },
            auto_scale_loss,
            kwargs,
        )

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker, self.d_fake_tracker]

    def _gan_losses(self, x, training, tapes=None):
        """Per-example losses; with `tapes=(g_tape, d_tape)` records G's and D's losses on separate tapes."""
        import contextlib

        import tensorflow as tf

        g_tape, d_tape = tapes or (contextlib.nullcontext(), contextlib.nullcontext())
        x = tf.cast(_first_images(x), tf.float32)
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

    def _update_metrics(self, losses):
        import tensorflow as tf

        for name in ("d_loss", "g_loss", "d_real", "d_fake"):
            getattr(self, f"{name}_tracker").update_state(tf.reduce_mean(losses[name]))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        g_tape, d_tape = tf.GradientTape(), tf.GradientTape()
        losses = self._gan_losses(data, training=True, tapes=(g_tape, d_tape))
        with g_tape:
            g_loss = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(losses["g_loss"]))
        with d_tape:
            d_loss = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(losses["d_loss"]))
        g_grads = g_tape.gradient(g_loss, g_vars)
        d_grads = d_tape.gradient(d_loss, d_vars)
        self.d_optimizer.apply(d_grads, d_vars)
        self.g_optimizer.apply(g_grads, g_vars)
        return self._update_metrics(losses)

    def test_step(self, data):
        return self._update_metrics(self._gan_losses(data, training=False))

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on clean images (`fit(x_train, ...)` or an image dataset); `y` is ignored."""
        self.require_compiled()
        x = _prepare_image_fit(self, x, args, kwargs)
        return fit_checked(super().fit, x, y, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **self.nested_model_config(),
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfdefense")
class EGAN(PurifierMixin, GANModelMixin, keras.Model):
    nested_models = ("generator", "encoder")
    optimizer_names = ("e_optimizer",)

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

    `fit(x_clean, ...)`: E is trained on G(z) of random z; the given images
    only set the batch size and the steps. `evaluate(x)` also reports
    `real_mse`, the reconstruction error of the given images.
    """

    def __init__(self, generator, encoder, latent_weight=0.0, input_noise=0.0, seed=None, **kwargs):
        kwargs.setdefault("name", "egan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("encoder", encoder)
        check_number("latent_weight", latent_weight, minimum=0)
        check_number("input_noise", input_noise, minimum=0, maximum=1)
        check_number("seed", seed, integer=True, allow_none=True)
        self.latent_dim = _latent_dim(generator)
        self.image_shape = _generator_image_shape(generator)
        e_shape = static_image_shape(encoder, "encoder")
        if e_shape != self.image_shape:
            raise invalid_value("encoder", f"a model taking the generator's images {self.image_shape}", e_shape)
        e_out = encoder.output_shape
        if isinstance(e_out, list) or tuple(e_out[1:]) != (self.latent_dim,):
            raise invalid_value("encoder", f"a model returning latent codes of shape (N, {self.latent_dim})", e_out)
        self.generator = generator
        self.encoder = encoder
        self.seed = seed
        self.input_noise = float(input_noise)
        self.latent_seed = _add_seed_state(self, seed)
        self._initial_weights = {"latent_weight": float(latent_weight)}
        add_scalar_variables(self, self._initial_weights)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.latent_mse_tracker = keras.metrics.Mean(name="latent_mse")
        self.real_mse_tracker = keras.metrics.Mean(name="real_mse")
        self.e_optimizer = None
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

    def compile(self, e_optimizer=None, auto_scale_loss=True, **kwargs):
        """Sets the encoder optimizer (default Adam(1e-3))."""
        compile_optimizers(
            self,
            {"e_optimizer": (e_optimizer, self.encoder.trainable_variables, default_encoder_optimizer)},
            auto_scale_loss,
            kwargs,
        )

    @property
    def metrics(self):
        return [self.loss_tracker, self.mse_tracker, self.latent_mse_tracker, self.real_mse_tracker]

    def _generated_losses(self, batch_size, training):
        import tensorflow as tf

        seed = _draw_seed(self)
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

    def _update(self, losses):
        import tensorflow as tf

        for name, value in losses.items():
            getattr(self, f"{name}_tracker").update_state(tf.reduce_mean(value))
        return {name: getattr(self, f"{name}_tracker").result() for name in losses}

    def train_step(self, data):
        import tensorflow as tf

        x = _first_images(data)
        e_vars = self.encoder.trainable_variables
        with tf.GradientTape() as tape:
            losses = self._generated_losses(tf.shape(x)[0], training=True)
            scaled = self.e_optimizer.scale_loss(tf.nn.compute_average_loss(losses["loss"]))
        self.e_optimizer.apply(tape.gradient(scaled, e_vars), e_vars)
        return self._update(losses)

    def test_step(self, data):
        import tensorflow as tf

        x = tf.cast(_first_images(data), tf.float32)
        losses = self._generated_losses(tf.shape(x)[0], training=False)
        losses["real_mse"] = tf.reduce_mean(tf.square(tf.cast(self(x, training=False), tf.float32) - x), axis=[1, 2, 3])
        return self._update(losses)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`; `x` (images or an image dataset) sets batch size and steps; `y` is ignored."""
        self.require_compiled()
        x = _prepare_image_fit(self, x, args, kwargs)
        return fit_checked(super().fit, x, y, *args, **kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **self.nested_model_config(),
                **self._initial_weights,
                "input_noise": self.input_noise,
                "seed": self.seed,
            }
        )
        return config
