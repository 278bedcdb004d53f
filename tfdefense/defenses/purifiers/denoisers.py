"""Learned denoisers as purifiers: DnCNN and a plain convolutional autoencoder.

Both are baselines of the purification papers' comparison tables: a network
trained with `fit` on `(x_noisy or x_adv, x_clean)` pairs to return the clean
image, then placed in front of the classifier
(`DefendedClassifier(denoiser, classifier)`).

* DnCNN - Zhang, Zuo, Chen, Meng, Zhang, "Beyond a Gaussian Denoiser: Residual
  Learning of Deep CNN for Image Denoising", IEEE TIP 2017
  (https://arxiv.org/abs/1608.03981). `depth` 3x3 convolutions with 64
  filters (17 in the paper): Conv+ReLU, (depth-2) x (Conv+BN+ReLU), Conv. The
  network predicts the noise (residual learning); the denoised image is
  `clip(x - R(x), 0, 1)`, so the MSE to the clean image is the paper's
  residual loss.
* Convolutional autoencoder - two stride-2 3x3 convolutions down
  (28 -> 14 -> 7 px), two stride-2 transposed convolutions up (LeakyReLU 0.2
  after each), a 3x3 convolution clipped to [0, 1]; the "autoencoder" rows of
  the APE-GAN / pix2pix comparisons. (A sigmoid output trained on FGSM pairs
  collapsed to all-black images in our runs: the saturated sigmoid stops the
  gradient.)

`Denoiser(network, loss="mse", noise_stddev=0.0, seed=None)` trains any
images -> images network: `fit(x_in, x_clean)` with arrays or a dataset of
`(x_in, x_clean[, y])` batches (`make_attack_pairs(...).dataset()`,
`tfdefense.data.make_paired_pipeline`). With `noise_stddev > 0` the step adds
Gaussian noise of that standard deviation to the inputs (clipped to [0, 1]),
so `fit(x_clean, x_clean)` trains a Gaussian denoiser. Presets:
`Denoiser.dncnn("paper" | "small" | "tiny")`,
`Denoiser.autoencoder("default" | "tiny")`.

Inference is deterministic (`stochastic` is False: batch norm uses its stored
statistics) and differentiable, so the adaptive attack is plain PGD on
`DefendedClassifier(denoiser, classifier)`. Limits: trained on one attack or
noise level, the denoiser removes what it was shown; a white-box attacker
differentiating through it defeats it (it is not a robust model, see
docs/baselines.md).
"""

import keras
from keras import layers

from tfdefense._validation import check_choice, check_number, fit_checked, invalid_value
from tfdefense.defenses.base import (
    PurifierMixin,
    add_scalar_variables,
    check_model,
    check_symbolic_images,
    compile_optimizers,
    prepare_paired_fit,
    static_image_shape,
    unpack_images,
)
from tfdefense.defenses.purifiers.egan import _add_seed_state, _draw_seed

LOSSES = ("mse", "l1")

DNCNN_PRESETS = {
    "paper": dict(depth=17, filters=64),  # Zhang et al. 2017 (sigma-specific model)
    "small": dict(depth=8, filters=32),
    "tiny": dict(depth=3, filters=8),
}
AUTOENCODER_PRESETS = {
    "default": dict(filters=(32, 64)),
    "tiny": dict(filters=(8, 16)),
}


def _shape(image_shape):
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise invalid_value("image_shape", "a tuple (height, width, channels)", image_shape)
    for s in image_shape:
        check_number("image_shape", s, minimum=1, integer=True)
    return tuple(int(s) for s in image_shape)


def dncnn_network(image_shape=(28, 28, 1), depth=17, filters=64, kernel_size=3, name="dncnn"):
    """DnCNN: (N, H, W, C) images in [0, 1] -> clip(x - R(x), 0, 1) (residual learning)."""
    image_shape = _shape(image_shape)
    check_number("depth", depth, minimum=2, integer=True)
    check_number("filters", filters, minimum=1, integer=True)
    check_number("kernel_size", kernel_size, minimum=1, integer=True)
    inputs = keras.Input(shape=image_shape, name="images")
    x = layers.Conv2D(filters, kernel_size, padding="same", name="conv0")(inputs)
    x = layers.ReLU(name="relu0")(x)
    for i in range(1, depth - 1):
        x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    noise = layers.Conv2D(image_shape[-1], kernel_size, padding="same", name="noise")(x)
    residual = layers.Subtract(name="residual")([inputs, noise])
    outputs = layers.ReLU(max_value=1.0, dtype="float32", name="clip")(residual)  # clip to [0, 1]
    return keras.Model(inputs, outputs, name=name)


