"""Evaluate a user's own classifier (and purifier) the way a skeptical reviewer asks.

`evaluate_model(classifier, dataset, eps, purifier=None, ...)` runs the attack
suite of `tfdefense.evaluation.robustness` on `classifier(purifier(x))`, end to
end, plus the sanity checks, and returns an `EvaluationResult`: accuracy per
attack, the per-example worst case, the check verdicts and the choices it made.
With `out=` it writes report.md, results.json (the presets' schema), results.csv,
per_example.csv and plots; every attack is a cached step (`Run.step`), so a
rerun with the same models, data and settings reuses the finished attacks.

Before any attack it inspects the models on a probe batch and either fixes what
a careless evaluation gets wrong or stops with an error naming the fix:

- purifier output shape != input shape, labels >= the number of model outputs,
  NaN / inf outputs: `ValueError` before any attack;
- inputs apparently expected in [0, 255] or [-1, 1] (clean accuracy near
  chance on [0, 1] images, recovered on rescaled ones): `ValueError` naming
  the `Rescaling` layer to put in front;
- probabilities instead of logits (outputs in [0, 1] summing to 1): attacks
  see `log(p)`; the report says so;
- stochastic pipeline (the same input gives different outputs): gradient
  attacks average `eot_samples` gradients (EOT); the report gives the number;
- purifier without a useful gradient (None or all zeros): attacked through
  BPDA with an identity backward pass; the report flags it.

A purifier whose gradient is present but useless (vanishing, saturated) is not
detectable this way: that is what the sanity checks are for.

`load_user_model(path)` loads what the CLI receives: a `.keras` file (safe
mode), a SavedModel folder (a named or the serving signature) or a
`tfdefense.export` export (its `classify` / `purify` functions), wrapped as a
Keras model that attacks can differentiate through.
"""

import dataclasses
import pathlib
import tempfile
import time

import numpy as np

from tfdefense._io import write_json, write_text
from tfdefense._validation import check_choice, check_number, invalid_value
from tfdefense.evaluation.engine import ATTACK_PRECISIONS, with_attack_precision, with_params
from tfdefense.evaluation.metrics import wilson_interval
from tfdefense.evaluation.robustness import NORMS
from tfdefense.evaluation.user_inputs import (  # noqa: F401  (load_user_model, resolve_purifier: public here too)
    call_model,
    load_evaluation_data,
    load_user_model,
    model_image_shape,
    pipeline_class,
    resolve_purifier,
    user_model_fingerprint,
    with_input_range,
)

SUITES = ("standard", "quick")
# The robust preset's quick attack set; "standard" is `robustness_suite(eps)` as published.
QUICK_SUITE = dict(pgd_iter=50, pgd_restarts=3, apgd_iter=50, n_target_classes=3, square_queries=1000)
SWEEP_ITER = {"standard": 100, "quick": 20, "custom": 40}
DEFAULT_EOT_SAMPLES = 8
PROBE_SIZE = 256
TABLE = "Accuracy under attack (per attack and per-example worst case)"
SWEEP_TABLE = "Accuracy vs eps (white-box PGD, one restart)"
TIMING_TABLE = "Time per step"


# ----------------------------------------------------------------------------- inspection


def _finite(values):
    return bool(np.all(np.isfinite(values)))


