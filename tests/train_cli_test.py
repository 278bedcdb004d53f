"""`python -m tfdefense.train`: tiny real purifier runs (MNIST digits, model C), summary, resume, GAN kinds,
errors; a classifier run on the digits dataset."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.defenses import APEGAN, DefendedClassifier, Pix2PixDefense, RobustPurifier
from tfdefense.evaluation import accuracy
from tfdefense.export import export_saved_model
from tfdefense.train import main

TINY = ["--n-train", "256", "--epochs", "1", "--attack-steps", "2", "--width", "4", "--batch-size", "64"]


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory, mnist):
    """Model C, one epoch on 2,000 real training digits, saved as .keras."""
    from tfdefense.models import model_c, train_classifier

    (x_train, y_train), _ = mnist
    keras.utils.set_random_seed(0)
    model = model_c()
    train_classifier(model, x_train[:2000], y_train[:2000], epochs=1, batch_size=128, seed=0, verbose=0)
    path = tmp_path_factory.mktemp("classifier") / "model_c.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def test_images(mnist_npz):
    """The first 20 test images of what `--dataset mnist` loads (the CLI evaluates on these)."""
    from tfdefense.data import load_dataset

    _, (x_test, y_test) = load_dataset("mnist", download=False)
    return x_test[:20], y_test[:20]


def _args(classifier_path, out, *extra):
    return ["purifier", "--classifier", str(classifier_path), "--dataset", "mnist", "--out", str(out), *extra]


def test_robust_tiny_run_summary_defended_and_export(tmp_path, classifier_path, test_images):
    out = tmp_path / "robust.keras"
    assert main(_args(classifier_path, out, *TINY, "--eps", "0.3", "--eval-n", "20", "--eval-suite", "tiny")) == 0
    summary = json.loads((tmp_path / "robust.json").read_text())
    assert summary["kind"] == "robust" and summary["train_examples"] == 256 and summary["eval_images"] == 20
    assert summary["resumed_from_epoch"] == 0 and summary["settings"]["attack_steps"] == 2
    for key in ("clean_accuracy", "robust_accuracy", "classifier_clean_accuracy"):
        assert 0 <= summary[key] <= 1, key
    assert {"fgsm", "pgd-10x2", "apgd-ce", "transfer-pgd"} <= set(summary["attacks"])
    assert summary["robust_accuracy"] <= min(summary["attacks"].values()) <= summary["clean_accuracy"] + 1e-9
    assert not (tmp_path / "robust.keras.backup").exists()  # removed once the purifier is saved

    classifier = keras.models.load_model(classifier_path, safe_mode=True)
    purifier = keras.models.load_model(out, safe_mode=True)
    assert isinstance(purifier, RobustPurifier) and purifier.generator.count_params() < 60_000
    x, y = test_images
    defended = DefendedClassifier(purifier, classifier)
    logits = np.asarray(defended(x))
    assert logits.shape == (20, 10)
    assert np.mean(logits.argmax(-1) == y) == pytest.approx(summary["clean_accuracy"])
    assert np.mean(np.asarray(classifier(x)).argmax(-1) == y) == pytest.approx(summary["classifier_clean_accuracy"])
    exported = tf.saved_model.load(str(export_saved_model(purifier, tmp_path / "sm", classifier=classifier)))
    np.testing.assert_allclose(exported.purify(tf.constant(x)).numpy(), purifier.purify(x), atol=1e-5)
    np.testing.assert_allclose(exported.classify(tf.constant(x)).numpy(), logits, atol=1e-4)


@pytest.fixture(scope="module")
def second_classifier_path(tmp_path_factory, mnist):
    """A plain keras.Sequential (another family than model C), one epoch on 2,000 real digits."""
    (x_train, y_train), _ = mnist
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"), keras.layers.Flatten()]
        + [keras.layers.Dense(10)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train[:2000], y_train[:2000], batch_size=128, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("second") / "sequential.keras"
    model.save(path)
    return path


def test_ensemble_purifier_names_every_classifier_and_a_held_out_one(
    tmp_path, classifier_path, second_classifier_path, test_images
):
    out = tmp_path / "ensemble.keras"
    held_out = tmp_path / "held_out.keras"
    keras.models.load_model(classifier_path).save(held_out)  # a copy stands in for a classifier never trained on
    extra = ["--classifier", str(second_classifier_path), "--eval-classifier", str(held_out), "--ensemble", "all"]
    extra += [*TINY, "--eval-n", "20", "--eval-suite", "tiny"]
    assert main(_args(classifier_path, out, *extra)) == 0
    summary = json.loads((tmp_path / "ensemble.json").read_text())
    assert summary["classifiers"] == [str(classifier_path), str(second_classifier_path)]
    assert summary["eval_classifiers"] == [str(held_out)] and summary["settings"]["ensemble"] == "all"
    rows = summary["per_classifier"]
    assert [(r["classifier"], r["role"]) for r in rows] == [
        (str(classifier_path), "trained"),
        (str(second_classifier_path), "trained"),
        (str(held_out), "held-out"),
    ]
    assert summary["robust_accuracy"] == rows[0]["robust_accuracy"]  # the top level is the first classifier's
    purifier = keras.models.load_model(out, safe_mode=True)
    assert isinstance(purifier, RobustPurifier) and len(purifier.classifiers) == 2
    x, y = test_images
    for row in rows:
        classifier = keras.models.load_model(row["classifier"], safe_mode=True)
        defended = DefendedClassifier(purifier, classifier)
        assert accuracy(defended, x, y) == pytest.approx(row["clean_accuracy"])
        assert 0 <= row["robust_accuracy"] <= row["clean_accuracy"] + 1e-9 and "apgd-ce" in row["attacks"]
    exported = tf.saved_model.load(str(export_saved_model(purifier, tmp_path / "sm", classifier=classifier)))
    np.testing.assert_allclose(exported.purify(tf.constant(x)).numpy(), purifier.purify(x), atol=1e-5)


def test_finetune_classifier_saves_the_tuned_classifier_beside_the_purifier(tmp_path, classifier_path, test_images):
    out = tmp_path / "ontop.keras"
    assert (
        main(_args(classifier_path, out, *TINY, "--finetune-classifier", "--eval-n", "20", "--eval-suite", "none")) == 0
    )
    tuned_path = tmp_path / "ontop.classifier.keras"
    summary = json.loads((tmp_path / "ontop.json").read_text())
    assert summary["finetuned_classifiers"] == [str(tuned_path)] and summary["settings"]["finetune_classifier"]
    (row,) = summary["per_classifier"]  # names the classifier it evaluated: the tuned one
    assert (row["classifier"], row["fine_tuned_from"]) == (str(tuned_path), str(classifier_path))
    original = keras.models.load_model(classifier_path, safe_mode=True)
    tuned = keras.models.load_model(tuned_path, safe_mode=True)
    assert not all(np.array_equal(a, b) for a, b in zip(original.get_weights(), tuned.get_weights(), strict=True))
    x, y = test_images
    purifier = keras.models.load_model(out, safe_mode=True)
    assert accuracy(DefendedClassifier(purifier, tuned), x, y) == pytest.approx(summary["clean_accuracy"])
    assert accuracy(tuned, x, y) == pytest.approx(summary["classifier_clean_accuracy"])


def test_holdout_monitor_logs_every_epoch_in_the_summary(tmp_path, classifier_path):
    out = tmp_path / "monitored.keras"
    tiny = [*TINY[:2], "--epochs", "2", *TINY[4:], "--save-every", "1"]
    assert main(_args(classifier_path, out, *tiny, "--holdout", "32", "--eval-n", "8", "--eval-suite", "none")) == 0
    for epoch in (1, 2):
        assert isinstance(keras.models.load_model(tmp_path / f"monitored.epoch{epoch}.keras"), RobustPurifier)
    summary = json.loads((tmp_path / "monitored.json").read_text())
    assert summary["train_examples"] == 256 - 32 and summary["settings"]["holdout"] == 32
    rows = summary["epoch_log"]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert 0 <= row["monitor_pgd"] <= 1 and 0 <= row["monitor_clean"] <= 1 and row["cpu_seconds"] > 0
    assert rows[1]["cpu_seconds"] > rows[0]["cpu_seconds"]  # cumulative


def test_adversarial_training_of_a_saved_classifier_resumes_and_feeds_the_purifier(tmp_path, classifier_path, capsys):
    out = tmp_path / "madry.keras"
    args = ["adversarial", "--classifier", str(classifier_path), "--dataset", "mnist", "--out", str(out)]
    args += ["--n-train", "288", "--attack-steps", "2", "--batch-size", "64", "--holdout", "32"]
    args += ["--eval-n", "20", "--eval-suite", "tiny", "--precision", "bf16"]
    with pytest.MonkeyPatch.context() as patch:
        _die_after_the_first_backup(patch)
        with pytest.raises(Interrupted):
            main([*args, "--epochs", "2"])
    assert main([*args, "--epochs", "2", "--save-every", "2"]) == 0
    assert "resuming from epoch 1" in capsys.readouterr().out
    snapshot = keras.models.load_model(tmp_path / "madry.epoch2.keras", safe_mode=True)
    assert not (tmp_path / "madry.epoch1.keras").exists()
    summary = json.loads((tmp_path / "madry.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["train_examples"] == 256
    assert [r["epoch"] for r in summary["epoch_log"]] == [1, 2]
    assert all("monitor_pgd" in r and r["cpu_seconds"] > 0 for r in summary["epoch_log"])
    assert "transfer-pgd" not in summary["attacks"] and "apgd-ce" in summary["attacks"]
    assert not (tmp_path / "madry.keras.backup").exists()
    original_model = keras.models.load_model(classifier_path, safe_mode=True)
    trained = keras.models.load_model(out, safe_mode=True)
    assert not isinstance(trained, RobustPurifier) and trained.output_shape == (None, 10)
    assert not np.array_equal(original_model.get_weights()[0], trained.get_weights()[0])
    for saved, final in zip(snapshot.get_weights(), trained.get_weights(), strict=True):  # epoch 2 is the last
        np.testing.assert_array_equal(saved, final)
    # The adversarially trained classifier is what a purifier on top of it takes.
    assert main(_args(out, tmp_path / "ontop.keras", *TINY, "--eval-suite", "none", "--eval-n", "8")) == 0
    assert (
        main(
            ["adversarial", "--classifier", str(classifier_path), "--dataset", "mnist", "--out", str(out), "--mix", "2"]
        )
        == 2
    )
    assert "--mix" in capsys.readouterr().err


class Interrupted(Exception):
    """Stands in for a kill right after an epoch's backup."""


