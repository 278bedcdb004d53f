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

While an entry is being generated, every finished batch is also stored in
`<entry>.partial/` (same key, checksummed): a run that is interrupted
resumes from its finished batches, and the folder is removed once the
entry is written. Each batch draws a seeded attack's randomness from its
own stream (seed, batch index), so a resumed run gives the images of an
uninterrupted one.
"""

import concurrent.futures
import hashlib
import json
import logging
import pathlib
import time
import warnings

import numpy as np

from tfdefense import distribute
from tfdefense._io import remove_own_files, save_npz, write_json
from tfdefense._validation import check_images, check_labels, check_number, invalid_value
from tfdefense.inference import all_layers

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
        for layer in all_layers(model, include_self=False):
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


def generate(
    attack,
    model,
    x,
    y=None,
    y_target=None,
    batch_size=256,
    cache_dir=None,
    progress=True,
    return_info=False,
    strategy=None,
):
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
      strategy: a `tf.distribute.Strategy` (see `tfdefense.distribute`):
        the batches are dealt round-robin to its replicas (every worker,
        every local device), each replica attacks its batch on its device,
        and the results are gathered back in input order on every worker.
        Every batch draws a seeded attack's randomness from its own stream
        (seed, batch index), so the images are the same with or without a
        strategy, whatever the number of replicas or workers, and after a
        resume (see the module docstring). The cache key does not
        include the strategy; only the chief writes to `cache_dir`, other
        workers into `cache_dir/workers/<task>`.

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

    distributed = distribute.is_distributed(strategy)
    path = key = description = None
    status = "disabled"
    if cache_dir is not None:
        key, description = cache_key(attack, model, x, y, y_target)
        name = f"{attack.name}-{attack.backend}-{key[:24]}.npz"
        path = pathlib.Path(cache_dir) / name
        cached, problem = _load(path, key, x.shape)
        if cached is None and problem is None and distributed and not distribute.is_chief(strategy):
            path = distribute.worker_dir(cache_dir, strategy) / name  # this worker's own entries
            cached, problem = _load(path, key, x.shape)
        if distributed and not distribute.all_workers_agree(strategy, cached is not None):
            cached = None  # another worker misses: all of them generate (the same collectives everywhere)
        if cached is not None:
            x_adv, info = cached
            info.update(cache="hit", path=str(path))
            return (x_adv, info) if return_info else x_adv
        if distributed and not distribute.is_chief(strategy):
            path = distribute.worker_dir(cache_dir, strategy) / name
        status = "miss"
        if problem is not None:
            message = f"tfdefense attack cache: entry {path} {problem}; regenerating it"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
            status = "regenerated"

    partial = None if path is None else _PartialBatches(path.with_name(path.name + ".partial"), key, batch_size)
    if distributed:
        x_adv, info = _run_distributed(attack, model, x, y, y_target, batch_size, progress, strategy)
    else:
        x_adv, info = _run_batches(attack, model, x, y, y_target, batch_size, progress, partial)
    info.update(cache=status, path=None if path is None else str(path), key=key)
    if path is not None:
        meta = {
            "key": key,
            "description": description,
            "x_adv_sha256": array_digest(x_adv),
            "info": info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        text = json.dumps(meta, sort_keys=True, default=_json_default)
        save_npz(path, x_adv=x_adv, meta=np.array(text))
        write_json(path.with_suffix(".json"), json.loads(text))
    if partial is not None and distribute.is_chief(strategy):
        partial.remove()
    return (x_adv, info) if return_info else x_adv


class _PartialBatches:
    """The finished batches of one cache entry being generated: `<entry>.partial/batch-<b>.npz`."""

    def __init__(self, folder, key, batch_size):
        self.folder, self.key, self.batch_size = pathlib.Path(folder), key, int(batch_size)

    def _path(self, b):
        return self.folder / f"batch-{b:06d}.npz"

    def load(self, b, shape):
        """(x_adv, run info) of batch b when stored for this key and batch size, else None (reported if broken)."""
        path = self._path(b)
        if not path.exists():
            return None
        try:
            x_adv, meta = _read_entry(path)
        except Exception as error:
            problem = f"cannot be read ({type(error).__name__}: {error})"
        else:
            if (meta.get("key"), meta.get("batch_size")) != (self.key, self.batch_size):
                return None  # another key or batch size: not this run's; overwritten when its batch is done
            if x_adv.shape != tuple(shape) or x_adv.dtype != np.float32 or array_digest(x_adv) != meta.get("sha256"):
                problem = "holds another shape or dtype, or fails its checksum"
            else:
                return x_adv, meta.get("run", {})
        message = f"tfdefense attack cache: finished batch {path} {problem}; attacking that batch again"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)
        return None

    def store(self, b, x_adv, run):
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"key": self.key, "batch_size": self.batch_size, "sha256": array_digest(x_adv), "run": run}
        save_npz(self._path(b), x_adv=x_adv, meta=np.array(json.dumps(meta, sort_keys=True, default=_json_default)))

    def remove(self):
        """Deletes the batch files this class wrote, then the folder if nothing else is in it."""
        remove_own_files(self.folder, "batch-*.npz")


def _run_batches(attack, model, x, y, y_target, batch_size, progress, partial=None):
    from tqdm.auto import tqdm

    outputs, runs = [], []
    start = time.perf_counter()
    with tqdm(total=len(x), desc=f"{attack.name} [{attack.backend}]", unit="img", disable=not progress) as bar:
        for b, first in enumerate(range(0, len(x), batch_size)):
            sl = slice(first, first + batch_size)
            done = None if partial is None else partial.load(b, x[sl].shape)
            if done is None:
                attack.reset_rng(stream=b)  # the same seed gives the same images, call after call, resumed or not
                out = attack(
                    model, x[sl], None if y is None else y[sl], y_target=None if y_target is None else y_target[sl]
                )
                done = (np.asarray(out, np.float32), dict(attack.last_run_info or {}))
                if partial is not None:
                    partial.store(b, *done)
            outputs.append(done[0])
            runs.append(done[1])
            bar.update(len(done[0]))
            num_success = sum(run.get("num_success", 0) for run in runs)
            bar.set_postfix(success=f"{num_success / max(1, sum(len(o) for o in outputs)):.3f}")
    x_adv = np.concatenate(outputs) if outputs else np.zeros_like(x)
    seconds = time.perf_counter() - start
    info = _run_info(attack, len(x), batch_size, sum(run.get("num_success", 0) for run in runs), seconds)
    components = sum_components(runs)
    if components:
        info["components"] = components
    return x_adv.astype(np.float32, copy=False), info


def sum_components(runs):
    """Per-component attacked / broken counts summed over the batches' run infos (AutoAttack's parts)."""
    components = {}
    for run in runs:
        for part in run.get("components", ()):
            agg = components.setdefault(
                part["name"], {"name": part["name"], "backend": part.get("backend"), "attacked": 0, "broken": 0}
            )
            agg["attacked"] += part["attacked"]
            agg["broken"] += part["broken"]
            agg["backend"] = agg["backend"] or part.get("backend")
    return list(components.values())


def _run_distributed(attack, model, x, y, y_target, batch_size, progress, strategy):
    """Batch b goes to global replica b % R; each round every replica attacks one batch, then all gather."""

    import tensorflow as tf
    from tqdm.auto import tqdm

    layout = distribute.replica_layout(strategy)
    total = distribute.num_replicas(strategy)
    multi_worker = distribute.num_workers(strategy) > 1
    copies = {gid: attack.replace() for gid, _ in layout}  # one per replica: own rng, traced graph, run info
    starts = list(range(0, len(x), batch_size))
    component_names = list(attack.params.get("components", ()))

    def attack_batch(gid, device, b):
        part = copies[gid]
        part.reset_rng(stream=b)
        sl = slice(starts[b], starts[b] + batch_size)
        with tf.device(device):
            out = part(model, x[sl], None if y is None else y[sl], y_target=None if y_target is None else y_target[sl])
        return out, dict(part.last_run_info or {})

    start = time.perf_counter()
    outputs, infos = [None] * len(starts), [None] * len(starts)
    num_rounds = -(-len(starts) // total)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(layout)) if len(layout) > 1 else None
    try:
        with tqdm(
            total=len(x), desc=f"{attack.name} [{attack.backend}] x{total}", unit="img", disable=not progress
        ) as bar:
            for r in range(num_rounds):
                work = [(gid, device, r * total + gid) for gid, device in layout if r * total + gid < len(starts)]
                if pool is None:
                    done = [attack_batch(*item) for item in work]
                else:
                    done = list(pool.map(lambda item: attack_batch(*item), work))
                for (_, _, b), (out, info) in zip(work, done, strict=True):
                    outputs[b], infos[b] = out, info
                if multi_worker:
                    _gather_round(strategy, layout, r, total, starts, x, batch_size, outputs, infos, component_names)
                bar.update(sum(len(outputs[b]) for b in range(r * total, min((r + 1) * total, len(starts)))))
    finally:
        if pool is not None:
            pool.shutdown()
    x_adv = np.concatenate(outputs) if outputs else np.zeros_like(x)
    seconds = time.perf_counter() - start
    num_success = sum(info.get("num_success", 0) for info in infos)
    info = _run_info(attack, len(x), batch_size, num_success, seconds)
    info["distribute"] = distribute.describe(strategy)
    components = sum_components(infos)
    if components:
        info["components"] = components
    return x_adv.astype(np.float32, copy=False), info


def _gather_round(strategy, layout, r, total, starts, x, batch_size, outputs, infos, component_names):
    """Shares this round's batches between workers: padded images and [count, successes, per-component counts]."""
    images, counts = {}, {}
    for gid, _ in layout:
        b = r * total + gid
        padded = np.zeros((batch_size, *x.shape[1:]), np.float32)
        vector = np.zeros(2 + 2 * len(component_names), np.float32)
        if b < len(starts):
            padded[: len(outputs[b])] = outputs[b]
            vector[0], vector[1] = len(outputs[b]), infos[b].get("num_success", 0)
            for part in infos[b].get("components", ()):
                k = component_names.index(part["name"])
                vector[2 + 2 * k : 4 + 2 * k] = part["attacked"], part["broken"]
        images[gid], counts[gid] = padded, vector
    all_images = distribute.all_gather(strategy, images).reshape(total, batch_size, *x.shape[1:])
    all_counts = distribute.all_gather(strategy, {g: v[None] for g, v in counts.items()}).reshape(total, -1)
    for gid in range(total):
        b = r * total + gid
        if b >= len(starts) or outputs[b] is not None:
            continue
        n = int(round(all_counts[gid, 0]))
        outputs[b] = all_images[gid, :n]
        infos[b] = {
            "num_success": int(round(all_counts[gid, 1])),
            "components": [
                {"name": name, "attacked": int(all_counts[gid, 2 + 2 * k]), "broken": int(all_counts[gid, 3 + 2 * k])}
                for k, name in enumerate(component_names)
            ]
            if component_names
            else [],
        }


