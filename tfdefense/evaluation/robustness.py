"""A robustness evaluation a skeptical reviewer accepts (Carlini et al. 2019, https://arxiv.org/abs/1902.06705).

`robustness_suite(eps, norm=...)` lists the attacks; `evaluate_robustness(model,
x, y, suite, source=...)` runs them with the engine (`evaluation/engine.py`) and
keeps the per-example outcome. By default it follows AutoAttack's protocol for
the worst case: the attacks run in AutoAttack's order (APGD-CE, APGD-T, FAB-T,
Square, then the project's extra attacks), each only on the examples every
earlier attack failed to break; `per_attack=True` runs every attack on every
example (the per-attack table). `RobustnessResult.worst_case` is the
per-example worst case (an example counts as robust only if the model is right
on the clean image and under every attack); it is the same in both modes.
`sanity_checks(...)` runs the checks that catch a broken evaluation and returns
their outcomes; `SanityCheckError` is raised by
`RobustnessResult.raise_on_failure()` (or `sanity_checks(..., strict=True)`).

The default suite at eps (Linf; `norm="l2"`: the same attacks in L2, see `robustness_suite`):

| label | kind | what |
| --- | --- | --- |
| `fgsm` | single-step | one signed-gradient step of size eps through the whole model |
| `pgd-100x10` | white-box | PGD, 100 iterations, step 2.5 eps / 100, random start, 10 restarts (per example |
| | | the first restart that succeeds; later restarts run only on examples still robust) |
| `apgd-ce` | white-box | AutoAttack's APGD with cross-entropy, 100 iterations |
| `apgd-t` | white-box | AutoAttack's APGD-T: targeted DLR towards each of the 9 most likely wrong classes |
| `fab-t` | white-box | AutoAttack's FAB-T: targeted Fast Adaptive Boundary, 9 target classes x 100 iterations |
| `square-5000` | gradient-free | Square attack (score-based random search), 5000 queries |
| `transfer-pgd` | transfer | PGD-100 (10 restarts) crafted on the *undefended* classifier (`source=`), |
| | | evaluated on the model |

With the APGD components, FAB-T and Square, the suite holds every component of
the standard AutoAttack.

Sanity checks (`CHECK_NAMES`; each returns a verdict "passed", "failed" or "n
too small" with the numbers). The attacks of checks 1, 2, 3 and 6 run on a fixed
subsample of all images (`sanity_n`, default 200), never on the survivors of
another attack. A check fails only on a difference beyond its tolerance that at
least `MIN_IMAGES` (2) images support; a smaller one is reported as "n too small
to judge".

1. `iterative_beats_single_step`: accuracy under PGD <= accuracy under FGSM + tol.
2. `monotonic_in_eps`: PGD accuracy does not rise with eps (tol), over `eps_grid`.
3. `large_eps_near_zero`: at the largest eps of the grid (Linf >= 0.5, L2 >= 0.5 sqrt(d))
   accuracy <= `zero_accuracy` (Linf eps 0.5 lets the attacker set every pixel to 0.5).
4. `gradient_free_not_better`: the gradient-free attack does not break more than `tol_masking`
   of the examples that the white-box attacks left (gradient masking; AutoAttack's "Square
   better than the white-box attacks" flag).
5. `transfer_not_better`: nor does the transfer attack.
6. `convergence`: PGD with twice the iterations lowers accuracy by at most `tol_convergence`
   compared with the same PGD at the base iteration count (one restart each).

and the model flags of AutoAttack (its flags_doc.md):

7. `randomness`: the same input gives different outputs; then every gradient attack should
   average over EOT samples (AutoAttack's rand version); fails when none does, and lists the
   attacks that ran on single draws.
8. `softmax_output`: the attacked outputs are probabilities (in [0, 1], summing to 1) rather
   than logits; passes when they were attacked as log(probabilities).
9. `zero_gradients`: images of the subsample whose loss gradient w.r.t. the input is zero.
10. `model_unchanged`: the clean predictions after every attack are those before (a model
    that changes between calls, e.g. batch statistics updated at test time).
"""

import dataclasses
import itertools

import numpy as np

from tfdefense._validation import check_choice, check_images, check_labels, check_number, invalid_value
from tfdefense.evaluation.engine import KINDS, RobustnessResult, SanityCheckError, SuiteAttack, run_attack  # noqa: F401  (public here too)

