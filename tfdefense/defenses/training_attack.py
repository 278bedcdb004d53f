"""The training-time attack shared by the robust trainers: Linf PGD inside the traced step.

`RobustPurifier` (PGD through purifier + frozen classifier) and
`AdversarialTrainer` (FGSM / PGD on the classifier itself, Madry et al.)
craft their examples with `pgd_in_graph` in a `tf.while_loop`, keep eps and
the step size in non-trainable variables (`AttackSettingsMixin`), and share
the callbacks `EpsilonRamp` (eps curriculum) and `ComputeBudget` (stop at a
CPU-time budget, for comparisons at equal training compute).

`compute_precision(models, "bf16")` runs the float32 layers of the given models
in bfloat16 while a step is traced (variables stay float32, autocast on read;
the callers keep the PGD iterate, the logits and the losses in float32).
"""

import contextlib

import numpy as np

import keras

from tfdefense._validation import (
    check_choice,
    check_labels,
    check_not_empty,
    check_number,
    dataset_range_checked,
    invalid_value,
)
from tfdefense.defenses.base import add_scalar_variables, check_image_array

ATTACK_LOSSES = ("ce", "kl")
PRECISIONS = ("fp32", "bf16")


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
            noise = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0) * eps
        x_adv = tf.clip_by_value(x + noise, 0.0, 1.0)
    else:
        x_adv = x

    def objective(z):
        logits = tf.cast(logits_fn(z), tf.float32)
        if loss == "kl":
            return tf.reduce_sum(kl_divergence(reference_logits, logits))
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))

    def body(i, z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = objective(z)
        grad = tape.gradient(value, z)
        z = z + step_size * tf.sign(grad)
        z = tf.clip_by_value(tf.clip_by_value(z, x - eps, x + eps), 0.0, 1.0)
        return i + 1, tf.stop_gradient(z)

    if steps > 0:
        _, x_adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x_adv))
    return tf.stop_gradient(x_adv)


def check_precision(precision):
    return check_choice("precision", precision, PRECISIONS)


@contextlib.contextmanager
def compute_precision(models, precision):
    """While the block runs, the layers of `models` whose policy is plain "float32" compute in bfloat16.

    With precision "bf16" each such layer gets the `mixed_bfloat16` policy
    (float32 variables, read as bfloat16; BatchNormalization keeps its
    statistics in float32) and gets its own policy back on exit. Graphs traced
    inside the block (a `train_step`) keep the bfloat16 ops; calls outside it
    (inference, export) run in float32. Layers with another policy (mixed,
    float16, quantized) are left as they are. "fp32" changes nothing.
    """
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    mixed = keras.dtype_policies.DTypePolicy("mixed_bfloat16")
    saved = {}
    try:
        for model in models:
            if model is None:
                continue
            for layer in model._flatten_layers(include_self=True, recursive=True):
                policy = getattr(layer, "_dtype_policy", None)
                if id(layer) in saved or type(policy) not in (keras.dtype_policies.DTypePolicy,
                                                              keras.dtype_policies.FloatDTypePolicy):
                    continue
                if policy.name == "float32":
                    saved[id(layer)] = (layer, policy)
                    layer._dtype_policy = mixed
        yield
    finally:
        for layer, policy in saved.values():
            layer._dtype_policy = policy


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
    if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape)):
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

    def _attack_seed(self):
        import tensorflow as tf

        # SeedGenerator state advances every step (it is saved with the model).
        raw = keras.random.randint((2,), 0, 2**30, seed=self.seed_generator, dtype="int32")
        return tf.cast(raw, tf.int32)


class EpsilonRamp(keras.callbacks.Callback):
    """Curriculum on the training attack's eps: linear from `start` to the model's target eps.

    At the start of epoch e (0-based, absolute) assigns eps = start + (target -
    start) * min(1, (e + 1) / ramp_epochs) to `model.attack_eps` (so the target
    is reached at epoch ramp_epochs - 1; ramp_epochs=1 is no ramp) and scales
    `model.attack_step_size` with it. Works with `RobustPurifier` and
    `AdversarialTrainer`; resuming lands at the right eps (epoch-indexed).
    """

    def __init__(self, ramp_epochs, start=0.0, target=None):
        super().__init__()
        check_number("ramp_epochs", ramp_epochs, minimum=1, integer=True)
        check_number("start", start, minimum=0, maximum=1)
        check_number("target", target, minimum=0, maximum=1, allow_none=True)
        self.ramp_epochs = int(ramp_epochs)
        self.start = float(start)
        self.target = target
        self._ratio = None

    def on_train_begin(self, logs=None):
        config = self.model._attack_config
        self.target = config["attack_eps"] if self.target is None else self.target
        step = check_attack_settings(
            config["attack_eps"], config["attack_steps"], config["attack_step_size"], config["attack_loss"]
        )
        self._ratio = step / config["attack_eps"] if config["attack_eps"] > 0 else 0.0

    def eps_at(self, epoch):
        return self.start + (self.target - self.start) * min(1.0, (epoch + 1) / self.ramp_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        eps = self.eps_at(epoch)
        self.model.attack_eps.assign(eps)
        self.model.attack_step_size.assign(self._ratio * eps)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["attack_eps"] = float(keras.ops.convert_to_numpy(self.model.attack_eps))


class ComputeBudget(keras.callbacks.Callback):
    """Stops `fit` at the end of the epoch in which the process CPU time spent in `fit` reaches `cpu_seconds`.

    For comparisons "at equal training compute": train one model, read its
    `cpu_seconds` (also logged as `cpu_seconds` in the epoch logs), give the
    other the same budget. CPU time (all threads of this process) is steadier
    than wall time on a shared machine. `offset` adds seconds already spent
    (a resumed run).
    """

    def __init__(self, cpu_seconds=None, offset=0.0):
        super().__init__()
        check_number("cpu_seconds", cpu_seconds, minimum=0, allow_none=True)
        check_number("offset", offset, minimum=0)
        self.cpu_seconds = cpu_seconds
        self.offset = float(offset)
        self.spent = float(offset)

    def on_train_begin(self, logs=None):
        import time

        self._start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        import time

        self.spent = self.offset + time.process_time() - self._start
        if logs is not None:
            logs["cpu_seconds"] = self.spent
        if self.cpu_seconds is not None and self.spent >= self.cpu_seconds:
            self.model.stop_training = True
