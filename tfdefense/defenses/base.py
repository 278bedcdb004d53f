"""The base class of the trainable defenses, and the plumbing they share.

The contract. A defense that `DefendedClassifier`, the adaptive attacks and the export work with
is a `keras.Model` (or an `InputTransform` layer, transforms/classic.py) that provides:

- `call(x, training=None)`: a batch of float32 NHWC images in [0, 1] -> images of the same shape
  in [0, 1] (the purified batch). `DefendedClassifier(defense, classifier)` calls it inside
  `classifier(defense(x))`, so the attacks differentiate through it; a defense whose forward pass
  has no useful gradient gives its own backward pass: `InputTransform(bpda=True)` and
  `DefenseGAN(backward="identity")` backpropagate as the identity (BPDA).
- `image_shape`: the (H, W, C) it was built for (checked against the classifier's input).
- `stochastic`: True when `defense(x)` draws randomness or depends on the rest of the batch
  (`DefenseGAN`'s restarts, the random transforms, pix2pix in "train_mode"): the adaptive
  protocols then average gradients over `eot_samples` draws (EOT) and judge each candidate afresh.
- `purify(x, batch_size=256)`: the same map on a checked numpy batch, float32 numpy out.
- `get_config` / `from_config` with the nested models serialized, and a registered
  (`@keras.saving.register_keras_serializable(package="tfdefense")`) class, for `.keras` files;
  `tfdefense.export.export_saved_model` traces `defense(x, training=False)` into a SavedModel.

`MagNet` follows it with its reformer (`magnet(x)`); `InputTransform` subclasses do through their
`transform`; `Purifier` below gives it to the trained purifiers.

`DefenseModel` (trainable defenses: purifiers, trainers, the GANs they build on) owns:

- `compile`: one optimizer per entry of the class attribute `optimizer_slots`
  (`OptimizerSlot(attribute, trains, loss, default, keyword)`: where `compile` stores it, the
  nested model(s) it updates, the loss term it minimises, its default factory, and `compile`'s
  keyword for it: "g_optimizer", or "optimizer" for single-optimizer models). A slot whose model
  is None is left out (`RobustPurifier` without a discriminator). Optimizers are built at compile
  time (in the caller's strategy scope), wrapped in a `LossScaleOptimizer` under "mixed_float16",
  saved in the compile config and restored by `compile_from_config`.
- metric trackers: one `keras.metrics.Mean` per name of `metric_names` (`self.trackers`,
  `self.metrics`), updated by `update_metrics(values)` with the batch means of per-example terms.
- loss-weight variables: `add_loss_weights({name: value})` makes non-trainable float32 scalars
  `self.<name>` that callbacks `assign` during `fit`; their initial values go in the config.
- nested models: the attributes named in `nested_models`, serialized by `get_config` and rebuilt
  by `from_config` (in that order: list a model shared with another first).
- `fit`: checks that `compile` ran, checks the data by `fit_data` ("pairs": `(x_adv, x_clean[, y])`,
  "images": images whose labels are ignored; a subclass may write `prepare_fit` instead), and
  turns a bad batch in a dataset into a ValueError (`fit_checked`).
- `train_step`: `prepare_batch(data, training)` (unpacking, plus work done outside the gradient
  tape: noise, the training attack), then `compute_losses(*batch, training)` under one tape, one
  `compute_average_loss` per slot's loss, gradients, and the updates in slot order. `test_step`
  runs the same losses with `training=False`.

A subclass declares its slots, metric names, loss weights and nested models, checks its arguments
in `__init__`, and writes `call` and `compute_losses`; it overrides `train_step` only where the
updates follow another order (APE-GAN: one discriminator step then `generator_steps` generator
steps; DCGAN; WGAN-GP: `critic_steps` critic steps; AdvGAN: the generator step before the
classifier sees the new examples). `Purifier` adds the image -> image inference: `stochastic`
False, the output shape is the input shape, `purify` runs `self(x, training=False)` in one cached
tf.function.
"""

