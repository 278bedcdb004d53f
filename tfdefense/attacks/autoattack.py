"""AutoAttack (Croce & Hein 2020) and its parts: APGD (CE / DLR, targeted) and Square.

The standard AutoAttack ensemble is APGD-CE, APGD-T (targeted DLR over the 9
most likely wrong classes), FAB-T (targeted FAB over the same 9 classes, see
`tfdefense.attacks.fab`) and Square (5000 queries), in Linf or L2 (`norm`);
the `autoattack` attack runs all four by default (`components` in its
parameters and in `last_run_info`). FAB-T is native: it also runs natively
under backend="art" (ART has no FAB).

L2 follows Croce & Hein's L2 versions: APGD steps along the L2-normalised
gradient (initial step 2 eps, the same checkpoints and step halving) and
projects exactly onto the L2 ball intersected with [0, 1]
(`_native.l2_ball_box_projection`); FAB-T projects onto the linearised
boundary intersected with the box in L2 (`fab.l2_box_projection`); Square-L2
uses the window-pair update of the Square Attack paper (`square_l2_program`).

The ensemble is a per-example worst case: each component attacks only the
examples no earlier component has broken, so the robust accuracy it reports
is the accuracy on the returned images. `last_run_info["components"]` lists,
per component, its backend, how many examples it was run on, how many it
broke, and the robust fraction after it.

Papers: AutoAttack / APGD https://arxiv.org/abs/2003.01690,
FAB https://arxiv.org/abs/1907.02044, Square https://arxiv.org/abs/1912.00049.
"""

import math

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.attacks._native import (
    NativeMixin,
    best_of_restarts,
    is_success,
    l2_ball_box_projection,
    lp_norm,
    margin,
    model_reference,
    objective,
    project,
    steepest_step,
    value_and_grad_fn,
    where_batch,
)
from tfdefense.attacks.base import (
    Attack,
    canonical_norm,
    norm_order,
    num_classes_of,
    project_numpy,
    register_attack,
    weakrefable,
)
from tfdefense.attacks.fab import FABT
from tfdefense.inference import call_model, predict_labels

# --------------------------------------------------------------------------- APGD


def apgd_checkpoints(nb_iter):
    """Iterations (0-based) after which APGD checks its step size, and the window length there."""
    n_iter_2 = max(int(0.22 * nb_iter), 1)
    n_iter_min = max(int(0.06 * nb_iter), 1)
    size_decr = max(int(0.03 * nb_iter), 1)
    is_check = np.zeros(nb_iter, bool)
    window = np.ones(nb_iter, np.float32)
    k, counter = n_iter_2, 0
    for i in range(nb_iter):
        counter += 1
        if counter == k:
            is_check[i], window[i] = True, k
            k, counter = max(k - size_decr, n_iter_min), 0
    return is_check, window


