"""`protocols.adaptive` on the robustness engine: its rows are the attacks' accuracies on every example."""

import keras
import numpy as np
import pytest

from tfdefense.attacks import get_attack
from tfdefense.data import load_dataset
from tfdefense.defenses import DefendedClassifier
from tfdefense.defenses.transforms import get_transform
from tfdefense.evaluation import protocols
from tfdefense.evaluation.presets import recipes
from tfdefense.evaluation.robustness import SuiteAttack, evaluate_robustness
from tfdefense.evaluation.runner import Run
from tfdefense.inference import predict_labels


@pytest.fixture(scope="module")
def digits_model():
    """A small dense classifier trained for a few seconds on 300 real digits; 40 held-out digits."""
    (x_train, y_train), (x_test, y_test) = load_dataset("digits", image_size=28)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train[:300], y_train[:300], epochs=5, batch_size=32, verbose=0)
    return model, x_test[:40], y_test[:40]


def test_adaptive_rows_are_each_attack_on_every_example(digits_model, tmp_path):
    classifier, x, y = digits_model
    defended = DefendedClassifier(get_transform("bit_depth"), classifier)
    run = Run("test", tmp_path, scale="tiny", progress=False)
    pgd = recipes.pgd_settings(run, 0.1)
    assert pgd == dict(eps=0.1, eps_iter=2.5 * 0.1 / 10, nb_iter=10, rand_init=True, seed=0)
    worst = protocols.adaptive(run, "bit_depth", defended, classifier, x, y, "pgd", pgd)

    rows = {row["attack"]: row for row in run.rows}
    on_classifier = get_attack("pgd", **pgd)(classifier, x, y)
    through = get_attack("pgd", **pgd)(defended, x, y)
    expected_papers = float(np.mean(predict_labels(defended, on_classifier) == y))
    expected_through = float(np.mean(predict_labels(defended, through) == y))
    assert rows["pgd on classifier (papers' protocol)"]["value"] == pytest.approx(expected_papers)
    assert rows["pgd on classifier (papers' protocol)"]["protocol"] == "whole_test_set"
    assert rows["pgd through defense"]["value"] == pytest.approx(expected_through)
    stronger = rows["pgd through defense, x2 iterations, 2 restarts"]
    assert stronger["attack_config"]["nb_iter"] == 20 and stronger["attack_config"]["nb_restarts"] == 2
    assert worst <= min(r["value"] for r in run.rows[:3])
    assert rows["pgd: worst case of all rows"]["value"] == worst
    assert expected_through < float(np.mean(predict_labels(defended, x) == y))  # the attack through the defense bites


def test_every_example_mode_attacks_misclassified_examples_too(digits_model):
    classifier, x, y = digits_model
    suite = [SuiteAttack("fgsm", "fgsm", dict(eps=0.1), "single-step")]
    result = evaluate_robustness(classifier, x, y, suite, every_example=True)
    images = result.extra["fgsm"]["images"]
    assert result.clean is None and np.isnan(result.clean_accuracy)
    wrong_clean = predict_labels(classifier, x) != y
    assert wrong_clean.any()
    # Every example is attacked (the reviewer's mode keeps misclassified examples clean).
    assert np.all(np.abs(images - x).max(axis=(1, 2, 3)) > 0)
    assert result.accuracy("fgsm") == pytest.approx(float(np.mean(predict_labels(classifier, images) == y)))
    assert result.worst_case == pytest.approx(result.accuracy("fgsm"))  # over the attacks alone
