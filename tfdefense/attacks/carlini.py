"""Optimisation attacks: C&W (L2, Linf, L0), EAD (elastic net), box-constrained L-BFGS.

These are minimum-distortion attacks: they have no eps, they return the
closest adversarial example found (the input itself where none was found).

Papers: C&W https://arxiv.org/abs/1608.04644, EAD https://arxiv.org/abs/1709.04114,
L-BFGS (Szegedy et al.) https://arxiv.org/abs/1312.6199.
"""

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_choice, check_number
from tfdefense.attacks._backends import cleverhans_cw_l2
from tfdefense.attacks._native import (
    NATIVE_CHUNK,
    NativeMixin,
    model_reference,
    num_classes_from,
    programs_of,
    reduce_axes,
    where_batch,
)
from tfdefense.attacks.base import Attack, check_bool, register_attack
from tfdefense.inference import call_model

_OPT_COMMON = {
    "targeted": False,
    "target": None,
    "confidence": 0.0,
    "learning_rate": 5e-3,
    "binary_search_steps": 5,
    "max_iterations": 1000,
    "initial_const": 1e-2,
}


def _check_opt_params(p):
    check_number("confidence", p["confidence"], minimum=0)
    check_number("learning_rate", p["learning_rate"], above=0)
    if "binary_search_steps" in p:
        check_number("binary_search_steps", p["binary_search_steps"], minimum=1, integer=True)
    check_number("max_iterations", p["max_iterations"], minimum=1, integer=True)
    check_number("initial_const", p["initial_const"], minimum=0)
    if "abort_early" in p:
        p["abort_early"] = check_bool("abort_early", p["abort_early"])
    return p


def _art_optimizer_params(p):
    """The ART keyword arguments the C&W family and EAD share."""
    common = dict(
        confidence=p["confidence"],
        targeted=p["targeted"],
        learning_rate=p["learning_rate"],
        max_iter=p["max_iterations"],
        initial_const=p["initial_const"],
        verbose=False,
    )
    if "binary_search_steps" in p:
        common["binary_search_steps"] = p["binary_search_steps"]
    return common


