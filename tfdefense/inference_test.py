import keras
import numpy as np

from tfdefense.attacks.adaptive import BPDA
from tfdefense.inference import all_layers, predict_labels


def _nested():
    inputs = keras.Input((4,))
    inner = keras.Model(inputs, keras.layers.Dense(2, name="b")(keras.layers.Dense(3, name="a")(inputs)), name="inner")
    outer_inputs = keras.Input((4,))
    return keras.Model(outer_inputs, inner(outer_inputs), name="outer")


def test_all_layers_reaches_nested_models_once_each():
    model = _nested()
    names = [layer.name for layer in all_layers(model)]
    assert names[0] == "outer" and {"inner", "a", "b"} <= set(names) and len(names) == len(set(names))
    assert [layer.name for layer in all_layers(model, include_self=False)] == names[1:]
    inputs = keras.Input((4,))  # `inner` reached twice: directly and through `outer`
    both = keras.Model(inputs, keras.layers.Concatenate()([model(inputs), model.get_layer("inner")(inputs)]))
    assert [layer.name for layer in all_layers(both)].count("a") == 1


def test_all_layers_reaches_a_model_inside_a_plain_layer():
    purifier = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="purifier_dense")])
    wrapper = BPDA(purifier)
    assert "purifier_dense" in [layer.name for layer in all_layers(wrapper)]


def test_predict_labels_batches():
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((5, 2, 2, 1), dtype=np.float32)
    expected = np.asarray(model(x)).argmax(-1)
    np.testing.assert_array_equal(predict_labels(model, x, batch_size=2), expected)
