"""The engine: AutoAttack's order, the crafting precision, and resuming a step from its finished chunks."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tfdefense.evaluation import engine
from tfdefense.evaluation.engine import SuiteAttack, attack_order, with_attack_precision
from tfdefense.evaluation.runner import Run

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


def _digits_classifier():
    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1200], y[:1200], epochs=20, batch_size=64, verbose=0)
    return model, x[1200:1400], y[1200:1400]


class _Interrupted(Exception):
    pass


def test_an_interrupted_step_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    model, x, y = _digits_classifier()
    suite = [SuiteAttack("square", "square", dict(eps=0.15, nb_queries=60, seed=3), "gradient-free")]

    def evaluate(out):
        run = Run("demo", out, scale="tiny", progress=False)
        try:
            return run, engine.run_suite(model, x, y, suite, batch_size=50, cache=engine.StepCache(run, {"m": 1}))
        finally:
            run.close()

    _, uninterrupted = evaluate(tmp_path / "whole")
    assert 0.1 < uninterrupted.accuracy("square") < uninterrupted.clean_accuracy  # some broken, some not

    real_run_attack, calls = engine.run_attack, []

    def run_attack(*args, **kwargs):
        if len(calls) == 2:
            raise _Interrupted  # killed while attacking the third chunk
        calls.append(len(args[2]))
        return real_run_attack(*args, **kwargs)

    monkeypatch.setattr(engine, "run_attack", run_attack)
    with pytest.raises(_Interrupted):
        evaluate(tmp_path / "resumed")
    partial = [p for p in (tmp_path / "resumed" / "steps").iterdir() if p.suffix == ".partial"]
    assert len(partial) == 1 and len(list(partial[0].glob("chunk-*.json"))) == 2
    # A damaged chunk file is attacked again, not trusted.
    damaged = partial[0] / "chunk-000001.json"
    damaged.write_text(damaged.read_text().replace('"bits": "', '"bits": "ff', 1))

    calls.clear()
    monkeypatch.setattr(engine, "run_attack", lambda *a, **k: calls.append(len(a[2])) or real_run_attack(*a, **k))
    run, resumed = evaluate(tmp_path / "resumed")
    assert len(calls) == 3  # chunk 1 (damaged) and the two unfinished ones; chunk 0 read back
    np.testing.assert_array_equal(resumed.correct["square"], uninterrupted.correct["square"])
    np.testing.assert_array_equal(
        resumed.extra["square"]["first_restart"], uninterrupted.extra["square"]["first_restart"]
    )
    assert resumed.seconds["square"] > 0
    assert not partial[0].exists()  # removed once the step is stored
    assert run.steps_computed == ["square"]
