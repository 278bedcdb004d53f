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
