"""A robustness evaluation a skeptical reviewer accepts (Carlini et al. 2019, https://arxiv.org/abs/1902.06705).

`robustness_suite(eps, ...)` lists the attacks; `evaluate_robustness(model,
x, y, suite, source=...)` runs every one of them on every example and keeps
the per-example outcome; `RobustnessResult.worst_case` is the per-example
worst case over all of them (an example counts as robust only if the model is
right on the clean image and on every attack's image). `sanity_checks(...)`
runs the checks that catch a broken evaluation and returns their outcomes;
`SanityCheckError` is raised by `RobustnessResult.raise_on_failure()` (or
`sanity_checks(..., strict=True)`).

The default suite at eps (Linf):

| label | kind | what |
| --- | --- | --- |
| `fgsm` | single-step | one signed-gradient step of size eps through the whole model |
| `pgd-100x10` | white-box | PGD, 100 iterations, step 2.5 eps / 100, random start, 10 restarts (per example the first restart that succeeds; later restarts run only on examples still robust) |
| `apgd-ce` | white-box | AutoAttack's APGD with cross-entropy, 100 iterations |
| `apgd-t` | white-box | AutoAttack's APGD-T: targeted DLR towards each of the 9 most likely wrong classes |
| `fab-t` | white-box | AutoAttack's FAB-T: targeted Fast Adaptive Boundary (Linf), 9 target classes x 100 iterations |
| `square-5000` | gradient-free | Square attack (score-based random search), 5000 queries |
| `transfer-pgd` | transfer | PGD-100 (10 restarts) crafted on the *undefended* classifier (`source=`), evaluated on the model |

With the APGD components, FAB-T and Square, the suite holds every component of
the standard AutoAttack (each run on every example; the worst case combines them).

Sanity checks (each returns passed / failed with the numbers):

1. `iterative_beats_single_step`: accuracy under PGD <= accuracy under FGSM + tol.
2. `monotonic_in_eps`: PGD accuracy does not rise with eps (tol), over `eps_grid`.
3. `large_eps_near_zero`: at the largest eps of the grid (>= 0.5) accuracy <= `zero_accuracy`
   (eps 0.5 lets the attacker set every pixel to 0.5, beyond it to draw any image).
4. `gradient_free_not_better`: the gradient-free attack does not beat the white-box
   worst case by more than `tol_masking` (gradient masking).
5. `transfer_not_better`: nor does the transfer attack.
6. `convergence`: PGD with twice the iterations lowers accuracy by at most `tol_convergence`
   compared with the same PGD at the base iteration count (one restart each).
"""

import dataclasses
import time

import numpy as np

from tfdefense._validation import check_choice, check_images, check_labels, check_number, invalid_value

KINDS = ("single-step", "white-box", "gradient-free", "transfer")
CHECK_NAMES = (
    "iterative_beats_single_step",
    "monotonic_in_eps",
    "large_eps_near_zero",
    "gradient_free_not_better",
    "transfer_not_better",
    "convergence",
)


class SanityCheckError(RuntimeError):
    """An evaluation failed a sanity check (its numbers are not to be trusted)."""

    def __init__(self, failures):
        self.failures = list(failures)
        lines = [f"{f['model']}: {f['name']}: {f['detail']}" if f.get("model") else f"{f['name']}: {f['detail']}"
                 for f in self.failures]
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


