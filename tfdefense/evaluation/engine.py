"""The one loop that runs the attacks of a suite over a data set.

`run_suite(model, x, y, suite, ...)` takes the attacked pipeline (`model`:
images -> logits, with any purifier, EOT and BPDA already inside it and in the
attacks' parameters), the transfer source, the suite (`SuiteAttack`s), the
data, a step cache and a `tf.distribute` strategy, and returns a
`RobustnessResult` with per-example outcomes. `evaluate_robustness`,
`evaluate_model`, the sanity checks and the presets all run their attacks
through it. Modes:

- "cascade" (default): AutoAttack's protocol for the worst case. The attacks
  run in AutoAttack's standard order (APGD-CE, APGD-DLR, APGD-T, FAB-T,
  Square, then the suite's other attacks in their order), each only on the
  images that the model classifies correctly and that every earlier attack
  failed to break. `correct[label]` is the robust outcome *after* that attack
  (AutoAttack's "robust accuracy after each attack"); the last one is the
  worst case. A model that the first attack breaks everywhere costs one attack.
- "per_attack": every attack on every image the model classifies correctly
  (a transfer attack on every image); `correct[label]` is the outcome under
  that attack alone (the per-attack table). Same worst case, more attacks.
- "every_example": each attack once on every image (no restarts, no clean
  pass), its images kept in `extra[label]["images"]` (the papers' and the
  adaptive protocols, `protocols.adaptive`).

`attacked[label]` says which images an attack ran on, and
`extra["attacked_images"]` how many per attack.

`with_attack_precision(suite, "bf16")` returns the suite with every attack
that takes a `compute_dtype` crafting in bfloat16; the engine judges every
adversarial image with the model as given (float32), so no image counts as
broken that the float32 pipeline classifies correctly.

`cache` is a callable `cache(name, config, compute) -> dict` returning
`compute()` (a dict of per-example arrays and numbers) or its stored value;
`StepCache(run, base_config)` keys it on a `Run`'s step store, and through its
`partial(name, config)` also keeps each finished chunk of an attack step, so an
interrupted step resumes from its last finished chunk.
"""

import dataclasses
import hashlib
import time

import numpy as np

from tfdefense._validation import check_choice, check_images, check_labels, check_number, invalid_value

KINDS = ("single-step", "white-box", "gradient-free", "transfer")
MODES = ("cascade", "per_attack", "every_example")
# AutoAttack's standard order; attacks that are none of these follow in the suite's order.
AUTOATTACK_ORDER = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
# Crafting precision of the suite's attacks -> their `compute_dtype`.
ATTACK_PRECISIONS = {"fp32": None, "bf16": "bfloat16"}


# ----------------------------------------------------------------------------- suite and result


class SanityCheckError(RuntimeError):
    """An evaluation failed a sanity check (its numbers are not to be trusted)."""

    def __init__(self, failures):
        self.failures = list(failures)
        lines = [
            f"{f['model']}: {f['name']}: {f['detail']}" if f.get("model") else f"{f['name']}: {f['detail']}"
            for f in self.failures
        ]
        super().__init__("robustness sanity check(s) failed:\n  " + "\n  ".join(lines))


