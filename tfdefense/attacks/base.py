"""The attack interface and registry.

Every attack is an `Attack` subclass registered with `register_attack`; users
build one with `get_attack(name, backend=None, **params)` and call it as
`attack(model, x, y=None, y_target=None)`. Parameters are checked when the
attack is built (unknown names, bad values, a value the chosen backend cannot
honour; Linf budgets in [0, 1]), inputs and L2 budgets (at most the L2
diameter of the images) when it is called. Models are Keras models (or
callables) mapping float32 NHWC images in [0, 1] to **logits**.

Norms: `norm` is np.inf (also "inf" / "linf") or 2 (also "l2"), stored as
"inf" or 2 (see `canonical_norm`).
"""

import fnmatch
import numbers
import time
import weakref

import numpy as np

from tfdefense._validation import (
    check_choice,
    check_images,
    check_labels,
    check_model_images,
    check_number,
    invalid_value,
    warn_if_probabilities,
)
from tfdefense.attacks._backends import run_art
from tfdefense.inference import call_model, predict_labels

BACKENDS = ("native", "cleverhans", "art")
_ATTACKS = {}


# --------------------------------------------------------------------------- registry


def register_attack(name, backends=("native",)):
    """Class decorator registering an `Attack` subclass under `name`.

    `backends` lists the implementations the class provides (its backend
    hooks, see `Attack`); the first is the default.
    """
    backends = tuple(backends)
    for backend in backends:
        check_choice("backends", backend, BACKENDS)

    def wrap(cls):
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} is registered twice")
        for backend in backends:
            if not _provides(cls, backend):
                hint = " (or an `art_method`)" if backend == "art" else ""
                raise TypeError(f"{cls.__name__} lists backend {backend!r} but has no _run_{backend} method{hint}")
        cls.name = name
        cls.backends = backends
        _ATTACKS[name] = cls
        return cls

    return wrap


def _provides(cls, backend):
    """True when `cls` implements `backend`: a `_run_<backend>` method, an ART method name or its own `_run`."""
    if cls._run is not Attack._run:  # the attack dispatches its backends itself
        return True
    if backend == "art":
        return cls.art_method is not None or cls._run_art is not Attack._run_art
    return callable(getattr(cls, f"_run_{backend}", None))


def list_attacks(filter="*", backend=None):
    """Registered attack names matching the glob `filter` (optionally only those offering `backend`)."""
    if backend is not None:
        check_choice("backend", backend, BACKENDS)
    return sorted(
        name
        for name, cls in _ATTACKS.items()
        if fnmatch.fnmatch(name, filter) and (backend is None or backend in cls.backends)
    )


def attack_backends(name):
    """The backends offered for attack `name`, default first."""
    return _attack_class(name).backends


def _attack_class(name):
    if name not in _ATTACKS:
        raise invalid_value("name", f"one of {list_attacks()}", name)
    return _ATTACKS[name]


def get_attack(name, backend=None, **params):
    """Builds the registered attack `name` with `backend` (None: its default) and `params`."""
    return _attack_class(name)(backend=backend, **params)


# --------------------------------------------------------------------------- parameter checks

NORMS = {"inf": "inf", "linf": "inf", "l2": 2, "2": 2, "l1": 1, "1": 1}


def canonical_norm(value, allowed=("inf", 2)):
    """Maps np.inf / "inf" / "linf" / 2 / "l2" / 1 / "l1" to "inf", 2 or 1 (JSON-able)."""
    canonical = None
    if isinstance(value, str):
        canonical = NORMS.get(value.lower())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value == np.inf:
            canonical = "inf"
        elif value in (1, 2):
            canonical = int(value)
    if canonical is None or canonical not in allowed:
        names = ["np.inf" if a == "inf" else str(a) for a in allowed]
        raise invalid_value("norm", f"one of {names} (or 'inf' / 'l2')", value)
    return canonical


def norm_order(norm):
    """The numeric order of a canonical norm ("inf" -> np.inf)."""
    return np.inf if norm == "inf" else norm


def check_bool(argument, value):
    if not isinstance(value, (bool, np.bool_)):
        raise invalid_value(argument, "True or False", value)
    return bool(value)


def check_seed(value):
    if value is None:
        return None
    check_number("seed", value, minimum=0, integer=True)
    return int(value)


COMPUTE_DTYPES = (None, "float32", "bfloat16", "float16")