def robustness_suite(
    eps,
    pgd_iter=100,
    pgd_restarts=10,
    pgd_step=None,
    apgd_iter=100,
    n_target_classes=9,
    square_queries=5000,
    fab_iter=None,
    transfer=True,
    transfer_iter=None,
    transfer_restarts=None,
    autoattack=("apgd-ce", "apgd-t"),
    seed=0,
):
    """The attack list of the reviewer-proof evaluation at Linf radius `eps`.

    Args:
      eps: Linf radius in [0, 1] units.
      pgd_iter, pgd_restarts, pgd_step: white-box PGD (default step 2.5 eps / pgd_iter).
      apgd_iter, n_target_classes: AutoAttack's APGD components.
      square_queries: queries of the gradient-free Square attack (0: none).
      fab_iter: FAB-T iterations per target class (None: apgd_iter; 0: no FAB-T);
        its targets are the `n_target_classes` most likely wrong classes.
      transfer: include PGD crafted on the undefended classifier.
      transfer_iter, transfer_restarts: its settings (default: pgd_iter, pgd_restarts).
      autoattack: which APGD components ("apgd-ce", "apgd-dlr", "apgd-t"); () for none.
      seed: base seed (every attack gets its own).
    Returns a list of `SuiteAttack`.
    """
    check_number("eps", eps, minimum=0, maximum=1)
    check_number("pgd_iter", pgd_iter, minimum=1, integer=True)
    check_number("pgd_restarts", pgd_restarts, minimum=1, integer=True)
    check_number("pgd_step", pgd_step, minimum=0, maximum=eps, allow_none=True)
    check_number("apgd_iter", apgd_iter, minimum=1, integer=True)
    check_number("n_target_classes", n_target_classes, minimum=1, integer=True)
    check_number("square_queries", square_queries, minimum=0, integer=True)
    fab_iter = apgd_iter if fab_iter is None else check_number("fab_iter", fab_iter, minimum=0, integer=True)
    check_number("seed", seed, minimum=0, integer=True)
    if not isinstance(autoattack, (list, tuple)) or any(c not in ("apgd-ce", "apgd-dlr", "apgd-t") for c in autoattack):
        raise invalid_value("autoattack", "a list drawn from ['apgd-ce', 'apgd-dlr', 'apgd-t'] (FAB-T: fab_iter)",
                            autoattack)
    step = 2.5 * eps / pgd_iter if pgd_step is None else float(pgd_step)
    step = min(step, eps)
    t_iter = pgd_iter if transfer_iter is None else check_number("transfer_iter", transfer_iter, minimum=1, integer=True)
    t_restarts = pgd_restarts if transfer_restarts is None else check_number(
        "transfer_restarts", transfer_restarts, minimum=1, integer=True)
    suite = [
        SuiteAttack("fgsm", "fgsm", dict(eps=eps), "single-step"),
        SuiteAttack(
            f"pgd-{pgd_iter}x{pgd_restarts}", "pgd",
            dict(eps=eps, eps_iter=step, nb_iter=pgd_iter, rand_init=True, seed=seed + 1), "white-box", pgd_restarts,
        ),
    ]
    for k, component in enumerate(autoattack):
        if component == "apgd-t":
            params = dict(eps=eps, components=["apgd-t"], nb_iter=apgd_iter, n_target_classes=n_target_classes,
                          seed=seed + 10 + k)
            suite.append(SuiteAttack("apgd-t", "autoattack", params, "white-box"))
        else:
            loss = "ce" if component == "apgd-ce" else "dlr"
            suite.append(SuiteAttack(component, "apgd", dict(eps=eps, nb_iter=apgd_iter, loss=loss, seed=seed + 10 + k),
                                     "white-box"))
    if fab_iter:
        suite.append(SuiteAttack("fab-t", "fab_t", dict(eps=eps, nb_iter=fab_iter, n_target_classes=n_target_classes,
                                                        seed=seed + 15), "white-box"))
    if square_queries:
        suite.append(SuiteAttack(f"square-{square_queries}", "square", dict(eps=eps, nb_queries=square_queries,
                                                                           seed=seed + 20), "gradient-free"))
    if transfer:
        t_step = min(2.5 * eps / t_iter, eps) if pgd_step is None else step
        suite.append(SuiteAttack(
            "transfer-pgd", "pgd", dict(eps=eps, eps_iter=t_step, nb_iter=t_iter, rand_init=True, seed=seed + 30),
            "transfer", t_restarts,
        ))
    return suite


@dataclasses.dataclass
class RobustnessResult:
    """Per-example outcomes of a suite on one model.

    `correct[label]` is a bool array (model right on that attack's image);
    `clean` the clean outcome (None where not measured: the worst case is then
    over the attacks alone). Accuracies are fractions of all examples.
    """

    n: int
    clean: np.ndarray
    correct: dict
    kinds: dict
    configs: dict
    seconds: dict
    extra: dict = dataclasses.field(default_factory=dict)
    checks: list = dataclasses.field(default_factory=list)

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


def _predict(model, x, batch_size):
    from tfdefense.evaluation.metrics import predict_labels

    return predict_labels(model, x, batch_size)