def conv_autoencoder_network(image_shape=(28, 28, 1), filters=(32, 64), name="conv_autoencoder"):
    """Conv(f1, s2), Conv(f2, s2), ConvT(f2, s2), ConvT(f1, s2) (each + LeakyReLU 0.2), Conv(C), clip [0, 1].

    Sides must be multiples of 4 (28 and 32 are).
    """
    image_shape = _shape(image_shape)
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise invalid_value("image_shape", "height and width divisible by 4", image_shape)
    if not isinstance(filters, (tuple, list)) or len(filters) != 2:
        raise invalid_value("filters", "two filter counts (f1, f2)", filters)
    for f in filters:
        check_number("filters", f, minimum=1, integer=True)
    f1, f2 = (int(f) for f in filters)
    inputs = keras.Input(shape=image_shape, name="images")
    x = inputs
    for i, (kind, f) in enumerate(((layers.Conv2D, f1), (layers.Conv2D, f2),
                                   (layers.Conv2DTranspose, f2), (layers.Conv2DTranspose, f1))):
        name = f"enc{i}" if i < 2 else f"dec{i - 2}"
        x = kind(f, 3, strides=2, padding="same", name=name)(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_lrelu")(x)
    x = layers.Conv2D(image_shape[-1], 3, padding="same", name="out")(x)
    outputs = layers.ReLU(max_value=1.0, dtype="float32", name="clip")(x)  # clip to [0, 1]
    return keras.Model(inputs, outputs, name=name)


def default_denoiser_optimizer():
    """Adam(1e-3) (DnCNN's initial rate)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


def reconstruction_loss(kind, output, target):
    """Per-example mean squared ("mse") or absolute ("l1") error."""
    import tensorflow as tf

    diff = tf.cast(output, tf.float32) - tf.cast(target, tf.float32)
    axes = list(range(1, len(diff.shape)))
    return tf.reduce_mean(tf.square(diff) if kind == "mse" else tf.abs(diff), axis=axes)


@keras.saving.register_keras_serializable(package="tfdefense")
class Denoiser(PurifierMixin, keras.Model):
    """A purifier network trained with `fit` on `(x_in, x_clean[, y])` pairs.

    Args:
      network: a `keras.Model` mapping [0, 1] images to [0, 1] images of the
        same shape (`dncnn_network`, `conv_autoencoder_network`, or any).
      loss: "mse" (default) or "l1" reconstruction loss to the clean image.
      noise_stddev: standard deviation of Gaussian noise added to the inputs
        in each training step (0 = use the inputs as given).
      seed: seed of that noise.

    `denoiser(x)` purifies (deterministic); `denoiser.purify(x)` does it on a
    checked numpy batch. Metrics: `loss` (the training loss), `mse`, `psnr`.
    """

    def __init__(self, network, loss="mse", noise_stddev=0.0, seed=None, **kwargs):
        kwargs.setdefault("name", "denoiser")
        super().__init__(**kwargs)
        check_model("network", network)
        image_shape = static_image_shape(network, "network")
        out_shape = network.output_shape
        if isinstance(out_shape, list) or tuple(out_shape[1:]) != image_shape:
            raise invalid_value(
                "network", f"a model whose output shape equals its input shape {image_shape}", out_shape
            )
        check_choice("loss", loss, LOSSES)
        check_number("noise_stddev", noise_stddev, minimum=0)
        check_number("seed", seed, integer=True, allow_none=True)
        self.network = network
        self.image_shape = image_shape
        self.loss_kind = loss
        self.seed = seed
        self._noise_stddev = float(noise_stddev)
        add_scalar_variables(self, {"noise_stddev": noise_stddev})
        self.latent_seed = _add_seed_state(self, seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.d_optimizer = None
        self._purify_function = None
        self.built = True

    # ------------------------------------------------------------------ presets

    @classmethod
    def dncnn(cls, preset="paper", image_shape=(28, 28, 1), **kwargs):
        """A DnCNN denoiser: preset "paper" (17 layers, 64 filters), "small" (8, 32) or "tiny" (3, 8)."""
        check_choice("preset", preset, sorted(DNCNN_PRESETS))
        return cls(dncnn_network(image_shape, **DNCNN_PRESETS[preset]), **kwargs)

    @classmethod
    def autoencoder(cls, preset="default", image_shape=(28, 28, 1), **kwargs):
        """A convolutional autoencoder denoiser: preset "default" (32, 64 filters) or "tiny" (8, 16)."""
        check_choice("preset", preset, sorted(AUTOENCODER_PRESETS))
        return cls(conv_autoencoder_network(image_shape, **AUTOENCODER_PRESETS[preset]), **kwargs)

    # ------------------------------------------------------------------ inference

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self.network(inputs, training=bool(training))

    # ------------------------------------------------------------------ training

    def compile(self, optimizer=None, auto_scale_loss=True, **kwargs):
        """Sets the optimizer (default Adam(1e-3)); the loss is built in (`loss=` at construction)."""
        if kwargs.get("loss") is not None:
            raise invalid_value("loss", "None (the reconstruction loss is set by Denoiser(loss=...))", kwargs["loss"])
        kwargs.pop("loss", None)
        compile_optimizers(
            self,
            {"d_optimizer": (optimizer, self.network.trainable_variables, default_denoiser_optimizer)},
            auto_scale_loss,
            kwargs,
        )

    def get_compile_config(self):
        if self.d_optimizer is None:
            return None
        return {"optimizer": keras.saving.serialize_keras_object(self.d_optimizer)}

    def compile_from_config(self, config):
        self.compile(optimizer=keras.saving.deserialize_keras_object(config["optimizer"]))

    @property
    def metrics(self):
        return [self.loss_tracker, self.mse_tracker, self.psnr_tracker]

    def _noisy(self, x):
        import tensorflow as tf

        sigma = tf.cast(self.noise_stddev, tf.float32)
        noise = tf.random.stateless_normal(tf.shape(x), seed=_draw_seed(self)) * sigma
        return tf.clip_by_value(x + noise, 0.0, 1.0)

    def _compute_losses(self, x_in, x_clean, training):
        import tensorflow as tf

        out = tf.cast(self.network(x_in, training=training), tf.float32)
        loss = reconstruction_loss(self.loss_kind, out, x_clean)
        mse = reconstruction_loss("mse", out, x_clean)
        psnr = 10.0 * tf.math.log(1.0 / tf.maximum(mse, 1e-10)) / tf.math.log(10.0)
        return loss, {"loss": loss, "mse": mse, "psnr": psnr}

    def _update_metrics(self, values):
        import tensorflow as tf

        for tracker in self.metrics:
            tracker.update_state(tf.reduce_mean(values[tracker.name]))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        x_in, x_clean = (tf.cast(t, tf.float32) for t in unpack_images(data))
        x_in = self._noisy(x_in)  # noise_stddev 0: unchanged (inputs are in [0, 1])
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            loss, values = self._compute_losses(x_in, x_clean, training=True)
            scaled = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(loss))
        self.d_optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(values)

    def test_step(self, data):
        import tensorflow as tf

        x_in, x_clean = (tf.cast(t, tf.float32) for t in unpack_images(data))
        return self._update_metrics(self._compute_losses(x_in, x_clean, training=False)[1])

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on pairs: `fit(x_in, x_clean, ...)` (arrays, checked) or a dataset
        of `(x_in, x_clean[, y])` batches."""
        return _fit_pairs(self, super().fit, x, y, args, kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "loss": self.loss_kind,
                "noise_stddev": self._noise_stddev,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


def _fit_pairs(model, fit, x, y, args, kwargs):
    """Checks paired fit data (x = inputs, y = clean targets, or a dataset of pairs) and calls `fit`."""
    if model.d_optimizer is None:
        raise RuntimeError("Call compile() before fit() (it sets the optimizer).")
    x, y, kwargs = prepare_paired_fit(model.image_shape, x, y, args, kwargs)
    return fit_checked(fit, x, y, *args, **kwargs)