# Perturbation budgets: in [0, 1] pixel units, bounded by the diameter of the image box.
BUDGET_PARAMS = ("eps", "eps_iter", "rand_minmax")


def lp_diameter(norm, image_shape):
    """The Lp diameter of the box [0, 1]^image_shape: 1 (Linf), sqrt(d) (L2), d (L1); d = number of values."""
    size = int(np.prod(image_shape))
    return 1.0 if norm == "inf" else float(size) ** (1.0 / norm)


def check_budgets(params, image_shape=None):
    """Checks the perturbation budgets (`eps`, `eps_iter`, `rand_minmax`) present in `params`.

    Every budget must be a number >= 0. With norm "inf" (also the norm of an
    attack without a `norm` parameter) a budget is at most 1, the diameter of
    [0, 1]; with norm 2 (or 1) at most the Lp diameter of an image of
    `image_shape` (checked when the shape is known, at call time).
    """
    norm = params.get("norm", "inf")
    for name in BUDGET_PARAMS:
        value = params.get(name)
        if value is None:
            continue
        check_number(name, value, minimum=0)
        if norm == "inf" and value > 1:
            raise invalid_value(
                name, "a value in [0, 1] for norm='inf' (pixel units of [0, 1] images: 8/255 is 0.0314)", value
            )
        if norm != "inf" and image_shape is not None:
            diameter = lp_diameter(norm, image_shape)
            if value > diameter * (1 + 1e-6):
                raise invalid_value(
                    name,
                    f"a value <= {diameter:.6g} for norm={norm} (the L{norm} diameter of "
                    f"[0, 1] images of shape {tuple(image_shape)})",
                    value,
                )


# --------------------------------------------------------------------------- the base class


