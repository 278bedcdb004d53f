"""MagNet: reconstruction-error detectors plus an autoencoder reformer.

Paper: Meng and Chen, "MagNet: a Two-Pronged Defense against Adversarial
Examples", CCS 2017 (https://arxiv.org/abs/1705.09064). Autoencoders are
trained on clean images only (MSE to the clean image from inputs with
Gaussian noise of standard deviation 0.1, Adam, 100 epochs). At test time:

* detectors: detector k flags x when the reconstruction error
  `mean |x - AE_k(x)|^p` exceeds a threshold set on clean validation images
  at a false-positive rate (`fpr`, 0.001 per detector on MNIST);
* reformer: the classifier sees `AE_r(x)` instead of x.

MNIST settings (the paper's Table 1 and its released code): autoencoder I
(Conv3x3x3-sigmoid, AvgPool 2x2, Conv3x3x3-sigmoid, Conv3x3x3-sigmoid,
Upsample 2x2, Conv3x3x3-sigmoid, Conv3x3xC-sigmoid) is detector I with the
L2 error and the reformer; autoencoder II (Conv3x3x3-sigmoid x 2,
Conv3x3xC-sigmoid) is detector II with the L1 error:
`MagNet.from_preset("mnist")`. (The paper's 1e-9 L2 activity regulariser is
left out.)

`magnet(x)` / `magnet.purify(x)` is the reformer (deterministic,
differentiable: `DefendedClassifier(magnet, classifier)` is the adaptive
target of the reformer); `magnet.detect(x)` returns the detectors' verdict
after `magnet.calibrate(x_val)`; `magnet.defended_accuracy(classifier, x, y)`
reports the paper's convention for adversarial inputs: an example is
*defended* when it is detected or, if not detected, the classifier labels the
reformed image correctly. For clean inputs pass
`detected_counts_as_correct=False` (a rejected clean image is an error).

Limits: thresholding is not differentiable; an attacker aware of the
detectors adds their reconstruction errors to the loss (Carlini and Wagner,
"MagNet and 'Efficient Defenses ...' are not robust", 2017). The gray-box
diversity (many autoencoders, one drawn at random) is not implemented.
"""

import keras
import numpy as np

from tfdefense._validation import check_choice, check_labels, check_number, invalid_value
from tfdefense.defenses.base import (
    OptimizerSlot,
    Purifier,
    add_seed_state,
    batched_call,
    check_image_array,
    check_model,
    check_symbolic_images,
    draw_seed,
    image_to_image_shape,
)
from tfdefense.models.magnet_nets import magnet_autoencoder

PRESETS = {
    # (autoencoder structures, detector norms, reformer index, filters)
    "mnist": dict(structures=("I", "II"), detector_norms=(2, 1), reformer_index=0, filters=3),
    "tiny": dict(structures=("I", "II"), detector_norms=(2, 1), reformer_index=0, filters=2),
}


