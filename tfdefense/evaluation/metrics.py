"""Metrics on numpy arrays: accuracy, predictions (`predict_labels`, from `tfdefense.inference`), image distances."""

import time

import numpy as np

from tfdefense._validation import check_images, check_labels, check_number
from tfdefense.inference import predict_labels


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of `model` on images `x` with labels `y`, in [0, 1]."""
    y = check_labels(y, "y", num_examples=len(x))
    return float(np.mean(predict_labels(model, x, batch_size) == y)) if len(y) else float("nan")


def _checked_pair(x, reference):
    x = check_images(x, "x")
    reference = check_images(reference, "reference")
    if x.shape != reference.shape:
        raise ValueError(
            "Invalid value received for argument `reference`. Expected the shape of x "
            f"{tuple(x.shape)}. Received: reference of shape {tuple(reference.shape)}"
        )
    return np.asarray(x, np.float64), np.asarray(reference, np.float64)


def mean_absolute_error(x, reference):
    """Mean absolute pixel error in [0, 1] units."""
    x, reference = _checked_pair(x, reference)
    return float(np.mean(np.abs(x - reference)))


def psnr(x, reference, max_value=1.0):
    """Mean over images of the peak signal-to-noise ratio in dB (inf for identical images)."""
    x, reference = _checked_pair(x, reference)
    mse = np.mean((x - reference) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(max_value**2 / mse)
    return float(np.mean(values))


def ssim(x, reference, max_value=1.0):
    """Mean structural similarity (tf.image.ssim; images of at least 11x11 px)."""
    import tensorflow as tf

    x, reference = _checked_pair(x, reference)
    filter_size = min(11, x.shape[1], x.shape[2])
    values = tf.image.ssim(
        tf.constant(x, tf.float32), tf.constant(reference, tf.float32), max_value, filter_size=filter_size
    )
    return float(np.mean(values.numpy()))


def l2_distances(x, reference):
    """Per-image L2 distance between two batches."""
    x, reference = _checked_pair(x, reference)
    return np.sqrt(np.sum((x - reference) ** 2, axis=(1, 2, 3)))


def attack_success_rate(model, x_adv, y, targeted=False, batch_size=256):
    """Fraction of examples misclassified (untargeted) or classified as `y` (targeted)."""
    y = check_labels(y, "y", num_examples=len(x_adv))
    predictions = predict_labels(model, x_adv, batch_size)
    hits = predictions == y if targeted else predictions != y
    return float(np.mean(hits)) if len(y) else float("nan")


def seconds_per_image(fn, x, batch_size=256, repeats=3):
    """Best-of-`repeats` wall time of `fn` over `x` in batches, divided by len(x)."""

    x = check_images(x, "x")
    fn(x[:batch_size])  # warm-up (tracing)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            np.asarray(fn(x[i : i + batch_size]))
        best = min(best, time.perf_counter() - start)
    return best / max(len(x), 1)


def wilson_interval(successes, n, z=1.96):
    """Wilson score interval (default 95%) for a proportion `successes / n`: (low, high)."""
    check_number("n", n, minimum=1, integer=True)
    check_number("successes", successes, minimum=0, maximum=n, integer=True)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
