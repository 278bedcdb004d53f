"""evaluate_model's inspection (errors before any attack, EOT / BPDA / probabilities choices) on real MNIST digits.

Each test runs a two-attack suite on 40-50 test digits with a short sanity
sweep, so it takes seconds; the full CLI runs are in tests/evaluate_model_test.py.
"""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.defenses import get_transform
from tfdefense.evaluation.robustness import SuiteAttack
from tfdefense.evaluation.user_model import (
    EvaluationResult,
    evaluate_model,
    inspect_models,
    load_user_model,
    resolve_purifier,
)

EPS = 0.3
TINY = dict(eps_grid=(0.3, 0.6), sweep_iter=5, progress=False)


def tiny_suite(eps=EPS):
    return [
        SuiteAttack("fgsm", "fgsm", dict(eps=eps), "single-step"),
        SuiteAttack("pgd-10", "pgd", dict(eps=eps, eps_iter=eps / 4, nb_iter=10, rand_init=True, seed=1), "white-box"),
    ]


@pytest.fixture(scope="module")
def digits(mnist):
    _, (x_test, y_test) = mnist
    return x_test[:50], y_test[:50]


@pytest.fixture(scope="module")
def classifier(mnist_model_c):
    mnist_model_c.trainable = False
    return mnist_model_c


def test_model_c_alone_falls_and_every_check_passes(classifier, digits, tmp_path):
    result = evaluate_model(classifier, digits, EPS, suite=tiny_suite(), out=tmp_path, **TINY)
    assert isinstance(result, EvaluationResult)
    assert result.clean_accuracy >= 0.9
    assert result.worst_case <= 0.05
    assert result.passed, result.failures
    assert result.choices["eot_samples"] == 1 and not result.choices["bpda"] and not result.choices["probabilities"]
    assert set(result.accuracies) == {"fgsm", "pgd-10", "pgd-20 (convergence)"}
    worst = result.per_example["worst_case"]
    assert worst.dtype == bool and worst.shape == (50,) and np.mean(worst) == result.worst_case
    results = json.loads((tmp_path / "results.json").read_text())
    attacks = [r["attack"] for r in results["rows"] if r["table"].startswith("Accuracy under attack")]
    assert attacks[-1] == "worst_case" and {"fgsm", "pgd-10"} <= set(attacks)
    low, high = results["rows"][[r["attack"] for r in results["rows"]].index("worst_case")]["attack_config"][
        "ci95_wilson"
    ]
    assert 0.0 <= low <= result.worst_case <= high <= 0.1  # 50 images: the interval is a few points wide
    assert "95% interval" in (tmp_path / "report.md").read_text()
    assert {c["name"] for c in results["sanity_checks"]} >= {"iterative_beats_single_step", "large_eps_near_zero"}
    assert all(set(c) == {"name", "passed", "verdict", "detail"} for c in results["sanity_checks"])
    assert {c["name"] for c in results["sanity_checks"]} >= {
        "randomness",
        "softmax_output",
        "zero_gradients",
        "model_unchanged",
        "convergence",
        "monotonic_in_eps",
    }
    assert results["choices"]["mode"] == "cascade" and results["choices"]["norm"] == "linf"
    for name in (
        "report.md",
        "results.csv",
        "per_example.csv",
        "accuracy_vs_eps.png",
        "samples.png",
        "accuracy_per_attack.png",
    ):
        assert (tmp_path / name).is_file(), name


