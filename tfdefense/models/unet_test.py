import keras
import numpy as np
import pytest

from tfdefense.models import list_generator_presets, unet_generator, unet_generator_preset
from tfdefense.models.unet import default_depth, unet_filters


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_paper_256_preset_architecture():
    model = unet_generator_preset("pix2pix_256")
    downs = [layer for layer in _layers(model, keras.layers.Conv2D) if layer.name.startswith("down")]
    ups = [layer for layer in _layers(model, keras.layers.Conv2DTranspose) if layer.name.startswith("up")]
    assert [layer.filters for layer in downs] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert [layer.filters for layer in ups] == [512, 512, 512, 512, 256, 128, 64]
    assert all(layer.kernel_size == (4, 4) and layer.strides == (2, 2) for layer in downs + ups)
    assert len(_layers(model, keras.layers.Dropout)) == 3
    assert all(layer.rate == 0.5 for layer in _layers(model, keras.layers.Dropout))
    # No norm on the outermost and innermost encoder blocks (the paper's code).
    bn_names = {layer.name for layer in _layers(model, keras.layers.BatchNormalization)}
    assert "down0_bn" not in bn_names and "down7_bn" not in bn_names and "down1_bn" in bn_names
    assert model.input_shape == (None, 256, 256, 3) and model.output_shape == (None, 256, 256, 3)
    # Skip i concatenates decoder block i with encoder block n-i (same spatial size).
    skip = model.get_layer("up0_skip")
    assert skip.output.shape[1:3] == (2, 2)
    assert 54_000_000 < model.count_params() < 54_600_000  # pix2pix 256 U-Net: ~54.4M


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (20, 36, 2)])
def test_shapes_and_range(shape, rng):
    model = unet_generator(shape, base_filters=4, max_filters=16)
    x = rng.random((2, *shape), dtype=np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, *shape) and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_depth_default_and_filters():
    assert default_depth(28, 28) == 5 and default_depth(32, 32) == 5 and default_depth(256, 256) == 8
    assert unet_filters(64, 8, 512) == [64, 128, 256, 512, 512, 512, 512, 512]
    model = unet_generator((28, 28, 1), base_filters=4, depth=3)
    assert model.get_layer("pad").output.shape[1:3] == (32, 32)  # 28 -> multiple of 2**3
    assert model.output_shape == (None, 28, 28, 1)


def test_tanh_output_mapped_to_unit_interval(rng):
    model = unet_generator((8, 8, 1), base_filters=2, output_activation="tanh")
    y = np.asarray(model(rng.random((2, 8, 8, 1), dtype=np.float32)))
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_presets_listed_and_overridable():
    assert {"pix2pix_256", "small_32", "tiny"} <= set(list_generator_presets())
    model = unet_generator_preset("small_32", input_shape=(28, 28, 1), base_filters=8)
    assert model.output_shape == (None, 28, 28, 1)
    with pytest.raises(ValueError, match="`preset`.*Received: preset='huge'"):
        unet_generator_preset("huge")


def test_bad_arguments():
    with pytest.raises(ValueError, match="`input_shape`"):
        unet_generator((28, 28))
    with pytest.raises(ValueError, match="`output_activation`.*Received: output_activation='relu'"):
        unet_generator((8, 8, 1), output_activation="relu")
    with pytest.raises(ValueError, match="`depth`"):
        unet_generator((8, 8, 1), depth=0)


def test_mixed_precision_output_float32(rng):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = unet_generator((16, 16, 1), base_filters=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    y = model(rng.random((2, 16, 16, 1), dtype=np.float32))
    assert y.dtype == "float32"
    assert model.get_layer("down0_conv").compute_dtype == "bfloat16"
