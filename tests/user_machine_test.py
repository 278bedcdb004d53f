"""The test suite on a user's machine: a copy of the repository with nothing beside it, MNIST only in keras' cache.

A subprocess runs a small part of the suite in a temporary copy of the package (so no `shared/` folder
sits beside it), with $TFDEFENSE_DATA_DIR and $TFDEFENSE_PAPERS_DIR unset, $HOME empty, keras' downloads
failing at once (an unreachable proxy: offline) and $KERAS_HOME holding only `datasets/mnist.npz`.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COPIED = ("conftest.py", "setup.cfg", "pyproject.toml", "tfdefense")
PART_OF_THE_SUITE = (
    "tfdefense/data/datasets_test.py::test_mnist_is_the_official_split",
    "tfdefense/data/datasets_test.py::test_data_dir_from_environment",
    "tfdefense/data/datasets_test.py::test_take_balanced",  # through the `mnist` fixture
    "tfdefense/data/datasets_test.py::test_cifar10_subset_or_official_split",
    "tfdefense/evaluation/paper_values_test.py::test_every_value_is_in_its_papers_text",
)


def _user_checkout(tmp_path):
    clone = tmp_path / "work" / "tfdefense-clone"
    clone.mkdir(parents=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, clone / name)
    assert not (clone.parent / "shared").exists()
    return clone


def _user_env(tmp_path, keras_home):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TFDEFENSE_DATA_DIR", "TFDEFENSE_PAPERS_DIR", "TFDEFENSE_TESTS_STRICT", "PYTHONPATH")
    }
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    unreachable = "http://127.0.0.1:9"  # nothing listens: every keras download fails at once
    env.update(
        HOME=str(home),
        KERAS_HOME=str(keras_home),
        HTTP_PROXY=unreachable,
        HTTPS_PROXY=unreachable,
        http_proxy=unreachable,
        https_proxy=unreachable,
        NO_PROXY="",
        no_proxy="",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def _pytest(clone, env, *args):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:randomly", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # three subprocesses, two of them import TensorFlow: ~30 s of CPU, ~100 s on 2 busy cores
def test_suite_runs_with_mnist_only_in_keras_cache_and_stops_at_once_without_it(tmp_path, mnist_npz):
    clone = _user_checkout(tmp_path)
    keras_home = tmp_path / "keras"
    (keras_home / "datasets").mkdir(parents=True)
    shutil.copy2(mnist_npz, keras_home / "datasets" / "mnist.npz")
    env = _user_env(tmp_path, keras_home)
    where = subprocess.run(
        [sys.executable, "-c", "import tfdefense; print(tfdefense.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pathlib.Path(where.stdout.strip()).is_relative_to(clone), where.stdout + where.stderr

    run = _pytest(clone, env, *PART_OF_THE_SUITE)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "3 passed, 2 skipped" in out, out
    assert "TFDEFENSE_PAPERS_DIR" in out and "CIFAR-10 not found" in out, out  # the skips say why

    empty = tmp_path / "empty-keras"
    empty.mkdir()
    run = _pytest(clone, _user_env(tmp_path, empty), *PART_OF_THE_SUITE)
    out = run.stdout + run.stderr
    assert run.returncode == 4, out  # pytest.ExitCode.USAGE_ERROR: stopped before running any test
    assert "no tests ran" in out and not re.search(r"\d+ (passed|failed|errors?)\b", out), out
    assert out.count("The tests need the real MNIST digits") == 1, out
    for place in (
        str(tmp_path / "home" / ".tfdefense" / "data" / "mnist.npz"),
        str(empty / "datasets" / "mnist.npz"),
        "TFDEFENSE_DATA_DIR",
        "storage.googleapis.com",
    ):
        assert place in out, (place, out)