def run_attack(spec, model, x, y, source=None, batch_size=500, eval_batch_size=256, strategy=None):
    """Runs one `SuiteAttack`; returns (per-example correct under it, adversarial images, info).

    Restarts run on the examples still robust. Transfer attacks are crafted on
    `source` (required) with the true labels and evaluated on `model`. With a
    `tf.distribute` `strategy` the batches are sharded over its replicas and
    workers (`tfdefense.attacks.generate(strategy=)`); restart r of a seeded
    attack then draws from seed + r.
    """
    attack = spec.build()
    target = _target(spec, model, source)
    x_adv = x.copy()
    correct = _predict(model, x, eval_batch_size) == y
    if spec.kind == "transfer":
        # Transfer is judged on the source: keep the restart that fools the source, attack all examples.
        alive = np.ones(len(x), bool)
    else:
        alive = correct.copy()
    first_restart = None
    last_sharded = {}
    for restart in range(spec.restarts):
        idx = np.where(alive)[0]
        if len(idx) == 0:
            break
        out = _craft(attack, restart, target, x[idx], y[idx], batch_size, strategy, last_sharded)
        if spec.kind == "transfer":
            fooled = _predict(source, out, eval_batch_size) != y[idx]
            x_adv[idx] = np.where(fooled[:, None, None, None] | (restart == 0), out, x_adv[idx])
            alive[idx[fooled]] = False
        else:
            broke = _predict(model, out, eval_batch_size) != y[idx]
            x_adv[idx[broke]] = out[broke]
            alive[idx[broke]] = False
        if restart == 0:
            first_restart = _predict(model, x_adv, eval_batch_size) == y
    correct = _predict(model, x_adv, eval_batch_size) == y
    info = {"first_restart": first_restart}
    if "components" in last_sharded:
        info["components"] = last_sharded["components"]
        info["not_run"] = last_sharded.get("not_run")
    elif attack.last_run_info is not None and "components" in attack.last_run_info:
        info["components"] = attack.last_run_info["components"]
        info["not_run"] = attack.last_run_info.get("not_run")
    return correct, x_adv, info


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
        return _sharded(attack, restart, target, x, y, batch_size, strategy, info_out=info_out)
    return np.concatenate([attack(target, x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _distributed(strategy):
    from tfdefense import distribute

    return distribute.is_distributed(strategy)


def _sharded(attack, restart, model, x, y, batch_size, strategy, info_out):
    from tfdefense.attacks import generate

    if restart and attack.params.get("seed") is not None:
        attack = attack.replace(seed=attack.params["seed"] + restart)
    out, info = generate(attack, model, x, y, batch_size=batch_size, progress=False, return_info=True,
                         strategy=strategy)
    info_out.clear()
    info_out.update(info)
    return out


def evaluate_robustness(model, x, y, suite, source=None, batch_size=500, log=None, strategy=None, every_example=False):
    """Runs every attack of `suite` on every example of (x, y); returns a `RobustnessResult`.

    Args:
      model: the (defended) model to evaluate, images -> logits; attacked end to
        end (white-box through a purifier when it is a `DefendedClassifier`).
      x, y: float32 images in [0, 1] and int labels.
      suite: a list of `SuiteAttack` (`robustness_suite(eps)`).
      source: the undefended classifier transfer attacks are crafted on.
      batch_size: images per attack call (a global batch under `strategy`).
      log: optional callable receiving progress lines.
      strategy: a `tf.distribute.Strategy`: each attack's batches are dealt
        to its replicas and workers and gathered in input order; the
        predictions that judge them run on every worker (cheap next to the
        attacks). None: one device.
      every_example: run each attack once on every example (restarts
        ignored) and keep its images, as the papers' and the adaptive
        protocols do (`protocols.adaptive`): every attack is crafted before
        any is judged, the clean images are not judged (`result.clean` is
        None) and `result.extra[label]["images"]` holds each attack's images.
        False: the reviewer's suite (clean pass, restarts on the examples
        still robust).
    """
    x = check_images(x, "x", allow_tensor=False)
    y = check_labels(y, "y", num_examples=len(x))
    if not isinstance(suite, (list, tuple)) or not suite or not all(isinstance(s, SuiteAttack) for s in suite):
        raise invalid_value("suite", "a non-empty list of SuiteAttack (see robustness_suite)", suite)
    labels = [s.label for s in suite]
    if len(set(labels)) != len(labels):
        raise invalid_value("suite", "attacks with distinct labels", labels)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    if every_example:
        return _evaluate_every_example(model, x, y, suite, source, batch_size, log, strategy)
    clean = _predict(model, x, 256) == y
    result = RobustnessResult(n=len(x), clean=clean, correct={}, kinds={}, configs={}, seconds={})
    for spec in suite:
        start = time.perf_counter()
        correct, _, info = run_attack(spec, model, x, y, source=source, batch_size=batch_size, strategy=strategy)
        result.correct[spec.label] = correct
        result.kinds[spec.label] = spec.kind
        result.configs[spec.label] = spec.config()
        result.seconds[spec.label] = time.perf_counter() - start
        result.extra[spec.label] = info
        if log is not None:
            log(f"{spec.label}: accuracy {np.mean(correct):.4f} ({result.seconds[spec.label]:.0f} s)")
    return result


def _evaluate_every_example(model, x, y, suite, source, batch_size, log, strategy):
    """`evaluate_robustness(every_example=True)`: craft every attack on every example, then judge each."""
    crafted = []
    for spec in suite:
        start, info = time.perf_counter(), {}
        images = _craft(spec.build(), 0, _target(spec, model, source), x, y, batch_size, strategy, info)
        crafted.append((spec, images, time.perf_counter() - start))
    result = RobustnessResult(n=len(x), clean=None, correct={}, kinds={}, configs={}, seconds={})
    for spec, images, seconds in crafted:
        result.correct[spec.label] = _predict(model, images, 256) == y
        result.kinds[spec.label] = spec.kind
        result.configs[spec.label] = spec.config()
        result.seconds[spec.label] = seconds
        result.extra[spec.label] = {"images": images}
        if log is not None:
            log(f"{spec.label}: accuracy {result.accuracy(spec.label):.4f} ({seconds:.0f} s)")
    return result


def _check(name, passed, detail, **values):
    return {"name": name, "passed": bool(passed), "detail": detail, "values": values}


# Accuracies are counts / n: a difference equal to a tolerance (0.76 - 0.73 = 0.030000000000000027) passes.
_SLACK = 1e-9


def _at_most(value, limit):
    return value <= limit + _SLACK


def sanity_checks(
    model,
    x,
    y,
    result,
    eps,
    eps_grid=None,
    sweep_iter=40,
    convergence_iter=None,
    convergence_label=None,
    tol_single_step=0.01,
    tol_monotonic=0.02,
    zero_accuracy=0.1,
    tol_masking=0.03,
    tol_convergence=0.03,
    strict=False,
    seed=0,
    batch_size=500,
    log=None,
):
    """Runs the sanity checks on a `RobustnessResult` of `model`; stores and returns them.

    Args:
      model, x, y: what `result` was measured on.
      eps: the evaluation radius.
      eps_grid: radii of the accuracy-vs-eps sweep (PGD-`sweep_iter`, one
        restart); must reach >= 0.5. None: (eps/3, 2eps/3, eps, 0.4, 0.5, 0.6)
        limited to <= 1.
      convergence_iter: iterations of the doubled PGD (default 2x the suite's
        PGD); compared with the suite PGD's first restart.
      convergence_label: the suite PGD's label (default: the first white-box "pgd").
      tol_*: tolerances (fractions); zero_accuracy: the accuracy allowed at
        the largest eps.
      strict: raise `SanityCheckError` when a check fails.
    Returns the list of checks (dicts: name, passed, detail, values).
    """
    from tfdefense.attacks import get_attack

    x = check_images(x, "x", allow_tensor=False)
    y = check_labels(y, "y", num_examples=len(x))
    check_number("eps", eps, minimum=0, maximum=1)
    for argument, value in (("tol_single_step", tol_single_step), ("tol_monotonic", tol_monotonic),
                            ("zero_accuracy", zero_accuracy), ("tol_masking", tol_masking),
                            ("tol_convergence", tol_convergence)):
        check_number(argument, value, minimum=0, maximum=1)
    check_number("sweep_iter", sweep_iter, minimum=1, integer=True)
    if eps_grid is None:
        eps_grid = sorted({round(e, 6) for e in (eps / 3, 2 * eps / 3, eps, 0.4, 0.5, 0.6) if 0 < e <= 1})
    eps_grid = [float(check_number("eps_grid", e, minimum=0, maximum=1)) for e in eps_grid]
    if not eps_grid or max(eps_grid) < 0.5 or eps_grid != sorted(eps_grid):
        raise invalid_value("eps_grid", "increasing radii reaching at least 0.5", eps_grid)
    pgd_labels = [label for label, cfg in result.configs.items()
                  if cfg["attack"] == "pgd" and result.kinds[label] == "white-box"]

    # The extra attacks: accuracy vs eps ...
    sweep = {0.0: result.clean_accuracy}
    for k, e in enumerate(eps_grid):
        if e == 0:
            continue
        attack = get_attack("pgd", eps=e, eps_iter=min(2.5 * e / sweep_iter, e), nb_iter=sweep_iter, rand_init=True,
                            seed=seed + 100 + k)
        x_adv = np.concatenate([attack(model, x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        sweep[e] = float(np.mean(_predict(model, x_adv, 256) == y))
        if log is not None:
            log(f"sweep eps {e:.4f}: accuracy {sweep[e]:.4f}")
    result.extra["sweep"] = sweep

    # ... and twice the iterations of the suite's PGD (one restart).
    if convergence_label is None and pgd_labels:
        convergence_label = pgd_labels[0]
    if convergence_label is not None:
        params = dict(result.configs[convergence_label]["params"])
        n_iter = params.get("nb_iter", 40)
        doubled = 2 * n_iter if convergence_iter is None else check_number(
            "convergence_iter", convergence_iter, minimum=1, integer=True)
        params.update(nb_iter=doubled, seed=seed + 200)
        attack = get_attack("pgd", **params)
        x_adv = np.concatenate([attack(model, x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        correct = _predict(model, x_adv, 256) == y
        base = result.extra.get(convergence_label, {}).get("first_restart")
        base = base if base is not None else result.correct[convergence_label]
        result.extra["convergence"] = {"iterations": n_iter, "doubled_iterations": doubled,
                                       "base_correct": np.asarray(base), "doubled_correct": correct}
        # The doubled PGD is one more white-box attack of the per-example worst case.
        label = f"pgd-{doubled} (convergence)"
        result.correct[label] = correct
        result.kinds[label] = "white-box"
        result.configs[label] = {"attack": "pgd", "params": params, "kind": "white-box", "restarts": 1}
        if log is not None:
            log(f"convergence: PGD-{n_iter} {np.mean(base):.4f} -> PGD-{doubled} {np.mean(correct):.4f}")
    return check_outcomes(result, tol_single_step=tol_single_step, tol_monotonic=tol_monotonic,
                          zero_accuracy=zero_accuracy, tol_masking=tol_masking, tol_convergence=tol_convergence,
                          strict=strict)


def check_outcomes(result, tol_single_step=0.01, tol_monotonic=0.02, zero_accuracy=0.1, tol_masking=0.03,
                   tol_convergence=0.03, strict=False):
    """The sanity checks from a result alone (its attacks, `extra["sweep"]`, `extra["convergence"]`).

    `sanity_checks` runs the extra attacks and then this; results of several
    chunks of a data set merged with `merge_results` are checked with it.
    Stores the checks in `result.checks` and returns them.
    """
    checks = []
    acc = result.accuracies

    # 1. iterative beats single-step
    pgd_labels = [label for label, cfg in result.configs.items()
                  if cfg["attack"] == "pgd" and result.kinds[label] == "white-box"]
    single = [label for label, kind in result.kinds.items() if kind == "single-step"]
    if pgd_labels and single:
        it, ss = min(acc[label] for label in pgd_labels), min(acc[label] for label in single)
        checks.append(_check("iterative_beats_single_step", _at_most(it, ss + tol_single_step),
                             f"PGD accuracy {it:.4f} vs single-step {ss:.4f} (tolerance {tol_single_step})",
                             iterative=it, single_step=ss))

    # 2 + 3. accuracy vs eps
    sweep = result.extra.get("sweep")
    if sweep:
        radii = sorted(sweep)
        rises = [(a, b) for a, b in zip(radii, radii[1:]) if not _at_most(sweep[b], sweep[a] + tol_monotonic)]
        checks.append(_check("monotonic_in_eps", not rises,
                             "accuracy falls with eps" if not rises else "accuracy rises with eps: " + ", ".join(
                                 f"{sweep[a]:.3f}@{a:.3f} -> {sweep[b]:.3f}@{b:.3f}" for a, b in rises),
                             sweep={str(k): v for k, v in sweep.items()}))
        top = radii[-1]
        checks.append(_check("large_eps_near_zero", _at_most(sweep[top], zero_accuracy),
                             f"accuracy {sweep[top]:.4f} at eps {top} (allowed <= {zero_accuracy})",
                             eps=top, accuracy=sweep[top]))

    # 4 + 5. gradient-free / transfer must not beat white-box
    alive_white = result.clean.copy()
    for label, k in result.kinds.items():
        if k in ("white-box", "single-step"):
            alive_white &= result.correct[label]
    white = float(np.mean(alive_white)) if result.n else float("nan")
    for name, kind in (("gradient_free_not_better", "gradient-free"), ("transfer_not_better", "transfer")):
        labels = [label for label, k in result.kinds.items() if k == kind]
        if not labels:
            continue
        alive_other = result.clean.copy()
        for label in labels:
            alive_other &= result.correct[label]
        other = float(np.mean(alive_other))
        # Per example: broken by the black-box attack but by no white-box attack.
        only_other = float(np.mean(alive_white & ~alive_other))
        checks.append(_check(
            name, _at_most(white - other, tol_masking) and _at_most(only_other, tol_masking),
            f"{kind} accuracy {other:.4f} vs white-box worst case {white:.4f}; {only_other:.4f} of the examples broken "
            f"only by {kind} (tolerance {tol_masking})",
            white_box=white, other=other, only_other=only_other,
        ))

    # 6. convergence: twice the iterations
    conv = result.extra.get("convergence")
    if conv:
        base, doubled = float(np.mean(conv["base_correct"])), float(np.mean(conv["doubled_correct"]))
        checks.append(_check("convergence", _at_most(base - doubled, tol_convergence),
                             f"PGD-{conv['iterations']} (1 restart) {base:.4f} vs PGD-{conv['doubled_iterations']} "
                             f"{doubled:.4f} (tolerance {tol_convergence})", base=base, doubled=doubled))
    result.checks = checks
    if strict:
        result.raise_on_failure()
    return checks


def merge_results(results):
    """One `RobustnessResult` from several run on disjoint chunks of a data set (same suite).

    Per-example outcomes are concatenated; the eps sweep is averaged weighted
    by chunk size. Run `check_outcomes` on the merged result.
    """
    if not results:
        raise invalid_value("results", "a non-empty list of RobustnessResult", results)
    first = results[0]
    labels = list(first.correct)
    for r in results[1:]:
        if list(r.correct) != labels:
            raise invalid_value("results", f"results of the same attacks {labels}", list(r.correct))
    n = sum(r.n for r in results)
    merged = RobustnessResult(
        n=n, clean=np.concatenate([r.clean for r in results]),
        correct={label: np.concatenate([r.correct[label] for r in results]) for label in labels},
        kinds=dict(first.kinds), configs=dict(first.configs),
        seconds={label: sum(r.seconds.get(label, 0.0) for r in results) for label in labels},
    )
    if all("sweep" in r.extra for r in results):
        radii = sorted(first.extra["sweep"])
        merged.extra["sweep"] = {e: sum(r.extra["sweep"][e] * r.n for r in results) / n for e in radii}
    if all("convergence" in r.extra for r in results):
        conv = dict(first.extra["convergence"])
        for key in ("base_correct", "doubled_correct"):
            conv[key] = np.concatenate([r.extra["convergence"][key] for r in results])
        merged.extra["convergence"] = conv
    for label in labels:
        infos = [r.extra.get(label, {}) for r in results]
        if all(i.get("first_restart") is not None for i in infos):
            merged.extra[label] = {"first_restart": np.concatenate([i["first_restart"] for i in infos])}
    return merged
