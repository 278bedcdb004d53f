"""Argument checks shared by every public entry point.

Errors follow the Keras wording: "Invalid value received for argument `x`.
Expected ... Received: x=...".
"""

import numbers

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


def check_number(argument, value, minimum=None, maximum=None, integer=False, allow_none=False):
    """Checks a scalar parameter and its bounds (inclusive)."""
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
    if maximum is not None and value > maximum:
        raise invalid_value(argument, f"a value <= {maximum}", value)
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
            raise invalid_value(argument, "finite values (no NaN or inf)", f"{_describe_array(array)} containing NaN/inf")
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
        raise invalid_value(
            argument, f"labels in [0, {num_classes - 1}]", f"labels in [{array.min()}, {array.max()}]"
        )
    return array.astype(np.int64, copy=False)
