"""The evaluation protocols of DESIGN.md section 4, as functions that add rows to a `Run`.

- `whole_test_set`: accuracy of each defended model on every input set.
- `successful_only`: accuracy on the adversarial examples that fooled the
  bare classifier, so "no defense" is 0% by construction.
- `adaptive`: the attack re-run against `DefendedClassifier(purifier,
  classifier)` (white-box through the purifier), with a convergence check.
- `png_roundtrip`: the same numbers after 8-bit quantization.
"""

import numpy as np

from tfdefense.evaluation.metrics import predict_labels


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
                    table, protocol, defense, attack, metric, value, len(y),
                    attack_config=config, paper_value=paper.get((defense, attack)), eval_mode=mode,
                )


def successful_only(run, table, classifier, classifiers, inputs, y, paper=None):
    """Accuracy on the adversarial examples that fool the bare `classifier` (pix2pix paper protocol)."""
    paper = paper or {}
    for attack, (images, config) in inputs.items():
        fooled = predict_labels(classifier, images) != y
        for defense, model in classifiers.items():
            value = float(np.mean(predict_labels(model, images[fooled]) == y[fooled])) if fooled.any() else None
            run.add_row(
                table, "successful_only", defense, attack, "accuracy", value, int(fooled.sum()),
                attack_config=config, paper_value=paper.get((defense, attack)),
            )


def worst_case_accuracy(model, candidates, y):
    """Per-example worst case: correct only if correct on every candidate batch."""
    correct = np.ones(len(y), bool)
    for images in candidates:
        correct &= predict_labels(model, images) == y
    return float(np.mean(correct))
