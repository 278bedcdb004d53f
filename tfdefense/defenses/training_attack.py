"""The training-time attack shared by the robust trainers: Linf PGD inside the traced step.

`RobustPurifier` (PGD through purifier + frozen classifier) and
`AdversarialTrainer` (FGSM / PGD on the classifier itself, Madry et al.)
craft their examples with `pgd_in_graph`, which runs the attacks' PGD
iteration (`tfdefense.attacks._native.pgd_loop`) in a `tf.while_loop`, and
keep eps and the step size in non-trainable variables (`AttackSettingsMixin`).
The callbacks `EpsilonRamp` (eps curriculum) and `ComputeBudget` (stop at a
CPU-time budget, for comparisons at equal training compute) live in
`tfdefense.training`.

`compute_precision(models, "bf16")` runs the float32 layers of the given models
in bfloat16 while a step is traced (variables stay float32, autocast on read;
the callers keep the PGD iterate, the logits and the losses in float32).
"""

import keras
import numpy as np

from tfdefense._validation import (
    check_choice,
    check_labels,
    check_not_empty,
    check_number,
    dataset_range_checked,
    invalid_value,
)
from tfdefense.attacks._native import pgd_loop, random_in_ball, value_and_grad_fn
from tfdefense.defenses.base import add_scalar_variables, check_image_array
from tfdefense.defenses.precision import PRECISIONS, check_precision, compute_precision  # noqa: F401 (re-exported)

ATTACK_LOSSES = ("ce", "kl")


def split_xy(data):
    """(x, y) from what keras hands train_step: (x, y), (x, y, sample_weight) or a dict."""
    if isinstance(data, dict):
        return data.get("x"), data.get("y")
    data = tuple(data) if isinstance(data, (list, tuple)) else (data,)
    if len(data) == 1 and isinstance(data[0], (list, tuple)):
        data = tuple(data[0])
    if len(data) < 2 or data[1] is None:
        raise invalid_value("data", "batches of (images, integer labels)", f"a batch of {len(data)} element(s)")
    return data[0], data[1]


def kl_divergence(logits_p, logits_q):
    """Per-example KL(softmax p || softmax q)."""
    import tensorflow as tf

    p = tf.nn.softmax(logits_p)
    return tf.reduce_sum(p * (tf.nn.log_softmax(logits_p) - tf.nn.log_softmax(logits_q)), -1)


def pgd_in_graph(logits_fn, x, y, eps, step_size, steps, seed, rand_init=True, loss="ce", reference_logits=None):
    """Linf PGD inside a traced step: `steps` sign-gradient ascent steps (a `tf.while_loop`).

    Args:
      logits_fn: images -> float32 logits (the frozen pipeline).
      x, y: float32 images in [0, 1], int labels.
      eps, step_size: scalars (tensors or floats).
      steps: Python int (the loop length).
      seed: int32[2] stateless seed for the random start.
      loss: "ce" (cross-entropy to y) or "kl" (KL from `reference_logits`).
    Returns the adversarial batch (stop-gradient), in the eps-ball and [0, 1].
    """
    import tensorflow as tf

    x = tf.stop_gradient(tf.cast(x, tf.float32))
    y = tf.reshape(tf.cast(y, tf.int64), [-1])
    eps = tf.cast(eps, tf.float32)
    step_size = tf.cast(step_size, tf.float32)
    if reference_logits is not None:
        reference_logits = tf.stop_gradient(tf.cast(reference_logits, tf.float32))
    if rand_init:
        if loss == "kl":  # TRADES starts close to x (0.001 * N(0, 1) in the paper)
            noise = 0.001 * tf.random.stateless_normal(tf.shape(x), seed)
        else:
            noise = random_in_ball(tf.shape(x), eps, "inf", seed)
        x_adv = tf.clip_by_value(x + noise, 0.0, 1.0)
    else:
        x_adv = x

    def objective(logits):
        if loss == "kl":
            return kl_divergence(reference_logits, logits)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)

    value_and_grad = value_and_grad_fn(lambda z: tf.cast(logits_fn(z), tf.float32), objective)
    x_adv = pgd_loop(value_and_grad, x, x_adv, eps, step_size, steps, "inf", projection="bounds", stop_gradient=True)
    return tf.stop_gradient(x_adv)


