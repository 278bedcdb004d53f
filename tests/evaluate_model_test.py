"""`python -m tfdefense.evaluate --classifier ...` end to end on real MNIST digits (quick suite, 40 digits).

The tests write their own models: model C as `.keras`, a tfdefense SavedModel
export, and a soft quantizing purifier whose gradient vanishes (the masking
the sanity checks exist for: exit status 3).
"""

import json

import keras
import pytest
import tensorflow as tf

from tfdefense.evaluate import main
from tfdefense.evaluation import reports

N = "40"


@keras.saving.register_keras_serializable(package="tfdefense_tests")
class SoftQuantizer(keras.layers.Layer):
    """1-bit quantisation as a steep sigmoid: differentiable, but its gradient vanishes away from 0.5."""

    def __init__(self, sharpness=1000.0, **kwargs):
        super().__init__(**kwargs)
        self.sharpness = sharpness

    def call(self, x):
        return tf.sigmoid(self.sharpness * (x - 0.5))

    def get_config(self):
        return {**super().get_config(), "sharpness": self.sharpness}


@pytest.fixture(scope="module")
def classifier_file(mnist_model_c, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "model_c.keras"
    mnist_model_c.save(path)
    return path


def _run(out, *args, quiet=True):
    code = main(
        [
            "--dataset",
            "mnist",
            "--eps",
            "0.3",
            "--n",
            N,
            "--suite",
            "quick",
            "--out",
            str(out),
            *(["--quiet"] if quiet else []),
            *map(str, args),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    reports.validate_results(results)
    return code, results


def _accuracy(results, attack):
    return next(r["value"] for r in results["rows"] if r["attack"] == attack and r["metric"] == "accuracy")


def test_cli_on_a_keras_classifier_passes_and_reruns_from_cache(classifier_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, results = _run(out, "--classifier", classifier_file)
    assert code == 0
    assert _accuracy(results, "clean") >= 0.9
    assert _accuracy(results, "worst_case") <= 0.05  # model C alone falls at eps 0.3
    assert results["sanity_checks"] and all(c["passed"] for c in results["sanity_checks"])
    attacks = [r["attack"] for r in results["rows"] if r["table"].startswith("Accuracy under attack")]
    assert {"fgsm", "pgd-50x3", "apgd-ce", "apgd-t", "square-1000"} <= set(attacks)
    assert attacks.count("worst_case") == 1
    for name in (
        "report.md",
        "results.csv",
        "per_example.csv",
        "accuracy_vs_eps.png",
        "samples.png",
        "accuracy_per_attack.png",
    ):
        assert (out / name).is_file(), name
    assert "worst case" in capsys.readouterr().out

    steps = sorted(p.name for p in (out / "steps").iterdir())
    code, again = _run(out, "--classifier", classifier_file)  # every step is reused
    assert code == 0 and sorted(p.name for p in (out / "steps").iterdir()) == steps
    values = lambda res: [(r["attack"], r["value"]) for r in res["rows"] if r["metric"] == "accuracy"]  # noqa: E731
    assert values(again) == values(results)


@pytest.mark.slow  # two evaluations of 40 digits
def test_cli_killed_inside_an_attack_resumes_from_its_finished_chunks(classifier_file, tmp_path, capsys, monkeypatch):
    from tfdefense.evaluation import engine

    args = ("--classifier", classifier_file, "--batch-size", "10", "--per-attack")
    _, uninterrupted = _run(tmp_path / "whole", *args)
    real_run_attack, calls = engine.run_attack, []

    def killed_at_the_third_chunk(*a, **k):
        calls.append(len(a[2]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while FGSM (first in the per-attack table) attacks images 20-29
        return real_run_attack(*a, **k)

    monkeypatch.setattr(engine, "run_attack", killed_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", *args)
    partial = list((tmp_path / "resumed" / "steps").glob("fgsm-*.partial/chunk-*.json"))
    assert len(partial) == 2
    monkeypatch.setattr(engine, "run_attack", real_run_attack)
    capsys.readouterr()
    code, resumed = _run(tmp_path / "resumed", *args, quiet=False)  # the log says what was read back
    assert code == 0
    assert "fgsm: 2 of 4 chunks of 10 images read back from an interrupted run" in capsys.readouterr().out
    assert not list((tmp_path / "resumed" / "steps").glob("*.partial"))
    values = lambda res: [(r["attack"], r["value"]) for r in res["rows"] if r["metric"] == "accuracy"]  # noqa: E731
    assert values(resumed) == values(uninterrupted)


def test_cli_on_a_tfdefense_savedmodel_export_crafting_in_bf16(mnist_model_c, tmp_path):
    from tfdefense.export import export_saved_model

    identity = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1.0)])
    path = export_saved_model(identity, tmp_path / "exported", classifier=mnist_model_c)
    code, results = _run(tmp_path / "run", "--classifier", path, "--attack-precision", "bf16")
    assert code == 0
    assert _accuracy(results, "clean") >= 0.9 and _accuracy(results, "worst_case") <= 0.05
    assert all(c["passed"] for c in results["sanity_checks"])
    assert results["choices"]["attack_precision"] == "bf16"


def test_cli_quantizing_purifier_fails_the_masking_checks_with_exit_3(classifier_file, tmp_path, capsys):
    purifier = keras.Sequential([keras.Input((28, 28, 1)), SoftQuantizer()])
    purifier.save(tmp_path / "quantizer.keras")
    code, results = _run(tmp_path / "run", "--classifier", classifier_file, "--purifier", tmp_path / "quantizer.keras")
    assert code == 3
    failed = {c["name"] for c in results["sanity_checks"] if not c["passed"]}
    assert failed & {"gradient_free_not_better", "transfer_not_better", "large_eps_near_zero"}, results["sanity_checks"]
    assert not results["choices"]["bpda"]  # the gradient exists (it only vanishes): no BPDA, the checks catch it
    assert _accuracy(results, "worst_case") is not None  # numbers are still reported
    report = (tmp_path / "run" / "report.md").read_text()
    assert "FAILED" in report
    assert "sanity check(s) failed" in capsys.readouterr().err


def test_cli_bad_arguments_are_one_line_errors(classifier_file, tmp_path, capsys):
    assert main(["--classifier", str(classifier_file), "--dataset", "mnist", "--out", str(tmp_path)]) == 2
    assert "--eps" in capsys.readouterr().err
    assert (
        main(
            [
                "--classifier",
                str(tmp_path / "missing.keras"),
                "--dataset",
                "mnist",
                "--eps",
                "0.3",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "--classifier",
                str(classifier_file),
                "--purifier",
                "no_such_transform",
                "--dataset",
                "mnist",
                "--eps",
                "0.3",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "`purifier`" in capsys.readouterr().err
    assert (
        main(["--classifier", str(classifier_file), "--dataset", "mnist", "--eps", "1.5", "--out", str(tmp_path)]) == 2
    )
    assert "--eps" in capsys.readouterr().err  # a Linf radius above 1
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--classifier",
                str(classifier_file),
                "--dataset",
                "mnist",
                "--eps",
                "2",
                "--norm",
                "l1",
                "--out",
                str(tmp_path),
            ]
        )
    assert exit_info.value.code == 2 and "--norm" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_robust_purifier_keeps_accuracy_and_passes_the_checks(mnist, mnist_model_c, tmp_path):
    from tfdefense.defenses import EpsilonRamp, RobustPurifier
    from tfdefense.evaluation.user_model import evaluate_model
    from tfdefense.models.unet import unet_generator

    (x_train, y_train), (x_test, y_test) = mnist
    keras.utils.set_random_seed(0)
    generator = unet_generator((28, 28, 1), base_filters=8, max_filters=32, depth=3, dropout=0.0)
    purifier = RobustPurifier(generator, mnist_model_c, attack_eps=0.2, attack_steps=5, seed=0)
    purifier.compile()
    purifier.fit(x_train[:1536], y_train[:1536], batch_size=64, epochs=3, verbose=0, callbacks=[EpsilonRamp(2)])
    result = evaluate_model(
        mnist_model_c, (x_test[:100], y_test[:100]), 0.2, purifier=purifier, suite="quick", out=tmp_path, progress=False
    )
    bare = evaluate_model(mnist_model_c, (x_test[:100], y_test[:100]), 0.2, suite="quick", progress=False)
    print(result)
    assert result.passed, result.failures
    assert result.worst_case >= bare.worst_case + 0.2
