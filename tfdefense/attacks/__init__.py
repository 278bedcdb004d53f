"""Adversarial attacks behind one interface: native TF, cleverhans and ART backends.

    attack = get_attack("pgd", eps=0.3, nb_iter=40)           # default backend
    x_adv = attack(model, x, y)                                # float32, same shape, in the eps-ball and [0, 1]
    get_attack("pgd", backend="art", eps=0.3)(model, x)        # y=None: the model's predictions

Models map float32 NHWC images in [0, 1] to logits. See docs/attacks.md.
"""

from tfdefense.attacks import advgan_attack, autoattack, carlini, deepfool, fab, gradient, jsma, noise, spsa  # noqa: F401  (registers)
from tfdefense.attacks.adaptive import BPDA, bpda, convergence_check
from tfdefense.attacks.base import (
    BACKENDS,
    Attack,
    attack_backends,
    get_attack,
    list_attacks,
    register_attack,
    success_rate,
)
from tfdefense.attacks.generation import generate, model_fingerprint

__all__ = [
    "BACKENDS",
    "BPDA",
    "Attack",
    "attack_backends",
    "bpda",
    "convergence_check",
    "generate",
    "get_attack",
    "list_attacks",
    "model_fingerprint",
    "register_attack",
    "success_rate",
]
