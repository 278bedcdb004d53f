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
    assert (path / "mnist_t10k.npz").is_file(), f"real test data missing: set TFDEFENSE_DATA_DIR (looked in {path})"
    return path


@pytest.fixture(scope="session")
def mnist(data_dir):
    """The MNIST split: 8000 train / 2000 test real digits, float32 in [0, 1]."""
    from tfdefense.data import load_dataset

    return load_dataset("mnist", data_dir=data_dir, download=False)


@pytest.fixture(scope="session")
def cifar10(data_dir):
    from tfdefense.data import load_dataset

    return load_dataset("cifar10", data_dir=data_dir, download=False)


@pytest.fixture(scope="session")
def mnist_model_c(mnist):
    """APE-GAN Table 5 model C trained 3 epochs on the 8000-image MNIST split (~97.5% test accuracy)."""
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