@register_attack("cw_l2", backends=("native", "cleverhans", "art"))
class CarliniWagnerL2(NativeMixin, Attack):
    """Carlini & Wagner L2: Adam in tanh space, binary search over the constant c.

    Minimises ||x' - x||_2^2 + c * max(z_y - max_{j!=y} z_j + confidence, 0)
    (targeted: max(max_{j!=t} z_j - z_t + confidence, 0)) per example, batched.
    Params (cleverhans names): binary_search_steps (5), max_iterations (1000),
    learning_rate (5e-3), initial_const (1e-2), confidence (0), abort_early
    (True: stop a binary step when the loss stops decreasing, checked every
    max_iterations // 10 steps), targeted, target, seed.
    ART's version has no abort_early and line-searches its step size.
    No compute_dtype: under mixed_bfloat16 it ran 2.5x faster on 2 CPU cores
    but succeeded less often (0.82 -> 0.79 at 2x20 iterations), see docs/attacks.md.
    """

    defaults = {**_OPT_COMMON, "abort_early": True, "seed": None}
    art_method = "CarliniL2Method"

    def _check_params(self, p):
        return _check_opt_params(dict(p))

    def _build_native(self, model_fn, num_classes):
        p = self._params
        targeted = p["targeted"]
        conf = float(p["confidence"])
        lr = float(p["learning_rate"])
        bss, max_iter = int(p["binary_search_steps"]), int(p["max_iterations"])
        c0 = float(p["initial_const"])
        abort_early = bool(p["abort_early"])
        every = max(1, max_iter // 10)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8

        def program(x0, y, t, seed):
            batch = tf.shape(x0)[0]
            label = t if targeted else y
            onehot = tf.one_hot(label, num_classes)
            w0 = _to_tanh_space(x0)

            def binary_step(step, const, lower, upper, best_l2, best_adv):
                def inner(i, stop, prev, mod, m, v, step_ok, best_l2, best_adv):
                    with tf.GradientTape() as tape:
                        tape.watch(mod)
                        x_new = (tf.tanh(w0 + mod) + 1.0) * 0.5
                        logits = model_fn(x_new)
                        l2 = tf.reduce_sum(tf.square(x_new - x0), reduce_axes(x0))
                        gap, ok = _margin(logits, onehot, label, targeted, conf)
                        loss = tf.reduce_sum(l2 + const * tf.maximum(gap, 0.0))
                    grad = tape.gradient(loss, mod, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                    m = beta1 * m + (1 - beta1) * grad
                    v = beta2 * v + (1 - beta2) * tf.square(grad)
                    n = tf.cast(i + 1, tf.float32)
                    lr_t = lr * tf.sqrt(1 - tf.pow(beta2, n)) / (1 - tf.pow(beta1, n))
                    mod = mod - lr_t * m / (tf.sqrt(v) + adam_eps)
                    better = tf.logical_and(ok, l2 < best_l2)
                    best_l2 = tf.where(better, l2, best_l2)
                    best_adv = where_batch(better, x_new, best_adv)
                    step_ok = tf.logical_or(step_ok, ok)
                    check = tf.logical_and(abort_early, tf.equal(i % every, 0))
                    stop = tf.logical_and(check, loss > prev * 0.9999)
                    prev = tf.where(check, loss, prev)
                    return i + 1, stop, prev, mod, m, v, step_ok, best_l2, best_adv

                zeros = tf.zeros_like(x0)
                _, _, _, _, _, _, step_ok, best_l2, best_adv = tf.while_loop(
                    lambda i, stop, *_: tf.logical_and(i < max_iter, tf.logical_not(stop)),
                    inner,
                    (
                        tf.constant(0),
                        tf.constant(False),
                        tf.constant(np.inf, tf.float32),
                        zeros,
                        zeros,
                        zeros,
                        tf.zeros([batch], tf.bool),
                        best_l2,
                        best_adv,
                    ),
                )
                upper = tf.where(step_ok, tf.minimum(upper, const), upper)
                lower = tf.where(step_ok, lower, tf.maximum(lower, const))
                const = tf.where(upper < 1e9, (lower + upper) / 2.0, const * 10.0)
                return step + 1, const, lower, upper, best_l2, best_adv

            _, _, _, _, _, best_adv = tf.while_loop(
                lambda step, *_: step < bss,
                binary_step,
                (
                    tf.constant(0),
                    tf.fill([batch], c0),
                    tf.zeros([batch]),
                    tf.fill([batch], 1e10),
                    tf.fill([batch], np.inf),
                    x0,
                ),
            )
            return best_adv

        return program

    def _run_cleverhans(self, model, x, y, targets):
        labels = targets if targets is not None else y
        return cleverhans_cw_l2(model, x, labels, self.targeted, self._params)

    def _art_params(self):
        return _art_optimizer_params(self._params)


def _to_tanh_space(x):
    return tf.atanh((x * 2.0 - 1.0) * 0.999999)


def _margin(logits, onehot, label, targeted, confidence):
    """(hinge term before the max with 0, prediction changed / target reached) of the C&W loss."""
    real = tf.reduce_sum(onehot * logits, axis=1)
    other = tf.reduce_max(logits - onehot * 1e9, axis=1)
    gap = other - real + confidence if targeted else real - other + confidence
    adjusted = logits - confidence * onehot if targeted else logits + confidence * onehot
    pred = tf.argmax(adjusted, axis=1, output_type=tf.int64)
    return gap, tf.equal(pred, label) if targeted else tf.not_equal(pred, label)


def _specs(image_shape):
    """Batched TensorSpecs of per-example state: flags, counts, scalars, images."""
    return (
        tf.TensorSpec([None], tf.bool),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None, *image_shape], tf.float32),
    )


