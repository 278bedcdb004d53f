"""Generating adversarial examples at scale: batching, progress, an on-disk cache.

`generate(attack, model, x, y)` runs the attack batch by batch over a
`tf.data` pipeline with a tqdm progress bar. With `cache_dir` the result is
stored as float32 `.npz` (metadata JSON inside, and a readable copy beside)
under a key that hashes everything the images depend on:

* the model fingerprint: SHA-256 of the architecture (class + `get_config`)
  and of every weight (path, shape, dtype, bytes);
* the attack: name, backend, every parameter, library versions;
* the data: SHA-256 of the images, of the labels (or "predictions"), of the
  target labels.

So no table can reuse examples crafted for another model, setting or data
set. An entry that cannot be read, whose key or shape does not match, or
whose array fails its checksum is reported (warnings.warn + logging) and
regenerated, never used. Writes are atomic (temporary file + rename).
"""

import hashlib
import json
import logging
import pathlib
import time
import warnings

import numpy as np

from tfdefense._io import save_npz, write_json
from tfdefense._validation import check_images, check_labels, check_number, invalid_value

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1


def model_fingerprint(model):
    """SHA-256 (hex) of a Keras model's architecture and weights."""
    import keras

    if not isinstance(model, keras.Layer):
        raise invalid_value("model", "a Keras model (its architecture and weights key the cache)", model)
    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    digest.update(_architecture(model).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy() if hasattr(weight, "numpy") else np.asarray(weight))
        digest.update(f"|{getattr(weight, 'path', weight.name)}|{value.shape}|{value.dtype}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _architecture(model):
    try:
        return json.dumps(model.get_config(), sort_keys=True, default=repr)
    except Exception:  # subclassed models without get_config: describe the layer tree instead
        parts = []
        for layer in model._flatten_layers(include_self=False, recursive=True):
            try:
                config = json.dumps(layer.get_config(), sort_keys=True, default=repr)
            except Exception:
                config = ""
            parts.append(f"{type(layer).__qualname__}:{config}")
        return "\n".join(parts)


def array_digest(array):
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def cache_key(attack, model, x, y=None, y_target=None):
    """The cache key (hex) and the description it hashes."""
    description = {
        "format": CACHE_FORMAT,
        "model": model_fingerprint(model),
        "attack": attack.config(),
        "data": array_digest(np.asarray(x, np.float32)),
        "labels": "predictions" if y is None else array_digest(np.asarray(y, np.int64)),
        "targets": None if y_target is None else array_digest(np.asarray(y_target, np.int64)),
    }
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest(), description


def generate(attack, model, x, y=None, y_target=None, batch_size=256, cache_dir=None, progress=True,
             return_info=False):
    """Adversarial images for all of `x`, batch by batch, optionally cached.

    Args:
      attack: an attack from `get_attack`.
      model: the Keras logits model to attack (e.g. a defended pipeline).
      x, y: images (float32 NHWC in [0, 1]) and int labels (None: predictions).
      y_target: target labels for a targeted attack (else `target="random"`).
      batch_size: images per attack call.
      cache_dir: directory of the cache (None: no cache).
      progress: show a tqdm progress bar.
      return_info: also return a dict: cache status ("hit", "miss",
        "regenerated", "disabled"), path, key, success rate, seconds,
        and per-component results for AutoAttack.

    Returns float32 images of x's shape (and the info dict).
    """
    from tfdefense.attacks.base import Attack

    if not isinstance(attack, Attack):
        raise invalid_value("attack", "an attack built with tfdefense.attacks.get_attack", attack)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    x = check_images(x, "x", allow_tensor=False)
    if y is not None:
        y = check_labels(y, "y", num_examples=len(x))
    if y_target is not None:
        y_target = check_labels(y_target, "y_target", num_examples=len(x))

    path = key = description = None
    status = "disabled"
    if cache_dir is not None:
        key, description = cache_key(attack, model, x, y, y_target)
        path = pathlib.Path(cache_dir) / f"{attack.name}-{attack.backend}-{key[:24]}.npz"
        cached, problem = _load(path, key, x.shape)
        if cached is not None:
            x_adv, info = cached
            info.update(cache="hit", path=str(path))
            return (x_adv, info) if return_info else x_adv
        status = "miss"
        if problem is not None:
            message = f"tfdefense attack cache: entry {path} {problem}; regenerating it"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
            status = "regenerated"

    x_adv, info = _run_batches(attack, model, x, y, y_target, batch_size, progress)
    info.update(cache=status, path=None if path is None else str(path), key=key)
    if path is not None:
        meta = {"key": key, "description": description, "x_adv_sha256": array_digest(x_adv), "info": info,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        text = json.dumps(meta, sort_keys=True, default=_json_default)
        save_npz(path, x_adv=x_adv, meta=np.array(text))
        write_json(path.with_suffix(".json"), json.loads(text))
    return (x_adv, info) if return_info else x_adv


def _run_batches(attack, model, x, y, y_target, batch_size, progress):
    import tensorflow as tf
    from tqdm.auto import tqdm

    attack.reset_rng()  # the same seed gives the same images, call after call
    columns = {"x": x}
    if y is not None:
        columns["y"] = y
    if y_target is not None:
        columns["t"] = y_target
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    start = time.perf_counter()
    outputs, num_success, components = [], 0, {}
    with tqdm(total=len(x), desc=f"{attack.name} [{attack.backend}]", unit="img", disable=not progress) as bar:
        for batch in dataset.as_numpy_iterator():
            outputs.append(attack(model, batch["x"], batch.get("y"), y_target=batch.get("t")))
            run = attack.last_run_info or {}
            num_success += run.get("num_success", 0)
            for part in run.get("components", ()):
                agg = components.setdefault(
                    part["name"], {"name": part["name"], "backend": part["backend"], "attacked": 0, "broken": 0}
                )
                agg["attacked"] += part["attacked"]
                agg["broken"] += part["broken"]
                agg["backend"] = agg["backend"] or part["backend"]
            bar.update(len(batch["x"]))
            bar.set_postfix(success=f"{num_success / max(1, sum(len(o) for o in outputs)):.3f}")
    x_adv = np.concatenate(outputs) if outputs else np.zeros_like(x)
    seconds = time.perf_counter() - start
    info = {
        "attack": attack.config(),
        "num_examples": int(len(x)),
        "batch_size": int(batch_size),
        "num_success": int(num_success),
        "success_rate": float(num_success / len(x)) if len(x) else float("nan"),
        "seconds": seconds,
        "images_per_second": float(len(x) / seconds) if seconds > 0 else float("nan"),
    }
    if components:
        info["components"] = list(components.values())
    return x_adv.astype(np.float32, copy=False), info


def _load(path, key, shape):
    """Returns ((x_adv, info), None) for a valid entry, (None, problem) otherwise."""
    if not path.exists():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            x_adv = np.array(data["x_adv"])
    except Exception as error:  # truncated, not a zip, missing arrays, bad JSON
        return None, f"cannot be read ({type(error).__name__}: {error})"
    if meta.get("key") != key:
        return None, "belongs to another key"
    if x_adv.shape != tuple(shape) or x_adv.dtype != np.float32:
        return None, f"holds an array of shape {x_adv.shape} and dtype {x_adv.dtype}, expected {tuple(shape)} float32"
    if array_digest(x_adv) != meta.get("x_adv_sha256"):
        return None, "fails its checksum"
    return (x_adv, dict(meta.get("info", {}))), None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)
