"""Pix2pix adversarial purifier: U-Net generator + conditional PatchGAN.

Paper: Isola et al., "Image-to-Image Translation with Conditional Adversarial
Networks" (https://arxiv.org/abs/1611.07004), used as a purifier of adversarial
examples (pix2pix defense) and, with a VGG19 perceptual loss, a staged loss
schedule and multi-attack training data, as the "versatile" defense.

Objective (per batch, averaged over the global batch under tf.distribute):

    D: d_loss  = 0.5 * [BCE(D(x_adv, x_clean), 1) + BCE(D(x_adv, G(x_adv)), 0)]
    G: g_total = BCE(D(x_adv, G(x_adv)), 1)                          (g_gan)
               + lambda_l1   * mean |G(x_adv) - x_clean|                  (l1)
               + lambda_perc * sum_k mean |phi_k(G(x_adv)) - phi_k(x_clean)| (perceptual)
               + lambda_cls  * consistency(C(G(x_adv)), target)            (cls)

BCE is computed from the patch logits and averaged over the patches. The
classifier-consistency term (needs `classifier=`) is, with
`cls_loss="cross_entropy"`, the cross-entropy of the classifier's logits on the
purified image to the label `y` when the dataset yields `(x_adv, x_clean, y)`,
else to the classifier's prediction on the clean image; with `cls_loss="kl"`,
KL(softmax(C(x_clean)) || softmax(C(G(x_adv)))) (soft targets, `y` unused).
The feature extractor and the classifier are never updated.

The lambdas live in non-trainable variables (`defense.lambda_l1` etc.) so
callbacks such as `tfdefense.training.StagedLossWeights` can `assign` them
during `fit`; a Python float would be frozen into the traced step.

Inference: `defense(x)` purifies. By default it is deterministic (dropout off,
stored batch-norm statistics). `inference_mode="train_mode"` reproduces the
pix2pix habit of testing with dropout on and batch statistics (the stored
statistics are not changed); such a purifier is stochastic and its output on
one image depends on the rest of the batch, so it must be evaluated with EOT
and fixed batch composition. `defense.stochastic` says which one you hold.

Limits: the generator is built for one image size and channel count; the
adversarial robustness comes from the training attacks only (an attacker that
differentiates through `DefendedClassifier(defense, classifier)` is the honest
evaluation).
"""

import keras

from tfdefense._validation import check_choice, check_number, invalid_value, warn_if_probabilities
from tfdefense.defenses.base import OptimizerSlot, Purifier, check_symbolic_images, image_to_image_shape
from tfdefense.training.optimizers import default_optimizer

INFERENCE_MODES = ("deterministic", "train_mode")
CLS_LOSSES = ("cross_entropy", "kl")
LOSS_WEIGHTS = ("lambda_l1", "lambda_perc", "lambda_cls")
METRIC_NAMES = ("g_gan", "l1", "perceptual", "cls", "g_total", "d_loss")


