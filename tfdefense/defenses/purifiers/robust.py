"""Robust purification: a purifier trained against the whole pipeline.

The published purifiers (pix2pix, APE-GAN, EGAN) are trained on examples
crafted against the bare classifier; an attacker who differentiates through
`classifier(purifier(x))` defeats them (0% under adaptive PGD on MNIST at
eps 0.3). `RobustPurifier` closes that gap the way adversarial training does
for classifiers (Madry et al. 2018, https://arxiv.org/abs/1706.06083): at
every step it crafts PGD examples against the *whole pipeline* with the
classifier frozen, and trains the purifier so that the classifier is right on
its output for both adversarial and clean inputs.

Per batch `(x, y)` (averaged over the global batch under tf.distribute):

    x_adv = PGD_{attack_steps}(x; maximise attack_loss of C(G(x')) over the Linf ball eps, random start)
            (generator in inference mode, classifier frozen, no gradient to the weights)
    loss  = lambda_adv_cls   * CE(C(G(x_adv)), y)                             adv_cls
          + lambda_clean_cls * CE(C(G(x)), y)                                 clean_cls
          + lambda_trades    * KL(softmax C(G(x)) || softmax C(G(x_adv)))      trades
          + lambda_rec       * 0.5 * (mean|G(x_adv) - x| + mean|G(x) - x|)     rec (L1)
          + lambda_gan       * BCE(D([x_adv,] G(x_adv)), 1)                    gan (needs a discriminator)
    D:  d_loss = 0.5 * [BCE(D([x_adv,] x), 1) + BCE(D([x_adv,] G(x_adv)), 0)]

`attack_loss="ce"` (default) maximises the cross-entropy to the label (Madry),
"kl" the TRADES objective KL(C(G(x)) || C(G(x'))) (Zhang et al. 2019,
https://arxiv.org/abs/1901.08573). A discriminator taking two inputs is used
conditionally (pix2pix PatchGAN on `[x_adv, candidate]`), one taking a single
input unconditionally (APE-GAN's).

`precision="bf16"` runs the training attack and the train step in bfloat16
(`compute_precision`: generator, classifier and discriminator layers compute
in bfloat16 with float32 variables; PGD iterate, logits, losses and updates
stay float32). Inference, `purify`, save and export always run in float32.

`residual=True` makes the purifier `clip(x + 2 * G(x) - 1, 0, 1)`: with a
sigmoid generator whose output starts near 0.5 this starts at the identity,
so the pipeline starts at the classifier's clean accuracy.

`attack_eps`, `attack_step_size` and the lambdas live in non-trainable
variables: callbacks `assign` them during `fit` (`EpsilonRamp` is an eps
curriculum), the traced step reads the new values. `attack_steps` is fixed
(it sets the traced loop length).

Works with any generator `keras.Model` mapping [0, 1] images to [0, 1] images
of the same shape (the U-Nets of `tfdefense.models.unet`, APE-GAN's
generators, ...) and any Keras classifier returning logits. The classifier
is never updated unless `finetune_classifier=True`.

An ensemble: `classifier=[A, B, C]` trains one purifier for every member.
`ensemble="random"` (default) splits each batch at random into equal parts,
one per member: each example is attacked through, and scored by, one member
(the cost of one classifier). `ensemble="all"` attacks every example through
every member and averages the losses (the cost of N classifiers).

`finetune_classifier=True` trains the classifier(s) jointly with the
purifier on the same loss and optimizer (purification on top of an
adversarially trained classifier, fine-tuned together); the classifier is
then called in training mode, as `AdversarialTrainer` does.

The classifier-side baseline at the same settings, Madry PGD adversarial
training of the classifier itself, is `AdversarialTrainer`
(tfdefense.defenses.trainers.adversarial_training); both use the in-graph attack of
`tfdefense.defenses.training_attack`.

Limits: robustness is certified by nothing; it is what the attack suite of
`tfdefense.evaluation.robustness` measures. Training costs about
`attack_steps + 1` forward/backward passes per example per epoch.
"""