def _step_or_restart(works, grad, lr, max_iter, c_factor, const, step, adam_t, mod, m, v, per_image):
    """The optimiser's move after one iteration, per example: (c, steps at c, Adam's step count, modifier, m, v).

    Examples whose round succeeded (`works`) restart Adam from a zero modifier at the same c; the
    others take one Adam step (lr, betas 0.9 / 0.999), and after max_iter steps at this c move to
    c * c_factor.
    """
    beta1, beta2 = 0.9, 0.999
    adam_t = adam_t + 1.0
    m_next = beta1 * m + (1 - beta1) * grad
    v_next = beta2 * v + (1 - beta2) * tf.square(grad)
    lr_t = lr * tf.sqrt(1 - tf.pow(beta2, adam_t)) / (1 - tf.pow(beta1, adam_t))
    mod_next = mod - tf.reshape(lr_t, per_image) * m_next / (tf.sqrt(v_next) + 1e-8)
    step = step + 1
    bump = step >= max_iter
    const = tf.where(bump & ~works, const * c_factor, const)
    step = tf.where(bump | works, 0, step)
    zeros = tf.zeros_like(mod)
    return (
        const,
        step,
        tf.where(works, 0.0, adam_t),
        where_batch(works, zeros, mod_next),
        where_batch(works, zeros, m_next),
        where_batch(works, zeros, v_next),
    )


class _PerExampleSchedule:
    """Native runner of the reference code's one-image-at-a-time attacks (C&W Linf and L0), batched.

    Each example carries its own state (round, constant c, Adam moments);
    `_iteration` advances all of them by one Adam step. A graph call runs
    STEPS_PER_CALL iterations; finished examples (state[0] False) leave the
    batch between calls, so stragglers do not cost a full batch. state[-1]
    is the example returned.
    """

    STEPS_PER_CALL = 100

    def _initial_state(self, x0):
        """active, c, steps at this c, Adam's step count, the round's own state, start (tanh space), modifier,
        Adam's m and v, the example returned."""
        n = tf.shape(x0)[0]
        zeros = tf.zeros_like(x0)
        optimiser = [tf.ones([n], tf.bool), tf.fill([n], float(self._params["initial_const"]))]
        optimiser += [tf.zeros([n], tf.int32), tf.zeros([n])]
        return optimiser + [self._round_state(x0), _to_tanh_space(x0), zeros, zeros, zeros, x0]

    def _state_signature(self, image_shape):
        flags, counts, scalars, images = _specs(image_shape)
        return [flags, scalars, counts, scalars, self._round_signature(image_shape)] + [images] * 5

    def _advance_program(self, model, image_shape, num_classes):
        per_model = programs_of(self, model)
        key = (tuple(image_shape), num_classes)
        if key not in per_model:
            model_ref = model_reference(model)
            iteration = self._iteration(lambda x: call_model(model_ref(), x), num_classes)
            steps = self.STEPS_PER_CALL

            def advance(x0, label, *state):
                onehot = tf.one_hot(label, num_classes)
                out = tf.while_loop(
                    lambda i, active, *_: (i < steps) & tf.reduce_any(active),
                    lambda i, *state: (i + 1, *iteration(x0, label, onehot, *state)),
                    (tf.constant(0), *state),
                )
                return out[1:]

            images = tf.TensorSpec([None, *image_shape], tf.float32)
            signature = [images, tf.TensorSpec([None], tf.int64)] + self._state_signature(image_shape)
            per_model[key] = tf.function(advance, input_signature=signature).get_concrete_function()
        return per_model[key]

    def _run_native(self, model, x, y, targets):
        label = targets if self.targeted else y
        advance = self._advance_program(model, x.shape[1:], num_classes_from(model, x))
        out = x.copy()
        for first in range(0, len(x), NATIVE_CHUNK):
            ids = np.arange(first, min(first + NATIVE_CHUNK, len(x)))
            x0, lab = tf.constant(x[ids]), tf.constant(label[ids])
            state = self._initial_state(x0)
            while len(ids):
                state = list(advance(x0, lab, *state))
                active = state[0].numpy()
                out[ids[~active]] = state[-1].numpy()[~active]
                if not active.all():
                    keep = tf.constant(active)
                    ids, x0, lab = ids[active], tf.boolean_mask(x0, keep), tf.boolean_mask(lab, keep)
                    state = [tf.boolean_mask(s, keep) for s in state]
        return out


