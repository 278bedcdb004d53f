"""Training target classifiers: `train_classifier` (plain Keras `fit`)."""

import pathlib

import keras

from tfdefense import distribute
from tfdefense._validation import (
    check_choice,
    check_images,
    check_labels,
    check_model_arg,
    check_model_images,
    check_not_empty,
    check_number,
    check_validation_data,
    output_classes,
    warn_if_probabilities,
)
from tfdefense.data.pipelines import make_pipeline
from tfdefense.inference import all_layers
from tfdefense.training.resume import resumable_fit_callbacks

AUGMENTATIONS = (None, "flip_shift", "shift")
SCHEDULES = (None, "cosine")
OPTIMIZERS = ("adam", "sgd", "sgd_momentum", "rmsprop")


def classifier_optimizer(name="adam", learning_rate=1e-3):
    """A Keras optimizer by name: "adam", "sgd", "sgd_momentum" (momentum 0.9) or "rmsprop".

    `learning_rate` is a number or a `keras.optimizers.schedules` schedule.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9 if name == "sgd_momentum" else 0.0)


def _augmenter(kind):
    """`fn(images, seed)`: the augmentation of `kind` drawn from a stateless seed (int64[2]).

    "flip_shift" flips each image horizontally with probability 1/2; both kinds
    shift it by up to 1/8 of its height and width (uniform, bilinear, reflected
    border), as `keras.layers.RandomFlip("horizontal")` and
    `RandomTranslation(0.125, 0.125, fill_mode="reflect")` do. The seed comes
    from (seed, epoch, batch) (`make_pipeline(augment=...)`), so a resumed
    fit draws the same augmentations as an uninterrupted one.
    """
    import tensorflow as tf

    def augment(images, seed):
        shape = tf.shape(images)
        n = shape[0]
        if kind == "flip_shift":
            flip = tf.random.stateless_uniform([n, 1, 1, 1], tf.random.experimental.stateless_fold_in(seed, 0)) <= 0.5
            images = tf.where(flip, tf.reverse(images, axis=[2]), images)
        size = tf.cast(tf.stack([shape[2], shape[1]]), tf.float32)  # (width, height)
        shifts = tf.random.stateless_uniform([n, 2], tf.random.experimental.stateless_fold_in(seed, 1), -0.125, 0.125)
        shifts = shifts * size
        ones, zeros = tf.ones([n, 1]), tf.zeros([n, 1])
        transform = tf.concat([ones, zeros, -shifts[:, :1], zeros, ones, -shifts[:, 1:], zeros, zeros], axis=1)
        return keras.ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect")

    return augment


def trainable_copy(model):
    """A copy of `model` with the same weights and every layer trainable (the original is left as it is).

    `keras.models.clone_model` of a frozen model gives layers built with
    `trainable=False`, and `clone.trainable = True` does not reach them (the
    copy's own flag is already True): fine-tuning such a copy would silently
    train nothing. This sets every layer of the copy trainable.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in all_layers(copy):
        layer.trainable = True
    return copy


def compile_classifier(model, learning_rate=1e-3, optimizer="adam"):
    """`classifier_optimizer(optimizer, learning_rate)` + sparse categorical cross-entropy on logits + accuracy."""
    model.compile(
        optimizer=classifier_optimizer(optimizer, learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_classifier(
    model,
    x_train,
    y_train,
    validation_data=None,
    epochs=3,
    batch_size=128,
    learning_rate=1e-3,
    augment=None,
    schedule=None,
    seed=0,
    backup_dir=None,
    callbacks=(),
    verbose="auto",
    strategy=None,
    optimizer="adam",
):
    """Trains a logits classifier (Adam by default); returns the keras History.

    A model already compiled keeps its own optimizer and loss.

    Args:
      augment: None, "shift" (random translation up to 1/8) or "flip_shift"
        (also horizontal flips; for CIFAR-10).
      schedule: None (constant learning rate) or "cosine" (decay to 0 over
        all epochs; steadier final accuracy for batch-norm nets).
      backup_dir: if set, training state is backed up every epoch and an
        interrupted run resumes where it stopped (keras BackupAndRestore;
        under several workers only the chief writes there, see
        `tfdefense.distribute.backup_callback`).
      batch_size: the global batch (split across the replicas of `strategy`).
      strategy: a `tf.distribute.Strategy` the model was built under (its
        `scope()`); the model is compiled inside it. None: the current one.
      optimizer: "adam" (default), "sgd", "sgd_momentum" or "rmsprop"
        (`classifier_optimizer`), at `learning_rate`.
    """
    check_model_arg(model)
    x_train = check_not_empty(check_images(x_train, "x_train"), "x_train")
    num_classes = output_classes(model)
    y_train = check_labels(y_train, "y_train", num_examples=len(x_train), num_classes=num_classes)
    check_model_images(model, x_train, "x_train")
    check_number("batch_size", batch_size, minimum=1, integer=True)
    check_number("epochs", epochs, minimum=1, integer=True)
    check_number("learning_rate", learning_rate, minimum=0)
    check_choice("augment", augment, AUGMENTATIONS)
    check_choice("schedule", schedule, SCHEDULES)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    warn_if_probabilities(model, x_train)
    if not model.compiled:
        if schedule == "cosine":
            steps = epochs * -(-len(x_train) // batch_size)
            learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        with distribute.scope(strategy):
            compile_classifier(model, learning_rate, optimizer)
    # Order and augmentation of epoch e depend on (seed, e) only: a resumed fit repeats an uninterrupted one.
    augmenter = None if augment is None else _augmenter(augment)
    dataset = make_pipeline(x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed, augment=augmenter)
    validation = None
    if validation_data is not None:
        x_val, y_val = check_validation_data(validation_data)
        x_val = check_images(x_val, "validation_data[0]")
        y_val = check_labels(y_val, "validation_data[1]", len(x_val), num_classes=num_classes)
        validation = make_pipeline(x_val, y_val, batch_size=512)
    callbacks = list(callbacks)
    if backup_dir is not None:
        backup = distribute.backup_callback(pathlib.Path(backup_dir), strategy)
        distribute.check_backup_consistent(backup, strategy)
        callbacks.append(backup)
    callbacks = resumable_fit_callbacks(dataset, callbacks)  # data epoch; random states beside the backup
    return model.fit(
        dataset, epochs=epochs, validation_data=validation, callbacks=callbacks, verbose=verbose, shuffle=False
    )