NORMS = ("linf", "l2")
CHECK_NAMES = (
    "iterative_beats_single_step",
    "monotonic_in_eps",
    "large_eps_near_zero",
    "gradient_free_not_better",
    "transfer_not_better",
    "convergence",
    "randomness",
    "softmax_output",
    "zero_gradients",
    "model_unchanged",
)


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
    norm="linf",
):
    """The attack list of the reviewer-proof evaluation at radius `eps` in norm `norm`.

    Args:
      eps: radius in [0, 1] pixel units (Linf: at most 1; L2: the Euclidean
        length of the perturbation of [0, 1] images, e.g. 2.0 on MNIST, 0.5 on CIFAR-10).
      pgd_iter, pgd_restarts, pgd_step: white-box PGD (default step 2.5 eps / pgd_iter).
      apgd_iter, n_target_classes: AutoAttack's APGD components.
      square_queries: queries of the gradient-free Square attack (0: none).
      fab_iter: FAB-T iterations per target class (None: apgd_iter; 0: no FAB-T);
        its targets are the `n_target_classes` most likely wrong classes.
      transfer: include PGD crafted on the undefended classifier.
      transfer_iter, transfer_restarts: its settings (default: pgd_iter, pgd_restarts).
      autoattack: which APGD components ("apgd-ce", "apgd-dlr", "apgd-t"); () for none.
      seed: base seed (every attack gets its own).
      norm: "linf" or "l2"; "l2" gives every attack `norm=2` (AutoAttack's
        L2 version: APGD-CE, APGD-T, FAB-T, Square in L2, plus FGM, PGD and
        transfer PGD in L2).
    Returns a list of `SuiteAttack`.
    """
    check_choice("norm", norm, NORMS)
    check_number("eps", eps, minimum=0, maximum=1 if norm == "linf" else None)
    check_number("pgd_iter", pgd_iter, minimum=1, integer=True)
    check_number("pgd_restarts", pgd_restarts, minimum=1, integer=True)
    check_number("pgd_step", pgd_step, minimum=0, maximum=eps, allow_none=True)
    check_number("apgd_iter", apgd_iter, minimum=1, integer=True)
    check_number("n_target_classes", n_target_classes, minimum=1, integer=True)
    check_number("square_queries", square_queries, minimum=0, integer=True)
    fab_iter = apgd_iter if fab_iter is None else check_number("fab_iter", fab_iter, minimum=0, integer=True)
    check_number("seed", seed, minimum=0, integer=True)
    if not isinstance(autoattack, (list, tuple)) or any(c not in ("apgd-ce", "apgd-dlr", "apgd-t") for c in autoattack):
        raise invalid_value(
            "autoattack", "a list drawn from ['apgd-ce', 'apgd-dlr', 'apgd-t'] (FAB-T: fab_iter)", autoattack
        )
    step = 2.5 * eps / pgd_iter if pgd_step is None else float(pgd_step)
    step = min(step, eps)
    t_iter = (
        pgd_iter if transfer_iter is None else check_number("transfer_iter", transfer_iter, minimum=1, integer=True)
    )
    t_restarts = (
        pgd_restarts
        if transfer_restarts is None
        else check_number("transfer_restarts", transfer_restarts, minimum=1, integer=True)
    )
    suite = [
        SuiteAttack("fgsm", "fgsm", dict(eps=eps), "single-step"),
        SuiteAttack(
            f"pgd-{pgd_iter}x{pgd_restarts}",
            "pgd",
            dict(eps=eps, eps_iter=step, nb_iter=pgd_iter, rand_init=True, seed=seed + 1),
            "white-box",
            pgd_restarts,
        ),
    ]
    for k, component in enumerate(autoattack):
        if component == "apgd-t":
            params = dict(
                eps=eps, components=["apgd-t"], nb_iter=apgd_iter, n_target_classes=n_target_classes, seed=seed + 10 + k
            )
            suite.append(SuiteAttack("apgd-t", "autoattack", params, "white-box"))
        else:
            loss = "ce" if component == "apgd-ce" else "dlr"
            suite.append(
                SuiteAttack(
                    component, "apgd", dict(eps=eps, nb_iter=apgd_iter, loss=loss, seed=seed + 10 + k), "white-box"
                )
            )
    if fab_iter:
        suite.append(
            SuiteAttack(
                "fab-t",
                "fab_t",
                dict(eps=eps, nb_iter=fab_iter, n_target_classes=n_target_classes, seed=seed + 15),
                "white-box",
            )
        )
    if square_queries:
        suite.append(
            SuiteAttack(
                f"square-{square_queries}",
                "square",
                dict(eps=eps, nb_queries=square_queries, seed=seed + 20),
                "gradient-free",
            )
        )
    if transfer:
        t_step = min(2.5 * eps / t_iter, eps) if pgd_step is None else step
        suite.append(
            SuiteAttack(
                "transfer-pgd",
                "pgd",
                dict(eps=eps, eps_iter=t_step, nb_iter=t_iter, rand_init=True, seed=seed + 30),
                "transfer",
                t_restarts,
            )
        )
    if norm == "l2":
        suite = [dataclasses.replace(s, params={**s.params, "norm": 2}) for s in suite]
    return suite


def _predict(model, x, batch_size):
    from tfdefense.inference import predict_labels

    return predict_labels(model, x, batch_size)