@register_attack("cw_linf", backends=("native", "art"))
class CarliniWagnerLinf(_PerExampleSchedule, Attack):
    """Carlini & Wagner Linf: a shrinking Linf bound tau, Adam in tanh space, a growing constant c.

    Follows the reference code (nn_robust_attacks, li_attack.py), batched with
    per-example state. Starting from tau = 1, each round minimises
    c * max(z_y - max_{j!=y} z_j + confidence, 0) + sum(max(|x' - x| - tau, 0))
    (targeted: max(max_{j!=t} z_j - z_t + confidence, 0)) with Adam from the
    previous round's example; a round succeeds at the first iterate whose loss
    is below 1e-4 * c and whose prediction has changed (reached the target).
    Then tau becomes decrease_factor * min(tau, Linf of that iterate), the next
    round starts, and so on until tau <= 1/256. After max_iterations steps without
    success c is multiplied by const_factor; once c reaches largest_const the
    example keeps its last successful round (the input itself if none).

    Params (the reference code's names and defaults): learning_rate (5e-3),
    max_iterations (1000 per value of c), initial_const (1e-5), largest_const
    (20), decrease_factor (0.9), const_factor (2), confidence (0), targeted, target.
    ART's CarliniLInfMethod (backend="art") takes the same names; its own
    default is max_iterations=10, at which it barely moves MNIST digits
    (docs/evaluation.md).
    """

    defaults = {
        "targeted": False,
        "target": None,
        "confidence": 0.0,
        "learning_rate": 5e-3,
        "max_iterations": 1000,
        "decrease_factor": 0.9,
        "initial_const": 1e-5,
        "largest_const": 20.0,
        "const_factor": 2.0,
    }
    art_method = "CarliniLInfMethod"
    SMALLEST_TAU = 1.0 / 256  # the reference code stops shrinking tau here

    def _round_state(self, x0):  # tau
        return tf.ones([tf.shape(x0)[0]])

    def _round_signature(self, image_shape):
        return tf.TensorSpec([None], tf.float32)

    def _check_params(self, p):
        p = _check_opt_params(dict(p))
        check_number("decrease_factor", p["decrease_factor"], above=0, below=1)
        check_number("initial_const", p["initial_const"], above=0)
        check_number("largest_const", p["largest_const"], above=0)
        check_number("const_factor", p["const_factor"], above=1)
        return p

    def _iteration(self, model_fn, num_classes):
        p = self._params
        targeted, conf = p["targeted"], float(p["confidence"])
        lr, max_iter = float(p["learning_rate"]), int(p["max_iterations"])
        c_max = float(p["largest_const"])
        decrease, c_factor = float(p["decrease_factor"]), float(p["const_factor"])

        def iteration(x0, label, onehot, active, const, step, adam_t, tau, start, mod, m, v, best):
            axes = reduce_axes(x0)
            per_image = tf.concat([tf.shape(tau), tf.ones([tf.rank(x0) - 1], tf.int32)], axis=0)
            with tf.GradientTape() as tape:
                tape.watch(mod)
                x_new = (tf.tanh(start + mod) + 1.0) * 0.5
                gap, changed = _margin(model_fn(x_new), onehot, label, targeted, conf)
                outside = tf.maximum(tf.abs(x_new - x0) - tf.reshape(tau, per_image), 0.0)
                loss = const * tf.maximum(gap, 0.0) + tf.reduce_sum(outside, axes)
            grad = tape.gradient(loss, mod, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            works = active & changed & (loss < 1e-4 * const)

            # a successful round: keep x_new, tighten tau, restart Adam from x_new
            best = where_batch(works, x_new, best)
            linf = tf.reduce_max(tf.abs(x_new - x0), axes)
            tau = tf.where(works, tf.minimum(tau, linf) * decrease, tau)
            start = where_batch(works, _to_tanh_space(x_new), start)

            const, step, adam_t, mod, m, v = _step_or_restart(
                works, grad, lr, max_iter, c_factor, const, step, adam_t, mod, m, v, per_image
            )
            active = active & ~tf.where(works, tau <= self.SMALLEST_TAU, const >= c_max)
            return active, const, step, adam_t, tau, start, mod, m, v, best

        return iteration

    def _art_params(self):
        p = self._params
        return dict(
            _art_optimizer_params(p),
            decrease_factor=p["decrease_factor"],
            largest_const=p["largest_const"],
            const_factor=p["const_factor"],
        )


@register_attack("cw_l0", backends=("native", "art"))
class CarliniWagnerL0(_PerExampleSchedule, Attack):
    """Carlini & Wagner L0: C&W-L2 rounds on the pixels still allowed to change, fixing the least useful ones.

    Follows the reference code (nn_robust_attacks, l0_attack.py), batched with
    per-example state. Each round minimises, over the allowed pixels only,
    c * max(z_y - max_{j!=y} z_j + 0.01 + confidence, 0) + ||x' - x||_2^2 with
    Adam (tanh space) from the previous round's example; it succeeds at the
    first iterate whose hinge term is below 1e-4. Then up to
    ceil(0.3 * sqrt(pixels changed)) allowed pixels are fixed to the input, in
    increasing order of |sum over channels of the change| * sum over channels
    of |gradient|, stopping after the first whose score exceeds 0.01; the next
    round starts. After max_iterations steps without success c is multiplied
    by const_factor; once c reaches largest_const the example keeps its last
    successful round (the input itself if none). Pixels, not channels, are the
    unit (the reference's independent_channels=False).

    Params (the reference code's defaults): learning_rate (1e-2),
    max_iterations (1000 per value of c), initial_const (1e-3), largest_const
    (2e6), const_factor (2), confidence (0), targeted, target. backend="art"
    (ART's CarliniL0Method) takes binary_search_steps (10) and warm_start
    (True) instead of largest_const and const_factor; ART's own defaults are
    max_iterations=10, initial_const=0.01.
    """

    defaults = {
        "targeted": False,
        "target": None,
        "confidence": 0.0,
        "learning_rate": 1e-2,
        "max_iterations": 1000,
        "initial_const": 1e-3,
        "largest_const": 2e6,
        "const_factor": 2.0,
        "binary_search_steps": 10,
        "warm_start": True,
    }
    unsupported = {"native": ("binary_search_steps", "warm_start"), "art": ("largest_const", "const_factor")}
    art_method = "CarliniL0Method"
    REFERENCE_MARGIN = 0.01  # the reference code's hinge offset (kappa)

    def _round_state(self, x0):  # the pixels still allowed to change
        return tf.ones_like(x0[..., :1])

    def _round_signature(self, image_shape):
        return tf.TensorSpec([None, *image_shape[:-1], 1], tf.float32)

    def _check_params(self, p):
        p = _check_opt_params(dict(p))
        p["warm_start"] = check_bool("warm_start", p["warm_start"])
        check_number("initial_const", p["initial_const"], above=0)
        check_number("largest_const", p["largest_const"], above=0)
        check_number("const_factor", p["const_factor"], above=1)
        return p

    def _iteration(self, model_fn, num_classes):
        p = self._params
        targeted, conf = p["targeted"], float(p["confidence"]) + self.REFERENCE_MARGIN
        lr, max_iter = float(p["learning_rate"]), int(p["max_iterations"])
        c_max, c_factor = float(p["largest_const"]), float(p["const_factor"])

        def iteration(x0, label, onehot, active, const, step, adam_t, allowed, start, mod, m, v, best):
            axes = reduce_axes(x0)
            per_image = tf.concat([tf.shape(const), tf.ones([tf.rank(x0) - 1], tf.int32)], axis=0)
            with tf.GradientTape() as tape:
                tape.watch(mod)
                x_new = (tf.tanh(start + mod) + 1.0) * 0.5 * allowed + (1.0 - allowed) * x0
                gap, changed = _margin(model_fn(x_new), onehot, label, targeted, conf)
                hinge = tf.maximum(gap, 0.0)
                loss = const * hinge + tf.reduce_sum(tf.square(x_new - x0), axes)
            grad = tape.gradient(loss, mod, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            works = active & changed & (hinge < 1e-4)

            # a successful round: keep x_new, fix its least useful allowed pixels, restart Adam from x_new
            best = where_batch(works, x_new, best)
            allowed_next = _fix_pixels(x_new - x0, grad, allowed)
            nothing_left = tf.reduce_sum(allowed, axes) == 0.0
            allowed = where_batch(works, allowed_next, allowed)
            start = where_batch(works, _to_tanh_space(x_new), start)

            const, step, adam_t, mod, m, v = _step_or_restart(
                works, grad, lr, max_iter, c_factor, const, step, adam_t, mod, m, v, per_image
            )
            active = active & ~tf.where(works, nothing_left, const >= c_max)
            return active, const, step, adam_t, allowed, start, mod, m, v, best

        return iteration

    def _art_params(self):
        p = self._params
        return dict(_art_optimizer_params(p), binary_search_steps=p["binary_search_steps"], warm_start=p["warm_start"])


def _fix_pixels(change, grad, allowed):
    """The reference L0 attack's pixel selection, per example: the allowed mask after one round.

    Scores allowed pixels by |sum_c change| * sum_c |grad| and fixes them in
    increasing order: at most max(1, ceil(0.3 * sqrt(pixels changed by more
    than 1e-4))), stopping after the first whose score exceeds 0.01.
    """
    batch = tf.shape(change)[0]
    score = tf.reshape(tf.abs(tf.reduce_sum(change, -1)) * tf.reduce_sum(tf.abs(grad), -1), [batch, -1])
    free = tf.reshape(allowed, [batch, -1]) > 0.5
    moved = tf.reduce_any(tf.abs(change) >= 1e-4, axis=-1)
    equal_count = tf.reduce_sum(tf.cast(tf.reshape(moved, [batch, -1]), tf.float32), axis=1)
    order = tf.argsort(tf.where(free, score, np.inf), axis=1, stable=True)
    ranked = tf.gather(score, order, batch_dims=1)
    n_free = tf.reduce_sum(tf.cast(free, tf.int32), axis=1)
    large = tf.cast(ranked > 0.01, tf.int32)
    first_large = tf.where(tf.reduce_any(ranked > 0.01, axis=1), tf.argmax(large, axis=1, output_type=tf.int32), n_free)
    limit = tf.maximum(1, tf.cast(tf.math.ceil(0.3 * tf.sqrt(equal_count)), tf.int32))
    n_fix = tf.minimum(tf.minimum(limit, first_large + 1), n_free)
    rank = tf.argsort(order, axis=1, stable=True)
    fixed = rank < n_fix[:, None]
    return tf.reshape(tf.cast(free & ~fixed, tf.float32), tf.shape(allowed))


@register_attack("ead", backends=("art",))
class ElasticNet(Attack):
    """EAD, the elastic-net attack (ART's ElasticNet): C&W loss + beta * L1, ISTA updates.

    Params: beta (1e-3), decision_rule ("EN" | "L1" | "L2"), confidence (0),
    learning_rate (0.01), binary_search_steps (9), max_iterations (100),
    initial_const (1e-3), targeted, target.
    """

    defaults = {
        "targeted": False,
        "target": None,
        "confidence": 0.0,
        "learning_rate": 0.01,
        "binary_search_steps": 9,
        "max_iterations": 100,
        "initial_const": 1e-3,
        "beta": 1e-3,
        "decision_rule": "EN",
    }
    art_method = "ElasticNet"

    def _check_params(self, p):
        p = _check_opt_params(dict(p))
        check_number("beta", p["beta"], minimum=0)
        check_choice("decision_rule", p["decision_rule"], ("EN", "L1", "L2"))
        return p

    def _art_params(self):
        p = self._params
        return dict(_art_optimizer_params(p), beta=p["beta"], decision_rule=p["decision_rule"])


@register_attack("lbfgs", backends=("native",))
class LBFGS(Attack):
    """Box-constrained L-BFGS (Szegedy et al.), a targeted attack.

    Minimises c * CE(model(x'), t) + ||x' - x||_2^2 subject to x' in [0, 1]^n
    with scipy's L-BFGS-B (the batch is one separable problem; one TF graph
    evaluates loss and gradient), then binary-searches c per example keeping
    the closest x' classified as t. Params: target ("random" or y_target= at
    call), binary_search_steps (5), max_iterations (1000 L-BFGS-B iterations),
    initial_const (1e-2), seed. Only targeted (as in the paper and cleverhans).
    """

    defaults = {
        "targeted": True,
        "target": "random",
        "binary_search_steps": 5,
        "max_iterations": 1000,
        "initial_const": 1e-2,
        "seed": None,
    }
    targeted_only = True

    def _check_params(self, p):
        check_number("binary_search_steps", p["binary_search_steps"], minimum=1, integer=True)
        check_number("max_iterations", p["max_iterations"], minimum=1, integer=True)
        check_number("initial_const", p["initial_const"], minimum=0)
        return p

    def _loss_fn(self, model, image_shape):
        per_model = self._programs.setdefault(model, {})
        if image_shape not in per_model:
            model_ref = model_reference(model)

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, *image_shape], tf.float32),
                    tf.TensorSpec([None, *image_shape], tf.float32),
                    tf.TensorSpec([None], tf.int64),
                    tf.TensorSpec([None], tf.float32),
                ]
            )
            def loss_and_grad(x_adv, x0, t, const):
                with tf.GradientTape() as tape:
                    tape.watch(x_adv)
                    logits = call_model(model_ref(), x_adv)
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(t, logits)
                    l2 = tf.reduce_sum(tf.square(x_adv - x0), reduce_axes(x0))
                    loss = tf.reduce_sum(const * ce + l2)
                pred = tf.argmax(logits, axis=1, output_type=tf.int64)
                grad = tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return loss, grad, tf.equal(pred, t), l2

            per_model[image_shape] = loss_and_grad
        return per_model[image_shape]

    def _run_native(self, model, x, y, targets):
        from scipy.optimize import fmin_l_bfgs_b

        p = self._params
        fn = self._loss_fn(model, tuple(x.shape[1:]))
        n = len(x)
        x0 = tf.constant(x)
        t = tf.constant(targets)
        const = np.full(n, float(p["initial_const"]), np.float32)
        lower, upper = np.zeros(n, np.float32), np.full(n, 1e10, np.float32)
        best_l2, best = np.full(n, np.inf), x.copy()
        bounds = np.stack([np.zeros(x.size), np.ones(x.size)], axis=1)

        for _ in range(p["binary_search_steps"]):
            const_t = tf.constant(const)

            def func(flat, const_t=const_t):
                loss, grad, _, _ = fn(tf.constant(flat.reshape(x.shape).astype(np.float32)), x0, t, const_t)
                return float(loss), grad.numpy().astype(np.float64).ravel()

            flat, _, _ = fmin_l_bfgs_b(func, x.astype(np.float64).ravel(), bounds=bounds, maxiter=p["max_iterations"])
            x_adv = flat.reshape(x.shape).astype(np.float32)
            _, _, ok, l2 = fn(tf.constant(x_adv), x0, t, const_t)
            ok, l2 = ok.numpy(), l2.numpy()
            better = ok & (l2 < best_l2)
            best[better], best_l2[better] = x_adv[better], l2[better]
            upper = np.where(ok, np.minimum(upper, const), upper)
            lower = np.where(ok, lower, np.maximum(lower, const))
            const = np.where(upper < 1e9, (lower + upper) / 2, const * 10).astype(np.float32)
        return best
