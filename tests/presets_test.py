"""Every paper preset at tiny scale: runs end to end, writes a valid report, reproduces, resumes, reads user data."""

import json
import os
import time

import numpy as np
import pytest

from tfdefense.evaluation import reports
from tfdefense.evaluation.runner import PresetUnavailable, list_presets, run_preset

PAPER_PRESETS = ("apegan-mnist", "apegan-cifar10", "pix2pix-mnist", "pix2pix-cifar10", "versatile", "egan")


def _rows(results):
    return {(r["table"], r["defense"], r["attack"], r["metric"], r["eval_mode"]): r["value"] for r in results["rows"]}


def _plots_in(report):
    return {line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")}


def test_every_paper_preset_is_registered():
    assert set(PAPER_PRESETS) <= set(list_presets())


# Opt-in (1.5-2 minutes each on two busy cores): the CIFAR-10 twins of the MNIST presets, which share their
# code paths, and the presets that train several GANs; apegan-mnist keeps a preset in the default tier.
_SLOW_PRESETS = ("apegan-cifar10", "pix2pix-cifar10", "pix2pix-mnist", "versatile", "egan")
# Presets whose tiny scale reads CIFAR-10 (versatile's tiny scale runs on it too).
_CIFAR_PRESETS = ("apegan-cifar10", "pix2pix-cifar10", "versatile")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_PRESETS else n for n in PAPER_PRESETS]
)
def test_preset_runs_at_tiny_scale(tmp_path, name, request):
    if name in _CIFAR_PRESETS:
        request.getfixturevalue("cifar10")  # skipped with the reason (a failure in CI) where CIFAR-10 is absent
    results = run_preset(name, tmp_path, scale="tiny", progress=False)
    reports.validate_results(results)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["rows"] == results["rows"] and stored["preset"] == name
    assert (tmp_path / "results.csv").read_text().count("\n") == len(results["rows"]) + 1
    report = (tmp_path / "report.md").read_text()
    assert f"# tfdefense evaluation: {name} (tiny scale)" in report
    for plot in _plots_in(report):
        assert (tmp_path / plot).stat().st_size > 1000
    protocols = {r["protocol"] for r in results["rows"]}
    assert "adaptive" in protocols  # every preset also runs the adaptive protocol
    values = [
        r["value"] for r in results["rows"] if r["metric"] in ("accuracy", "error_rate") and r["value"] is not None
    ]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    # The bare classifier under the strongest listed attack is beaten by the attack.
    rows = _rows(results)
    adaptive = [v for (table, _, attack, _, _), v in rows.items() if "worst case" in attack]
    assert adaptive and all(0.0 <= v <= 1.0 for v in adaptive)
    defenses = {r["defense"] for r in results["rows"]}
    if name == "egan":  # the learned baselines sit beside EGAN and APE-GAN
        assert {"magnet", "magnet (detector + reformer)", "autoencoder", "dncnn", "defensegan"} <= defenses
        assert any(
            r["defense"] == "defensegan" and r["protocol"] == "adaptive" and "EOT" in r["attack"]
            for r in results["rows"]
        )
    if name == "versatile":  # MAE / PSNR of the purified images, also as plots
        assert {"purified_mae.png", "purified_psnr.png"} <= set(_plots_in(report))
    if name == "pix2pix-mnist":  # the Defense-GAN comparison setting: models A-D, FGSM 0.3 and C&W-L2
        comparison = [r for r in results["rows"] if r["table"].startswith("Defense-GAN comparison")]
        for model in "ABCD":
            labels = {
                r["defense"]
                for r in comparison
                if r["defense"].endswith(f"model {model}") or f"of model {model} " in r["defense"]
            }
            assert len(labels) == 6, labels  # none, pix2pix, magnet x2, defensegan, adversarial training
        assert {r["attack"] for r in comparison} == {"clean", "fgsm eps 0.3", "cw_l2"}


def test_png_roundtrip_is_reported_beside_tensor_numbers(tmp_path):
    results = run_preset("apegan-mnist", tmp_path, scale="tiny", progress=False, png_roundtrip=True, attacks=["fgsm"])
    modes = {r["eval_mode"] for r in results["rows"]}
    assert modes == {"tensor", "png"}
    assert "8-bit PNG round trip vs tensor-direct" in (tmp_path / "report.md").read_text()
    assert not any(r["attack"] in ("lbfgs", "cw_l2", "jsma") for r in results["rows"])  # --attacks narrows


def test_same_seed_reproduces_numbers_and_rerun_reuses_models(tmp_path):
    first = run_preset("egan", tmp_path / "a", scale="tiny", progress=False, defenses=["egan", "bit_depth"])
    second = run_preset("egan", tmp_path / "b", scale="tiny", progress=False, defenses=["egan", "bit_depth"])
    timing = lambda rows: [r for r in rows if r["protocol"] != "timing"]  # noqa: E731  (wall times differ)
    assert [r["value"] for r in timing(first["rows"])] == [r["value"] for r in timing(second["rows"])]
    models = sorted(p.name for p in (tmp_path / "a" / "models").iterdir())
    again = run_preset("egan", tmp_path / "a", scale="tiny", progress=False, defenses=["egan", "bit_depth"])
    assert sorted(p.name for p in (tmp_path / "a" / "models").iterdir()) == models
    assert [r["value"] for r in timing(again["rows"])] == [r["value"] for r in timing(first["rows"])]


def test_a_users_own_npz_in_the_data_dir(tmp_path, mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    to_uint8 = lambda x: np.round(x[..., 0] * 255).astype(np.uint8)  # noqa: E731  (keras' mnist.npz layout)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=to_uint8(x_train[:500]),
        y_train=y_train[:500],
        x_test=to_uint8(x_test[:100]),
        y_test=y_test[:100],
    )
    results = run_preset(
        "egan", tmp_path / "run", scale="tiny", data_dir=str(tmp_path), progress=False, defenses=["bit_depth"]
    )
    assert "400 train / 60 test" in results["data"]["description"]