def test_per_attack_table_and_cascade_give_the_same_worst_case(classifier, digits):
    suite = tiny_suite() + [SuiteAttack("apgd-ce", "apgd", dict(eps=EPS, nb_iter=10, seed=2), "white-box")]
    cascade = evaluate_model(classifier, digits, EPS, suite=suite, **TINY)
    every = evaluate_model(classifier, digits, EPS, suite=suite, per_attack=True, **TINY)
    assert list(cascade.accuracies)[0] == "apgd-ce"  # AutoAttack's order first
    np.testing.assert_array_equal(cascade.per_example["worst_case"], every.per_example["worst_case"])
    attacked = cascade.robustness.extra["attacked_images"]
    assert attacked["fgsm"] + attacked["pgd-10"] <= 4 < every.robustness.extra["attacked_images"]["fgsm"]
    # Per attack: each attack's own accuracy; cascade: the robust accuracy after it, never rising.
    assert all(every.accuracies[label] >= every.worst_case for label in every.accuracies)
    rates = list(cascade.accuracies.values())
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates))


def test_stochastic_purifier_is_attacked_with_eot(classifier, digits, tmp_path):
    purifier = get_transform("random_resize_pad", seed=0)
    result = evaluate_model(classifier, digits, EPS, purifier=purifier, suite=tiny_suite(), out=tmp_path, **TINY)
    assert result.choices["stochastic"] and result.choices["eot_samples"] == 8
    configs = result.robustness.configs
    assert configs["pgd-10"]["params"]["eot_samples"] == 8 and configs["fgsm"]["params"]["eot_samples"] == 8
    report = (tmp_path / "report.md").read_text()
    assert "EOT samples per gradient: 8" in report
    assert json.loads((tmp_path / "results.json").read_text())["choices"]["eot_samples"] == 8


def test_purifier_without_gradient_gets_bpda_and_falls(classifier, digits):
    purifier = get_transform("bit_depth", bits=2, bpda=False)  # stop_gradient: no gradient at all
    result = evaluate_model(classifier, digits, EPS, purifier=purifier, suite=tiny_suite(), **TINY)
    assert result.choices["bpda"] and "no gradient" in result.choices["bpda_reason"]
    assert any("BPDA" in note for note in result.results["notes"])
    assert result.accuracies["pgd-10"] <= 0.3  # with BPDA the attack goes through the squeezing

    zero = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda t: t * 0.0 + 0.5)])
    choices, _ = inspect_models(classifier, zero, *digits)
    assert choices["bpda"] and "zero everywhere" in choices["bpda_reason"]


def test_probabilities_output_is_detected_and_attacked_as_log(classifier, digits):
    model = keras.Sequential([keras.Input((28, 28, 1)), classifier, keras.layers.Softmax()])
    result = evaluate_model(model, digits, EPS, suite=tiny_suite(), **TINY)
    assert result.choices["probabilities"]
    assert any("probabilities" in note for note in result.notes)
    assert result.worst_case <= 0.1


def test_model_expecting_0_255_inputs_is_a_clear_error(classifier, digits):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255.0), classifier])
    with pytest.raises(ValueError, match=r"`classifier`.*\[0, 255\].*Rescaling\(255\.0\)"):
        evaluate_model(model, digits, EPS, suite=tiny_suite(), **TINY)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(0.5, offset=0.5), classifier])
    with pytest.raises(ValueError, match=r"\[-1, 1\].*Rescaling\(2\.0, offset=-1\.0\)"):
        evaluate_model(model, digits, EPS, suite=tiny_suite(), **TINY)