import keras
import numpy as np

from tfdefense._validation import check_choice, check_number, invalid_value, output_classes
from tfdefense.defenses.base import (
    OptimizerSlot,
    Purifier,
    bce_from_logits,
    check_image_input,
    check_labelled_fit_data,
    check_model,
    check_symbolic_images,
    dataset_fit_defaults,
    epoch_ordered_arrays,
    image_to_image_shape,
    static_image_shape,
)
from tfdefense.defenses.training_attack import (
    AttackSettingsMixin,
    check_precision,
    kl_divergence,
    pgd_in_graph,
    split_xy,
)
from tfdefense.training.optimizers import FusedAdam

ENSEMBLE_MODES = ("random", "all")
LOSS_WEIGHTS = ("lambda_adv_cls", "lambda_clean_cls", "lambda_trades", "lambda_rec", "lambda_gan")
METRIC_NAMES = ("loss", "adv_cls", "clean_cls", "trades", "rec", "gan", "d_loss", "adv_acc", "clean_acc")


def default_generator_optimizer():
    """Adam(1e-3): the classification terms dominate; pix2pix's 2e-4 trains slower here."""
    return FusedAdam(learning_rate=1e-3)


def default_discriminator_optimizer():
    return FusedAdam(learning_rate=2e-4, beta_1=0.5)