import contextlib
import random
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np

from tfdefense._validation import (
    check_images,
    check_not_empty,
    check_number,
    check_validation_data,
    dataset_range_checked,
    fit_checked,
    invalid_value,
    warn_if_probabilities,
)


def static_image_shape(model, argument):
    """(H, W, C) of a built keras.Model taking one batch of fixed-size images."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else None
    if shape is None or len(shape) != 4 or any(s is None for s in shape[1:]):
        raise invalid_value(argument, "a built keras.Model taking (N, H, W, C) images of a fixed size", shape)
    return tuple(int(s) for s in shape[1:])


def check_model(argument, model, allow_none=False):
    """A keras.Model (or None when allowed); a `classifier` that ends in a softmax gets a warning (logits expected)."""
    if model is None and allow_none:
        return model
    if not isinstance(model, keras.Model):
        raise invalid_value(argument, "a keras.Model" + (" or None" if allow_none else ""), model)
    if argument == "classifier":
        warn_if_probabilities(model, argument=argument)
    return model


def check_symbolic_images(inputs, image_shape, argument="x"):
    """Checks the static shape of a (possibly symbolic) image batch."""
    shape = tuple(inputs.shape)
    if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape, strict=False)):
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


def unpack_images(data, names=("x_adv", "x_clean"), labels=False):
    """(x_adv, x_clean) (or more) from a batch `(a, b)`, `(a, b, y)` or a dict; with `labels`, y (or None) last."""
    if isinstance(data, dict):
        return tuple(data.get(k) for k in names) + ((data.get("y"),) if labels else ())
    data = tuple(data) if isinstance(data, (list, tuple)) else (data,)
    if len(data) == 1 and isinstance(data[0], (list, tuple)):
        data = tuple(data[0])
    data = tuple(d for d in data if d is not None)
    if len(data) < len(names) or len(data) > len(names) + 1:
        raise invalid_value(
            "data", f"batches of ({', '.join(names)}) or ({', '.join(names)}, y)", f"a batch of {len(data)} element(s)"
        )
    if labels:
        return tuple(data[: len(names)]) + ((data[len(names)] if len(data) > len(names) else None),)
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
    for (attribute, (_, variables, _)), optimizer in zip(named.items(), optimizers, strict=False):
        setattr(model, attribute, optimizer)
        # Built now (inside the caller's strategy scope) so that checkpoints
        # restored at the start of fit (BackupAndRestore) find their slots.
        if not optimizer.built:
            optimizer.build(variables)
    return optimizers


def add_scalar_variables(model, values):
    """Non-trainable float32 scalars `model.<name>` for {name: value}, in order (loss weights, eps, ...).

    Callbacks `assign` them during `fit`; the traced train step reads the new value.
    """
    for name, value in values.items():
        variable = model.add_weight(
            shape=(), initializer=keras.initializers.Constant(float(value)), trainable=False, name=name
        )
        setattr(model, name, variable)


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


def dataset_fit_defaults(x, args, kwargs):
    """`fit` keyword defaults: no keras shuffle of a tf.data.Dataset (it shuffles itself; keras warns),
    and the exact-resume callbacks (`tfdefense.training.resume.resumable_fit_callbacks`): the data
    epoch of `make_pipeline` / `make_paired_pipeline` data, random-generator states beside a
    `BackupAndRestore` checkpoint."""
    import tensorflow as tf

    from tfdefense.training.resume import resumable_fit_callbacks

    if isinstance(x, tf.data.Dataset) and not args:
        kwargs.setdefault("shuffle", False)
    if len(args) < 4:  # callbacks not given positionally (batch_size, epochs, verbose, callbacks)
        kwargs["callbacks"] = resumable_fit_callbacks(x, kwargs.get("callbacks"))
    return kwargs


def check_paired_fit_data(image_shape, x, y, argument="x", num_classes=None):
    """Checks `fit` data of a purifier trained on pairs: arrays (x_adv, x_clean) or a dataset.

    Arrays are checked for values and shapes and must not be empty; a
    `tf.data.Dataset` of `(x_adv, x_clean[, y])` batches for its element
    shapes and dtypes, and comes back wrapped in a per-batch check of the
    [0, 1] range (and of the labels against `num_classes`): call `fit`
    through `fit_checked` to get that failure as a ValueError.
    """
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        specs = spec if isinstance(spec, (tuple, list)) else (spec,)
        if len(specs) not in (2, 3):
            raise invalid_value(argument, "a dataset of (x_adv, x_clean) or (x_adv, x_clean, y) batches", spec)
        for name, image_spec in zip(("x_adv", "x_clean"), specs[:2], strict=False):
            shape = tuple(image_spec.shape)
            if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape, strict=False)):
                raise invalid_value(argument, f"{name} batches of shape (N, {', '.join(map(str, image_shape))})", spec)
            if not image_spec.dtype.is_floating:
                raise invalid_value(argument, f"float {name} images in [0, 1] (convert uint8 with x / 255)", spec)
        labels = 2 if len(specs) == 3 else None
        return dataset_range_checked(x, argument, (0, 1), label_component=labels, num_classes=num_classes), y
    if x is None or isinstance(x, (str, dict)) or not hasattr(x, "shape"):
        return x, y
    x = check_image_array(x, image_shape, "x" if argument == "x" else argument)
    check_not_empty(x, argument)
    if y is None:
        raise invalid_value("y", "the clean images paired with x (x_adv)", y)
    y = check_image_array(y, image_shape, "y")
    if len(y) != len(x):
        raise invalid_value("y", f"{len(x)} clean images (one per x_adv)", f"array of shape {tuple(y.shape)}")
    return x, y


_KERAS_ARRAY_OPTIONS = ("sample_weight", "class_weight", "validation_split", "steps_per_epoch")


def epoch_ordered_arrays(x, y, args, kwargs, paired, seed=None):
    """Arrays of a `fit` backed up by `BackupAndRestore` -> a `tfdefense.data` pipeline ordering epoch e by (seed, e).

    keras shuffles arrays from TensorFlow's global seed, an order that
    restarts with every process: a fit resumed from its backup would not
    repeat an uninterrupted one. With a `BackupAndRestore` among the
    callbacks the arrays are batched by `make_pipeline` /
    `make_paired_pipeline` instead; without one (nothing to resume) keras
    shuffles them as usual. Also left to keras: `shuffle=False`, positional
    options, and `sample_weight`, `class_weight`, `validation_split`,
    `steps_per_epoch`. `seed` None: drawn from Python's `random` (which
    `keras.utils.set_random_seed` seeds). Returns (x, y).
    """
    if args or not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or not kwargs.get("shuffle", True):
        return x, y
    if any(kwargs.get(name) is not None for name in _KERAS_ARRAY_OPTIONS):
        return x, y
    callbacks = kwargs.get("callbacks")
    if not isinstance(callbacks, (list, tuple)) or not any(
        isinstance(c, keras.callbacks.BackupAndRestore) for c in callbacks
    ):
        return x, y
    from tfdefense.data.pipelines import make_paired_pipeline, make_pipeline

    seed = random.getrandbits(31) if seed is None else int(seed)
    batch_size = kwargs.pop("batch_size", None) or 32  # keras' default for arrays
    kwargs.pop("shuffle", None)
    if paired:
        return make_paired_pipeline(x, y, batch_size=batch_size, seed=seed), None
    return make_pipeline(x, y, batch_size=batch_size, shuffle=True, seed=seed), None


def prepare_paired_fit(image_shape, x, y, args, kwargs, num_classes=None):
    """Checks `x`, `y` and `validation_data` of a paired `fit`; returns (x, y, kwargs)."""
    x, y = check_paired_fit_data(image_shape, x, y, num_classes=num_classes)
    validation = kwargs.get("validation_data")
    if validation is not None and not hasattr(validation, "element_spec"):
        validation = check_validation_data(validation, (2, 3))
        kwargs["validation_data"] = check_paired_fit_data(image_shape, validation[0], validation[1], "validation_data")
    elif validation is not None:
        kwargs["validation_data"] = check_paired_fit_data(
            image_shape, validation, None, "validation_data", num_classes=num_classes
        )[0]
    x, y = epoch_ordered_arrays(x, y, args, kwargs, paired=True)
    return x, y, dataset_fit_defaults(x, args, kwargs)


# ---------------------------------------------------------------- latent codes and image-only fit data


def generator_latent_dim(generator):
    shape = getattr(generator, "input_shape", None)
    if isinstance(shape, list) or shape is None or len(shape) != 2 or shape[1] is None:
        raise invalid_value("generator", "a keras.Model taking latent codes of shape (N, latent_dim)", shape)
    return int(shape[1])


def generator_image_shape(generator):
    shape = generator.output_shape
    if isinstance(shape, list) or len(shape) != 4 or any(s is None for s in shape[1:]):
        raise invalid_value("generator", "a keras.Model returning (N, H, W, C) images", shape)
    return tuple(int(s) for s in shape[1:])


def add_seed_state(model, seed):
    """A non-trainable int64 weight [seed, counter] (saved, restored, replica-safe)."""
    if seed is None:
        seed = random.randint(1, 2**31 - 2)  # follows keras.utils.set_random_seed

    def initializer(shape, dtype=None):
        return keras.ops.convert_to_tensor([seed, 0], dtype=dtype)

    return model.add_weight(
        shape=(2,),
        initializer=initializer,
        dtype="int64",
        trainable=False,
        name="latent_seed",
        aggregation="only_first_replica",
    )


def draw_seed(model):
    """The next stateless seed (int64[2]) of `model.latent_seed`; folds in the replica id."""
    import tensorflow as tf

    seed = tf.identity(model.latent_seed)
    model.latent_seed.assign_add(tf.constant([0, 1], tf.int64))
    context = tf.distribute.get_replica_context()
    if context is not None:
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        seed = seed + tf.stack([tf.constant(0, tf.int64), replica * (2**32)])
    return seed


def first_images(data):
    """The image batch of `x`, `(x,)`, `(x, y)` or `(x, y, w)` (labels are ignored)."""
    if isinstance(data, (list, tuple)):
        data = data[0]
        if isinstance(data, (list, tuple)):
            data = data[0]
    return data


def check_image_fit_data(model, x, argument="x"):
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        shape = ", ".join(map(str, model.image_shape))
        check_dataset_images(x, model.image_shape, argument, f"a dataset of image batches of shape (N, {shape})")
        return dataset_range_checked(x, argument)
    if x is None or isinstance(x, (str, dict)) or not hasattr(x, "shape"):
        return x
    return check_not_empty(check_image_array(x, model.image_shape, argument), argument)


def prepare_image_fit(model, x, args, kwargs):
    """Checks `x` and `validation_data` (images or image datasets); returns x, edits kwargs."""
    validation = kwargs.get("validation_data")
    if validation is not None:
        if isinstance(validation, (tuple, list)):
            validation = check_validation_data(validation, (1, 2, 3))
            kwargs["validation_data"] = (check_image_fit_data(model, validation[0], "validation_data"),)
        else:
            validation = check_image_fit_data(model, validation, "validation_data")
            kwargs["validation_data"] = validation if hasattr(validation, "element_spec") else (validation,)
    dataset_fit_defaults(x, args, kwargs)
    return check_image_fit_data(model, x)


def check_latent_codes(inputs, latent_dim):
    """Checks the static shape of a (possibly symbolic) batch of latent codes (N, latent_dim)."""
    shape = tuple(inputs.shape)
    if len(shape) != 2 or (shape[1] is not None and shape[1] != latent_dim):
        raise invalid_value("z", f"latent codes of shape (N, {latent_dim})", f"shape {shape}")


def sample_images(model, n, seed=None, batch_size=256):
    """`n` images G(z) of `model.generator` (numpy float32) from N(0, I) codes drawn with numpy `seed`."""
    check_number("n", n, minimum=0, integer=True)
    z = np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype(np.float32)
    if n == 0:
        return np.zeros((0, *model.image_shape), np.float32)
    return batched_call(lambda batch: model.generator(batch, training=False), z, batch_size, model, "_sample_fn")


def check_image_input(model, argument, image_shape, expected="a model taking the generator's images"):
    """Checks that a built keras.Model takes images of `image_shape`."""
    shape = static_image_shape(model, argument)
    if shape != tuple(image_shape):
        raise invalid_value(argument, f"{expected} {tuple(image_shape)}", shape)


def check_dataset_images(dataset, image_shape, argument, expected):
    """Checks the image component (the first, or the only one) of a dataset's element spec: shape and float dtype."""
    spec = dataset.element_spec
    image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    shape = tuple(getattr(image_spec, "shape", ()))
    if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape, strict=False)):
        raise invalid_value(argument, expected, spec)
    if not image_spec.dtype.is_floating:
        raise invalid_value(argument, "a dataset of float images in [0, 1] (convert uint8 with x / 255)", spec)
    return spec


