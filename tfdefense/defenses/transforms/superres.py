"""Super-resolution + wavelet denoising defense (Mustafa et al. 2019) and its SR network.

Paper: "Image Super-Resolution as a Defense Against Adversarial Attacks",
https://arxiv.org/abs/1901.01677: wavelet-denoise the input (BayesShrink,
soft thresholding), then super-resolve it with a network trained on clean
images, which maps the (denoised) input back towards the natural-image
manifold. The paper feeds the 2x larger image to ImageNet classifiers; here the
classifier keeps its input size, so the defense downscales by `scale`
(area averaging, which itself averages out pixel noise) and the network
upscales back:

    sr = train_super_resolution(x_train, scale=2, epochs=5)      # clean images only
    defense = SuperResolutionWavelet(sr)                         # wavelet -> downscale -> SR
    defended = DefendedClassifier(defense, classifier)

The SR network (`super_resolution_net`) is a small EDSR-style model: conv,
residual blocks, a global skip, pixel-shuffle upsampling, plus the bilinear
upsampled input, trained with an L1 loss. The defense is differentiable except
for the wavelet step, which backpropagates as the identity (BPDA) by default.
"""

import keras
import tensorflow as tf

from tfdefense._validation import check_choice, check_images, check_number, invalid_value
from tfdefense.defenses.transforms.classic import (
    InputTransform,
    check_bool,
    check_wavelet,
    register_transform,
    wavelet_denoise,
)
from tfdefense.models.superres_nets import super_resolution_net


def downscale(x, scale):
    """Area downscaling by an integer factor (average of scale x scale blocks)."""
    return tf.nn.avg_pool2d(x, scale, scale, "VALID")


def _sr_scale(sr_model):
    in_shape, out_shape = sr_model.input_shape, sr_model.output_shape
    if not (isinstance(in_shape, tuple) and isinstance(out_shape, tuple) and len(in_shape) == 4):
        raise invalid_value("sr_model", "a single-input keras.Model mapping NHWC images to larger ones", sr_model)
    if in_shape[1] is None or out_shape[1] is None or out_shape[1] % in_shape[1]:
        raise invalid_value("sr_model", "a model upscaling by an integer factor", f"shapes {in_shape} -> {out_shape}")
    scale = out_shape[1] // in_shape[1]
    if scale < 2 or out_shape[2] != in_shape[2] * scale or out_shape[3] != in_shape[3]:
        raise invalid_value(
            "sr_model", "a model upscaling H and W by the same factor >= 2", f"{in_shape} -> {out_shape}"
        )
    return scale


def train_super_resolution(
    x_train,
    scale=2,
    epochs=5,
    batch_size=64,
    filters=32,
    num_blocks=2,
    learning_rate=1e-3,
    validation_data=None,
    seed=0,
    verbose=0,
):
    """Trains `super_resolution_net` on clean images: downscale by `scale`, learn to upscale.

    Args:
      x_train: float32 NHWC clean images in [0, 1] (H, W divisible by `scale`).
      validation_data: optional clean images; the model's `history` then has `val_loss`.
    Returns the trained SR model (its `history` attribute is the Keras History).
    Loss: mean absolute error (EDSR), Adam.
    """
    x_train = check_images(x_train, "x_train", allow_tensor=False)
    check_number("epochs", epochs, minimum=1, integer=True)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("learning_rate", learning_rate, minimum=0.0)
    check_number("seed", seed, minimum=0, integer=True, allow_none=True)
    if len(x_train) == 0:
        raise invalid_value("x_train", "a non-empty batch of images", "an empty array")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = super_resolution_net(x_train.shape[1:], scale=scale, filters=filters, num_blocks=num_blocks)

    def pairs(x, shuffle):
        ds = tf.data.Dataset.from_tensor_slices(x)
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).map(lambda hr: (downscale(hr, scale), hr)).prefetch(2)

    val = None
    if validation_data is not None:
        val = pairs(check_images(validation_data, "validation_data", allow_tensor=False), False)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mae")
    model.history = model.fit(pairs(x_train, True), epochs=epochs, validation_data=val, verbose=verbose, shuffle=False)
    return model


@keras.saving.register_keras_serializable(package="tfdefense")
@register_transform("superres_wavelet")
class SuperResolutionWavelet(InputTransform):
    """Wavelet denoising + super-resolution (Mustafa et al. 2019), same-shape output.

    Args:
      sr_model: a trained super-resolution model (e.g. `train_super_resolution`)
        mapping (H/s, W/s, C) to (H, W, C); s is read from its shapes.
      order: "denoise_first" (the paper: wavelet -> downscale -> SR) or
        "sr_first" (downscale -> SR -> wavelet).
      denoise: apply the wavelet step (False: downscale -> SR only).
      sigma, wavelet, mode, method: wavelet denoising (see `WaveletDenoise`);
        sigma=None estimates the noise level per image.
      bpda: identity gradient through the wavelet step (True) or none.
    The SR network and the downscaling are differentiable (exact gradients);
    only the wavelet step uses BPDA. Deterministic.
    Limits: the adaptive attacker differentiates through the SR network; the
    defense then mostly costs clean accuracy (see docs/baselines.md).
    """

    differentiable = False

    def __init__(
        self,
        sr_model,
        order="denoise_first",
        denoise=True,
        sigma=None,
        wavelet="db1",
        mode="soft",
        method="BayesShrink",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(sr_model, keras.Model):
            raise invalid_value("sr_model", "a keras.Model (see train_super_resolution)", sr_model)
        self.scale = _sr_scale(sr_model)
        self.sr_model = sr_model
        self.order = check_choice("order", order, ("denoise_first", "sr_first"))
        self.denoise = check_bool("denoise", denoise)
        check_wavelet(wavelet, mode, method, sigma)
        self.sigma = None if sigma is None else float(sigma)
        self.wavelet, self.mode, self.method = wavelet, mode, method
        self.image_shape = tuple(sr_model.output_shape[1:])

    def _denoise(self, x):
        if not self.denoise:
            return x
        fn = lambda a: self._numpy(  # noqa: E731
            lambda b: wavelet_denoise(b, self.sigma, self.wavelet, self.mode, self.method), a
        )
        if self.bpda:
            from tfdefense.attacks.adaptive import bpda_apply

            return bpda_apply(fn, None, x)
        return tf.stop_gradient(fn(x))

    def _super_resolve(self, x, training=None):
        return tf.clip_by_value(tf.cast(self.sr_model(downscale(x, self.scale), training=training), tf.float32), 0, 1)

    def transform(self, x, training=None):
        if self.order == "denoise_first":
            return self._super_resolve(self._denoise(x), training)
        return self._denoise(self._super_resolve(x, training))

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank is not None and x.shape.rank != 4:
            raise invalid_value("inputs", "a rank-4 NHWC batch of images", f"tensor of shape {tuple(x.shape)}")
        if x.shape.rank == 4 and None not in x.shape[1:] and tuple(x.shape[1:]) != self.image_shape:
            raise invalid_value("inputs", f"images of shape {self.image_shape}", f"tensor of shape {tuple(x.shape)}")
        x = tf.clip_by_value(tf.cast(x, tf.float32), 0.0, 1.0)
        return self.transform(x, training=False)

    def get_config(self):
        return {
            **super().get_config(),
            "sr_model": keras.saving.serialize_keras_object(self.sr_model),
            "order": self.order,
            "denoise": self.denoise,
            "sigma": self.sigma,
            "wavelet": self.wavelet,
            "mode": self.mode,
            "method": self.method,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["sr_model"] = keras.saving.deserialize_keras_object(config["sr_model"])
        return cls(**config)