def apgd_program(model_fn, num_classes, eps, norm, nb_iter, loss, targeted, rho=0.75, eot_samples=1, success="auto"):
    """The APGD graph (Algorithm 1 of Croce & Hein 2020), per-example step sizes.

    `success`: "auto" (targeted: prediction == t; else != y) or "misclassify"
    (prediction != y; AutoAttack's APGD-T). Returns the first adversarial
    iterate per example where one was found, else the highest-loss iterate.
    """
    is_check, window = apgd_checkpoints(nb_iter)
    judge_targeted = targeted and success == "auto"

    def program(x0, y, t, seed):
        def obj(logits):
            return objective(loss, logits, y, t, targeted, num_classes)

        value_and_grad = value_and_grad_fn(model_fn, obj, eot_samples)
        checks = tf.constant(is_check)
        windows = tf.constant(window)

        def to_ball(z):
            if norm == 2:
                return l2_ball_box_projection(x0, z, eps)
            return tf.clip_by_value(x0 + project(z - x0, eps, norm), 0.0, 1.0)

        def step(x, grad, size):
            return x + steepest_step(grad, size, norm)

        if norm == "inf":
            r = tf.random.stateless_uniform(tf.shape(x0), seed, -1.0, 1.0)
            start = x0 + eps * r / tf.maximum(lp_norm(r, "inf"), 1e-12)
        else:
            r = tf.random.stateless_normal(tf.shape(x0), seed)
            start = x0 + eps * r / tf.maximum(lp_norm(r, 2), 1e-12)
        x_adv = tf.clip_by_value(start, 0.0, 1.0)
        value, logits, grad = value_and_grad(x_adv)
        ok = is_success(logits, y, t, judge_targeted)
        step_shape = tf.concat([tf.shape(y), tf.ones([tf.rank(x0) - 1], tf.int32)], 0)
        state = dict(
            x_adv=x_adv,
            x_old=x_adv,
            grad=grad,
            value=value,
            x_best=x_adv,
            grad_best=grad,
            loss_best=value,
            x_found=x_adv,
            found=ok,
            size=tf.fill(step_shape, 2.0 * eps),
            increases=tf.zeros_like(value),
            loss_best_last=value,
            reduced_last=tf.zeros_like(ok),
        )

        def body(i, s):
            a = tf.where(i > 0, 0.75, 1.0)
            z = to_ball(step(s["x_adv"], s["grad"], s["size"]))
            x_new = to_ball(s["x_adv"] + a * (z - s["x_adv"]) + (1.0 - a) * (s["x_adv"] - s["x_old"]))
            value, logits, grad = value_and_grad(x_new)
            ok = is_success(logits, y, t, judge_targeted)
            newly = tf.logical_and(ok, tf.logical_not(s["found"]))
            x_found = where_batch(newly, x_new, s["x_found"])
            found = tf.logical_or(ok, s["found"])
            improved = value > s["loss_best"]
            x_best = where_batch(improved, x_new, s["x_best"])
            grad_best = where_batch(improved, grad, s["grad_best"])
            loss_best = tf.where(improved, value, s["loss_best"])
            increases = s["increases"] + tf.cast(value > s["value"], tf.float32)

            def at_check():
                k = windows[i]
                oscillating = increases <= k * rho
                no_improvement = tf.logical_and(tf.logical_not(s["reduced_last"]), s["loss_best_last"] >= loss_best)
                reduce = tf.logical_or(oscillating, no_improvement)
                size = tf.where(tf.reshape(reduce, step_shape), s["size"] / 2.0, s["size"])
                return (
                    where_batch(reduce, x_best, x_new),
                    where_batch(reduce, grad_best, grad),
                    size,
                    tf.zeros_like(increases),
                    loss_best,
                    reduce,
                )

            def no_check():
                return x_new, grad, s["size"], increases, s["loss_best_last"], s["reduced_last"]

            x_next, grad_next, size, increases, loss_best_last, reduced_last = tf.cond(checks[i], at_check, no_check)
            return i + 1, dict(
                x_adv=x_next,
                x_old=s["x_adv"],
                grad=grad_next,
                value=value,
                x_best=x_best,
                grad_best=grad_best,
                loss_best=loss_best,
                x_found=x_found,
                found=found,
                size=size,
                increases=increases,
                loss_best_last=loss_best_last,
                reduced_last=reduced_last,
            )

        _, state = tf.while_loop(lambda i, s: i < nb_iter, body, (tf.constant(0), state))
        return where_batch(state["found"], state["x_found"], state["x_best"])

    return program


def _checked_eps_and_norm(p):
    """A copy of the params with eps checked (>= 0) and norm canonical ("inf" or 2)."""
    p = dict(p)
    check_number("eps", p["eps"], minimum=0)
    p["norm"] = canonical_norm(p["norm"], ("inf", 2))
    return p


