import keras
import numpy as np
import pytest

from tfdefense.evaluation import accuracy
from tfdefense.models import ImageNetPreprocessing, get_classifier, imagenet_classifier, list_classifiers


@pytest.mark.parametrize(
    "name, shape, params",
    [
        ("A", (28, 28, 1), 1_199_882),
        ("B", (28, 28, 1), 312_202),
        ("C", (28, 28, 1), 710_218),
        ("D", (32, 32, 3), 1_147_978),
        ("resnet20", (32, 32, 3), None),
        ("densenet22", (32, 32, 3), None),
    ],
)
def test_zoo_returns_logits(name, shape, params, rng):
    model = get_classifier(name, input_shape=shape, num_classes=10)
    x = rng.random((3, *shape), dtype=np.float32)
    logits = np.asarray(model(x, training=False))
    assert logits.shape == (3, 10) and np.isfinite(logits).all()
    # Logits, not probabilities: rows do not sum to one.
    assert not np.allclose(logits.sum(axis=1), 1.0)
    if params is not None:
        assert model.count_params() == params


def test_resnet20_depth_and_size():
    model = get_classifier("resnet20")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    assert len(convs) == 19  # 1 stem + 3 stages x 3 blocks x 2 + final dense = 20 weighted layers
    assert 260_000 < model.count_params() < 280_000


def test_unknown_model_name():
    with pytest.raises(ValueError, match="`name`.*Received: name='Z'"):
        get_classifier("Z")
    assert {"A", "B", "C", "D", "resnet20", "inception_v3", "vgg19", "resnet50"} <= set(list_classifiers())


def test_imagenet_preprocessing_matches_keras():
    x = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    tf_mode = np.asarray(ImageNetPreprocessing("tf")(x))
    np.testing.assert_allclose(tf_mode, keras.applications.inception_v3.preprocess_input(x * 255.0), atol=1e-5)
    caffe = np.asarray(ImageNetPreprocessing("caffe")(x))
    np.testing.assert_allclose(caffe, keras.applications.vgg19.preprocess_input(x * 255.0), atol=1e-3)
    with pytest.raises(ValueError, match="`mode`"):
        ImageNetPreprocessing("torch")


def test_application_wrapper_local_weights_file(tmp_path, rng):
    keras.utils.set_random_seed(0)
    wrapped = imagenet_classifier("inception_v3", input_shape=(75, 75, 3), num_classes=4, weights=None)
    backbone = wrapped.layers[-1]
    path = tmp_path / "inception.weights.h5"
    backbone.save_weights(path)
    reloaded = imagenet_classifier("inception_v3", input_shape=(75, 75, 3), num_classes=4, weights=str(path))
    x = rng.random((2, 75, 75, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(wrapped(x)), np.asarray(reloaded(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="`weights`"):
        imagenet_classifier("vgg19", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="`weights`.*num_classes=10"):
        imagenet_classifier("vgg19", num_classes=10, weights="imagenet")


def test_save_load_round_trip(tmp_path, rng):
    model = get_classifier("inception_v3", input_shape=(75, 75, 3), num_classes=3)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    x = rng.random((2, 75, 75, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(restored(x)), atol=1e-5)


def test_model_c_reaches_97_percent_on_mnist_in_3_epochs(mnist, mnist_model_c):
    _, (x_test, y_test) = mnist
    assert accuracy(mnist_model_c, x_test, y_test) >= 0.97