@keras.saving.register_keras_serializable(package="tfdefense")
class RobustPurifier(AttackSettingsMixin, Purifier):
    """A purifier trained with PGD crafted through `classifier(purifier(x))` (classifier frozen).

    Args:
      generator: a `keras.Model` mapping [0, 1] images to [0, 1] images of the
        same shape (e.g. `unet_generator_preset("tiny")`). Dropout in the
        generator is active only while training.
      classifier: the target `keras.Model` returning logits, or a list of
        them (an ensemble: one purifier for every member); never updated
        unless `finetune_classifier`.
      discriminator: optional `keras.Model` for the GAN term: two inputs
        `[x_adv, candidate]` (conditional, PatchGAN) or one input.
      attack_eps: Linf radius of the training attack (0.3 for MNIST).
      attack_steps: PGD iterations per training step (7).
      attack_step_size: PGD step; None = 2.5 * eps / steps (scales with eps).
      attack_rand_init: random start in the eps-ball.
      attack_loss: "ce" (Madry) or "kl" (TRADES objective).
      lambda_adv_cls, lambda_clean_cls: weights of the cross-entropy of the
        classifier on the purified adversarial / clean images (1, 1).
      lambda_trades: weight of KL(C(G(x)) || C(G(x_adv))) (0).
      lambda_rec: weight of the L1 reconstruction to the clean image (1).
      lambda_gan: weight of the generator's GAN term; default 1 with a
        discriminator, else 0.
      residual: purifier output clip(x + 2 G(x) - 1, 0, 1) instead of G(x).
      seed: seed of the training attack's random starts.
      precision: "fp32" or "bf16" (training attack and train step in
        bfloat16, float32 variables and losses; inference stays float32).
      ensemble: with a list of classifiers, "random" (each example of a
        batch goes to one member, equal shares) or "all" (every example
        through every member, losses averaged).
      finetune_classifier: train the classifier(s) jointly with the
        generator (same loss and optimizer); they must have trainable
        variables.

    `compile(g_optimizer=None, d_optimizer=None)`: generator Adam(1e-3),
    discriminator Adam(2e-4, beta_1=0.5) by default (`FusedAdam`; no
    `d_optimizer` without a discriminator). `fit` takes images and integer
    labels: arrays `(x, y)` or a dataset of `(x, y)` batches.
    """

    optimizer_slots = (
        OptimizerSlot("g_optimizer", "trained_models", "loss", default_generator_optimizer),
        OptimizerSlot("d_optimizer", "discriminator", "d_loss", default_discriminator_optimizer),
    )
    metric_names = METRIC_NAMES
    # The classifier first: a DefendedClassifier holding the same classifier then shares one model on load.
    nested_models = ("classifier", "generator", "discriminator")

    def __init__(
        self,
        generator,
        classifier,
        discriminator=None,
        attack_eps=0.3,
        attack_steps=7,
        attack_step_size=None,
        attack_rand_init=True,
        attack_loss="ce",
        lambda_adv_cls=1.0,
        lambda_clean_cls=1.0,
        lambda_trades=0.0,
        lambda_rec=1.0,
        lambda_gan=None,
        residual=False,
        seed=None,
        precision="fp32",
        ensemble="random",
        finetune_classifier=False,
        **kwargs,
    ):
        kwargs.setdefault("name", "robust_purifier")
        super().__init__(**kwargs)
        check_model("generator", generator)
        members = check_members(classifier)
        check_model("discriminator", discriminator, allow_none=True)
        image_shape = image_to_image_shape(generator, "generator")
        for member in members:
            check_image_input(member, "classifier", image_shape, "a model taking the generator's images of shape")
        check_same_classes(members)
        check_choice("ensemble", ensemble, ENSEMBLE_MODES)
        if not isinstance(finetune_classifier, (bool, np.bool_)):
            raise invalid_value("finetune_classifier", "True or False", finetune_classifier)
        if finetune_classifier and not all(member.trainable_variables for member in members):
            raise invalid_value(
                "finetune_classifier",
                "False for a classifier without trainable variables (set classifier.trainable = True, or "
                "use tfdefense.models.trainable_copy)",
                finetune_classifier,
            )
        self._conditional = False
        if discriminator is not None:
            d_inputs = discriminator.input_shape
            if isinstance(d_inputs, list) and len(d_inputs) == 2:
                if any(tuple(s[1:]) != image_shape for s in d_inputs):
                    raise invalid_value(
                        "discriminator", f"a model taking [x_adv, candidate] of shape {image_shape}", d_inputs
                    )
                self._conditional = True
            elif static_image_shape(discriminator, "discriminator") != image_shape:
                raise invalid_value("discriminator", f"a model taking images of shape {image_shape}", d_inputs)
        lambda_gan = (1.0 if discriminator is not None else 0.0) if lambda_gan is None else lambda_gan
        weights = {
            "lambda_adv_cls": lambda_adv_cls,
            "lambda_clean_cls": lambda_clean_cls,
            "lambda_trades": lambda_trades,
            "lambda_rec": lambda_rec,
            "lambda_gan": lambda_gan,
        }
        for argument, value in weights.items():
            check_number(argument, value, minimum=0)
        if lambda_gan > 0 and discriminator is None:
            raise invalid_value("lambda_gan", "0 when no discriminator is given", lambda_gan)
        if not isinstance(residual, (bool, np.bool_)):
            raise invalid_value("residual", "True or False", residual)
        check_precision(precision)
        self._init_attack(attack_eps, attack_steps, attack_step_size, attack_rand_init, attack_loss, seed)
        self.generator = generator
        self.classifier = list(members) if isinstance(classifier, (list, tuple)) else classifier
        self.discriminator = discriminator
        self.residual = bool(residual)
        self.precision = precision
        self.ensemble = ensemble
        self.finetune_classifier = bool(finetune_classifier)
        self.image_shape = image_shape
        self.add_loss_weights(weights)
        self._purify_function = None
        self.built = True

    # ------------------------------------------------------------------ inference

    def _purify(self, inputs, training):
        import tensorflow as tf

        out = tf.cast(self.generator(inputs, training=training), tf.float32)
        if self.residual:
            out = tf.clip_by_value(tf.cast(inputs, tf.float32) + 2.0 * out - 1.0, 0.0, 1.0)
        return out

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self._purify(inputs, bool(training))

    @property
    def classifiers(self):
        """The classifier(s) as a list (one member unless an ensemble was given)."""
        return list(self.classifier) if isinstance(self.classifier, (list, tuple)) else [self.classifier]

    @property
    def trained_models(self):
        """What the generator's optimizer updates: the generator, and the classifier(s) when fine-tuned."""
        return [self.generator, *self.classifiers] if self.finetune_classifier else self.generator

    def pipeline_logits(self, x, training=False, member=0):
        """Logits of classifier(purifier(x)) (the classifier, or ensemble member `member`, in inference mode)."""
        import tensorflow as tf

        return tf.cast(self.classifiers[member](self._purify(x, training), training=False), tf.float32)

    # ------------------------------------------------------------------ training

    def _pgd(self, x, y, member):
        import tensorflow as tf

        def logits_fn(z):
            return self.pipeline_logits(z, training=False, member=member)

        if self.attack_steps == 0:
            return tf.cast(x, tf.float32)
        reference = logits_fn(x) if self.attack_loss == "kl" else None
        return pgd_in_graph(
            logits_fn,
            x,
            y,
            self.attack_eps,
            self.attack_step_size,
            self.attack_steps,
            self._attack_seed(),
            rand_init=self.attack_rand_init,
            loss=self.attack_loss,
            reference_logits=reference,
        )

    def craft(self, x, y, assignment=None):
        """The training attack on a batch (graph-friendly): PGD through the frozen pipeline; with an
        ensemble, each example through the member `assignment` names."""
        if assignment is None:
            return self._pgd(x, y, 0)
        return by_member(lambda member, xm, ym: self._pgd(xm, ym, member), assignment, len(self.classifiers), x, y)

    def member_assignment(self, n):
        """(repeats, assignment): "random" gives each of the n examples one member, in equal shares at
        random; "all" repeats the batch once per member."""
        import tensorflow as tf

        count = len(self.classifiers)
        if self.ensemble == "all":
            return count, tf.repeat(tf.range(count, dtype=tf.int32), n)
        order = tf.argsort(tf.random.stateless_uniform([n], self._attack_seed()))
        return 1, tf.math.floormod(tf.cast(order, tf.int32), count)

    def prepare_batch(self, data, training):
        """(x, x_adv, y[, assignment]): the training attack runs outside the gradient tape."""
        import tensorflow as tf

        x, y = split_xy(data)
        x = tf.cast(x, tf.float32)
        if len(self.classifiers) == 1:
            return x, self.craft(x, y), y
        repeats, assignment = self.member_assignment(tf.shape(x)[0])
        x = tf.tile(x, [repeats, 1, 1, 1])
        y = tf.tile(tf.reshape(y, [-1]), [repeats])
        return x, self.craft(x, y, assignment), y, assignment

    def _classify(self, images, training, assignment=None):
        import tensorflow as tf

        mode = bool(training) and self.finetune_classifier
        if assignment is None:
            return tf.cast(self.classifier(images, training=mode), tf.float32)
        members = self.classifiers
        return by_member(
            lambda member, xm: tf.cast(members[member](xm, training=mode), tf.float32),
            assignment,
            len(members),
            images,
        )

    def compute_losses(self, x, x_adv, y, assignment=None, training=False):
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        n = tf.shape(x)[0]
        both = self._purify(tf.concat([x_adv, x], 0), training)  # one pass: shared batch statistics
        logits = self._classify(both, training, None if assignment is None else tf.concat([assignment] * 2, 0))
        purified_adv, purified_clean = both[:n], both[n:]
        logits_adv, logits_clean = logits[:n], logits[n:]
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits
        axes = [1, 2, 3]
        losses = {
            "adv_cls": ce(labels=y, logits=logits_adv),
            "clean_cls": ce(labels=y, logits=logits_clean),
            "trades": kl_divergence(logits_clean, logits_adv),
            "rec": 0.5
            * (tf.reduce_mean(tf.abs(purified_adv - x), axes) + tf.reduce_mean(tf.abs(purified_clean - x), axes)),
            "adv_acc": tf.cast(tf.equal(tf.argmax(logits_adv, -1), y), tf.float32),
            "clean_acc": tf.cast(tf.equal(tf.argmax(logits_clean, -1), y), tf.float32),
        }
        zeros = tf.zeros_like(losses["rec"])
        if self.discriminator is not None:

            def disc(candidate):
                inputs = [x_adv, candidate] if self._conditional else candidate
                return self.discriminator(inputs, training=training)

            d_fake = disc(purified_adv)
            d_real = disc(x)
            losses["gan"] = bce_from_logits(d_fake, True)
            losses["d_loss"] = 0.5 * (bce_from_logits(d_real, True) + bce_from_logits(d_fake, False))
        else:
            losses["gan"] = losses["d_loss"] = zeros

        def w(name):
            return tf.cast(getattr(self, name), tf.float32)

        losses["loss"] = (
            w("lambda_adv_cls") * losses["adv_cls"]
            + w("lambda_clean_cls") * losses["clean_cls"]
            + w("lambda_trades") * losses["trades"]
            + w("lambda_rec") * losses["rec"]
            + w("lambda_gan") * losses["gan"]
        )
        return losses

    def prepare_fit(self, x, y, args, kwargs):
        """Checks `(x, y)` and `validation_data` (arrays or datasets); arrays under `BackupAndRestore` get
        an epoch order that resumes exactly."""
        import tensorflow as tf

        x, y = check_labelled_fit_data(self, x, y)
        validation = kwargs.get("validation_data")
        if validation is not None:
            if isinstance(validation, tf.data.Dataset):
                kwargs["validation_data"] = check_labelled_fit_data(self, validation, None, "validation_data")[0]
            elif isinstance(validation, (tuple, list)) and len(validation) == 2:
                kwargs["validation_data"] = check_labelled_fit_data(self, validation[0], validation[1])
            else:
                raise invalid_value(
                    "validation_data",
                    "(images, labels) arrays or a dataset",
                    f"a {len(validation)}-tuple"
                    if isinstance(validation, (tuple, list))
                    else type(validation).__name__,
                )
        x, y = epoch_ordered_arrays(x, y, args, kwargs, paired=False, seed=self.seed)  # exact resume
        return x, y, dataset_fit_defaults(x, args, kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **self._attack_config,
                "residual": self.residual,
                "precision": self.precision,
                "ensemble": self.ensemble,
                "finetune_classifier": self.finetune_classifier,
            }
        )
        return config


def check_members(classifier):
    """The classifier, or the list of ensemble members, as a checked non-empty list of models."""
    if isinstance(classifier, (list, tuple)):
        if not classifier:
            raise invalid_value("classifier", "a keras.Model or a non-empty list of them", "an empty list")
        for index, member in enumerate(classifier):
            check_model(f"classifier[{index}]", member)
        if len({id(member) for member in classifier}) != len(classifier):
            raise invalid_value("classifier", "distinct models (each member once)", "a model listed twice")
        return list(classifier)
    check_model("classifier", classifier)
    return [classifier]


def check_same_classes(members):
    classes = [output_classes(member) for member in members]
    if len(set(classes)) > 1:
        raise invalid_value("classifier", "ensemble members with the same number of classes", classes)


def by_member(function, assignment, count, *tensors):
    """`function(member, *parts)` on the examples `assignment` gives to each member, reassembled in order."""
    import tensorflow as tf

    positions = tf.dynamic_partition(tf.range(tf.shape(assignment)[0]), assignment, count)
    parts = [tf.dynamic_partition(t, assignment, count) for t in tensors]
    outputs = [function(member, *(part[member] for part in parts)) for member in range(count)]
    return tf.dynamic_stitch(positions, outputs)
