"""The engine's suite helpers: AutoAttack's order and the crafting precision."""

import pytest

from tfdefense.evaluation.engine import SuiteAttack, attack_order, with_attack_precision

SUITE = [
    SuiteAttack("fgsm", "fgsm", dict(eps=0.3), "single-step"),
    SuiteAttack("square", "square", dict(eps=0.3, nb_queries=10), "gradient-free"),
    SuiteAttack("fab-t", "fab_t", dict(eps=0.3), "white-box"),
    SuiteAttack("apgd-ce", "apgd", dict(eps=0.3), "white-box"),
    SuiteAttack("deepfool", "deepfool", {}, "white-box"),
]


def test_bf16_sets_compute_dtype_where_the_attack_has_it_and_lists_the_rest():
    specs, kept = with_attack_precision(SUITE, "bf16")
    dtypes = {spec.label: spec.params.get("compute_dtype") for spec in specs}
    assert dtypes == {"fgsm": "bfloat16", "square": None, "fab-t": None, "apgd-ce": "bfloat16", "deepfool": None}
    assert kept == ["square", "fab-t", "deepfool"]
    assert all("compute_dtype" not in spec.params for spec in SUITE)  # the given suite is not changed
    for spec in specs:
        spec.build()


def test_fp32_is_the_suite_unchanged_and_other_values_are_refused():
    assert with_attack_precision(SUITE, "fp32") == (SUITE, [])
    with pytest.raises(ValueError, match=r"attack_precision.*'float16'"):
        with_attack_precision(SUITE, "float16")


def test_autoattack_order_comes_first_in_the_cascade():
    assert [spec.label for spec in attack_order(SUITE)][:3] == ["apgd-ce", "fab-t", "square"]
