import keras
import numpy as np
import pytest

from tfdefense.evaluation import accuracy
from tfdefense.models import get_classifier, train_classifier, trainable_copy


def test_train_classifier_learns_digits():
    from tfdefense.data import load_dataset

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    model = get_classifier("resnet8", input_shape=(8, 8, 1))
    history = train_classifier(model, x_train, y_train, epochs=10, batch_size=32, augment="shift", verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert accuracy(model, x_test, y_test) > 0.5


def test_trainable_copy_of_a_frozen_model_trains():
    # clone_model of a frozen model + `clone.trainable = True` leaves every layer frozen in Keras 3.
    model = get_classifier("C")
    model.trainable = False
    copy = trainable_copy(model)
    assert len(copy.trainable_variables) == len(get_classifier("C").trainable_variables) > 0
    assert not model.trainable_variables  # the original stays frozen
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(model(x)), atol=1e-6)
    copy.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in copy.get_weights()]
    copy.fit(x, np.arange(4), epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, copy.get_weights(), strict=False))


def test_train_classifier_rejects_bad_input():
    model = get_classifier("C")
    with pytest.raises(ValueError, match="`x_train`.*255"):
        train_classifier(model, np.full((4, 28, 28, 1), 255.0, np.float32), np.arange(4))
    with pytest.raises(ValueError, match="`y_train`"):
        train_classifier(model, np.zeros((4, 28, 28, 1), np.float32), np.arange(3))
    with pytest.raises(ValueError, match="`augment`"):
        train_classifier(model, np.zeros((4, 28, 28, 1), np.float32), np.arange(4), augment="mixup")
    with pytest.raises(ValueError, match="`optimizer`.*'adagrad'"):
        train_classifier(model, np.zeros((4, 28, 28, 1), np.float32), np.arange(4), optimizer="adagrad")


@pytest.mark.parametrize(
    "name, cls, momentum", [("sgd", "SGD", 0.0), ("sgd_momentum", "SGD", 0.9), ("rmsprop", "RMSprop", None)]
)
def test_train_classifier_with_another_optimizer_learns_digits(name, cls, momentum):
    from tfdefense.data import load_dataset

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    model = get_classifier("A", input_shape=(8, 8, 1))
    lr = 0.05 if name.startswith("sgd") else 1e-3
    history = train_classifier(
        model, x_train, y_train, epochs=5, batch_size=32, learning_rate=lr, optimizer=name, verbose=0
    )
    assert type(model.optimizer).__name__ == cls and float(model.optimizer.learning_rate) == pytest.approx(lr)
    if momentum is not None:
        assert model.optimizer.momentum == momentum
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert accuracy(model, x_test, y_test) > 0.8


@pytest.mark.paper
@pytest.mark.parametrize("name, epochs", [("D", 15), ("resnet20", 20)])
def test_cifar10_targets_beat_45_percent(cifar10, name, epochs):
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = cifar10
    model = get_classifier(name, input_shape=(32, 32, 3))
    train_classifier(
        model, x_train, y_train, epochs=epochs, batch_size=64, augment="flip_shift", schedule="cosine", verbose=2
    )
    score = accuracy(model, x_test, y_test)
    print(f"{name} CIFAR-10 subset test accuracy after {epochs} epochs: {score:.4f}")
    assert score > 0.45
