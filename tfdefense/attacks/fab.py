"""FAB-T: the targeted Fast Adaptive Boundary attack, Linf and L2 (Croce & Hein, ICML 2020).

Paper: https://arxiv.org/abs/1907.02044. AutoAttack's third component
("FAB-T", https://arxiv.org/abs/2003.01690).

FAB looks for the adversarial example of smallest Lp norm (p = inf or 2). For
target class t it linearises the logit difference f = z_y - z_t at the current
iterate x1, projects both x1 and the clean x0 onto the linearised boundary
{f = 0} intersected with the box [0, 1]^d (the minimal-Lp projection:
`linf_box_projection`, `l2_box_projection`), and moves to

    x1 <- clip((1 - alpha) (x1 + eta d1) + alpha (x0 + eta d2), 0, 1),
    alpha = min(|d1|_p / (|d1|_p + |d2|_p), alpha_max),

i.e. mostly along the step to the boundary, biased back towards x0. When x1
is misclassified (prediction != y: FAB-T counts any misclassification), it is
kept if its norm is the smallest so far and x1 <- x0 + beta (x1 - x0).
The targets are the `n_target_classes` most likely wrong classes of the clean
logits, in order; the first run of each target starts at x0, restarts
(`nb_restarts` > 1) from a random point at Lp distance eps / 2.

For the eps-bounded use (AutoAttack) an example counts as broken when the
smallest perturbation found has Lp norm <= eps; the attack returns that
adversarial image and the clean image where nothing within eps was found.
With `early_stop=True` (AutoAttack's protocol) an example is no longer
iterated once it is broken within eps, and later targets and restarts run only
on the examples not yet broken: the same success as running everything, in
less time. `early_stop=False` runs every target and restart on every example
and returns the minimal-norm adversarial found (when it lies within eps).
`last_min_norms` holds, per example of the last call, the Lp norm of the
smallest adversarial perturbation found (inf: none; 0: misclassified clean).
"""

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_number
from tfdefense.attacks._native import (
    NATIVE_CHUNK,
    lp_norm,
    model_reference,
    where_batch,
)
from tfdefense.attacks.base import (
    Attack,
    call_model,
    canonical_norm,
    check_bool,
    project_numpy,
    register_attack,
    weakrefable,
)
from tfdefense.inference import predict_labels

_NO_ROOM = 2.0  # "room" of coordinates with zero weight: beyond any move inside [0, 1]