def evaluate_robustness(
    model,
    x,
    y,
    suite,
    source=None,
    batch_size=500,
    log=None,
    strategy=None,
    every_example=False,
    per_attack=False,
    cache=None,
    progress=False,
):
    """Runs the attacks of `suite` over (x, y) with the engine (`engine.run_suite`); returns a `RobustnessResult`.

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
      per_attack: run every attack on every example the model classifies
        correctly (the per-attack table). False (default): AutoAttack's
        cascade, each attack (in AutoAttack's order) only on the examples
        every earlier attack failed to break; the same worst case for fewer
        attacks, and `result.correct[label]` is the robust outcome after that
        attack.
      cache: a step cache (`engine.StepCache`), None: none; progress: progress bars.
    """
    from tfdefense.evaluation import engine

    if not isinstance(per_attack, bool):
        raise invalid_value("per_attack", "True or False", per_attack)
    mode = "every_example" if every_example else ("per_attack" if per_attack else "cascade")
    return engine.run_suite(
        model,
        x,
        y,
        suite,
        source=source,
        mode=mode,
        batch_size=batch_size,
        strategy=strategy,
        cache=cache,
        log=log,
        progress=progress,
    )


# ----------------------------------------------------------------------------- sanity checks

# Accuracies are counts / n: a difference equal to a tolerance (0.76 - 0.73 = 0.030000000000000027) passes.
_SLACK = 1e-9
# A check fails only on a difference of at least this many images (and beyond its tolerance).
MIN_IMAGES = 2
SANITY_SIZE = 200
VERDICTS = ("passed", "failed", "n too small")


def _at_most(value, limit):
    return value <= limit + _SLACK


def _verdict(fraction, limit, count):
    """ "passed" when fraction <= limit; beyond it "failed" when `count` images support it, else "n too small"."""
    if _at_most(fraction, limit):
        return "passed"
    return "failed" if count >= MIN_IMAGES else "n too small"


def _check(name, verdict, detail, count=None, **values):
    if count is not None:
        values["count"] = count
    if verdict == "n too small":
        detail += f"; n too small to judge: the difference is {count} image(s), a failure needs at least {MIN_IMAGES}"
    return {"name": name, "passed": verdict != "failed", "verdict": verdict, "detail": detail, "values": values}


def default_eps_grid(eps, norm="linf", num_features=None):
    """The radii of the accuracy-vs-eps sweep: eps/3, 2eps/3, eps and radii where any model must fall.

    Linf: 0.4, 0.5, 0.6 (at 0.5 the attacker can set every pixel to 0.5). L2:
    2 eps and 0.5 sqrt(d) (d = `num_features`: the L2 distance within which
    every image of [0, 1]^d reaches the uniform 0.5 image).
    """
    if norm == "linf":
        radii = (eps / 3, 2 * eps / 3, eps, 0.4, 0.5, 0.6)
        return sorted({round(e, 6) for e in radii if 0 < e <= 1})
    large = 0.5 * np.sqrt(num_features)
    return sorted({round(e, 6) for e in (eps / 3, 2 * eps / 3, eps, 2 * eps, large) if 0 < e <= large})


def _large_radius(norm, num_features):
    return 0.5 if norm == "linf" else 0.5 * np.sqrt(num_features)


def _pgd_params(e, n_iter, seed, norm, eot_samples):
    params = dict(eps=e, eps_iter=min(2.5 * e / n_iter, e), nb_iter=n_iter, rand_init=True, seed=seed)
    if norm != "linf":
        params["norm"] = 2
    if eot_samples > 1:
        params["eot_samples"] = eot_samples
    return params