def _classifier_feature_layers(feature_extractor, classifier):
    """Output layer names when `feature_extractor` is built from `classifier`'s layers, else None."""
    if feature_extractor is None or classifier is None:
        return None
    owned = {id(layer) for layer in classifier.layers}
    inner = [layer for layer in feature_extractor.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not inner or not all(id(layer) in owned for layer in inner):
        return None
    names = getattr(feature_extractor, "output_names", None)  # a functional model's output layers
    if names is None and isinstance(feature_extractor, keras.Sequential):
        names = [feature_extractor.layers[-1].name]
    return list(names) if names else None


def _integer_state(variable):
    """Seed-generator states (integer) as opposed to batch-norm statistics (float)."""
    return "int" in str(variable.dtype)


@keras.saving.register_keras_serializable(package="tfdefense")
class Pix2PixDefense(Purifier):
    """A pix2pix purifier trained with `fit` on `(x_adv, x_clean[, y])` batches.

    Args:
      generator: a `keras.Model` mapping [0, 1] images to [0, 1] images of the
        same shape (e.g. `tfdefense.models.unet_generator`).
      discriminator: a `keras.Model` taking `[x_adv, candidate]` and returning
        patch logits (e.g. `tfdefense.models.patchgan_discriminator`).
      feature_extractor: optional frozen model mapping images to a list of
        feature maps (`tfdefense.models.perceptual_feature_extractor`) for the
        perceptual loss.
      classifier: optional target classifier returning logits, for the
        classifier-consistency loss. Never trained here.
      lambda_l1: weight of the L1 term (100 in the paper).
      lambda_perc: weight of the perceptual term; default 100 with a feature
        extractor, else 0.
      lambda_cls: weight of the consistency term; default 1 with a classifier, else 0.
      cls_loss: "cross_entropy" (to y, else to the clean prediction) or "kl".
      inference_mode: "deterministic" (default) or "train_mode" (dropout on,
        batch statistics; stochastic and batch-dependent, see module docs).

    `compile(g_optimizer=None, d_optimizer=None)`: Adam(2e-4, beta_1=0.5) each
    by default (`FusedAdam`). `fit(x_adv, x_clean, ...)` takes arrays (checked:
    [0, 1], matching shapes and channels) or a `tf.data.Dataset` of
    `(x_adv, x_clean)` / `(x_adv, x_clean, y)` batches (shapes checked; build it
    with `tfdefense.data.make_paired_pipeline`, which checks values);
    `validation_data` takes the same forms.
    """

    optimizer_slots = (
        OptimizerSlot("g_optimizer", "generator", "g_total", default_optimizer),
        OptimizerSlot("d_optimizer", "discriminator", "d_loss", default_optimizer),
    )
    metric_names = METRIC_NAMES
    # The classifier first: a feature extractor built from its layers is rebuilt from it on load.
    nested_models = ("classifier", "generator", "discriminator")
    fit_data = "pairs"

    def __init__(
        self,
        generator,
        discriminator,
        feature_extractor=None,
        classifier=None,
        lambda_l1=100.0,
        lambda_perc=None,
        lambda_cls=None,
        cls_loss="cross_entropy",
        inference_mode="deterministic",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for argument, model in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(model, keras.Model):
                raise invalid_value(argument, "a keras.Model", model)
        for argument, model in (("feature_extractor", feature_extractor), ("classifier", classifier)):
            if model is not None and not isinstance(model, keras.Model):
                raise invalid_value(argument, "a keras.Model or None", model)
        image_shape = image_to_image_shape(generator, "generator")
        d_inputs = discriminator.input_shape
        if not isinstance(d_inputs, list) or len(d_inputs) != 2 or any(tuple(s[1:]) != image_shape for s in d_inputs):
            raise invalid_value(
                "discriminator", f"a model taking two inputs [x_adv, candidate] of shape {image_shape}", d_inputs
            )
        if classifier is not None:
            c_shape = classifier.input_shape if isinstance(classifier.input_shape, tuple) else None
            if (
                c_shape is None
                or len(c_shape) != 4
                or any(c is not None and c != e for c, e in zip(c_shape[1:], image_shape, strict=False))
            ):
                raise invalid_value(
                    "classifier",
                    f"a model taking the generator's images of shape {image_shape}",
                    f"a model with input shape {classifier.input_shape}",
                )
            warn_if_probabilities(classifier, argument="classifier")
        lambda_perc = (100.0 if feature_extractor is not None else 0.0) if lambda_perc is None else lambda_perc
        lambda_cls = (1.0 if classifier is not None else 0.0) if lambda_cls is None else lambda_cls
        for argument, value in (("lambda_l1", lambda_l1), ("lambda_perc", lambda_perc), ("lambda_cls", lambda_cls)):
            check_number(argument, value, minimum=0)
        if lambda_perc > 0 and feature_extractor is None:
            raise invalid_value("lambda_perc", "0 when no feature_extractor is given", lambda_perc)
        if lambda_cls > 0 and classifier is None:
            raise invalid_value("lambda_cls", "0 when no classifier is given", lambda_cls)
        self.cls_loss = check_choice("cls_loss", cls_loss, CLS_LOSSES)
        self.inference_mode = check_choice("inference_mode", inference_mode, INFERENCE_MODES)

        self.generator = generator
        self.discriminator = discriminator
        self.feature_extractor = feature_extractor
        self.classifier = classifier
        self.image_shape = image_shape
        self.add_loss_weights({"lambda_l1": lambda_l1, "lambda_perc": lambda_perc, "lambda_cls": lambda_cls})
        self._purify_function = None
        self.built = True

    # ------------------------------------------------------------------ inference

    @property
    def stochastic(self):
        """True when `defense(x)` runs with dropout on and batch statistics."""
        return self.inference_mode == "train_mode"

    def with_inference_mode(self, inference_mode):
        """A Pix2PixDefense sharing this one's networks and weights in another inference mode."""
        check_choice("inference_mode", inference_mode, INFERENCE_MODES)
        twin = Pix2PixDefense(
            self.generator,
            self.discriminator,
            feature_extractor=self.feature_extractor,
            classifier=self.classifier,
            cls_loss=self.cls_loss,
            inference_mode=inference_mode,
            **{k: float(keras.ops.convert_to_numpy(getattr(self, k))) for k in LOSS_WEIGHTS},
        )
        return twin

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        if training:
            return self.generator(inputs, training=True)
        if self.stochastic:
            return self._train_mode_call(inputs)
        return self.generator(inputs, training=False)

    def _train_mode_call(self, inputs):
        """Dropout on, batch statistics, stored statistics untouched; dropout seeds advance."""
        generator = self.generator
        outputs, states = generator.stateless_call(
            generator.trainable_variables, generator.non_trainable_variables, inputs, training=True
        )
        for variable, value in zip(generator.non_trainable_variables, states, strict=False):
            if _integer_state(variable):
                variable.assign(value)
        return outputs

    def purify(self, x, batch_size=256):
        """Purifies a numpy batch of [0, 1] images; returns float32 numpy images.

        Checks the images (values in [0, 1], shape and channels the generator
        was built for). In train_mode the result depends on `batch_size`.
        """
        return super().purify(x, batch_size)

    # ------------------------------------------------------------------ training

    def compute_losses(self, x_adv, x_clean, y, training):
        """Per-example loss terms (float32, shape (N,))."""
        import tensorflow as tf

        x_adv = tf.cast(x_adv, tf.float32)
        x_clean = tf.cast(x_clean, tf.float32)
        fake = self.generator(x_adv, training=training)
        fake32 = tf.cast(fake, tf.float32)
        d_real = tf.cast(self.discriminator([x_adv, x_clean], training=training), tf.float32)
        d_fake = tf.cast(self.discriminator([x_adv, fake], training=training), tf.float32)
        patch_axes = list(range(1, len(d_fake.shape)))
        image_axes = [1, 2, 3]

        def bce(logits, target):
            labels = tf.ones_like(logits) if target else tf.zeros_like(logits)
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), patch_axes)

        losses = {
            "g_gan": bce(d_fake, True),
            "d_loss": 0.5 * (bce(d_real, True) + bce(d_fake, False)),
            "l1": tf.reduce_mean(tf.abs(x_clean - fake32), image_axes),
        }
        zeros = tf.zeros_like(losses["l1"])
        if self.feature_extractor is not None:
            # Two calls, not one on the concatenated batch: the backward pass then
            # runs through the extractor for the purified half only.
            fake_features = self.feature_extractor(fake, training=False)
            clean_features = self.feature_extractor(x_clean, training=False)
            if not isinstance(fake_features, (list, tuple)):
                fake_features, clean_features = [fake_features], [clean_features]
            perceptual = zeros
            for a, b in zip(fake_features, clean_features, strict=False):
                a = tf.cast(a, tf.float32)
                b = tf.stop_gradient(tf.cast(b, tf.float32))
                perceptual += tf.reduce_mean(tf.abs(a - b), list(range(1, len(a.shape))))
            losses["perceptual"] = perceptual
        else:
            losses["perceptual"] = zeros
        if self.classifier is not None:
            logits_fake = tf.cast(self.classifier(fake32, training=False), tf.float32)
            if self.cls_loss == "kl" or y is None:
                logits_clean = tf.stop_gradient(tf.cast(self.classifier(x_clean, training=False), tf.float32))
            if self.cls_loss == "kl":
                p_clean = tf.nn.softmax(logits_clean)
                losses["cls"] = tf.reduce_sum(
                    p_clean * (tf.nn.log_softmax(logits_clean) - tf.nn.log_softmax(logits_fake)), -1
                )
            else:
                target = tf.argmax(logits_clean, -1) if y is None else tf.reshape(tf.cast(y, tf.int64), [-1])
                losses["cls"] = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits_fake)
        else:
            losses["cls"] = zeros

        def weight(name):
            return tf.cast(getattr(self, name), tf.float32)

        losses["g_total"] = (
            losses["g_gan"]
            + weight("lambda_l1") * losses["l1"]
            + weight("lambda_perc") * losses["perceptual"]
            + weight("lambda_cls") * losses["cls"]
        )
        return losses

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        shared = _classifier_feature_layers(self.feature_extractor, self.classifier)
        if shared is not None:
            # Built from the classifier's own layers: stored as layer names and
            # rebuilt on load, so both share one set of weights again.
            feature_extractor = {"classifier_layers": shared}
        elif self.feature_extractor is not None:
            feature_extractor = serialize(self.feature_extractor)
        else:
            feature_extractor = None
        config.update(
            {"feature_extractor": feature_extractor, "cls_loss": self.cls_loss, "inference_mode": self.inference_mode}
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = cls.deserialize_nested(config)
        value = config.get("feature_extractor")
        if isinstance(value, dict) and "classifier_layers" in value:
            from tfdefense.models.perceptual import perceptual_feature_extractor

            config["feature_extractor"] = perceptual_feature_extractor(
                config["classifier"], list(value["classifier_layers"])
            )
        elif value is not None:
            config["feature_extractor"] = keras.saving.deserialize_keras_object(value)
        return cls(**config)
