"""Gradient-sign attacks: FGSM, BIM, PGD (random start), MI-FGSM; norms Linf and L2.

Native implementations share one graph: (optional random start) then
`nb_iter` steps `x <- clip_[0,1](x0 + P_eps(x + eps_iter * step(grad) - x0))`
inside a `tf.while_loop` (`_native.pgd_loop`), with optional momentum
(MI-FGSM), EOT gradient averaging (`eot_samples`) and random restarts
(`nb_restarts`, keeping per example the restart that succeeds, else the one
with the highest loss). Each class names its cleverhans function
(`_cleverhans_attack`) and its ART class (`art_method`, `_art_params`).

Papers: FGSM https://arxiv.org/abs/1412.6572, BIM https://arxiv.org/abs/1607.02533,
PGD https://arxiv.org/abs/1706.06083, MI-FGSM https://arxiv.org/abs/1710.06081.
"""

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.attacks._native import (
    NativeMixin,
    best_of_restarts,
    objective,
    pgd_loop,
    project,
    random_in_ball,
    value_and_grad_fn,
)
from tfdefense.attacks.base import Attack, canonical_norm, check_bool, norm_order, register_attack

_COMMON = {
    "eps": 0.3,
    "norm": "inf",
    "targeted": False,
    "target": None,
    "loss": "ce",
    "eot_samples": 1,
    "compute_dtype": None,
    "seed": None,
}
_NATIVE_ONLY = ("loss", "eot_samples", "compute_dtype", "nb_restarts", "rand_minmax")
LOSSES = ("ce", "cw")


class _GradientAttack(NativeMixin, Attack):
    """Shared parameter checks and the shared native graph."""

    bounded = True
    unsupported = {"cleverhans": _NATIVE_ONLY, "art": _NATIVE_ONLY}
    # what the subclass fixes
    fixed = {}

    def _check_params(self, p):
        p = dict(p)
        check_number("eps", p["eps"], minimum=0)
        p["norm"] = canonical_norm(p["norm"], ("inf", 2))
        check_choice("loss", p["loss"], LOSSES)
        check_number("eot_samples", p["eot_samples"], minimum=1, integer=True)
        if "eps_iter" in p:
            check_number("eps_iter", p["eps_iter"], minimum=0)
            if p["eps_iter"] > p["eps"]:
                raise invalid_value("eps_iter", f"a value <= eps ({p['eps']})", p["eps_iter"])
        if "nb_iter" in p:
            check_number("nb_iter", p["nb_iter"], minimum=1, integer=True)
        if "rand_init" in p:
            p["rand_init"] = check_bool("rand_init", p["rand_init"])
        if p.get("eps_iter") == 0 and p["eps"] > 0 and not p.get("rand_init", False):
            raise invalid_value("eps_iter", "a value > 0 (eps_iter=0 without rand_init returns x unchanged)", 0)
        if "rand_minmax" in p and p["rand_minmax"] is not None:
            check_number("rand_minmax", p["rand_minmax"], minimum=0)
        if "nb_restarts" in p:
            check_number("nb_restarts", p["nb_restarts"], minimum=1, integer=True)
            if p["nb_restarts"] > 1 and not p.get("rand_init", False):
                raise invalid_value(
                    "nb_restarts", "1 when rand_init=False (restarts need a random start)", p["nb_restarts"]
                )
        if "decay_factor" in p:
            check_number("decay_factor", p["decay_factor"], minimum=0)
        return p

    # ------------------------------------------------------------------ the loop settings

    def _settings(self):
        return {**self._params, **self.fixed}

    def _build_native(self, model_fn, num_classes):
        p = self._settings()
        eps, norm = float(p["eps"]), p["norm"]
        eps_iter, nb_iter = float(p["eps_iter"]), int(p["nb_iter"])
        targeted = p["targeted"]
        rand_init = p.get("rand_init", False)
        rand_minmax = eps if p.get("rand_minmax") is None else float(p["rand_minmax"])
        decay = p.get("decay_factor")
        restarts = int(p.get("nb_restarts", 1))
        kind = p["loss"]

        def program(x0, y, t, seed):
            def obj(logits):
                return objective(kind, logits, y, t, targeted, num_classes)

            value_and_grad = value_and_grad_fn(model_fn, obj, p["eot_samples"])

            def one_run(run_seed):
                if rand_init:
                    eta = project(random_in_ball(tf.shape(x0), rand_minmax, norm, run_seed), eps, norm)
                    x_start = tf.clip_by_value(x0 + eta, 0.0, 1.0)
                else:
                    x_start = x0
                return pgd_loop(value_and_grad, x0, x_start, eps, eps_iter, nb_iter, norm, decay)

            if restarts == 1:
                return one_run(seed)
            return best_of_restarts(one_run, model_fn, obj, x0, y, t, targeted, seed, restarts)

        return program

    # ------------------------------------------------------------------ other backends

    def _run_cleverhans(self, model, x, y, targets):
        p = self._settings()
        labels = tf.constant(targets if targets is not None else y)
        x_t = tf.constant(x)
        order = norm_order(p["norm"])
        common = dict(clip_min=0.0, clip_max=1.0, y=labels, targeted=p["targeted"])
        return np.asarray(self._cleverhans_attack(model, x_t, p, order, common))


