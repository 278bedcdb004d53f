import keras
import numpy as np
import pytest

from tfdefense.models.egan_encoder import egan_encoder, egan_encoder_preset, list_encoder_presets


def test_paper_encoder_for_28px():
    encoder = egan_encoder_preset("paper")
    convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 22  # 1 + 10 'same' + 11 'valid'
    assert all(c.filters == 100 and c.kernel_size == (3, 3) for c in convs)
    assert [c.padding for c in convs] == ["same"] * 11 + ["valid"] * 11
    assert encoder.get_layer("flatten").output.shape[-1] == 3600
    assert len([layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]) == 22
    assert encoder.output_shape == (None, 30)


def test_shrinking_blocks_adapt_to_the_image_size(rng):
    encoder = egan_encoder((32, 32, 3), latent_dim=8, width=4, same_blocks=0)
    assert encoder.get_layer("flatten").output.shape[-1] == 6 * 6 * 4  # 13 blocks: 32 -> 6
    codes = np.asarray(encoder(rng.random((2, 32, 32, 3), dtype=np.float32)))
    assert codes.shape == (2, 8)
    light = egan_encoder_preset("light", latent_dim=12)
    assert light.output_shape == (None, 12) and light.count_params() < egan_encoder_preset("paper").count_params() / 5
    assert list_encoder_presets() == ["light", "paper", "tiny"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="`latent_dim`.*Received: latent_dim=0"):
        egan_encoder(latent_dim=0)
    with pytest.raises(ValueError, match="`shrink_blocks`.*Received: shrink_blocks=14"):
        egan_encoder((28, 28, 1), shrink_blocks=14)
    with pytest.raises(ValueError, match="`width`"):
        egan_encoder(width=-1)
    with pytest.raises(ValueError, match="`preset`"):
        egan_encoder_preset("heavy")