@register_attack("apgd", backends=("native", "art"))
class APGD(NativeMixin, Attack):
    """Auto-PGD: step-size-free PGD with momentum and checkpoints (Croce & Hein 2020).

    Params: eps (0.3), norm ("inf" or 2: the L2-normalised gradient step and the
    exact projection onto the L2 ball intersected with [0, 1]), nb_iter (100), loss ("ce" or "dlr";
    targeted "dlr" is the paper's targeted DLR), rho (0.75), nb_restarts (1;
    per-example best kept), targeted, target, eot_samples (native), compute_dtype (native:
    "bfloat16" traces the model under mixed_bfloat16), seed. ART: initial step 2 * eps as in the paper;
    ART's targeted DLR differs from the paper's.
    """

    bounded = True
    defaults = {
        "eps": 0.3,
        "norm": "inf",
        "nb_iter": 100,
        "loss": "ce",
        "rho": 0.75,
        "nb_restarts": 1,
        "targeted": False,
        "target": None,
        "eot_samples": 1,
        "compute_dtype": None,
        "seed": None,
    }
    unsupported = {"art": ("rho", "eot_samples", "compute_dtype")}
    art_method = "AutoProjectedGradientDescent"

    def _check_params(self, p):
        p = _checked_eps_and_norm(p)
        check_number("nb_iter", p["nb_iter"], minimum=1, integer=True)
        check_choice("loss", p["loss"], ("ce", "dlr"))
        check_number("rho", p["rho"], minimum=0, maximum=1)
        check_number("nb_restarts", p["nb_restarts"], minimum=1, integer=True)
        check_number("eot_samples", p["eot_samples"], minimum=1, integer=True)
        return p

    def _build_native(self, model_fn, num_classes):
        p = self._params
        single = apgd_program(
            model_fn,
            num_classes,
            float(p["eps"]),
            p["norm"],
            int(p["nb_iter"]),
            p["loss"],
            p["targeted"],
            float(p["rho"]),
            int(p["eot_samples"]),
        )
        restarts, targeted, loss = int(p["nb_restarts"]), p["targeted"], p["loss"]
        if restarts == 1:
            return single

        def program(x0, y, t, seed):
            def obj(logits):
                return objective(loss, logits, y, t, targeted, num_classes)

            return best_of_restarts(
                lambda run_seed: single(x0, y, t, run_seed), model_fn, obj, x0, y, t, targeted, seed, restarts
            )

        return program

    def _art_params(self):
        p = self._params
        return dict(
            norm=norm_order(p["norm"]),
            eps=p["eps"],
            eps_step=2 * p["eps"],
            max_iter=p["nb_iter"],
            targeted=p["targeted"],
            nb_random_init=p["nb_restarts"],
            loss_type={"ce": "cross_entropy", "dlr": "difference_logits_ratio"}[p["loss"]],
            verbose=False,
        )


# --------------------------------------------------------------------------- Square


def square_schedule(p_init, nb_queries, num_features, channels):
    """Square's side length per iteration (the paper's piecewise-constant p schedule)."""
    sides = []
    for it in range(nb_queries):
        i = int(it / nb_queries * 10000)
        p = p_init
        for bound, div in (
            (10, 1),
            (50, 2),
            (200, 4),
            (500, 8),
            (1000, 16),
            (2000, 32),
            (4000, 64),
            (6000, 128),
            (8000, 256),
            (10000, 512),
        ):
            if i > bound:
                p = p_init / (div * 2)
        sides.append(max(int(round(math.sqrt(p * num_features / channels))), 1))
    return np.array(sides, np.int32)


