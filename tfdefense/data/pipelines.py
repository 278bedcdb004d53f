"""tf.data pipelines with an epoch-indexed shuffle, batch, cache and prefetch.

The order of a shuffled pipeline in epoch e is a permutation drawn from
(seed, e) with stateless random ops, and so are the per-batch seeds handed to
`augment`. The epoch is the one keras passes to `on_epoch_begin`: the fit
methods of tfdefense (and `train_classifier`) add a `PipelineEpoch` callback
that sets it, so a fit resumed at epoch k (`BackupAndRestore`,
`initial_epoch=k`) sees the same batches as an uninterrupted one. Without that
callback (a plain `keras.Model.fit`) every pass over the dataset draws a new
order from `seed`, as `Dataset.shuffle(reshuffle_each_iteration=True)` does.
"""

import keras
import numpy as np

from tfdefense._validation import check_images, check_labels, check_number

_EPOCH_ATTRIBUTE = "_tfdefense_data_epoch"
_NO_EPOCH = -1  # the epoch variable's value when no PipelineEpoch callback runs


def _epoch_variable():
    """An int64 scalar on the host (tf.data reads it), outside any distribution strategy."""
    import tensorflow as tf
    from tensorflow.python.ops import resource_variable_ops

    with tf.init_scope(), tf.device("/CPU:0"):
        # ResourceVariable directly: a `tf.Variable` made inside a strategy scope
        # would be a distributed variable, which a tf.data function cannot read.
        return resource_variable_ops.ResourceVariable(_NO_EPOCH, dtype=tf.int64, trainable=False, name="data_epoch")


def _epoch_ordered_batches(elements, num_examples, batch_size, shuffle, seed, drop_remainder, repeat, augment):
    """Batches of `elements` (arrays) in an order that is a function of (seed, epoch) only."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        tensors = tf.nest.map_structure(tf.constant, elements)
    epoch = _epoch_variable()
    base_seed = tf.constant(int(seed), tf.int64)
    # Used only without a PipelineEpoch callback: a new pass key per iteration.
    pass_keys = tf.data.Dataset.random(seed=int(seed) % (2**31), rerandomize_each_iteration=True).take(1)

    def one_pass(fallback_key):
        current = epoch.read_value()
        pass_key = tf.where(current >= 0, current, tf.math.abs(fallback_key) + 2**40)
        key = tf.stack([base_seed, pass_key])
        if shuffle:
            order_key = tf.random.experimental.stateless_fold_in(key, 0)
            order = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), order_key)
        else:
            order = tf.range(num_examples, dtype=tf.int64)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder)
        batch_key = tf.random.experimental.stateless_fold_in(key, 1)

        def gather(index, picks):
            batch = tf.nest.map_structure(lambda t: tf.gather(t, picks), tensors)
            if augment is not None:
                batch_seed = tf.random.experimental.stateless_fold_in(batch_key, index)
                images = augment(batch[0] if isinstance(batch, tuple) else batch, batch_seed)
                batch = (images, *batch[1:]) if isinstance(batch, tuple) else images
            return batch

        return batches.enumerate().map(gather)

    dataset = pass_keys.flat_map(one_pass)
    num_batches = num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    setattr(dataset, _EPOCH_ATTRIBUTE, epoch)
    return dataset


def pipeline_epoch_variables(dataset):
    """The epoch variables of the `make_pipeline` / `make_paired_pipeline` datasets `dataset` is built from."""
    found, stack, seen = [], [dataset], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        variable = getattr(current, _EPOCH_ATTRIBUTE, None)
        if variable is not None and all(variable is not v for v in found):
            found.append(variable)
        inputs = getattr(current, "_inputs", None)
        if callable(inputs):
            try:
                stack.extend(inputs())
            except (TypeError, NotImplementedError, AttributeError):
                pass
    return found


class PipelineEpoch(keras.callbacks.Callback):
    """Sets the epoch of `make_pipeline` / `make_paired_pipeline` datasets at every `on_epoch_begin`.

    keras passes the absolute epoch (it counts from `initial_epoch` or from the
    epoch `BackupAndRestore` restored), so a resumed fit draws the same order
    and the same augmentation seeds as an uninterrupted one. After `fit` the
    datasets go back to a new order per pass.
    """

    def __init__(self, datasets):
        super().__init__()
        datasets = datasets if isinstance(datasets, (list, tuple)) else [datasets]
        self.variables = [v for d in datasets for v in pipeline_epoch_variables(d)]

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self.variables:
            variable.assign(epoch)

    def on_train_end(self, logs=None):
        for variable in self.variables:
            variable.assign(_NO_EPOCH)


def with_pipeline_epoch(x, callbacks):
    """`callbacks` (a list) plus a `PipelineEpoch` for the pipelines `x` is built from, when there are any."""
    callbacks = list(callbacks or [])
    if any(isinstance(c, PipelineEpoch) for c in callbacks):
        return callbacks
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        callback = PipelineEpoch(x)
        if callback.variables:
            callbacks.append(callback)
    return callbacks


def make_pipeline(
    x,
    y=None,
    batch_size=64,
    shuffle=False,
    seed=0,
    cache=True,
    repeat=False,
    drop_remainder=False,
    augment=None,
):
    """Builds a `tf.data.Dataset` of `x` or `(x, y)` batches.

    Images are checked (float32 NHWC in [0, 1]). With `shuffle=True` the order
    of epoch e is a permutation drawn from (seed, e) (see the module docs).

    Args:
      cache: cache the elements of an unshuffled pipeline (a shuffled one
        gathers its batches from the arrays held in memory).
      augment: optional `fn(images, seed) -> images` applied to every batch
        (`seed`: an int64[2] stateless seed drawn from (seed, epoch, batch
        index)); use stateless random ops (`tf.random.stateless_*`) in it.
    """
    import tensorflow as tf

    x = check_images(x, "x")
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("seed", seed, integer=True)
    if augment is not None and not callable(augment):
        raise TypeError(
            f"Invalid value received for argument `augment`. Expected a function or None. Received: augment={augment!r}"
        )
    elements = x if y is None else (x, check_labels(y, "y", num_examples=len(x)))
    if shuffle or augment is not None:
        return _epoch_ordered_batches(elements, len(x), batch_size, shuffle, seed, drop_remainder, repeat, augment)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if cache:
        dataset = dataset.cache()
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_paired_pipeline(x_adv, x_clean, y=None, batch_size=64, shuffle=True, seed=0, drop_remainder=False):
    """Paired `(x_adv, x_clean)` or `(x_adv, x_clean, y)` batches for purifier training.

    With `shuffle=True` the order of epoch e is a permutation drawn from (seed, e).
    """
    import tensorflow as tf

    x_adv = check_images(x_adv, "x_adv")
    x_clean = check_images(x_clean, "x_clean")
    if x_adv.shape != x_clean.shape:
        raise ValueError(
            "Invalid value received for argument `x_clean`. Expected the shape of x_adv "
            f"{tuple(x_adv.shape)}. Received: x_clean of shape {tuple(x_clean.shape)}"
        )
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("seed", seed, integer=True)
    elements = (x_adv, x_clean) if y is None else (x_adv, x_clean, check_labels(y, "y", num_examples=len(x_adv)))
    if shuffle:
        return _epoch_ordered_batches(elements, len(x_adv), batch_size, True, seed, drop_remainder, False, None)
    dataset = tf.data.Dataset.from_tensor_slices(elements).cache()
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
