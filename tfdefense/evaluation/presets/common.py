"""Pieces shared by the paper presets: data, target classifiers, cached attacks, purifiers."""

import numpy as np

from tfdefense.evaluation import accuracy
from tfdefense.evaluation.presets import recipes

DATASETS = {
    "mnist": dict(classifier_input=(28, 28, 1), description="real MNIST"),  # + the split found (mnist_split)
    "cifar10": dict(
        classifier_input=(32, 32, 3),
        description="real CIFAR-10 as load_dataset finds it (cifar10_subset.npz: its seeded train/test split)",
    ),
    "digits": dict(classifier_input=(28, 28, 1), description="scikit-learn's bundled real 8x8 digits resized to 28x28"),
}


def load_data(run, dataset, train_images=None, test_images=None, record=True):
    """(x_train, y_train), (x_test, y_test) of `dataset`, cut to the scale's sizes; records the data.

    record=False: leaves `run.data` alone (a preset over several data sets records them itself).
    """
    from tfdefense.data import load_dataset

    kwargs = {"image_size": 28} if dataset == "digits" else {}
    (x_train, y_train), (x_test, y_test) = load_dataset(dataset, data_dir=run.data_dir, **kwargs)
    sizes = len(x_train), len(x_test)
    if train_images:
        x_train, y_train = x_train[:train_images], y_train[:train_images]
    if test_images:
        x_test, y_test = x_test[:test_images], y_test[:test_images]
    if not record:
        return (x_train, y_train), (x_test, y_test)
    description = DATASETS.get(dataset, {}).get("description", dataset)
    used = f"{len(x_train)} train / {len(x_test)} test images used"
    if (len(x_train), len(x_test)) != sizes:
        used += f" (the first {len(x_train)} of {sizes[0]} training and first {len(x_test)} of {sizes[1]} test images)"
    split = mnist_split_description(run) if dataset == "mnist" else None
    run.set_data(dataset, f"{split or description}: {used}")
    if split:
        run.data = {**run.data, "split": split}
    return (x_train, y_train), (x_test, y_test)


def mnist_split_description(run):
    """Which MNIST split `load_dataset("mnist")` read for this run, e.g. "MNIST official 60000/10000 (PATH)"."""
    from tfdefense.data import mnist_split

    split = mnist_split(run.data_dir)
    return split.description if split is not None else "MNIST official 60000/10000 (keras download)"


def target_classifier(
    run, name, x_train, y_train, epochs, augment=None, schedule=None, optimizer="adam", learning_rate=1e-3
):
    """Trains (or reuses) classifier `name` of the model registry on the run's data; frozen.

    schedule: None (constant learning rate) or "cosine"; optimizer, learning_rate: see `train_classifier`.
    """
    from tfdefense.models import get_classifier

    shape = tuple(x_train.shape[1:])
    config = recipes.key(run, epochs, augment=augment, n=len(x_train))
    # Absent from older configs at their defaults: models trained before keep their hash.
    if schedule is not None:
        config["schedule"] = schedule
    if optimizer != "adam":
        config["optimizer"] = optimizer
    if learning_rate != 1e-3:
        config["learning_rate"] = learning_rate
    return recipes.classifier(
        run,
        name,
        lambda: get_classifier(name, input_shape=shape),
        x_train,
        y_train,
        epochs,
        config,
        augment=augment,
        schedule=schedule,
        optimizer=optimizer,
        learning_rate=learning_rate,
    )


def attacked(run, attack, params, model, x, y, batch_size=None):
    """Adversarial examples of `attack` on `model`, from the run's float32 cache when they match.

    batch_size: images per attack call (`generate`'s default when None); each finished call is stored,
    so an interrupted run redoes at most one call.
    """
    from tfdefense.attacks import generate, get_attack

    x_adv, info = generate(
        get_attack(attack, **params),
        model,
        x,
        y,
        cache_dir=run.cache_dir / "adversarial",
        progress=run.progress,
        return_info=True,
        strategy=run.strategy,
        **({} if batch_size is None else {"batch_size": batch_size}),
    )
    if info["cache"] != "hit":
        run.log(f"{attack} on {len(x)} images: {info['seconds']:.1f} s, success rate {info['success_rate']:.3f}")
    return x_adv


def report_clean_accuracy(run, table, models, x, y):
    for name, model in models.items():
        run.add_row(table, "whole_test_set", name, "clean", "accuracy", accuracy(model, x, y), len(y))


def subset(x, y, n):
    return (x, y) if n is None else (x[:n], y[:n])


def paired_training_data(x_adv_sets, x_clean, include_clean=False):
    """Stacks per-attack adversarial sets with the clean images they came from (+ identity pairs)."""
    x_adv = list(x_adv_sets) + ([x_clean] if include_clean else [])
    return np.concatenate(x_adv), np.concatenate([x_clean] * len(x_adv))
