"""APE-GAN: adversarial perturbation elimination with a GAN.

Paper: Shen, Ji, Wang, Li, Xu, "APE-GAN: Adversarial Perturbation Elimination
with GAN" (https://arxiv.org/abs/1707.05474). A generator G maps an
adversarial image to a clean one; a discriminator D tells clean images from
G's reconstructions. Trained on paired `(x_adv, x_clean)` FGSM examples
(MNIST eps 0.3, 2 epochs; CIFAR-10 eps 0.1, 10 epochs; ImageNet eps 8/255,
30 epochs, 256 px, batch 16), Adam with learning rate 2e-4. Build the pairs
with `tfdefense.defenses.make_attack_pairs(classifier, x_train, y_train,
[("fgsm", {"eps": 0.3})], mode="all")` on the training split and evaluate on
held-out images.

Objective (per batch, averaged over the global batch under tf.distribute):

    D:  d_loss  = BCE(D(x_clean), 1) + BCE(D(G(x_adv)), 0)
    G:  g_total = mse_weight * mean (G(x_adv) - x_clean)^2      (g_mse, 0.7)
                + adv_weight * BCE(D(G(x_adv)), 1)               (g_adv, 0.3)

Each `train_step` makes one discriminator update, then `generator_steps`
generator updates (2 in the paper) on the same batch. The discriminator's
sigmoid output D(x) = sigmoid(logit) is folded into the binary cross-entropy
(`sigmoid_cross_entropy_with_logits`): the same loss as the paper's
sigmoid + BCE, without its saturation at 0 and 1.

The loss weights live in non-trainable variables (`defense.mse_weight`,
`defense.adv_weight`) that callbacks may `assign` during `fit`.

Inference: `defense(x)` purifies, deterministically (batch norm uses its
stored statistics). `defense.purify(x)` does the same on numpy arrays with
input checks.

Limits: the robustness comes from the training attack (FGSM in the paper);
APE-GAN is differentiable end to end, so an attacker who differentiates through
`DefendedClassifier(apegan, classifier)` (the adaptive evaluation) defeats it.
The generator is built for one image size and channel count.
"""

import numpy as np

import keras

from tfdefense._validation import check_images, check_number, invalid_value

METRIC_NAMES = ("d_loss", "g_mse", "g_adv", "g_total")
LOSS_WEIGHTS = ("mse_weight", "adv_weight")


def default_optimizer(learning_rate=2e-4):
    """Adam(2e-4, beta_1=0.5), as in the APE-GAN paper's code."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5)


# --------------------------------------------------------------------- helpers
# (shared by the APE-GAN, EGAN and AdvGAN modules)


def static_image_shape(model, argument):
    """(H, W, C) of a built keras.Model taking one batch of fixed-size images."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else None
    if shape is None or len(shape) != 4 or any(s is None for s in shape[1:]):
        raise invalid_value(argument, "a built keras.Model taking (N, H, W, C) images of a fixed size", shape)
    return tuple(int(s) for s in shape[1:])


def check_model(argument, model, allow_none=False):
    if model is None and allow_none:
        return model
    if not isinstance(model, keras.Model):
        raise invalid_value(argument, "a keras.Model" + (" or None" if allow_none else ""), model)
    return model


def check_symbolic_images(inputs, image_shape, argument="x"):
    """Checks the static shape of a (possibly symbolic) image batch."""
    shape = tuple(inputs.shape)
    if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape)):
        raise invalid_value(
            argument,
            f"a batch of images of shape (N, {', '.join(map(str, image_shape))})"
            + (f" ({image_shape[-1]} channel(s))" if len(shape) == 4 and shape[-1] != image_shape[-1] else ""),
            f"shape {shape}",
        )


def check_image_array(x, image_shape, argument="x"):
    """Checks a numpy batch: [0, 1], finite, float, shape (N, *image_shape)."""
    x = check_images(x, argument, allow_tensor=False)
    if tuple(x.shape[1:]) != tuple(image_shape):
        raise invalid_value(
            argument,
            f"images of shape {tuple(image_shape)} ({image_shape[-1]} channel(s))",
            f"array of shape {tuple(x.shape)}",
        )
    return x


