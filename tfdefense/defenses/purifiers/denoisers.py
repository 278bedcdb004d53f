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

from tfdefense._validation import check_choice, check_number
from tfdefense.defenses.base import (
    OptimizerSlot,
    Purifier,
    add_seed_state,
    check_model,
    check_symbolic_images,
    draw_seed,
    image_to_image_shape,
    unpack_images,
)
from tfdefense.models.denoiser_nets import (
    AUTOENCODER_PRESETS,
    DNCNN_PRESETS,
    conv_autoencoder_network,
    dncnn_network,
)

LOSSES = ("mse", "l1")


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
class Denoiser(Purifier):
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
    `compile(optimizer=None)`: Adam(1e-3) by default. `fit(x_in, x_clean, ...)`:
    arrays (checked) or a dataset of `(x_in, x_clean[, y])` batches.
    """

    optimizer_slots = (OptimizerSlot("d_optimizer", "network", "loss", default_denoiser_optimizer, "optimizer"),)
    metric_names = ("loss", "mse", "psnr")
    nested_models = ("network",)
    fit_data = "pairs"

    def __init__(self, network, loss="mse", noise_stddev=0.0, seed=None, **kwargs):
        kwargs.setdefault("name", "denoiser")
        super().__init__(**kwargs)
        check_model("network", network)
        image_shape = image_to_image_shape(network, "network")
        check_choice("loss", loss, LOSSES)
        check_number("noise_stddev", noise_stddev, minimum=0)
        check_number("seed", seed, integer=True, allow_none=True)
        self.network = network
        self.image_shape = image_shape
        self.loss_kind = loss
        self.seed = seed
        self.add_loss_weights({"noise_stddev": noise_stddev})
        self.latent_seed = add_seed_state(self, seed)
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

    def _noisy(self, x):
        import tensorflow as tf

        sigma = tf.cast(self.noise_stddev, tf.float32)
        noise = tf.random.stateless_normal(tf.shape(x), seed=draw_seed(self)) * sigma
        return tf.clip_by_value(x + noise, 0.0, 1.0)

    def prepare_batch(self, data, training):
        """(x_in, x_clean, y); in training x_in gets the Gaussian noise (noise_stddev 0: unchanged)."""
        import tensorflow as tf

        x_in, x_clean, y = unpack_images(data, labels=True)
        x_in, x_clean = tf.cast(x_in, tf.float32), tf.cast(x_clean, tf.float32)
        return (self._noisy(x_in) if training else x_in), x_clean, y

    def compute_losses(self, x_in, x_clean, y, training):
        import tensorflow as tf

        out = tf.cast(self.network(x_in, training=training), tf.float32)
        loss = reconstruction_loss(self.loss_kind, out, x_clean)
        mse = reconstruction_loss("mse", out, x_clean)
        psnr = 10.0 * tf.math.log(1.0 / tf.maximum(mse, 1e-10)) / tf.math.log(10.0)
        return {"loss": loss, "mse": mse, "psnr": psnr}

    # ------------------------------------------------------------------ config

    def get_config(self):
        return {**super().get_config(), "loss": self.loss_kind, "seed": self.seed}