def test_errors_before_any_attack(classifier, digits, monkeypatch):
    import tfdefense.evaluation.engine as engine

    def no_attack(*args, **kwargs):
        raise AssertionError("an attack ran")

    monkeypatch.setattr(engine, "run_attack", no_attack)
    x, y = digits
    cropping = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Cropping2D(2)])
    with pytest.raises(ValueError, match=r"`purifier`.*shape.*\(24, 24, 1\)"):
        evaluate_model(classifier, digits, EPS, purifier=cropping, suite=tiny_suite(), **TINY)
    with pytest.raises(ValueError, match=r"`y`.*labels in \[0, 9\].*Received.*12"):
        evaluate_model(classifier, (x, np.where(np.arange(len(y)) == 3, 12, y)), EPS, suite=tiny_suite(), **TINY)
    nan_model = lambda images: tf.fill([tf.shape(images)[0], 10], np.float32(np.nan))  # noqa: E731
    with pytest.raises(ValueError, match=r"`classifier`.*NaN or inf"):
        evaluate_model(nan_model, digits, EPS, suite=tiny_suite(), **TINY)
    with pytest.raises(ValueError, match="`eps`"):
        evaluate_model(classifier, digits, 1.5, suite=tiny_suite(), **TINY)
    with pytest.raises(ValueError, match="`suite`"):
        evaluate_model(classifier, digits, EPS, suite="strong", **TINY)
    with pytest.raises(ValueError, match="`x`"):
        evaluate_model(classifier, (x * 255, y), EPS, suite=tiny_suite(), **TINY)
    with pytest.raises(ValueError, match="`norm`.*Received: norm='l1'"):
        evaluate_model(classifier, digits, EPS, suite=tiny_suite(), norm="l1", **TINY)
    with pytest.raises(ValueError, match="`per_attack`"):
        evaluate_model(classifier, digits, EPS, suite=tiny_suite(), per_attack="yes", **TINY)


def test_loading_keras_savedmodel_and_transform_names(classifier, digits, tmp_path):
    x = digits[0][:8]
    classifier.save(tmp_path / "c.keras")
    from_keras = load_user_model(tmp_path / "c.keras")
    np.testing.assert_allclose(np.asarray(from_keras(x)), np.asarray(classifier(x)), atol=1e-5)
    classifier.export(str(tmp_path / "sm"), verbose=False)  # a plain SavedModel: serving_default signature
    served = load_user_model(tmp_path / "sm")
    np.testing.assert_allclose(np.asarray(served(x)), np.asarray(classifier(x)), atol=1e-4)
    with tf.GradientTape() as tape:  # attacks differentiate through the loaded function
        images = tf.constant(x)
        tape.watch(images)
        loss = tf.reduce_sum(served(images))
    assert np.any(tape.gradient(loss, images).numpy())
    squeeze = resolve_purifier("bit_depth:bits=2")
    assert squeeze.bits == 2
    with pytest.raises(ValueError, match="`purifier`"):
        resolve_purifier("no_such_transform")
    with pytest.raises(ValueError, match="`signature`"):
        load_user_model(tmp_path / "sm", signature="nope")


def test_l2_evaluation_runs_the_l2_suite_and_its_sweep(classifier, digits):
    eps = 2.0
    suite = [
        SuiteAttack("apgd-ce", "apgd", dict(eps=eps, norm=2, nb_iter=10, seed=2), "white-box"),
        SuiteAttack("pgd-10", "pgd", dict(eps=eps, eps_iter=eps / 4, nb_iter=10, norm=2, seed=1), "white-box"),
        SuiteAttack("square-200", "square", dict(eps=eps, norm=2, nb_queries=200, seed=3), "gradient-free"),
    ]
    result = evaluate_model(classifier, digits, eps, suite=suite, norm="l2", sweep_iter=5, progress=False)
    assert result.choices["norm"] == "l2" and result.clean_accuracy >= 0.9
    assert result.worst_case <= 0.3  # model C is not robust at L2 2.0 on MNIST
    sweep = result.sweep
    assert max(sweep) == pytest.approx(14.0)  # 0.5 sqrt(784): every digit reaches the uniform gray image
    assert sweep[max(sweep)] <= 0.1 and sweep[0.0] >= 0.9
    checks = {c["name"]: c for c in result.checks}
    assert checks["large_eps_near_zero"]["passed"] and checks["monotonic_in_eps"]["passed"], checks
    assert all(result.robustness.configs[label]["params"]["norm"] == 2 for label in result.accuracies)


