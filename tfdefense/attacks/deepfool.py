"""DeepFool (L2, untargeted, minimum distortion). Paper: https://arxiv.org/abs/1511.04599."""

import tensorflow as tf

from tfdefense._validation import check_number
from tfdefense.attacks._native import NativeMixin
from tfdefense.attacks.base import Attack, register_attack


@register_attack("deepfool", backends=("native", "art"))
class DeepFool(NativeMixin, Attack):
    """DeepFool (Moosavi-Dezfooli et al.), L2, untargeted, minimum distortion.

    Each iteration linearises the logit differences f_k = z_k - z_y for the
    `nb_candidate` - 1 most likely other classes, steps to the nearest
    linearised boundary, and stops an example once
    clip(x + (1 + overshoot) * r_total) is misclassified. Native: batched, all
    candidate gradients from one backward pass over a tiled batch, only
    still-active examples are recomputed. Params: nb_candidate (10),
    overshoot (0.02), max_iter (50). No compute_dtype: bf16 logits are too
    coarse for the linearisation (measured: success 1.00 -> 0.69, 6x slower).
    ART's version applies the overshoot once at the end and computes every
    class gradient for the whole batch each iteration.
    """

    defaults = {"nb_candidate": 10, "overshoot": 0.02, "max_iter": 50}
    art_method = "DeepFool"

    def _check_params(self, p):
        check_number("nb_candidate", p["nb_candidate"], minimum=2, integer=True)
        check_number("overshoot", p["overshoot"], minimum=0)
        check_number("max_iter", p["max_iter"], minimum=1, integer=True)
        return p

    def _build_native(self, model_fn, num_classes):
        p = self._params
        m = min(int(p["nb_candidate"]), num_classes) - 1
        overshoot, max_iter = float(p["overshoot"]), int(p["max_iter"])

        def program(x0, y, t, seed):
            rank = len(x0.shape)
            logits0 = model_fn(x0)
            onehot = tf.one_hot(y, num_classes)
            candidates = tf.math.top_k(logits0 - onehot * 1e9, k=m).indices  # [B, m], classes != y

            def body(i, x_adv, r_tot, active):
                idx = tf.where(active)[:, 0]
                pred = tf.argmax(model_fn(tf.gather(x_adv, idx)), axis=1, output_type=tf.int64)
                still = tf.equal(pred, tf.gather(y, idx))
                done = tf.boolean_mask(idx, tf.logical_not(still))
                active = tf.tensor_scatter_nd_update(active, done[:, None], tf.zeros_like(done, tf.bool))
                idx = tf.boolean_mask(idx, still)

                def update(x_adv=x_adv, r_tot=r_tot, idx=idx):
                    xs, ys, cs = tf.gather(x_adv, idx), tf.gather(y, idx), tf.gather(candidates, idx)
                    n = tf.shape(xs)[0]
                    tiled = tf.tile(xs, [m] + [1] * (rank - 1))  # block k holds candidate k for every example
                    cls = tf.reshape(tf.transpose(cs), [-1])
                    ref = tf.tile(ys, [m])
                    with tf.GradientTape() as tape:
                        tape.watch(tiled)
                        logits = model_fn(tiled)
                        f = tf.gather(logits, cls, batch_dims=1) - tf.gather(logits, ref, batch_dims=1)
                        total = tf.reduce_sum(f)
                    w = tape.gradient(total, tiled, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                    f = tf.transpose(tf.reshape(f, [m, n]))  # [n, m]
                    w = tf.transpose(tf.reshape(w, [m, n, -1]), [1, 0, 2])  # [n, m, D]
                    w_norm = tf.norm(w, axis=2) + 1e-8
                    best = tf.argmin(tf.abs(f) / w_norm, axis=1)
                    f_l = tf.gather(f, best, batch_dims=1)
                    w_l = tf.gather(w, best, batch_dims=1)
                    wn_l = tf.gather(w_norm, best, batch_dims=1)
                    r = ((tf.abs(f_l) / wn_l + 1e-4) / wn_l)[:, None] * w_l
                    r_new = tf.gather(r_tot, idx) + tf.reshape(r, tf.shape(xs))
                    x_new = tf.clip_by_value(tf.gather(x0, idx) + (1.0 + overshoot) * r_new, 0.0, 1.0)
                    r_tot = tf.tensor_scatter_nd_update(r_tot, idx[:, None], r_new)
                    x_adv = tf.tensor_scatter_nd_update(x_adv, idx[:, None], x_new)
                    return x_adv, r_tot

                # (an empty batch through oneDNN's fused convolutions fails, so skip it)
                x_adv, r_tot = tf.cond(tf.size(idx) > 0, update, lambda: (x_adv, r_tot))
                return i + 1, x_adv, r_tot, active

            _, x_adv, _, _ = tf.while_loop(
                lambda i, x_adv, r_tot, active: tf.logical_and(i < max_iter, tf.reduce_any(active)),
                body,
                (tf.constant(0), x0, tf.zeros_like(x0), tf.ones_like(y, tf.bool)),
            )
            return x_adv

        return program

    def _art_params(self):
        p = self._params
        return dict(max_iter=p["max_iter"], epsilon=p["overshoot"], nb_grads=p["nb_candidate"], verbose=False)
