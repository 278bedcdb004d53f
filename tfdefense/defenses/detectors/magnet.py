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
from keras import layers

from tfdefense._validation import check_choice, check_labels, check_number, fit_checked, invalid_value
from tfdefense.defenses.base import (
    check_image_array,
    check_model,
    check_symbolic_images,
    compile_optimizers,
    static_image_shape,
)
from tfdefense.defenses.purifiers.egan import _add_seed_state, _draw_seed, _first_images, _prepare_image_fit

STRUCTURES = ("I", "II")
PRESETS = {
    # (autoencoder structures, detector norms, reformer index, filters)
    "mnist": dict(structures=("I", "II"), detector_norms=(2, 1), reformer_index=0, filters=3),
    "tiny": dict(structures=("I", "II"), detector_norms=(2, 1), reformer_index=0, filters=2),
}


def magnet_autoencoder(image_shape=(28, 28, 1), structure="I", filters=3, name=None):
    """MagNet's MNIST autoencoders (all activations sigmoid, 3x3 'same' convolutions).

    "I": Conv(f), AvgPool 2x2, Conv(f), Conv(f), UpSampling 2x2, Conv(f), Conv(C).
    "II": Conv(f), Conv(f), Conv(C). Structure I needs even sides.
    """
    check_choice("structure", structure, STRUCTURES)
    check_number("filters", filters, minimum=1, integer=True)
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
        raise invalid_value("image_shape", "a tuple (height, width, channels)", image_shape)
    height, width, channels = (int(s) for s in image_shape)
    if structure == "I" and (height % 2 or width % 2):
        raise invalid_value("image_shape", "even height and width for structure 'I'", image_shape)

    def conv(n, label):
        return layers.Conv2D(n, 3, padding="same", activation="sigmoid", name=label)

    inputs = keras.Input(shape=(height, width, channels), name="images")
    if structure == "I":
        x = conv(filters, "conv0")(inputs)
        x = layers.AveragePooling2D(2, name="pool")(x)
        x = conv(filters, "conv1")(x)
        x = conv(filters, "conv2")(x)
        x = layers.UpSampling2D(2, name="upsample")(x)
        x = conv(filters, "conv3")(x)
    else:
        x = conv(filters, "conv0")(inputs)
        x = conv(filters, "conv1")(x)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="out")(x)
    return keras.Model(inputs, outputs, name=name or f"magnet_ae_{structure}")


