"""Gradient-sign attacks: FGSM, BIM, PGD (random start), MI-FGSM; norms Linf and L2.

Native implementations share one graph: (optional random start) then
`nb_iter` steps `x <- clip_[0,1](x0 + P_eps(x + eps_iter * step(grad) - x0))`
inside a `tf.while_loop`, with optional momentum (MI-FGSM), EOT gradient
averaging (`eot_samples`) and random restarts (`nb_restarts`, keeping per
example the restart that succeeds, else the one with the highest loss).

Papers: FGSM https://arxiv.org/abs/1412.6572, BIM https://arxiv.org/abs/1607.02533,
PGD https://arxiv.org/abs/1706.06083, MI-FGSM https://arxiv.org/abs/1710.06081.
"""

import numpy as np
import tensorflow as tf

from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.attacks import _backends
from tfdefense.attacks import _native as nt
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


class _GradientAttack(nt.NativeMixin, Attack):
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
                raise invalid_value("nb_restarts", "1 when rand_init=False (restarts need a random start)",
                                    p["nb_restarts"])
        if "decay_factor" in p:
            check_number("decay_factor", p["decay_factor"], minimum=0)
        return p

    # ------------------------------------------------------------------ the loop settings

    def _settings(self):
        p = {**self._params, **self.fixed}
        if self.name == "fgsm":
            p.update(eps_iter=p["eps"], nb_iter=1)
        return p

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
                return nt.objective(kind, logits, y, t, targeted, num_classes)

            value_and_grad = nt.value_and_grad_fn(model_fn, obj, p["eot_samples"])

            def one_run(run_seed):
                if rand_init:
                    eta = nt.project(nt.random_in_ball(tf.shape(x0), rand_minmax, norm, run_seed), eps, norm)
                    x_start = tf.clip_by_value(x0 + eta, 0.0, 1.0)
                else:
                    x_start = x0

                def body(i, x_adv, momentum):
                    _, _, grad = value_and_grad(x_adv)
                    if decay is not None:
                        grad = grad / tf.maximum(
                            tf.reduce_mean(tf.abs(grad), nt.reduce_axes(grad), keepdims=True), 1e-12
                        )
                        momentum = decay * momentum + grad
                        grad = momentum
                    x_adv = x_adv + nt.steepest_step(grad, eps_iter, norm)
                    x_adv = tf.clip_by_value(x0 + nt.project(x_adv - x0, eps, norm), 0.0, 1.0)
                    return i + 1, x_adv, momentum

                _, x_adv, _ = tf.while_loop(
                    lambda i, *_: i < nb_iter, body, (tf.constant(0), x_start, tf.zeros_like(x0))
                )
                return x_adv

            if restarts == 1:
                return one_run(seed)
            seeds = tf.random.experimental.stateless_split(seed, restarts)
            best, best_score = x0, tf.fill(tf.shape(y), -np.inf)
            for k in range(restarts):
                x_adv = one_run(seeds[k])
                logits = model_fn(x_adv)
                score = obj(logits) + tf.where(nt.is_success(logits, y, t, targeted), 1e9, 0.0)
                better = score > best_score
                best = nt.where_batch(better, x_adv, best)
                best_score = tf.where(better, score, best_score)
            return best

        return program

    # ------------------------------------------------------------------ other backends

    def _run_cleverhans(self, model, x, y, targets):
        p = self._settings()
        labels = tf.constant(targets if targets is not None else y)
        x_t = tf.constant(x)
        order = norm_order(p["norm"])
        common = dict(clip_min=0.0, clip_max=1.0, y=labels, targeted=p["targeted"])
        out = _backends.cleverhans_gradient_attack(self.name, model, x_t, p, order, common)
        return np.asarray(out)

    def _run_art(self, model, x, y, targets):
        p = self._settings()
        labels = targets if targets is not None else y
        return _backends.art_gradient_attack(self.name, model, x, labels, p)


@register_attack("fgsm", backends=("native", "cleverhans", "art"))
class FGSM(_GradientAttack):
    """Fast Gradient (Sign) Method: one step of size `eps` (Linf: sign; L2: normalised gradient).

    Params: eps (0.3), norm ("inf" or 2), targeted, target, loss ("ce"; native
    also "cw"), eot_samples (native), compute_dtype (native), seed.
    """

    defaults = dict(_COMMON)


@register_attack("bim", backends=("native", "cleverhans", "art"))
class BIM(_GradientAttack):
    """Basic Iterative Method (Kurakin et al.): PGD without random start.

    Params: eps (0.3), eps_iter (0.01), nb_iter (40), norm, targeted, target,
    loss, eot_samples, compute_dtype, seed. ART's BIM is Linf only.
    """

    defaults = {**_COMMON, "eps_iter": 0.01, "nb_iter": 40}
    fixed = {"rand_init": False}
    unsupported = {"cleverhans": _NATIVE_ONLY, "art": _NATIVE_ONLY}

    def _check_backend_params(self, backend, p):
        if backend == "art" and p["norm"] != "inf":
            raise invalid_value("norm", "'inf' with backend='art' (ART's BIM is Linf only)", p["norm"])


@register_attack("pgd", backends=("native", "cleverhans", "art"))
class PGD(_GradientAttack):
    """Projected Gradient Descent (Madry et al.) with a random start.

    Params: eps (0.3), eps_iter (0.01), nb_iter (40), norm ("inf" or 2),
    rand_init (True), rand_minmax (None = eps; native/cleverhans),
    nb_restarts (1; native, and ART's num_random_init), targeted, target,
    loss ("ce" | "cw", native), eot_samples (native), compute_dtype (native:
    "bfloat16" runs the model under mixed_bfloat16), seed.
    """

    defaults = {**_COMMON, "eps_iter": 0.01, "nb_iter": 40, "rand_init": True, "rand_minmax": None,
                "nb_restarts": 1}
    unsupported = {
        "cleverhans": _NATIVE_ONLY,
        "art": ("loss", "eot_samples", "compute_dtype", "rand_minmax"),
    }


@register_attack("mifgsm", backends=("native", "cleverhans"))
class MIFGSM(_GradientAttack):
    """Momentum Iterative FGSM (Dong et al.); ART's version is disabled for TensorFlow.

    Params: eps (0.3), eps_iter (0.06), nb_iter (10), decay_factor (1.0),
    norm, targeted, target, loss, eot_samples, compute_dtype, seed.
    """

    defaults = {**_COMMON, "eps_iter": 0.06, "nb_iter": 10, "decay_factor": 1.0}
