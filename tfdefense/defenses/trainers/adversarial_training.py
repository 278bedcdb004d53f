"""Adversarial training (FGSM and PGD) as a training recipe for any logits classifier.

* FGSM adversarial training - Goodfellow, Shlens, Szegedy, "Explaining and
  Harnessing Adversarial Examples", ICLR 2015 (https://arxiv.org/abs/1412.6572):
  loss = mix * CE(x) + (1 - mix) * CE(x + eps * sign(grad)), mix = 0.5.
* PGD adversarial training - Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards
  Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018
  (https://arxiv.org/abs/1706.06083): 100 % adversarial (mix = 0), MNIST
  eps 0.3, 40 steps of 0.01 from a uniform random start, Adam(1e-4), batch 50,
  100k iterations.

`AdversarialTrainer(classifier, attack="pgd", ...)` is a `keras.Model` whose
`train_step` crafts the attack on the *current* classifier inside the traced
step (a `tf.while_loop`, classifier in inference mode while crafting, true
labels), then updates the classifier on the mixed loss. The classifier is
trained in place: after `fit`, `trainer.classifier` (the same object that was
passed in) is the robust model, and `trainer(x)` returns its logits.
`adversarial_training(classifier, x, y, ...)` is the one-call recipe.

eps, the step size and `mix` live in non-trainable variables (`attack_eps`,
`attack_step_size`, `mix`: callbacks may `assign` them; `EpsilonRamp` is an
eps warm-up, `ComputeBudget` stops at a CPU-time budget). Metrics: `loss`, `clean_loss`,
`adv_loss`, `clean_acc`, `adv_acc` (accuracy on the batch's crafted examples).

Limits: the robustness is to the threat model trained on (Linf eps-ball);
FGSM training on MNIST at large eps is known to mask gradients (high FGSM
accuracy, low PGD accuracy; Tramer et al. 2018), so evaluate with PGD. The
result is a classifier, not a purifier: use it alone or as the `classifier`
of `DefendedClassifier`. The robust preset uses it as the classifier-side
baseline of `RobustPurifier` at equal training compute (`ComputeBudget`).
"""

import keras

from tfdefense._validation import (
    check_choice,
    check_images,
    check_labels,
    check_not_empty,
    check_number,
    check_validation_data,
    invalid_value,
    output_classes,
)
from tfdefense.defenses.base import (
    DefenseModel,
    OptimizerSlot,
    add_scalar_variables,
    check_labelled_fit_data,
    check_model,
    dataset_fit_defaults,
    static_image_shape,
)
from tfdefense.defenses.training_attack import (
    AttackSettingsMixin,
    check_precision,
    pgd_in_graph,
    split_xy,
)

ATTACKS = ("fgsm", "pgd")
DEFAULT_MIX = {"fgsm": 0.5, "pgd": 0.0}
METRIC_NAMES = ("loss", "clean_loss", "adv_loss", "clean_acc", "adv_acc")


def default_classifier_optimizer():
    """Adam(1e-3)."""
    return keras.optimizers.Adam(learning_rate=1e-3)