def default_magnet_optimizer():
    """Adam(1e-3) (keras' default Adam, as in the paper's code)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


@keras.saving.register_keras_serializable(package="tfdefense")
class MagNet(Purifier):
    """MagNet defense: autoencoders trained with `fit` on clean images.

    Args:
      autoencoders: list of `keras.Model`s, images -> images of the same shape.
      detector_norms: one p per autoencoder (1 or 2): detector k uses
        `mean |x - AE_k(x)|^p`; None for an autoencoder that is not a detector.
      reformer_index: which autoencoder is the reformer.
      noise_stddev: Gaussian noise added to the training inputs (0.1).
      fpr: default false-positive rate per detector for `calibrate` (0.001).
      seed: seed of the training noise.

    `compile(optimizer=None)`: one optimizer for all autoencoders, Adam(1e-3)
    by default. `fit` takes clean images (arrays or a dataset; labels are
    ignored). Metrics: `loss` (the sum of the autoencoders' MSEs), `ae{k}_mse`.
    """

    optimizer_slots = (OptimizerSlot("ae_optimizer", "autoencoders", "loss", default_magnet_optimizer, "optimizer"),)
    nested_models = ("autoencoders",)
    fit_data = "images"

    def __init__(
        self, autoencoders, detector_norms=(2, 1), reformer_index=0, noise_stddev=0.1, fpr=0.001, seed=None, **kwargs
    ):
        kwargs.setdefault("name", "magnet")
        super().__init__(**kwargs)
        if isinstance(autoencoders, keras.Model):
            autoencoders = [autoencoders]
        if not isinstance(autoencoders, (list, tuple)) or not autoencoders:
            raise invalid_value("autoencoders", "a non-empty list of keras.Models", autoencoders)
        shapes = []
        for ae in autoencoders:
            check_model("autoencoders", ae)
            shapes.append(image_to_image_shape(ae, "autoencoders"))
        if len(set(shapes)) != 1:
            raise invalid_value("autoencoders", "models taking the same image shape", shapes)
        if not isinstance(detector_norms, (list, tuple)) or len(detector_norms) != len(autoencoders):
            raise invalid_value("detector_norms", f"{len(autoencoders)} entries (1, 2 or None)", detector_norms)
        for p in detector_norms:
            if p not in (1, 2, None) or isinstance(p, bool):
                raise invalid_value("detector_norms", "entries 1, 2 or None", detector_norms)
        if not any(p is not None for p in detector_norms):
            raise invalid_value("detector_norms", "at least one detector (an entry 1 or 2)", detector_norms)
        check_number("reformer_index", reformer_index, minimum=0, maximum=len(autoencoders) - 1, integer=True)
        check_number("noise_stddev", noise_stddev, minimum=0)
        check_number("fpr", fpr, minimum=0, maximum=1)
        check_number("seed", seed, integer=True, allow_none=True)
        self.autoencoders = list(autoencoders)
        self.detector_norms = tuple(detector_norms)
        self.detectors = [k for k, p in enumerate(self.detector_norms) if p is not None]
        self.reformer_index = int(reformer_index)
        self.noise_stddev = float(noise_stddev)
        self.fpr = float(fpr)
        self.seed = seed
        self.image_shape = shapes[0]
        self.thresholds = self.add_weight(
            shape=(len(self.detectors),),
            initializer=keras.initializers.Constant(np.inf),
            trainable=False,
            name="thresholds",
        )
        self.latent_seed = add_seed_state(self, seed)
        self.track_metrics(("loss", *(f"ae{k}_mse" for k in range(len(self.autoencoders)))))
        self._purify_function = None
        self.built = True

    @classmethod
    def from_preset(cls, preset="mnist", image_shape=(28, 28, 1), **kwargs):
        """The paper's MNIST layout ("mnist") or a smaller one for tests ("tiny")."""
        check_choice("preset", preset, sorted(PRESETS))
        p = PRESETS[preset]
        aes = [magnet_autoencoder(image_shape, s, p["filters"], name=f"magnet_ae_{s}") for s in p["structures"]]
        kwargs = {"detector_norms": p["detector_norms"], "reformer_index": p["reformer_index"], **kwargs}
        return cls(aes, **kwargs)

    @property
    def reformer(self):
        return self.autoencoders[self.reformer_index]

    # ------------------------------------------------------------------ inference

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self.reformer(inputs, training=bool(training))

    def _errors_graph(self, x):
        import tensorflow as tf

        errors = []
        for k in self.detectors:
            diff = tf.abs(x - tf.cast(self.autoencoders[k](x, training=False), tf.float32))
            p = self.detector_norms[k]
            errors.append(tf.reduce_mean(diff if p == 1 else tf.square(diff), axis=[1, 2, 3]))
        return tf.stack(errors, axis=1)

    def reconstruction_errors(self, x, batch_size=256):
        """(N, number of detectors) array of `mean |x - AE_k(x)|^p`, one column per detector."""
        x = check_image_array(x, self.image_shape)
        if len(x) == 0:
            check_number("batch_size", batch_size, minimum=1, integer=True)
            return np.zeros((0, len(self.detectors)), np.float32)
        return batched_call(self._errors_graph, x, batch_size, self, "_errors_function")

    @property
    def calibrated(self):
        return bool(np.all(np.isfinite(np.asarray(self.thresholds))))

    def calibrate(self, x_val, fpr=None, batch_size=256):
        """Sets each detector's threshold so that a fraction `fpr` of the clean `x_val` is flagged.

        As in the paper's code: errors sorted in decreasing order, the
        threshold is the error at position floor(N * fpr), and x is flagged
        when its error is strictly above it. Returns the thresholds.
        """
        fpr = self.fpr if fpr is None else fpr
        check_number("fpr", fpr, minimum=0, maximum=1)
        errors = self.reconstruction_errors(x_val, batch_size)
        if len(errors) == 0:
            raise invalid_value("x_val", "at least one clean validation image", "an empty array")
        ordered = -np.sort(-errors, axis=0)
        index = min(int(np.floor(len(errors) * fpr)), len(errors) - 1)
        thresholds = ordered[index].astype(np.float32)
        self.thresholds.assign(thresholds)
        return thresholds

    def detect(self, x, batch_size=256):
        """Boolean array: True where any detector's error is above its threshold (needs `calibrate`)."""
        if not self.calibrated:
            raise RuntimeError("Call calibrate(x_val) before detect() (the thresholds are not set).")
        errors = self.reconstruction_errors(x, batch_size)
        return np.any(errors > np.asarray(self.thresholds)[None, :], axis=1)

    def defended_accuracy(self, classifier, x, y, detected_counts_as_correct=True, batch_size=256):
        """Accuracy with the detectors and the reformer.

        Returns a dict: `accuracy` (detected examples count as correct when
        `detected_counts_as_correct`, the paper's convention for adversarial
        inputs; as errors otherwise, the convention for clean inputs),
        `detection_rate`, and `reformed_accuracy` (the reformer alone, no
        detection).
        """
        from tfdefense.inference import predict_labels

        x = check_image_array(x, self.image_shape)
        y = check_labels(y, "y", num_examples=len(x))
        detected = self.detect(x, batch_size)
        correct = predict_labels(classifier, self.purify(x, batch_size)) == y
        defended = (detected | correct) if detected_counts_as_correct else (~detected & correct)
        return {
            "accuracy": float(np.mean(defended)),
            "detection_rate": float(np.mean(detected)),
            "reformed_accuracy": float(np.mean(correct)),
        }

    # ------------------------------------------------------------------ training

    def compute_losses(self, x, training):
        """The autoencoders' per-example MSEs to the clean image and their sum; in training from noisy inputs."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        x_in = x
        if training and self.noise_stddev > 0:
            noise = tf.random.stateless_normal(tf.shape(x), seed=draw_seed(self)) * self.noise_stddev
            x_in = tf.clip_by_value(x + noise, 0.0, 1.0)
        mses = [
            tf.reduce_mean(tf.square(tf.cast(ae(x_in, training=training), tf.float32) - x), axis=[1, 2, 3])
            for ae in self.autoencoders
        ]
        return {"loss": tf.add_n(mses), **{f"ae{k}_mse": mse for k, mse in enumerate(mses)}}

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "detector_norms": list(self.detector_norms),
                "reformer_index": self.reformer_index,
                "noise_stddev": self.noise_stddev,
                "fpr": self.fpr,
                "seed": self.seed,
            }
        )
        return config