def test_stochastic_pipeline_gets_autoattacks_rand_version_and_marks_single_draws(classifier, digits):
    purifier = get_transform("random_resize_pad", seed=0)
    x, y = digits
    result = evaluate_model(
        classifier,
        (x[:10], y[:10]),
        EPS,
        purifier=purifier,
        suite="quick",
        eot_samples=2,
        sanity_n=10,
        eps_grid=(0.3, 0.6),
        sweep_iter=2,
        progress=False,
    )
    configs = result.robustness.configs
    assert list(result.accuracies)[:3] == ["apgd-ce", "apgd-dlr", "apgd-t"]  # AutoAttack's order
    assert configs["apgd-ce"]["params"]["eot_samples"] == 2 and configs["apgd-dlr"]["params"]["eot_samples"] == 2
    assert {"apgd-t", "fab-t"} <= set(result.choices["single_draw"])
    randomness = {c["name"]: c for c in result.checks}["randomness"]
    assert randomness["passed"] and "single draws" in randomness["detail"] and "apgd-t" in randomness["detail"]
    assert any("rand version" in note for note in result.notes)


def test_bf16_attack_precision_crafts_in_bfloat16_and_judges_in_float32(classifier, digits, tmp_path):
    suite = tiny_suite() + [
        SuiteAttack("apgd-ce", "apgd", dict(eps=EPS, nb_iter=10, seed=2), "white-box"),
        SuiteAttack("fab-t", "fab_t", dict(eps=EPS, nb_iter=10, n_target_classes=2, seed=3), "white-box"),
    ]
    fp32 = evaluate_model(classifier, digits, EPS, suite=suite, per_attack=True, **TINY)
    bf16 = evaluate_model(
        classifier, digits, EPS, suite=suite, per_attack=True, attack_precision="bf16", out=tmp_path, **TINY
    )
    configs = bf16.robustness.configs
    assert {label for label, cfg in configs.items() if cfg["params"].get("compute_dtype") == "bfloat16"} == {
        "fgsm",
        "pgd-10",
        "apgd-ce",
        "pgd-20 (convergence)",
    }
    assert "compute_dtype" not in configs["fab-t"]["params"]  # FAB-T has no bfloat16 version
    assert all("compute_dtype" not in cfg["params"] for cfg in fp32.robustness.configs.values())
    # Judged in float32: the clean pass is the same, and the attacks break model C about as often.
    assert bf16.clean_accuracy == fp32.clean_accuracy
    for label in ("fgsm", "pgd-10", "apgd-ce"):
        assert abs(bf16.accuracies[label] - fp32.accuracies[label]) <= 0.04, label
    assert bf16.worst_case <= 0.05 and bf16.passed, bf16.failures
    assert all(layer.dtype_policy.name == "float32" for layer in classifier.layers)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["choices"]["attack_precision"] == "bf16"
    assert "crafted in bfloat16" in (tmp_path / "report.md").read_text()
    assert "kept in float32 (no bfloat16 version): fab-t" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="attack_precision.*'fp16'"):
        evaluate_model(classifier, digits, EPS, suite=suite, attack_precision="fp16", **TINY)


def test_report_of_a_resumed_run_gives_the_steps_own_time_beside_its_wall_time():
    from tfdefense.evaluation.user_model import TIMING_TABLE, _resumed_note, step_seconds

    rows = [{"table": TIMING_TABLE, "value": v} for v in (600.0, 400.0)] + [{"table": "other", "value": 5.0}]
    assert _resumed_note({"rows": rows, "wall_seconds": 50.0}) == (
        " in this invocation (the steps' own times add up to 1000 s, earlier invocations included)"
    )
    assert _resumed_note({"rows": rows, "wall_seconds": 1000.0}) == ""  # one invocation did every step
    assert step_seconds({"rows": rows}) == 1000.0 and step_seconds({"rows": rows[2:]}) is None
    assert _resumed_note({"rows": rows[2:], "wall_seconds": 50.0}) == ""  # no timing table: nothing to add