class Attack:
    """Base class of every attack: parameters, backends, input checks, output guarantees.

    Subclasses set `defaults` (parameter name -> default value), optionally
    `unsupported` (backend -> names of parameters that backend only accepts
    at their default) and `bounded = True` when the output must lie in the
    `eps`-ball of norm `norm`, and implement `_check_params(params)` and one
    hook per backend they list in `register_attack`:

    * native: `_run_native(model, x, y, y_target)` (numpy in, numpy out), or
      `_build_native` with `NativeMixin` (see `_native`), which compiles the
      attack into one graph;
    * cleverhans: `_run_cleverhans(model, x, y, y_target)`;
    * art: `art_method`, the name of the ART evasion class, and
      `_art_params()`, its keyword arguments (or `_run_art` for more).

    Calling the attack returns float32 numpy images of the input's shape, in
    [0, 1] (and in the eps-ball for bounded attacks: the output is projected
    once more, which only removes floating-point excess). A summary of the
    last call is in `last_run_info` (labels used, success rate, time).
    """

    name = None
    backends = ()
    defaults = {}
    unsupported = {}
    bounded = False
    targeted_only = False
    art_method = None

    def __init__(self, backend=None, **params):
        if backend is None:
            backend = self.backends[0]
        if backend not in BACKENDS:
            raise invalid_value("backend", f"one of {list(BACKENDS)}", backend)
        if backend not in self.backends:
            raise invalid_value("backend", f"one of {list(self.backends)} for attack {self.name!r}", backend)
        for key, value in params.items():
            if key not in self.defaults:
                raise invalid_value(key, f"a parameter of attack {self.name!r}, one of {sorted(self.defaults)}", value)
        merged = dict(self.defaults)
        merged.update(params)
        if "targeted" in merged:
            merged["targeted"] = check_bool("targeted", merged["targeted"])
            if self.targeted_only and not merged["targeted"]:
                raise invalid_value("targeted", f"True ({self.name} is a targeted attack)", merged["targeted"])
        if "target" in merged:
            if merged["target"] not in (None, "random"):
                raise invalid_value("target", "None (pass y_target= when calling) or 'random'", merged["target"])
            if merged["target"] is not None and not merged.get("targeted", False):
                raise invalid_value("target", "None for an untargeted attack (set targeted=True)", merged["target"])
        if "seed" in merged:
            merged["seed"] = check_seed(merged["seed"])
        if merged.get("compute_dtype") is not None:
            check_choice("compute_dtype", merged["compute_dtype"], COMPUTE_DTYPES[1:])
        merged = self._check_params(merged) or merged
        check_budgets(merged)
        for key in self.unsupported.get(backend, ()):
            if key in merged and merged[key] != self.defaults[key]:
                others = [b for b in self.backends if key not in self.unsupported.get(b, ())]
                raise invalid_value(
                    key,
                    f"the default {self.defaults[key]!r} with backend={backend!r} (backends supporting it: {others})",
                    merged[key],
                )
        self._check_backend_params(backend, merged)
        self.backend = backend
        self._params = merged
        self._rng = np.random.default_rng(merged.get("seed"))
        self._programs = weakref.WeakKeyDictionary()
        self.last_run_info = None

    # ------------------------------------------------------------------ hooks

    def _check_params(self, params):
        """Validates `params` (all names present); may return a canonicalised copy."""
        return params

    def _check_backend_params(self, backend, params):
        """Checks the parameter values `backend` cannot honour (beyond `unsupported`)."""

    def _art_params(self):
        """Keyword arguments of the ART class `art_method` for this attack's parameters."""
        return {}

    def _run_art(self, model, x, y, targets):
        """Runs ART's `art_method` on (x, the target labels when targeted, else y)."""
        labels = targets if targets is not None else y
        return run_art(self.art_method, model, x, labels, **self._art_params())

    # ------------------------------------------------------------------ public

    @property
    def params(self):
        """A copy of the full parameter dict (defaults included; JSON-able)."""
        return dict(self._params)

    @property
    def targeted(self):
        return bool(self._params.get("targeted", False))

    def config(self):
        """What identifies this attack's output: name, backend, params, library versions."""
        return {
            "attack": self.name,
            "backend": self.backend,
            "params": self.params,
            "versions": _versions(self.backend),
        }

    def reset_rng(self, stream=None):
        """Restarts the attack's random stream (from `seed`; a fresh one when seed is None).

        stream: None, or an int naming one of the seed's independent streams
        (e.g. a batch index: sharded generation gives each batch its own).
        """
        seed = self._params.get("seed")
        if stream is not None:
            check_number("stream", stream, minimum=0, integer=True)
            seed = None if seed is None else [seed, int(stream)]
        self._rng = np.random.default_rng(seed)

    def replace(self, **changes):
        """A new attack of the same kind and backend with some parameters changed."""
        backend = changes.pop("backend", self.backend)
        params = {k: v for k, v in self._params.items() if v != self.defaults.get(k, object())}
        params.update(changes)
        return type(self)(backend=backend, **params)

    def __repr__(self):
        changed = ", ".join(f"{k}={v!r}" for k, v in self._params.items() if v != self.defaults[k])
        return f"<Attack {self.name} backend={self.backend!r}{', ' if changed else ''}{changed}>"

    def __call__(self, model, x, y=None, y_target=None):
        """Adversarial images for `x` (float32 numpy, same shape, in [0, 1]).

        Args:
          model: a Keras model (or callable) from images to logits.
          x: float images, NHWC, values in [0, 1].
          y: int labels of shape (N,); None uses the model's predictions
            (no label leaking).
          y_target: int target labels for a targeted attack (or construct the
            attack with `target="random"`).
        """
        start = time.perf_counter()
        if not callable(model):
            raise TypeError(
                f"Invalid type received for argument `model`. Expected a Keras model or callable. "
                f"Received: model of type {type(model).__name__}"
            )
        x = check_images(x, "x", allow_tensor=False)
        x = np.asarray(x, np.float32)
        check_model_images(model, x)
        check_budgets(self._params, x.shape[1:])
        if len(x) == 0:
            return x.copy()
        warn_if_probabilities(model, x)
        num_classes = num_classes_of(model, x)
        if y is None:
            labels_source = "predictions"
            y = predict_labels(model, x)
        else:
            labels_source = "given"
            y = check_labels(y, "y", num_examples=len(x), num_classes=num_classes)
        targets = self._resolve_targets(y, y_target, num_classes)
        x_adv = self._run(model, x, y, targets)
        x_adv = self._finalize(x, x_adv)
        pred = predict_labels(model, x_adv)
        success = (pred == targets) if targets is not None else (pred != y)
        seconds = time.perf_counter() - start
        self.last_run_info = {
            "attack": self.name,
            "backend": self.backend,
            "params": self.config()["params"],
            "labels": labels_source,
            "targets": None if targets is None else ("given" if y_target is not None else "random"),
            "num_examples": int(len(x)),
            "num_success": int(success.sum()),
            "success_rate": float(success.mean()),
            "seconds": seconds,
            **self._extra_info(),
        }
        return x_adv

    # ------------------------------------------------------------------ internals

    def _extra_info(self):
        return {}

    def _resolve_targets(self, y, y_target, num_classes):
        if not self.targeted:
            if y_target is not None:
                raise invalid_value(
                    "y_target", f"None for an untargeted attack ({self.name} built with targeted=False)", y_target
                )
            return None
        if y_target is not None:
            return check_labels(y_target, "y_target", num_examples=len(y), num_classes=num_classes)
        if self._params.get("target") == "random":
            return random_targets(y, num_classes, self._rng)
        raise invalid_value(
            "y_target", "target labels for a targeted attack (or build the attack with target='random')", None
        )

    def _next_seed(self):
        return self._rng.integers(0, 2**31 - 1, size=2, dtype=np.int64)

    def _run(self, model, x, y, targets):
        return getattr(self, f"_run_{self.backend}")(model, x, y, targets)

    def _finalize(self, x, x_adv):
        x_adv = np.asarray(x_adv)
        if x_adv.shape != x.shape:
            raise RuntimeError(
                f"attack {self.name!r} (backend {self.backend!r}) returned shape {x_adv.shape} for inputs {x.shape}"
            )
        x_adv = x_adv.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x_adv)):
            raise RuntimeError(f"attack {self.name!r} (backend {self.backend!r}) returned NaN/inf values")
        x_adv = np.clip(x_adv, 0.0, 1.0)
        if self.bounded:
            x_adv = project_numpy(x, x_adv, self._params["eps"], self._params.get("norm", "inf"))
        return x_adv


