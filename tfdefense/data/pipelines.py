"""tf.data pipelines with seeded shuffle, batch, cache and prefetch."""

import numpy as np

from tfdefense._validation import check_images, check_labels, check_number


def make_pipeline(
    x,
    y=None,
    batch_size=64,
    shuffle=False,
    seed=0,
    cache=True,
    repeat=False,
    drop_remainder=False,
):
    """Builds a `tf.data.Dataset` of `x` or `(x, y)` batches.

    Images are checked (float32 NHWC in [0, 1]). The shuffle is seeded and
    reshuffles each epoch deterministically.
    """
    import tensorflow as tf

    x = check_images(x, "x")
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("seed", seed, integer=True)
    elements = x if y is None else (x, check_labels(y, "y", num_examples=len(x)))
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_paired_pipeline(x_adv, x_clean, y=None, batch_size=64, shuffle=True, seed=0, drop_remainder=False):
    """Paired `(x_adv, x_clean)` or `(x_adv, x_clean, y)` batches for purifier training."""
    import tensorflow as tf

    x_adv = check_images(x_adv, "x_adv")
    x_clean = check_images(x_clean, "x_clean")
    if x_adv.shape != x_clean.shape:
        raise ValueError(
            "Invalid value received for argument `x_clean`. Expected the shape of x_adv "
            f"{tuple(x_adv.shape)}. Received: x_clean of shape {tuple(x_clean.shape)}"
        )
    check_number("batch_size", batch_size, minimum=1, integer=True)
    elements = (x_adv, x_clean) if y is None else (x_adv, x_clean, check_labels(y, "y", num_examples=len(x_adv)))
    dataset = tf.data.Dataset.from_tensor_slices(elements).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x_adv), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def take_balanced(x, y, per_class, seed=0):
    """Returns `per_class` examples of every class (seeded choice), class-interleaved order kept stable."""
    y = check_labels(y, "y", num_examples=len(x))
    check_number("per_class", per_class, minimum=1, integer=True)
    rng = np.random.default_rng(seed)
    picks = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < per_class:
            raise ValueError(
                f"Invalid value received for argument `per_class`. Expected at most {len(members)} "
                f"(the examples of class {label}). Received: per_class={per_class}"
            )
        picks.append(np.sort(rng.choice(members, per_class, replace=False)))
    index = np.concatenate(picks)
    return x[index], y[index]
