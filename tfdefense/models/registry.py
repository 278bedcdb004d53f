"""A decorator registry of model builders (timm-style `list_*` / `get_*`)."""

import fnmatch

from tfdefense._validation import invalid_value

_CLASSIFIERS = {}


def register_classifier(*names):
    """Registers a builder `fn(input_shape, num_classes, **kwargs) -> keras.Model` under `names`."""

    def wrap(fn):
        for name in names or (fn.__name__,):
            if name in _CLASSIFIERS:
                raise ValueError(f"classifier {name!r} is registered twice")
            _CLASSIFIERS[name] = fn
        return fn

    return wrap


def list_classifiers(filter="*"):
    """Registered classifier names, optionally filtered by a glob pattern."""
    return sorted(n for n in _CLASSIFIERS if fnmatch.fnmatch(n, filter))


def get_classifier(name, input_shape=(28, 28, 1), num_classes=10, **kwargs):
    """Builds the registered classifier `name`; the model returns logits."""
    if name not in _CLASSIFIERS:
        raise invalid_value("name", f"one of {list_classifiers()}", name)
    return _CLASSIFIERS[name](input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
