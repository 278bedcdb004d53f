"""The scripts in experiments/ that produce documented numbers: they run, and read what the package writes."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import keras
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate_run(tmp_path_factory):
    """An evaluate run folder of a plain keras.Sequential on 30 digits: (folder, EvaluationResult)."""
    from tfdefense import evaluate_model
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(x_train.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=5, verbose=0)
    folder = tmp_path_factory.mktemp("evaluate") / "run"
    result = evaluate_model(model, (x_test[:30], y_test[:30]), 0.1, suite="quick", out=folder, progress=False)
    return folder, result


def test_robustness_table_reads_an_evaluate_run(tmp_path, evaluate_run):
    folder, result = evaluate_run
    table = _script("robustness_table").table([("plain", folder)])
    row = table.splitlines()[-1]
    assert row.startswith(f"| plain | {100 * result.clean_accuracy:.1f} | {100 * result.worst_case:.1f} (")
    assert "| 30 |" in row
    rows = json.loads((folder / "results.json").read_text())["rows"]
    timings = [r["value"] for r in rows if r["metric"] == "seconds"]
    assert len(timings) > 1 and row.endswith(f"| {sum(timings):.0f} |")  # the steps' own seconds, reused ones too
    with pytest.raises(FileNotFoundError):
        _script("robustness_table").summary(tmp_path / "missing")


def _per_example(folder, kept, labels=None):
    """A run folder holding only per_example.csv: image i kept under every attack when kept[i]."""
    folder.mkdir()
    labels = labels or [i % 10 for i in range(len(kept))]
    rows = ["index,label,clean,worst_case"] + [f"{i},{labels[i]},1,{int(k)}" for i, k in enumerate(kept)]
    (folder / "per_example.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_robustness_table_pairs_two_runs_image_by_image(tmp_path, evaluate_run):
    script = _script("robustness_table")
    folder, result = evaluate_run
    itself = script.paired(folder, folder)  # a run against itself: no discordant image
    assert (itself["only_a"], itself["only_b"], itself["p_value"]) == (0, 0, 1.0)
    assert itself["both"] == round(result.worst_case * 30) and itself["n"] == 30
    # 12 images only A keeps, 2 only B keeps: two-sided exact binomial p = 2 * P(X <= 2 | 14, 1/2) = 0.01294
    a = _per_example(tmp_path / "a", [1] * 20 + [1] * 12 + [0] * 2 + [0] * 6)
    b = _per_example(tmp_path / "b", [1] * 20 + [0] * 12 + [1] * 2 + [0] * 6)
    c = script.paired(a, b)
    assert (c["both"], c["only_a"], c["only_b"], c["neither"], c["n"]) == (20, 12, 2, 6, 40)
    assert c["p_value"] == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert "| A vs B | 20 | 12 | 2 | +25.0 | 0.0129 |" in script.paired_table([(("A", a), ("B", b))])
    other = _per_example(tmp_path / "other", [1] * 40, labels=[(i + 1) % 10 for i in range(40)])
    with pytest.raises(ValueError, match="not run on the same images"):
        script.paired(a, other)
    unknown = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "robustness_table.py"), f"A={folder}", "--paired", "A,B"],
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 2 and "argument --paired: expected A,B with both LABELs" in unknown.stderr


def test_protection_cost_counts_one_purifier_against_one_training_per_classifier(tmp_path, evaluate_run):
    folder, result = evaluate_run
    purifier = tmp_path / "purifier.json"  # resumed once: the epoch log's cumulative CPU counts, not this run's
    purifier.write_text(json.dumps({"train_cpu_seconds": 100.0, "epoch_log": [{"epoch": 0, "cpu_seconds": 7200.0}]}))
    madry = tmp_path / "madry.json"
    madry.write_text(json.dumps({"train_cpu_seconds": 5400.0}))
    script = _script("protection_cost")
    assert script.training_cpu_seconds(purifier) == 7200.0
    long_madry = tmp_path / "long_madry.json"  # a snapshot of a longer run: its CPU up to that epoch
    log = [
        {"epoch": 1, "cpu_seconds": 2700.0},
        {"epoch": 2, "cpu_seconds": 5400.0},
        {"epoch": 3, "cpu_seconds": 8100.0},
    ]
    long_madry.write_text(json.dumps({"epoch_log": log}))
    assert script.training_cpu_seconds(f"{long_madry}@2") == 5400.0
    with pytest.raises(ValueError, match="cannot take epochs 0 to 4"):
        script.training_cpu_seconds(f"{long_madry}@4")
    run = script.summary(folder)
    rows = script.cost_rows(7200.0, [("C", run), ("A", {**run, "worst_case": run["worst_case"] - 0.2})], [5400.0])
    assert [r["adversarial_cpu_hours"] for r in rows] == [1.5, 3.0]
    assert [r["purifier_cpu_hours"] for r in rows] == [2.0, 2.0]
    assert rows[1]["worst_case_lowest"] == pytest.approx(result.worst_case - 0.2)
    assert rows[1]["worst_case_mean"] == pytest.approx(result.worst_case - 0.1)
    plot = tmp_path / "cost.png"
    args = ["--purifier", purifier, "--protected", f"C={folder}", "--protected", f"A={folder}"]
    args += ["--adversarial", madry, "--adversarial", f"{long_madry}@2"]
    args += ["--adversarial-run", f"C (Madry)={folder}", "--plot", plot]
    printed = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "protection_cost.py"), *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = printed.strip().splitlines()
    assert lines[-1].startswith("| 2 (C, A) | 2.00 | 3.00 | ")
    assert plot.read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "protection_cost.py"), "--purifier", str(purifier)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--protected" in bad.stderr


def test_long_run_curve_reads_summaries_and_running_backups(tmp_path, evaluate_run):
    folder, result = evaluate_run
    rows = [
        {"epoch": 1, "cpu_seconds": 1800.0, "monitor_pgd": 0.9, "monitor_clean": 0.99},
        {"epoch": 2, "cpu_seconds": 3600.0, "monitor_pgd": 0.95, "monitor_clean": 0.99},
    ]
    (tmp_path / "trades.json").write_text(json.dumps({"train_cpu_seconds": 10.0, "epoch_log": rows}))
    backup = tmp_path / "madry.keras.backup"  # a training still running: its backup's epochs.json
    backup.mkdir()
    (backup / "epochs.json").write_text(json.dumps(rows[:1]))
    script = _script("long_run_curve")
    points = script.curve(script.epoch_log(tmp_path / "trades.json"), [(2, script.summary(folder))])
    assert [p["cpu_hours"] for p in points] == [0.5, 1.0] and points[0]["worst_case"] is None
    assert points[1]["worst_case"] == result.worst_case and points[1]["n"] == 30
    assert len(script.epoch_log(backup)) == 1
    with pytest.raises(ValueError, match="epoch 3"):
        script.curve(rows, [(3, script.summary(folder))])
    assert script.cpu_seconds_between(rows, 1, 2) == 1800.0 and script.cpu_seconds_between(rows, 0, 2) == 3600.0
    with pytest.raises(ValueError, match="epochs 1-2: cannot take epochs 1 to 3"):
        script.cpu_seconds_between(rows, 1, 3)
    out = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "long_run_curve.py"), "--training", f"T={tmp_path / 'trades.json'}"]
        + ["--training", f"M={backup}", "--evaluated", f"T@2={folder}", "--plot", str(tmp_path / "curve.png")]
        + ["--ymin", "80"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "| 2 | 1.00 | 95.0 | 99.0 |" in out.stdout and (tmp_path / "curve.png").stat().st_size > 0
    refused = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "long_run_curve.py"), "--training", f"T={backup}", "--ymin", "100"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "argument --ymin: expected a percentage in [0, 100), got 100" in refused.stderr


@pytest.mark.parametrize(
    "script", ["robustness_table", "apegan_model_c", "protection_cost", "apegan_fgsm_variants", "long_run_curve"]
)
def test_scripts_explain_themselves_and_refuse_bad_arguments(script):
    help_text = subprocess.run(
        [sys.executable, str(REPO / "experiments" / f"{script}.py"), "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "usage:" in help_text.stdout
    bad = {
        "robustness_table": ["no-equals-sign"],
        "apegan_model_c": ["--recipes", "nope", "--out", "x.json"],
        "protection_cost": ["--purifier", "missing.json", "--protected", "C=nowhere"],
        "apegan_fgsm_variants": ["--classifier", "missing.keras", "--out", "x.json", "--variants", "nope"],
        "long_run_curve": ["--training", "T=missing.json"],
    }[script]
    failed = subprocess.run([sys.executable, str(REPO / "experiments" / f"{script}.py"), *bad], capture_output=True)
    assert failed.returncode == 2


def test_apegan_fgsm_variants_trains_on_clipped_and_unclipped_pairs(tmp_path, mnist, mnist_model_c):
    import numpy as np

    from tfdefense.evaluation import accuracy

    script = _script("apegan_fgsm_variants")
    _, (x_test, y_test) = mnist
    x, y = x_test[:200], y_test[:200]
    clipped = script.fgsm(mnist_model_c, x, y, 0.3, "clipped")
    unclipped = script.fgsm(mnist_model_c, x, y, 0.3, "unclipped")
    assert clipped.min() >= 0 and clipped.max() <= 1 and np.abs(clipped - x).max() <= 0.3 + 1e-6
    assert unclipped.min() < -0.2 and unclipped.max() > 1.2  # cleverhans v1: no clipping
    assert np.abs(unclipped - x).max() == pytest.approx(0.3, abs=1e-6)
    assert accuracy(mnist_model_c, clipped, y) < accuracy(mnist_model_c, x, y) - 0.3
    model_path = tmp_path / "c.keras"
    mnist_model_c.save(model_path)
    out = tmp_path / "variants.json"
    printed = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "apegan_fgsm_variants.py"), "--classifier", str(model_path)]
        + ["--out", str(out), "--epochs", "1", "--n-train", "256", "--n-test", "100"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    results = json.loads(out.read_text())
    assert (results["train_digits"], results["test_digits"]) == (256, 100)
    assert set(results["variants"]) == {"clipped", "unclipped"}
    for row in results["variants"].values():
        assert len(row["g_mse"]) == 1 and row["g_mse"][0] > 0
        assert set(row["fgsm_error"]) == {"clipped", "unclipped"}
    assert results["bare"]["clipped"]["0.3"] > results["clean_error"]["none"]
    assert len(printed.strip().splitlines()) == 2 + 2 + 4  # header, 2 bare rows, 2 x 2 APE-GAN rows
