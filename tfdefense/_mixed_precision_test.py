import keras
import pytest

from tfdefense._mixed_precision import mixed_compute


def _model():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="plain"),
            keras.layers.Dense(3, name="half", dtype="mixed_float16"),
            keras.layers.Dense(2, name="last"),
        ]
    )


def _policies(model):
    return {layer.name: layer.dtype_policy.name for layer in model.layers}


def test_float32_layers_compute_in_the_lower_precision_and_get_their_policy_back():
    model = _model()
    before = _policies(model)
    shared = _model()
    with mixed_compute([model, None, model, shared], "bfloat16"):
        assert _policies(model) == {"plain": "mixed_bfloat16", "half": "mixed_float16", "last": "mixed_bfloat16"}
        assert model(keras.ops.ones((1, 4))).dtype == "bfloat16"
        assert _policies(shared)["plain"] == "mixed_bfloat16"
    assert _policies(model) == before
    assert _policies(shared) == before
    assert model(keras.ops.ones((1, 4))).dtype == "float32"


def test_policies_are_restored_when_the_block_raises():
    model = _model()
    before = _policies(model)
    with pytest.raises(RuntimeError, match="inside"):
        with mixed_compute([model], "float16"):
            assert _policies(model)["plain"] == "mixed_float16"
            raise RuntimeError("inside")
    assert _policies(model) == before


@pytest.mark.parametrize("compute_dtype", [None, "float32"])
def test_float32_changes_nothing(compute_dtype):
    model = _model()
    before = _policies(model)
    with mixed_compute([model], compute_dtype):
        assert _policies(model) == before