def _norm_of(params):
    return "linf" if params.get("norm", "inf") in ("inf", "linf", np.inf) else "l2"


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
    *,
    sanity_n=SANITY_SIZE,
    norm="linf",
    eot_samples=None,
    attack_precision="fp32",
    stochastic=None,
    probabilities_handled=False,
    cache=None,
    strategy=None,
    progress=False,
):
    """Runs the sanity checks on a `RobustnessResult` of `model`; stores and returns them.

    The checks that must be able to fail run their own attacks on a fixed
    subsample of *all* images (`sanity_n`, default 200; never the survivors of
    another attack), through the engine: PGD-`sweep_iter` at every radius of
    `eps_grid`, the suite's PGD with one restart and with twice its
    iterations (convergence), and the suite's single-step attacks. Then the
    model checks of AutoAttack's flags (randomness, softmax output, zero
    gradients, a model that changes between calls) and `check_outcomes`.

    Args:
      model, x, y: what `result` was measured on.
      eps: the evaluation radius.
      eps_grid: radii of the accuracy-vs-eps sweep (PGD-`sweep_iter`, one
        restart); must reach the large radius (Linf 0.5). None: `default_eps_grid`.
      convergence_iter: iterations of the doubled PGD (default 2x the suite's PGD).
      convergence_label: the suite PGD's label (default: the first white-box "pgd";
        without one, PGD-`sweep_iter` at eps).
      tol_*: tolerances (fractions); zero_accuracy: the accuracy allowed at
        the largest eps. A check fails only on a difference beyond its
        tolerance that at least `MIN_IMAGES` images support; below that its
        verdict is "n too small".
      strict: raise `SanityCheckError` when a check fails.
      sanity_n: size of the fixed subsample; norm: "linf" or "l2".
      eot_samples: EOT samples of the sanity attacks (None: those of the suite's PGD, else 1).
      attack_precision: "fp32" or "bf16" (`engine.with_attack_precision`) for the checks' attacks.
      stochastic: whether the pipeline is stochastic (None: measured here).
      probabilities_handled: the model outputs log-probabilities made from a
        probability output (evaluate_model's wrapping): the softmax check passes.
      cache, strategy, progress: as in `engine.run_suite`.
    Returns the list of checks (dicts: name, passed, verdict, detail, values).
    """
    from tfdefense.evaluation import engine

    x = check_images(x, "x", allow_tensor=False)
    y = check_labels(y, "y", num_examples=len(x))
    check_choice("norm", norm, NORMS)
    check_number("eps", eps, minimum=0, maximum=None if norm == "l2" else 1)
    tolerances = {
        "tol_single_step": tol_single_step,
        "tol_monotonic": tol_monotonic,
        "zero_accuracy": zero_accuracy,
        "tol_masking": tol_masking,
        "tol_convergence": tol_convergence,
    }
    for argument, value in tolerances.items():
        check_number(argument, value, minimum=0, maximum=1)
    check_number("sweep_iter", sweep_iter, minimum=1, integer=True)
    check_number("sanity_n", sanity_n, minimum=1, integer=True)
    check_number("convergence_iter", convergence_iter, minimum=1, integer=True, allow_none=True)
    eps_grid = check_eps_grid(eps_grid, eps, norm, int(np.prod(x.shape[1:])))
    plan = _sanity_plan(result, eps, eps_grid, sweep_iter, convergence_iter, convergence_label, seed, norm, eot_samples)
    idx = engine.sanity_subsample(len(x), sanity_n, seed)
    specs, _ = engine.with_attack_precision(plan["specs"], attack_precision)
    sub = engine.run_suite(
        model,
        x[idx],
        y[idx],
        specs,
        mode="per_attack",
        batch_size=batch_size,
        strategy=strategy,
        cache=cache,
        log=log,
        progress=progress,
        step_prefix="sanity ",
        step_config={"subsample": engine.mask_digest(np.isin(np.arange(len(x)), idx))},
    )
    _record_sanity(result, sub, plan, idx, log)
    result.extra["model_checks"] = model_checks(
        model, x, y, result, x[idx], y[idx], stochastic=stochastic, probabilities_handled=probabilities_handled
    )
    return check_outcomes(result, strict=strict, **tolerances)


def _sanity_plan(result, eps, eps_grid, sweep_iter, convergence_iter, convergence_label, seed, norm, eot_samples):
    """The attacks of the checks: PGD at every radius, the suite's PGD once and doubled, the single-step ones."""
    if convergence_label is None:
        convergence_label = next(
            (
                label
                for label, cfg in result.configs.items()
                if cfg["attack"] == "pgd" and result.kinds[label] == "white-box" and not label.endswith("(convergence)")
            ),
            None,
        )
    base = dict(result.configs[convergence_label]["params"]) if convergence_label is not None else None
    if eot_samples is None:
        eot_samples = base.get("eot_samples", 1) if base is not None else 1
    specs, sweep_labels = [], {}
    for k, e in enumerate(eps_grid):
        if e == 0:
            continue
        params = _pgd_params(e, sweep_iter, seed + 100 + k, norm, eot_samples)
        same = ("nb_iter", "eps_iter")
        if base is not None and np.isclose(e, base["eps"]) and all(base.get(key) == params[key] for key in same):
            params = dict(base)  # the sweep's point at eps is the convergence run's base
        sweep_labels[e] = f"pgd-{params['nb_iter']} eps {e:.4g}"
        specs.append(SuiteAttack(sweep_labels[e], "pgd", params, "white-box"))
    if base is None:
        base = _pgd_params(eps, sweep_iter, seed + 150, norm, eot_samples)
    n_iter = base.get("nb_iter", 40)
    doubled = 2 * n_iter if convergence_iter is None else int(convergence_iter)
    base_label = next((spec.label for spec in specs if spec.params == base), None)
    if base_label is None:
        base_label = f"pgd-{n_iter} (convergence base)"
        specs.append(SuiteAttack(base_label, "pgd", base, "white-box"))
    doubled_label = f"pgd-{doubled} (convergence)"
    specs.append(SuiteAttack(doubled_label, "pgd", dict(base, nb_iter=doubled, seed=seed + 200), "white-box"))
    single = [label for label, kind in result.kinds.items() if kind == "single-step"]
    for label in single:
        cfg = result.configs[label]
        specs.append(SuiteAttack(f"{label} (sanity)", cfg["attack"], cfg["params"], "single-step"))
    return {
        "specs": specs,
        "sweep_labels": sweep_labels,
        "base_label": base_label,
        "doubled_label": doubled_label,
        "iterations": n_iter,
        "doubled": doubled,
        "single": single,
    }