# --------------------------------------------------------------------------- helpers


def weakrefable(obj):
    """True when `obj` accepts a weak reference (usable as a key of a per-model program cache)."""
    try:
        weakref.ref(obj)
        return True
    except TypeError:
        return False


def project_numpy(x, x_adv, eps, norm):
    """Projects `x_adv` onto the eps-ball around `x` (norm "inf" or 2) and [0, 1]."""
    delta = x_adv.astype(np.float32) - x
    if norm == "inf":
        delta = np.clip(delta, -eps, eps)
    else:
        flat = delta.reshape(len(delta), -1)
        if norm == 2:
            norms = np.sqrt(np.sum(flat.astype(np.float64) ** 2, axis=1))
        else:
            norms = np.sum(np.abs(flat.astype(np.float64)), axis=1)
        factor = np.minimum(1.0, eps / np.maximum(norms, 1e-12)) * (1 - 1e-6)
        factor = np.where(norms <= eps, 1.0, factor).astype(np.float32)
        delta = delta * factor.reshape((-1,) + (1,) * (delta.ndim - 1))
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


def random_targets(y, num_classes, rng):
    """A uniformly random wrong label per example."""
    return ((y + rng.integers(1, num_classes, size=len(y))) % num_classes).astype(np.int64)


def num_classes_of(model, x):
    shape = getattr(model, "output_shape", None)
    if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[-1], int):
        return shape[-1]
    return int(call_model(model, x[:1]).shape[-1])


def success_rate(model, x, x_adv, y=None, y_target=None, batch_size=512):
    """Attack success rate over the inputs `model` classifies correctly.

    Untargeted: the fraction whose prediction changes from the true label
    `y` (from the clean prediction when `y` is None); targeted: the fraction
    predicted as `y_target`. Returns NaN when no input is correctly classified.
    """
    x = check_images(x, "x", allow_tensor=False)
    x_adv = check_images(x_adv, "x_adv", allow_tensor=False)
    if x.shape != x_adv.shape:
        raise invalid_value("x_adv", f"an array of shape {x.shape}", f"array of shape {x_adv.shape}")
    clean = predict_labels(model, x, batch_size)
    y = clean if y is None else check_labels(y, "y", num_examples=len(x))
    adv = predict_labels(model, x_adv, batch_size)
    correct = clean == y
    if not correct.any():
        return float("nan")
    if y_target is not None:
        y_target = check_labels(y_target, "y_target", num_examples=len(x))
        return float(np.mean(adv[correct] == y_target[correct]))
    return float(np.mean(adv[correct] != y[correct]))


def _versions(backend):
    import tensorflow as tf

    import tfdefense

    versions = {"tfdefense": tfdefense.__version__, "tensorflow": tf.__version__}
    if backend == "cleverhans":
        from importlib.metadata import version

        versions["cleverhans"] = version("cleverhans")
    elif backend == "art":
        from importlib.metadata import version

        versions["adversarial-robustness-toolbox"] = version("adversarial-robustness-toolbox")
    return versions