def square_program(model_fn, num_classes, eps, nb_queries, p_init, targeted, image_shape):
    """Linf Square attack: random search over square patches of +-eps (Andriushchenko et al.).

    Loss: margin (untargeted) or cross-entropy (targeted), as in the paper's
    code. Only still-unbroken examples are queried; one query per iteration.
    """
    h, w, c = image_shape
    sides = square_schedule(p_init, nb_queries, h * w * c, c)

    def program(x0, y, t, seed):
        label = t if targeted else y

        def margin_and_loss(logits, lab):
            return _square_losses(logits, lab, targeted, num_classes)

        seeds = tf.random.experimental.stateless_split(seed, 2)
        stripes = tf.sign(tf.random.stateless_uniform([tf.shape(x0)[0], 1, w, c], seeds[0], -1.0, 1.0))
        x_best = tf.clip_by_value(x0 + eps * stripes, 0.0, 1.0)
        margin0, loss0 = margin_and_loss(model_fn(x_best), label)
        side_table = tf.constant(sides)
        rows = tf.range(h)[:, None, None]
        cols = tf.range(w)[None, :, None]

        def body(i, x_best, margin_min, loss_min):
            idx = tf.where(margin_min > 0)[:, 0]
            xa, x0a, la = tf.gather(x_best, idx), tf.gather(x0, idx), tf.gather(label, idx)
            s = side_table[i]
            it_seed = tf.random.experimental.stateless_fold_in(seeds[1], i)
            pos_seed, val_seed = tf.unstack(tf.random.experimental.stateless_split(it_seed, 2))
            pos = tf.random.stateless_uniform([2], pos_seed, 0, 2**30, dtype=tf.int32)
            ch, cw = pos[0] % (h - s + 1), pos[1] % (w - s + 1)
            window = tf.logical_and(
                tf.logical_and(rows >= ch, rows < ch + s), tf.logical_and(cols >= cw, cols < cw + s)
            )
            values = eps * tf.sign(tf.random.stateless_uniform([tf.shape(idx)[0], 1, 1, c], val_seed, -1.0, 1.0))
            delta = tf.where(window[None], values, xa - x0a)
            x_new = tf.clip_by_value(x0a + delta, 0.0, 1.0)
            m_new, l_new = margin_and_loss(model_fn(x_new), la)
            return (i + 1, *_square_accept(idx, x_new, xa, m_new, l_new, x_best, margin_min, loss_min))

        return _square_loop(body, nb_queries, x_best, margin0, loss0)

    return program