def _record_sanity(result, sub, plan, idx, log):
    """Stores the subsample's outcomes in `result.extra`; the doubled PGD joins the worst case."""
    m, n = len(idx), result.n
    base_label, doubled_label = plan["base_label"], plan["doubled_label"]
    sweep = {0.0: float(np.mean(sub.clean))}
    for e, label in plan["sweep_labels"].items():
        sweep[e] = sub.accuracy(label)
        if log is not None:
            log(f"sweep eps {e:.4g}: accuracy {sweep[e]:.4f} ({m} images)")
    result.extra["sweep"] = sweep
    result.extra["sanity_subsample"] = idx
    result.extra["convergence"] = {
        "iterations": plan["iterations"],
        "doubled_iterations": plan["doubled"],
        "base_correct": sub.correct[base_label],
        "doubled_correct": sub.correct[doubled_label],
    }
    result.extra["single_step"] = {
        "iterative": sub.correct[base_label],
        "single_step": {label: sub.correct[f"{label} (sanity)"] for label in plan["single"]},
    }
    if log is not None:
        log(
            f"convergence: PGD-{plan['iterations']} {sub.accuracy(base_label):.4f} -> PGD-{plan['doubled']} "
            f"{sub.accuracy(doubled_label):.4f} ({m} images)"
        )
    # The doubled PGD is one more white-box attack of the per-example worst case (on the subsample).
    broken = np.zeros(n, bool)
    broken[idx] = sub.attacked[doubled_label] & ~sub.correct[doubled_label]
    before = result.clean.copy()
    if result.mode == "cascade":
        for outcome in result.correct.values():
            before &= outcome
    result.correct[doubled_label] = before & ~broken
    result.attacked[doubled_label] = np.isin(np.arange(n), idx[sub.attacked[doubled_label]])
    result.kinds[doubled_label] = "white-box"
    config = sub.configs[doubled_label]
    result.configs[doubled_label] = {**config, "subsample": m}
    result.seconds.update(
        {
            label if label.endswith("(sanity)") else f"{label} (sanity)": sec
            for label, sec in sub.seconds.items()
            if label != doubled_label
        }
    )
    result.seconds[doubled_label] = sub.seconds[doubled_label]


def check_eps_grid(eps_grid, eps, norm="linf", num_features=None):
    """`eps_grid` checked (None: `default_eps_grid`): increasing radii reaching the large radius."""
    if eps_grid is None:
        return default_eps_grid(eps, norm, num_features)
    large = _large_radius(norm, num_features) if num_features else 0.5
    top = None if norm == "l2" else 1
    grid = [float(check_number("eps_grid", e, minimum=0, maximum=top)) for e in eps_grid]
    if not grid or max(grid) < large - 1e-6 or grid != sorted(grid):
        raise invalid_value("eps_grid", f"increasing radii reaching at least {large:.4g}", eps_grid)
    return grid


def model_checks(model, x, y, result, xs, ys, stochastic=None, probabilities_handled=False, probe=64):
    """The numbers behind AutoAttack's model flags; `check_outcomes` judges them.

    randomness: the pipeline gives different outputs for the same input (two
    calls on `probe` subsample images); the gradient attacks that ran on
    single draws (no `eot_samples` > 1). softmax: the outputs are in [0, 1]
    and sum to 1. zero gradients: subsample images whose cross-entropy
    gradient w.r.t. the input is zero. model changes: images whose clean
    prediction now differs from the one at the start (`result.clean`).
    """
    import tensorflow as tf

    from tfdefense.inference import call_model

    first = np.asarray(call_model(model, xs[:probe]))
    if stochastic is None:
        stochastic = not np.allclose(first, np.asarray(call_model(model, xs[:probe])), rtol=1e-5, atol=1e-5)
    gradient_kinds = ("white-box", "single-step")
    gradient = [label for label, cfg in result.configs.items() if result.kinds[label] in gradient_kinds]
    single_draw = [label for label in gradient if result.configs[label].get("params", {}).get("eot_samples", 1) <= 1]
    probabilities = bool(
        first.min() >= -1e-6 and first.max() <= 1 + 1e-6 and np.allclose(first.sum(axis=-1), 1.0, atol=1e-3)
    )
    zero = 0
    for i in range(0, len(xs), 128):
        images = tf.constant(xs[i : i + 128])
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.constant(ys[i : i + 128]), call_model(model, images)
            )
        grad = tape.gradient(loss, images, unconnected_gradients=tf.UnconnectedGradients.ZERO).numpy()
        zero += int(np.sum(~np.any(grad.reshape(len(grad), -1) != 0, axis=1)))
    clean_now = _predict(model, x, 256) == y
    changed = int(np.sum(clean_now != result.clean)) if result.clean is not None else 0
    return {
        "stochastic": bool(stochastic),
        "single_draw": single_draw,
        "eot_attacks": len(gradient) - len(single_draw),
        "probabilities": probabilities,
        "probabilities_handled": bool(probabilities_handled),
        "zero_gradients": zero,
        "gradient_images": len(xs),
        "changed": changed,
        "changed_images": len(x),
        "clean_before": float(np.mean(result.clean)) if result.clean is not None else None,
        "clean_after": float(np.mean(clean_now)),
    }


