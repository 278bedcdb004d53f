"""Benign noisy inputs: `gaussian_noise` (the benign-input protocol, not an attack)."""

import math

import tensorflow as tf

from tfdefense._validation import check_number, invalid_value
from tfdefense.attacks._native import NativeMixin
from tfdefense.attacks.base import Attack, check_bool, register_attack


@register_attack("gaussian_noise", backends=("native",))
class GaussianNoise(NativeMixin, Attack):
    """x + N(0, sigma^2) per pixel, clipped to [0, 1]; ignores the model and labels.

    Params: sigma (0.1, standard deviation in [0, 1] pixel units) or variance
    (sigma^2; give one of the two), clip (True; False is refused since the
    output must stay in [0, 1] - kept for explicitness), seed (None).
    """

    defaults = {"sigma": None, "variance": None, "clip": True, "seed": None}

    def _check_params(self, p):
        p = dict(p)
        if p["sigma"] is not None and p["variance"] is not None:
            raise invalid_value("variance", "None when sigma is given (give one of sigma, variance)", p["variance"])
        check_number("sigma", p["sigma"], minimum=0, allow_none=True)
        check_number("variance", p["variance"], minimum=0, allow_none=True)
        if not check_bool("clip", p["clip"]):
            raise invalid_value("clip", "True (images stay in [0, 1])", p["clip"])
        return p

    @property
    def sigma(self):
        p = self._params
        if p["variance"] is not None:
            return math.sqrt(p["variance"])
        return 0.1 if p["sigma"] is None else float(p["sigma"])

    def _build_native(self, model_fn, num_classes):
        sigma = self.sigma

        def program(x, y, t, seed):
            return tf.clip_by_value(x + sigma * tf.random.stateless_normal(tf.shape(x), seed), 0.0, 1.0)

        return program