def image_to_image_shape(model, argument):
    """(H, W, C) of a built keras.Model mapping images to images of the same fixed shape."""
    image_shape = static_image_shape(model, argument)
    out_shape = model.output_shape
    if isinstance(out_shape, list) or tuple(out_shape[1:]) != image_shape:
        raise invalid_value(argument, f"a model whose output shape equals its input shape {image_shape}", out_shape)
    return image_shape


def check_labelled_fit_data(model, x, y, argument="x"):
    """Checks `(images, labels)` fit data against `model.image_shape` and `model.classifier`'s classes
    (the first member's for a list: `RobustPurifier` checks that every member has as many).

    Arrays (labels required) or a dataset of `(images, labels)` batches (wrapped in a per-batch
    range check: call `fit` through `fit_checked`). Returns (x, y).
    """
    import tensorflow as tf

    from tfdefense._validation import output_classes
    from tfdefense.defenses.training_attack import check_xy_arrays, check_xy_dataset

    classifier = model.classifier
    num_classes = output_classes(classifier[0] if isinstance(classifier, (list, tuple)) else classifier)
    if isinstance(x, tf.data.Dataset):
        return check_xy_dataset(x, model.image_shape, argument, num_classes=num_classes), y
    return check_xy_arrays(x, y, model.image_shape, num_classes=num_classes)


