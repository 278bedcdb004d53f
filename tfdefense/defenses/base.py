"""Shared plumbing of the GAN defenses (APE-GAN, EGAN/DCGAN, AdvGAN, pix2pix).

Input checks, the two-optimizer `compile`, batched tf.function inference, and
`GANModelMixin`: nested-model `get_config`/`from_config`, optimizer compile
configs for `.keras` round trips, and `fit` defaults.
"""

import numpy as np

import keras

from tfdefense._validation import (
    check_images,
    check_not_empty,
    check_number,
    check_validation_data,
    dataset_range_checked,
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


def add_scalar_variables(model, values):
    """Non-trainable float32 scalars `model.<name>` for {name: value}, in order (loss weights, eps, ...).

    Callbacks `assign` them during `fit`; the traced train step reads the new value.
    """
    for name, value in values.items():
        variable = model.add_weight(
            shape=(), initializer=keras.initializers.Constant(float(value)), trainable=False, name=name
        )
        setattr(model, name, variable)


def add_metric_trackers(model, names):
    """`keras.metrics.Mean` trackers by name (`model.trackers`); `model.metrics` should list them."""
    model.trackers = {name: keras.metrics.Mean(name=name) for name in names}
    return model.trackers


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


class PurifierMixin:
    """Inference plumbing of the deterministic image -> image purifiers (`self.image_shape` set).

    `stochastic` is False, the output shape is the input shape, and `purify`
    runs `self(x, training=False)` on a checked numpy batch in one cached
    tf.function; subclasses write `call`.
    """

    @property
    def stochastic(self):
        """False: inference uses stored batch statistics, no dropout and no noise."""
        return False

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def purify(self, x, batch_size=256):
        """Purifies a numpy batch of [0, 1] images (checked); returns float32 numpy images."""
        x = check_image_array(x, self.image_shape)
        return batched_call(lambda batch: self(batch, training=False), x, batch_size, self)


class GANModelMixin:
    """Config and compile plumbing shared by the GAN defense models.

    Subclasses list the attributes holding nested Keras models in
    `nested_models` (serialized into `get_config`, rebuilt by `from_config`)
    and the optimizer attributes `compile()` sets in `optimizer_names`.
    """

    nested_models = ("generator", "discriminator")
    optimizer_names = ("g_optimizer", "d_optimizer")

    def nested_model_config(self):
        serialize = keras.saving.serialize_keras_object
        return {key: serialize(getattr(self, key)) for key in self.nested_models}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_models:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def get_compile_config(self):
        if any(getattr(self, name, None) is None for name in self.optimizer_names):
            return None
        serialize = keras.saving.serialize_keras_object
        return {name: serialize(getattr(self, name)) for name in self.optimizer_names}

    def compile_from_config(self, config):
        self.compile(**{k: keras.saving.deserialize_keras_object(v) for k, v in config.items()})

    def require_compiled(self):
        if any(getattr(self, name, None) is None for name in self.optimizer_names):
            raise RuntimeError(f"Call compile() before fit() (it sets {' and '.join(self.optimizer_names)}).")


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
        for name, image_spec in zip(("x_adv", "x_clean"), specs[:2]):
            shape = tuple(image_spec.shape)
            if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], image_shape)):
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
    import random

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
