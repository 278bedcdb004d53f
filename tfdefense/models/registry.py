"""A decorator registry of model builders (timm-style `list_*` / `get_*`)."""

import fnmatch
import functools
import inspect

from tfdefense._validation import check_input_shape, check_num_classes, invalid_value

_CLASSIFIERS = {}


def register_classifier(*names):
    """Registers a builder `fn(input_shape, num_classes, **kwargs) -> keras.Model` under `names`.

    The registered (and returned) function checks `input_shape` (three
    positive ints) and `num_classes` (an int >= 2) before building.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            bound = inspect.signature(fn).bind_partial(*args, **kwargs)
            if "input_shape" in bound.arguments:
                bound.arguments["input_shape"] = check_input_shape(bound.arguments["input_shape"])
            if "num_classes" in bound.arguments:
                check_num_classes(bound.arguments["num_classes"])
            return fn(*bound.args, **bound.kwargs)

        for name in names or (fn.__name__,):
            if name in _CLASSIFIERS:
                raise ValueError(f"classifier {name!r} is registered twice")
            _CLASSIFIERS[name] = checked
        return checked

    return wrap


def list_classifiers(filter="*"):
    """Registered classifier names, optionally filtered by a glob pattern."""
    return sorted(n for n in _CLASSIFIERS if fnmatch.fnmatch(n, filter))


def get_classifier(name, input_shape=(28, 28, 1), num_classes=10, **kwargs):
    """Builds the registered classifier `name`; the model returns logits."""
    if name not in _CLASSIFIERS:
        raise invalid_value("name", f"one of {list_classifiers()}", name)
    input_shape = check_input_shape(input_shape)
    try:
        return _CLASSIFIERS[name](input_shape=input_shape, num_classes=num_classes, **kwargs)
    except ValueError as error:  # Keras' deep shape errors ("Computed output size would be zero or negative")
        if str(error).startswith("Invalid value received for argument"):
            raise
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise invalid_value(
            "input_shape",
            f"an image shape classifier {name!r} can take (its convolutions and pooling shrink the "
            "image below one pixel or it needs a minimum size: resize the images, e.g. image_size=28)",
            f"{input_shape} ({reason})",
        ) from error
