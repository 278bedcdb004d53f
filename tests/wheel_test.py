"""The built wheel installs and runs outside the repository.

`python -m build` makes an sdist and a wheel (the wheel built from the sdist) of a copy of the repository.
The wheel goes into a fresh virtual environment; the venv sees the system's site-packages (so TensorFlow
is not reinstalled offline) and the test checks that `tfdefense` is imported from the venv's copy, run from
a temporary folder. Then: both CLIs (`--version`, `--list`, `--help`) and one tiny `evaluate_model` call.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
IGNORED = (".git", "build", "dist", "*.egg-info", "__pycache__", "runs", ".venv", ".pytest_cache")
TINY_EVALUATION = """
import json, pathlib, sys
import keras
import tfdefense
from tfdefense.data import load_dataset

print("tfdefense from", tfdefense.__file__)
(x, y), _ = load_dataset("digits")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, epochs=20, verbose=0)
tfdefense.evaluate_model(model, "digits", 0.1, n=16, suite="quick", out=sys.argv[1], progress=False)
"""


def _copy_of_the_repository(destination):
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:  # not a git checkout (e.g. an unpacked sdist): copy all but build outputs
        shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(*IGNORED))
        return destination
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _package_data_files():
    """Every file of the package that is not Python source: the data files read at run time (py.typed too)."""
    package = REPO / "tfdefense"
    return sorted(
        str(p.relative_to(REPO))
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


@pytest.mark.slow  # builds, creates a venv and imports TensorFlow three times: ~1-2 min
def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    pytest.importorskip("build")
    source = _copy_of_the_repository(tmp_path / "source")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)], cwd=tmp_path)
    wheels, sdists = list(dist.glob("tfdefense-*.whl")), list(dist.glob("tfdefense-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    data_files = _package_data_files()
    assert "tfdefense/py.typed" in data_files
    assert set(data_files) <= names, sorted(set(data_files) - names)
    assert "tfdefense/evaluation/presets/recipes.py" in names and not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    # --ignore-installed: installs the wheel into the venv beside (never over) an editable install outside it.
    _run(
        [python, "-m", "pip", "install", "--no-index", "--no-deps", "--ignore-installed", str(wheels[0])], cwd=tmp_path
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    where = _run([python, "-c", "import tfdefense; print(tfdefense.__file__, tfdefense.__version__)"], cwd=elsewhere)
    path, version = where.split()
    assert pathlib.Path(path).is_relative_to(venv), where
    assert version == wheels[0].name.split("-")[1]
    requirements = _run(
        [
            python,
            "-c",
            (
                "from importlib.metadata import requires, version\n"
                "from packaging.requirements import Requirement\n"
                "for r in map(Requirement, requires('tfdefense')):\n"
                "    if r.marker is None or r.marker.evaluate({'extra': ''}):\n"
                "        assert version(r.name) in r.specifier, (str(r), version(r.name))\n"
                "print('requirements met')"
            ),
        ],
        cwd=elsewhere,
    )
    assert "requirements met" in requirements

    for module in ("tfdefense.evaluate", "tfdefense.train"):
        assert _run([python, "-m", module, "--version"], cwd=elsewhere).strip() == f"tfdefense {version}"
    listed = _run([python, "-m", "tfdefense.evaluate", "--list"], cwd=elsewhere)
    assert "quickstart" in listed and "apegan-mnist" in listed
    assert "classifier" in _run([python, "-m", "tfdefense.train", "--help"], cwd=elsewhere)

    out = tmp_path / "evaluation"
    printed = _run([python, "-c", TINY_EVALUATION, str(out)], cwd=elsewhere)
    assert f"tfdefense from {venv}" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "evaluate_model" and results["eps"] == 0.1 and results["rows"]
    assert (out / "report.md").is_file()
