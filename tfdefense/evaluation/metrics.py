"""Metrics on numpy arrays: accuracy, predictions, image distances."""

import numpy as np

from tfdefense._validation import check_images, check_labels


def predict_labels(model, x, batch_size=256):
    """Arg-max class predictions of a logits (or probabilities) model."""
    x = check_images(x, "x")
    outputs = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    if not outputs:
        return np.zeros((0,), np.int64)
    return np.concatenate(outputs).argmax(axis=-1).astype(np.int64)


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of `model` on images `x` with labels `y`, in [0, 1]."""
    y = check_labels(y, "y", num_examples=len(x))
    return float(np.mean(predict_labels(model, x, batch_size) == y)) if len(y) else float("nan")
