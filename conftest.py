"""Shared test fixtures: real MNIST and CIFAR-10 found by `load_dataset`'s own search, a trained MNIST model C.

Data comes through `tfdefense.data.load_dataset`'s search: the data dir ($TFDEFENSE_DATA_DIR, else
~/.tfdefense/data), then keras' cache ($KERAS_HOME/datasets, else ~/.keras/datasets), then keras'
download (which fills keras' cache). In the project's own checkout a `shared/data` folder beside the
repository is the data dir when $TFDEFENSE_DATA_DIR is unset.

- MNIST (`mnist.npz`, the official 60000/10000 split) is required: when a selected test needs it and
  it is found nowhere (offline, nothing cached), the session stops before running anything, with one
  message saying where the file is looked for and how to provide it.
- CIFAR-10 tests (slow tier and the CIFAR reader's tests) are skipped with the reason when CIFAR-10
  is found nowhere. With $TFDEFENSE_TESTS_STRICT=1 (CI) that skip is a failure instead.
"""

import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent
SHARED_DATA = REPO.parent / "shared" / "data"
STRICT_ENV = "TFDEFENSE_TESTS_STRICT"
MNIST_FIXTURES = frozenset({"mnist", "mnist_npz", "mnist_model_c", "mnist_eval_batch"})

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if not os.environ.get("TFDEFENSE_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["TFDEFENSE_DATA_DIR"] = str(SHARED_DATA)


def strict():
    """True when a skip for missing data or texts must fail instead ($TFDEFENSE_TESTS_STRICT=1, set by CI)."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def find_mnist_npz():
    """The official `mnist.npz` that `load_dataset("mnist")` reads; downloads it with keras when none is found.

    Raises ValueError (saying where it looked and how to provide the file) when no file is found and the
    download fails.
    """
    from tfdefense import config
    from tfdefense.data import keras_datasets_dir, mnist_split

    split = mnist_split()
    if split is None or split.kind != "official":
        try:
            import keras

            keras.datasets.mnist.load_data()  # fills keras' cache, the second place load_dataset looks
        except Exception as error:  # no network, blocked host, corrupt download
            data_dir = config.resolve_data_dir()
            raise ValueError(
                "The tests need the real MNIST digits (keras' mnist.npz, the official 60000/10000 split) and "
                f"found none. Looked for {data_dir / 'mnist.npz'} (the data dir, from "
                f"{config.data_dir_sources()}) and {keras_datasets_dir() / 'mnist.npz'} (keras' cache, "
                f"$KERAS_HOME/datasets); keras' download failed ({type(error).__name__}: {error}). Provide it: "
                "run the tests once online (keras downloads it into its cache), or copy mnist.npz "
                "(https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz) into one of those "
                "folders or into a folder named by $TFDEFENSE_DATA_DIR."
            ) from None
        split = mnist_split()
    if split is None or split.kind != "official" or (split.train_size, split.test_size) != (60000, 10000):
        raise ValueError(f"The tests need the official MNIST split (60000/10000); found {split and split.description}")
    return pathlib.Path(split.path)


def pytest_collection_finish(session):
    """Stops the session at once, with one message, when a selected test needs MNIST and none can be found."""
    if not any(MNIST_FIXTURES.intersection(getattr(item, "fixturenames", ())) for item in session.items):
        return
    try:
        find_mnist_npz()
    except ValueError as error:
        pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def mnist_npz():
    """Path of the official `mnist.npz` that `load_dataset("mnist")` reads (data dir or keras' cache)."""
    return find_mnist_npz()


MNIST_TEST_TRAIN_SIZE, MNIST_TEST_TEST_SIZE = 8000, 2000


@pytest.fixture(scope="session")
def mnist(mnist_npz):
    """A fast subset of the official MNIST split: the first 8000 training and the last 2000 test digits.

    Real digits, float32 in [0, 1]; `load_dataset("mnist")` itself gives all 60000 / 10000.
    """
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", download=False)
    assert (len(x_train), len(x_test)) == (60000, 10000), "expected the official MNIST split from mnist.npz"
    n_train, n_test = MNIST_TEST_TRAIN_SIZE, MNIST_TEST_TEST_SIZE
    return (x_train[:n_train].copy(), y_train[:n_train].copy()), (x_test[-n_test:].copy(), y_test[-n_test:].copy())


@pytest.fixture(scope="session")
def cifar10():
    """Real CIFAR-10 as `load_dataset("cifar10")` finds it (data dir, then keras' download); skipped when absent."""
    from tfdefense.data import load_dataset

    try:
        return load_dataset("cifar10")
    except ValueError as error:
        message = f"CIFAR-10 not found (put cifar10_subset.npz or the CIFAR-10 archive in the data dir): {error}"
        if strict():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def mnist_model_c(mnist):
    """APE-GAN Table 5 model C trained 3 epochs on the fixture's 8000 training digits (~97.5% test accuracy)."""
    import keras

    from tfdefense.models import model_c, train_classifier

    keras.utils.set_random_seed(0)
    (x_train, y_train), _ = mnist
    model = model_c()
    train_classifier(model, x_train, y_train, epochs=3, batch_size=128, seed=0, verbose=0)
    return model


@pytest.fixture(scope="session")
def mnist_eval_batch(mnist, mnist_model_c):
    """200 held-out test digits that model C classifies correctly (for attack tests)."""
    from tfdefense.inference import predict_labels

    _, (x_test, y_test) = mnist
    x, y = x_test[:400], y_test[:400]
    correct = predict_labels(mnist_model_c, x) == y
    return x[correct][:200], y[correct][:200]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