def _probe_outputs(model, x, argument, batch_size):
    outs = [np.asarray(call_model(model, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    out = np.concatenate(outs)
    if not _finite(out):
        bad = int(np.sum(~np.all(np.isfinite(out.reshape(len(out), -1)), axis=1)))
        raise invalid_value(
            argument,
            "a model with finite outputs on the clean images",
            f"NaN or inf outputs on {bad} of {len(x)} probe images",
        )
    return out


_RANGE_NAMES = {"[0, 255]": "0-255", "[-1, 1]": "-1-1"}  # the input_range values of `with_input_range`


def _check_range(classifier, x, y, num_classes, batch_size):
    """Raises when the classifier looks like it expects [0, 255] or [-1, 1] inputs.

    The sign: clean accuracy on the [0, 1] images near chance (or well below
    what it should be), and at least 0.5 and 0.3 higher on the same images
    rescaled to the other range.
    """
    chance = 1.0 / num_classes
    base = float(np.mean(_probe_outputs(classifier, x, "classifier", batch_size).argmax(-1) == y))
    if base + 0.3 > 1.0:  # nothing to recover
        return base
    # The milder rescaling first: a ReLU net meant for [-1, 1] often also recovers on [0, 255].
    fixes = {
        "[-1, 1]": (x * 2.0 - 1.0, "keras.layers.Rescaling(2.0, offset=-1.0)"),
        "[0, 255]": (x * 255.0, "keras.layers.Rescaling(255.0)"),
    }
    recovered = {}
    for scale, (scaled, layer) in fixes.items():
        acc = float(np.mean(np.asarray(call_model(classifier, scaled)).argmax(-1) == y))
        if acc >= 0.5 and acc >= base + 0.3:
            recovered[scale] = (acc, layer)
    if recovered:
        best = max(acc for acc, _ in recovered.values())
        scale = next(s for s, (acc, _) in recovered.items() if acc >= best - 0.02)
        acc, layer = recovered[scale]
        others = "".join(f" (on {s}: {a:.3f})" for s, (a, _) in recovered.items() if s != scale)
        raise ValueError(
            f"Invalid value received for argument `classifier`. Expected a model taking images in [0, 1] "
            f"(tfdefense's convention: eps and every attack work in [0, 1] units). Received: a model with clean "
            f"accuracy {base:.3f} on [0, 1] images (chance {chance:.2f}) and {acc:.3f} on the same images scaled "
            f"to {scale}{others}: it expects inputs in {scale}. Fix: evaluate_model(..., "
            f"input_range={_RANGE_NAMES[scale]!r}) (CLI: --input-range={_RANGE_NAMES[scale]}) rescales the [0, 1] "
            f"images in front of the model, eps staying in [0, 1] units; or put the scaling inside the model, e.g. "
            f"`keras.Sequential([keras.Input({tuple(x.shape[1:])}), {layer}, classifier])`, save it, "
            f"and evaluate that model."
        )
    return base


def _is_probabilities(outputs):
    return bool(
        outputs.min() >= -1e-6 and outputs.max() <= 1 + 1e-6 and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3)
    )


def _is_stochastic(model, x, rounds=2):
    first = np.asarray(call_model(model, x))
    for _ in range(rounds):
        again = np.asarray(call_model(model, x))
        if not np.allclose(first, again, rtol=1e-5, atol=1e-5):
            return True
    return False


def _input_gradient(fn, x, seed=0):
    """Gradient of a random projection of fn(x) w.r.t. x (None when disconnected or undefined)."""
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.cast(fn(x), tf.float32)
        weights = tf.random.stateless_normal(tf.shape(out), seed=[seed, 1])
        objective = tf.reduce_sum(out * weights)
    try:
        grad = tape.gradient(objective, x)
    except LookupError:  # an op without a registered gradient
        return None
    return None if grad is None else grad.numpy()


def inspect_models(classifier, purifier, x, y, batch_size=128, eot_samples=None):
    """The checks run before any attack; returns the choices (dict) and notes (list of str).

    Raises ValueError for: a purifier changing the image shape or returning
    NaN / inf, a classifier returning NaN / inf or fewer outputs than the
    labels need, inputs expected in [0, 255] or [-1, 1], a classifier without
    any gradient w.r.t. its input.
    """
    probe_x, probe_y = x[:PROBE_SIZE], y[:PROBE_SIZE]
    notes = []
    choices = {
        "purifier": purifier is not None,
        "probabilities": False,
        "stochastic": False,
        "eot_samples": 1,
        "bpda": False,
        "bpda_reason": None,
    }

    _inspect_outputs(classifier, purifier, probe_x, probe_y, y, batch_size, choices, notes)
    _inspect_randomness(classifier, purifier, probe_x[:32], eot_samples, choices, notes)
    _inspect_gradients(classifier, purifier, probe_x[:16], choices, notes)
    return choices, notes


def _inspect_outputs(classifier, purifier, probe_x, probe_y, y, batch_size, choices, notes):
    """Shapes, finite outputs, label range, input range, probabilities."""
    purified = probe_x
    if purifier is not None:
        small = probe_x[:8]
        out = np.asarray(call_model(purifier, small))
        if out.shape != small.shape:
            raise invalid_value(
                "purifier",
                f"a model returning images of the input's shape {small.shape[1:]}",
                f"a model returning shape {out.shape[1:]} for images of shape {small.shape[1:]}",
            )
        purified = _probe_outputs(purifier, probe_x, "purifier", batch_size).astype(np.float32)
        if purified.min() < -1e-3 or purified.max() > 1 + 1e-3:
            notes.append(
                f"The purifier's outputs leave [0, 1] (range [{purified.min():.3f}, {purified.max():.3f}]); "
                "they are passed to the classifier as they are."
            )
    outputs = _probe_outputs(classifier, probe_x, "classifier", batch_size)
    if outputs.ndim != 2:
        raise invalid_value(
            "classifier",
            "a model returning one score vector per image (N, classes)",
            f"outputs of shape {outputs.shape}",
        )
    num_classes = outputs.shape[1]
    if y.max() >= num_classes or y.min() < 0:
        raise invalid_value(
            "y",
            f"labels in [0, {num_classes - 1}] (the classifier has {num_classes} outputs)",
            f"labels in [{y.min()}, {y.max()}]",
        )
    choices["num_classes"] = int(num_classes)
    if purifier is not None:
        _probe_outputs(classifier, purified, "classifier", batch_size)
    choices["clean_accuracy_probe"] = _check_range(classifier, probe_x, probe_y, num_classes, batch_size)
    if _is_probabilities(outputs):
        choices["probabilities"] = True
        notes.append(
            "The classifier outputs probabilities (in [0, 1], summing to 1), not logits: the attacks use "
            "log(probabilities) as logits (same predictions; a saturated softmax still weakens gradients, "
            "which the sanity checks watch)."
        )


def _inspect_randomness(classifier, purifier, stochastic_probe, eot_samples, choices, notes):
    """Stochasticity of the whole pipeline (fixed input, repeated inference-mode calls) and the EOT samples."""
    stochastic = bool(getattr(purifier, "stochastic", False)) or bool(getattr(classifier, "stochastic", False))
    stochastic = stochastic or _is_stochastic(classifier, stochastic_probe)
    if purifier is not None:
        stochastic = stochastic or _is_stochastic(purifier, stochastic_probe)
    if eot_samples is not None:
        check_number("eot_samples", eot_samples, minimum=1, integer=True)
    choices["stochastic"] = stochastic
    choices["eot_samples"] = int(eot_samples if eot_samples is not None else (DEFAULT_EOT_SAMPLES if stochastic else 1))
    if stochastic:
        notes.append(
            f"The pipeline is stochastic (the same input gives different outputs): gradient attacks average "
            f"gradients over {choices['eot_samples']} samples (EOT); accuracies are one draw of the randomness."
        )
    elif choices["eot_samples"] > 1:
        notes.append(f"Gradient attacks average gradients over {choices['eot_samples']} samples (EOT, as requested).")


def _inspect_gradients(classifier, purifier, grad_probe, choices, notes):
    """Gradients: the purifier may hide them (BPDA), the classifier must have them."""
    if purifier is not None:
        grad = _input_gradient(lambda t: call_model(purifier, t), grad_probe)
        reason = None
        if grad is None:
            reason = "the purifier has no gradient w.r.t. its input (None)"
        elif not _finite(grad):
            reason = "the purifier's gradient is NaN / inf"
        elif not np.any(grad):
            reason = "the purifier's gradient is zero everywhere"
        if reason:
            choices["bpda"], choices["bpda_reason"] = True, reason
            notes.append(
                f"BPDA: {reason}, so attacks differentiate through it as the identity (forward pass "
                "unchanged; Athalye et al. 2018)."
            )
    grad = _input_gradient(lambda t: call_model(classifier, t), grad_probe)
    if grad is None:
        raise invalid_value(
            "classifier",
            "a model differentiable w.r.t. its input (white-box attacks need it; "
            "pass a non-differentiable preprocessing step as the purifier so it gets BPDA)",
            "a model without a gradient w.r.t. its input",
        )
    if not np.any(grad):
        notes.append(
            "The classifier's gradient w.r.t. its input is zero on the probe images: gradient attacks "
            "cannot work; see the sanity checks."
        )


# ----------------------------------------------------------------------------- suites


def _suite(suite, eps, seed, num_classes, has_source, norm="linf", stochastic=False):
    """The attacks: a named suite (with APGD-DLR added for a stochastic pipeline) or the user's list."""
    from tfdefense.evaluation.robustness import SuiteAttack, robustness_suite

    notes = []
    if isinstance(suite, str):
        check_choice("suite", suite, SUITES)
        name = suite
        settings = dict(QUICK_SUITE if suite == "quick" else {})
        if stochastic:  # AutoAttack's rand version: APGD-CE and APGD-DLR, both with EOT
            settings["autoattack"] = ("apgd-ce", "apgd-dlr", "apgd-t")
            notes.append(
                "Stochastic pipeline: the suite adds APGD-DLR, so that AutoAttack's rand version (APGD-CE and "
                "APGD-DLR, each averaging gradients over EOT samples) is part of it."
            )
        attacks = robustness_suite(eps, seed=seed, norm=norm, **settings)
    elif isinstance(suite, (list, tuple)) and suite and all(isinstance(s, SuiteAttack) for s in suite):
        name, attacks = "custom", list(suite)
    else:
        raise invalid_value("suite", f"one of {list(SUITES)} or a non-empty list of SuiteAttack", suite)
    labels = [s.label for s in attacks]
    if len(set(labels)) != len(labels):
        raise invalid_value("suite", "attacks with distinct labels", labels)
    out = []
    for spec in attacks:
        if spec.kind == "transfer" and not has_source:
            notes.append(f"{spec.label} skipped: without a purifier its source would be the model itself.")
            continue
        targets = spec.params.get("n_target_classes")
        if targets is not None and targets > num_classes - 1:
            spec = dataclasses.replace(spec, params={**spec.params, "n_target_classes": num_classes - 1})
        if norm != "linf":
            try:
                spec.build()
            except ValueError as error:  # an attack without an L2 version in this tfdefense
                notes.append(f"{spec.label} not run: it has no {norm} version here ({error}).")
                continue
        out.append(spec)
    return name, out, notes


def _with_eot(spec, eot_samples):
    """`spec` with `eot_samples` when the attack takes it; else the spec unchanged and False."""
    if eot_samples <= 1 or spec.kind not in ("single-step", "white-box"):
        return spec, eot_samples <= 1
    candidate = with_params(spec, eot_samples=eot_samples)  # None: no EOT in the attack or its backend (ART)
    return (spec, False) if candidate is None else (candidate, True)


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate_model` measured and decided.

    Attributes:
      n: images evaluated; eps: the Linf radius.
      clean_accuracy, accuracies ({attack label: accuracy}), worst_case.
      per_example: {"clean" / attack label / "worst_case": bool array (model right)}.
      checks: the sanity checks, dicts with name, passed, detail (and values).
      choices: what the inspection found and chose: probabilities, stochastic,
        eot_samples, bpda, bpda_reason, num_classes, suite.
      sweep: {eps: accuracy} of the accuracy-vs-eps check.
      notes: the report's notes; out: the output folder (or None); results:
        the results.json dict.
    """

    n: int
    eps: float
    clean_accuracy: float
    accuracies: dict
    worst_case: float
    per_example: dict
    checks: list
    choices: dict
    sweep: dict
    notes: list
    out: object = None
    results: dict = None
    robustness: object = None

    @property
    def failures(self):
        return [c for c in self.checks if not c["passed"]]

    @property
    def passed(self):
        return not self.failures

    def raise_on_failure(self):
        from tfdefense.evaluation.robustness import SanityCheckError

        if self.failures:
            raise SanityCheckError(self.failures)

    def summary(self):
        return {
            "n": self.n,
            "eps": self.eps,
            "clean": self.clean_accuracy,
            **self.accuracies,
            "worst_case": self.worst_case,
            "checks": {c["name"]: c["passed"] for c in self.checks},
            "eot_samples": self.choices["eot_samples"],
            "bpda": self.choices["bpda"],
            "probabilities": self.choices["probabilities"],
        }

    def __str__(self):
        lines = [
            f"{self.n} images, eps {self.eps:g}: clean {100 * self.clean_accuracy:.1f}%, "
            f"worst case {100 * self.worst_case:.1f}%"
        ]
        mode = self.choices.get("mode")
        if mode == "cascade":
            lines.append("  robust accuracy after each attack (AutoAttack's cascade):")
        lines += [f"  {label:28s} {100 * value:5.1f}%" for label, value in self.accuracies.items()]
        lines += [
            f"  check {c['name']:27s} {'FAILED' if not c['passed'] else c.get('verdict', 'passed')}: {c['detail']}"
            for c in self.checks
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- evaluate_model


@dataclasses.dataclass
class _Plan:
    """What `evaluate_model` attacks and how: the pipeline, the suite, the sanity sweep."""

    model: object
    source: object
    attacks: list
    suite_name: str
    eps: float
    norm: str
    eot: int
    model_name: str
    sweep_iter: int
    eps_grid: list
    mode: str


def _check_arguments(
    classifier, purifier, eps, seed, batch_size, sweep_iter, norm, per_attack, sanity_n, attack_precision
):
    if not callable(classifier):
        raise TypeError(
            f"Invalid type received for argument `classifier`. Expected a Keras model or callable "
            f"returning logits. Received: classifier of type {type(classifier).__name__}"
        )
    if purifier is not None and not callable(purifier):
        raise TypeError(
            f"Invalid type received for argument `purifier`. Expected a Keras model or callable "
            f"returning images, or None. Received: purifier of type {type(purifier).__name__}"
        )
    check_choice("norm", norm, NORMS)
    check_number("eps", eps, minimum=0, maximum=1 if norm == "linf" else None)
    if eps == 0:
        raise invalid_value("eps", "a radius > 0", eps)
    check_number("seed", seed, minimum=0, integer=True)
    check_number("batch_size", batch_size, minimum=1, integer=True, allow_none=True)
    check_number("sweep_iter", sweep_iter, minimum=1, integer=True, allow_none=True)
    check_number("sanity_n", sanity_n, minimum=1, integer=True)
    if not isinstance(per_attack, bool):
        raise invalid_value("per_attack", "True or False", per_attack)
    check_choice("attack_precision", attack_precision, tuple(ATTACK_PRECISIONS))


def _load(classifier, purifier, dataset, n, data_dir):
    """The evaluation images: (name, description, x, y), of the models' input shape."""
    image_shape = model_image_shape(purifier) if purifier is not None else None
    image_shape = image_shape or model_image_shape(classifier)
    data_name, data_description, x, y = load_evaluation_data(dataset, n, data_dir, image_shape)
    if image_shape and None not in image_shape and tuple(image_shape) != tuple(x.shape[1:]):
        raise invalid_value(
            "dataset",
            f"images of the model's input shape {tuple(image_shape)}",
            f"images of shape {tuple(x.shape[1:])}",
        )
    return data_name, data_description, x, y


def _plan(classifier, purifier, choices, notes, suite, eps, norm, seed, x, eps_grid, sweep_iter, per_attack, name):
    """The attacked pipeline (BPDA, log-probabilities), the suite with EOT, the sweep; adds to `notes`."""
    from tfdefense.evaluation.robustness import check_eps_grid

    suite_name, attacks, suite_notes = _suite(
        suite, eps, seed, choices["num_classes"], purifier is not None, norm, choices["stochastic"]
    )
    notes += suite_notes
    eps_grid = check_eps_grid(eps_grid, eps, norm, int(np.prod(x.shape[1:])))
    model = pipeline_class()(
        classifier,
        purifier,
        purifier_bpda=choices["bpda"],
        probabilities=choices["probabilities"],
        name="evaluated_pipeline",
    )
    eot = choices["eot_samples"]
    with_eot, no_eot = [], []
    for spec in attacks:
        spec, used = _with_eot(spec, eot)
        with_eot.append(spec)
        if eot > 1 and not used and spec.kind in ("single-step", "white-box"):
            no_eot.append(spec.label)
    if no_eot:
        notes.append(
            f"Attacks run on single draws of the stochastic pipeline (no EOT in them; marked in the table): "
            f"{', '.join(no_eot)}."
        )
    choices["single_draw"] = no_eot
    with_eot, kept_fp32 = with_attack_precision(with_eot, choices["attack_precision"])
    if choices["attack_precision"] != "fp32":
        notes.append(
            "Attacks crafted in bfloat16 (attack_precision='bf16'), every adversarial image judged by the "
            "pipeline in float32"
            + (f"; kept in float32 (no bfloat16 version): {', '.join(kept_fp32)}." if kept_fp32 else ".")
        )
    source = None
    if purifier is not None:  # transfer attacks are crafted on the bare classifier (logits, as attacked)
        source = pipeline_class()(classifier, None, probabilities=choices["probabilities"], name="source_classifier")
    model_name = name or ("purifier + classifier" if purifier is not None else "classifier")
    return _Plan(
        model=model,
        source=source,
        attacks=with_eot,
        suite_name=suite_name,
        eps=float(eps),
        norm=norm,
        eot=eot,
        model_name=model_name,
        sweep_iter=sweep_iter or SWEEP_ITER[suite_name],
        eps_grid=eps_grid,
        mode="per_attack" if per_attack else "cascade",
    )


def _step_config(classifier, purifier, x, y, choices, batch_size, notes):
    """What every cached step is keyed by: the models, the data and the pipeline's settings."""
    from tfdefense.attacks.generation import array_digest

    fingerprints = (
        user_model_fingerprint(classifier),
        user_model_fingerprint(purifier) if purifier is not None else "none",
    )
    cacheable = None not in fingerprints
    if not cacheable:
        notes.append("A model is a plain callable (no weights to fingerprint): no step was cached.")
    return {
        "models": list(fingerprints),
        "data": array_digest(x),
        "labels": array_digest(y),
        "bpda": choices["bpda"],
        "probabilities": choices["probabilities"],
        "batch_size": batch_size,
        "nonce": None if cacheable else time.time_ns(),
    }


def _evaluate(run, plan, x, y, choices, base_config, seed, batch_size, progress, strategy, sanity_n):
    """The engine on the suite, then the sanity checks (their attacks on a fixed subsample of all images)."""
    from tfdefense.evaluation.engine import StepCache, run_suite
    from tfdefense.evaluation.robustness import sanity_checks

    cache = StepCache(run, base_config)
    result = run_suite(
        plan.model,
        x,
        y,
        plan.attacks,
        source=plan.source,
        mode=plan.mode,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        strategy=strategy,
        cache=cache,
        log=run.log,
        progress=progress,
    )
    sanity_checks(
        plan.model,
        x,
        y,
        result,
        plan.eps,
        eps_grid=plan.eps_grid,
        sweep_iter=plan.sweep_iter,
        seed=seed,
        batch_size=batch_size,
        log=run.log,
        sanity_n=sanity_n,
        norm=plan.norm,
        eot_samples=plan.eot,
        attack_precision=choices["attack_precision"],
        stochastic=choices["stochastic"],
        probabilities_handled=choices["probabilities"],
        cache=cache,
        strategy=strategy,
        progress=progress,
    )
    return result


def _add_rows(run, plan, result, n):
    """The result's rows: accuracy per attack and worst case, accuracy vs eps, time per step."""
    run.add_row(TABLE, "whole_test_set", plan.model_name, "clean", "accuracy", result.clean_accuracy, n)
    for label, correct in result.correct.items():
        config = dict(result.configs[label], mode=plan.mode, attacked=int(result.attacked[label].sum()))
        protocol = "transfer" if result.kinds[label] == "transfer" else "adaptive"
        run.add_row(
            TABLE, protocol, plan.model_name, label, "accuracy", float(np.mean(correct)), n, attack_config=config
        )
    worst = result.worst_case
    run.add_row(
        TABLE,
        "adaptive",
        plan.model_name,
        "worst_case",
        "accuracy",
        worst,
        n,
        attack_config={
            "eps": plan.eps,
            "norm": plan.norm,
            "mode": plan.mode,
            "attacks": list(result.correct),
            "definition": "right on the clean image and under every attack",
            "ci95_wilson": list(wilson_interval(int(round(worst * n)), n)),
        },
    )
    m = len(result.extra["sanity_subsample"])
    for e, value in sorted(result.extra["sweep"].items()):
        if e:
            run.add_row(
                SWEEP_TABLE,
                "adaptive",
                plan.model_name,
                f"pgd-{plan.sweep_iter} eps {e:.4g}",
                "accuracy",
                value,
                m,
                attack_config={"attack": "pgd", "eps": e, "norm": plan.norm, "subsample": m},
            )
    for label, seconds in result.seconds.items():
        run.add_row(TIMING_TABLE, "timing", plan.model_name, label, "seconds", seconds, n)


def evaluate_model(
    classifier,
    dataset,
    eps,
    purifier=None,
    n=None,
    suite="standard",
    out=None,
    seed=0,
    batch_size=None,
    *,
    eot_samples=None,
    eps_grid=None,
    sweep_iter=None,
    data_dir=None,
    progress=True,
    name=None,
    strategy=None,
    input_range=None,
    norm="linf",
    per_attack=False,
    sanity_n=200,
    attack_precision="fp32",
):
    """Adaptive evaluation of `classifier(purifier(x))` with the reviewer's suite and sanity checks.

    Load, inspect, evaluate (the engine, `evaluation/engine.py`), report.

    Args:
      classifier: a Keras model (or callable) from [0, 1] images to logits
        (probabilities are detected and handled).
      dataset: a dataset name ("mnist", "cifar10", "digits"; its test split),
        "npz:PATH" (its x_test / y_test; other arrays are not read),
        "tfds:NAME[:SPLIT]" (a tensorflow-datasets dataset on disk, default
        split "test") or an (x, y) pair: float32 NHWC images in [0, 1] and int
        labels. The number of classes is the classifier's output width.
      eps: radius in [0, 1] pixel units (Linf at most 1).
      purifier: optional Keras model (or callable) from images to images of
        the same shape, e.g. a `tfdefense.defenses` purifier or transform.
      n: evaluate the first n images (None: all).
      suite: "standard" (`robustness_suite(eps)`), "quick" (fewer iterations,
        restarts and queries) or a list of `SuiteAttack`.
      out: output folder (report.md, results.json, results.csv,
        per_example.csv, plots, cached steps); None writes nothing.
      seed: seed of every attack.
      batch_size: images per attack call (default 250; the global batch under `strategy`).
      eot_samples: EOT samples for a stochastic pipeline (None: 8 when
        stochastic, 1 otherwise).
      eps_grid, sweep_iter: the accuracy-vs-eps check (default radii eps/3,
        2eps/3, eps, 0.4, 0.5, 0.6 in Linf; PGD iterations 100 standard, 20
        quick, 40 custom suite).
      data_dir: data folder for named datasets.
      progress: progress bars and log lines.
      name: what the report calls the evaluated model.
      strategy: a `tf.distribute.Strategy` (`tfdefense.distribute.make_strategy`):
        every attack of the suite and of the sanity checks is sharded over its
        replicas and workers (`generate(strategy=)`), `batch_size` being the
        global batch; the model inspection, the predictions that judge the
        attacks and the sample grid run in full on each worker. Only the chief
        writes `out`; other workers keep their cached steps in
        `out/workers/<task>`. None: one device.
      input_range: the input range the classifier expects: "0-1" (default),
        "0-255" or "-1-1" (`user_inputs.with_input_range`: the [0, 1] images
        are rescaled in front of it; eps stays in [0, 1] units).
      norm: "linf" (default) or "l2" (AutoAttack's L2 version of the suite).
      per_attack: run every attack on every image (the per-attack table).
        False (default): AutoAttack's cascade, each attack only on the images
        every earlier attack failed to break (same worst case, fewer attacks).
      sanity_n: images of the fixed subsample the sanity checks attack.
      attack_precision: "fp32" (default) or "bf16": the suite's and the
        checks' attacks compute in bfloat16 where they can (gradient attacks,
        APGD; Square and FAB-T stay float32), every adversarial image is judged
        by the pipeline in float32 (no image counts as broken that float32
        does not break). Faster on hardware with bfloat16 units; the attacks'
        strength can differ, so compare with "fp32" on your model first.
    Returns an `EvaluationResult`. A failed sanity check does not raise: see
    `result.failures` / `result.raise_on_failure()`.
    """
    import keras

    from tfdefense import distribute
    from tfdefense.evaluation.runner import Run

    start = time.perf_counter()
    _check_arguments(
        classifier, purifier, eps, seed, batch_size, sweep_iter, norm, per_attack, sanity_n, attack_precision
    )
    if input_range is not None:
        classifier = with_input_range(classifier, input_range)
    if out is not None:  # before any work; the Run below opens (marks, locks) the folder
        from tfdefense.evaluation.run_folder import check_out_path

        check_out_path(out, "out")
    distributed = distribute.is_distributed(strategy)  # also checks the type
    batch_size = batch_size or 250
    data_name, data_description, x, y = _load(classifier, purifier, dataset, n, data_dir)

    keras.utils.set_random_seed(seed)
    choices, notes = inspect_models(
        classifier, purifier, x, y, batch_size=min(batch_size, 256), eot_samples=eot_samples
    )
    choices["attack_precision"] = attack_precision
    if input_range not in (None, "0-1"):
        scale = {name: scale for scale, name in _RANGE_NAMES.items()}[input_range]
        notes.append(
            f"The classifier takes inputs in {scale} (input_range={input_range!r}): the [0, 1] images are "
            "rescaled in front of it; eps is in [0, 1] units."
        )
    plan = _plan(
        classifier, purifier, choices, notes, suite, eps, norm, seed, x, eps_grid, sweep_iter, per_attack, name
    )
    choices.update(suite=plan.suite_name, norm=plan.norm, mode=plan.mode, sanity_n=min(sanity_n, len(x)))
    if distributed:
        placement = distribute.describe(strategy)
        notes.append(
            f"Distribution: strategy {placement['strategy']} ({placement['class']}), {placement['replicas']} "
            f"replica(s) on {placement['workers']} worker(s); batch size {batch_size} is the global batch. "
            "The model checks and the predictions judging the attacks ran in full on every worker."
        )
    base_config = _step_config(classifier, purifier, x, y, choices, batch_size, notes)
    with tempfile.TemporaryDirectory(prefix="tfdefense-evaluate-") as scratch:
        run = Run(
            "evaluate_model",
            scratch if out is None else out,
            scale="full" if plan.suite_name == "standard" else "quick",
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            strategy=strategy,
        )
        run.set_data(data_name, data_description)
        result = _evaluate(run, plan, x, y, choices, base_config, seed, batch_size, progress, strategy, sanity_n)
        return _report(run, plan, result, choices, notes, purifier, x, y, start, out)


def _report(run, plan, result, choices, notes, purifier, x, y, start, out):
    """The `EvaluationResult`, its rows and (with `out`, on the chief) report.md, results.json, CSVs and plots."""
    from tfdefense.evaluation import reports

    _add_rows(run, plan, result, len(x))
    alive = result.clean.copy()
    for outcome in result.correct.values():
        alive &= outcome
    per_image = {"clean": result.clean, **result.correct, "worst_case": alive}
    evaluation = EvaluationResult(
        n=len(x),
        eps=plan.eps,
        clean_accuracy=result.clean_accuracy,
        accuracies=result.accuracies,
        worst_case=result.worst_case,
        per_example=per_image,
        checks=result.checks,
        choices=choices,
        sweep=result.extra["sweep"],
        notes=notes,
        robustness=result,
    )
    if out is not None and run.is_chief:  # other workers computed the same numbers; the chief writes them
        _write_outputs(run, evaluation, plan.model, purifier, plan.attacks, x, y, start, plan.model_name, reports)
        evaluation.out = pathlib.Path(out)
    else:
        evaluation.results = _results_dict(run, evaluation, start, reports)
    for check in result.checks:
        run.log(f"check {check['name']}: {check['verdict']}: {check['detail']}")
    run.log(
        f"clean {evaluation.clean_accuracy:.4f}, worst case {evaluation.worst_case:.4f} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return evaluation


def _results_dict(run, evaluation, start, reports):
    results = run.results(time.perf_counter() - start)
    results["notes"] = list(evaluation.notes)
    results["sanity_checks"] = [
        {"name": c["name"], "passed": c["passed"], "verdict": c["verdict"], "detail": c["detail"]}
        for c in evaluation.checks
    ]
    results["choices"] = {k: v for k, v in evaluation.choices.items() if k != "clean_accuracy_probe"}
    results["eps"] = evaluation.eps
    reports.validate_results(results)
    evaluation.results = results
    return results


def step_seconds(results):
    """The steps' own seconds summed from a results dict's timing table (steps a resumed run reused
    included), or None when it has no timing rows."""
    timings = [r["value"] for r in results["rows"] if r["table"] == TIMING_TABLE]
    return sum(timings) if timings else None


def _resumed_note(results):
    """', the steps' own times ...' when they exceed this invocation's wall time (steps reused from an earlier one)."""
    seconds = step_seconds(results)
    if seconds is None or seconds <= 1.1 * results["wall_seconds"]:
        return ""
    return f" in this invocation (the steps' own times add up to {seconds:.0f} s, earlier invocations included)"


def _markdown(results, evaluation, plots):
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731

    def interval(value):
        low, high = wilson_interval(int(round(value * evaluation.n)), evaluation.n)
        return f"{100 * low:.1f}-{100 * high:.1f}% (Wilson, n={evaluation.n})"

    choices = evaluation.choices
    failed = evaluation.failures
    lines = [
        f"# tfdefense evaluate_model: {results['data']['dataset']}, {choices['norm'].capitalize()} eps "
        f"{evaluation.eps:g} ({choices['suite']} suite)",
        "",
        f"- Data: {results['data']['description']}",
        f"- Seed: {results['seed']}; wall time: {results['wall_seconds']:.1f} s{_resumed_note(results)}; TensorFlow "
        f"{results['environment']['tensorflow']}, Keras {results['environment']['keras']}, devices "
        f"{', '.join(results['environment']['devices'])}",
        f"- Clean accuracy {pct(evaluation.clean_accuracy)} (95% interval {interval(evaluation.clean_accuracy)}); "
        f"**per-example worst case {pct(evaluation.worst_case)}** (95% interval {interval(evaluation.worst_case)}; "
        "an image counts only if the model is right on it clean and under every attack).",
        "- Sanity checks: "
        + ("all passed." if not failed else f"**{len(failed)} FAILED**: the numbers below may overstate robustness."),
        "",
        "## How the model was attacked",
        "",
        f"- Stochastic: {'yes' if choices['stochastic'] else 'no'}; EOT samples per gradient: "
        f"{choices['eot_samples']}.",
        f"- BPDA (identity backward pass through the purifier): "
        f"{'yes, because ' + choices['bpda_reason'] if choices['bpda'] else 'no'}.",
        "- Classifier outputs: "
        + ("probabilities, attacked as log(probabilities)." if choices["probabilities"] else "logits."),
        "- White-box attacks differentiate through the whole pipeline; transfer attacks are crafted on the bare "
        "classifier.",
        "- Protocol: "
        + (
            "AutoAttack's cascade: the attacks ran in AutoAttack's order, each only on the images every "
            "earlier attack failed to break; the table gives the robust accuracy after each attack."
            if choices["mode"] == "cascade"
            else "per attack: every attack ran on every image the model classifies correctly."
        ),
        f"- Sanity checks: their attacks (accuracy vs eps, convergence, single-step) ran on a fixed subsample of "
        f"{choices['sanity_n']} of the {evaluation.n} images; a check fails only on a difference of at least 2 images "
        "beyond its tolerance.",
    ]
    lines += [f"- {note}" for note in results["notes"]]
    value = "robust accuracy after it" if choices["mode"] == "cascade" else "accuracy"
    lines += [
        "",
        f"## {TABLE}",
        "",
        f"| attack | kind | images attacked | {value} | seconds |",
        "|---|---|---|---|---|",
    ]
    seconds = {r["attack"]: r["value"] for r in results["rows"] if r["table"] == TIMING_TABLE}
    kinds, attacked = evaluation.robustness.kinds, evaluation.robustness.attacked
    single = set(choices.get("single_draw", ()))
    for row in results["rows"]:
        if row["table"] == TABLE:
            label = row["attack"]
            kind = "clean" if label == "clean" else kinds.get(label, "per-example minimum")
            kind += " (single draws, no EOT)" if label in single else ""
            sec = seconds.get(label)
            count = int(attacked[label].sum()) if label in attacked else ""
            lines.append(
                f"| {label} | {kind} | {count} | {pct(row['value'])} | {'' if sec is None else f'{sec:.1f}'} |"
            )
    verdicts = {"passed": "passed", "failed": "**FAILED**", "n too small": "n too small to judge"}
    lines += ["", "## Sanity checks", "", "| check | verdict | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {verdicts[c['verdict']]} | {c['detail']} |" for c in evaluation.checks]
    lines += ["", f"## {SWEEP_TABLE}", "", f"{choices['sanity_n']} images.", "", "| eps | accuracy |", "|---|---|"]
    lines += [f"| {e:.4g} | {pct(v)} |" for e, v in sorted(evaluation.sweep.items())]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _write_outputs(run, evaluation, model, purifier, attacks, x, y, start, model_name, reports):
    import csv
    import io

    from tfdefense.attacks import get_attack
    from tfdefense.evaluation import plots

    sweep = evaluation.sweep
    plots.plot_curves(
        run.add_plot("accuracy_vs_eps.png"),
        {model_name: (sorted(sweep), [sweep[e] for e in sorted(sweep)])},
        f"PGD eps ({evaluation.choices['norm'].capitalize()})",
        title="accuracy vs eps (white-box, whole pipeline)",
    )
    bars = {"clean": evaluation.clean_accuracy, **evaluation.accuracies, "worst case": evaluation.worst_case}
    plots.plot_bars(
        run.add_plot("accuracy_per_attack.png"),
        {k: 100 * v for k, v in bars.items()},
        "accuracy (%)",
        title=f"accuracy per attack, eps {evaluation.eps:g}",
    )
    # Sample grid: the first 8 images, the suite's white-box PGD (one restart), and what the purifier made of them.
    pgd = [s for s in attacks if s.attack == "pgd" and s.kind == "white-box"]
    params = (
        dict(pgd[0].params)
        if pgd
        else dict(eps=evaluation.eps, eps_iter=evaluation.eps / 10, nb_iter=20, rand_init=True, seed=run.seed)
    )
    x_adv = get_attack("pgd", **params)(model, x[:8], y[:8])
    rows = {"clean": x[:8], "adversarial (PGD)": x_adv}
    if purifier is not None:
        rows["purified"] = np.clip(np.asarray(call_model(purifier, x_adv)), 0, 1)
    plots.plot_sample_grid(run.add_plot("samples.png"), rows)

    results = _results_dict(run, evaluation, start, reports)
    out_dir = run.out_dir
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "results.csv", reports.to_csv(results["rows"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    labels = list(evaluation.per_example)
    writer.writerow(["index", "label", *labels])
    for i in range(evaluation.n):
        writer.writerow([i, int(y[i]), *(int(evaluation.per_example[label][i]) for label in labels)])
    write_text(out_dir / "per_example.csv", buffer.getvalue())
    write_text(out_dir / "report.md", _markdown(results, evaluation, run.plots))