def unpack_images(data, names=("x_adv", "x_clean")):
    """(x_adv, x_clean) (or more) from a batch `(a, b)`, `(a, b, y)` or a dict."""
    if isinstance(data, dict):
        return tuple(data.get(k) for k in names)
    data = tuple(data) if isinstance(data, (list, tuple)) else (data,)
    if len(data) == 1 and isinstance(data[0], (list, tuple)):
        data = tuple(data[0])
    data = tuple(d for d in data if d is not None)
    if len(data) < len(names) or len(data) > len(names) + 1:
        raise invalid_value(
            "data", f"batches of ({', '.join(names)}) or ({', '.join(names)}, y)", f"a batch of {len(data)} element(s)"
        )
    return data[: len(names)]


def compile_optimizers(model, named, auto_scale_loss=True, kwargs=None):
    """Shared `compile` logic: rejects `optimizer=`/`loss=`, wraps for mixed_float16, builds.

    `named` maps attribute names ("g_optimizer") to (optimizer or None,
    variables, default factory). Returns the optimizers in order.
    """
    kwargs = dict(kwargs or {})
    for argument in ("optimizer", "loss"):
        if kwargs.get(argument) is not None:
            names = " and ".join(f"{n}=" for n in named)
            raise invalid_value(argument, f"None (use {names}; the losses are built in)", kwargs[argument])
        kwargs.pop(argument, None)
    optimizers = []
    for attribute, (optimizer, _, factory) in named.items():
        optimizer = keras.optimizers.get(optimizer) if optimizer is not None else factory()
        if any(optimizer is other for other in optimizers):
            raise invalid_value(attribute, "an optimizer object of its own (not shared)", optimizer)
        if auto_scale_loss and model.dtype_policy.name == "mixed_float16":
            if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizers.append(optimizer)
    keras.Model.compile(model, optimizer=optimizers[0], auto_scale_loss=False, **kwargs)
    for (attribute, (_, variables, _)), optimizer in zip(named.items(), optimizers):
        setattr(model, attribute, optimizer)
        # Built now (inside the caller's strategy scope) so that checkpoints
        # restored at the start of fit (BackupAndRestore) find their slots.
        if not optimizer.built:
            optimizer.build(variables)
    return optimizers