def linf_box_projection(point, w, r):
    """The smallest-Linf step d with w . d = r and point + d in [0, 1] (batched, flat [B, D]).

    Moving coordinate i by s_i min(lam, room_i) in the direction s_i = sign(w_i r)
    (room_i: distance to the box edge that way) raises w . d by
    g(lam) = sum_i |w_i| min(lam, room_i), a concave piecewise-linear function;
    the answer is the smallest lam with g(lam) = |r|, found exactly from the
    sorted rooms. When even the box corner falls short (g(inf) < |r|) the step
    goes to that corner (the best the linear model allows). Coordinates with
    w_i = 0 do not move.
    """
    sign_r = tf.sign(r)[:, None]
    w = w * sign_r
    r = tf.abs(r)
    room = tf.where(w > 0, 1.0 - point, tf.where(w < 0, point, _NO_ROOM))
    room = tf.maximum(room, 0.0)
    weight = tf.abs(w)
    order = tf.argsort(room, axis=1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    below = tf.cumsum(weight_sorted * room_sorted, axis=1)  # saturated coordinates' contribution
    remaining = tf.cumsum(weight_sorted, axis=1, exclusive=True, reverse=True)  # weight not yet saturated
    gain = below + room_sorted * remaining  # g at each breakpoint (non-decreasing)
    k = tf.reduce_sum(tf.cast(gain < r[:, None], tf.int32), axis=1)  # breakpoints below the target
    below = tf.concat([tf.zeros_like(below[:, :1]), below], axis=1)
    remaining = tf.concat([tf.reduce_sum(weight, axis=1, keepdims=True), remaining], axis=1)
    below_k = tf.gather(below, k, batch_dims=1)
    remaining_k = tf.gather(remaining, k, batch_dims=1)
    lam = (r - below_k) / tf.maximum(remaining_k, 1e-30)
    feasible = k < tf.shape(w)[1]
    lam = tf.where(feasible, tf.maximum(lam, 0.0), _NO_ROOM)
    return tf.sign(w) * tf.minimum(lam[:, None], room)


def l2_box_projection(point, w, r):
    """The smallest-L2 step d with w . d = r and point + d in [0, 1] (batched, flat [B, D]).

    The KKT conditions give d_i = s_i min(mu |w_i|, room_i) for one mu >= 0, with
    s_i = sign(w_i r) and room_i the distance to the box edge that way; w . d then grows as
    g(mu) = sum_i |w_i| min(mu |w_i|, room_i), piecewise linear and non-decreasing, and mu
    is the smallest value with g(mu) = |r|, found exactly from the sorted breakpoints
    room_i / |w_i|. When even the box corner falls short (g(inf) < |r|) the step goes to
    that corner. Coordinates with w_i = 0 do not move.
    """
    sign_r = tf.sign(r)[:, None]
    w = w * sign_r
    r = tf.abs(r)
    weight = tf.abs(w)
    room = tf.where(w > 0, 1.0 - point, tf.where(w < 0, point, 0.0))
    room = tf.maximum(room, 0.0)
    brk = tf.where(weight > 0, room / tf.maximum(weight, 1e-30), 0.0)  # mu at which coordinate i saturates
    order = tf.argsort(brk, axis=1)
    brk_sorted = tf.gather(brk, order, batch_dims=1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    below = tf.cumsum(weight_sorted * room_sorted, axis=1)  # saturated coordinates' contribution
    remaining = tf.cumsum(tf.square(weight_sorted), axis=1, exclusive=True, reverse=True)
    gain = below + brk_sorted * remaining  # g at each breakpoint (non-decreasing)
    k = tf.reduce_sum(tf.cast(gain < r[:, None], tf.int32), axis=1)
    below = tf.concat([tf.zeros_like(below[:, :1]), below], axis=1)
    remaining = tf.concat([tf.reduce_sum(tf.square(weight), axis=1, keepdims=True), remaining], axis=1)
    below_k = tf.gather(below, k, batch_dims=1)
    remaining_k = tf.gather(remaining, k, batch_dims=1)
    mu = (r - below_k) / tf.maximum(remaining_k, 1e-30)
    feasible = k < tf.shape(w)[1]
    mu = tf.where(feasible, tf.maximum(mu, 0.0), 1e30)
    return tf.sign(w) * tf.minimum(mu[:, None] * weight, room)


BOX_PROJECTIONS = {"inf": linf_box_projection, 2: l2_box_projection}


def fab_target_program(model_fn, nb_iter, alpha_max, eta, beta, norm="inf"):
    """One FAB-T run towards targets t: graph function of (x0, y, t, start_radius, stop_radius, seed).

    Returns (x_best, norm_best): the smallest-norm misclassified iterate per
    example and its Lp norm (`norm` "inf" or 2; inf where none was found; 0 and x0 where x0 is
    already misclassified). Examples whose best norm is <= stop_radius stop
    iterating (stop_radius < 0: none stops).
    """

    box_projection = BOX_PROJECTIONS[norm]

    def program(x0, y, t, start_radius, stop_radius, seed):
        image_shape = tf.shape(x0)
        flat_dim = tf.reduce_prod(image_shape[1:])
        pred0 = tf.argmax(model_fn(x0), axis=1, output_type=tf.int64)
        attackable = tf.equal(pred0, y)
        if norm == "inf":
            noise = tf.random.stateless_uniform(image_shape, seed, -1.0, 1.0)
        else:
            noise = tf.random.stateless_normal(image_shape, seed)
        noise = noise / tf.maximum(lp_norm(noise, norm), 1e-12)
        x1 = tf.clip_by_value(x0 + start_radius * noise, 0.0, 1.0)
        norm_best = tf.where(attackable, np.inf, 0.0)
        x_best = x0

        def active_of(norm_best):
            return tf.logical_and(attackable, norm_best > stop_radius)

        def body(i, x1, x_best, norm_best):
            idx = tf.where(active_of(norm_best))[:, 0]
            xs, x0s = tf.gather(x1, idx), tf.gather(x0, idx)
            ys, ts = tf.gather(y, idx), tf.gather(t, idx)
            n = tf.shape(idx)[0]
            with tf.GradientTape() as tape:
                tape.watch(xs)
                logits = model_fn(xs)
                rows = tf.range(n, dtype=tf.int64)
                diff = tf.gather_nd(logits, tf.stack([rows, ys], 1)) - tf.gather_nd(
                    logits, tf.stack([rows, ts], 1)
                )  # > 0: y still beats t
            grad = tape.gradient(diff, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            w = tf.reshape(grad, [n, flat_dim])
            x1f, x0f = tf.reshape(xs, [n, flat_dim]), tf.reshape(x0s, [n, flat_dim])
            # the linearised boundary: diff + w . (z - x1) = 0
            d12 = box_projection(
                tf.concat([x1f, x0f], 0),
                tf.concat([w, w], 0),
                tf.concat([-diff, tf.reduce_sum(w * (x1f - x0f), axis=1) - diff], 0),
            )
            d1, d2 = d12[:n], d12[n:]
            a1 = tf.maximum(lp_norm(d1, norm), 1e-8)
            a2 = tf.maximum(lp_norm(d2, norm), 1e-8)
            alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, alpha_max)
            x_new = tf.clip_by_value((x1f + eta * d1) * (1.0 - alpha) + (x0f + eta * d2) * alpha, 0.0, 1.0)
            x_new = tf.reshape(x_new, tf.shape(xs))
            adv = tf.not_equal(tf.argmax(model_fn(x_new), axis=1, output_type=tf.int64), ys)
            norms = lp_norm(x_new - x0s, norm, keepdims=False)
            better = tf.logical_and(adv, norms < tf.gather(norm_best, idx))
            x_best = tf.tensor_scatter_nd_update(
                x_best, idx[:, None], where_batch(better, x_new, tf.gather(x_best, idx))
            )
            norm_best = tf.tensor_scatter_nd_update(
                norm_best, idx[:, None], tf.where(better, norms, tf.gather(norm_best, idx))
            )
            x_new = where_batch(adv, x0s + beta * (x_new - x0s), x_new)
            x1 = tf.tensor_scatter_nd_update(x1, idx[:, None], x_new)
            return i + 1, x1, x_best, norm_best

        _, _, x_best, norm_best = tf.while_loop(
            lambda i, x1, x_best, norm_best: tf.logical_and(i < nb_iter, tf.reduce_any(active_of(norm_best))),
            body,
            (tf.constant(0), x1, x_best, norm_best),
        )
        return x_best, norm_best

    return program


@register_attack("fab_t", backends=("native",))
class FABT(Attack):
    """FAB-T, Linf or L2 (Croce & Hein 2020): targeted FAB over the most likely wrong classes.

    Untargeted in effect: an example is broken when misclassified (any class)
    with a perturbation of Lp norm <= eps. Params: eps (0.3), norm ("inf" or 2),
    nb_iter (100 per target and restart), n_target_classes (9), nb_restarts
    (1: from the clean image; further restarts from random points at eps / 2),
    alpha_max (0.1), eta (1.05), beta (0.9), early_stop (True: AutoAttack's
    protocol; False: minimal-norm search over every target), seed.
    `last_min_norms`: the smallest adversarial Lp norm found per example.
    """

    bounded = True
    defaults = {
        "eps": 0.3,
        "norm": "inf",
        "nb_iter": 100,
        "n_target_classes": 9,
        "nb_restarts": 1,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
        "early_stop": True,
        "seed": None,
    }

    def _check_params(self, p):
        p = dict(p)
        check_number("eps", p["eps"], minimum=0)
        p["norm"] = canonical_norm(p["norm"], ("inf", 2))
        check_number("nb_iter", p["nb_iter"], minimum=1, integer=True)
        check_number("n_target_classes", p["n_target_classes"], minimum=1, integer=True)
        check_number("nb_restarts", p["nb_restarts"], minimum=1, integer=True)
        check_number("alpha_max", p["alpha_max"], minimum=0, maximum=1)
        check_number("eta", p["eta"], minimum=1)
        check_number("beta", p["beta"], minimum=0, maximum=1)
        p["early_stop"] = check_bool("early_stop", p["early_stop"])
        return p

    def _program(self, model, image_shape):
        per_model = self._programs.setdefault(model, {}) if weakrefable(model) else {}
        key = (tuple(image_shape), self._params["norm"])
        if key not in per_model:
            model_ref = model_reference(model)
            p = self._params

            def model_fn(z):
                return call_model(model_ref(), z)

            program = fab_target_program(
                model_fn, int(p["nb_iter"]), float(p["alpha_max"]), float(p["eta"]), float(p["beta"]), p["norm"]
            )
            fn = tf.function(
                program,
                autograph=False,
                input_signature=[
                    tf.TensorSpec([None, *image_shape], tf.float32),
                    tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([2], tf.int64),
                ],
            )
            per_model[key] = fn.get_concrete_function()
        return per_model[key]

    def _run_native(self, model, x, y, targets):
        p = self._params
        eps, early_stop = float(p["eps"]), p["early_stop"]
        program = self._program(model, x.shape[1:])
        logits = np.concatenate([np.asarray(call_model(model, x[i : i + 512])) for i in range(0, len(x), 512)])
        num_classes = logits.shape[1]
        logits[np.arange(len(x)), y] = -np.inf
        order = np.argsort(-logits, axis=1, kind="stable")
        x_best = x.copy()
        norm_best = np.where(predict_labels(model, x) != y, 0.0, np.inf).astype(np.float32)
        stop_radius = eps if early_stop else -1.0
        for k in range(min(int(p["n_target_classes"]), num_classes - 1)):
            for restart in range(int(p["nb_restarts"])):
                todo = norm_best > (eps if early_stop else 0.0)
                idx = np.where(todo)[0]
                if len(idx) == 0:
                    break
                start = 0.0 if restart == 0 else 0.5 * eps
                for i in range(0, len(idx), NATIVE_CHUNK):
                    part = idx[i : i + NATIVE_CHUNK]
                    out, norms = program(
                        tf.constant(x[part]),
                        tf.constant(y[part]),
                        tf.constant(order[part, k].astype(np.int64)),
                        tf.constant(start, tf.float32),
                        tf.constant(stop_radius, tf.float32),
                        tf.constant(self._next_seed(), tf.int64),
                    )
                    out, norms = out.numpy(), norms.numpy()
                    better = norms < norm_best[part]
                    x_best[part[better]] = out[better]
                    norm_best[part[better]] = norms[better]
        self.last_min_norms = norm_best
        within = norm_best <= eps
        x_adv = np.where(within.reshape((-1,) + (1,) * (x.ndim - 1)), x_best, x)
        return project_numpy(x, x_adv, eps, p["norm"])

    def _extra_info(self):
        norms = getattr(self, "last_min_norms", None)
        found = norms[np.isfinite(norms)] if norms is not None else np.zeros(0)
        return {"found": int(len(found)), "median_min_norm": float(np.median(found)) if len(found) else None}
