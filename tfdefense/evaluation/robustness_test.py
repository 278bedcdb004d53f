"""The reviewer-proof attack suite: worst case, sanity checks firing on a gradient-masked model, preset."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.defenses import DefendedClassifier
from tfdefense.evaluation.robustness import (
    CHECK_NAMES,
    RobustnessResult,
    SanityCheckError,
    SuiteAttack,
    check_outcomes,
    evaluate_robustness,
    merge_results,
    robustness_suite,
    sanity_checks,
)

SMALL = dict(pgd_iter=10, pgd_restarts=2, apgd_iter=10, n_target_classes=2, square_queries=300)


def _quantizing_purifier(levels=8):
    """A 'purifier' that rounds pixels to `levels` steps: no gradient (tf.round), no robustness at eps 0.3."""
    return keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Lambda(lambda z: tf.round(z * levels) / levels)], name="quantizer"
    )


def test_default_suite_is_the_reviewers_set():
    suite = {s.label: s for s in robustness_suite(0.3)}
    assert set(suite) == {"fgsm", "pgd-100x10", "apgd-ce", "apgd-t", "fab-t", "square-5000", "transfer-pgd"}
    pgd = suite["pgd-100x10"]
    assert pgd.restarts == 10 and pgd.params["nb_iter"] == 100 and pgd.params["rand_init"] and pgd.kind == "white-box"
    assert suite["square-5000"].params["nb_queries"] >= 5000 and suite["square-5000"].kind == "gradient-free"
    assert suite["apgd-t"].params["n_target_classes"] == 9
    fab = suite["fab-t"]
    assert fab.attack == "fab_t" and fab.kind == "white-box"
    assert fab.params["nb_iter"] == 100 and fab.params["n_target_classes"] == 9
    small = {s.label: s for s in robustness_suite(0.3, **SMALL)}["fab-t"]  # smaller suites: a smaller FAB-T
    assert small.params["nb_iter"] == 10 and small.params["n_target_classes"] == 2
    assert "fab-t" not in {s.label for s in robustness_suite(0.3, fab_iter=0)}
    assert suite["transfer-pgd"].kind == "transfer" and suite["fgsm"].kind == "single-step"
    for spec in suite.values():
        spec.build()  # every entry is a valid registry attack


def test_l2_suite_is_autoattacks_l2_version():
    suite = {s.label: s for s in robustness_suite(2.0, norm="l2")}  # eps 2.0: an L2 radius above 1
    assert {"apgd-ce", "apgd-t", "fab-t", "square-5000"} <= set(suite)
    for spec in suite.values():
        assert spec.params["norm"] == 2
        assert spec.build().params["norm"] == 2  # every attack has its L2 version
    with pytest.raises(ValueError, match="`eps`.*Received: eps=2.0"):
        robustness_suite(2.0)  # Linf radii stay in [0, 1]


def test_suite_and_attack_arguments_are_checked():
    with pytest.raises(ValueError, match="`eps`.*Received: eps=1.5"):
        robustness_suite(1.5)
    with pytest.raises(ValueError, match="`pgd_restarts`"):
        robustness_suite(0.3, pgd_restarts=0)
    with pytest.raises(ValueError, match="`fab_iter`.*Received: fab_iter=-1"):
        robustness_suite(0.3, fab_iter=-1)
    with pytest.raises(ValueError, match="`autoattack`"):
        robustness_suite(0.3, autoattack=("fab-t",))
    with pytest.raises(ValueError, match="`kind`"):
        SuiteAttack("x", "pgd", {}, "black-box")
    with pytest.raises(ValueError, match="`suite`"):
        evaluate_robustness(lambda z: z, np.zeros((2, 28, 28, 1), np.float32), np.zeros(2, np.int64), [])
    with pytest.raises(ValueError, match="`per_attack`"):
        evaluate_robustness(
            lambda z: z,
            np.zeros((2, 28, 28, 1), np.float32),
            np.zeros(2, np.int64),
            robustness_suite(0.3),
            per_attack="yes",
        )
    with pytest.raises(ValueError, match="`norm`"):
        robustness_suite(0.3, norm="l1")
    with pytest.raises(ValueError, match="`eps_grid`"):
        sanity_checks(
            None,
            np.zeros((2, 28, 28, 1), np.float32),
            np.zeros(2, np.int64),
            RobustnessResult(2, np.ones(2, bool), {}, {}, {}, {}),
            0.3,
            eps_grid=(0.1, 0.3),
        )


def test_worst_case_is_per_example():
    clean = np.array([1, 1, 1, 1, 0], bool)
    result = RobustnessResult(
        n=5,
        clean=clean,
        correct={"a": np.array([1, 0, 1, 1, 1], bool), "b": np.array([1, 1, 0, 1, 1], bool)},
        kinds={"a": "white-box", "b": "gradient-free"},
        configs={},
        seconds={},
    )
    assert result.accuracy("a") == pytest.approx(0.8) and result.accuracy("b") == pytest.approx(0.8)
    assert result.worst_case == pytest.approx(0.4)  # examples 0 and 3 survive both, example 4 is wrong clean
    assert result.worst_case_of(kinds=("white-box",)) == pytest.approx(0.6)
    result.checks = [{"name": "convergence", "passed": False, "detail": "PGD-10 0.5 vs PGD-20 0.3", "values": {}}]
    with pytest.raises(SanityCheckError, match="convergence: PGD-10"):
        result.raise_on_failure("m")


def test_merge_results_and_check_outcomes_from_chunks():
    def chunk(correct_a, correct_sq, sweep, base, doubled):
        result = RobustnessResult(
            n=len(correct_a),
            clean=np.ones(len(correct_a), bool),
            correct={"pgd": np.array(correct_a, bool), "sq": np.array(correct_sq, bool)},
            kinds={"pgd": "white-box", "sq": "gradient-free"},
            configs={"pgd": {"attack": "pgd", "params": {}}, "sq": {"attack": "square", "params": {}}},
            seconds={},
        )
        result.extra["sweep"] = sweep
        result.extra["convergence"] = {
            "iterations": 10,
            "doubled_iterations": 20,
            "base_correct": np.array(base, bool),
            "doubled_correct": np.array(doubled, bool),
        }
        return result

    a = chunk([1, 1, 0, 1], [1, 1, 0, 1], {0.0: 1.0, 0.3: 0.75, 0.6: 0.0}, [1, 1, 0, 1], [1, 1, 0, 1])
    b = chunk([1, 1, 1, 1], [0, 0, 1, 1], {0.0: 1.0, 0.3: 1.0, 0.6: 0.0}, [1, 1, 1, 1], [0, 0, 1, 1])
    merged = merge_results([a, b])
    assert merged.n == 8 and merged.accuracy("pgd") == pytest.approx(7 / 8)
    assert merged.worst_case == pytest.approx(5 / 8)
    assert merged.extra["sweep"][0.3] == pytest.approx(0.875)
    checks = {c["name"]: c["passed"] for c in check_outcomes(merged)}
    # chunk b: Square breaks 2 examples PGD did not, PGD-20 two more than PGD-10: both must fire
    assert checks == {
        "monotonic_in_eps": True,
        "large_eps_near_zero": True,
        "gradient_free_not_better": False,
        "convergence": False,
    }
    # Each chunk alone: the same differences rest on 2 of 4 images (fail); one image is too few to judge.
    assert not {c["name"]: c for c in check_outcomes(b)}["convergence"]["passed"]
    one = chunk([1, 1, 1, 1], [0, 1, 1, 1], {0.0: 1.0, 0.3: 1.0, 0.6: 0.25}, [1, 1, 1, 1], [0, 1, 1, 1])
    verdicts = {c["name"]: c for c in check_outcomes(one)}
    for name in ("convergence", "gradient_free_not_better", "large_eps_near_zero"):
        assert verdicts[name]["verdict"] == "n too small" and verdicts[name]["passed"], verdicts[name]
        assert "n too small to judge" in verdicts[name]["detail"]
    with pytest.raises(ValueError, match="`results`"):
        merge_results([])


def test_cascade_has_the_per_attack_worst_case_for_far_fewer_attacks(mnist_eval_batch, mnist_model_c):
    x, y = mnist_eval_batch[0][:40], mnist_eval_batch[1][:40]
    suite = robustness_suite(0.3, **SMALL)
    cascade = evaluate_robustness(mnist_model_c, x, y, suite, source=mnist_model_c)
    every = evaluate_robustness(mnist_model_c, x, y, suite, source=mnist_model_c, per_attack=True)
    assert cascade.mode == "cascade" and every.mode == "per_attack"
    # AutoAttack's order first, then the project's attacks in the suite's order.
    assert list(cascade.correct) == ["apgd-ce", "apgd-t", "fab-t", "square-300", "fgsm", "pgd-10x2", "transfer-pgd"]
    np.testing.assert_array_equal(
        cascade.correct["transfer-pgd"], every.clean & np.all([every.correct[label] for label in every.correct], axis=0)
    )
    assert cascade.worst_case == every.worst_case <= 0.05
    attacked = cascade.extra["attacked_images"]
    assert attacked["apgd-ce"] == int(cascade.clean.sum()) and sum(attacked.values()) <= attacked["apgd-ce"] + 3
    assert sum(every.extra["attacked_images"].values()) >= 6 * int(every.clean.sum())
    assert not np.any(cascade.attacked["fgsm"] & ~cascade.correct["apgd-ce"])  # later attacks: survivors only


def test_sanity_checks_fire_on_a_gradient_masking_purifier(mnist_eval_batch, mnist_model_c):
    x, y = mnist_eval_batch[0][:60], mnist_eval_batch[1][:60]
    masked = DefendedClassifier(_quantizing_purifier(), mnist_model_c)
    suite = robustness_suite(0.3, **SMALL)
    result = evaluate_robustness(masked, x, y, suite, source=mnist_model_c, per_attack=True)
    checks = {c["name"]: c for c in sanity_checks(masked, x, y, result, 0.3, eps_grid=(0.3, 0.6), sweep_iter=10)}
    # White-box attacks see zero gradients and stay near the clean accuracy; Square and transfer do not.
    assert result.accuracy("pgd-10x2") > 0.8
    assert result.accuracy("square-300") < result.accuracy("pgd-10x2") - 0.3
    assert not checks["gradient_free_not_better"]["passed"]
    assert not checks["transfer_not_better"]["passed"]
    assert not checks["large_eps_near_zero"]["passed"]
    assert not checks["zero_gradients"]["passed"]  # AutoAttack's flag: tf.round has no gradient
    assert result.worst_case <= min(result.accuracies.values())
    with pytest.raises(SanityCheckError, match="gradient_free_not_better"):
        result.raise_on_failure()

    # The cascade (default): Square runs on what APGD and FAB-T left, and the same checks fire.
    cascade = evaluate_robustness(masked, x, y, suite, source=mnist_model_c)
    checks = {c["name"]: c for c in sanity_checks(masked, x, y, cascade, 0.3, eps_grid=(0.3, 0.6), sweep_iter=10)}
    assert (
        not checks["gradient_free_not_better"]["passed"] and checks["gradient_free_not_better"]["values"]["count"] >= 10
    )
    assert not checks["large_eps_near_zero"]["passed"] and not checks["zero_gradients"]["passed"]


def test_sanity_checks_pass_on_an_honestly_evaluated_model(mnist_eval_batch, mnist_model_c):
    x, y = mnist_eval_batch[0][:60], mnist_eval_batch[1][:60]
    suite = robustness_suite(0.3, **SMALL)
    result = evaluate_robustness(mnist_model_c, x, y, suite, source=mnist_model_c)
    checks = sanity_checks(
        mnist_model_c, x, y, result, 0.3, eps_grid=(0.1, 0.3, 0.6), sweep_iter=10, strict=True, sanity_n=50
    )
    assert all(c["passed"] for c in checks), checks
    assert {c["name"] for c in checks} == set(CHECK_NAMES)
    assert result.worst_case <= 0.05  # model C is not robust at eps 0.3
    assert "pgd-20 (convergence)" in result.correct  # the doubled PGD joins the worst case
    sweep = result.extra["sweep"]
    assert sweep[0.0] == pytest.approx(1.0) and sweep[0.1] > sweep[0.6]
    # The checks' attacks ran on a fixed subsample of all images, not on the cascade's survivors.
    assert len(result.extra["sanity_subsample"]) == 50
    assert len(result.extra["convergence"]["base_correct"]) == 50


def test_softmax_output_and_a_model_changing_between_calls_are_flagged(mnist_eval_batch, mnist_model_c):
    x, y = mnist_eval_batch[0][:40], mnist_eval_batch[1][:40]
    probabilities = keras.Sequential([keras.Input((28, 28, 1)), mnist_model_c, keras.layers.Softmax()])
    suite = [SuiteAttack("fgsm", "fgsm", dict(eps=0.3), "single-step")]
    result = evaluate_robustness(probabilities, x, y, suite)
    checks = {c["name"]: c for c in sanity_checks(probabilities, x, y, result, 0.3, eps_grid=(0.3, 0.6), sweep_iter=5)}
    assert not checks["softmax_output"]["passed"] and checks["model_unchanged"]["passed"]
    assert checks["randomness"]["passed"] and "deterministic" in checks["randomness"]["detail"]

    class Drifting(keras.Model):
        """Its logits shift towards class 0 at every call (state that changes between calls)."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, tf.Variable(0.0, trainable=False)

        def call(self, images):
            self.calls.assign_add(1.0)
            return self.inner(images) + tf.one_hot(0, 10) * self.calls * 10.0

    drifting = Drifting(mnist_model_c)
    result = evaluate_robustness(drifting, x, y, suite)
    checks = {c["name"]: c for c in sanity_checks(drifting, x, y, result, 0.3, eps_grid=(0.3, 0.6), sweep_iter=5)}
    assert not checks["model_unchanged"]["passed"], checks["model_unchanged"]


def test_robust_preset_is_registered_with_three_scales():
    from tfdefense.evaluation.presets import robust
    from tfdefense.evaluation.runner import list_presets

    assert "robust" in list_presets()
    assert set(robust.SCALES) == {"tiny", "quick", "full"}
    full = robust.SCALES["full"]["suite"]
    assert full["pgd_iter"] >= 100 and full["pgd_restarts"] >= 10 and full["square_queries"] >= 5000
    assert "cifar10" in robust.SCALES["full"]["datasets"]
