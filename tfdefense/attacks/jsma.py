"""JSMA, the Jacobian-based Saliency Map Attack (L0, targeted). Paper: https://arxiv.org/abs/1511.07528."""

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_number, invalid_value
from tfdefense.attacks._native import NativeMixin
from tfdefense.attacks.base import Attack, check_bool, register_attack

PAIR_BUDGET = 64_000_000  # pair-saliency entries per graph call (~256 MB float32)


@register_attack("jsma", backends=("native", "art"))
class JSMA(NativeMixin, Attack):
    """Jacobian-based Saliency Map Attack (Papernot et al.), targeted.

    Native: the paper's pairwise saliency map. Each iteration takes the
    gradients of the target logit and of the sum of the other logits, picks
    the feature pair (p, q) in the search domain with alpha = dZ_t/dp + dZ_t/dq > 0,
    beta = dZ_other/dp + dZ_other/dq < 0 (signs flipped for theta < 0)
    maximising alpha * |beta|, moves both by theta and removes them from the
    domain; stops at the target or after gamma * n_features / 2 iterations.
    Batched over examples (chunked so the pair map stays ~256 MB).
    ART's SaliencyMapMethod picks one feature at a time.

    Params: theta (1.0: change per selected feature, in [0, 1] units; sign
    picks increase / decrease), gamma (0.1: maximum fraction of features
    changed), use_logits (False: saliency from the softmax probabilities, as in
    the paper's forward derivative of F; True: from the logits, which on
    model C hits the target about half as often), target ("random" or
    y_target= at call), seed.
    """

    defaults = {"targeted": True, "target": "random", "theta": 1.0, "gamma": 0.1, "use_logits": False, "seed": None}
    targeted_only = True
    unsupported = {"art": ("use_logits",)}
    art_method = "SaliencyMapMethod"

    def _check_params(self, p):
        p["use_logits"] = check_bool("use_logits", p["use_logits"])
        check_number("theta", p["theta"], minimum=-1, maximum=1)
        if p["theta"] == 0:
            raise invalid_value("theta", "a non-zero value in [-1, 1]", p["theta"])
        check_number("gamma", p["gamma"], minimum=0, maximum=1)
        return p

    def _build_native(self, model_fn, num_classes):
        p = self._params
        theta = float(p["theta"])
        increase = theta > 0
        gamma = float(p["gamma"])
        use_logits = bool(p["use_logits"])

        def program(x0, y, t, seed):
            shape = tf.shape(x0)
            batch = shape[0]
            num_features = tf.reduce_prod(shape[1:])
            max_iters = tf.cast(tf.floor(tf.cast(num_features, tf.float32) * gamma / 2.0), tf.int32)
            flat0 = tf.reshape(x0, [batch, -1])
            domain = flat0 < 1.0 if increase else flat0 > 0.0
            eye = tf.eye(num_features, dtype=tf.bool)
            sign = 1.0 if increase else -1.0

            def body(i, flat, domain, active):
                idx = tf.where(active)[:, 0]
                xa = tf.reshape(tf.gather(flat, idx), tf.concat([[tf.shape(idx)[0]], shape[1:]], 0))
                ta = tf.gather(t, idx)
                n = tf.shape(idx)[0]
                twice = tf.concat([xa, xa], axis=0)
                with tf.GradientTape() as tape:
                    tape.watch(twice)
                    logits = model_fn(twice)
                    if not use_logits:
                        logits = tf.nn.softmax(logits)
                    z_t = tf.gather(logits[:n], ta, batch_dims=1)
                    z_all = tf.reduce_sum(logits[n:], axis=1)
                    total = tf.reduce_sum(z_t) + tf.reduce_sum(z_all)
                grads = tape.gradient(total, twice, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                grads = tf.reshape(grads, [2 * n, -1])
                g_t, g_o = grads[:n], grads[n:] - grads[:n]
                pred = tf.argmax(logits[:n], axis=1, output_type=tf.int64)
                dom = tf.gather(domain, idx)
                # features outside the domain are pushed out of contention (as in cleverhans' jsma_symbolic)
                g_t = tf.where(dom, g_t, g_t - sign * tf.reduce_max(tf.abs(g_t), axis=1, keepdims=True))
                g_o = tf.where(dom, g_o, g_o + sign * tf.reduce_max(tf.abs(g_o), axis=1, keepdims=True))
                alpha = g_t[:, :, None] + g_t[:, None, :]
                beta = g_o[:, :, None] + g_o[:, None, :]
                mask = tf.logical_and(alpha > 0, beta < 0) if increase else tf.logical_and(alpha < 0, beta > 0)
                mask = tf.logical_and(mask, tf.logical_not(eye)[None])
                scores = tf.where(mask, -alpha * beta, 0.0)
                best = tf.argmax(tf.reshape(scores, [n, -1]), axis=1, output_type=tf.int32)
                first, second = best // num_features, best % num_features
                pair = (tf.one_hot(first, num_features) + tf.one_hot(second, num_features)) > 0
                xs = tf.gather(flat, idx)
                keep_going = tf.logical_and(tf.not_equal(pred, ta), tf.reduce_sum(tf.cast(dom, tf.int32), axis=1) >= 2)
                change = tf.logical_and(pair, keep_going[:, None])
                xs = tf.where(change, tf.clip_by_value(xs + theta, 0.0, 1.0), xs)
                flat = tf.tensor_scatter_nd_update(flat, idx[:, None], xs)
                domain = tf.tensor_scatter_nd_update(domain, idx[:, None], tf.logical_and(dom, tf.logical_not(change)))
                active = tf.tensor_scatter_nd_update(active, idx[:, None], keep_going)
                return i + 1, flat, domain, active

            _, flat, _, _ = tf.while_loop(
                lambda i, flat, domain, active: tf.logical_and(i < max_iters, tf.reduce_any(active)),
                body,
                (tf.constant(0), flat0, domain, tf.ones([batch], tf.bool)),
            )
            return tf.reshape(flat, shape)

        return program

    def _run_native(self, model, x, y, targets):
        # the pair map holds n_features^2 entries per example: chunk the batch
        chunk = max(1, PAIR_BUDGET // int(np.prod(x.shape[1:])) ** 2)
        parts = [
            super(JSMA, self)._run_native(model, x[i : i + chunk], y[i : i + chunk], targets[i : i + chunk])
            for i in range(0, len(x), chunk)
        ]
        return np.concatenate(parts)

    def _art_params(self):
        return dict(theta=self._params["theta"], gamma=self._params["gamma"], verbose=False)
