"""The AdvGAN attack: one forward pass of a trained perturbation generator.

    attack = get_attack("advgan", generator=advgan.generator, eps=0.3)
    x_adv = attack(model, x)           # clip(x + eps * G(x), 0, 1)

Paper: Xia and Liu, "Adversarial Examples Generation and Defense Based on
Generative Adversarial Network" (after Xiao et al., https://arxiv.org/abs/1801.02610).
The generator (`tfdefense.defenses.trainers.advgan.AdvGAN`, trained with `fit`) maps an
image to a direction in [-1, 1]; the attack scales it by `eps` (Linf bound) and
clips to [0, 1]. It never queries `model` to build the example: G was trained
against some classifier, and `model` only serves the success statistics
(`last_run_info`), so this is a transfer attack on any other model.

Params: generator (a keras.Model images -> [-1, 1] directions, an `AdvGAN`,
or the path of a saved `.keras` of either; required), eps (0.3, in [0, 1]).
Untargeted only.
"""

import numpy as np

from tfdefense._validation import check_number, invalid_value
from tfdefense.attacks.base import Attack, register_attack


def _resolve_generator(generator):
    import keras

    if isinstance(generator, str) or hasattr(generator, "__fspath__"):
        generator = keras.saving.load_model(generator)
    inner = getattr(generator, "generator", None)
    if isinstance(inner, keras.Model) and hasattr(generator, "perturb"):  # an AdvGAN
        generator = inner
    if not isinstance(generator, keras.Model):
        raise invalid_value(
            "generator", "a trained AdvGAN generator (keras.Model), an AdvGAN, or the path of a saved .keras", generator
        )
    in_shape, out_shape = generator.input_shape, generator.output_shape
    if isinstance(in_shape, list) or isinstance(out_shape, list) or tuple(in_shape) != tuple(out_shape):
        raise invalid_value(
            "generator", "a model mapping images to same-shape perturbation directions in [-1, 1]", generator
        )
    return generator


@register_attack("advgan", backends=("native",))
class AdvGANAttack(Attack):
    """clip(x + eps * G(x), 0, 1): one generator forward pass per batch (Linf, untargeted)."""

    defaults = {"generator": None, "eps": 0.3}
    bounded = True

    def _check_params(self, p):
        p = dict(p)
        if p["generator"] is None:
            raise invalid_value("generator", "a trained AdvGAN generator (required)", None)
        p["generator"] = _resolve_generator(p["generator"])
        check_number("eps", p["eps"], minimum=0, maximum=1)
        p["eps"] = float(p["eps"])
        return p

    def config(self):
        """JSON-able identity: the generator is named by the fingerprint of its weights."""
        from tfdefense.attacks.generation import model_fingerprint

        config = super().config()
        generator = self._params["generator"]
        identity = {"name": generator.name, "sha256": model_fingerprint(generator)}
        config["params"] = dict(config["params"], generator=identity)
        return config

    def __repr__(self):
        generator, eps = self._params["generator"].name, self._params["eps"]
        return f"<Attack advgan backend={self.backend!r} generator={generator!r} eps={eps}>"

    def _run_native(self, model, x, y, targets):
        import tensorflow as tf

        generator = self._params["generator"]
        expected = tuple(generator.input_shape[1:])
        if tuple(x.shape[1:]) != expected:
            raise invalid_value("x", f"images of shape {expected} (the generator's input)", f"array of shape {x.shape}")
        function = getattr(self, "_forward", None)
        if function is None:
            eps = self._params["eps"]

            def forward(batch):
                direction = tf.cast(generator(batch, training=False), tf.float32)
                return tf.clip_by_value(batch + eps * direction, 0.0, 1.0)

            function = self._forward = tf.function(forward, reduce_retracing=True, autograph=False)
        outputs = [np.asarray(function(tf.constant(x[i : i + 1024]))) for i in range(0, len(x), 1024)]
        return np.concatenate(outputs)
