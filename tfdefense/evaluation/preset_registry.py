"""The preset registry: `register_preset`, `list_presets`, `get_preset`, `check_preset_filters`.

A preset is a function `fn(run)` (run: `tfdefense.evaluation.runner.Run`)
registered with `@register_preset(name, ...)`. This module imports no preset:
the built-in preset modules (`BUILTIN_PRESET_MODULES`) are imported by name
the first time the registry is read, and each registers itself on import.
"""

import dataclasses
import fnmatch
import importlib
import re

from tfdefense._validation import invalid_value

SCALES = ("tiny", "quick", "full")

# Imported (by name) on the first `list_presets` / `get_preset`; each registers its presets.
BUILTIN_PRESET_MODULES = tuple(
    f"tfdefense.evaluation.presets.{name}"
    for name in ("apegan", "egan", "pix2pix", "quickstart", "versatile", "robust")
)


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    fn: object
    description: str
    paper: str
    attacks: tuple = ()  # names (globs) `--attacks` may select; () = the preset has no attack filter
    defenses: tuple = ()  # names (globs) `--defenses` may select; () = no defense filter


class PresetUnavailable(RuntimeError):
    """A preset needs a defense or attack that the package does not provide yet."""


_PRESETS = {}


def register_preset(name, description, paper="", attacks=(), defenses=()):
    """Registers `fn(run)` as preset `name`; `attacks` / `defenses` list the names its filters know."""

    def wrap(fn):
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is registered twice")
        _PRESETS[name] = Preset(name, fn, description, paper, tuple(attacks), tuple(defenses))
        return fn

    return wrap


def load_builtin_presets():
    """Imports the built-in preset modules (each registers its presets; a second call does nothing)."""
    for module in BUILTIN_PRESET_MODULES:
        importlib.import_module(module)


def list_presets(filter="*"):
    load_builtin_presets()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, filter))


def get_preset(name):
    load_builtin_presets()
    if name not in _PRESETS:
        raise invalid_value("preset", f"one of {list_presets()}", name)
    return _PRESETS[name]


def filter_name_matches(name, pattern):
    """True when an `attacks` / `defenses` filter name is one a preset declares.

    A `*` in a declared name stands for the numbers of a suite label, numbers joined by `x`
    (`pgd-*`: `pgd-10x2`; `square-*`: `square-1000`), never for arbitrary text.
    """
    if "*" not in pattern:
        return name == pattern
    return re.fullmatch(re.escape(pattern).replace(r"\*", r"[0-9]+(?:x[0-9]+)*"), name) is not None


def check_preset_filters(name, attacks=None, defenses=None):
    """Refuses `attacks` / `defenses` filter names that preset `name` does not know (before any work)."""
    preset = get_preset(name)
    for argument, names, known in (("attacks", attacks, preset.attacks), ("defenses", defenses, preset.defenses)):
        if names is None:
            continue
        if not known:
            raise invalid_value(argument, f"None (preset {name!r} has no {argument} filter)", names)
        unknown = [n for n in names if not any(filter_name_matches(n, pattern) for pattern in known)]
        if not names or unknown:
            raise invalid_value(argument, f"names known to preset {name!r}: {list(known)}", unknown or names)
