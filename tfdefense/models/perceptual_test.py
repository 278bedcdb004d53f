import keras
import numpy as np
import pytest

from tfdefense.models import model_c, perceptual_feature_extractor
from tfdefense.models.perceptual import VGG19_BLOCK_CONV2


def test_vgg19_features_grayscale_small_images(rng):
    model = perceptual_feature_extractor("vgg19", weights=None, input_shape=(28, 28, 1))
    assert not model.trainable and not model.trainable_weights
    x = rng.random((2, 28, 28, 1), dtype=np.float32)
    features = model(x)
    assert len(features) == len(VGG19_BLOCK_CONV2) == 5
    assert [tuple(f.shape) for f in features] == [
        (2, 32, 32, 64),
        (2, 16, 16, 128),
        (2, 8, 8, 256),
        (2, 4, 4, 512),
        (2, 2, 2, 512),
    ]


def test_vgg_custom_layers_and_local_weights(tmp_path, rng):
    keras.utils.set_random_seed(0)
    backbone = keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg19.weights.h5"
    backbone.save_weights(path)
    model = perceptual_feature_extractor(
        "vgg19", layers=["block1_pool", "block2_conv1"], weights=str(path), input_shape=(32, 32, 3)
    )
    x = rng.random((1, 32, 32, 3), dtype=np.float32)
    expected = keras.Model(backbone.input, backbone.get_layer("block2_conv1").output)(
        keras.applications.vgg19.preprocess_input(x * 255.0)
    )
    np.testing.assert_allclose(np.asarray(model(x)[1]), np.asarray(expected), rtol=1e-4, atol=1e-3)


def test_any_model_with_layer_names(rng):
    classifier = model_c()
    names = [classifier.layers[1].name, classifier.layers[3].name]
    model = perceptual_feature_extractor(classifier, names)
    features = model(rng.random((2, 28, 28, 1), dtype=np.float32))
    assert [tuple(f.shape) for f in features] == [(2, 14, 14, 64), (2, 1, 1, 128)]
    assert classifier.trainable  # the user's model is left as it was
    assert model.layers[1] is classifier.layers[1]  # weights shared, not copied


def test_errors():
    with pytest.raises(ValueError, match="`layers`.*Received: layers=\\['nope'\\]"):
        perceptual_feature_extractor("vgg19", layers=["nope"], weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="`backbone`"):
        perceptual_feature_extractor("alexnet", weights=None)
    with pytest.raises(ValueError, match="`weights`"):
        perceptual_feature_extractor("vgg19", weights="/no/such/file.h5", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="`layers`"):
        perceptual_feature_extractor(model_c(), None)
    with pytest.raises(ValueError, match="`input_shape`"):
        perceptual_feature_extractor("vgg19", weights=None, input_shape=(32, 32, 2))