def check_attack_settings(attack_eps, attack_steps, attack_step_size, attack_loss):
    check_number("attack_eps", attack_eps, minimum=0, maximum=1)
    check_number("attack_steps", attack_steps, minimum=0, integer=True)
    check_number("attack_step_size", attack_step_size, minimum=0, maximum=1, allow_none=True)
    check_choice("attack_loss", attack_loss, ATTACK_LOSSES)
    if attack_step_size is None:
        return 2.5 * float(attack_eps) / max(int(attack_steps), 1)
    return float(attack_step_size)


def check_xy_arrays(x, y, image_shape, num_classes=None):
    x = check_not_empty(check_image_array(x, image_shape, "x"), "x")
    if y is None:
        raise invalid_value("y", "integer class labels, one per image", y)
    y = check_labels(y, "y", num_examples=len(x), num_classes=num_classes)
    return x, y


def check_xy_dataset(dataset, image_shape, argument="x", num_classes=None):
    """Checks the element spec of an (images, labels) dataset; returns it with a per-batch range check
    of the images (and labels against `num_classes`): call `fit` through `fit_checked`."""
    spec = dataset.element_spec
    specs = spec if isinstance(spec, (tuple, list)) else (spec,)
    if len(specs) < 2:
        raise invalid_value(argument, "a dataset of (images, labels) batches", spec)
    shape = tuple(specs[0].shape)
    if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape, strict=False)):
        raise invalid_value(argument, f"image batches of shape (N, {', '.join(map(str, image_shape))})", spec)
    if not specs[1].dtype.is_integer:
        raise invalid_value(argument, "integer labels as the second element of each batch", spec)
    if not specs[0].dtype.is_floating:
        raise invalid_value(argument, "float images in [0, 1] (convert uint8 with x / 255)", spec)
    return dataset_range_checked(dataset, argument, (0,), label_component=1, num_classes=num_classes)


class AttackSettingsMixin:
    """The in-graph training attack's variables, shared by both trainers."""

    def _init_attack(self, attack_eps, attack_steps, attack_step_size, attack_rand_init, attack_loss, seed):
        step = check_attack_settings(attack_eps, attack_steps, attack_step_size, attack_loss)
        if not isinstance(attack_rand_init, (bool, np.bool_)):
            raise invalid_value("attack_rand_init", "True or False", attack_rand_init)
        check_number("seed", seed, integer=True, allow_none=True)
        self.attack_steps = int(attack_steps)
        self.attack_rand_init = bool(attack_rand_init)
        self.attack_loss = attack_loss
        self.seed = seed
        self._attack_config = {
            "attack_eps": float(attack_eps),
            "attack_steps": int(attack_steps),
            "attack_step_size": None if attack_step_size is None else float(attack_step_size),
            "attack_rand_init": bool(attack_rand_init),
            "attack_loss": attack_loss,
            "seed": seed,
        }
        add_scalar_variables(self, {"attack_eps": attack_eps, "attack_step_size": step})
        self.seed_generator = keras.random.SeedGenerator(seed, name="attack_seed")

    def attack_schedule(self):
        """The configured attack eps and step size / eps (0 when eps is 0): what `EpsilonRamp` ramps."""
        config = self._attack_config
        step = check_attack_settings(
            config["attack_eps"], config["attack_steps"], config["attack_step_size"], config["attack_loss"]
        )
        eps = config["attack_eps"]
        return {"eps": eps, "step_ratio": step / eps if eps > 0 else 0.0}

    def _attack_seed(self):
        import tensorflow as tf

        # SeedGenerator state advances every step (it is saved with the model).
        raw = keras.random.randint((2,), 0, 2**30, seed=self.seed_generator, dtype="int32")
        return tf.cast(raw, tf.int32)