@dataclasses.dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite: a registry attack, its parameters, its kind and restarts.

    `restarts` > 1 reruns the attack (fresh random start) on the examples
    still robust, keeping per example the first success. Transfer attacks are
    crafted on the `source` model given to `evaluate_robustness`.
    """

    label: str
    attack: str
    params: dict
    kind: str
    restarts: int = 1

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        check_number("restarts", self.restarts, minimum=1, integer=True)
        if not isinstance(self.label, str) or not self.label:
            raise invalid_value("label", "a non-empty string", self.label)

    def build(self):
        from tfdefense.attacks import get_attack

        return get_attack(self.attack, **self.params)

    def config(self):
        return {"attack": self.attack, "params": dict(self.params), "kind": self.kind, "restarts": self.restarts}


@dataclasses.dataclass
class RobustnessResult:
    """Per-example outcomes of a suite on one model.

    `correct[label]` is a bool array: in mode "per_attack" (and
    "every_example") the model right on that attack's image; in mode
    "cascade" the model right on the clean image and under this attack and
    every earlier one (the robust outcome after it). `attacked[label]`: the
    examples the attack ran on. `clean` is the clean outcome (None where not
    measured: the worst case is then over the attacks alone). Accuracies are
    fractions of all examples.
    """

    n: int
    clean: np.ndarray
    correct: dict
    kinds: dict
    configs: dict
    seconds: dict
    extra: dict = dataclasses.field(default_factory=dict)
    checks: list = dataclasses.field(default_factory=list)
    attacked: dict = dataclasses.field(default_factory=dict)
    mode: str = "per_attack"

    @property
    def clean_accuracy(self):
        return float(np.mean(self.clean)) if self.n and self.clean is not None else float("nan")

    def accuracy(self, label):
        return float(np.mean(self.correct[label])) if self.n else float("nan")

    @property
    def accuracies(self):
        return {label: self.accuracy(label) for label in self.correct}

    def worst_case_of(self, kinds=None, labels=None):
        """Per-example worst case over the attacks of the given kinds / labels (and clean)."""
        alive = np.ones(self.n, bool) if self.clean is None else self.clean.copy()
        for label, outcome in self.correct.items():
            if (kinds is None or self.kinds[label] in kinds) and (labels is None or label in labels):
                alive &= outcome
        return float(np.mean(alive)) if self.n else float("nan")

    @property
    def worst_case(self):
        """Per-example worst case over every attack run (and the clean image)."""
        return self.worst_case_of()

    @property
    def failures(self):
        return [c for c in self.checks if not c["passed"]]

    def raise_on_failure(self, model_name=None):
        if self.failures:
            raise SanityCheckError([dict(f, model=model_name) for f in self.failures])

    def summary(self):
        return {
            "n": self.n,
            "clean": self.clean_accuracy,
            **self.accuracies,
            "worst_case": self.worst_case,
            "checks": {c["name"]: c["passed"] for c in self.checks},
        }


# ----------------------------------------------------------------------------- order


def autoattack_component(spec):
    """Which AutoAttack component `spec` is ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square") or None."""
    p = spec.params
    if spec.kind not in ("white-box", "gradient-free"):
        return None
    if spec.attack == "apgd":
        if p.get("targeted"):
            return "apgd-t"
        return "apgd-dlr" if p.get("loss") == "dlr" else "apgd-ce"
    if spec.attack == "autoattack" and list(p.get("components", ())) == ["apgd-t"]:
        return "apgd-t"
    if spec.attack in ("fab_t", "fab-t"):
        return "fab-t"
    if spec.attack == "square":
        return "square"
    return None


def attack_order(suite, mode="cascade"):
    """The order `run_suite` runs `suite` in: AutoAttack's for a cascade, the suite's otherwise."""
    if mode != "cascade":
        return list(suite)

    def rank(spec):
        component = autoattack_component(spec)
        return AUTOATTACK_ORDER.index(component) if component else len(AUTOATTACK_ORDER)

    return sorted(suite, key=rank)  # stable: the other attacks keep their order


# ----------------------------------------------------------------------------- caching


def mask_digest(mask):
    """A short digest of a bool mask (which images a step ran on): part of its cache key."""
    return hashlib.sha256(np.packbits(np.asarray(mask, bool)).tobytes() + str(len(mask)).encode()).hexdigest()[:16]


def _pack(values):
    return np.packbits(np.asarray(values, bool)).tobytes().hex()


def _unpack(text, n):
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:n].astype(bool)


def no_cache(name, config, compute):
    """The cache that stores nothing."""
    return compute()


class StepCache:
    """`cache(name, config, compute)` on a `Run`'s step store (`Run.step_value`).

    Bool arrays are stored bit-packed, numbers as they are; `base_config`
    (models, data, settings) is part of every key.
    """

    def __init__(self, run, base_config):
        self.run = run
        self.base_config = dict(base_config)

    def __call__(self, name, config, compute):
        def fn():
            return _to_json(compute())

        stored = self.run.step_value(_step_name(name), {**self.base_config, **config}, fn)
        return _from_json(stored)

    def partial(self, name, config):
        """`ChunkStore` of step (name, config): its finished chunks, kept until the step is stored; or None."""
        step_partial = getattr(self.run, "step_partial", None)
        chunks = None if step_partial is None else step_partial(_step_name(name), {**self.base_config, **config})
        return None if chunks is None else ChunkStore(chunks)


def _step_name(name):
    return name.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "")


def _to_json(outcome):
    """A step's outcome with its bool arrays bit-packed."""
    return {
        key: {"bits": _pack(value), "n": int(len(value))} if isinstance(value, np.ndarray) else value
        for key, value in outcome.items()
    }


def _from_json(stored):
    return {k: _unpack(v["bits"], v["n"]) if isinstance(v, dict) and "bits" in v else v for k, v in stored.items()}


