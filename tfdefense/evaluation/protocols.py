"""The evaluation protocols of DESIGN.md section 4, as functions that add rows to a `Run`.

- `whole_test_set`: accuracy of each defended model on every input set.
- `successful_only`: accuracy on the adversarial examples that fooled the
  bare classifier, so "no defense" is 0% by construction.
- `adaptive`: the attack re-run against `DefendedClassifier(purifier,
  classifier)` (white-box through the purifier), with a convergence check;
  run on `robustness.evaluate_robustness`, the engine of the reviewer's suite.
- `png_roundtrip`: the same numbers after 8-bit quantization.
"""

import numpy as np

from tfdefense.inference import predict_labels


def png_quantize(x):
    """What saving as 8-bit PNG and reloading does to float images in [0, 1]."""
    return (np.round(np.asarray(x, np.float32) * 255.0) / 255.0).astype(np.float32)


def whole_test_set(run, table, classifiers, inputs, y, paper=None, protocol="whole_test_set", metric="accuracy"):
    """Adds accuracy (or error rate) rows for every (defense, input set).

    classifiers: {defense name: model mapping images to logits}.
    inputs: {attack name: (images, attack config)}; use "clean" for clean images.
    paper: optional {(defense, attack): published value}.
    """
    paper = paper or {}
    modes = [("tensor", lambda a: a)] + ([("png", png_quantize)] if run.png_roundtrip else [])
    for defense, model in classifiers.items():
        for attack, (images, config) in inputs.items():
            for mode, transform in modes:
                correct = predict_labels(model, transform(images)) == y
                value = float(np.mean(correct)) if metric == "accuracy" else float(1 - np.mean(correct))
                run.add_row(
                    table,
                    protocol,
                    defense,
                    attack,
                    metric,
                    value,
                    len(y),
                    attack_config=config,
                    paper_value=paper.get((defense, attack)),
                    eval_mode=mode,
                )


def successful_only(run, table, classifier, classifiers, inputs, y, paper=None, x_clean=None):
    """Accuracy on the adversarial examples that fool the bare `classifier` (pix2pix paper protocol).

    With `x_clean` (the clean images the examples were made from) only images
    the classifier gets right when clean count: the attack flipped them.
    """
    paper = paper or {}
    for attack, (images, config) in inputs.items():
        fooled = predict_labels(classifier, images) != y
        if x_clean is not None:
            fooled &= predict_labels(classifier, x_clean[: len(y)]) == y
        for defense, model in classifiers.items():
            value = float(np.mean(predict_labels(model, images[fooled]) == y[fooled])) if fooled.any() else None
            run.add_row(
                table,
                "successful_only",
                defense,
                attack,
                "accuracy",
                value,
                int(fooled.sum()),
                attack_config=config,
                paper_value=paper.get((defense, attack)),
            )


def worst_case_accuracy(model, candidates, y):
    """Per-example worst case: correct only if correct on every candidate batch."""
    correct = np.ones(len(y), bool)
    for images in candidates:
        correct &= predict_labels(model, images) == y
    return float(np.mean(correct))


ADAPTIVE_TABLE = "Papers' protocol vs adaptive (white-box through the defense)"


def adaptive(run, defense, defended, classifier, x, y, attack="pgd", params=None, eot_samples=8, table=ADAPTIVE_TABLE):
    """Adds the papers' number and the adaptive numbers of one defense side by side.

    Rows (all accuracy on `x`):
      - "<attack> on classifier": crafted on the bare classifier, evaluated
        through the defense (the papers' protocol);
      - "<attack> through defense": crafted on `defended`
        (`DefendedClassifier`), with EOT over `eot_samples` passes when the
        purifier is stochastic; BPDA comes from the defense's own forward
        (non-differentiable transforms carry an identity backward pass);
      - "... x2 iterations, restarts": the convergence check (iterations
        doubled, step halved, 2 random restarts);
      - "worst case": per example, wrong under any of the above.
    Returns the worst-case accuracy.
    """
    from tfdefense.evaluation.robustness import SuiteAttack, evaluate_robustness

    params = dict(params or {})
    stochastic = bool(getattr(defended, "stochastic", False))
    through = dict(params, eot_samples=eot_samples) if stochastic else dict(params)
    stronger = dict(through)
    if "nb_iter" in params:
        stronger["nb_iter"] = 2 * params["nb_iter"]
        if "eps_iter" in params:
            stronger["eps_iter"] = params["eps_iter"] / 2
    if params.get("rand_init", attack == "pgd"):
        stronger["nb_restarts"] = 2
    eot = f", EOT {eot_samples}" if stochastic else ""
    suite = [
        SuiteAttack(f"{attack} on classifier (papers' protocol)", attack, params, "transfer"),
        SuiteAttack(f"{attack} through defense{eot}", attack, through, "white-box"),
        SuiteAttack(f"{attack} through defense, x2 iterations, 2 restarts{eot}", attack, stronger, "white-box"),
    ]
    # Each attack once on all of x in one call, every image crafted before any is judged.
    result = evaluate_robustness(
        defended, x, y, suite, source=classifier, batch_size=max(len(x), 1), every_example=True
    )
    for spec in suite:
        protocol = "whole_test_set" if spec.kind == "transfer" else "adaptive"
        run.add_row(
            table,
            protocol,
            defense,
            spec.label,
            "accuracy",
            result.accuracy(spec.label),
            len(y),
            attack_config=spec.params,
        )
    # Judged again per candidate: a stochastic defense draws afresh, as an attacker facing it would see.
    worst = worst_case_accuracy(defended, [result.extra[spec.label]["images"] for spec in suite], y)
    run.add_row(
        table,
        "adaptive",
        defense,
        f"{attack}: worst case of all rows",
        "accuracy",
        worst,
        len(y),
        attack_config=stronger,
    )
    if stochastic:
        run.note(
            f"{defense} is stochastic at inference: its adaptive attacks average gradients over "
            f"{eot_samples} passes (EOT)."
        )
    return worst
