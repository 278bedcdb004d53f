import json
import subprocess
import sys

from tfdefense.evaluate import main
from tfdefense.evaluation import reports
from tfdefense.evaluation.runner import list_presets


def test_list_names_the_presets(capsys):
    assert main(["--list"]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert "quickstart" in list_presets()


def test_unknown_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["--preset", "nope", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: argument --preset: unknown preset 'nope'") and "\n" not in error


def test_quickstart_tiny_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "quickstart"
    assert main(["--preset", "quickstart", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    reports.validate_results(results)
    rows = {(r["table"], r["defense"], r["attack"]): r["value"] for r in results["rows"]}
    assert rows[("Accuracy, attacks on the bare classifier", "none", "clean")] > 0.8
    assert rows[("Accuracy, attacks on the bare classifier", "none", "pgd")] < 0.05
    assert any(r["protocol"] == "adaptive" for r in results["rows"])
    for name in ("report.md", "results.csv", "accuracy_vs_eps.png", "samples.png"):
        assert (out / name).is_file()
    assert "digits" in (out / "report.md").read_text()

    # The exported defended classifier serves without tfdefense.
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(out / 'saved_model')!r})\n"
        "x = tf.zeros([2, 28, 28, 1])\n"
        "print(m.purify(x).shape, m.classify(x).shape)\n"
        "assert 'tfdefense' not in sys.modules\n"
    )
    served = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-2000:]
    assert "(2, 28, 28, 1) (2, 10)" in served.stdout

    # A re-run reuses the trained models and cached examples and reports the same numbers.
    models_before = sorted(p.name for p in (out / "models").iterdir())
    assert main(["--preset", "quickstart", "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["value"] for r in again["rows"]] == [r["value"] for r in results["rows"]]
    assert sorted(p.name for p in (out / "models").iterdir()) == models_before


def test_set_errors_name_the_argument_before_any_training(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["--preset", "quickstart", "--scale", "tiny", "--out", out, "--set", "epochs"]) == 2
    assert "argument --set: expected KEY=VALUE, got 'epochs'" in capsys.readouterr().err
    assert main(["--preset", "quickstart", "--scale", "tiny", "--out", out, "--set", "epochs=3"]) == 2
    assert "argument --set: settings: 'quickstart' at scale 'tiny' has no setting 'epochs'" in capsys.readouterr().err
    assert main(["--preset", "quickstart", "--scale", "tiny", "--out", out, "--set", "classifier_epochs=many"]) == 2
    assert "'classifier_epochs' expects a value like its default 8, got 'many'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "models").exists()