class ChunkStore:
    """A step's finished chunks (`step_cache.PartialChunks`) holding outcome dicts, bool arrays bit-packed."""

    def __init__(self, chunks):
        self.chunks = chunks

    def load(self, c, key):
        stored = self.chunks.load(c, key)
        return None if stored is None else _from_json(stored)

    def store(self, c, key, outcome):
        self.chunks.store(c, key, _to_json(outcome))


# ----------------------------------------------------------------------------- one attack


def _predict(model, x, batch_size):
    from tfdefense.inference import predict_labels

    return predict_labels(model, x, batch_size)


def _distributed(strategy):
    from tfdefense import distribute

    return distribute.is_distributed(strategy)


def _target(spec, model, source):
    """The model `spec` is crafted on: `source` for a transfer attack, else `model`."""
    if spec.kind != "transfer":
        return model
    if source is None:
        raise invalid_value("source", f"the undefended classifier for the transfer attack {spec.label!r}", source)
    return source


def _craft(attack, restart, target, x, y, batch_size, strategy, info_out):
    """`attack`'s images of (x, y) crafted on `target`, `batch_size` at a time (sharded under `strategy`)."""
    if _distributed(strategy):
        from tfdefense.attacks import generate

        if restart and attack.params.get("seed") is not None:
            attack = attack.replace(seed=attack.params["seed"] + restart)
        out, info = generate(
            attack, target, x, y, batch_size=batch_size, progress=False, return_info=True, strategy=strategy
        )
        info_out.clear()
        info_out.update(info)
        return out
    return np.concatenate(
        [attack(target, x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    )


def run_attack(spec, model, x, y, source=None, batch_size=500, eval_batch_size=256, strategy=None, attack=None):
    """Runs one `SuiteAttack` on (x, y); returns (per-example correct under it, adversarial images, info).

    Restarts run on the examples still robust. Transfer attacks are crafted on
    `source` (required) with the true labels and evaluated on `model`. With a
    `tf.distribute` `strategy` the batches are sharded over its replicas and
    workers (`tfdefense.attacks.generate(strategy=)`); restart r of a seeded
    attack then draws from seed + r. `attack`: the built `spec` to reuse (its
    compiled graphs and random stream carry over between calls).
    """
    attack = spec.build() if attack is None else attack
    target = _target(spec, model, source)
    x_adv = x.copy()
    correct = _predict(model, x, eval_batch_size) == y
    # Transfer is judged on the source: keep the restart that fools the source, attack all examples.
    alive = np.ones(len(x), bool) if spec.kind == "transfer" else correct.copy()
    first_restart = None
    last_sharded = {}
    for restart in range(spec.restarts):
        idx = np.where(alive)[0]
        if len(idx) == 0:
            break
        out = _craft(attack, restart, target, x[idx], y[idx], batch_size, strategy, last_sharded)
        judge = source if spec.kind == "transfer" else model
        broke = _predict(judge, out, eval_batch_size) != y[idx]
        if spec.kind == "transfer":
            x_adv[idx] = np.where(broke[:, None, None, None] | (restart == 0), out, x_adv[idx])
        else:
            x_adv[idx[broke]] = out[broke]
        alive[idx[broke]] = False
        if restart == 0:
            first_restart = _predict(model, x_adv, eval_batch_size) == y
    correct = _predict(model, x_adv, eval_batch_size) == y
    info = {"first_restart": first_restart}
    source_info = last_sharded if "components" in last_sharded else (attack.last_run_info or {})
    if "components" in source_info:
        info["components"] = source_info["components"]
        info["not_run"] = source_info.get("not_run")
    return correct, x_adv, info


def _replica_batch(batch_size, strategy):
    """Images per attack call on one replica: the global `batch_size` split over the strategy's replicas."""
    from tfdefense import distribute

    return max(1, -(-batch_size // distribute.num_replicas(strategy)))


def _progress_bar(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def _attack_images(spec, model, x, y, source, batch_size, eval_batch_size, strategy, progress, chunks=None):
    """`spec` on every image of (x, y), `batch_size` at a time: (correct, first_restart, info).

    Chunk c (images c*batch_size onwards) draws a seeded attack's randomness from
    stream (seed, c). `chunks` (a `ChunkStore`, or None): finished chunks are read
    from it and new ones written to it, so an interrupted step redoes only the
    chunks that had not finished, with the same outcome. info: "resumed_chunks" of
    "chunks" read back, and "resumed_seconds", their attack time.
    """
    if len(x) == 0:
        empty = np.zeros(0, bool)
        return empty, empty, {}
    with _progress_bar(len(x), spec.label, progress) as bar:
        if _distributed(strategy):
            # All images at once: the batches are dealt to every replica of every worker, each with its own
            # random stream (`generate(strategy=)`), and gathered in input order.
            correct, _, info = run_attack(
                spec,
                model,
                x,
                y,
                source=source,
                batch_size=_replica_batch(batch_size, strategy),
                eval_batch_size=eval_batch_size,
                strategy=strategy,
            )
            bar.update(len(x))
            first = info.get("first_restart")
            return correct, correct if first is None else first, info
        from tfdefense.attacks.generation import sum_components

        attack = spec.build()  # traced once, used for every chunk
        outcomes, resumed_seconds, resumed = [], 0.0, 0
        for c, start in enumerate(range(0, len(x), batch_size)):
            sl = slice(start, start + batch_size)
            key = {"chunk": c, "start": start, "size": len(x[sl]), "batch_size": batch_size}
            done = None if chunks is None else chunks.load(c, key)
            if done is not None and len(done.get("correct", ())) == key["size"]:
                resumed_seconds += float(done.get("seconds") or 0.0)
                resumed += 1
            else:
                t0 = time.perf_counter()
                attack.reset_rng(stream=c)
                correct, _, info = run_attack(
                    spec,
                    model,
                    x[sl],
                    y[sl],
                    source=source,
                    batch_size=batch_size,
                    eval_batch_size=eval_batch_size,
                    attack=attack,
                )
                first = info.get("first_restart")
                done = {
                    "correct": correct,
                    "first_restart": correct if first is None else first,
                    "seconds": time.perf_counter() - t0,
                    "components": info.get("components") or [],
                }
                if chunks is not None:
                    chunks.store(c, key, done)
            outcomes.append(done)
            bar.update(key["size"])
    info = {"resumed_seconds": resumed_seconds, "resumed_chunks": resumed, "chunks": len(outcomes)}
    components = sum_components(outcomes)
    if components:
        info["components"] = components
    return (
        np.concatenate([o["correct"] for o in outcomes]),
        np.concatenate([o["first_restart"] for o in outcomes]),
        info,
    )


# ----------------------------------------------------------------------------- the engine


def with_attack_precision(suite, precision):
    """(suite with `compute_dtype` set where an attack takes it, labels of the attacks kept in float32).

    "fp32" returns the suite unchanged. "bf16" sets compute_dtype="bfloat16"
    on every attack whose registry class has that parameter (the native
    gradient attacks, APGD); the others stay in float32 (Square ranks candidates by
    small margin differences, FAB-T, DeepFool and C&W divide by them).
    """
    check_choice("attack_precision", precision, tuple(ATTACK_PRECISIONS))
    compute_dtype = ATTACK_PRECISIONS[precision]
    if compute_dtype is None:
        return list(suite), []
    out, kept = [], []
    for spec in suite:
        candidate = with_params(spec, compute_dtype=compute_dtype)
        out.append(spec if candidate is None else candidate)
        if candidate is None:
            kept.append(spec.label)
    return out, kept


def with_params(spec, **params):
    """`spec` with `params` added, or None when its attack (or backend) does not take them."""
    candidate = dataclasses.replace(spec, params={**spec.params, **params})
    try:
        candidate.build()
    except ValueError:
        return None
    return candidate


def _check_suite(suite):
    if not isinstance(suite, (list, tuple)) or not suite or not all(isinstance(s, SuiteAttack) for s in suite):
        raise invalid_value("suite", "a non-empty list of SuiteAttack (see robustness_suite)", suite)
    labels = [s.label for s in suite]
    if len(set(labels)) != len(labels):
        raise invalid_value("suite", "attacks with distinct labels", labels)


def run_suite(
    model,
    x,
    y,
    suite,
    *,
    source=None,
    mode="cascade",
    batch_size=500,
    eval_batch_size=256,
    strategy=None,
    cache=None,
    log=None,
    progress=False,
    step_prefix="",
    step_config=None,
):
    """Runs the attacks of `suite` over (x, y) on `model`; returns a `RobustnessResult`.

    Args:
      model: the attacked pipeline, images -> logits.
      x, y: float32 images in [0, 1] and int labels.
      suite: a list of `SuiteAttack`.
      source: the undefended classifier transfer attacks are crafted on.
      mode: "cascade" (AutoAttack's worst case, the default), "per_attack" or
        "every_example" (see the module docstring).
      batch_size: images per attack call (the global batch under `strategy`).
      eval_batch_size: images per prediction.
      strategy: a `tf.distribute.Strategy` sharding every attack, or None.
      cache: `cache(name, config, compute)` (see `StepCache`); None: no cache.
      log: a callable receiving progress lines; progress: progress bars.
      step_prefix, step_config: prefix of the cache names and config merged
        into every cache key (e.g. the subsample a sanity check runs on).
    """
    x = check_images(x, "x", allow_tensor=False)
    y = check_labels(y, "y", num_examples=len(x))
    _check_suite(suite)
    check_choice("mode", mode, MODES)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    if mode == "every_example":
        return _every_example(model, x, y, suite, source, batch_size, eval_batch_size, log, strategy)
    cache = cache or no_cache
    extra_config = dict(step_config or {})
    n = len(x)
    clean = cache(
        f"{step_prefix}clean",
        {"step": "clean", **extra_config},
        lambda: {"correct": _predict(model, x, eval_batch_size) == y},
    )["correct"]
    result = RobustnessResult(n=n, clean=clean, correct={}, kinds={}, configs={}, seconds={}, mode=mode)
    alive = clean.copy()
    for spec in attack_order(suite, mode):
        if mode == "cascade":
            on = alive.copy()
        else:
            on = np.ones(n, bool) if spec.kind == "transfer" else clean.copy()
        idx = np.where(on)[0]
        config = {"step": "attack", "spec": spec.config(), "mode": mode, "on": mask_digest(on), **extra_config}
        name = f"{step_prefix}{spec.label}"

        def compute(spec=spec, idx=idx, config=config, name=name):
            t0 = time.perf_counter()
            chunks = cache.partial(name, config) if hasattr(cache, "partial") else None
            correct, first, info = _attack_images(
                spec, model, x[idx], y[idx], source, batch_size, eval_batch_size, strategy, progress, chunks
            )
            seconds = time.perf_counter() - t0 + info.get("resumed_seconds", 0.0)
            if info.get("resumed_chunks") and log is not None:
                log(
                    f"{spec.label}: {info['resumed_chunks']} of {info['chunks']} chunks of {batch_size} images "
                    "read back from an interrupted run"
                )
            outcome = {"correct": correct, "first_restart": first, "seconds": seconds}
            if info.get("components") is not None:
                outcome["components"] = info["components"]
            return outcome

        outcome = cache(name, config, compute)
        correct, first = np.zeros(n, bool), np.zeros(n, bool)
        correct[idx], first[idx] = outcome["correct"], outcome["first_restart"]
        if mode == "cascade":
            alive &= correct | ~on
            correct = alive.copy()
        else:
            alive &= correct | ~clean
        result.correct[spec.label] = correct
        result.attacked[spec.label] = on
        result.kinds[spec.label] = spec.kind
        result.configs[spec.label] = spec.config()
        result.seconds[spec.label] = float(outcome.get("seconds") or 0.0)
        result.extra[spec.label] = {
            "first_restart": first,
            **({"components": outcome["components"]} if "components" in outcome else {}),
        }
        if log is not None:
            what = "robust after it" if mode == "cascade" else "accuracy"
            log(
                f"{spec.label}: {len(idx)} images attacked, {what} {np.mean(correct):.4f} "
                f"({result.seconds[spec.label]:.0f} s)"
            )
    result.extra["attacked_images"] = {label: int(mask.sum()) for label, mask in result.attacked.items()}
    return result


def _every_example(model, x, y, suite, source, batch_size, eval_batch_size, log, strategy):
    """`run_suite(mode="every_example")`: craft every attack on every example, then judge each."""
    crafted = []
    for spec in suite:
        start, info = time.perf_counter(), {}
        images = _craft(spec.build(), 0, _target(spec, model, source), x, y, batch_size, strategy, info)
        crafted.append((spec, images, time.perf_counter() - start))
    result = RobustnessResult(n=len(x), clean=None, correct={}, kinds={}, configs={}, seconds={}, mode="every_example")
    for spec, images, seconds in crafted:
        result.correct[spec.label] = _predict(model, images, eval_batch_size) == y
        result.attacked[spec.label] = np.ones(len(x), bool)
        result.kinds[spec.label] = spec.kind
        result.configs[spec.label] = spec.config()
        result.seconds[spec.label] = seconds
        result.extra[spec.label] = {"images": images}
        if log is not None:
            log(f"{spec.label}: accuracy {result.accuracy(spec.label):.4f} ({seconds:.0f} s)")
    result.extra["attacked_images"] = {label: len(x) for label in result.correct}
    return result


def sanity_subsample(n, size=200, seed=0):
    """Sorted indices of a fixed random subsample of `size` of n images (all of them when n <= size)."""
    check_number("size", size, minimum=1, integer=True)
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