def default_magnet_optimizer():
    """Adam(1e-3) (keras' default Adam, as in the paper's code)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


@keras.saving.register_keras_serializable(package="tfdefense")
class MagNet(keras.Model):
    """MagNet defense: autoencoders trained with `fit` on clean images.

    Args:
      autoencoders: list of `keras.Model`s, images -> images of the same shape.
      detector_norms: one p per autoencoder (1 or 2): detector k uses
        `mean |x - AE_k(x)|^p`; None for an autoencoder that is not a detector.
      reformer_index: which autoencoder is the reformer.
      noise_stddev: Gaussian noise added to the training inputs (0.1).
      fpr: default false-positive rate per detector for `calibrate` (0.001).
      seed: seed of the training noise.
    """

    def __init__(self, autoencoders, detector_norms=(2, 1), reformer_index=0, noise_stddev=0.1, fpr=0.001, seed=None,
                 **kwargs):
        kwargs.setdefault("name", "magnet")
        super().__init__(**kwargs)
        if isinstance(autoencoders, keras.Model):
            autoencoders = [autoencoders]
        if not isinstance(autoencoders, (list, tuple)) or not autoencoders:
            raise invalid_value("autoencoders", "a non-empty list of keras.Models", autoencoders)
        shapes = []
        for ae in autoencoders:
            check_model("autoencoders", ae)
            shape = static_image_shape(ae, "autoencoders")
            out = ae.output_shape
            if isinstance(out, list) or tuple(out[1:]) != shape:
                raise invalid_value("autoencoders", f"models whose output shape equals the input shape {shape}", out)
            shapes.append(shape)
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
            shape=(len(self.detectors),), initializer=keras.initializers.Constant(np.inf), trainable=False,
            name="thresholds",
        )
        self.latent_seed = _add_seed_state(self, seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mse_trackers = [keras.metrics.Mean(name=f"ae{k}_mse") for k in range(len(self.autoencoders))]
        self.ae_optimizer = None
        self._functions = {}
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

    @property
    def stochastic(self):
        """False: the reformer is a deterministic autoencoder."""
        return False

    # ------------------------------------------------------------------ inference

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self.reformer(inputs, training=bool(training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _batched(self, key, fn, x, batch_size):
        import tensorflow as tf

        check_number("batch_size", batch_size, minimum=1, integer=True)
        if key not in self._functions:
            self._functions[key] = tf.function(fn, reduce_retracing=True, autograph=False)
        function = self._functions[key]
        outs = [np.asarray(function(tf.constant(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else None

    def purify(self, x, batch_size=256):
        """The reformer on a checked numpy batch; float32 numpy images."""
        x = check_image_array(x, self.image_shape)
        out = self._batched("purify", lambda b: self(b, training=False), x, batch_size)
        return np.zeros_like(x) if out is None else out.astype(np.float32)

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
        out = self._batched("errors", self._errors_graph, x, batch_size)
        return np.zeros((0, len(self.detectors)), np.float32) if out is None else out

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

    def compile(self, optimizer=None, auto_scale_loss=True, **kwargs):
        """Sets one optimizer for all autoencoders (default Adam(1e-3)); the loss is built in."""
        variables = [v for ae in self.autoencoders for v in ae.trainable_variables]
        compile_optimizers(self, {"ae_optimizer": (optimizer, variables, default_magnet_optimizer)}, auto_scale_loss,
                           kwargs)

    def get_compile_config(self):
        if self.ae_optimizer is None:
            return None
        return {"optimizer": keras.saving.serialize_keras_object(self.ae_optimizer)}

    def compile_from_config(self, config):
        self.compile(optimizer=keras.saving.deserialize_keras_object(config["optimizer"]))

    @property
    def metrics(self):
        return [self.loss_tracker, *self.mse_trackers]

    def _compute_losses(self, x, training, noisy):
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        x_in = x
        if noisy and self.noise_stddev > 0:
            noise = tf.random.stateless_normal(tf.shape(x), seed=_draw_seed(self)) * self.noise_stddev
            x_in = tf.clip_by_value(x + noise, 0.0, 1.0)
        mses = [
            tf.reduce_mean(tf.square(tf.cast(ae(x_in, training=training), tf.float32) - x), axis=[1, 2, 3])
            for ae in self.autoencoders
        ]
        return tf.add_n(mses), mses

    def _record(self, loss, mses):
        import tensorflow as tf

        self.loss_tracker.update_state(tf.reduce_mean(loss))
        for tracker, mse in zip(self.mse_trackers, mses):
            tracker.update_state(tf.reduce_mean(mse))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        x = _first_images(data)
        variables = [v for ae in self.autoencoders for v in ae.trainable_variables]
        with tf.GradientTape() as tape:
            loss, mses = self._compute_losses(x, training=True, noisy=True)
            scaled = self.ae_optimizer.scale_loss(tf.nn.compute_average_loss(loss))
        self.ae_optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._record(loss, mses)

    def test_step(self, data):
        loss, mses = self._compute_losses(_first_images(data), training=False, noisy=False)
        return self._record(loss, mses)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on clean images (arrays, checked, or a dataset); labels are ignored."""
        if self.ae_optimizer is None:
            raise RuntimeError("Call compile() before fit().")
        x = _prepare_image_fit(self, x, args, kwargs)
        return fit_checked(super().fit, x, None, *args, **kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "autoencoders": [keras.saving.serialize_keras_object(ae) for ae in self.autoencoders],
                "detector_norms": list(self.detector_norms),
                "reformer_index": self.reformer_index,
                "noise_stddev": self.noise_stddev,
                "fpr": self.fpr,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["autoencoders"] = [keras.saving.deserialize_keras_object(c) for c in config["autoencoders"]]
        config["detector_norms"] = tuple(config["detector_norms"])
        return cls(**config)