@keras.saving.register_keras_serializable(package="tfdefense")
class AdversarialTrainer(AttackSettingsMixin, DefenseModel):
    """Trains `classifier` on attacks crafted on itself in every training step.

    Args:
      classifier: a `keras.Model` returning logits on [0, 1] images.
      attack: "pgd" (Madry et al.) or "fgsm" (Goodfellow et al.).
      eps: Linf radius (0.3 for MNIST in both papers' MNIST settings here).
      eps_iter: PGD step size (0.01); FGSM uses one step of `eps`.
      nb_iter: PGD steps (40); FGSM uses 1.
      rand_init: PGD uniform random start in the eps-ball (True); FGSM never.
      mix: weight of the clean loss, the rest is the adversarial loss
        (None: 0.0 for "pgd" as Madry, 0.5 for "fgsm" as Goodfellow).
      seed: seed of the random starts.
      precision: "fp32" or "bf16" (the training attack and step compute in
        bfloat16 with float32 variables and losses, as `RobustPurifier`'s;
        inference stays float32).

    The attack's eps and step size are the variables `attack_eps` and
    `attack_step_size` (shared with `RobustPurifier`, so `EpsilonRamp` and
    `ComputeBudget` work here too); `mix` is a variable as well.
    `compile(optimizer=None)`: the classifier's optimizer, Adam(1e-3) by
    default. `fit` takes `(x, y)` arrays (checked) or a dataset of `(x, y)` batches.
    """

    optimizer_slots = (OptimizerSlot("c_optimizer", "classifier", "loss", default_classifier_optimizer, "optimizer"),)
    metric_names = METRIC_NAMES
    nested_models = ("classifier",)

    def __init__(
        self,
        classifier,
        attack="pgd",
        eps=0.3,
        eps_iter=0.01,
        nb_iter=40,
        rand_init=True,
        mix=None,
        seed=None,
        precision="fp32",
        **kwargs,
    ):
        kwargs.setdefault("name", "adversarial_trainer")
        super().__init__(**kwargs)
        check_model("classifier", classifier)
        check_choice("attack", attack, ATTACKS)
        check_number("eps", eps, minimum=0, maximum=1)
        check_number("eps_iter", eps_iter, minimum=0, maximum=1)
        check_number("nb_iter", nb_iter, minimum=1, integer=True)
        if not isinstance(rand_init, bool):
            raise invalid_value("rand_init", "True or False", rand_init)
        check_number("mix", mix, minimum=0, maximum=1, allow_none=True)
        if attack == "pgd" and eps_iter > eps:
            raise invalid_value("eps_iter", f"a value <= eps ({eps})", eps_iter)
        if not classifier.trainable_variables:
            raise invalid_value(
                "classifier",
                "a model with trainable variables (a frozen model trains nothing: "
                "use tfdefense.models.trainable_copy(model))",
                f"{classifier.name} with 0 trainable variables",
            )
        check_precision(precision)
        self.precision = precision
        self.classifier = classifier
        self.image_shape = static_image_shape(classifier, "classifier")
        self.attack = attack
        self.nb_iter = int(nb_iter) if attack == "pgd" else 1
        self.rand_init = bool(rand_init) if attack == "pgd" else False
        step = float(eps_iter) if attack == "pgd" else float(eps)
        self._init_attack(float(eps), self.nb_iter, step, self.rand_init, "ce", seed)
        self._arguments = {
            "eps": float(eps),
            "eps_iter": float(eps_iter),
            "nb_iter": int(nb_iter),
            "rand_init": bool(rand_init),
            "mix": mix,
        }
        initial_mix = float(DEFAULT_MIX[attack] if mix is None else mix)
        add_scalar_variables(self, {"mix": initial_mix})  # in the config as `mix` (None: the attack's default)
        self.built = True

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=bool(training))

    def compute_output_shape(self, input_shape):
        return self.classifier.compute_output_shape(tuple(input_shape))

    def _logits(self, x, training=False):
        import tensorflow as tf

        return tf.cast(self.classifier(x, training=training), tf.float32)

    def craft(self, x, y):
        """Adversarial examples for `(x, y)` on the current classifier (graph-friendly, no gradient)."""
        return pgd_in_graph(
            self._logits,
            x,
            y,
            self.attack_eps,
            self.attack_step_size,
            self.attack_steps,
            self._attack_seed(),
            rand_init=self.rand_init,
        )

    # ------------------------------------------------------------------ training

    def prepare_batch(self, data, training):
        """(x, y, x_adv): the attack runs on the current classifier outside the gradient tape."""
        import tensorflow as tf

        x, y = split_xy(data)
        x = tf.cast(x, tf.float32)
        return x, y, self.craft(x, y)

    def compute_losses(self, x, y, x_adv, training):
        import tensorflow as tf

        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        n = tf.shape(x)[0]
        logits = self._logits(tf.concat([x_adv, tf.cast(x, tf.float32)], 0), training=training)
        adv_logits, clean_logits = logits[:n], logits[n:]
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits
        clean_loss = ce(labels=y, logits=clean_logits)
        adv_loss = ce(labels=y, logits=adv_logits)
        mix = tf.cast(self.mix, tf.float32)
        loss = mix * clean_loss + (1.0 - mix) * adv_loss

        def acc(logits):
            return tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32)

        return {
            "loss": loss,
            "clean_loss": clean_loss,
            "adv_loss": adv_loss,
            "clean_acc": acc(clean_logits),
            "adv_acc": acc(adv_logits),
        }

    def prepare_fit(self, x, y, args, kwargs):
        import tensorflow as tf

        if not isinstance(x, tf.data.Dataset) and y is None:
            raise invalid_value("y", "integer labels (adversarial training needs the true labels)", y)
        x, y = check_labelled_fit_data(self, x, y)
        return x, y, dataset_fit_defaults(x, args, kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update({"attack": self.attack, **self._arguments, "seed": self.seed, "precision": self.precision})
        return config


def adversarial_training(
    classifier,
    x,
    y,
    attack="pgd",
    epochs=10,
    batch_size=50,
    learning_rate=None,
    validation_data=None,
    seed=0,
    backup_dir=None,
    callbacks=(),
    verbose="auto",
    **attack_params,
):
    """Adversarially trains `classifier` in place; returns the keras History (`history.model` is the trainer).

    `attack` is "pgd" (Madry: eps 0.3, eps_iter 0.01, nb_iter 40, random
    start, 100 % adversarial) or "fgsm" (Goodfellow: 50/50 clean/adversarial
    loss); `attack_params` override `eps`, `eps_iter`, `nb_iter`,
    `rand_init`, `mix`. Adam(`learning_rate`; None: 1e-4 for "pgd" as Madry
    et al., 1e-3 for "fgsm"), shuffled batches of `batch_size`, `epochs`
    passes. `backup_dir` resumes an interrupted run.
    """
    from tfdefense._io import check_backup_dir
    from tfdefense.data.pipelines import make_pipeline
    from tfdefense.distribute import atomic_backup

    unknown = set(attack_params) - {"eps", "eps_iter", "nb_iter", "rand_init", "mix"}
    if unknown:
        raise invalid_value("attack_params", "eps, eps_iter, nb_iter, rand_init or mix", sorted(unknown))
    check_number("epochs", epochs, minimum=1, integer=True)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("learning_rate", learning_rate, minimum=0, allow_none=True)
    if learning_rate is None:
        learning_rate = 1e-4 if attack == "pgd" else 1e-3
    x = check_not_empty(check_images(x, "x", allow_tensor=False), "x")
    y = check_labels(y, "y", num_examples=len(x), num_classes=output_classes(classifier))
    trainer = AdversarialTrainer(classifier, attack=attack, seed=seed, **attack_params)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    dataset = make_pipeline(x, y, batch_size=batch_size, shuffle=True, seed=seed)
    validation = None
    if validation_data is not None:
        x_val, y_val = check_validation_data(validation_data)
        x_val = check_images(x_val, "validation_data[0]", allow_tensor=False)
        y_val = check_labels(y_val, "validation_data[1]", len(x_val), num_classes=output_classes(classifier))
        validation = make_pipeline(x_val, y_val, batch_size=256)
    callbacks = list(callbacks)
    if backup_dir is not None:
        # keras deletes the backup folder after training: it must hold nothing else; written atomically
        callbacks.append(atomic_backup(check_backup_dir(backup_dir), delete_checkpoint=True))
    return trainer.fit(dataset, epochs=epochs, validation_data=validation, callbacks=callbacks, verbose=verbose)