@register_attack("fgsm", backends=("native", "cleverhans", "art"))
class FGSM(_GradientAttack):
    """Fast Gradient (Sign) Method: one step of size `eps` (Linf: sign; L2: normalised gradient).

    Params: eps (0.3), norm ("inf" or 2), targeted, target, loss ("ce"; native
    also "cw"), eot_samples (native), compute_dtype (native), seed.
    """

    defaults = dict(_COMMON)
    art_method = "FastGradientMethod"

    def _settings(self):  # one step of size eps
        p = super()._settings()
        p.update(eps_iter=p["eps"], nb_iter=1)
        return p

    @staticmethod
    def _cleverhans_attack(model, x, p, order, common):
        from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

        return fast_gradient_method(model, x, p["eps"], order, sanity_checks=False, **common)

    def _art_params(self):
        p = self._settings()
        return dict(norm=norm_order(p["norm"]), eps=p["eps"], targeted=p["targeted"], num_random_init=0)


@register_attack("bim", backends=("native", "cleverhans", "art"))
class BIM(_GradientAttack):
    """Basic Iterative Method (Kurakin et al.): PGD without random start.

    Params: eps (0.3), eps_iter (0.01), nb_iter (40), norm, targeted, target,
    loss, eot_samples, compute_dtype, seed. ART's BIM is Linf only.
    """

    defaults = {**_COMMON, "eps_iter": 0.01, "nb_iter": 40}
    fixed = {"rand_init": False}
    unsupported = {"cleverhans": _NATIVE_ONLY, "art": _NATIVE_ONLY}
    art_method = "BasicIterativeMethod"

    def _check_backend_params(self, backend, p):
        if backend == "art" and p["norm"] != "inf":
            raise invalid_value("norm", "'inf' with backend='art' (ART's BIM is Linf only)", p["norm"])

    @staticmethod
    def _cleverhans_attack(model, x, p, order, common):
        from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method

        return basic_iterative_method(
            model, x, p["eps"], p["eps_iter"], p["nb_iter"], order, sanity_checks=False, **common
        )

    def _art_params(self):
        p = self._settings()
        return dict(eps=p["eps"], eps_step=p["eps_iter"], max_iter=p["nb_iter"], targeted=p["targeted"], verbose=False)


@register_attack("pgd", backends=("native", "cleverhans", "art"))
class PGD(_GradientAttack):
    """Projected Gradient Descent (Madry et al.) with a random start.

    Params: eps (0.3), eps_iter (0.01), nb_iter (40), norm ("inf" or 2),
    rand_init (True), rand_minmax (None = eps; native/cleverhans),
    nb_restarts (1; native, and ART's num_random_init), targeted, target,
    loss ("ce" | "cw", native), eot_samples (native), compute_dtype (native:
    "bfloat16" runs the model under mixed_bfloat16), seed.
    """

    defaults = {**_COMMON, "eps_iter": 0.01, "nb_iter": 40, "rand_init": True, "rand_minmax": None, "nb_restarts": 1}
    unsupported = {
        "cleverhans": _NATIVE_ONLY,
        "art": ("loss", "eot_samples", "compute_dtype", "rand_minmax"),
    }
    art_method = "ProjectedGradientDescent"

    @staticmethod
    def _cleverhans_attack(model, x, p, order, common):
        from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

        return projected_gradient_descent(
            model,
            x,
            p["eps"],
            p["eps_iter"],
            p["nb_iter"],
            order,
            rand_init=p["rand_init"],
            rand_minmax=p["rand_minmax"],
            sanity_checks=False,
            **common,
        )

    def _art_params(self):
        p = self._settings()
        return dict(
            norm=norm_order(p["norm"]),
            eps=p["eps"],
            eps_step=p["eps_iter"],
            max_iter=p["nb_iter"],
            targeted=p["targeted"],
            num_random_init=p["nb_restarts"] if p["rand_init"] else 0,
            random_eps=False,
            verbose=False,
        )


@register_attack("mifgsm", backends=("native", "cleverhans"))
class MIFGSM(_GradientAttack):
    """Momentum Iterative FGSM (Dong et al.); ART's version is disabled for TensorFlow.

    Params: eps (0.3), eps_iter (0.06), nb_iter (10), decay_factor (1.0),
    norm, targeted, target, loss, eot_samples, compute_dtype, seed.
    """

    defaults = {**_COMMON, "eps_iter": 0.06, "nb_iter": 10, "decay_factor": 1.0}

    @staticmethod
    def _cleverhans_attack(model, x, p, order, common):
        from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method

        return momentum_iterative_method(
            model,
            x,
            p["eps"],
            p["eps_iter"],
            p["nb_iter"],
            order,
            decay_factor=p["decay_factor"],
            sanity_checks=False,
            **common,
        )
