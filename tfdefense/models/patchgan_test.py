import keras
import numpy as np
import pytest

from tfdefense.models import list_discriminator_presets, patchgan_discriminator, patchgan_preset
from tfdefense.models.patchgan import receptive_field


def test_70x70_preset_matches_paper():
    model = patchgan_preset("pix2pix_70")
    assert receptive_field(3) == 70
    assert model.output_shape == (None, 30, 30, 1)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [64, 128, 256, 512, 1]
    assert [layer.strides for layer in convs] == [(2, 2)] * 3 + [(1, 1)] * 2
    assert 2_700_000 < model.count_params() < 2_800_000  # ~2.77M as in the TF tutorial


@pytest.mark.parametrize("shape, n_layers, out", [((32, 32, 3), 1, 14), ((28, 28, 1), 1, 12), ((32, 32, 3), 2, 6)])
def test_small_inputs_patch_logits(shape, n_layers, out, rng):
    model = patchgan_discriminator(shape, base_filters=4, n_layers=n_layers)
    x = rng.random((2, *shape), dtype=np.float32)
    logits = np.asarray(model([x, x], training=False))
    assert logits.shape == (2, out, out, 1)
    # Conditional: the output depends on the conditioning image, not only the candidate.
    other = np.asarray(model([1.0 - x, x], training=False))
    assert not np.allclose(logits, other)


def test_receptive_fields():
    assert [receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]


def test_presets_and_errors():
    assert {"pix2pix_70", "small_32", "tiny"} <= set(list_discriminator_presets())
    assert patchgan_preset("small_32", input_shape=(28, 28, 1)).input_shape == [(None, 28, 28, 1)] * 2
    with pytest.raises(ValueError, match="`n_layers`"):
        patchgan_discriminator((32, 32, 3), n_layers=-1)
    with pytest.raises(ValueError, match="`preset`"):
        patchgan_preset("pix2pix_286")