def check_outcomes(
    result,
    tol_single_step=0.01,
    tol_monotonic=0.02,
    zero_accuracy=0.1,
    tol_masking=0.03,
    tol_convergence=0.03,
    strict=False,
    tol_zero_gradients=0.03,
    tol_changes=0.01,
):
    """The sanity checks from a result alone (its attacks and what `sanity_checks` stored in `extra`).

    `sanity_checks` runs the extra attacks and then this; results of several
    chunks of a data set merged with `merge_results` are checked with it.
    Every check judges with the sample size in mind (`MIN_IMAGES`). Stores
    the checks in `result.checks` and returns them (see `CHECK_NAMES`).
    """
    checks = _single_step_check(result, tol_single_step)
    checks += _sweep_checks(result, tol_monotonic, zero_accuracy)
    for name, kind in (("gradient_free_not_better", "gradient-free"), ("transfer_not_better", "transfer")):
        labels = [label for label, k in result.kinds.items() if k == kind]
        if labels:
            checks.append(_masking_check(result, name, kind, labels, tol_masking))
    checks += _convergence_check(result, tol_convergence)
    if result.extra.get("model_checks"):
        checks += _model_flag_checks(result.extra["model_checks"], tol_zero_gradients, tol_changes)
    result.checks = checks
    if strict:
        result.raise_on_failure()
    return checks


def _single_step_check(result, tol_single_step):
    """Check 1 on the sanity subsample (else on the per-attack outcomes)."""
    pgd_labels = [
        label for label, cfg in result.configs.items() if cfg["attack"] == "pgd" and result.kinds[label] == "white-box"
    ]
    single = [label for label, kind in result.kinds.items() if kind == "single-step"]
    pairs = None
    if result.extra.get("single_step") and result.extra["single_step"]["single_step"]:
        it_correct = result.extra["single_step"]["iterative"]
        pairs = [(it_correct, ss) for ss in result.extra["single_step"]["single_step"].values()]
    elif pgd_labels and single and result.mode != "cascade":
        pairs = [(result.correct[p], result.correct[s]) for p in pgd_labels for s in single]
    if not pairs:
        return []
    it_correct, ss_correct = min(pairs, key=lambda pair: np.mean(pair[1]) - np.mean(pair[0]))
    m = len(it_correct)
    it, ss = float(np.mean(it_correct)), float(np.mean(ss_correct))
    count = int(it_correct.sum()) - int(ss_correct.sum())
    return [
        _check(
            "iterative_beats_single_step",
            _verdict(it - ss, tol_single_step, count),
            f"PGD accuracy {it:.4f} vs single-step {ss:.4f} on {m} images (tolerance {tol_single_step})",
            count=count,
            iterative=it,
            single_step=ss,
            n=m,
        )
    ]


def _sweep_checks(result, tol_monotonic, zero_accuracy):
    """Checks 2 and 3 from the accuracy-vs-eps sweep."""
    sweep = result.extra.get("sweep")
    if not sweep:
        return []
    subsample = result.extra.get("sanity_subsample")
    m = len(subsample) if subsample is not None else result.n
    radii = sorted(sweep)
    rises = [(a, b) for a, b in itertools.pairwise(radii) if not _at_most(sweep[b], sweep[a] + tol_monotonic)]
    counts = {pair: round((sweep[pair[1]] - sweep[pair[0]]) * m) for pair in rises}
    verdict, count = "passed", None
    if rises:
        count = max(counts.values())
        verdict = "failed" if count >= MIN_IMAGES else "n too small"
    detail = (
        "accuracy falls with eps"
        if not rises
        else "accuracy rises with eps: "
        + ", ".join(f"{sweep[a]:.3f}@{a:.4g} -> {sweep[b]:.3f}@{b:.4g}" for a, b in rises)
    )
    checks = [
        _check(
            "monotonic_in_eps",
            verdict,
            f"{detail} ({m} images)",
            count=count,
            sweep={str(k): v for k, v in sweep.items()},
            n=m,
        )
    ]
    top = radii[-1]
    survivors = round(sweep[top] * m)
    checks.append(
        _check(
            "large_eps_near_zero",
            _verdict(sweep[top], zero_accuracy, survivors),
            f"accuracy {sweep[top]:.4f} at eps {top:.4g} (allowed <= {zero_accuracy}; {m} images)",
            count=survivors,
            eps=top,
            accuracy=sweep[top],
            n=m,
        )
    )
    return checks


