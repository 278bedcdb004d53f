import warnings

import numpy as np
import pytest
import tensorflow as tf

from tfdefense._validation import check_images, check_labels, check_number


def test_check_images_accepts_and_returns_float32():
    x = np.random.default_rng(0).random((2, 4, 4, 3))
    out = check_images(x, channels=3)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert check_images(tf.constant(x, tf.float32)).dtype == tf.float32


@pytest.mark.parametrize(
    "x, pattern",
    [
        (np.zeros((4, 4, 3), np.float32), "rank-4"),
        (np.zeros((1, 4, 4, 1), np.uint8), "uint8"),
        (np.full((1, 4, 4, 3), 255.0, np.float32), "divide by 255"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), "NaN"),
        (np.full((1, 4, 4, 3), -0.5, np.float32), r"\[0, 1\]"),
    ],
)
def test_check_images_rejects_bad_input(x, pattern):
    with pytest.raises(ValueError, match=f"argument `images`.*{pattern}"):
        check_images(x, "images")


def test_check_images_channels_and_type():
    with pytest.raises(ValueError, match="3 channel"):
        check_images(np.zeros((1, 4, 4, 1), np.float32), channels=3)
    with pytest.raises(TypeError, match="`x`"):
        check_images("not images")


def test_check_labels_and_numbers():
    assert check_labels(np.array([[1], [2]])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="`y`"):
        check_labels(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="labels in"):
        check_labels(np.array([0, 12]), num_classes=10)
    with pytest.raises(ValueError, match="Received: eps=-0.1"):
        check_number("eps", -0.1, minimum=0)
    with pytest.raises(ValueError, match="an integer"):
        check_number("nb_iter", 2.5, integer=True)


def test_num_classes_and_input_shape():
    from tfdefense._validation import check_input_shape, check_num_classes

    assert check_num_classes(10) == 10
    for bad in (0, 1, "10", 2.5, True, None):
        with pytest.raises(ValueError, match=f"`num_classes`.*Received: num_classes={bad!r}"):
            check_num_classes(bad)
    assert check_input_shape([28, 28, 1]) == (28, 28, 1) and check_input_shape((None, None, 3)) == (None, None, 3)
    for bad in ((28, 28, 0), (28, 28), (28, 28, None), "28", (28, 28, 1.5)):
        with pytest.raises(ValueError, match="`input_shape`"):
            check_input_shape(bad)


def test_validation_data_empty_data_and_model():
    from tfdefense._validation import check_model_arg, check_not_empty, check_validation_data

    assert check_validation_data([1, 2]) == (1, 2)
    with pytest.raises(ValueError, match=r"`validation_data`.*\(x_val, y_val\).*3 element"):
        check_validation_data((1, 2, 3))
    with pytest.raises(ValueError, match="`validation_data`.*ndarray"):
        check_validation_data(np.zeros(3))
    with pytest.raises(ValueError, match="`x_train`.*empty array of shape \\(0, 4, 4, 1\\)"):
        check_not_empty(np.zeros((0, 4, 4, 1)), "x_train")
    with pytest.raises(TypeError, match="`model`.*model=None"):
        check_model_arg(None)


def test_dataset_range_check_names_the_argument_and_range():
    from tfdefense._validation import dataset_range_checked, reraise_range_error

    images = np.full((4, 2, 2, 1), 200.0, np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.array([0, 1, 2, 3]))).batch(2)
    dataset._tfdefense_marker = "kept"
    checked = dataset_range_checked(dataset, "x")
    assert checked._tfdefense_marker == "kept"
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(checked)
    error = reraise_range_error(info.value)
    assert isinstance(error, ValueError) and "`x`" in str(error) and "[200, 200]" in str(error) and "255" in str(error)
    labelled = tf.data.Dataset.from_tensor_slices((images / 255, np.array([0, 1, 2, 12]))).batch(2)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        list(dataset_range_checked(labelled, "x", label_component=1, num_classes=10))
    assert "labels in [2, 12]" in str(reraise_range_error(info.value))
    assert len(list(dataset_range_checked(labelled.take(1), "x", label_component=1, num_classes=10))) == 1


def test_probability_outputs_warn_and_logits_do_not():
    import keras

    from tfdefense._validation import warn_if_probabilities

    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    softmax = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(flat))
    hidden = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(3)(flat)))
    normalised = lambda x: tf.nn.softmax(tf.reshape(x, (len(x), -1))[:, :3])  # noqa: E731  (probe only)
    logits = keras.Model(inputs, keras.layers.Dense(3)(flat))
    x = np.random.default_rng(0).random((4, 4, 4, 1)).astype(np.float32)
    for model in (softmax, hidden, normalised):
        with pytest.warns(UserWarning, match="`model`.*logits"):
            assert warn_if_probabilities(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_probabilities(logits, x)


def test_a_check_without_images_does_not_mark_the_model_as_logits():
    import keras

    from tfdefense._validation import warn_if_probabilities

    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    # a softmax the last-layer check cannot see: only probing outputs finds it
    hidden = keras.Model(inputs, keras.layers.Lambda(lambda z: tf.nn.softmax(z))(keras.layers.Dense(3)(flat)))
    assert not warn_if_probabilities(hidden)  # no images: nothing probed
    x = np.random.default_rng(0).random((4, 4, 4, 1)).astype(np.float32)
    with pytest.warns(UserWarning, match="logits"):
        assert warn_if_probabilities(hidden, x)