def batched_call(fn, x, batch_size, cache_owner, cache_name="_purify_function"):
    """Runs a cached tf.function over numpy batches; returns float32 numpy."""
    import tensorflow as tf

    check_number("batch_size", batch_size, minimum=1, integer=True)
    function = getattr(cache_owner, cache_name, None)
    if function is None:
        function = tf.function(fn, reduce_retracing=True, autograph=False)
        setattr(cache_owner, cache_name, function)
    outputs = [np.asarray(function(tf.constant(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    if not outputs:
        return np.zeros_like(x)
    return np.concatenate(outputs).astype(np.float32, copy=False)


def bce_from_logits(logits, target):
    """Per-example binary cross-entropy of sigmoid(logits) against a 0/1 target."""
    import tensorflow as tf

    logits = tf.reshape(tf.cast(logits, tf.float32), [tf.shape(logits)[0], -1])
    labels = tf.ones_like(logits) if target else tf.zeros_like(logits)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)


# --------------------------------------------------------------------- model


@keras.saving.register_keras_serializable(package="tfdefense")
class APEGAN(keras.Model):
    """APE-GAN purifier trained with `fit` on `(x_adv, x_clean[, y])` batches.

    Args:
      generator: a `keras.Model` mapping [0, 1] images to [0, 1] images of the
        same shape (`tfdefense.models.apegan_generator`).
      discriminator: a `keras.Model` mapping images to one logit per image
        (`tfdefense.models.apegan_discriminator`); D = sigmoid(logit).
      mse_weight: weight of the reconstruction MSE (0.7 in the paper).
      adv_weight: weight of the generator's adversarial loss (0.3 in the paper).
      generator_steps: generator updates per discriminator update (2 in the paper).

    Use `APEGAN.from_preset("mnist" | "cifar10" | "imagenet" | "tiny")` for the
    paper's Table 6 networks.
    """

    def __init__(self, generator, discriminator, mse_weight=0.7, adv_weight=0.3, generator_steps=2, **kwargs):
        kwargs.setdefault("name", "apegan")
        super().__init__(**kwargs)
        check_model("generator", generator)
        check_model("discriminator", discriminator)
        image_shape = static_image_shape(generator, "generator")
        out_shape = generator.output_shape
        if isinstance(out_shape, list) or tuple(out_shape[1:]) != image_shape:
            raise invalid_value(
                "generator", f"a model whose output shape equals its input shape {image_shape}", out_shape
            )
        d_shape = static_image_shape(discriminator, "discriminator")
        if d_shape != image_shape:
            raise invalid_value("discriminator", f"a model taking images of shape {image_shape}", d_shape)
        check_number("mse_weight", mse_weight, minimum=0)
        check_number("adv_weight", adv_weight, minimum=0)
        check_number("generator_steps", generator_steps, minimum=1, integer=True)
        self.generator = generator
        self.discriminator = discriminator
        self.image_shape = image_shape
        self.generator_steps = int(generator_steps)
        self._initial_weights = {"mse_weight": float(mse_weight), "adv_weight": float(adv_weight)}
        for weight, value in self._initial_weights.items():
            variable = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(value), trainable=False, name=weight
            )
            setattr(self, weight, variable)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_mse_tracker = keras.metrics.Mean(name="g_mse")
        self.g_adv_tracker = keras.metrics.Mean(name="g_adv")
        self.g_total_tracker = keras.metrics.Mean(name="g_total")
        self.g_optimizer = None
        self.d_optimizer = None
        self._purify_function = None
        self.built = True

    @classmethod
    def from_preset(cls, preset="mnist", input_shape=None, **kwargs):
        """An untrained APEGAN with the paper's networks: "mnist", "cifar10", "imagenet" or "tiny"."""
        from tfdefense.models.apegan_nets import apegan_discriminator_preset, apegan_generator_preset

        generator = apegan_generator_preset(preset, input_shape)
        discriminator = apegan_discriminator_preset(preset, generator.input_shape[1:])
        return cls(generator, discriminator, **kwargs)

    # ------------------------------------------------------------------ inference

    @property
    def stochastic(self):
        """Always False: `defense(x)` uses the stored batch-norm statistics."""
        return False

    def call(self, inputs, training=None):
        check_symbolic_images(inputs, self.image_shape)
        return self.generator(inputs, training=bool(training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def purify(self, x, batch_size=256):
        """Purifies a numpy batch of [0, 1] images (checked); returns float32 numpy images."""
        x = check_image_array(x, self.image_shape)
        return batched_call(lambda batch: self(batch, training=False), x, batch_size, self)

    # ------------------------------------------------------------------ training

    def compile(self, g_optimizer=None, d_optimizer=None, auto_scale_loss=True, **kwargs):
        """Sets the optimizers (default Adam(2e-4, beta_1=0.5) each).

        Other keyword arguments (`jit_compile`, `steps_per_execution`,
        `run_eagerly`) go to `keras.Model.compile`. Call it inside the strategy
        scope under tf.distribute.
        """
        compile_optimizers(
            self,
            {
                "g_optimizer": (g_optimizer, self.generator.trainable_variables, default_optimizer),
                "d_optimizer": (d_optimizer, self.discriminator.trainable_variables, default_optimizer),
            },
            auto_scale_loss,
            kwargs,
        )

    def get_compile_config(self):
        if self.g_optimizer is None:
            return None
        serialize = keras.saving.serialize_keras_object
        return {"g_optimizer": serialize(self.g_optimizer), "d_optimizer": serialize(self.d_optimizer)}

    def compile_from_config(self, config):
        self.compile(**{k: keras.saving.deserialize_keras_object(v) for k, v in config.items()})

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_mse_tracker, self.g_adv_tracker, self.g_total_tracker]

    def _generator_losses(self, x_adv, x_clean, training):
        import tensorflow as tf

        fake = tf.cast(self.generator(x_adv, training=training), tf.float32)
        g_mse = tf.reduce_mean(tf.square(fake - x_clean), axis=[1, 2, 3])
        g_adv = bce_from_logits(self.discriminator(fake, training=training), True)
        g_total = tf.cast(self.mse_weight, tf.float32) * g_mse + tf.cast(self.adv_weight, tf.float32) * g_adv
        return fake, {"g_mse": g_mse, "g_adv": g_adv, "g_total": g_total}

    def _discriminator_loss(self, x_clean, fake, training):
        real = bce_from_logits(self.discriminator(x_clean, training=training), True)
        return real + bce_from_logits(self.discriminator(fake, training=training), False)

    def _update_metrics(self, losses):
        import tensorflow as tf

        for name in METRIC_NAMES:
            getattr(self, f"{name}_tracker").update_state(tf.reduce_mean(losses[name]))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        x_adv, x_clean = (tf.cast(t, tf.float32) for t in unpack_images(data))
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        fake = tf.stop_gradient(tf.cast(self.generator(x_adv, training=True), tf.float32))
        with tf.GradientTape() as tape:
            d_loss = self._discriminator_loss(x_clean, fake, training=True)
            scaled = self.d_optimizer.scale_loss(tf.nn.compute_average_loss(d_loss))
        self.d_optimizer.apply(tape.gradient(scaled, d_vars), d_vars)
        for _ in range(self.generator_steps):
            with tf.GradientTape() as tape:
                _, losses = self._generator_losses(x_adv, x_clean, training=True)
                scaled = self.g_optimizer.scale_loss(tf.nn.compute_average_loss(losses["g_total"]))
            self.g_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)
        losses["d_loss"] = d_loss
        return self._update_metrics(losses)

    def test_step(self, data):
        import tensorflow as tf

        x_adv, x_clean = (tf.cast(t, tf.float32) for t in unpack_images(data))
        fake, losses = self._generator_losses(x_adv, x_clean, training=False)
        losses["d_loss"] = self._discriminator_loss(x_clean, fake, training=False)
        return self._update_metrics(losses)

    def _check_fit_data(self, x, y, argument="x"):
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            specs = spec if isinstance(spec, (tuple, list)) else (spec,)
            if len(specs) not in (2, 3):
                raise invalid_value(argument, "a dataset of (x_adv, x_clean) or (x_adv, x_clean, y) batches", spec)
            for image_spec in specs[:2]:
                shape = tuple(image_spec.shape)
                if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], self.image_shape)):
                    raise invalid_value(
                        argument,
                        f"(x_adv, x_clean) batches of shape (N, {', '.join(map(str, self.image_shape))})",
                        spec,
                    )
            return x, y
        if x is None or isinstance(x, (str, dict)) or not hasattr(x, "shape"):
            return x, y
        x = check_image_array(x, self.image_shape, "x")
        if y is None:
            raise invalid_value("y", "the clean images paired with x (x_adv)", y)
        y = check_image_array(y, self.image_shape, "y")
        if len(y) != len(x):
            raise invalid_value("y", f"{len(x)} clean images (one per x_adv)", f"array of shape {tuple(y.shape)}")
        return x, y

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on paired data: `fit(x_adv, x_clean, ...)` (arrays, checked)
        or a `tf.data.Dataset` of `(x_adv, x_clean[, y])` batches
        (`tfdefense.data.make_paired_pipeline`)."""
        import tensorflow as tf

        if self.g_optimizer is None:
            raise RuntimeError("Call compile() before fit() (it sets g_optimizer and d_optimizer).")
        x, y = self._check_fit_data(x, y)
        validation = kwargs.get("validation_data")
        if validation is not None and not hasattr(validation, "element_spec"):
            if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
                raise invalid_value(
                    "validation_data", "(x_adv, x_clean) arrays or a dataset", type(validation).__name__
                )
            kwargs["validation_data"] = self._check_fit_data(validation[0], validation[1], "validation_data")
        elif validation is not None:
            self._check_fit_data(validation, None, "validation_data")
        if isinstance(x, tf.data.Dataset) and not args:
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself
        return super().fit(x, y, *args, **kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            {
                "generator": serialize(self.generator),
                "discriminator": serialize(self.discriminator),
                **self._initial_weights,
                "generator_steps": self.generator_steps,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