def _convergence_check(result, tol_convergence):
    """Check 6: PGD with twice the iterations against the base PGD (one restart each)."""
    conv = result.extra.get("convergence")
    if not conv:
        return []
    base_c, doubled_c = np.asarray(conv["base_correct"]), np.asarray(conv["doubled_correct"])
    base, doubled = float(np.mean(base_c)), float(np.mean(doubled_c))
    count = int(base_c.sum()) - int(doubled_c.sum())
    return [
        _check(
            "convergence",
            _verdict(base - doubled, tol_convergence, count),
            f"PGD-{conv['iterations']} (1 restart) {base:.4f} vs PGD-{conv['doubled_iterations']} "
            f"{doubled:.4f} on {len(base_c)} images (tolerance {tol_convergence})",
            count=count,
            base=base,
            doubled=doubled,
            n=len(base_c),
        )
    ]


def _masking_check(result, name, kind, labels, tol):
    """Images broken by the `kind` attacks but by no white-box attack (gradient masking)."""
    if result.mode == "cascade":
        # Each ran on the images every earlier attack left: what it broke, no earlier attack broke.
        only = np.zeros(result.n, bool)
        for label in labels:
            only |= result.attacked[label] & ~_own_outcome(result, label)
        earlier = [
            lab for lab in result.correct if lab not in labels and result.kinds[lab] in ("white-box", "single-step")
        ]
        earlier = [lab for lab in earlier if list(result.correct).index(lab) < list(result.correct).index(labels[0])]
        count = int(only.sum())
        fraction = count / result.n if result.n else 0.0
        return _check(
            name,
            _verdict(fraction, tol, count),
            f"{kind} attacks broke {count} of {result.n} images ({fraction:.4f}) that the white-box attacks "
            f"before them ({', '.join(earlier) or 'none'}) left (tolerance {tol})",
            count=count,
            only_other=fraction,
            n=result.n,
        )
    alive_white = result.clean.copy()
    for label, k in result.kinds.items():
        if k in ("white-box", "single-step"):
            alive_white &= result.correct[label]
    alive_other = result.clean.copy()
    for label in labels:
        alive_other &= result.correct[label]
    white, other = float(np.mean(alive_white)), float(np.mean(alive_other))
    only = alive_white & ~alive_other
    count = int(only.sum())
    only_other = count / result.n if result.n else 0.0
    verdict = _verdict(max(white - other, only_other), tol, count)
    return _check(
        name,
        verdict,
        f"{kind} accuracy {other:.4f} vs white-box worst case {white:.4f}; {only_other:.4f} of the examples "
        f"broken only by {kind} (tolerance {tol})",
        count=count,
        white_box=white,
        other=other,
        only_other=only_other,
        n=result.n,
    )


def _own_outcome(result, label):
    """Per example, the model right under `label`'s images (where it ran)."""
    correct = result.correct[label]
    if result.mode != "cascade":
        return correct
    return correct | ~result.attacked[label]


def _model_flag_checks(flags, tol_zero_gradients, tol_changes):
    checks = []
    single = flags["single_draw"]
    if not flags["stochastic"]:
        verdict, detail = "passed", "deterministic: the same input gives the same outputs"
    elif single and not flags["eot_attacks"]:
        verdict = "failed"
        detail = f"stochastic pipeline and every gradient attack ran on single draws (no EOT): {', '.join(single)}"
    else:
        verdict = "passed"
        detail = "stochastic pipeline (AutoAttack's rand version): " + (
            f"attacks on single draws (no EOT): {', '.join(single)}"
            if single
            else "every gradient attack averages over EOT samples"
        )
    checks.append(_check("randomness", verdict, detail, stochastic=flags["stochastic"], single_draw=list(single)))

    if not flags["probabilities"]:
        verdict, detail = "passed", "the outputs are logits (not in [0, 1] summing to 1)"
    elif flags["probabilities_handled"]:
        verdict, detail = "passed", "the classifier outputs probabilities; the attacks used log(probabilities)"
    else:
        verdict, detail = (
            "failed",
            (
                "the model outputs probabilities (in [0, 1], summing to 1): cross-entropy and "
                "DLR on them saturate; attack the logits (or log(probabilities))"
            ),
        )
    checks.append(_check("softmax_output", verdict, detail, probabilities=flags["probabilities"]))

    zero, m = flags["zero_gradients"], flags["gradient_images"]
    fraction = zero / m if m else 0.0
    checks.append(
        _check(
            "zero_gradients",
            _verdict(fraction, tol_zero_gradients, zero),
            f"{zero} of {m} images have a zero input gradient of the loss ({fraction:.4f}; tolerance "
            f"{tol_zero_gradients})",
            count=zero,
            fraction=fraction,
            n=m,
        )
    )

    changed, n = flags["changed"], flags["changed_images"]
    fraction = changed / n if n else 0.0
    limit = tol_changes
    if flags["stochastic"]:  # a fresh draw: judge the accuracy, beyond 3 standard deviations of two draws' difference
        before, after = flags["clean_before"] or 0.0, flags["clean_after"] or 0.0
        fraction = abs(after - before)
        changed = round(fraction * n)
        limit = max(tol_changes, 3.0 * float(np.sqrt(2.0 * before * (1.0 - before) / max(n, 1))))
    checks.append(
        _check(
            "model_unchanged",
            _verdict(fraction, limit, changed),
            f"clean accuracy {flags['clean_before']:.4f} before the attacks, {flags['clean_after']:.4f} "
            f"after; {flags['changed']} of {n} predictions changed (tolerance {limit:.4g})",
            count=changed,
            changed=flags["changed"],
            n=n,
        )
    )
    return checks