def _load(path, key, shape):
    """Returns ((x_adv, info), None) for a valid entry, (None, problem) otherwise."""
    if not path.exists():
        return None, None
    try:
        x_adv, meta = _read_entry(path)
    except Exception as error:  # truncated, not a zip, missing arrays, bad JSON
        return None, f"cannot be read ({type(error).__name__}: {error})"
    if meta.get("key") != key:
        return None, "belongs to another key"
    if x_adv.shape != tuple(shape) or x_adv.dtype != np.float32:
        return None, f"holds an array of shape {x_adv.shape} and dtype {x_adv.dtype}, expected {tuple(shape)} float32"
    if array_digest(x_adv) != meta.get("x_adv_sha256"):
        return None, "fails its checksum"
    return (x_adv, dict(meta.get("info", {}))), None


def _read_entry(path):
    """(x_adv, meta) of a cache entry or finished batch (an npz of `x_adv` and a JSON `meta`); raises if unreadable."""
    with np.load(path, allow_pickle=False) as data:
        return np.array(data["x_adv"]), json.loads(str(data["meta"]))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def _run_info(attack, num_examples, batch_size, num_success, seconds):
    """The summary `generate(..., return_info=True)` returns for one run."""
    return {
        "attack": attack.config(),
        "num_examples": int(num_examples),
        "batch_size": int(batch_size),
        "num_success": int(num_success),
        "success_rate": float(num_success / num_examples) if num_examples else float("nan"),
        "seconds": seconds,
        "images_per_second": float(num_examples / seconds) if seconds > 0 else float("nan"),
    }
