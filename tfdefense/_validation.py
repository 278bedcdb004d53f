"""Argument checks shared by every public entry point.

Errors follow the Keras wording: "Invalid value received for argument `x`.
Expected ... Received: x=...".
"""

import numbers
import re
import warnings

import numpy as np


def invalid_value(argument, expected, received):
    """Returns a ValueError worded the Keras way."""
    return ValueError(
        f"Invalid value received for argument `{argument}`. Expected {expected}. "
        f"Received: {argument}={_short_repr(received)}"
    )


def _short_repr(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe_array(x):
    return f"array of shape {tuple(x.shape)} and dtype {x.dtype}"


def check_choice(argument, value, choices):
    """Checks that `value` is one of `choices` (a collection of names)."""
    if value not in choices:
        raise invalid_value(argument, f"one of {list(choices)}", value)
    return value


def check_number(argument, value, minimum=None, maximum=None, integer=False, allow_none=False, above=None, below=None):
    """Checks a scalar parameter and its bounds (`minimum`/`maximum` inclusive, `above`/`below` exclusive)."""
    if value is None and allow_none:
        return value
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a number"
        raise invalid_value(argument, expected, value)
    if not np.isfinite(value):
        raise invalid_value(argument, "a finite number", value)
    if minimum is not None and value < minimum:
        raise invalid_value(argument, f"a value >= {minimum}", value)
    if above is not None and value <= above:
        raise invalid_value(argument, f"a value > {above}", value)
    if maximum is not None and value > maximum:
        raise invalid_value(argument, f"a value <= {maximum}", value)
    if below is not None and value >= below:
        raise invalid_value(argument, f"a value < {below}", value)
    return value


def check_images(x, argument="x", channels=None, rank=4, allow_tensor=True):
    """Checks a batch of images: float, NHWC, finite, values in [0, 1].

    Returns a float32 numpy array (or the tensor unchanged, cast to float32,
    when `allow_tensor` and `x` is an eager tf.Tensor). Never clips.
    """
    import tensorflow as tf

    if isinstance(x, tf.Tensor) and allow_tensor:
        if not tf.executing_eagerly() or not hasattr(x, "numpy"):
            return tf.cast(x, tf.float32)
        array = x.numpy()
    elif isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        array = np.asarray(x)
    else:
        raise TypeError(
            f"Invalid type received for argument `{argument}`. Expected a numpy array "
            f"or tf.Tensor of images. Received: {argument} of type {type(x).__name__}"
        )
    if array.ndim != rank:
        raise invalid_value(
            argument,
            f"a rank-{rank} NHWC batch of images" if rank == 4 else f"a rank-{rank} array",
            _describe_array(array),
        )
    if channels is not None and array.shape[-1] != channels:
        raise invalid_value(argument, f"images with {channels} channel(s) (NHWC)", _describe_array(array))
    if not np.issubdtype(array.dtype, np.floating):
        raise invalid_value(
            argument,
            "float images with values in [0, 1] (convert uint8 0-255 images with x / 255.0)",
            _describe_array(array),
        )
    if array.size:
        if not np.all(np.isfinite(array)):
            raise invalid_value(
                argument, "finite values (no NaN or inf)", f"{_describe_array(array)} containing NaN/inf"
            )
        low, high = float(array.min()), float(array.max())
        if low < -1e-6 or high > 1 + 1e-6:
            hint = " (looks like 0-255 pixels: divide by 255)" if high > 1.5 else ""
            raise invalid_value(
                argument, f"values in [0, 1]{hint}", f"{_describe_array(array)} with range [{low:.4g}, {high:.4g}]"
            )
    array = array.astype(np.float32, copy=False)
    if isinstance(x, tf.Tensor):
        return tf.convert_to_tensor(array)
    return array


def check_labels(y, argument="y", num_examples=None, num_classes=None):
    """Checks integer class labels of shape (N,); returns an int64 array."""
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise invalid_value(argument, "integer labels of shape (N,)", _describe_array(array))
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise invalid_value(argument, "integer class labels", _describe_array(array))
    if num_examples is not None and array.shape[0] != num_examples:
        raise invalid_value(argument, f"{num_examples} labels (one per image)", _describe_array(array))
    if num_classes is not None and array.size and (array.min() < 0 or array.max() >= num_classes):
        raise invalid_value(argument, f"labels in [0, {num_classes - 1}]", f"labels in [{array.min()}, {array.max()}]")
    return array.astype(np.int64, copy=False)


def check_num_classes(value, argument="num_classes"):
    """Checks a number of classes: an int >= 2 (not a string, float or bool)."""
    check_number(argument, value, minimum=2, integer=True)
    return int(value)


def check_input_shape(value, argument="input_shape", rank=3):
    """Checks an image shape such as (28, 28, 1): `rank` positive ints (None allowed for H and W)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != rank:
        raise invalid_value(argument, f"a tuple of {rank} positive ints such as (28, 28, 1)", value)
    for index, size in enumerate(value):
        if size is None and index < rank - 1:
            continue
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise invalid_value(argument, f"a tuple of {rank} positive ints such as (28, 28, 1)", tuple(value))
    return tuple(None if s is None else int(s) for s in value)


def check_not_empty(x, argument="x"):
    """Refuses an empty array (training on no data would silently do nothing)."""
    length = len(x) if hasattr(x, "__len__") else None
    if length == 0:
        shape = getattr(x, "shape", None)
        raise invalid_value(
            argument, "at least one example", f"an empty array of shape {tuple(shape)}" if shape is not None else x
        )
    return x


def check_validation_data(value, lengths=(2,), argument="validation_data"):
    """Checks that `value` is a tuple/list of one of `lengths` (e.g. (x_val, y_val)); returns it as a tuple."""
    names = {1: "(x_val,)", 2: "(x_val, y_val)", 3: "(x_val, y_val, sample_weight)"}
    expected = " or ".join(names.get(n, f"a {n}-tuple") for n in lengths)
    if not isinstance(value, (tuple, list)):
        raise invalid_value(argument, f"a tuple {expected}", f"an object of type {type(value).__name__}")
    if len(value) not in lengths:
        raise invalid_value(argument, f"a tuple {expected}", f"a tuple of {len(value)} element(s)")
    return tuple(value)


def check_model_arg(model, argument="model"):
    """Refuses None or a non-callable where a model is required (TypeError naming the argument)."""
    if model is None or not callable(model):
        raise TypeError(
            f"Invalid type received for argument `{argument}`. Expected a Keras model (or a callable from "
            f"images to logits). Received: {argument}={_short_repr(model)}"
        )
    return model


def output_classes(model):
    """The number of classes of a (N, num_classes) logits model, or None when its output shape says nothing."""
    shape = getattr(model, "output_shape", None)
    if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[-1], int):
        return shape[-1]
    return None


def check_model_images(model, x, argument="x", model_argument="model"):
    """Checks that images `x` (N, H, W, C) match the static input shape of a Keras `model`."""
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 4:
        return
    expected = tuple(shape[1:])
    got = tuple(x.shape[1:])
    if len(got) != 3 or any(e is not None and e != g for e, g in zip(expected, got, strict=False)):
        wanted = ", ".join(
            "H" if i == 0 and e is None else "W" if i == 1 and e is None else str(e) for i, e in enumerate(expected)
        )
        raise invalid_value(
            argument,
            f"images of shape (N, {wanted}) matching the input of `{model_argument}`",
            f"array of shape {tuple(x.shape)}",
        )


def _last_layer_is_softmax(model):
    import keras

    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def warn_if_probabilities(model, x=None, argument="model"):
    """Warns when `model` looks like it outputs probabilities instead of logits.

    Signs: the last layer is a softmax, or the outputs on a few images of `x`
    are in [0, 1] and sum to 1. Every attack loss and consistency loss of the
    package assumes logits. Returns True when it warned.
    """

    if model is None:
        return False
    try:
        if getattr(model, "_tfdefense_checked_logits", False):
            return False
    except Exception:  # exotic callables
        pass
    probabilities = _last_layer_is_softmax(model)
    if not probabilities and x is not None and len(x):
        from tfdefense.inference import call_model

        outputs = np.asarray(call_model(model, x[:8]), np.float64)
        if outputs.ndim == 2 and outputs.shape[-1] > 1:
            probabilities = bool(
                outputs.min() >= 0 and outputs.max() <= 1 and np.allclose(outputs.sum(-1), 1.0, atol=1e-3)
            )
    if not probabilities:
        if x is not None and len(x):  # outputs probed: logits, not probed again
            try:
                model._tfdefense_checked_logits = True
            except Exception:
                pass
        return False
    name = getattr(model, "name", type(model).__name__)
    warnings.warn(
        f"Argument `{argument}` ({name!r}) looks like it outputs probabilities (a softmax), not logits; "
        "the attack and training losses here expect logits: remove the final softmax.",
        UserWarning,
        stacklevel=3,
    )
    return True


def dataset_range_checked(dataset, argument="x", image_components=(0,), label_component=None, num_classes=None):
    """`dataset` with a check that its image components lie in [0, 1] (a 0-255 dataset fails clearly).

    With `label_component` and `num_classes`, also that those labels lie in
    [0, num_classes - 1]. The check runs inside the input pipeline on every
    batch (cheap min/max) and creates no extra iterator, so shuffling and
    random state are untouched. `reraise_range_error` turns a failure raised
    by `fit` into a ValueError naming `argument`.
    """
    import tensorflow as tf

    def check(*batch):
        single = len(batch) == 1 and not isinstance(batch[0], (tuple, list))
        components = list(batch[0] if len(batch) == 1 and isinstance(batch[0], (tuple, list)) else batch)
        for index in image_components:
            if index >= len(components) or not components[index].dtype.is_floating:
                continue
            images = components[index]
            low, high = tf.reduce_min(images), tf.reduce_max(images)
            ok = tf.logical_and(low >= -1e-6, high <= 1 + 1e-6)
            assertion = tf.debugging.Assert(ok, [_RANGE_MARKER, argument, low, high])
            with tf.control_dependencies([assertion]):
                components[index] = tf.identity(images)
        if label_component is not None and num_classes is not None and label_component < len(components):
            labels = components[label_component]
            if labels.dtype.is_integer:
                low, high = tf.reduce_min(labels), tf.reduce_max(labels)
                ok = tf.logical_or(tf.size(labels) == 0, tf.logical_and(low >= 0, high < num_classes))
                assertion = tf.debugging.Assert(ok, [_LABEL_MARKER, argument, num_classes, low, high])
                with tf.control_dependencies([assertion]):
                    components[label_component] = tf.identity(labels)
        return components[0] if single else tuple(components)

    checked = dataset.map(check)
    for name, value in vars(dataset).items():  # markers of tfdefense pipelines (e.g. their data epoch)
        if name.startswith("_tfdefense"):
            setattr(checked, name, value)
    return checked


_RANGE_MARKER = "tfdefense: images outside [0, 1]"
_LABEL_MARKER = "tfdefense: labels outside [0, num_classes)"


def reraise_range_error(error):
    """The ValueError for an InvalidArgumentError raised by `dataset_range_checked`'s checks; else None."""

    message = str(getattr(error, "message", error))
    number = r"\[(-?[0-9.e+-]+)\]"
    if _RANGE_MARKER in message:
        match = re.search(re.escape(_RANGE_MARKER) + r"\]\s*\[(\w+)\]\s*" + number + r"\s*" + number, message)
        if not match:
            return invalid_value("x", "a dataset of float images with values in [0, 1]", "values outside [0, 1]")
        low, high = float(match.group(2)), float(match.group(3))
        detail = f"a batch with values in [{low:.4g}, {high:.4g}]"
        if high > 1.5:
            detail += " (looks like 0-255 pixels: divide by 255)"
        return ValueError(
            f"Invalid value received for argument `{match.group(1)}`. Expected a dataset of float images with "
            f"values in [0, 1]. Received: {detail}"
        )
    if _LABEL_MARKER in message:
        match = re.search(re.escape(_LABEL_MARKER) + r"\]\s*\[(\w+)\]\s*" + (r"\s*" + number) * 3, message)
        if not match:
            return invalid_value("x", "a dataset of labels in [0, num_classes - 1]", "labels out of range")
        classes, low, high = (int(float(match.group(i))) for i in (2, 3, 4))
        return ValueError(
            f"Invalid value received for argument `{match.group(1)}`. Expected a dataset of labels in "
            f"[0, {classes - 1}] ({classes} classes). Received: a batch with labels in [{low}, {high}]"
        )
    return None


def fit_checked(fit, *args, **kwargs):
    """Calls `fit(*args, **kwargs)`; a failed `dataset_range_checked` check becomes a ValueError."""
    import tensorflow as tf

    try:
        return fit(*args, **kwargs)
    except tf.errors.InvalidArgumentError as error:
        clear = reraise_range_error(error)
        if clear is None:
            raise
        raise clear from None