def merge_results(results):
    """One `RobustnessResult` from several run on disjoint chunks of a data set (same suite and mode).

    Per-example outcomes are concatenated; the eps sweep is averaged weighted
    by the size of each chunk's sanity subsample, the model checks' counts
    are summed. Run `check_outcomes` on the merged result.
    """
    if not results:
        raise invalid_value("results", "a non-empty list of RobustnessResult", results)
    first = results[0]
    labels = list(first.correct)
    for r in results[1:]:
        if list(r.correct) != labels or r.mode != first.mode:
            raise invalid_value(
                "results",
                f"results of the same attacks {labels} in mode {first.mode!r}",
                f"{list(r.correct)} in mode {r.mode!r}",
            )
    n = sum(r.n for r in results)
    merged = RobustnessResult(
        n=n,
        clean=np.concatenate([r.clean for r in results]),
        correct={label: np.concatenate([r.correct[label] for r in results]) for label in labels},
        kinds=dict(first.kinds),
        configs=dict(first.configs),
        seconds={label: sum(r.seconds.get(label, 0.0) for r in results) for label in labels},
        mode=first.mode,
    )
    if all(label in r.attacked for r in results for label in labels):
        merged.attacked = {label: np.concatenate([r.attacked[label] for r in results]) for label in labels}
    sizes = [len(r.extra["sanity_subsample"]) if r.extra.get("sanity_subsample") is not None else r.n for r in results]
    if all("sweep" in r.extra for r in results):
        radii = sorted(first.extra["sweep"])
        merged.extra["sweep"] = {
            e: sum(r.extra["sweep"][e] * m for r, m in zip(results, sizes, strict=True)) / sum(sizes) for e in radii
        }
        offsets = np.cumsum([0] + [r.n for r in results[:-1]])
        if all(r.extra.get("sanity_subsample") is not None for r in results):
            merged.extra["sanity_subsample"] = np.concatenate(
                [np.asarray(r.extra["sanity_subsample"]) + o for r, o in zip(results, offsets, strict=True)]
            )
    if all("convergence" in r.extra for r in results):
        conv = dict(first.extra["convergence"])
        for key in ("base_correct", "doubled_correct"):
            conv[key] = np.concatenate([r.extra["convergence"][key] for r in results])
        merged.extra["convergence"] = conv
    if all("single_step" in r.extra for r in results):
        merged.extra["single_step"] = {
            "iterative": np.concatenate([r.extra["single_step"]["iterative"] for r in results]),
            "single_step": {
                label: np.concatenate([r.extra["single_step"]["single_step"][label] for r in results])
                for label in first.extra["single_step"]["single_step"]
            },
        }
    if all("model_checks" in r.extra for r in results):
        flags = [r.extra["model_checks"] for r in results]
        merged.extra["model_checks"] = {
            **flags[0],
            "stochastic": any(f["stochastic"] for f in flags),
            "probabilities": any(f["probabilities"] for f in flags),
            **{
                key: sum(f[key] for f in flags)
                for key in ("zero_gradients", "gradient_images", "changed", "changed_images")
            },
            **{
                key: sum(f[key] * r.n for f, r in zip(flags, results, strict=True)) / n
                for key in ("clean_before", "clean_after")
                if all(f[key] is not None for f in flags)
            },
        }
    for label in labels:
        infos = [r.extra.get(label, {}) for r in results]
        if all(i.get("first_restart") is not None for i in infos):
            merged.extra[label] = {"first_restart": np.concatenate([i["first_restart"] for i in infos])}
    return merged
