"""A preset's scale settings with the run's overrides (`--set KEY=VALUE`) applied and checked.

An override must name a setting of the scale and have a value of its default's
type (an int may stand for a float; None, the "all" of a size, may replace an
int and back). Every int setting of the presets is a count: an override must be
>= 1, or >= 0 for a setting named `*epochs` (0 epochs: the model is used as
built). The same rules apply to the ints inside a dict setting, key by key.
"""


class SettingsError(ValueError):
    """A `settings` override (--set) that names no setting of the scale or has a value of the wrong type."""


def check_settings(settings):
    """`settings` ({name: value} or None) as a dict; a TypeError for anything else."""
    if settings is None:
        return {}
    if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
        raise TypeError(f"settings: expected a dict of setting name -> value, got {settings!r}")
    return dict(settings)


def count_minimum(key):
    """The least value of the count setting `key`: 0 for epochs, else 1."""
    return 0 if str(key).endswith("epochs") else 1


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def setting_of_type(key, new, old):
    """`new` for the setting `key` whose scale default is `old`, checked; a SettingsError when it does not fit."""
    if old is None or new is None:
        if (_is_int(new) or new is None) and (old is None or _is_int(old)):
            return _checked_count(key, new)
    elif isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, (int, float)):
        return float(new)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    elif isinstance(old, dict) and isinstance(new, dict):
        return {k: setting_of_type(f"{key}.{k}", v, old[k]) if k in old else v for k, v in new.items()}
    elif type(new) is type(old):
        return _checked_count(key, new) if _is_int(new) else new
    raise SettingsError(f"settings: {key!r} expects a value like its default {old!r}, got {new!r}")


def _checked_count(key, value):
    minimum = count_minimum(key)
    if value is not None and value < minimum:
        raise SettingsError(f"settings: {key!r} is a count; expected an integer >= {minimum}, got {value!r}")
    return value


def pick(scales, scale, settings, preset="", **overrides):
    """The entry `scales[scale]` with `overrides`, then the run's `settings`, applied (see the module docstring)."""
    value = scales[scale]
    if not isinstance(value, dict):
        return value
    value = {**value, **overrides}
    for key, new in settings.items():
        if key not in value:
            raise SettingsError(
                f"settings: {preset!r} at scale {scale!r} has no setting {key!r}; "
                f"expected one of: {', '.join(sorted(value))}"
            )
        value[key] = setting_of_type(key, new, value[key])
    return value