def _die_after_the_first_backup(monkeypatch):
    save = keras.callbacks.BackupAndRestore.on_epoch_end

    def save_then_die(self, epoch, logs=None):
        save(self, epoch, logs)
        raise Interrupted

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", save_then_die)


def test_resume_after_interruption_finishes_from_the_backup(tmp_path, classifier_path, monkeypatch, capsys):
    out = tmp_path / "robust.keras"
    argv = _args(
        classifier_path,
        out,
        "--n-train",
        "128",
        "--epochs",
        "2",
        "--attack-steps",
        "1",
        "--width",
        "4",
        "--precision",
        "bf16",
        "--eval-n",
        "20",
        "--eval-suite",
        "none",
    )
    _die_after_the_first_backup(monkeypatch)
    with pytest.raises(Interrupted):
        main(argv)
    monkeypatch.undo()
    backup = tmp_path / "robust.keras.backup"
    assert (backup / "latest.weights.h5").is_file() and not out.exists()
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1

    # Other settings are refused, and the backup is left as it was.
    assert main([*argv, "--seed", "1"]) == 2
    assert "other settings (seed: 0 -> 1)" in capsys.readouterr().err
    assert (backup / "latest.weights.h5").is_file()

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "resuming from epoch 1" in printed and "Epoch 2/2" in printed and "Epoch 1/2" not in printed
    summary = json.loads((tmp_path / "robust.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["settings"]["precision"] == "bf16"
    assert not backup.exists()
    assert keras.models.load_model(out, safe_mode=True).precision == "bf16"


@pytest.mark.parametrize("kind, cls", [("pix2pix", Pix2PixDefense), ("apegan", APEGAN)])
def test_gan_kinds_train_on_pairs_crafted_against_the_classifier(tmp_path, classifier_path, test_images, kind, cls):
    out = tmp_path / f"{kind}.keras"
    extra = ["--attack-steps", "2"] if kind == "pix2pix" else []
    argv = _args(
        classifier_path,
        out,
        "--kind",
        kind,
        "--n-train",
        "128",
        "--epochs",
        "1",
        "--width",
        "4",
        *extra,
        "--eval-n",
        "20",
        "--eval-suite",
        "none",
    )
    assert main(argv) == 0
    summary = json.loads((tmp_path / f"{kind}.json").read_text())
    assert summary["kind"] == kind and summary["train_examples"] == 128 and 0 <= summary["clean_accuracy"] <= 1
    classifier = keras.models.load_model(classifier_path, safe_mode=True)
    purifier = keras.models.load_model(out, safe_mode=True)
    assert isinstance(purifier, cls)
    x = test_images[0][:8]
    logits = np.asarray(DefendedClassifier(purifier, classifier)(x))
    assert logits.shape == (8, 10) and np.isfinite(logits).all()
    exported = tf.saved_model.load(str(export_saved_model(purifier, tmp_path / "sm", classifier=classifier)))
    assert exported.classify(tf.constant(x)).numpy().shape == (8, 10)
    assert not (tmp_path / f"{kind}.keras.backup").exists()


def test_bad_arguments_fail_with_one_line_before_training(tmp_path, classifier_path, capsys):
    out = tmp_path / "p.keras"
    copy = tmp_path / "copy.keras"
    copy.write_bytes(classifier_path.read_bytes())
    cases = [
        (["--kind", "apegan", "--attack-steps", "3"], "--attack-steps"),
        (["--kind", "pix2pix", "--precision", "bf16"], "--precision"),
        (["--eps", "2"], "--eps"),
        (["--epochs", "0"], "--epochs"),
        (["--lambda-trades", "-1"], "--lambda-trades"),
        (["--ensemble", "all"], "--ensemble"),
        (["--kind", "apegan", "--classifier", str(classifier_path)], "--classifier/--eval-classifier"),
        (["--kind", "pix2pix", "--finetune-classifier"], "--finetune-classifier"),
        (["--kind", "apegan", "--classifier", str(copy)], "--classifier: one classifier for --kind apegan"),
        (["--eval-classifier", str(tmp_path / "missing.keras")], "--eval-classifier"),
        (["--kind", "apegan", "--holdout", "10"], "--holdout"),
        (["--holdout", "0"], "--holdout"),
        (["--max-cpu-seconds", "-5"], "--max-cpu-seconds"),
        (["--kind", "pix2pix", "--lambda-adv-cls", "0"], "--lambda-adv-cls"),
    ]
    for extra, flag in cases:
        assert main(_args(classifier_path, out, *extra)) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: argument {flag}") and "\n" not in err, err
    assert (
        main(["purifier", "--classifier", str(tmp_path / "none.keras"), "--dataset", "mnist", "--out", str(out)]) == 2
    )
    assert "--classifier" in capsys.readouterr().err
    assert main(_args(classifier_path, out, "--dataset", "npz:" + str(tmp_path / "missing.npz"))) == 2
    assert "--dataset" in capsys.readouterr().err
    foreign = tmp_path / "p.keras.backup"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the user's")
    assert main(_args(classifier_path, out)) == 2
    assert "not a backup of this command" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "the user's" and not out.exists()


@pytest.mark.slow
def test_killed_process_resumes_in_a_new_process(tmp_path, classifier_path):
    """A real SIGKILL after the first epoch's backup; a second process finishes the run."""
    out = tmp_path / "robust.keras"
    argv = [
        sys.executable,
        "-m",
        "tfdefense.train",
        *_args(
            classifier_path,
            out,
            "--n-train",
            "256",
            "--epochs",
            "3",
            "--attack-steps",
            "2",
            "--width",
            "4",
            "--eval-n",
            "20",
            "--eval-suite",
            "none",
        ),
    ]
    env = dict(os.environ)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metadata = tmp_path / "robust.keras.backup" / "training_metadata.json"
    deadline = time.monotonic() + 600
    while not metadata.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metadata.is_file(), "no backup was written"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "robust.json").read_text())
    assert summary["resumed_from_epoch"] >= 1 and out.is_file()


