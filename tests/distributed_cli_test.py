"""`--distribute mirrored` on `train purifier` and `evaluate --classifier`: 2 logical CPU devices, real digits.

Logical devices must be configured before TensorFlow starts, so each run is a
fresh Python process; the classifier (model C, one epoch on 1,000 real MNIST
digits) is trained once here and read by both.
"""

import csv
import json
import pathlib
import subprocess
import sys
import textwrap

import keras
import pytest

from tfdefense.defenses import RobustPurifier

pytestmark = pytest.mark.slow  # each CLI run under a two-replica strategy takes 30-35 s on two busy cores

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Two logical CPU devices, then the CLI's main() on each command line given (a JSON list of argv lists); records
# the exit codes and the images of each sharded attack run (generate(strategy=)).
CLI = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfdefense.attacks import generation
    from tfdefense.evaluation import user_model
    sharded = []
    run_distributed = generation._run_distributed

    def counting(attack, model, x, *args):
        sharded.append(len(x))
        return run_distributed(attack, model, x, *args)

    generation._run_distributed = counting
    # The quick suite cut to a few iterations and queries (the CLI's code path, seconds instead of minutes).
    user_model.QUICK_SUITE.update(pgd_iter=5, pgd_restarts=2, apgd_iter=5, n_target_classes=2, square_queries=50)
    user_model.SWEEP_ITER["quick"] = 5
    if sys.argv[1] == "train":
        from tfdefense.train import main
    else:
        from tfdefense.evaluate import main
    runs = []
    for argv in json.loads(sys.argv[2]):
        sharded.clear()
        runs.append({"code": main(argv), "sharded_images": list(sharded)})
    print("RESULT " + json.dumps(runs))
    """
)


def _run_cli(module, *argvs, timeout=300):
    argvs = json.dumps([[str(a) for a in argv] for argv in argvs])
    result = subprocess.run(
        [sys.executable, "-c", CLI, module, argvs], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = [li for li in result.stdout.splitlines() if li.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :]), result.stdout


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory, mnist):
    from tfdefense.models import model_c, train_classifier

    (x_train, y_train), _ = mnist
    keras.utils.set_random_seed(0)
    model = model_c()
    train_classifier(model, x_train[:1000], y_train[:1000], epochs=1, batch_size=100, seed=0, verbose=0)
    path = tmp_path_factory.mktemp("classifier") / "model_c.keras"
    model.save(path)
    return path


def test_train_purifier_robust_mirrored_two_replicas(tmp_path, classifier_path):
    out = tmp_path / "robust.keras"
    (result,), printed = _run_cli(
        "train",
        [
            "purifier",
            "--kind",
            "robust",
            "--classifier",
            classifier_path,
            "--dataset",
            "mnist",
            "--out",
            out,
            "--n-train",
            "128",
            "--epochs",
            "1",
            "--attack-steps",
            "1",
            "--width",
            "4",
            "--batch-size",
            "32",
            "--eps",
            "0.3",
            "--eval-n",
            "8",
            "--eval-suite",
            "tiny",
            "--distribute",
            "mirrored",
        ],
    )
    assert result["code"] == 0
    assert "strategy mirrored, 2 replica(s)" in printed
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["distribute"]["strategy"] == "mirrored" and summary["distribute"]["replicas"] == 2
    assert summary["train_examples"] == 128 and summary["eval_images"] == 8
    assert {"fgsm", "pgd-10x2", "apgd-ce", "transfer-pgd"} <= set(summary["attacks"])
    assert summary["robust_accuracy"] <= min(summary["attacks"].values()) <= summary["clean_accuracy"] + 1e-9
    # The summary's attacks went through generate(strategy=): 8 images per attack, at least one run each.
    assert len(result["sharded_images"]) >= len(summary["attacks"]) and max(result["sharded_images"]) == 8
    assert isinstance(keras.models.load_model(out, safe_mode=True), RobustPurifier)
    assert not out.with_name(out.name + ".backup").exists()  # removed once the purifier is saved


def _per_example(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [row[key] for row in rows] for key in rows[0]}


def test_evaluate_classifier_mirrored_matches_one_device(tmp_path, classifier_path):
    argv = [
        "--classifier",
        classifier_path,
        "--dataset",
        "mnist",
        "--eps",
        "0.1",
        "--n",
        "16",
        "--suite",
        "quick",
        "--batch-size",
        "8",
        "--seed",
        "0",
        "--quiet",
    ]
    (single, sharded), printed = _run_cli(
        "evaluate",
        [*argv, "--out", tmp_path / "none"],
        [*argv, "--out", tmp_path / "mirrored", "--distribute", "mirrored"],
    )
    assert single["code"] == sharded["code"] and single["code"] in (0, 3)
    assert single["sharded_images"] == [] and len(sharded["sharded_images"]) >= 6, sharded
    assert "wrote" in printed
    one = json.loads((tmp_path / "none" / "results.json").read_text())
    two = json.loads((tmp_path / "mirrored" / "results.json").read_text())
    assert one["environment"]["distribute"]["replicas"] == 1
    assert two["environment"]["distribute"]["strategy"] == "mirrored"
    assert two["environment"]["distribute"]["replicas"] == 2
    assert any("2 replica(s) on 1 worker(s)" in note for note in two["notes"])
    assert "Distribution: strategy mirrored" in (tmp_path / "mirrored" / "report.md").read_text()
    rows = {
        name: {r["attack"]: r["value"] for r in results["rows"] if r["table"].startswith("Accuracy under")}
        for name, results in (("one", one), ("two", two))
    }
    assert rows["one"].keys() == rows["two"].keys()
    assert 0.2 < rows["one"]["worst_case"] < rows["one"]["clean"], rows  # neither trivial nor all broken
    # Deterministic steps (clean, FGSM) agree image by image; the random starts of PGD, APGD and Square draw
    # from per-batch streams under a strategy, so the worst case may differ by at most one image of 16.
    a, b = _per_example(tmp_path / "none" / "per_example.csv"), _per_example(tmp_path / "mirrored" / "per_example.csv")
    assert a["clean"] == b["clean"] and a["fgsm"] == b["fgsm"]
    assert abs(rows["one"]["worst_case"] - rows["two"]["worst_case"]) <= 1 / 16 + 1e-9, rows
    assert [c["passed"] for c in one["sanity_checks"]] == [c["passed"] for c in two["sanity_checks"]]