def test_missing_pieces_fail_with_a_clear_message(tmp_path):
    with pytest.raises(PresetUnavailable, match="--weights"):
        run_preset("versatile", tmp_path, scale="full", progress=False)


@pytest.mark.slow
def test_robust_preset_runs_at_tiny_scale(tmp_path):
    from tfdefense.evaluation.robustness import SanityCheckError

    try:
        run_preset("robust", tmp_path, scale="tiny", progress=False)
    except SanityCheckError:  # allowed at this scale: the report is written before the run fails
        pass
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    defenses = {r["defense"] for r in rows}
    assert {"none", "robust", "madry", "pix2pix", "apegan"} <= defenses
    worst = [r for r in rows if r["attack"].startswith("worst case")]
    assert len(worst) == 5
    assert (tmp_path / "report.md").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["preset"] == "robust"


@pytest.mark.slow  # the tiny quickstart trains two models (about a minute on two busy cores)
def test_quickstart_rerun_recomputes_no_attack_and_writes_the_same_numbers(tmp_path, monkeypatch):
    from tfdefense.attacks.base import Attack

    first = run_preset("quickstart", tmp_path, scale="tiny", progress=False)
    steps = sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert len(steps) == 2
    stale = tmp_path / "models" / ".model_c-0123456789abcdef.k2j4_x9q.tmp.keras"  # as a kill during a save leaves it
    stale.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    calls = []
    original = Attack.__call__

    def counted(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Attack, "__call__", counted)
    second = run_preset("quickstart", tmp_path, scale="tiny", progress=False)
    assert calls == []  # every attack came from the adversarial cache or a stored step
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == steps

    def numbers(results):
        return [
            (r["table"], r["defense"], r["attack"], r["value"]) for r in results["rows"] if r["protocol"] != "timing"
        ]

    assert numbers(second) == numbers(first)
    assert numbers(json.loads((tmp_path / "results.json").read_text())) == numbers(first)


def test_apegan_model_c_recipe_is_a_setting(tmp_path):
    import keras

    with pytest.raises(ValueError, match="classifier_optimizer.*'adagrad'"):
        run_preset(
            "apegan-mnist", tmp_path / "bad", scale="tiny", progress=False, settings={"classifier_optimizer": "adagrad"}
        )
    assert not (tmp_path / "bad" / "models").exists()
    with pytest.raises(ValueError, match="classifier_c_epochs.*0"):
        run_preset("apegan-mnist", tmp_path / "bad", scale="tiny", progress=False, settings={"classifier_c_epochs": 0})
    # C's recipe is its own: 3 epochs of RMSprop for C, A (DeepFool's target) keeps Adam and classifier_epochs.
    settings = {"classifier_optimizer": "rmsprop", "classifier_learning_rate": 0.0005, "classifier_c_epochs": 3}
    results = run_preset(
        "apegan-mnist", tmp_path / "run", scale="tiny", progress=False, settings=settings, attacks=["fgsm", "deepfool"]
    )
    steps_per_epoch = -(-300 // 64)  # the tiny scale's 300 training digits, batches of 64
    (path,) = (tmp_path / "run" / "models").glob("C-*.keras")
    model_c = keras.saving.load_model(path)
    assert type(model_c.optimizer).__name__ == "RMSprop"
    assert float(model_c.optimizer.learning_rate) == pytest.approx(0.0005)
    assert int(model_c.optimizer.iterations) == 3 * steps_per_epoch
    (path,) = (tmp_path / "run" / "models").glob("A-*.keras")
    model_a = keras.saving.load_model(path)
    assert type(model_a.optimizer).__name__ == "Adam"
    assert int(model_a.optimizer.iterations) == 2 * steps_per_epoch
    assert {"fgsm", "deepfool"} <= {r["attack"] for r in results["rows"]}


def test_apegan_mnist_full_scale_trains_c_with_the_recipe():
    from tfdefense.evaluation.presets.apegan import SETTINGS

    full = SETTINGS["mnist"]["scales"]["full"]
    recipe = {k: full[k] for k in ("classifier_optimizer", "classifier_learning_rate", "classifier_c_epochs")}
    assert recipe == {"classifier_optimizer": "rmsprop", "classifier_learning_rate": 1e-3, "classifier_c_epochs": 4}
    assert full["classifier_epochs"] == 10  # models A and B


@pytest.mark.slow  # trains the tiny preset's C, B and APE-GAN: 1-4 minutes on two busy cores
def test_apegan_stores_cw_l0_and_cw_linf_in_batches(tmp_path, monkeypatch):
    import tfdefense.attacks

    calls, generate = [], tfdefense.attacks.generate

    def recording(attack, model, x, *args, **kwargs):
        calls.append((attack.name, len(x), kwargs.get("batch_size")))
        return generate(attack, model, x, *args, **kwargs)

    monkeypatch.setattr(tfdefense.attacks, "generate", recording)
    settings = {"cw_l0": 27, "expensive": 3}  # C&W-Linf runs on the tiny scale's `expensive` images
    run_preset("apegan-mnist", tmp_path, scale="tiny", progress=False, settings=settings, attacks=["cw_l0", "cw_linf"])
    assert ("cw_l0", 27, 25) in calls  # two stored calls: 25 images, then 2
    assert ("cw_linf", 3, 100) in calls
    assert all(size is None for name, _, size in calls if name not in ("cw_l0", "cw_linf"))  # generate's default
