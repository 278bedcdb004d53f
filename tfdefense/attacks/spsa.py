"""SPSA (Uesato et al. 2018): gradient-free Linf attack, Adam on finite-difference estimates.

Useful against gradient masking: it only queries the model's logits.
Paper: https://arxiv.org/abs/1802.05666.
"""

import contextlib

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_number, invalid_value
from tfdefense.attacks._native import NativeMixin, margin, where_batch
from tfdefense.attacks.base import Attack, register_attack

QUERY_BUDGET = 4096  # images per model call in the native graph (examples x samples)


@register_attack("spsa", backends=("native", "cleverhans"))
class SPSA(NativeMixin, Attack):
    """SPSA: Adam steps on SPSA gradient estimates of the margin loss, projected to the Linf ball.

    Each step draws `spsa_samples` / 2 random sign directions (mirrored, so
    `spsa_samples` queries) per example and per `spsa_iters`, estimates the
    gradient of the logit margin from the loss differences, and takes an Adam
    step of size `learning_rate` on the perturbation (random start in the
    ball). Params (cleverhans names): eps (0.3), nb_iter (100),
    learning_rate (0.01), delta (0.01), spsa_samples (128), spsa_iters (1),
    early_stop_loss_threshold (None; native: per example, cleverhans: per
    batch of one), targeted, target, seed.
    cleverhans runs one example at a time (its API requires batch size 1);
    native is batched.
    """

    bounded = True
    defaults = {
        "eps": 0.3,
        "nb_iter": 100,
        "learning_rate": 0.01,
        "delta": 0.01,
        "spsa_samples": 128,
        "spsa_iters": 1,
        "early_stop_loss_threshold": None,
        "targeted": False,
        "target": None,
        "seed": None,
    }

    def _check_params(self, p):
        check_number("eps", p["eps"], minimum=0)
        check_number("nb_iter", p["nb_iter"], minimum=1, integer=True)
        check_number("learning_rate", p["learning_rate"], minimum=0)
        check_number("delta", p["delta"], minimum=0)
        check_number("spsa_samples", p["spsa_samples"], minimum=2, integer=True)
        if p["spsa_samples"] % 2:
            raise invalid_value("spsa_samples", "an even number (directions are mirrored)", p["spsa_samples"])
        check_number("spsa_iters", p["spsa_iters"], minimum=1, integer=True)
        check_number("early_stop_loss_threshold", p["early_stop_loss_threshold"], allow_none=True)
        return p

    def _build_native(self, model_fn, num_classes):
        p = self._params
        eps, nb_iter, lr = float(p["eps"]), int(p["nb_iter"]), float(p["learning_rate"])
        delta, half, iters = float(p["delta"]), int(p["spsa_samples"]) // 2, int(p["spsa_iters"])
        threshold = p["early_stop_loss_threshold"]
        targeted = p["targeted"]
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-7

        def loss_fn(x, label):  # minimised; < 0 once the attack succeeds
            m = margin(model_fn(x), label, num_classes)
            return m if targeted else -m

        def project(x0, pert):
            return tf.clip_by_value(x0 + tf.clip_by_value(pert, -eps, eps), 0.0, 1.0) - x0

        def program(x0, y, t, seed):
            label = t if targeted else y
            shape = tf.shape(x0)
            batch = shape[0]
            seeds = tf.random.experimental.stateless_split(seed, 2)
            pert = project(x0, tf.random.stateless_uniform(shape, seeds[0], -eps, eps))
            label_rep = tf.repeat(label, 2 * half)

            def estimate(pert, it_seed):
                grad = tf.zeros_like(x0)
                for j in range(iters):
                    s = tf.random.experimental.stateless_fold_in(it_seed, j)
                    dirs = delta * tf.sign(
                        tf.random.stateless_uniform(tf.concat([[batch, half], shape[1:]], 0), s, -1.0, 1.0)
                    )
                    dirs = tf.concat([dirs, -dirs], axis=1)  # [B, 2K, ...]
                    points = tf.expand_dims(x0 + pert, 1) + dirs
                    flat = tf.reshape(points, tf.concat([[batch * 2 * half], shape[1:]], 0))
                    values = tf.reshape(
                        loss_fn(flat, label_rep), tf.concat([[batch, 2 * half], tf.ones_like(shape[1:])], 0)
                    )
                    grad += tf.reduce_mean(values * dirs, axis=1) / delta
                return grad

            def body(i, pert, m, v, done):
                grad = estimate(pert, tf.random.experimental.stateless_fold_in(seeds[1], i))
                m = beta1 * m + (1 - beta1) * grad
                v = beta2 * v + (1 - beta2) * tf.square(grad)
                n = tf.cast(i + 1, tf.float32)
                step = lr * (m / (1 - tf.pow(beta1, n))) / (tf.sqrt(v / (1 - tf.pow(beta2, n))) + adam_eps)
                new = project(x0, pert - step)
                new = where_batch(done, pert, new)
                if threshold is not None:
                    done = tf.logical_or(done, loss_fn(x0 + new, label) < threshold)
                return i + 1, new, m, v, done

            zeros = tf.zeros_like(x0)
            _, pert, _, _, _ = tf.while_loop(
                lambda i, pert, m, v, done: tf.logical_and(i < nb_iter, tf.logical_not(tf.reduce_all(done))),
                body,
                (tf.constant(0), pert, zeros, zeros, tf.zeros([batch], tf.bool)),
            )
            return x0 + pert

        return program

    def _run_native(self, model, x, y, targets):
        chunk = max(1, QUERY_BUDGET // int(self._params["spsa_samples"]))
        parts = [
            super(SPSA, self)._run_native(
                model, x[i : i + chunk], y[i : i + chunk], None if targets is None else targets[i : i + chunk]
            )
            for i in range(0, len(x), chunk)
        ]
        return np.concatenate(parts)

    def _run_cleverhans(self, model, x, y, targets):
        from cleverhans.tf2.attacks import spsa as cleverhans_spsa

        p = self._params
        labels = targets if targets is not None else y
        out = []
        with _keras3_spsa_adam(cleverhans_spsa):
            for i in range(len(x)):
                adv = cleverhans_spsa.spsa(
                    model,
                    tf.constant(x[i : i + 1]),
                    tf.constant(labels[i : i + 1]),
                    p["eps"],
                    p["nb_iter"],
                    clip_min=0.0,
                    clip_max=1.0,
                    targeted=p["targeted"],
                    early_stop_loss_threshold=p["early_stop_loss_threshold"],
                    learning_rate=p["learning_rate"],
                    delta=p["delta"],
                    spsa_samples=p["spsa_samples"],
                    spsa_iters=p["spsa_iters"],
                )
                out.append(np.asarray(adv))
        return np.concatenate(out)


@contextlib.contextmanager
def _keras3_spsa_adam(module):
    """Swaps in a Keras-3 compatible `SPSAAdam` while cleverhans' `spsa` runs.

    cleverhans 4.0.0 builds `SPSAAdam(lr=...)` (Keras 2's argument name) and
    reads `self.lr`; Keras 3's Adam takes `learning_rate`. The subclass only
    translates the constructor and the attribute.
    """
    import keras

    original = module.SPSAAdam

    class SPSAAdam(original):
        def __init__(self, lr=0.01, delta=0.01, num_samples=128, num_iters=1, compare_to_analytic_grad=False):
            keras.optimizers.Adam.__init__(self, learning_rate=lr)
            self._delta = delta
            self._num_samples = num_samples // 2  # mirrored +/- directions, as in cleverhans
            self._num_iters = num_iters
            self._compare_to_analytic_grad = compare_to_analytic_grad

        @property
        def lr(self):
            return tf.cast(self.learning_rate, tf.float32)

    module.SPSAAdam = SPSAAdam
    try:
        yield
    finally:
        module.SPSAAdam = original