def test_classifier_run_writes_model_and_summary(tmp_path):
    out = tmp_path / "c.keras"
    main(
        ["classifier", "--model", "C", "--dataset", "digits", "--image-size", "28", "--epochs", "8", "--out", str(out)]
    )
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["test_examples"] == 359 and summary["test_accuracy"] > 0.8
    assert summary["epochs"] == summary["epochs_this_run"] == 8 and summary["resumed_from_epoch"] == 0
    model = keras.saving.load_model(out)
    from tfdefense.data import load_dataset

    _, (x_test, y_test) = load_dataset("digits", image_size=28)
    assert accuracy(model, x_test, y_test) == pytest.approx(summary["test_accuracy"])
    assert not out.with_name(out.name + ".backup").exists()

    held = tmp_path / "held.keras"
    assert (
        main(
            ["classifier", "--model", "A", "--dataset", "digits", "--image-size", "28", "--epochs", "1"]
            + ["--holdout", "100", "--optimizer", "rmsprop", "--out", str(held)]
        )
        == 0
    )
    held_summary = json.loads(held.with_suffix(".json").read_text())
    assert held_summary["train_examples"] == summary["train_examples"] - 100 and held_summary["holdout"] == 100
    assert type(keras.saving.load_model(held).optimizer).__name__ == "RMSprop"
    assert main(["classifier", "--model", "A", "--dataset", "digits", "--holdout", "0", "--out", str(held)]) == 2
