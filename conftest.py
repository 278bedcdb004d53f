"""Shared test fixtures: real data from ../shared/data and a trained MNIST model C.

Tests read the data dir from $TFDEFENSE_DATA_DIR, else ../shared/data beside
the repository. A missing data dir is an error, never a skip.
"""

import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if not os.environ.get("TFDEFENSE_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["TFDEFENSE_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir():
    path = pathlib.Path(os.environ.get("TFDEFENSE_DATA_DIR", SHARED_DATA))
    for name in ("mnist.npz", "mnist_t10k.npz"):
        assert (path / name).is_file(), f"real test data missing: set TFDEFENSE_DATA_DIR (no {name} in {path})"
    return path


MNIST_TEST_TRAIN_SIZE, MNIST_TEST_TEST_SIZE = 8000, 2000


@pytest.fixture(scope="session")
def mnist(data_dir):
    """A fast subset of the official MNIST split: the first 8000 training and the last 2000 test digits.

    Real digits, float32 in [0, 1]; `load_dataset("mnist")` itself gives all 60000 / 10000. The
    last 2000 test digits are the test split of the t10k fallback (`mnist_t10k.npz`) too.
    """
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=data_dir, download=False)
    assert (len(x_train), len(x_test)) == (60000, 10000), "expected the official MNIST split from mnist.npz"
    n_train, n_test = MNIST_TEST_TRAIN_SIZE, MNIST_TEST_TEST_SIZE
    return (x_train[:n_train].copy(), y_train[:n_train].copy()), (x_test[-n_test:].copy(), y_test[-n_test:].copy())


@pytest.fixture(scope="session")
def cifar10(data_dir):
    from tfdefense.data import load_dataset

    return load_dataset("cifar10", data_dir=data_dir, download=False)


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
    from tfdefense.evaluation import predict_labels

    _, (x_test, y_test) = mnist
    x, y = x_test[:400], y_test[:400]
    correct = predict_labels(mnist_model_c, x) == y
    return x[correct][:200], y[correct][:200]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
