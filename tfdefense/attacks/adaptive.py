"""Adaptive-attack tools: BPDA for non-differentiable steps, EOT, convergence checks.

Any attack differentiates through whatever Keras model it is given, so the
white-box attack on a defended pipeline is just `attack(DefendedClassifier(...), x, y)`
or `attack(keras.Sequential([purifier, classifier]), x, y)`. Two things break
plain gradients, and each has its tool:

* a non-differentiable (or gradient-masking) step - quantisation, JPEG,
  median filters: wrap it with `bpda(fn)` (Athalye et al. 2018, Backward Pass
  Differentiable Approximation): the forward pass runs `fn`, the backward pass
  is the identity (or the gradient of a differentiable `backward` approximation);
* randomness at test time: the gradient attacks' `eot_samples=N` parameter
  averages gradients over N forward passes (Expectation over Transformation).

`convergence_check` reruns an attack with more iterations and restarts, so an
evaluation can show its numbers have converged.

Paper: https://arxiv.org/abs/1802.00420 (obfuscated gradients, BPDA, EOT).
"""

import keras
import numpy as np
import tensorflow as tf

from tfdefense._validation import check_number, invalid_value


def bpda_apply(fn, backward, x):
    @tf.custom_gradient
    def forward(x):
        y = tf.cast(fn(x), x.dtype)

        def grad(upstream):
            if backward is None:
                if upstream.shape.rank is not None and x.shape.rank is not None and upstream.shape != x.shape:
                    upstream = tf.reshape(upstream, tf.shape(x))
                return upstream
            with tf.GradientTape() as tape:
                tape.watch(x)
                approx = tf.cast(backward(x), x.dtype)
            return tape.gradient(
                approx, x, output_gradients=upstream, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        return y, grad

    return forward(x)


class BPDA(keras.layers.Layer):
    """A layer running `fn` forward and `backward`'s gradient (identity when None) backward.

    Use it inside a model in place of a non-differentiable preprocessing step,
    e.g. `keras.Sequential([BPDA(lambda x: tf.round(x * 4) / 4), classifier])`.
    With the identity backward pass `fn` must return the input's shape.
    Not serialisable (it holds Python callables); rebuild it when loading.
    """

    def __init__(self, fn, backward=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(fn):
            raise invalid_value("fn", "a callable (the forward computation)", fn)
        if backward is not None and not callable(backward):
            raise invalid_value("backward", "None (identity) or a differentiable callable", backward)
        self.fn = fn
        self.backward = backward

    def call(self, inputs):
        return bpda_apply(self.fn, self.backward, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        raise NotImplementedError("BPDA wraps Python callables and cannot be serialised; rebuild it after loading.")


def bpda(fn, backward=None, name=None):
    """Wraps `fn` so that gradients flow as if it were the identity (or `backward`).

    Returns a `BPDA` Keras layer: callable on tensors and usable inside
    `keras.Sequential` / functional models.
    """
    return BPDA(fn, backward=backward, name=name)


def convergence_check(attack, model, x, y=None, iteration_factor=2, restarts=5):
    """Robust accuracy of `model` under `attack` and under stronger versions of it.

    Runs the attack as given, with `iteration_factor` x `nb_iter` (attacks
    with `nb_iter` / `max_iterations` / `max_iter`), and with `restarts`
    random restarts (attacks with `nb_restarts`). Returns a dict of robust
    accuracies (fraction of `x` still classified as `y`); a defense whose
    accuracy drops under the stronger settings was not evaluated at convergence.
    """
    from tfdefense._validation import check_images, check_labels
    from tfdefense.inference import predict_labels

    check_number("iteration_factor", iteration_factor, minimum=1, integer=True)
    check_number("restarts", restarts, minimum=1, integer=True)
    x = check_images(x, "x", allow_tensor=False)
    y = predict_labels(model, x) if y is None else check_labels(y, "y", num_examples=len(x))

    def robust_accuracy(a):
        return float(np.mean(predict_labels(model, a(model, x, y)) == y))

    results = {"clean": float(np.mean(predict_labels(model, x) == y)), "attack": robust_accuracy(attack)}
    params = attack.params
    for key in ("nb_iter", "max_iterations", "max_iter", "nb_queries"):
        if key in params:
            stronger = attack.replace(**{key: params[key] * iteration_factor})
            results[f"{key}x{iteration_factor}"] = robust_accuracy(stronger)
            break
    if "nb_restarts" in params and params.get("rand_init", True):
        try:
            stronger = attack.replace(nb_restarts=restarts)
        except ValueError:  # the backend has no restarts
            stronger = None
        if stronger is not None:
            results[f"restarts{restarts}"] = robust_accuracy(stronger)
    return results
