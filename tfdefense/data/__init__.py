"""Datasets (`load_dataset`) and tf.data pipelines."""

from tfdefense.data.datasets import (
    MnistSplit,
    check_channels_last,
    keras_datasets_dir,
    list_datasets,
    load_dataset,
    load_npz_arrays,
    load_test_split,
    load_tfds,
    mnist_split,
    resize_images,
    to_float_images,
)
from tfdefense.data.imagenet import imagenet_class_index, imagenet_wnids, load_imagenet_folder
from tfdefense.data.pipelines import make_paired_pipeline, make_pipeline, take_balanced

__all__ = [
    "MnistSplit",
    "check_channels_last",
    "imagenet_class_index",
    "imagenet_wnids",
    "keras_datasets_dir",
    "list_datasets",
    "load_dataset",
    "load_imagenet_folder",
    "load_npz_arrays",
    "load_test_split",
    "load_tfds",
    "make_paired_pipeline",
    "make_pipeline",
    "mnist_split",
    "resize_images",
    "take_balanced",
    "to_float_images",
]