def _pseudo_gaussian_rectangle(rows, cols):
    """The paper's bump on a rows x cols rectangle: nested rectangles weighted 1 / (k + 1)^2, unit L2 norm."""
    delta = np.zeros([rows, cols])
    r0, c0 = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[max(r0 - k, 0) : min(r0 - k + 2 * k + 1, rows), max(c0 - k, 0) : min(c0 - k + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2
        )
    return delta / max(np.sqrt(np.sum(delta**2)), 1e-12)


def square_l2_window(side):
    """Square-L2's s x s update: a bump in the top half, the opposite bump in the bottom half, unit L2 norm."""
    delta = np.zeros([side, side])
    delta[: side // 2] = _pseudo_gaussian_rectangle(side // 2, side)
    delta[side // 2 :] = -_pseudo_gaussian_rectangle(side - side // 2, side)
    return delta / max(np.sqrt(np.sum(delta**2)), 1e-12)


def square_l2_sides(p_init, nb_queries, image_shape):
    """Square-L2's window side per iteration: the p schedule, at least 3, odd, at most the image side."""
    h, w, c = image_shape
    sides = []
    for side in square_schedule(p_init, nb_queries, h * w * c, c):
        side = max(int(side), 3)
        side += 1 - side % 2
        sides.append(min(side, h, w))
    return np.array(sides, np.int32)


def square_l2_init(image_shape):
    """The initial Square-L2 perturbation's parts: a grid of bumps of side h // 5 (numpy, [h, w] each).

    Returns (pattern, transposed, cell): the grid with every bump in one
    orientation, in the other, and the cell index of each pixel (-1 outside).
    """
    h, w, _ = image_shape
    side = max(h // 5, 1)
    start = max((h - side * 5) // 2, 0)
    pattern, transposed = np.zeros([h, w]), np.zeros([h, w])
    cell = np.full([h, w], -1, np.int32)
    bump = square_l2_window(side)
    count = 0
    for row in range(start, h - side + 1, side):
        for col in range(start, w - side + 1, side):
            pattern[row : row + side, col : col + side] = bump
            transposed[row : row + side, col : col + side] = bump.T
            cell[row : row + side, col : col + side] = count
            count += 1
    return pattern.astype(np.float32), transposed.astype(np.float32), cell, max(count, 1)


def square_l2_program(model_fn, num_classes, eps, nb_queries, p_init, targeted, image_shape):
    """L2 Square attack (Andriushchenko et al. 2020, Algorithm 3 and its code).

    Start: a grid of bumps of side h // 5 with random signs per example,
    cell and channel, scaled to L2 norm eps and clipped to [0, 1]. Each query
    draws two windows W1, W2 of side s (the p schedule, odd, >= 3), moves
    the perturbation mass of W1 and W2 into W1 (per channel: the old content
    of W1, normalised, plus a new two-bump pattern of random sign, rescaled to
    sqrt(||delta on W1 u W2||^2 + (eps^2 - ||delta||^2) / c)), zeroes W2,
    rescales the whole perturbation to norm eps and clips to [0, 1]; the
    candidate replaces the current point when the loss decreases. Window
    positions and the pattern's orientation are shared by the batch, signs are
    per example and channel. Loss: margin (untargeted) or cross-entropy
    (targeted); only still-unbroken examples are queried.
    """
    h, w, c = image_shape
    sides = square_l2_sides(p_init, nb_queries, image_shape)
    distinct = sorted(set(sides.tolist()))
    table = np.zeros([len(distinct), 2, h, w], np.float32)  # each window pattern at the top-left corner
    for k, side in enumerate(distinct):
        window = square_l2_window(side)
        table[k, 0, :side, :side], table[k, 1, :side, :side] = window, window.T
    side_index = np.array([distinct.index(side) for side in sides], np.int32)
    init, init_t, cells, num_cells = square_l2_init(image_shape)

    def program(x0, y, t, seed):
        label = t if targeted else y
        batch = tf.shape(x0)[0]
        seeds = tf.random.experimental.stateless_split(seed, 3)
        signs = tf.sign(tf.random.stateless_uniform([batch, num_cells, c], seeds[0], -1.0, 1.0))
        flips = tf.random.stateless_uniform([num_cells], seeds[1]) > 0.5
        cell_ids = tf.constant(np.maximum(cells, 0))
        inside = tf.constant((cells >= 0)[..., None], tf.float32)
        bumps = tf.where(tf.gather(flips, cell_ids), tf.constant(init_t), tf.constant(init))[..., None]
        delta = bumps * inside * tf.gather(signs, cell_ids, axis=1)  # [B, h, w, c]
        delta = delta / tf.maximum(lp_norm(delta, 2), 1e-12) * eps
        x_best = tf.clip_by_value(x0 + delta, 0.0, 1.0)
        margin0, loss0 = _square_losses(model_fn(x_best), label, targeted, num_classes)
        patterns = tf.constant(table)
        side_table, index_table = tf.constant(sides), tf.constant(side_index)
        rows = tf.range(h)[:, None, None]
        cols = tf.range(w)[None, :, None]

        def window_at(top, left, s):
            return tf.logical_and(
                tf.logical_and(rows >= top, rows < top + s), tf.logical_and(cols >= left, cols < left + s)
            )[None]  # [1, h, w, 1]

        def body(i, x_best, margin_min, loss_min):
            idx = tf.where(margin_min > 0)[:, 0]
            xa, x0a, la = tf.gather(x_best, idx), tf.gather(x0, idx), tf.gather(label, idx)
            s = side_table[i]
            it_seed = tf.random.experimental.stateless_fold_in(seeds[2], i)
            pos_seed, val_seed = tf.unstack(tf.random.experimental.stateless_split(it_seed, 2))
            pos = tf.random.stateless_uniform([5], pos_seed, 0, 2**30, dtype=tf.int32)
            first = window_at(pos[0] % (h - s + 1), pos[1] % (w - s + 1), s)
            second = window_at(pos[2] % (h - s + 1), pos[3] % (w - s + 1), s)
            both = tf.logical_or(first, second)
            d = xa - x0a
            first_f, both_f = tf.cast(first, tf.float32), tf.cast(both, tf.float32)
            norm_first = tf.sqrt(tf.reduce_sum(tf.square(d) * first_f, [1, 2], keepdims=True))  # [n, 1, 1, c]
            norm_both = tf.sqrt(tf.reduce_sum(tf.square(d) * both_f, [1, 2], keepdims=True))
            norm_image = lp_norm(d, 2)
            pattern = tf.roll(
                patterns[index_table[i], pos[4] % 2], [pos[0] % (h - s + 1), pos[1] % (w - s + 1)], [0, 1]
            )[None, :, :, None]
            values = tf.sign(tf.random.stateless_uniform([tf.shape(idx)[0], 1, 1, c], val_seed, -1.0, 1.0))
            new = pattern * values + d * first_f / (norm_first + 1e-12)
            new_norm = tf.sqrt(tf.reduce_sum(tf.square(new), [1, 2], keepdims=True))
            target_norm = tf.sqrt(tf.maximum(eps**2 - tf.square(norm_image), 0.0) / c + tf.square(norm_both))
            new = new / tf.maximum(new_norm, 1e-12) * target_norm
            d = tf.where(first, new, tf.where(both, 0.0, d))
            x_new = tf.clip_by_value(x0a + d / tf.maximum(lp_norm(d, 2), 1e-12) * eps, 0.0, 1.0)
            m_new, l_new = _square_losses(model_fn(x_new), la, targeted, num_classes)
            return (i + 1, *_square_accept(idx, x_new, xa, m_new, l_new, x_best, margin_min, loss_min))

        return _square_loop(body, nb_queries, x_best, margin0, loss0)

    return program


def _square_accept(idx, x_new, x_current, m_new, l_new, x_best, margin_min, loss_min):
    """Square's accept step: the candidates `x_new` of the still-unbroken examples `idx` replace their
    current images where they lower the loss; returns the updated (x_best, margin_min, loss_min)."""
    import tensorflow as tf

    better = l_new < tf.gather(loss_min, idx)
    x_best = tf.tensor_scatter_nd_update(x_best, idx[:, None], where_batch(better, x_new, x_current))
    margin_min = tf.tensor_scatter_nd_update(
        margin_min, idx[:, None], tf.where(better, m_new, tf.gather(margin_min, idx))
    )
    loss_min = tf.tensor_scatter_nd_update(loss_min, idx[:, None], tf.where(better, l_new, tf.gather(loss_min, idx)))
    return x_best, margin_min, loss_min


def _square_loop(body, nb_queries, x_best, margin0, loss0):
    """Runs Square's `body(i, x_best, margin_min, loss_min)` until the query budget is spent or every example is
    broken; returns the best images."""
    import tensorflow as tf

    _, x_best, _, _ = tf.while_loop(
        lambda i, x_best, margin_min, loss_min: tf.logical_and(i < nb_queries - 1, tf.reduce_any(margin_min > 0)),
        body,
        (tf.constant(0), x_best, margin0, loss0),
    )
    return x_best


def _square_losses(logits, label, targeted, num_classes):
    """(margin, loss) of Square: margin > 0 while `label` is not yet predicted (targeted) / still predicted."""
    m = margin(logits, label, num_classes)  # > 0: label not predicted
    if targeted:
        return m, tf.nn.sparse_softmax_cross_entropy_with_logits(label, logits)
    return -m, -m  # untargeted: minimise z_y - max_other


@register_attack("square", backends=("native", "art"))
class Square(NativeMixin, Attack):
    """Square attack: score-based (gradient-free) random search (Andriushchenko et al. 2020).

    Params: eps (0.3), norm ("inf" or 2), nb_queries (5000: model queries
    per example, the first included), p_init (0.8, AutoAttack's value for both
    norms), targeted, target, seed; nb_restarts (ART only). Native: Linf
    (`square_program`) and L2 (`square_l2_program`). No compute_dtype: in bfloat16 the
    margins round too coarsely to rank the candidates (300 queries broke 86 of 100 digits
    of model C, against 99 in float32).
    """

    bounded = True
    defaults = {
        "eps": 0.3,
        "norm": "inf",
        "nb_queries": 5000,
        "p_init": 0.8,
        "nb_restarts": 1,
        "targeted": False,
        "target": None,
        "seed": None,
    }
    unsupported = {"native": ("nb_restarts",)}
    art_method = "SquareAttack"

    def _check_params(self, p):
        p = _checked_eps_and_norm(p)
        check_number("nb_queries", p["nb_queries"], minimum=1, integer=True)
        check_number("p_init", p["p_init"], minimum=0, maximum=1)
        check_number("nb_restarts", p["nb_restarts"], minimum=1, integer=True)
        return p

    def _build_native(self, model_fn, num_classes):
        p = self._params
        build = square_program if p["norm"] == "inf" else square_l2_program
        return build(
            model_fn,
            num_classes,
            float(p["eps"]),
            int(p["nb_queries"]),
            float(p["p_init"]),
            p["targeted"],
            self._image_shape,
        )

    def _run_native(self, model, x, y, targets):
        self._image_shape = tuple(x.shape[1:])
        return super()._run_native(model, x, y, targets)

    def _art_params(self):
        p = self._params
        # ART counts iterations, each one query per example after the initial one
        return dict(
            norm=norm_order(p["norm"]),
            eps=p["eps"],
            max_iter=max(1, p["nb_queries"] - 1),
            p_init=p["p_init"],
            nb_restarts=p["nb_restarts"],
            verbose=False,
        )


# --------------------------------------------------------------------------- AutoAttack

STANDARD_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
AVAILABLE_COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")


@register_attack("autoattack", backends=("native", "art"))
class AutoAttack(Attack):
    """The standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square.

    Per-example worst case over `components` run in order, each on the
    examples still classified correctly (untargeted robustness).
    Params: eps (0.3), norm ("inf" or 2: every component in that norm),
    components (("apgd-ce", "apgd-t", "fab-t",
    "square"); also "apgd-dlr"), nb_iter (100 APGD and FAB iterations),
    n_target_classes (9, APGD-T and FAB-T), nb_queries (5000 Square queries),
    seed. With backend="native" every component runs natively, with
    backend="art" APGD and Square are ART's and FAB-T native.
    `last_run_info["components"]` reports per component: name, backend,
    attacked, broken, robust_after; `last_run_info["not_run"]` what was left out.
    """

    bounded = True
    defaults = {
        "eps": 0.3,
        "norm": "inf",
        "components": STANDARD_COMPONENTS,
        "nb_iter": 100,
        "n_target_classes": 9,
        "nb_queries": 5000,
        "seed": None,
    }

    def _check_params(self, p):
        p = _checked_eps_and_norm(p)
        components = p["components"]
        if isinstance(components, str) or not isinstance(components, (list, tuple)) or not components:
            raise invalid_value("components", f"a non-empty list drawn from {list(AVAILABLE_COMPONENTS)}", components)
        for name in components:
            if name not in AVAILABLE_COMPONENTS:
                raise invalid_value("components", f"names from {list(AVAILABLE_COMPONENTS)}", components)
        if len(set(components)) != len(components):
            raise invalid_value("components", "distinct names", components)
        p["components"] = list(components)
        check_number("nb_iter", p["nb_iter"], minimum=1, integer=True)
        check_number("n_target_classes", p["n_target_classes"], minimum=1, integer=True)
        check_number("nb_queries", p["nb_queries"], minimum=1, integer=True)
        return p

    @property
    def params(self):
        p = dict(self._params)
        p["components"] = list(p["components"])
        return p

    def _component_attack(self, name, target=None):
        p = self._params
        seed = int(self._rng.integers(0, 2**31 - 1))
        if name == "square":
            return Square(backend=self.backend, eps=p["eps"], norm=p["norm"], nb_queries=p["nb_queries"], seed=seed)
        if name == "fab-t":
            return FABT(
                eps=p["eps"], norm=p["norm"], nb_iter=p["nb_iter"], n_target_classes=p["n_target_classes"], seed=seed
            )
        loss = "ce" if name == "apgd-ce" else "dlr"
        return APGD(
            backend=self.backend,
            eps=p["eps"],
            norm=p["norm"],
            nb_iter=p["nb_iter"],
            loss=loss,
            seed=seed,
            targeted=name == "apgd-t",
        )

    def _run_component(self, name, model, x, y, num_classes):
        """Adversarial images for the component `name` (untargeted success) on x."""
        attack = self._component_attack(name)
        if name != "apgd-t":
            return attack(model, x, y), attack.backend
        # APGD-T: the paper's targeted DLR towards the k-th most likely class, k = 2..n+1,
        # success = misclassification; each target runs on what is still robust.
        logits = np.concatenate([np.asarray(call_model(model, x[i : i + 512])) for i in range(0, len(x), 512)])
        order = np.argsort(-logits, axis=1)
        x_adv = x.copy()
        robust = np.ones(len(x), bool)
        for k in range(1, min(self._params["n_target_classes"], num_classes - 1) + 1):
            if not robust.any():
                break
            idx = np.where(robust)[0]
            targets = order[idx, k]
            if attack.backend == "native":
                out = self._apgd_t_native(attack, model, x[idx], y[idx], targets, num_classes)
            else:
                out = attack(model, x[idx], y[idx], y_target=targets)
            broke = predict_labels(model, out) != y[idx]
            x_adv[idx[broke]] = out[broke]
            robust[idx[broke]] = False
        return x_adv, attack.backend

    def _apgd_t_native(self, attack, model, x, y, targets, num_classes):
        p = attack.params
        key = ("apgd-t", tuple(x.shape[1:]), num_classes)
        per_model = self._programs.setdefault(model, {}) if weakrefable(model) else {}
        if key not in per_model:
            model_ref = model_reference(model)
            program = apgd_program(
                lambda z: call_model(model_ref(), z),
                num_classes,
                float(p["eps"]),
                p["norm"],
                int(p["nb_iter"]),
                "dlr",
                True,
                success="misclassify",
            )
            fn = tf.function(
                program,
                input_signature=[
                    tf.TensorSpec([None, *x.shape[1:]], tf.float32),
                    tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([2], tf.int64),
                ],
            )
            per_model[key] = fn.get_concrete_function()
        seed = tf.constant(self._next_seed(), tf.int64)
        out = per_model[key](tf.constant(x), tf.constant(y), tf.constant(targets.astype(np.int64)), seed).numpy()
        return project_numpy(x, out, p["eps"], p["norm"])

    def _run(self, model, x, y, targets):
        num_classes = num_classes_of(model, x)
        x_adv = x.copy()
        robust = predict_labels(model, x) == y
        report = []
        for name in self._params["components"]:
            idx = np.where(robust)[0]
            if len(idx) == 0:
                report.append({"name": name, "backend": None, "attacked": 0, "broken": 0, "robust_after": 0.0})
                continue
            out, backend = self._run_component(name, model, x[idx], y[idx], num_classes)
            broke = predict_labels(model, out) != y[idx]
            x_adv[idx[broke]] = out[broke]
            robust[idx[broke]] = False
            report.append(
                {
                    "name": name,
                    "backend": backend,
                    "attacked": int(len(idx)),
                    "broken": int(broke.sum()),
                    "robust_after": float(robust.mean()),
                }
            )
        self._report = report
        return x_adv

    _run_native = _run_art = None  # both backends go through `_run` (the ensemble loop)

    def _extra_info(self):
        p = self._params
        not_run = {name: "not in `components`" for name in STANDARD_COMPONENTS if name not in p["components"]}
        return {"components": self._report, "not_run": not_run}