# ---------------------------------------------------------------- the base classes


class OptimizerSlot(NamedTuple):
    """One optimizer of a `DefenseModel` (see the module docstring)."""

    attribute: str  # where `compile` stores it ("g_optimizer")
    trains: str  # attribute holding the model, or list of models, it updates ("generator")
    loss: str  # the per-example loss term it minimises in the default `train_step` ("g_total")
    default: Callable  # factory of the default optimizer
    keyword: str = None  # `compile`'s keyword for it (None: `attribute`)

    @property
    def argument(self):
        return self.keyword or self.attribute


class DefenseModel(keras.Model):
    """Base of the trainable defenses: compile, metrics, loss weights, fit checks, train/test steps, config.

    See the module docstring for what a subclass declares and writes.
    """

    optimizer_slots = ()
    metric_names = ()
    nested_models = ()
    fit_data = None  # "pairs", "images", or None (plain keras data; a subclass may write `prepare_fit`)
    precision = "fp32"  # a subclass taking `precision` ("fp32" / "bf16") stores it (`step_scope`)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._initial_weights = {}
        for slot in self.optimizer_slots:
            setattr(self, slot.attribute, None)
        self.track_metrics(self.metric_names)

    @property
    def stochastic(self):
        """False: `self(x)` is deterministic in inference (stored batch statistics, no dropout, no noise)."""
        return False

    # ------------------------------------------------------------------ declarations

    def track_metrics(self, names):
        """One `keras.metrics.Mean` per name, in order (`self.trackers`, `self.metrics`)."""
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    def add_loss_weights(self, values):
        """Non-trainable float32 scalars `self.<name>` for {name: value}, in order; their values go in the config."""
        self._initial_weights.update({name: float(value) for name, value in values.items()})
        add_scalar_variables(self, values)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def update_metrics(self, values):
        """Adds the batch means of the per-example `values` to their trackers; returns those trackers' results."""
        import tensorflow as tf

        for name, tracker in self.trackers.items():
            if name in values:
                tracker.update_state(tf.reduce_mean(values[name]))
        return {name: tracker.result() for name, tracker in self.trackers.items() if name in values}

    # ------------------------------------------------------------------ compile

    def _active_slots(self):
        return [slot for slot in self.optimizer_slots if getattr(self, slot.trains) is not None]

    def slot_variables(self, slot):
        """The trainable variables the optimizer of `slot` updates."""
        models = getattr(self, slot.trains)
        models = models if isinstance(models, (list, tuple)) else [models]
        return [v for model in models for v in model.trainable_variables]

    def compile(self, *optimizers, auto_scale_loss=True, **kwargs):
        """Sets the optimizers (`optimizer_slots`, by keyword or in order; None: the slot's default).

        Other keyword arguments (`jit_compile`, `steps_per_execution`, `run_eagerly`) go to
        `keras.Model.compile`; `loss=` is refused (the losses are built in). Call it inside the
        strategy scope under tf.distribute. Under the "mixed_float16" policy the optimizers are
        wrapped in a LossScaleOptimizer.
        """
        if not self.optimizer_slots:
            return super().compile(*optimizers, auto_scale_loss=auto_scale_loss, **kwargs)
        arguments = [slot.argument for slot in self.optimizer_slots]
        if len(optimizers) > len(arguments):
            raise TypeError(f"compile() takes at most {len(arguments)} optimizers ({', '.join(arguments)})")
        given = dict(zip(arguments, optimizers, strict=False))
        for argument in arguments:
            if argument in kwargs:
                if argument in given:
                    raise TypeError(f"compile() got multiple values for argument '{argument}'")
                given[argument] = kwargs.pop(argument)
        if kwargs.get("loss") is not None:
            names = " and ".join(f"{slot.argument}=" for slot in self._active_slots())
            raise invalid_value("loss", f"None (use {names}; the losses are built in)", kwargs["loss"])
        named = {}
        for slot in self.optimizer_slots:
            optimizer = given.get(slot.argument)
            if getattr(self, slot.trains) is None:
                if optimizer is not None:
                    raise invalid_value(slot.argument, f"None when no {slot.trains} is given", optimizer)
                continue
            named[slot.attribute] = (optimizer, self.slot_variables(slot), slot.default)
        compile_optimizers(self, named, auto_scale_loss, kwargs)

    def get_compile_config(self):
        if not self.optimizer_slots:
            return super().get_compile_config()
        slots = self._active_slots()
        if any(getattr(self, slot.attribute) is None for slot in slots):
            return None
        return {slot.argument: keras.saving.serialize_keras_object(getattr(self, slot.attribute)) for slot in slots}

    def compile_from_config(self, config):
        if not self.optimizer_slots:
            return super().compile_from_config(config)
        self.compile(**{k: keras.saving.deserialize_keras_object(v) for k, v in config.items()})

    def require_compiled(self):
        slots = self._active_slots()
        if any(getattr(self, slot.attribute) is None for slot in slots):
            names = " and ".join(slot.attribute for slot in slots)
            raise RuntimeError(f"Call compile() before fit() (it sets {names}).")

    # ------------------------------------------------------------------ training

    def prepare_batch(self, data, training):
        """What `compute_losses` takes, from one batch of `fit` / `evaluate` data (outside the gradient tape)."""
        import tensorflow as tf

        if self.fit_data == "pairs":
            x_adv, x_clean, y = unpack_images(data, labels=True)
            return tf.cast(x_adv, tf.float32), tf.cast(x_clean, tf.float32), y
        return (first_images(data),)

    def compute_losses(self, *batch, training):
        """Per-example loss terms and metrics {name: (N,) float32} of a prepared batch."""
        raise NotImplementedError(f"{type(self).__name__} has no built-in losses to train or evaluate")

    def step_scope(self):
        """The context `train_step` and `test_step` run in: the compute precision (`precision`, "fp32" unless
        a subclass takes the argument) of every nested model."""
        from tfdefense.defenses.precision import compute_precision

        if self.precision == "fp32":
            return contextlib.nullcontext()
        models = []
        for name in self.nested_models:
            value = getattr(self, name, None)
            models.extend(value if isinstance(value, (list, tuple)) else [value])
        return compute_precision(models, self.precision)

    def train_step(self, data):
        import tensorflow as tf

        with self.step_scope():
            batch = self.prepare_batch(data, training=True)
            slots = [(slot, getattr(self, slot.attribute), self.slot_variables(slot)) for slot in self._active_slots()]
            slots = [(slot, optimizer, variables) for slot, optimizer, variables in slots if variables]
            with tf.GradientTape(persistent=len(slots) > 1) as tape:
                losses = self.compute_losses(*batch, training=True)
                # Averaged over the global batch: gradients are summed over replicas.
                scaled = [opt.scale_loss(tf.nn.compute_average_loss(losses[slot.loss])) for slot, opt, _ in slots]
            gradients = [tape.gradient(loss, variables) for loss, (_, _, variables) in zip(scaled, slots, strict=False)]
            del tape
            for grads, (_, optimizer, variables) in zip(gradients, slots, strict=False):
                optimizer.apply(grads, variables)
        return self.update_metrics(losses)

    def test_step(self, data):
        with self.step_scope():
            losses = self.compute_losses(*self.prepare_batch(data, training=False), training=False)
        return self.update_metrics(losses)

    def prepare_fit(self, x, y, args, kwargs):
        """Checks `fit`'s data and `validation_data` by `fit_data`; returns (x, y, kwargs)."""
        if self.fit_data == "pairs":
            from tfdefense._validation import output_classes

            classifier = getattr(self, "classifier", None)  # the consistency loss' labels are checked against it
            num_classes = None if classifier is None else output_classes(classifier)
            return prepare_paired_fit(self.image_shape, x, y, args, kwargs, num_classes=num_classes)
        if self.fit_data == "images":
            return prepare_image_fit(self, x, args, kwargs), None, kwargs
        return x, y, kwargs

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on checked data (see `fit_data` and the class docs)."""
        self.require_compiled()
        x, y, kwargs = self.prepare_fit(x, y, args, kwargs)
        return fit_checked(super().fit, x, y, *args, **kwargs)

    # ------------------------------------------------------------------ config

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        for key in self.nested_models:
            value = getattr(self, key)
            if isinstance(value, (list, tuple)):
                config[key] = [serialize(model) for model in value]
            else:
                config[key] = None if value is None else serialize(value)
        config.update(self._initial_weights)
        return config

    @classmethod
    def deserialize_nested(cls, config):
        """A copy of `config` with the `nested_models` rebuilt, in that order."""
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in cls.nested_models:
            value = config.get(key)
            if isinstance(value, (list, tuple)):
                config[key] = [deserialize(item) for item in value]
            elif value is not None:
                config[key] = deserialize(value)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**cls.deserialize_nested(config))


class Purifier(DefenseModel):
    """A trainable image -> image defense (`self.image_shape` set): the output shape is the input
    shape, and `purify` runs `self(x, training=False)` on a checked numpy batch in one cached tf.function."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def purify(self, x, batch_size=256):
        """Purifies a numpy batch of [0, 1] images (checked); returns float32 numpy images."""
        x = check_image_array(x, self.image_shape)
        return batched_call(lambda batch: self(batch, training=False), x, batch_size, self)
